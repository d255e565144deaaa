// Job artifacts stored by the SHA-256 of their content.
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../util/files.ts";
import { sha256Hex } from "../util/hash.ts";

export class BlobStore {
  constructor(private readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  /** Stores the bytes durably (fsync before they count as stored); a damaged earlier copy is written anew. */
  put(bytes: Uint8Array): string {
    const hash = sha256Hex(bytes);
    const file = this.file(hash);
    if (this.read(file)?.hash !== hash) writeFileAtomic(file, bytes);
    return hash;
  }

  /** The artifact's bytes; throws naming the file when they no longer match their hash. */
  get(hash: string): Uint8Array {
    if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(`invalid artifact hash ${JSON.stringify(hash)}`);
    const file = this.file(hash);
    const r = this.read(file);
    if (r === null) throw new Error(`no artifact ${hash}`);
    if (r.hash !== hash) throw new Error(`artifact ${hash} is damaged: ${file} holds ${r.bytes.length} bytes that hash to ${r.hash}; submit the job again to store it anew`);
    return r.bytes;
  }

  private read(file: string): { bytes: Uint8Array; hash: string } | null {
    let bytes: Uint8Array;
    try {
      bytes = fs.readFileSync(file);
    } catch {
      return null;
    }
    return { bytes, hash: sha256Hex(bytes) };
  }

  private file(hash: string): string {
    return path.join(this.dir, `${hash}.ts`);
  }
}
