// Measures the state backends: get/put ops/s with random access over 1 million keys for raw bun:sqlite
// prepared statements (same table layout, WAL, synchronous=NORMAL), the SQLite backend and the heap backend,
// and snapshot time and size for 1 million keys on each backend. Prints a markdown table with the goals.
// Run: bun scripts/bench-state.ts [--keys 1000000] [--ops 500000]
import { Database } from "bun:sqlite";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { createKeyedStateBackend, DEFAULT_CACHE_BYTES, DEFAULT_PAGE_CACHE_BYTES, ValueStateDescriptor, type KeyedStateBackend } from "../src/state/index.ts";
import { assignToKeyGroup } from "../src/state/key-groups.ts";
import { decode, encode, encodeTransient, heapKeyOf, keyBytesOfHeapKey } from "../src/state/serde.ts";

const { values } = parseArgs({ options: { keys: { type: "string", default: "1000000" }, ops: { type: "string", default: "500000" } } });
const N = Number(values.keys);
const OPS = Number(values.ops);
const HEAP_OPS = Math.max(OPS, 2_000_000);
const MAXP = 128;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-state-"));
const keys = Array.from({ length: N }, (_, i) => `user-${i}`);
let seed = 12345;
const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const randomIndices = (n: number) => Int32Array.from({ length: n }, () => Math.floor(rand() * N));
const fmt = (x: number) => (Number.isNaN(x) ? "" : x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${Math.round(x / 1e3)} k`);
const rss = () => process.memoryUsage().rss / 2 ** 20;
const log = (s: string) => console.error(`[bench-state] ${s}`);

function timed(n: number, f: () => void): number {
  const t0 = performance.now();
  f();
  return n / ((performance.now() - t0) / 1000);
}

interface Row {
  name: string;
  get: number;
  put: number;
  putNote?: string;
  incr: number;
  load: number;
}
const rows: Row[] = [];

// ---- (b), (c) the backends ----
const desc = new ValueStateDescriptor<number>("count");
interface SnapRow {
  name: string;
  syncMs: number;
  totalMs: number;
  sizeMB: number;
  restoreMs: number;
}
const snaps: SnapRow[] = [];

async function benchBackend(name: string, b: KeyedStateBackend, ops: number, keyOf: (i: number) => unknown = (i) => keys[i]): Promise<void> {
  log(`${name}: loading`);
  const s = b.getState(desc);
  const load = timed(N, () => {
    for (let i = 0; i < N; i++) {
      b.setCurrentKey(keyOf(i));
      s.update(i);
    }
  });
  const gIdx = randomIndices(ops);
  const pIdx = randomIndices(ops);
  let sink = 0;
  const get = timed(ops, () => {
    for (let j = 0; j < ops; j++) {
      b.setCurrentKey(keyOf(gIdx[j]!));
      sink += s.value()!;
    }
  });
  const put = timed(ops, () => {
    for (let j = 0; j < ops; j++) {
      b.setCurrentKey(keyOf(pIdx[j]!));
      s.update(j);
    }
  });
  const incr = timed(ops, () => {
    for (let j = 0; j < ops; j++) {
      b.setCurrentKey(keyOf(gIdx[j]!));
      s.update(s.value()! + 1);
    }
  });
  if (sink === 0.5) console.log(sink);
  rows.push({ name, get, put, incr, load });
  log(`${name}: get ${fmt(get)}, put ${fmt(put)}, incr ${fmt(incr)}, rss ${rss().toFixed(0)} MB`);
}

async function benchSnapshot(name: string, b: KeyedStateBackend): Promise<void> {
  const snapDir = path.join(dir, `snap-${b.kind}`);
  const t0 = performance.now();
  const p = b.snapshot(snapDir);
  const syncMs = performance.now() - t0;
  const h = await p;
  const totalMs = performance.now() - t0;
  const t1 = performance.now();
  const r = await createKeyedStateBackend({ kind: b.kind, dir: path.join(dir, `restore-${b.kind}`), maxParallelism: MAXP, keyGroupRange: { start: 0, end: MAXP - 1 }, restoreFrom: [h] });
  const restoreMs = performance.now() - t1;
  await r.close();
  snaps.push({ name, syncMs, totalMs, sizeMB: h.sizeBytes / 2 ** 20, restoreMs });
  log(`${name}: snapshot sync ${syncMs.toFixed(1)} ms, total ${totalMs.toFixed(0)} ms, ${(h.sizeBytes / 2 ** 20).toFixed(1)} MB, restore ${restoreMs.toFixed(0)} ms`);
}

const full = { start: 0, end: MAXP - 1 };
// ---- (c) the heap backend first, in a fresh heap ----
{
  const b = await createKeyedStateBackend({ kind: "heap", maxParallelism: MAXP, keyGroupRange: full });
  await benchBackend("heap backend, string keys", b, HEAP_OPS);
  await benchSnapshot("heap backend", b);
  await b.close();
}
{
  const b = await createKeyedStateBackend({ kind: "heap", maxParallelism: MAXP, keyGroupRange: full });
  await benchBackend("heap backend, integer keys", b, HEAP_OPS, (i) => i);
  await b.close();
}
{
  // Reference: a bare JS Map over the same keys (no key groups, no state API).
  const m = new Map<string, number>();
  const load = timed(N, () => {
    for (let i = 0; i < N; i++) m.set(keys[i]!, i);
  });
  const gIdx = randomIndices(HEAP_OPS);
  let sink = 0;
  const get = timed(HEAP_OPS, () => {
    for (let j = 0; j < HEAP_OPS; j++) sink += m.get(keys[gIdx[j]!]!)!;
  });
  const put = timed(HEAP_OPS, () => {
    for (let j = 0; j < HEAP_OPS; j++) m.set(keys[gIdx[j]!]!, j);
  });
  const incr = timed(HEAP_OPS, () => {
    for (let j = 0; j < HEAP_OPS; j++) {
      const k = keys[gIdx[j]!]!;
      m.set(k, m.get(k)! + 1);
    }
  });
  const kgGet = timed(HEAP_OPS, () => {
    for (let j = 0; j < HEAP_OPS; j++) sink += assignToKeyGroup(keys[gIdx[j]!]!, MAXP);
  });
  if (sink === 0.5) console.log(sink);
  rows.push({ name: "reference: bare JS Map, string keys", get, put, incr, load, putNote: undefined });
  rows.push({ name: "reference: assignToKeyGroup alone, string keys", get: kgGet, put: NaN, incr: NaN, load: NaN });
}
Bun.gc(true);
// ---- (a) raw bun:sqlite ----
{
  log("raw bun:sqlite: loading");
  const file = path.join(dir, "raw.db");
  const db = new Database(file, { create: true });
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = ${-DEFAULT_PAGE_CACHE_BYTES / 1024};`);
  db.exec("CREATE TABLE kv (kg INTEGER NOT NULL, state INTEGER NOT NULL, k BLOB NOT NULL, uk BLOB NOT NULL, v BLOB NOT NULL, PRIMARY KEY (kg, state, k, uk)) WITHOUT ROWID");
  // The raw baseline gets its key bytes and key groups precomputed: it measures SQLite plus value (de)serialization.
  const kgs = Int32Array.from(keys, (k) => assignToKeyGroup(k, MAXP));
  const kbs = keys.map((k) => keyBytesOfHeapKey(heapKeyOf(k)));
  const E = new Uint8Array(0);
  const upsert = db.query("INSERT INTO kv (kg, state, k, uk, v) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kg, state, k, uk) DO UPDATE SET v = excluded.v");
  const get = db.query("SELECT v FROM kv WHERE kg = ? AND state = ? AND k = ? AND uk = ?");
  const load = timed(N, () => {
    db.exec("BEGIN");
    for (let i = 0; i < N; i++) {
      upsert.run(kgs[i]!, 1, kbs[i]!, E, encodeTransient(i));
      if (i % 10_000 === 9_999) db.exec("COMMIT; BEGIN");
    }
    db.exec("COMMIT");
  });
  const gIdx = randomIndices(OPS);
  let sink = 0;
  const getRate = timed(OPS, () => {
    for (let j = 0; j < OPS; j++) {
      const i = gIdx[j]!;
      sink += decode((get.get(kgs[i]!, 1, kbs[i]!, E) as { v: Uint8Array }).v);
    }
  });
  const auto = Math.min(OPS, 100_000);
  const pIdx = randomIndices(OPS);
  const putAuto = timed(auto, () => {
    for (let j = 0; j < auto; j++) upsert.run(kgs[pIdx[j]!]!, 1, kbs[pIdx[j]!]!, E, encodeTransient(j));
  });
  const putBatched = timed(OPS, () => {
    db.exec("BEGIN");
    for (let j = 0; j < OPS; j++) {
      upsert.run(kgs[pIdx[j]!]!, 1, kbs[pIdx[j]!]!, E, encodeTransient(j));
      if (j % 1000 === 999) db.exec("COMMIT; BEGIN");
    }
    db.exec("COMMIT");
  });
  const incr = timed(OPS, () => {
    db.exec("BEGIN");
    for (let j = 0; j < OPS; j++) {
      const i = gIdx[j]!;
      const v = decode((get.get(kgs[i]!, 1, kbs[i]!, E) as { v: Uint8Array }).v);
      upsert.run(kgs[i]!, 1, kbs[i]!, E, encodeTransient(v + 1));
      if (j % 1000 === 999) db.exec("COMMIT; BEGIN");
    }
    db.exec("COMMIT");
  });
  if (sink === 0.5) console.log(sink);
  db.close();
  rows.push({ name: "raw bun:sqlite prepared statements", get: getRate, put: Math.max(putAuto, putBatched), putNote: `autocommit ${fmt(putAuto)}, 1000 per txn ${fmt(putBatched)}`, incr, load });
  log(`raw: get ${fmt(getRate)}, put ${fmt(putAuto)} / ${fmt(putBatched)}, incr ${fmt(incr)}`);
}

{
  const b = await createKeyedStateBackend({ kind: "sqlite", dir: path.join(dir, "sqlite"), maxParallelism: MAXP, keyGroupRange: full });
  await benchBackend(`SQLite backend (${DEFAULT_CACHE_BYTES / 2 ** 20} MiB cache)`, b, OPS);
  await benchSnapshot("SQLite backend", b);
  await b.close();
}
{
  const b = await createKeyedStateBackend({ kind: "sqlite", dir: path.join(dir, "sqlite-small"), maxParallelism: MAXP, keyGroupRange: full, cacheBytes: 8 * 2 ** 20 });
  await benchBackend("SQLite backend (8 MiB cache)", b, OPS);
  await b.close();
}
fs.rmSync(dir, { recursive: true, force: true });

// ---- Report ----
const cpus = os.cpus();
const raw = rows.find((r) => r.name.startsWith("raw"))!;
const goal = (r: Row): string => {
  if (r.name.startsWith("raw")) return "baseline";
  if (r.name.startsWith("reference")) return "";
  if (r.name.startsWith("heap")) {
    const ok = Math.min(r.get, r.put) >= 2e6;
    return `>= 2 M ops/s: ${ok ? "met" : "MISSED"}`;
  }
  const g = r.get / raw.get;
  const p = r.put / raw.put;
  const ok = g >= 0.5 && p >= 0.5;
  return `>= 50% of raw: get ${(g * 100).toFixed(0)}%, put ${(p * 100).toFixed(0)}%, increment ${((r.incr / raw.incr) * 100).toFixed(0)}%: ${ok ? "met" : "MISSED"}`;
};
const lines = [
  `Machine: ${cpus.length} x ${cpus[0]?.model ?? "?"}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}, Bun ${Bun.version}`,
  `Workload: ${N.toLocaleString("en")} string keys ("user-<i>"), one ValueState<number>, maxParallelism ${MAXP}; random keys; ` +
    `${OPS.toLocaleString("en")} ops per SQLite measurement. An op is setCurrentKey + value() (get) or + update() (put); increment is value() + update().`,
  "",
  "| | load (sequential put) ops/s | get ops/s | put ops/s | increment ops/s | goal |",
  "| --- | --- | --- | --- | --- | --- |",
  ...rows.map((r) => `| ${r.name} | ${fmt(r.load)} | ${fmt(r.get)} | ${fmt(r.put)}${r.putNote ? ` (${r.putNote})` : ""} | ${fmt(r.incr)} | ${goal(r)} |`),
  "",
  `| snapshot of ${N.toLocaleString("en")} keys | synchronous part | total (until the file is written) | size | restore into the same kind |`,
  "| --- | --- | --- | --- | --- |",
  ...snaps.map((s) => `| ${s.name} | ${s.syncMs.toFixed(1)} ms | ${s.totalMs.toFixed(0)} ms | ${s.sizeMB.toFixed(1)} MiB | ${s.restoreMs.toFixed(0)} ms |`),
];
console.log(lines.join("\n"));
