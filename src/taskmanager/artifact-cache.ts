// Job artifacts fetched from the JobManager by content hash, checked, and cached on disk.
import * as fs from "node:fs";
import * as path from "node:path";

import { writeFileAtomic } from "../util/files.ts";
import { sha256Hex } from "../util/hash.ts";
import { createLogger } from "../util/log.ts";

const log = createLogger("taskmanager");

export class ArtifactCache {
  private readonly inflight = new Map<string, Promise<string>>();
  /** Hashes whose cached file this process has read and found intact. */
  private readonly verified = new Set<string>();

  constructor(private readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  /**
   * Path of the artifact with this hash, fetching it first if it is not cached. A file cached by an earlier process
   * is hashed before its first use here: one cut short by a crash or changed on disk is fetched again, never run.
   */
  get(hash: string, fetch: (hash: string) => Promise<Uint8Array>): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(hash)) return Promise.reject(new Error(`invalid artifact hash ${JSON.stringify(hash)}`));
    const file = path.join(this.dir, `${hash}.ts`);
    if (this.verified.has(hash) ? fs.existsSync(file) : this.intact(file, hash)) {
      this.verified.add(hash);
      return Promise.resolve(file);
    }
    let p = this.inflight.get(hash);
    if (!p) {
      p = fetch(hash)
        .then((bytes) => {
          const actual = sha256Hex(bytes);
          if (actual !== hash) throw new Error(`artifact ${hash} refused: its content hashes to ${actual}`);
          writeFileAtomic(file, bytes);
          this.verified.add(hash);
          return file;
        })
        .finally(() => this.inflight.delete(hash));
      this.inflight.set(hash, p);
    }
    return p;
  }

  private intact(file: string, hash: string): boolean {
    let actual: string;
    try {
      actual = sha256Hex(fs.readFileSync(file));
    } catch (err) {
      // Not cached yet is the common case; anything else is worth a line in the log.
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") log.warn("cannot read a cached job artifact; fetching it again", { file, error: (err as Error).message });
      return false;
    }
    if (actual === hash) return true;
    log.warn("a cached job artifact is damaged (its content does not match its hash); fetching it again", { file, contentHash: actual });
    return false;
  }
}
