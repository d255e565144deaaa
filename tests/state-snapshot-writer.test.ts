// The keyed snapshot writer stages blocks in memory and writes them in a few large writes
// (src/state/snapshot-format.ts). Blocks of every size, a block larger than the stage, a caller that reuses its
// buffer between blocks, and blocks in any key-group order must all read back byte for byte, with the handle's size
// equal to the file's.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { KeyedSnapshotReader, KeyedSnapshotWriter } from "../src/state/snapshot-format.ts";
import { rng } from "./helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-snapwriter-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test("staged blocks of every size, one larger than the stage, read back exactly from a reused buffer", async () => {
  const rand = rng(11);
  const sizes = new Map<number, number>();
  // Small blocks, a run that crosses the 1 MiB stage several times, one 3 MiB block, an empty-entry block.
  for (let kg = 0; kg < 120; kg++) sizes.set(kg, 1 + Math.floor(rand() * 2000));
  for (let kg = 120; kg < 124; kg++) sizes.set(kg, 400_000 + Math.floor(rand() * 300_000));
  sizes.set(124, 3 * 1024 * 1024 + 17);
  for (let kg = 125; kg < 128; kg++) sizes.set(kg, 1 + Math.floor(rand() * 100));
  const order = [...sizes.keys()].sort(() => rand() - 0.5);
  const expected = new Map<number, Uint8Array>();
  const file = path.join(dir, "a.snap");
  const w = await KeyedSnapshotWriter.create(file, {
    backend: "heap",
    maxParallelism: 128,
    keyGroupRange: { start: 0, end: 127 },
    createdAt: Date.now(),
    states: [{ name: "s", kind: "value", ttlMs: null }],
  });
  const reused = new Uint8Array(4 * 1024 * 1024);
  for (const kg of order) {
    const n = sizes.get(kg)!;
    const bytes = reused.subarray(0, n);
    for (let i = 0; i < n; i++) bytes[i] = (kg * 31 + i * 7 + (i >> 9)) & 0xff;
    expected.set(kg, bytes.slice());
    await w.writeBlock(kg, bytes, 1 + (kg % 5));
    reused.fill(0xee, 0, n); // the writer must have copied what it keeps
  }
  await w.writeBlock(200, new Uint8Array(10), 0); // no entries: not written
  const h = await w.finish();
  expect(fs.existsSync(`${file}.tmp`)).toBe(false);
  expect(h.sizeBytes).toBe(fs.statSync(file).size);
  expect(h.entries).toBe([...sizes.keys()].reduce((s, kg) => s + 1 + (kg % 5), 0));
  const r = await KeyedSnapshotReader.open(file);
  try {
    for (const [kg, bytes] of expected) {
      const got = await r.readBlock(kg);
      expect(got?.length).toBe(bytes.length);
      expect(Buffer.from(got!).equals(Buffer.from(bytes))).toBe(true);
    }
    expect(await r.readBlock(200)).toBeUndefined();
  } finally {
    await r.close();
  }
});
