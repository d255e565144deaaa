// Job artifacts fetched from the JobManager by content hash, checked, and cached on disk.
import * as fs from "node:fs";
import * as path from "node:path";

import { sha256Hex } from "../util/hash.ts";

export class ArtifactCache {
  private readonly inflight = new Map<string, Promise<string>>();

  constructor(private readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  /** Path of the artifact with this hash, fetching it first if it is not cached. */
  get(hash: string, fetch: (hash: string) => Promise<Uint8Array>): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(hash)) return Promise.reject(new Error(`invalid artifact hash ${JSON.stringify(hash)}`));
    const file = path.join(this.dir, `${hash}.ts`);
    if (fs.existsSync(file)) return Promise.resolve(file);
    let p = this.inflight.get(hash);
    if (!p) {
      p = fetch(hash)
        .then((bytes) => {
          const actual = sha256Hex(bytes);
          if (actual !== hash) throw new Error(`artifact ${hash} refused: its content hashes to ${actual}`);
          const tmp = `${file}.${process.pid}.tmp`;
          fs.writeFileSync(tmp, bytes);
          fs.renameSync(tmp, file);
          return file;
        })
        .finally(() => this.inflight.delete(hash));
      this.inflight.set(hash, p);
    }
    return p;
  }
}
