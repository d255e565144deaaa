// Issue 16's state-at-scale benchmarks, side by side in one run:
// (1) keyed get+update (value() + update()) on the SQLite backend against a raw bun:sqlite loop doing the same
//     reads and upserts on the same keys (same PRAGMAs, page cache = the whole budget, 1000 upserts per
//     transaction), with working sets of 0.1x, 1x and 10x the memory budget, keys visited cyclically (the issue's
//     pattern) and at random; the previous backend (git revision --old, default 555c0d9) runs the same loop when
//     it can be checked out;
// (2) a checkpoint of --ckpt-keys keys with 1% of them changed since the last one: full vs incremental, bytes and
//     time.
// (3) heap backend bytes per key: --heap-keys keys of ValueState<number> (integer keys, and 12-character string
//     keys), JSC heap after a full collection and RSS, each in a child process of its own; beside them a bare Map
//     per key group holding the same keys and values (the floor of this representation).
// (4) the issue's job-level table: a keyed sum through the job API (fromSequence -> map to [x % keys, 1] -> keyBy
//     -> sum -> discarding sink, p=1, no checkpoints, default 64 MiB state budget) of --job-records records, keys
//     cycled, heap vs SQLite at each of --job-keys distinct keys, and --big-keys keys (as many records) on SQLite
//     alone. Each run is a child process holding an in-process cluster (JobManager, TaskManager, task Workers as
//     threads), so the child's own peak RSS and CPU time (getrusage) are the whole tree's. --job-runs runs per cell,
//     alternating heap and SQLite; --big-runs for the big cell.
// (5) the fixed costs of an incremental checkpoint (--parts fixed): 100,000 keys, 10 changed per checkpoint, 9
//     checkpoints: the snapshot, and beside it each fixed part alone (a second connection with a read
//     transaction, the 128 per-key-group change-log queries, an fsync of a small file, reading the chain's states
//     for the acknowledgement).
// --old takes several revisions (comma-separated): each one's backend runs beside the others in (1). --ws picks
// the working sets of (1). --job-revs runs (4)'s SQLite cells also from a copy of src/ at each given revision,
// alternating with the working tree's; --job-backends picks the backends of (4).
// Medians of --runs runs, with min and max, CPU seconds beside wall time. Prints markdown tables.
// Run: bun scripts/bench-state-scale.ts [--budget-mib 4] [--ops 300000] [--runs 3] [--ckpt-keys 1000000] [--old 555c0d9[,rev...]]
//      [--ws 0.1,1,10] [--job-revs rev,...] [--job-backends heap,sqlite]
//      [--heap-keys 5000000] [--parts ops,ckpt,heap,job,fixed] [--job-records 5000000] [--job-keys 10000,1000000,5000000]
//      [--job-runs 3] [--big-keys 10000000] [--big-runs 1]
import { Database } from "bun:sqlite";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { createKeyedStateBackend, ValueStateDescriptor, type KeyedStateBackend } from "../src/state/index.ts";
import { assignToKeyGroup } from "../src/state/key-groups.ts";
import { decode, encodeTransient, heapKeyOf, keyBytesOfHeapKey } from "../src/state/serde.ts";
import { openSqliteDriverSync } from "../src/state/sqlite-driver.ts";
import { keyedSnapshotStates } from "../src/state/snapshot-format.ts";
import { median as med } from "./bench-helpers/stats.ts";

const { values } = parseArgs({
  options: {
    "budget-mib": { type: "string", default: "4" },
    ops: { type: "string", default: "300000" },
    runs: { type: "string", default: "3" },
    "ckpt-keys": { type: "string", default: "1000000" },
    old: { type: "string", default: "555c0d9" },
    ws: { type: "string", default: "0.1,1,10" },
    "job-revs": { type: "string", default: "" },
    "job-backends": { type: "string", default: "heap,sqlite" },
    "heap-keys": { type: "string", default: "5000000" },
    parts: { type: "string", default: "ops,ckpt,heap" },
    "heap-child": { type: "string" },
    "job-records": { type: "string", default: "5000000" },
    "job-keys": { type: "string", default: "10000,1000000,5000000" },
    "job-runs": { type: "string", default: "3" },
    "big-keys": { type: "string", default: "10000000" },
    "big-runs": { type: "string", default: "1" },
    "job-child": { type: "string" },
  },
});

// (3)'s child: fills one representation with --heap-keys keys and prints its bytes per key.
if (values["heap-child"] !== undefined) {
  const { heapStats } = await import("bun:jsc");
  const n = Number(values["heap-keys"]);
  const mode = values["heap-child"];
  const used = () => {
    Bun.gc(true);
    Bun.gc(true);
    return heapStats().heapSize;
  };
  const strKey = (i: number) => `user-${(1e7 + i).toString()}`; // 12 characters
  const { createKeyedStateBackend: create, ValueStateDescriptor: VSD } = await import("../src/state/index.ts");
  const rss0 = process.memoryUsage.rss();
  const h0 = used();
  let keep: unknown;
  if (mode === "map-int" || mode === "map-str") {
    const maps = Array.from({ length: 128 }, () => new Map<unknown, number>());
    for (let i = 0; i < n; i++) maps[i & 127]!.set(mode === "map-int" ? i : strKey(i), i * 3);
    keep = maps;
  } else {
    const b = await create({ kind: "heap", maxParallelism: 128, keyGroupRange: { start: 0, end: 127 } });
    const st = b.getState(new VSD<number>("count"));
    for (let i = 0; i < n; i++) {
      b.setCurrentKey(mode === "backend-int" ? i : strKey(i));
      st.update(i * 3);
    }
    keep = b;
  }
  const h1 = used();
  const rss1 = process.memoryUsage.rss();
  console.log(JSON.stringify({ heap: (h1 - h0) / n, rss: (rss1 - rss0) / n, alive: keep !== undefined }));
  process.exit(0);
}
// (4)'s child: one keyed-sum job on an in-process cluster; prints records/s, wall and CPU seconds, peak RSS.
if (values["job-child"] !== undefined) {
  const [backend, keysS, recordsS] = values["job-child"].split(":");
  const { startLocalCluster } = await import("../src/client/local-cluster.ts");
  const { connectClient, submitJob, waitForJob } = await import("../src/client/job-client.ts");
  const { prepareJob } = await import("../src/client/prepare-job.ts");
  const { defaultConfig } = await import("../src/config/index.ts");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-job-"));
  const file = path.join(dir, "sum.ts");
  fs.writeFileSync(
    file,
    `export default (env, args) => {
      env.setStateBackend(args[0]);
      const keys = Number(args[1]);
      // startNewChain: the keyBy stays an exchange at p=1, as in the earlier rounds' figures.
      env.fromSequence(1, Number(args[2])).map((x) => [x % keys, 1]).keyBy((t) => t[0]).sum(1).startNewChain().addSink(() => {});
    };\n`,
  );
  const cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 1, config: { ...defaultConfig(), "taskmanager.state.dir": path.join(dir, "state") } });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  const u0 = process.resourceUsage();
  const jobId = await submitJob(rpc, await prepareJob(file, [backend!, keysS!, recordsS!], 1));
  const s = await waitForJob(rpc, jobId, () => {}, 50);
  const u1 = process.resourceUsage();
  rpc.close();
  await cluster.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  if (s.state !== "FINISHED") throw new Error(`keyed sum (${values["job-child"]}) ended ${s.state}: ${s.error?.message}`);
  const secs = (s.endTime! - s.startTime) / 1000;
  console.log(
    JSON.stringify({
      rate: Number(recordsS) / secs,
      secs,
      user: (u1.userCPUTime - u0.userCPUTime) / 1e6,
      sys: (u1.systemCPUTime - u0.systemCPUTime) / 1e6,
      rssMB: (u1.maxRSS * 1024) / 1e6,
    }),
  );
  process.exit(0);
}
const PARTS = new Set(values.parts!.split(","));
const BUDGET = Number(values["budget-mib"]) * 2 ** 20;
const OPS = Number(values.ops);
const RUNS = Number(values.runs);
const CKPT_KEYS = Number(values["ckpt-keys"]);
const MAXP = 128;
const FULL = { start: 0, end: MAXP - 1 };
/** Bytes a ValueState<number> row of a "user-<i>" key takes in the database file (measured: 38-44). */
const ROW_BYTES = 40;
const loadNow = () => os.loadavg().map((x) => x.toFixed(1)).join(" ");
const root = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-scale-"));
const log = (s: string) => console.error(`[bench-state-scale] ${s}`);
const fmt = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${Math.round(x / 1e3)} k`);
const mmm = (xs: number[], f: (x: number) => string) => `${f(med(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;

// Earlier backends (--old, comma-separated revisions), each checked out beside the repository so that its
// imports resolve.
const REPO = path.join(import.meta.dir, "..");
const olds: { rev: string; create: typeof createKeyedStateBackend }[] = [];
const oldDirs: string[] = [];
for (const rev of values.old!.split(",").filter((r) => r.length > 0)) {
  const oldDir = path.join(REPO, `.bench-old-state-${rev.replace(/[^A-Za-z0-9]/g, "_")}`);
  oldDirs.push(oldDir);
  try {
    fs.rmSync(oldDir, { recursive: true, force: true });
    fs.mkdirSync(oldDir);
    const tar = execFileSync("git", ["archive", rev, "src"], { cwd: REPO, maxBuffer: 1 << 28 });
    execFileSync("tar", ["-x", "-C", oldDir], { input: tar });
    olds.push({ rev, create: (await import(path.join(oldDir, "src/state/index.ts"))).createKeyedStateBackend });
  } catch (e) {
    log(`backend of ${rev} unavailable: ${(e as Error).message}`);
  }
}

function keyOrder(n: number, pattern: "cyclic" | "random", ops: number): Int32Array {
  let seed = 12345;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  return Int32Array.from({ length: ops }, (_, j) => (pattern === "cyclic" ? j % n : Math.floor(rand() * n)));
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

interface OpsRun {
  rate: number;
  /** CPU microseconds per op. */
  cpuUs: number;
}

async function backendRun(create: typeof createKeyedStateBackend, keys: string[], order: Int32Array): Promise<OpsRun> {
  const dir = fs.mkdtempSync(path.join(root, "b-"));
  const b: KeyedStateBackend = await create({ kind: "sqlite", dir, maxParallelism: MAXP, keyGroupRange: FULL, cacheBytes: BUDGET });
  const s = b.getState(new ValueStateDescriptor<number>("count"));
  for (let i = 0; i < keys.length; i++) {
    b.setCurrentKey(keys[i]);
    s.update(i);
  }
  (b as { flush?: () => void }).flush?.();
  // Warm-up pass over part of the order, then the measured one.
  const t0 = performance.now();
  const c0 = cpuSeconds();
  for (let j = 0; j < order.length; j++) {
    b.setCurrentKey(keys[order[j]!]);
    s.update(s.value()! + 1);
  }
  const rate = order.length / ((performance.now() - t0) / 1000);
  const cpuUs = ((cpuSeconds() - c0) / order.length) * 1e6;
  await b.close();
  fs.rmSync(dir, { recursive: true, force: true });
  return { rate, cpuUs };
}

function rawRun(keys: string[], order: Int32Array): OpsRun {
  const file = path.join(fs.mkdtempSync(path.join(root, "r-")), "raw.db");
  const db = new Database(file, { create: true });
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = ${-BUDGET / 1024}; PRAGMA mmap_size = ${BUDGET}`);
  db.exec("CREATE TABLE kv (kg INTEGER NOT NULL, state INTEGER NOT NULL, k BLOB NOT NULL, uk BLOB NOT NULL, v BLOB NOT NULL, PRIMARY KEY (kg, state, k, uk)) WITHOUT ROWID");
  const upsert = db.query("INSERT INTO kv (kg, state, k, uk, v) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kg, state, k, uk) DO UPDATE SET v = excluded.v");
  const get = db.query("SELECT v FROM kv WHERE kg = ? AND state = ? AND k = ? AND uk = ?");
  const E = new Uint8Array(0);
  db.exec("BEGIN");
  for (let i = 0; i < keys.length; i++) {
    upsert.run(assignToKeyGroup(keys[i], MAXP), 1, keyBytesOfHeapKey(heapKeyOf(keys[i])), E, encodeTransient(i));
    if (i % 10_000 === 9_999) db.exec("COMMIT; BEGIN");
  }
  db.exec("COMMIT");
  // The raw loop computes key group and key bytes per op, as the backend must.
  const t0 = performance.now();
  const c0 = cpuSeconds();
  db.exec("BEGIN");
  for (let j = 0; j < order.length; j++) {
    const key = keys[order[j]!]!;
    const kg = assignToKeyGroup(key, MAXP);
    const kb = keyBytesOfHeapKey(heapKeyOf(key));
    const v = decode((get.get(kg, 1, kb, E) as { v: Uint8Array }).v);
    upsert.run(kg, 1, kb, E, encodeTransient(v + 1));
    if (j % 1000 === 999) db.exec("COMMIT; BEGIN");
  }
  db.exec("COMMIT");
  const rate = order.length / ((performance.now() - t0) / 1000);
  const cpuUs = ((cpuSeconds() - c0) / order.length) * 1e6;
  db.close();
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  return { rate, cpuUs };
}

// ---- (1) get+update vs the raw loop ----
const lines1: string[] = [];
for (const ws of PARTS.has("ops") ? values.ws!.split(",").map(Number) : []) {
  const n = Math.round((ws * BUDGET) / ROW_BYTES);
  const keys = Array.from({ length: n }, (_, i) => `user-${i}`);
  for (const pattern of ["cyclic", "random"] as const) {
    const order = keyOrder(n, pattern, Math.max(OPS, pattern === "cyclic" ? n : 0));
    const raw: number[] = [];
    const now: number[] = [];
    const old: number[][] = olds.map(() => []);
    const oldCpu: number[][] = olds.map(() => []);
    const rawCpu: number[] = [];
    const nowCpu: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      // Alternating, so that load from elsewhere falls on each alike.
      const a = rawRun(keys, order);
      const b = await backendRun(createKeyedStateBackend, keys, order);
      raw.push(a.rate);
      rawCpu.push(a.cpuUs);
      now.push(b.rate);
      nowCpu.push(b.cpuUs);
      for (let o = 0; o < olds.length; o++) {
        const x = await backendRun(olds[o]!.create, keys, order);
        old[o]!.push(x.rate);
        oldCpu[o]!.push(x.cpuUs);
      }
      log(
        `${ws}x ${pattern} run ${r + 1}: raw ${fmt(raw.at(-1)!)} (${a.cpuUs.toFixed(1)} us cpu/op), new ${fmt(now.at(-1)!)} (${b.cpuUs.toFixed(1)} us cpu/op)` +
          olds.map((o, i) => `, ${o.rev} ${fmt(old[i]!.at(-1)!)} (${oldCpu[i]!.at(-1)!.toFixed(1)} us cpu/op)`).join("") + `, load ${loadNow()}`,
      );
    }
    const ratio = (xs: number[]) => xs.map((x, i) => x / raw[i]!);
    const us = (x: number) => x.toFixed(1);
    lines1.push(
      `| ${ws}x (${n.toLocaleString("en")} keys) | ${pattern} | ${mmm(raw, fmt)} | ${mmm(now, fmt)} | ${mmm(ratio(now), (x) => x.toFixed(2))} | ${mmm(rawCpu, us)} / ${mmm(nowCpu, us)} | ` +
        olds.map((_, i) => `${mmm(old[i]!, fmt)} | ${mmm(ratio(old[i]!), (x) => x.toFixed(2))} | ${mmm(oldCpu[i]!, us)} |`).join(" "),
    );
  }
}

// ---- (2) checkpoint of CKPT_KEYS keys, 1% changed: full vs incremental ----
const full: { ms: number; cpu: number; bytes: number }[] = [];
const incr: { ms: number; cpu: number; bytes: number }[] = [];
if (PARTS.has("ckpt")) {
  const b = await createKeyedStateBackend({ kind: "sqlite", dir: path.join(root, "ckpt"), maxParallelism: MAXP, keyGroupRange: FULL, incremental: true });
  const s = b.getState(new ValueStateDescriptor<number>("count"));
  log(`checkpoint: loading ${CKPT_KEYS} keys`);
  for (let i = 0; i < CKPT_KEYS; i++) {
    b.setCurrentKey(`user-${i}`);
    s.update(i);
  }
  let id = 0;
  let seed = 99;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const change = () => {
    for (let j = 0; j < CKPT_KEYS / 100; j++) {
      b.setCurrentKey(`user-${Math.floor(rand() * CKPT_KEYS)}`);
      s.update(-j);
    }
  };
  const take = async (incremental: boolean) => {
    const t0 = performance.now();
    const c0 = cpuSeconds();
    const h = await b.snapshot(path.join(root, "chk", `chk-${++id}`, "t"), { checkpointId: id, incremental });
    const ms = performance.now() - t0;
    const cpu = cpuSeconds() - c0;
    if (incremental) b.notifyCheckpointComplete(id);
    return { ms, cpu, bytes: h.newBytes ?? h.sizeBytes };
  };
  await take(true); // the base
  for (let r = 0; r < RUNS; r++) {
    change();
    // Written back before either is timed: a snapshot writes the dirty cache entries back after its file (either
    // kind alike), and here only the first of the two would find any.
    (b as { flush?: () => void }).flush?.();
    full.push(await take(false)); // a full snapshot of the same state (as a savepoint would be)
    incr.push(await take(true));
    log(`checkpoint run ${r + 1}: full ${full.at(-1)!.ms.toFixed(0)} ms (cpu ${full.at(-1)!.cpu.toFixed(2)} s) ${full.at(-1)!.bytes} B, incremental ${incr.at(-1)!.ms.toFixed(0)} ms (cpu ${incr.at(-1)!.cpu.toFixed(2)} s) ${incr.at(-1)!.bytes} B`);
  }
  await b.close();
}
// ---- (5) fixed costs of an incremental checkpoint ----
const fixed: Record<string, number[]> = {};
if (PARTS.has("fixed")) {
  const add = (k: string, x: number) => (fixed[k] ??= []).push(x);
  const b = (await createKeyedStateBackend({ kind: "sqlite", dir: path.join(root, "fixed"), maxParallelism: MAXP, keyGroupRange: FULL, incremental: true })) as KeyedStateBackend & {
    flush(): void;
    path: string;
    q: { changesOfGroup: { sql: string } };
  };
  const s = b.getState(new ValueStateDescriptor<number>("v"));
  for (let i = 0; i < 100_000; i++) {
    b.setCurrentKey(i);
    s.update(i);
  }
  b.flush();
  let id = 0;
  const take = async () => {
    const h = await b.snapshot(path.join(root, "fixed-chk", `chk-${++id}`, "t"), { checkpointId: id, incremental: true });
    b.notifyCheckpointComplete(id);
    return h;
  };
  await take();
  for (let r = 0; r < 9; r++) {
    for (let j = 0; j < 10; j++) {
      b.setCurrentKey(r * 10 + j);
      s.update(-1);
    }
    let t = performance.now();
    const c0 = cpuSeconds();
    const h = await take();
    add("incremental snapshot, wall", performance.now() - t);
    add("incremental snapshot, CPU", (cpuSeconds() - c0) * 1000);
    t = performance.now();
    await keyedSnapshotStates(h);
    add("the chain's states for the acknowledgement", performance.now() - t);
    t = performance.now();
    const d = openSqliteDriverSync(b.path);
    d.exec("BEGIN");
    d.prepare("SELECT count(*) AS n FROM tm_state").get();
    add("second connection and its read transaction", performance.now() - t);
    const q = d.prepare(b.q.changesOfGroup.sql);
    t = performance.now();
    for (let kg = 0; kg < MAXP; kg++) q.all([kg, 0]);
    add("128 per-key-group change-log queries", performance.now() - t);
    d.exec("COMMIT");
    d.close();
    const fh = await fs.promises.open(path.join(root, `fsync-${r}`), "w");
    await fh.write(new Uint8Array(2000));
    t = performance.now();
    await fh.sync();
    add("fsync of a 2 KB file", performance.now() - t);
    await fh.close();
  }
  await b.close();
}
fs.rmSync(root, { recursive: true, force: true });
for (const d of oldDirs) fs.rmSync(d, { recursive: true, force: true });

// ---- (3) heap backend bytes per key (a child process per measurement, alternating) ----
const HEAP_KEYS = Number(values["heap-keys"]);
const heapModes = ["backend-int", "map-int", "backend-str", "map-str"] as const;
const heap = new Map<string, { heap: number[]; rss: number[] }>(heapModes.map((m) => [m, { heap: [], rss: [] }]));
for (let r = 0; PARTS.has("heap") && r < RUNS; r++) {
  for (const mode of heapModes) {
    const out = execFileSync(process.execPath, [import.meta.path, "--heap-child", mode, "--heap-keys", String(HEAP_KEYS)], { encoding: "utf8" });
    const m = JSON.parse(out.trim().split("\n").at(-1)!) as { heap: number; rss: number };
    heap.get(mode)!.heap.push(m.heap);
    heap.get(mode)!.rss.push(m.rss);
    log(`heap run ${r + 1} ${mode}: ${m.heap.toFixed(1)} B/key heap, ${m.rss.toFixed(1)} B/key RSS`);
  }
}

// ---- (4) the issue's job-level table ----
interface JobRun {
  rate: number;
  secs: number;
  user: number;
  sys: number;
  rssMB: number;
}
const jobCells: { backend: string; keys: number; records: number; runs: JobRun[]; load: string[]; rev?: string }[] = [];
// --job-revs: the job child also runs from a copy of src/ at each of these revisions (this script beside it).
const jobRevDirs = new Map<string, string>([["", import.meta.path]]);
const revDirs: string[] = [];
for (const rev of values["job-revs"]!.split(",").filter((r) => r.length > 0)) {
  const d = path.join(REPO, `.bench-rev-${rev.replace(/[^A-Za-z0-9]/g, "_")}`);
  revDirs.push(d);
  fs.rmSync(d, { recursive: true, force: true });
  fs.mkdirSync(path.join(d, "scripts"), { recursive: true });
  execFileSync("tar", ["-x", "-C", d], { input: execFileSync("git", ["archive", rev, "src", "package.json"], { cwd: REPO, maxBuffer: 1 << 28 }) });
  fs.symlinkSync(path.join(REPO, "node_modules"), path.join(d, "node_modules"));
  fs.copyFileSync(import.meta.path, path.join(d, "scripts", path.basename(import.meta.path)));
  jobRevDirs.set(rev, path.join(d, "scripts", path.basename(import.meta.path)));
}
const runJob = (backend: string, keys: number, records: number, rev = ""): JobRun => {
  const out = execFileSync(process.execPath, [jobRevDirs.get(rev)!, "--job-child", `${backend}:${keys}:${records}`], { encoding: "utf8", maxBuffer: 1 << 24 });
  return JSON.parse(out.trim().split("\n").at(-1)!) as JobRun;
};
if (PARTS.has("job")) {
  const records = Number(values["job-records"]);
  const revs = [...jobRevDirs.keys()];
  const cells = values["job-keys"]!
    .split(",")
    .flatMap((k) =>
      values["job-backends"]!.split(",").flatMap((backend) =>
        (backend === "heap" ? [""] : revs).map((rev) => ({ backend, keys: Number(k), records, runs: [] as JobRun[], load: [] as string[], rev })),
      ),
    );
  const big = { backend: "sqlite", keys: Number(values["big-keys"]), records: Number(values["big-keys"]), runs: [] as JobRun[], load: [] as string[] };
  for (let r = 0; r < Number(values["job-runs"]); r++) {
    for (const c of cells) {
      c.load.push(loadNow());
      c.runs.push(runJob(c.backend, c.keys, c.records, c.rev));
      const x = c.runs.at(-1)!;
      log(`job run ${r + 1} ${c.backend}${c.rev ? ` (${c.rev})` : ""} ${c.keys} keys: ${fmt(x.rate)} records/s, ${x.secs.toFixed(1)} s, cpu ${x.user.toFixed(1)}+${x.sys.toFixed(1)} s, peak RSS ${x.rssMB.toFixed(0)} MB, load ${c.load.at(-1)}`);
    }
  }
  for (let r = 0; big.keys > 0 && r < Number(values["big-runs"]); r++) {
    big.load.push(loadNow());
    big.runs.push(runJob(big.backend, big.keys, big.records));
    const x = big.runs.at(-1)!;
    log(`job run ${r + 1} sqlite ${big.keys} keys: ${fmt(x.rate)} records/s, ${x.secs.toFixed(1)} s, cpu ${x.user.toFixed(1)}+${x.sys.toFixed(1)} s, peak RSS ${x.rssMB.toFixed(0)} MB, load ${big.load.at(-1)}`);
  }
  jobCells.push(...cells.filter((c) => c.runs.length > 0));
  if (big.runs.length > 0) jobCells.push(big);
}
for (const d of revDirs) fs.rmSync(d, { recursive: true, force: true });

const cpus = os.cpus();
const mib = (x: number) => `${(x / 2 ** 20).toFixed(2)} MiB`;
const ms = (x: number) => `${x.toFixed(0)} ms`;
const b1 = (x: number) => x.toFixed(1);
console.log(
  [
    `Command: bun scripts/bench-state-scale.ts ${process.argv.slice(2).join(" ")}`,
    `Machine: ${cpus.length} x ${cpus[0]?.model ?? "?"}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.type()} ${os.release()}, Bun ${Bun.version}; load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`,
    ...(PARTS.has("ops") || PARTS.has("ckpt") || PARTS.has("heap") || PARTS.has("fixed") ? [`Budget (state.backend.sqlite.cache-size) ${BUDGET / 2 ** 20} MiB; ${RUNS} runs; median (min-max). Working set = keys x ${ROW_BYTES} B of rows / budget.`] : []),
    ...(jobCells.length > 0 ? [`Job table: default state budget (64 MiB), no checkpoints; median (min-max) of the runs of each cell; CPU and peak RSS of the child process (the whole cluster: Workers are threads).`] : []),
    "",
    ...(lines1.length === 0
      ? []
      : [
          `| working set | keys visited | raw bun:sqlite get+upsert/s | SQLite backend get+update/s | backend / raw (goal >= 0.5 at 10x) | CPU us per op, raw / backend |` +
            olds.map((o) => ` backend of ${o.rev} | ${o.rev} / raw | CPU us per op, ${o.rev} |`).join(""),
          "| --- | --- | --- | --- | --- | --- |" + olds.map(() => " --- | --- | --- |").join(""),
          ...lines1,
          "",
        ]),
    ...(full.length === 0
      ? []
      : [
          `| checkpoint of ${CKPT_KEYS.toLocaleString("en")} keys, 1% changed | wall time | CPU time | bytes written |`,
          "| --- | --- | --- | --- |",
          `| full | ${mmm(full.map((x) => x.ms), ms)} | ${mmm(full.map((x) => x.cpu * 1000), ms)} | ${mmm(full.map((x) => x.bytes), mib)} |`,
          `| incremental (change set) | ${mmm(incr.map((x) => x.ms), ms)} | ${mmm(incr.map((x) => x.cpu * 1000), ms)} | ${mmm(incr.map((x) => x.bytes), mib)} |`,
          `| incremental / full (goal: bytes <= 5%, time <= 10%) | ${((med(incr.map((x) => x.ms)) / med(full.map((x) => x.ms))) * 100).toFixed(1)}% | ${((med(incr.map((x) => x.cpu)) / med(full.map((x) => x.cpu))) * 100).toFixed(1)}% | ${((med(incr.map((x) => x.bytes)) / med(full.map((x) => x.bytes))) * 100).toFixed(1)}% |`,
          "",
        ]),
    ...(heap.get("backend-int")!.heap.length === 0
      ? []
      : [
          `| ${HEAP_KEYS.toLocaleString("en")} keys of ValueState<number> | JSC heap bytes per key | RSS bytes per key |`,
          "| --- | --- | --- |",
          ...heapModes.map((m) => `| ${m} | ${mmm(heap.get(m)!.heap, b1)} | ${mmm(heap.get(m)!.rss, b1)} |`),
          "",
        ]),
    ...(Object.keys(fixed).length === 0
      ? []
      : [
          "| incremental checkpoint of 100,000 keys, 10 changed (9 checkpoints) | ms, median (min-max) |",
          "| --- | --- |",
          ...Object.entries(fixed).map(([k, xs]) => `| ${k} | ${mmm(xs, (x) => x.toFixed(2))} |`),
          "",
        ]),
    ...(jobCells.length === 0
      ? []
      : [
          "| backend | distinct keys | records | runs | records/s | wall s | CPU-s (of which kernel) | peak RSS | load average (1/5/15 min) at each start |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
          ...jobCells.map(
            (c) =>
              `| ${c.backend}${c.rev ? ` (${c.rev})` : ""} | ${c.keys.toLocaleString("en")} | ${c.records.toLocaleString("en")} | ${c.runs.length} | ${mmm(c.runs.map((x) => x.rate), fmt)} | ${mmm(c.runs.map((x) => x.secs), b1)} | ` +
              `${mmm(c.runs.map((x) => x.user + x.sys), b1)} (${mmm(c.runs.map((x) => x.sys), b1)}) | ${mmm(c.runs.map((x) => x.rssMB), (x) => `${x.toFixed(0)} MB`)} | ${c.load.join("; ")} |`,
          ),
        ]),
  ].join("\n"),
);
