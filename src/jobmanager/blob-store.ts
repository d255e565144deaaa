// Job artifacts stored by the SHA-256 of their content.
import * as fs from "node:fs";
import * as path from "node:path";
import { sha256Hex } from "../util/hash.ts";

export class BlobStore {
  constructor(private readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  put(bytes: Uint8Array): string {
    const hash = sha256Hex(bytes);
    const file = this.file(hash);
    if (!fs.existsSync(file)) {
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, bytes);
      fs.renameSync(tmp, file);
    }
    return hash;
  }

  get(hash: string): Uint8Array {
    if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(`invalid artifact hash ${JSON.stringify(hash)}`);
    try {
      return fs.readFileSync(this.file(hash));
    } catch {
      throw new Error(`no artifact ${hash}`);
    }
  }

  private file(hash: string): string {
    return path.join(this.dir, `${hash}.ts`);
  }
}
