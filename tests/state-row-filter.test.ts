// The SQLite backend's row filter (src/state/row-filter.ts): a Bloom filter of the rows written, so that a cache miss
// on a row never written skips its SELECT. It must never answer "absent" for a row that is there: the filter alone
// (random rows across its growth), and the backend with a cache small enough that rows leave it, after a restore,
// and with a database file that already had rows when it was opened (no filter then).
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { RowFilter } from "../src/state/row-filter.ts";
import { createKeyedStateBackend, MapStateDescriptor, SqliteKeyedStateBackend, ValueStateDescriptor } from "../src/state/index.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-row-filter-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;
const file = () => path.join(dir, `${++n}.db`);

function rng(seed: number): () => number {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let x = Math.imul(t ^ (t >>> 15), t | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
const bytes = (r: () => number, max: number) => Uint8Array.from({ length: Math.floor(r() * max) }, () => Math.floor(r() * 256));

describe("RowFilter", () => {
  test("every row added is found, across the filter's growth; rows never added are mostly absent", () => {
    const r = rng(7);
    const f = new RowFilter();
    const rows: [number, number, Uint8Array, Uint8Array][] = [];
    for (let i = 0; i < 300_000; i++) rows.push([Math.floor(r() * 128), 1 + Math.floor(r() * 4), bytes(r, 12), bytes(r, 6)]);
    for (const row of rows) f.add(...row);
    expect(rows.every((row) => f.mayContain(...row))).toBe(true);
    expect(f.skipped).toBe(0);
    // Other rows: the same keys in another state, and fresh ones.
    let positives = 0;
    for (let i = 0; i < 100_000; i++) if (f.mayContain(rows[i]![0], 9, rows[i]![2], rows[i]![3])) positives++;
    expect(positives / 100_000).toBeLessThan(0.02);
    expect(f.skipped).toBe(100_000 - positives);
    expect(f.bytes).toBeGreaterThan(300_000); // grown past its first 64 K rows
  });

  test("the key's bytes and the user key's are kept apart; clear forgets everything", () => {
    const f = new RowFilter();
    f.add(3, 1, Uint8Array.of(1, 2), Uint8Array.of(3));
    expect(f.mayContain(3, 1, Uint8Array.of(1, 2), Uint8Array.of(3))).toBe(true);
    expect(f.mayContain(3, 1, Uint8Array.of(1), Uint8Array.of(2, 3))).toBe(false);
    expect(f.mayContain(3, 2, Uint8Array.of(1, 2), Uint8Array.of(3))).toBe(false);
    expect(f.mayContain(4, 1, Uint8Array.of(1, 2), Uint8Array.of(3))).toBe(false);
    f.clear();
    expect(f.mayContain(3, 1, Uint8Array.of(1, 2), Uint8Array.of(3))).toBe(false);
  });
});

async function openSqlite(p: string, cacheBytes = 64 * 1024): Promise<SqliteKeyedStateBackend> {
  return (await createKeyedStateBackend({ kind: "sqlite", path: p, maxParallelism: 128, keyGroupRange: { start: 0, end: 127 }, objectCacheBytes: cacheBytes })) as SqliteKeyedStateBackend;
}

describe("the SQLite backend with its row filter", () => {
  test("new keys and user keys cost no SELECT; rows that left a small cache are read back, after a restore too", async () => {
    const b = await openSqlite(file());
    const count = b.getState(new ValueStateDescriptor<number>("count"));
    const seen = b.getMapState(new MapStateDescriptor<number, number>("seen"));
    const r = rng(11);
    const expected = new Map<string, Map<number, number>>();
    const counts = new Map<string, number>();
    // q16's shape: a few keys, each with a map that keeps getting new user keys, some seen again.
    for (let i = 0; i < 60_000; i++) {
      const key = `channel-${Math.floor(r() * 8)}`;
      const id = Math.floor(r() * 20_000);
      b.setCurrentKey(key);
      count.update((count.value() ?? 0) + 1);
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const bits = seen.get(id) ?? 0;
      seen.put(id, bits | (1 << (i % 3)));
      const m = expected.get(key) ?? new Map<number, number>();
      m.set(id, (m.get(id) ?? 0) | (1 << (i % 3)));
      expected.set(key, m);
    }
    const stats = b.cacheStats();
    // Most first sights were answered by the filter; with a 64 KiB cache, many rows were written and read back.
    expect(stats.missesKnownAbsent).toBeGreaterThan(10_000);
    expect(stats.misses).toBeGreaterThan(stats.missesKnownAbsent);
    const check = (x: SqliteKeyedStateBackend) => {
      const c = x.getState(new ValueStateDescriptor<number>("count"));
      const s = x.getMapState(new MapStateDescriptor<number, number>("seen"));
      for (const [key, m] of expected) {
        x.setCurrentKey(key);
        expect(c.value()).toBe(counts.get(key)!);
        for (const [id, bits] of m) if (s.get(id) !== bits) throw new Error(`${key} ${id}: ${s.get(id)} instead of ${bits}`);
        expect(s.get(99_999)).toBeUndefined();
      }
    };
    check(b);
    const snap = path.join(dir, `snap-${++n}`);
    fs.mkdirSync(snap);
    const handle = await b.snapshot(snap);
    await b.close();
    // Restored into a database file that has other rows: the restore empties it and starts a filter of its rows.
    const target = file();
    const other = await openSqlite(target);
    other.setCurrentKey("channel-1");
    other.getState(new ValueStateDescriptor<number>("count")).update(-1);
    await other.close();
    const c = await openSqlite(target);
    expect(c.rowFilter).toBeNull(); // opened with a row in it
    c.setCurrentKey("channel-1");
    expect(c.getState(new ValueStateDescriptor<number>("count")).value()).toBe(-1);
    await c.restore([handle]);
    expect(c.rowFilter).not.toBeNull();
    check(c);
    await c.close();
  }, 60_000);
});
