// Incremental checkpoints of the SQLite backend (issue 16): a change set holds only the changed rows; chains of
// change sets restore exactly what the heap backend, fed the same random operations, holds at each snapshot, at
// any parallelism; checkpoint retention deletes only files that no retained checkpoint references; a chain's states
// are read from each file's header once.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CheckpointStore, METADATA_FILE, METADATA_MAGIC, METADATA_VERSION, type CheckpointMetadata } from "../src/jobmanager/checkpoint-store.ts";
import {
  createKeyedStateBackend,
  keyGroupRange,
  ListStateDescriptor,
  MapStateDescriptor,
  MAX_CHANGE_SETS,
  OperatorStateStore,
  ValueStateDescriptor,
  type KeyedSnapshotHandle,
  type KeyedStateBackend,
  type KeyGroupRange,
} from "../src/state/index.ts";
import { assignToKeyGroup } from "../src/state/key-groups.ts";
import { KeyedSnapshotReader, keyedSnapshotStates } from "../src/state/snapshot-format.ts";
import { rng } from "./helpers.ts";

const MAXP = 128;
const FULL: KeyGroupRange = { start: 0, end: MAXP - 1 };
const root = fs.mkdtempSync(path.join(os.tmpdir(), "tm-state-incr-"));
const open: KeyedStateBackend[] = [];
afterAll(async () => {
  for (const b of open) await b.close().catch(() => {});
  fs.rmSync(root, { recursive: true, force: true });
});
let dirs = 0;
const fresh = (name = "d") => path.join(root, `${name}${++dirs}`);

async function backend(kind: "heap" | "sqlite", opts: { incremental?: boolean; range?: KeyGroupRange; restoreFrom?: KeyedSnapshotHandle[]; cacheBytes?: number } = {}) {
  const b = await createKeyedStateBackend({
    kind,
    maxParallelism: MAXP,
    keyGroupRange: opts.range ?? FULL,
    dir: fresh("db"),
    cacheBytes: opts.cacheBytes ?? 256 * 1024,
    incremental: opts.incremental,
    restoreFrom: opts.restoreFrom,
  });
  open.push(b);
  return b;
}

const V = new ValueStateDescriptor<number>("v");
const L = new ListStateDescriptor<string>("l");
const M = new MapStateDescriptor<number, string>("m");

/** Every key's value, list and map, for the keys of `keys` in the backend's range. */
function dump(b: KeyedStateBackend, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const v = b.getState(V);
  const l = b.getListState(L);
  const m = b.getMapState(M);
  for (const k of keys) {
    const kg = assignToKeyGroup(k, MAXP);
    if (kg < b.keyGroupRange.start || kg > b.keyGroupRange.end) continue;
    b.setCurrentKey(k);
    const entries = [...m.entries()].sort((x, y) => x[0] - y[0]);
    const val = v.value();
    const list = l.get();
    if (val !== undefined || list.length > 0 || entries.length > 0) out[k] = [val, list, entries];
  }
  return out;
}

/** One random operation on the same key of every backend. */
function randomOp(bs: KeyedStateBackend[], keys: string[], r: () => number, step: number): void {
  const k = keys[Math.floor(r() * keys.length)]!;
  const op = Math.floor(r() * 8);
  const uk = Math.floor(r() * 6);
  const clearMap = r() < 0.3;
  for (const b of bs) {
    b.setCurrentKey(k);
    switch (op) {
      case 0:
      case 1:
        b.getState(V).update(step);
        break;
      case 2:
        b.getState(V).clear();
        break;
      case 3:
        b.getListState(L).add(`e${step}`);
        break;
      case 4:
        b.getListState(L).clear();
        break;
      case 5:
        b.getMapState(M).put(uk, `m${step}`);
        break;
      case 6:
        b.getMapState(M).remove(uk);
        break;
      default:
        if (clearMap) b.getMapState(M).clear();
        else b.getMapState(M).put(uk, `n${step}`);
    }
  }
}

test("a change set holds only the rows changed since the last completed checkpoint", async () => {
  const b = await backend("sqlite", { incremental: true, cacheBytes: 1 << 20 });
  const v = b.getState(V);
  const N = 20_000;
  for (let i = 0; i < N; i++) {
    b.setCurrentKey(`user-${i}`);
    v.update(i);
  }
  const base = fresh("job");
  const h1 = await b.snapshot(path.join(base, "chk-1", "task"), { checkpointId: 1, incremental: true });
  expect(h1.files).toHaveLength(1); // no base yet: a full snapshot
  expect(h1.entries).toBe(N);
  b.notifyCheckpointComplete(1);
  // 1% of the keys change, 10 are deleted.
  for (let i = 0; i < N; i += 100) {
    b.setCurrentKey(`user-${i}`);
    v.update(-i);
  }
  for (let i = 1; i <= 10; i++) {
    b.setCurrentKey(`user-${i}`);
    v.clear();
  }
  const h2 = await b.snapshot(path.join(base, "chk-2", "task"), { checkpointId: 2, incremental: true });
  expect(h2.files).toHaveLength(2);
  expect(h2.files[0]).toBe(h1.files[0]!); // references the base, unchanged
  expect(h2.entries).toBe(N / 100 + 10);
  const own = h2.files[1]!;
  expect(path.dirname(own)).toBe(path.join(base, "chk-2", "task"));
  expect(fs.readdirSync(path.dirname(own))).toEqual([path.basename(own)]); // the change set is all it wrote
  expect(h2.newBytes).toBe(fs.statSync(own).size);
  expect(h2.newBytes!).toBeLessThan(0.05 * h1.sizeBytes);
  expect(h2.sizeBytes).toBe(h1.sizeBytes + h2.newBytes!);

  // Checkpoint 3 is never completed: checkpoint 4 still builds on checkpoint 2 and carries 3's changes too.
  b.notifyCheckpointComplete(2);
  b.setCurrentKey("user-500");
  v.update(5);
  const h3 = await b.snapshot(path.join(base, "chk-3", "task"), { checkpointId: 3, incremental: true });
  expect(h3.entries).toBe(1);
  b.setCurrentKey("user-600");
  v.update(6);
  const h4 = await b.snapshot(path.join(base, "chk-4", "task"), { checkpointId: 4, incremental: true });
  expect(h4.files.slice(0, 2)).toEqual(h2.files);
  expect(h4.files).toHaveLength(3);
  expect(h4.entries).toBe(2);

  // A savepoint (incremental: false) is self-contained, and does not become a base.
  const sp = await b.snapshot(path.join(base, "savepoint-x", "task"), { checkpointId: 5, incremental: false });
  expect(sp.files).toHaveLength(1);
  expect(sp.entries).toBe(N - 10);
  b.notifyCheckpointComplete(5);
  const h6 = await b.snapshot(path.join(base, "chk-6", "task"), { checkpointId: 6, incremental: true });
  expect(h6.files.slice(0, 2)).toEqual(h2.files);

  // Every one of them restores to the same state as the full savepoint.
  const keys = Array.from({ length: N }, (_, i) => `user-${i}`);
  const want = dump(await backend("heap", { restoreFrom: [sp] }), keys);
  expect(Object.keys(want)).toHaveLength(N - 10);
  expect(dump(await backend("heap", { restoreFrom: [h4] }), keys)).toEqual(want);
  expect(dump(await backend("sqlite", { restoreFrom: [h6] }), keys)).toEqual(want);

  // Without change tracking (state.backend.incremental off) every snapshot is full.
  const plain = await backend("sqlite", { restoreFrom: [h4] });
  const p1 = await plain.snapshot(path.join(base, "chk-7", "task"), { checkpointId: 7, incremental: true });
  plain.notifyCheckpointComplete(7);
  const p2 = await plain.snapshot(path.join(base, "chk-8", "task"), { checkpointId: 8, incremental: true });
  expect([p1.files.length, p2.files.length, p2.entries]).toEqual([1, 1, N - 10]);
}, 60_000);

test("a chain of change sets restores exactly what the heap backend held, at parallelism 1 and 3", async () => {
  const keys = Array.from({ length: 3000 }, (_, i) => `key-${i}`);
  const inc = await backend("sqlite", { incremental: true }); // small cache: eviction and write-back all the time
  const ref = await backend("heap");
  const r = rng(16);
  let step = 0;
  const job = fresh("job");
  const rounds: { h: KeyedSnapshotHandle; want: Record<string, unknown> }[] = [];
  let materialized = 0;
  let longest = 0;
  for (let round = 1; round <= 24; round++) {
    for (let i = 0; i < 150; i++) randomOp([inc, ref], keys, r, ++step);
    const want = dump(ref, keys);
    const pending = inc.snapshot(path.join(job, `chk-${round}`, "t"), { checkpointId: round, incremental: true });
    // Processing goes on while the snapshot is written; none of it may leak into the snapshot.
    for (let i = 0; i < 60; i++) randomOp([inc, ref], keys, r, ++step);
    const h = await pending;
    if (round % 5 !== 3) inc.notifyCheckpointComplete(round); // every fifth checkpoint "fails"
    else for (let i = 0; i < 50; i++) randomOp([inc, ref], keys, r, ++step);
    rounds.push({ h, want });
    if (round > 1 && h.files.length === 1) materialized++;
    longest = Math.max(longest, h.files.length);
    expect(h.files.length).toBeLessThanOrEqual(MAX_CHANGE_SETS + 1);
    expect({ round, files: h.files.length, state: dump(await backend("heap", { restoreFrom: [h] }), keys) }).toEqual({ round, files: h.files.length, state: want });
  }
  expect(longest).toBeGreaterThanOrEqual(3); // real chains were exercised
  expect(materialized).toBeGreaterThanOrEqual(1); // and a full snapshot again once they grew too long
  // A failed checkpoint's change set is never part of a later chain.
  const failed = new Set(rounds.filter((_, i) => (i + 1) % 5 === 3).map((x) => x.h.files.at(-1)!));
  for (const { h } of rounds) expect(h.files.slice(0, -1).filter((f) => failed.has(f))).toEqual([]);

  // Rescale: the longest chain restored by three SQLite backends gives each exactly its key groups.
  const { h, want } = rounds.reduce((a, x) => (x.h.files.length > a.h.files.length ? x : a));
  const merged: Record<string, unknown> = {};
  for (let i = 0; i < 3; i++) {
    const part = await backend("sqlite", { range: keyGroupRange(i, 3, MAXP), restoreFrom: [h] });
    Object.assign(merged, dump(part, keys));
  }
  expect(merged).toEqual(want);
}, 120_000);

function metadata(id: number, handles: { keyed: KeyedSnapshotHandle; operator: Awaited<ReturnType<OperatorStateStore["snapshot"]>> }): CheckpointMetadata {
  return {
    magic: METADATA_MAGIC,
    version: METADATA_VERSION,
    jobId: "job",
    jobName: "incremental",
    checkpointId: id,
    timestamp: Date.now(),
    savepoint: false,
    attempt: 0,
    maxParallelism: MAXP,
    vertices: [{ id: 0, name: "v", parallelism: 1, operatorIds: ["op"] }],
    operators: [{ id: "op", uid: null, name: "v", parallelism: 1, subtasks: [handles], states: [] }],
  };
}

test("retention deletes only files that no retained checkpoint references", async () => {
  const base = fresh("store");
  const store = new CheckpointStore(base, "job", 2);
  const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`);
  const r = rng(7);
  let b = await backend("sqlite", { incremental: true });
  const ops = new OperatorStateStore(0, 1);
  for (const k of keys) {
    b.setCurrentKey(k);
    b.getState(V).update(0);
  }
  let step = 0;
  const take = async (id: number) => {
    for (let i = 0; i < 40; i++) randomOp([b], keys, r, ++step);
    const dir = path.join(store.prepare(id), "0-0");
    fs.mkdirSync(dir, { recursive: true });
    const keyed = await b.snapshot(dir, { checkpointId: id, incremental: true });
    const operator = await ops.snapshot(dir);
    store.complete(metadata(id, { keyed, operator }), store.dirOf(id));
    b.notifyCheckpointComplete(id);
    return { keyed, operator, want: dump(b, keys) };
  };
  const exists = (f: string) => fs.existsSync(f);
  const c1 = await take(1);
  const c2 = await take(2);
  const c3 = await take(3);
  expect(c3.keyed.files.map((f) => path.relative(base, f).split("/")[1])).toEqual(["chk-1", "chk-2", "chk-3"]);
  expect(c3.keyed.files.slice(0, 2)).toEqual(c2.keyed.files);
  // Checkpoint 1 is beyond the retained two: its metadata and operator file are gone, its keyed file (the base of
  // 2's and 3's chains) stays.
  expect(exists(path.join(store.dirOf(1), METADATA_FILE))).toBe(false);
  expect(c1.operator.files.map(exists)).toEqual([false]);
  expect(exists(c1.keyed.files[0]!)).toBe(true);
  expect(store.latest()!.meta.checkpointId).toBe(3);
  const c4 = await take(4);
  expect(c2.operator.files.map(exists)).toEqual([false]);
  expect(c4.keyed.files.map(exists)).toEqual(c4.keyed.files.map(() => true));
  expect(dump(await backend("sqlite", { restoreFrom: [c4.keyed] }), keys)).toEqual(c4.want);

  // A backend restored from checkpoint 4 starts a new chain with a full snapshot; once two checkpoints of it are
  // retained, nothing of checkpoints 1 to 4 is referenced any more and their directories go.
  b = await backend("sqlite", { incremental: true, restoreFrom: [c4.keyed] });
  const c5 = await take(5);
  expect(c5.keyed.files).toHaveLength(1);
  expect(exists(store.dirOf(1))).toBe(true); // still referenced by checkpoint 4
  const c6 = await take(6);
  expect(c6.keyed.files).toEqual([c5.keyed.files[0]!, c6.keyed.files[1]!]);
  expect([1, 2, 3, 4].map((id) => exists(store.dirOf(id)))).toEqual([false, false, false, false]);
  expect(fs.readdirSync(path.join(base, "job")).sort()).toEqual(["chk-5", "chk-6"]);
  expect(dump(await backend("heap", { restoreFrom: [c6.keyed] }), keys)).toEqual(c6.want);
}, 60_000);

test("a change set without its full snapshot is refused, naming the file", async () => {
  const b = await backend("sqlite", { incremental: true });
  b.setCurrentKey("a");
  b.getState(V).update(1);
  const job = fresh("job");
  await b.snapshot(path.join(job, "chk-1", "t"), { checkpointId: 1, incremental: true });
  b.notifyCheckpointComplete(1);
  b.setCurrentKey("a");
  b.getState(V).update(2);
  const h = await b.snapshot(path.join(job, "chk-2", "t"), { checkpointId: 2, incremental: true });
  const broken = { ...h, files: [h.files[1]!] };
  const err = await backend("heap", { restoreFrom: [broken] }).then(
    () => null,
    (e: Error) => e,
  );
  expect(err?.message).toContain(h.files[1]!);
  expect(err?.message).toContain("no full snapshot before it");
});

test("the states of a chain are read from each file's header once: a checkpoint's acknowledgement reopens no file", async () => {
  const b = await backend("sqlite", { incremental: true });
  b.setCurrentKey("a");
  b.getState(V).update(1);
  b.getListState(L).add("x");
  const job = fresh("job");
  await b.snapshot(path.join(job, "chk-1", "t"), { checkpointId: 1, incremental: true });
  b.notifyCheckpointComplete(1);
  b.setCurrentKey("b");
  b.getMapState(M).put(1, "y");
  const h = await b.snapshot(path.join(job, "chk-2", "t"), { checkpointId: 2, incremental: true });
  expect(h.files).toHaveLength(2);
  const opened: string[] = [];
  const open = KeyedSnapshotReader.open;
  KeyedSnapshotReader.open = (f: string) => {
    opened.push(f);
    return open.call(KeyedSnapshotReader, f);
  };
  try {
    const names = (x: { name: string; kind: string }[]) => x.map((s) => `${s.name}:${s.kind}`).sort();
    // Files this process wrote: known from their writer.
    expect(names(await keyedSnapshotStates(h))).toEqual(["l:list", "m:map", "v:value"]);
    expect(opened).toEqual([]);
    // Files it did not write (copies, as another TaskManager's): each header read once, then known.
    const copies = h.files.map((f, i) => {
      const c = path.join(fresh("copy"), `${i}-${path.basename(f)}`);
      fs.mkdirSync(path.dirname(c), { recursive: true });
      fs.copyFileSync(f, c);
      return c;
    });
    const copied = { ...h, files: copies };
    expect(names(await keyedSnapshotStates(copied))).toEqual(["l:list", "m:map", "v:value"]);
    expect(opened).toEqual(copies);
    expect(names(await keyedSnapshotStates(copied))).toEqual(["l:list", "m:map", "v:value"]);
    expect(opened).toEqual(copies);
  } finally {
    KeyedSnapshotReader.open = open;
  }
});
