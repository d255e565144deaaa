// Job artifacts on disk: the JobManager's BlobStore and the TaskManager's ArtifactCache keep only intact copies.
// A file cut short (a crash between the write and the disk, or a disk that lost it) or changed after it was written is
// never handed out as the job's code: the cache fetches it again, the store names the damaged file.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BlobStore } from "../src/jobmanager/blob-store.ts";
import { ArtifactCache } from "../src/taskmanager/artifact-cache.ts";
import { sha256Hex } from "../src/util/hash.ts";
import { removeTempDirs, tempDir } from "./helpers.ts";

afterAll(removeTempDirs);

const code = new TextEncoder().encode(`export default (env) => { env.fromSequence(1, 10).print(); };\n// ${"x".repeat(2000)}`);
const hash = sha256Hex(code);

describe("ArtifactCache", () => {
  test("a cached artifact cut short is fetched again, not run; an intact one is not fetched", async () => {
    const dir = tempDir("tm-artifact-cache-");
    let fetches = 0;
    const fetch = async () => {
      fetches++;
      return code;
    };
    const file = await new ArtifactCache(dir).get(hash, fetch);
    expect(fetches).toBe(1);
    expect(fs.readFileSync(file)).toEqual(Buffer.from(code));
    expect(fs.readdirSync(dir)).toEqual([`${hash}.ts`]); // no temp file left behind

    // A TaskManager started again on the same directory uses the intact file without fetching.
    expect(await new ArtifactCache(dir).get(hash, fetch)).toBe(file);
    expect(fetches).toBe(1);

    // Cut short, as a crash before the bytes reached the disk leaves it: the next process fetches it again.
    fs.truncateSync(file, 100);
    const again = new ArtifactCache(dir);
    expect(await again.get(hash, fetch)).toBe(file);
    expect(fetches).toBe(2);
    expect(fs.readFileSync(file)).toEqual(Buffer.from(code));

    // Changed on disk (same length), then empty: fetched again each time a new process first uses it.
    const changed = Buffer.from(code);
    changed[10]! ^= 1;
    fs.writeFileSync(file, changed);
    expect(await new ArtifactCache(dir).get(hash, fetch)).toBe(file);
    fs.writeFileSync(file, "");
    expect(await new ArtifactCache(dir).get(hash, fetch)).toBe(file);
    expect(fetches).toBe(4);
    expect(sha256Hex(fs.readFileSync(file))).toBe(hash);
  });

  test("a refetch that brings other bytes is refused and leaves no file to run", async () => {
    const dir = tempDir("tm-artifact-cache-");
    fs.writeFileSync(path.join(dir, `${hash}.ts`), code.subarray(0, 50));
    const other = new TextEncoder().encode("export default () => {};");
    await expect(new ArtifactCache(dir).get(hash, async () => other)).rejects.toThrow(`artifact ${hash} refused: its content hashes to ${sha256Hex(other)}`);
    // The damaged file stays unused: the next get fetches again rather than running it.
    let fetched = false;
    await new ArtifactCache(dir).get(hash, async () => ((fetched = true), code));
    expect(fetched).toBe(true);
  });
});

describe("BlobStore", () => {
  test("stores by content hash and hands out only intact bytes; a damaged blob names its file and is repaired by the next put", () => {
    const dir = tempDir("tm-blob-store-");
    const store = new BlobStore(dir);
    expect(store.put(code)).toBe(hash);
    expect(store.get(hash)).toEqual(Buffer.from(code));
    expect(fs.readdirSync(dir)).toEqual([`${hash}.ts`]);

    const file = path.join(dir, `${hash}.ts`);
    fs.truncateSync(file, 0);
    expect(() => store.get(hash)).toThrow(`artifact ${hash} is damaged: ${file} holds 0 bytes that hash to ${sha256Hex(new Uint8Array(0))}`);
    // The same job submitted again stores the artifact anew (before, an existing file was kept whatever it held).
    expect(store.put(code)).toBe(hash);
    expect(new BlobStore(dir).get(hash)).toEqual(Buffer.from(code));

    const missing = sha256Hex(new TextEncoder().encode("never stored"));
    expect(() => store.get(missing)).toThrow(`no artifact ${missing}`);
    expect(() => store.get("../etc/passwd")).toThrow(/invalid artifact hash/);
  });
});
