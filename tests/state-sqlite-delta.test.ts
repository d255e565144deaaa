// The SQLite backend's write delta (kv_delta, docs/architecture.md 5.2): write-back batches land there and are
// merged into kv in key order. Fed the same random writes, deletions and map clears as the heap backend, with a
// cache small enough that most reads go to the database: reads, map scans, a full snapshot and a change set taken
// while the delta holds rows and deletions of kv's rows, and the file reopened with an unmerged delta all show
// what the heap backend holds.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  createKeyedStateBackend,
  MapStateDescriptor,
  SqliteKeyedStateBackend,
  ValueStateDescriptor,
  type KeyedSnapshotHandle,
  type KeyedStateBackend,
} from "../src/state/index.ts";
import { rng, sqliteCount as rows } from "./helpers.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "tm-state-delta-"));
const open: KeyedStateBackend[] = [];
afterAll(async () => {
  for (const b of open) await b.close().catch(() => {});
  fs.rmSync(root, { recursive: true, force: true });
});
let dirs = 0;
const fresh = () => path.join(root, `d${++dirs}`);
const FULL = { start: 0, end: 127 };
const KEYS = 3000;
const V = new ValueStateDescriptor<string>("v");
const M = new MapStateDescriptor<number, string>("m");

async function sqlite(file: string, restoreFrom?: KeyedSnapshotHandle[]): Promise<SqliteKeyedStateBackend> {
  const b = await createKeyedStateBackend({ kind: "sqlite", path: file, maxParallelism: 128, keyGroupRange: FULL, cacheBytes: 256 * 1024, incremental: true, restoreFrom });
  open.push(b);
  return b as SqliteKeyedStateBackend;
}

async function heap(restoreFrom?: KeyedSnapshotHandle[]): Promise<KeyedStateBackend> {
  const b = await createKeyedStateBackend({ kind: "heap", dir: fresh(), maxParallelism: 128, keyGroupRange: FULL, restoreFrom });
  open.push(b);
  return b;
}

/** Every key's value and map entries (sorted by user key). */
function dump(b: KeyedStateBackend): unknown[] {
  const v = b.getState(V);
  const m = b.getMapState(M);
  const out: unknown[] = [];
  for (let k = 0; k < KEYS; k++) {
    b.setCurrentKey(k);
    out.push([k, v.value(), [...m.entries()].sort((x, y) => x[0] - y[0])]);
  }
  return out;
}

/** `n` random operations on both backends (values of `length` to 2 x `length` characters); reads along the way
 *  are compared at once. */
function operate(backends: KeyedStateBackend[], random: () => number, n: number, length = 20): void {
  const states = backends.map((b) => ({ b, v: b.getState(V), m: b.getMapState(M) }));
  const text = () => `value-${Math.floor(random() * 1e9)}-`.padEnd(length + Math.floor(random() * length), "x");
  for (let i = 0; i < n; i++) {
    const key = Math.floor(random() * KEYS);
    const op = random();
    const uk = Math.floor(random() * 40);
    const value = text();
    const seen: unknown[] = [];
    for (const s of states) {
      s.b.setCurrentKey(key);
      if (op < 0.35) s.v.update(value);
      else if (op < 0.45) s.v.clear();
      else if (op < 0.75) s.m.put(uk, value);
      else if (op < 0.87) s.m.remove(uk);
      else if (op < 0.89) s.m.clear();
      else seen.push([s.v.value(), s.m.get(uk), op < 0.9 ? [...s.m.entries()].sort((x, y) => x[0] - y[0]) : null]);
    }
    if (seen.length > 0) expect({ i, key, got: seen[0] }).toEqual({ i, key, got: seen[1] });
  }
}

test("the write delta: merges under many writes, deletions and map clears; reads, snapshots and a reopened file match the heap backend", async () => {
  const file = path.join(fresh(), "state.db");
  const s = await sqlite(file);
  const h = await heap();
  const random = rng(2026);
  operate([s, h], random, 60_000);
  // Merges happened (every row of kv came through one: the budget makes batches far under the threshold), and
  // the delta holds rows again, deletions among them.
  expect(rows(file, "SELECT count(*) AS n FROM kv")).toBeGreaterThan(1000);
  operate([s, h], random, 4_000);
  expect(s.deltaBytes).toBeGreaterThan(0);
  expect(rows(file, "SELECT count(*) AS n FROM kv_delta WHERE v IS NULL")).toBeGreaterThan(0);
  expect(dump(s)).toEqual(dump(h));

  // A full snapshot and a change set, each taken with rows and deletions in the delta, restore what the heap held.
  const full = await s.snapshot(fresh(), { incremental: true, checkpointId: 1 });
  const atFull = dump(h);
  s.notifyCheckpointComplete(1);
  operate([s, h], random, 4_000);
  expect(s.deltaBytes).toBeGreaterThan(0);
  const changes = await s.snapshot(fresh(), { incremental: true, checkpointId: 2 });
  expect(changes.files.length).toBe(2); // a change set on top of the full snapshot
  const atChanges = dump(h);
  expect(dump(await heap([full]))).toEqual(atFull);
  expect(dump(await heap([changes]))).toEqual(atChanges);
  expect(dump(await sqlite(path.join(fresh(), "restored.db"), [changes]))).toEqual(atChanges);

  // Closed without writing back (a task's end), after the snapshot's write-behind put every entry in the file:
  // reopened, the file's delta is merged and kv alone holds the same state.
  expect(s.deltaBytes).toBeGreaterThan(0);
  await s.close({ discard: true });
  expect(rows(file, "SELECT count(*) AS n FROM kv_delta")).toBeGreaterThan(0);
  const reopened = await sqlite(file);
  expect(rows(file, "SELECT count(*) AS n FROM kv_delta")).toBe(0);
  expect(dump(reopened)).toEqual(atChanges);
}, 120_000);

test("write-back batches about as large as the delta may grow go straight into kv", async () => {
  // A 4 MiB object cache (fixed) and values of 1-2 KB make eviction batches of about 4 MiB of rows: the first goes
  // into the delta (no batch before it) and merges it at once, the next ones go straight into kv.
  const file = path.join(fresh(), "state.db");
  const s = (await createKeyedStateBackend({ kind: "sqlite", path: file, maxParallelism: 128, keyGroupRange: FULL, objectCacheBytes: 4 << 20 })) as SqliteKeyedStateBackend;
  open.push(s);
  const h = await heap();
  operate([s, h], rng(7), 30_000, 1000);
  expect(s.writeBack.toDelta).toBeGreaterThanOrEqual(1);
  expect(s.writeBack.direct).toBeGreaterThanOrEqual(1);
  expect(s.writeBack.merges).toBeGreaterThanOrEqual(1);
  expect(dump(s)).toEqual(dump(h));
  await s.close();
  expect(rows(file, "SELECT count(*) AS n FROM kv_delta")).toBe(0);
}, 120_000);

test("rows read from kv are updated there in place; new rows go to the delta", async () => {
  const file = path.join(fresh(), "state.db");
  const s = await sqlite(file);
  const v = s.getState(V);
  const N = 30_000;
  for (let k = 0; k < N; k++) {
    s.setCurrentKey(k);
    v.update(`first-${k}`);
  }
  s.flush();
  s.mergeDelta();
  const before = { ...s.writeBack };
  expect(rows(file, "SELECT count(*) AS n FROM kv")).toBe(N);
  // Read back from kv (the 64 KiB cache holds a few hundred) and updated: in place, none into the delta.
  for (let k = 0; k < N; k++) {
    s.setCurrentKey(k);
    expect(v.value()).toBe(`first-${k}`);
    v.update(`second-${k}`);
  }
  s.flush();
  expect(s.writeBack.updatesInKv - before.updatesInKv).toBe(N);
  expect(s.deltaBytes).toBe(0);
  // New keys still go to the delta.
  for (let k = N; k < N + 100; k++) {
    s.setCurrentKey(k);
    v.update(`new-${k}`);
  }
  s.flush();
  expect(s.deltaBytes).toBeGreaterThan(0);
  expect(rows(file, "SELECT count(*) AS n FROM kv_delta")).toBe(100);
  for (let k = 0; k < N + 100; k += 7) {
    s.setCurrentKey(k);
    expect(v.value()).toBe(k < N ? `second-${k}` : `new-${k}`);
  }
}, 60_000);
