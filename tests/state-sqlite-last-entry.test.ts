// The SQLite backend remembers, per state, the entry (or map node) it last handed out (SqlTable.lastEntry/lastNode),
// so that a record's write after its read needs no second lookup. When eviction, a clear or an emptied map drops
// that entry from the cache, the memory must go with it: a write into a dropped entry would never be written back.
// Each case drops the remembered entry through another state's writes (so the remembered key is not looked up in
// between), then reads (which must go to the database: a cache miss) and writes through it again, and checks the
// write reached the database.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createKeyedStateBackend, ListStateDescriptor, MapStateDescriptor, SqliteKeyedStateBackend, ValueStateDescriptor } from "../src/state/index.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-last-entry-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

async function open(): Promise<SqliteKeyedStateBackend> {
  // A fixed 64 KiB object cache: a few hundred entries, so other keys' writes evict quickly.
  return (await createKeyedStateBackend({ kind: "sqlite", path: path.join(dir, `${++n}.db`), maxParallelism: 128, keyGroupRange: { start: 0, end: 127 }, objectCacheBytes: 64 * 1024 })) as SqliteKeyedStateBackend;
}

/** Writes another state for many other keys: everything cached before is evicted (and written back). */
function churn(b: SqliteKeyedStateBackend, from: number): void {
  const other = b.getState(new ValueStateDescriptor<string>("other"));
  for (let i = 0; i < 3000; i++) {
    b.setCurrentKey(`other-${from + i}`);
    other.update("x".repeat(20));
  }
}

test("a value state's remembered entry is forgotten when evicted: the next write reaches the database", async () => {
  const b = await open();
  const v = b.getState(new ValueStateDescriptor<number>("v"));
  const l = b.getListState(new ListStateDescriptor<number>("l"));
  b.setCurrentKey("a");
  v.update(1);
  l.add(1);
  expect(v.value()).toBe(1);
  churn(b, 0);
  let misses = b.cacheStats().misses;
  b.setCurrentKey("a");
  expect(v.value()).toBe(1);
  expect(b.cacheStats().misses).toBe(misses + 1); // read back from the database, not from the evicted entry
  v.update(2);
  l.add(2);
  churn(b, 10_000); // evicts "a" again
  misses = b.cacheStats().misses;
  b.setCurrentKey("a");
  expect(v.value()).toBe(2);
  expect(b.cacheStats().misses).toBe(misses + 1);
  expect([...(l.get() ?? [])]).toEqual([1, 2]);
  // Nothing of "a" is cached now but what was just read: drop the cache altogether and read again.
  b.flush();
  b.dropCache();
  b.setCurrentKey("a");
  expect(v.value()).toBe(2);
  expect([...(l.get() ?? [])]).toEqual([1, 2]);
  await b.close();
});

test("a map state's remembered node is forgotten when evicted, cleared or emptied", async () => {
  const b = await open();
  const m = b.getMapState(new MapStateDescriptor<number, number>("m"));
  b.setCurrentKey("a");
  m.put(1, 10);
  churn(b, 0);
  b.setCurrentKey("a");
  m.put(2, 20); // into a new node, not the evicted one
  churn(b, 10_000);
  const misses = b.cacheStats().misses;
  b.setCurrentKey("a");
  expect(m.get(1)).toBe(10);
  expect(m.get(2)).toBe(20);
  expect(b.cacheStats().misses).toBe(misses + 2); // both read back, not found in an evicted node
  // Evicted again, then written while cached: another key of the same state in between, and the entry is still seen.
  churn(b, 40_000);
  b.setCurrentKey("a");
  m.put(5, 50);
  b.setCurrentKey("b");
  m.put(1, 1);
  b.setCurrentKey("a");
  expect(m.get(5)).toBe(50);
  // Cleared: the node goes; a put after it starts a new one, and the old entries stay gone.
  m.clear();
  m.put(3, 30);
  churn(b, 20_000);
  b.setCurrentKey("a");
  expect(m.get(1)).toBeUndefined();
  expect(m.get(3)).toBe(30);
  // Emptied by removing its last entry, then read whole (mapEntries drops the empty node), then written again.
  m.remove(3);
  expect([...m.entries()]).toEqual([]);
  m.put(4, 40);
  churn(b, 30_000);
  b.flush();
  b.dropCache();
  b.setCurrentKey("a");
  expect([...m.entries()].sort()).toEqual([[4, 40]]);
  await b.close();
});
