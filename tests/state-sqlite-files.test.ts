// Files the SQLite backend and the snapshot reader must refuse clearly (naming the file, never resetting it),
// and the database settings it must use.
import { afterAll, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  createKeyedStateBackend,
  keyGroupRange,
  SqliteKeyedStateBackend,
  StateFileError,
  ValueStateDescriptor,
  type KeyedSnapshotHandle,
} from "../src/state/index.ts";
import { keyGroupOf, assignToKeyGroup } from "../src/state/key-groups.ts";
import { SCHEMA_VERSION } from "../src/state/sqlite-schema.ts";
import { sqliteCount } from "./helpers.ts";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-state-files-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const full = { start: 0, end: 127 };
let n = 0;
const file = (name: string) => path.join(dir, `${++n}-${name}`);

async function openSqlite(p: string, maxParallelism = 128) {
  return (await createKeyedStateBackend({ kind: "sqlite", path: p, maxParallelism, keyGroupRange: { start: 0, end: maxParallelism - 1 } })) as SqliteKeyedStateBackend;
}

async function expectFileError(p: Promise<unknown>, f: string, what: RegExp): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(StateFileError);
  expect((err as StateFileError).file).toBe(f);
  expect((err as Error).message).toStartWith(`${f}: `);
  expect((err as Error).message).toMatch(what);
}

test("a corrupt database file is refused, naming the file, and left untouched", async () => {
  const f = file("corrupt.db");
  const garbage = new Uint8Array(64 * 1024).map((_, i) => (i * 131 + 7) & 0xff);
  fs.writeFileSync(f, garbage);
  await expectFileError(openSqlite(f), f, /not a usable SQLite database.*not a database/);
  expect(new Uint8Array(fs.readFileSync(f))).toEqual(garbage);
  // A valid SQLite database of something else is refused too.
  const other = file("other.db");
  const db = new Database(other);
  db.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
  db.close();
  await expectFileError(openSqlite(other), other, /not a tm state database.*customers/);
});

test("a database from a newer schema version is refused, naming the file", async () => {
  const f = file("future.db");
  const b = await openSqlite(f);
  b.setCurrentKey("k");
  b.getState(new ValueStateDescriptor<number>("v")).update(1);
  await b.close();
  // What a newer build would have done: one more migration.
  const db = new Database(f);
  const next = SCHEMA_VERSION + 1;
  const future = `${String(next).padStart(4, "0")}_future_layout`;
  db.exec(`INSERT INTO kysely_migration (name, timestamp) VALUES ('${future}', '2030-01-01T00:00:00.000Z')`);
  db.exec(`UPDATE tm_meta SET value = '${next}' WHERE key = 'schema_version'`);
  db.close();
  await expectFileError(openSqlite(f), f, new RegExp(`${future}.*newer version`));
  // Only the schema version (no migration row) is enough, too.
  const db2 = new Database(f);
  db2.exec(`DELETE FROM kysely_migration WHERE name = '${future}'`);
  db2.close();
  await expectFileError(openSqlite(f), f, new RegExp(`schema version ${next}, newer than this build's ${SCHEMA_VERSION}`));
});

test("reopening keeps the data; another maxParallelism is refused", async () => {
  const f = file("reopen.db");
  const b = await openSqlite(f);
  const d = new ValueStateDescriptor<string>("v");
  b.setCurrentKey("k");
  b.getState(d).update("kept");
  await b.close();
  const c = await openSqlite(f);
  c.setCurrentKey("k");
  expect(c.getState(d).value()).toBe("kept");
  expect(() => c.getListState({ kind: "list", name: "v" } as never)).toThrow(/"v" is a value state/);
  await c.close();
  await expectFileError(openSqlite(f, 64), f, /maxParallelism 128, not 64/);
});

test("closed with discard (a task's end, its files deleted next), the cache is not written back; closed without, it is", async () => {
  const rows = (f: string) => sqliteCount(f, "SELECT count(*) AS n FROM kv");
  const d = new ValueStateDescriptor<number>("v");
  const fill = async (f: string) => {
    const b = await openSqlite(f);
    for (let i = 0; i < 500; i++) {
      b.setCurrentKey(i);
      b.getState(d).update(i);
    }
    return b;
  };
  const kept = file("close-flush.db");
  await (await fill(kept)).close();
  expect(rows(kept)).toBe(500);
  const discarded = file("close-discard.db");
  await (await fill(discarded)).close({ discard: true });
  expect(rows(discarded)).toBe(0);
});

test("the object cache takes most of the budget while the database is small and a quarter once it outgrows it", async () => {
  const budget = 1024 * 1024;
  const b = (await createKeyedStateBackend({ kind: "sqlite", path: file("adapt.db"), maxParallelism: 128, keyGroupRange: full, cacheBytes: budget })) as SqliteKeyedStateBackend;
  const d = new ValueStateDescriptor<number>("v");
  // New keys only (no read finds a row): the floor, whatever the file's size.
  for (let i = 0; i < 3000; i++) {
    b.setCurrentKey(i);
    b.getState(d).update((b.getState(d).value() ?? 0) + 1);
  }
  expect(b.cacheStats().limitBytes).toBe(budget / 4);
  expect(b.cacheStats().usedBytes).toBeLessThanOrEqual(budget / 4); // 3,000 entries do not fit: evicted, written
  // Reads that find evicted rows again: the state fits the budget (a small file), and the cache takes most of it.
  for (let pass = 0; pass < 2; pass++) {
    for (let i = 0; i < 3000; i++) {
      b.setCurrentKey(i);
      b.getState(d).update((b.getState(d).value() ?? 0) + 1);
    }
  }
  const grown = b.cacheStats().limitBytes;
  expect(grown).toBeGreaterThan(budget * 0.75);
  expect(grown).toBe(budget - 2 * b.databaseBytes());
  // The third pass hits every key.
  const misses = b.cacheStats().misses;
  for (let i = 0; i < 3000; i++) {
    b.setCurrentKey(i);
    expect(b.getState(d).value()).toBe(3);
  }
  expect(b.cacheStats().misses).toBe(misses);
  // 200,000 keys (several MiB of rows) do not: write-back grows the file past half the budget, and the object
  // cache shrinks to its floor, leaving the rest to SQLite's page cache and memory map.
  for (let i = 0; i < 200_000; i++) {
    b.setCurrentKey(i);
    b.getState(d).update(i);
  }
  b.flush();
  expect(b.databaseBytes()).toBeGreaterThan(budget);
  expect(b.cacheStats().limitBytes).toBe(budget / 4);
  expect(b.cacheStats().usedBytes).toBeLessThanOrEqual(budget / 4);
  for (const i of [0, 999, 1000, 199_999]) {
    b.setCurrentKey(i);
    expect(b.getState(d).value()).toBe(i);
  }
  await b.close();
});

test("WAL mode, synchronous=OFF and the memory split of the budget are on", async () => {
  const f = file("wal.db");
  const b = await openSqlite(f);
  expect(b.pragma("journal_mode")).toBe("wal");
  // The working copy's durability comes from checkpoints: a crashed task restores from one, never reopens this file.
  expect(Number(b.pragma("synchronous"))).toBe(0); // OFF
  // Page cache (negative: KiB) and memory map come from the one budget (default 64 MiB).
  expect(Number(b.pragma("cache_size"))).toBe(-(32 * 1024));
  expect(Number(b.pragma("mmap_size"))).toBe(64 * 1024 * 1024);
  // The object cache starts at its floor, a quarter (it grows once state is read back: see the next test).
  expect(b.cacheStats().limitBytes).toBe(16 * 1024 * 1024);
  for (let i = 0; i < 100; i++) {
    b.setCurrentKey(i);
    b.getState(new ValueStateDescriptor<number>("v")).update(i);
  }
  await b.snapshot(path.join(dir, "wal-snap")); // flushes the cache to the database
  expect(fs.existsSync(`${f}-wal`)).toBe(true);
  // Seen from another connection, too.
  const db = new Database(f);
  expect((db.query("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode).toBe("wal");
  // In kv or, until the next merge, in kv_delta (docs/architecture.md 5.2).
  expect((db.query("SELECT (SELECT count(*) FROM kv) + (SELECT count(*) FROM kv_delta WHERE v IS NOT NULL) AS n").get() as { n: number }).n).toBe(100);
  db.close();
  await b.close();
});

async function makeSnapshot(kind: "heap" | "sqlite"): Promise<KeyedSnapshotHandle> {
  const b = await createKeyedStateBackend({ kind, dir: path.join(dir, `src-${++n}`), maxParallelism: 128, keyGroupRange: full });
  const s = b.getState(new ValueStateDescriptor<string>("v"));
  for (let i = 0; i < 1000; i++) {
    b.setCurrentKey(i);
    s.update(`value-${i}`);
  }
  const h = await b.snapshot(path.join(dir, `snap-${++n}`));
  await b.close();
  return h;
}

test("a corrupt snapshot is refused, naming the file, by both backends", async () => {
  for (const kind of ["heap", "sqlite"] as const) {
    const h = await makeSnapshot(kind);
    const f = h.files[0]!;
    const good = new Uint8Array(fs.readFileSync(f));
    const restore = (into: "heap" | "sqlite") =>
      createKeyedStateBackend({ kind: into, dir: path.join(dir, `dst-${++n}`), maxParallelism: 128, keyGroupRange: full, restoreFrom: [h] });

    // One flipped byte in a key group's block.
    const flipped = good.slice();
    flipped[Math.floor(good.length / 2)]! ^= 0x40;
    fs.writeFileSync(f, flipped);
    for (const into of ["heap", "sqlite"] as const) await expectFileError(restore(into), f, /corrupt keyed state snapshot: checksum mismatch in the block of key group \d+/);
    // Truncated.
    fs.writeFileSync(f, good.subarray(0, good.length - 100));
    await expectFileError(restore("sqlite"), f, /corrupt keyed state snapshot: bad trailer/);
    // Not a snapshot at all, and missing.
    fs.writeFileSync(f, "hello, world, this is not a snapshot file at all........");
    await expectFileError(restore("heap"), f, /bad magic number/);
    fs.rmSync(f);
    await expectFileError(restore("heap"), f, /cannot open keyed state snapshot/);
    // A newer format version.
    const newer = good.slice();
    new DataView(newer.buffer).setUint32(8, 99, true);
    fs.writeFileSync(f, newer);
    await expectFileError(restore("sqlite"), f, /format version 99 is not supported/);
    // Intact again: restores.
    fs.writeFileSync(f, good);
    const r = await restore(kind === "heap" ? "sqlite" : "heap");
    r.setCurrentKey(7);
    expect(r.getState(new ValueStateDescriptor<string>("v")).value()).toBe("value-7");
    await r.close();
  }
});

test("a corrupt operator state snapshot is refused, naming the file", async () => {
  const { OperatorStateStore } = await import("../src/state/index.ts");
  const s = new OperatorStateStore(0, 1);
  s.getListState<number>("l").addAll([1, 2, 3]);
  const h = await s.snapshot(path.join(dir, "op"));
  const f = h.files[0]!;
  const bytes = new Uint8Array(fs.readFileSync(f));
  bytes[bytes.length - 2]! ^= 1;
  fs.writeFileSync(f, bytes);
  await expectFileError(new OperatorStateStore(0, 1).restore([h]), f, /corrupt operator state snapshot: checksum mismatch/);
});

test("keyGroupOf equals assignToKeyGroup for every kind of key", () => {
  const rand = (() => {
    let x = 7;
    return () => ((x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  })();
  const keys: unknown[] = ["", "a", "ab", "abc", "abcd", "abcde", "Zürich", "😀 emoji", "\u0001", -0, 0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 1.5, NaN, true, false, null, undefined, 5n, [1, "x"], { b: 2, a: 1 }];
  for (let i = 0; i < 3000; i++) {
    const len = Math.floor(rand() * 40);
    keys.push(Array.from({ length: len }, () => String.fromCharCode(Math.floor(rand() * (rand() < 0.2 ? 0x10000 : 128)))).join(""));
    keys.push(Math.floor((rand() - 0.5) * 2 ** 33));
  }
  for (const maxP of [1, 7, 128, 32768]) for (const k of keys) expect(keyGroupOf(k, maxP)).toBe(assignToKeyGroup(k, maxP));
  // The ranges the backends are given are those of key-groups.ts.
  expect(keyGroupRange(2, 3, 128)).toEqual({ start: 86, end: 127 });
});
