// The bench harness of issue 8 (run by `bash scripts/bench [--quick]`), in one process tree:
//  (a) keyed sum (sequence -> keyBy -> sum -> discarding sink) at parallelism 1 and 2 on an in-process cluster,
//      beside a plain single-thread Bun loop computing the same sums (the single-core limit);
//  (b) every Nexmark query of examples/nexmark/ at parallelism 1 and 2 (in-process cluster: one TaskManager,
//      2 slots, real Workers; output discarded), heap and SQLite backends: events/s (events / job run time) and
//      events/s per core, beside the published Apache Flink figures per core (nexmark/nexmark GUIDE_V1, RocksDB);
//  (c) end-to-end latency p50/p99 of a throttled Nexmark source -> keyBy -> sink at half the measured maximum,
//      buffer timeout 10 ms;
//  (d) TaskManager start -> registered and idle RSS (compiled binary, as scripts/bench-skeleton.ts).
// It prints the tables and, with --write, puts them into docs/benchmarks.md under
// "## Nexmark and pipeline throughput (issue 8)" (replacing that section's generated part).
// Run: bash scripts/bench [--quick], or only the queries: bun scripts/bench-nexmark.ts [--quick] [--write] [--events N] [--sqlite-events N] [--sum-records N]
//      [--backends heap,sqlite] [--queries q0,q1,...] [--parts sum,nexmark,latency,start] [--runs 1]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig } from "../src/config/index.ts";
import { startLocalCluster } from "../src/client/local-cluster.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { setLogLevel } from "../src/util/log.ts";
import { Child, ROOT } from "../tests/helpers.ts";

/** Flink's published events/s per core (nexmark/nexmark README, GUIDE_V1). */
const FLINK_PER_CORE: Record<string, number> = { q0: 155e3, q1: 158e3, q2: 175e3, q3: 152e3, q4: 34e3, q5: 22e3, q7: 12e3, q8: 146e3 };
const SECTION = "## Nexmark and pipeline throughput (issue 8)";
const END_MARK = "<!-- end of scripts/bench output -->";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    write: { type: "boolean", default: false },
    events: { type: "string" },
    "sqlite-events": { type: "string" },
    "sum-records": { type: "string" },
    backends: { type: "string", default: "heap,sqlite" },
    backend: { type: "string" },
    queries: { type: "string", default: "q0,q1,q2,q3,q4,q5,q7,q8" },
    // scripts/bench runs every part (TM_BENCH_ALL=1); run directly, this script measures the Nexmark queries only.
    parts: { type: "string", default: process.env.TM_BENCH_ALL === "1" ? "sum,nexmark,latency,start" : "nexmark" },
    runs: { type: "string", default: "1" },
    seed: { type: "string", default: "0" },
    "latency-seconds": { type: "string" },
  },
});
const QUICK = values.quick!;
// 10 M events per query and backend, as the issue asks: about 11 minutes in all on 2 cores.
const EVENTS = Number(values.events ?? (QUICK ? 100_000 : 10_000_000));
const SQLITE_EVENTS = Number(values["sqlite-events"] ?? (QUICK ? 100_000 : 10_000_000));
const SUM_RECORDS = Number(values["sum-records"] ?? (QUICK ? 1_000_000 : 20_000_000));
const LATENCY_SECONDS = Number(values["latency-seconds"] ?? (QUICK ? 2 : 10));
const RUNS = Number(values.runs);
const BACKENDS = (values.backend ?? values.backends!).split(",").filter((b) => b.length > 0) as ("heap" | "sqlite")[];
for (const b of BACKENDS) if (b !== "heap" && b !== "sqlite") throw new Error(`--backends: expected heap and/or sqlite, got ${b}`);
const QUERIES = values.queries!.split(",").filter((q) => q.length > 0);
for (const q of QUERIES) if (!(q in FLINK_PER_CORE)) throw new Error(`unknown query ${q} (expected some of ${Object.keys(FLINK_PER_CORE).join(", ")})`);
const PARTS = new Set(values.parts!.split(","));
const CORES = os.availableParallelism();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-"));
const log = (s: string) => console.error(`[bench] ${s}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(0)} K` : n.toFixed(0));
const api = JSON.stringify(path.join(ROOT, "src/api/index.ts"));
setLogLevel("warn");

function jobFile(name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `import { NexmarkSource } from ${api};\nexport default (env, args) => {\n${body}\n};\n`);
  return file;
}

/** Runs a job on a fresh in-process cluster (1 TaskManager, 2 slots); returns its final status. */
async function runLocal(file: string, args: string[], p: number, backend: "heap" | "sqlite" = "heap"): Promise<JobStatus> {
  const stateDir = path.join(dir, "state");
  const cfg = { ...defaultConfig(), "state.backend": backend, "taskmanager.state.dir": stateDir, "log.level": "warn" as const };
  const cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: cfg });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  try {
    const s = await waitForJob(rpc, await submitJob(rpc, await prepareJob(file, args, p)), () => {}, 50);
    if (s.state !== "FINISHED") throw new Error(`${path.basename(file)} ${args.join(" ")} at p=${p} ended ${s.state}: ${s.error?.message}`);
    return s;
  } finally {
    rpc.close();
    await cluster.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}
const seconds = (s: JobStatus) => (s.endTime! - s.startTime) / 1000;

const out: string[] = [];
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");

// (a) Keyed sum vs a plain loop.
async function keyedSum(): Promise<void> {
  const N = SUM_RECORDS;
  const file = jobFile("sum.ts", `env.fromSequence(1, Number(args[0])).map((x) => [x % 10000, 1]).keyBy((t) => t[0]).sum(1).addSink(() => {});`);
  // The loop: the same records, tuples and per-key running sums (a Map, as keyed state is), each result handed to
  // a discarding sink function.
  const loopSecs: number[] = [];
  for (let r = 0; r < Math.max(RUNS, 3); r++) {
    const sink = (_t: [number, number]) => {};
    const t0 = performance.now();
    const sums = new Map<number, number>();
    for (let x = 1; x <= N; x++) {
      const t: [number, number] = [x % 10000, 1];
      const s = (sums.get(t[0]) ?? 0) + t[1];
      sums.set(t[0], s);
      sink([t[0], s]);
    }
    loopSecs.push((performance.now() - t0) / 1000);
  }
  const loop = N / median(loopSecs);
  log(`keyed sum loop: ${fmt(loop)} records/s`);
  const rate: number[] = [];
  for (const p of [1, 2]) {
    const secs: number[] = [];
    for (let r = 0; r < RUNS; r++) secs.push(seconds(await runLocal(file, [String(N)], p)));
    rate.push(N / median(secs));
    log(`keyed sum p=${p}: ${fmt(rate.at(-1)!)} records/s`);
  }
  out.push(`### Keyed sum (${fmt(N)} records, 10,000 keys, heap backend)\n`);
  out.push("| measure | records/s | goal |\n| --- | --- | --- |");
  out.push(`| plain single-thread Bun loop (Map of sums, same tuples) | ${fmt(loop)} | the single-core limit |`);
  out.push(`| keyed sum, p=1 | ${fmt(rate[0]!)} (${((rate[0]! / loop) * 100).toFixed(0)}% of the loop) | >= 50% of the loop: ${verdict(rate[0]! >= 0.5 * loop)} |`);
  out.push(`| keyed sum, p=2 | ${fmt(rate[1]!)} (${(rate[1]! / rate[0]!).toFixed(2)}x p=1) | >= 1.6x p=1: ${verdict(rate[1]! >= 1.6 * rate[0]!)} |`);
  out.push("");
}

// (b) Nexmark queries.
async function nexmarkQueries(): Promise<void> {
  const cells: Record<string, Record<string, [number, number]>> = {};
  for (const backend of BACKENDS) {
    const n = backend === "sqlite" ? SQLITE_EVENTS : EVENTS;
    for (const q of QUERIES) {
      const rate: number[] = [];
      for (const p of [1, 2]) {
        const secs: number[] = [];
        for (let r = 0; r < RUNS; r++) secs.push(seconds(await runLocal(path.join(ROOT, "examples/nexmark", `${q}.ts`), [String(n), values.seed!, "discard"], p, backend)));
        rate.push(n / median(secs));
        log(`${q} ${backend} p=${p}: ${median(secs).toFixed(2)} s, ${fmt(rate.at(-1)!)} events/s`);
      }
      (cells[q] ??= {})[backend] = [rate[0]!, rate[1]!];
    }
  }
  const per = (r: [number, number]) => [r[0], r[1] / Math.min(2, CORES)] as const;
  out.push(`### Nexmark queries (${BACKENDS.map((b) => `${fmt(b === "sqlite" ? SQLITE_EVENTS : EVENTS)} events with the ${b} backend`).join(", ")}; seed ${values.seed})\n`);
  const head = BACKENDS.map((b) => `${b} p=1 | ${b} p=2 | ${b} per core p=1 / p=2`).join(" | ");
  out.push(`| query | ${head} | Flink per core | goal: per core >= Flink |\n| --- | ${BACKENDS.map(() => "--- | --- | ---").join(" | ")} | --- | --- |`);
  for (const q of QUERIES) {
    const flink = FLINK_PER_CORE[q]!;
    const row = BACKENDS.map((b) => {
      const r = cells[q]![b]!;
      const pc = per(r);
      return `${fmt(r[0])} | ${fmt(r[1])} | ${fmt(pc[0])} / ${fmt(pc[1])}`;
    });
    const goals = BACKENDS.map((b) => {
      const pc = per(cells[q]![b]!);
      return `${b}: p=1 ${verdict(pc[0] >= flink)}, p=2 ${verdict(pc[1] >= flink)}`;
    });
    out.push(`| ${q} | ${row.join(" | ")} | ${fmt(flink)} | ${goals.join("; ")} |`);
  }
  out.push("");
  if (BACKENDS.includes("sqlite") && SQLITE_EVENTS < EVENTS) {
    out.push(`The SQLite backend runs ${fmt(SQLITE_EVENTS)} events per query, not the issue's 10 M, to keep the whole bench near 15`);
    out.push("minutes on 2 cores (`--sqlite-events 10000000` for the full count).\n");
  }
}

// (c) Latency at half the maximum rate.
async function latency(): Promise<void> {
  // Stamping map chained to the source: in each source subtask the k-th event it emits was scheduled (throttled
  // source) at t0 + k * p / rate ms after its first, t0 being when the first event came out of the source.
  const file = jobFile("latency.ts", `
    const [events, rate, throttle, outDir, p] = [Number(args[0]), Number(args[1]), args[2] === "1", args[3], Number(args[4])];
    env.setBufferTimeout(10);
    let t0 = -1, k = 0;
    const msPer = (1000 * p) / rate;
    env.fromSource(NexmarkSource.events({ events, seed: 0, ratePerSecond: rate, throttle }), null)
      .map((e) => {
        const now = performance.timeOrigin + performance.now();
        if (t0 < 0) t0 = now;
        return [e.type === "bid" ? e.bid.auction : e.type === "auction" ? e.auction.id : e.person.id, t0 + msPer * k++];
      })
      .keyBy((t) => t[0])
      .addSink({
        open() { this.lat = []; this.first = -1; },
        invoke(t) {
          const now = performance.timeOrigin + performance.now();
          if (this.first < 0) this.first = now;
          if (now - this.first > 1000) this.lat.push(now - t[1]);   // the first second is warm-up
        },
        close() { require("node:fs").writeFileSync(outDir + "/lat-" + Math.random().toString(36).slice(2) + ".json", JSON.stringify(this.lat)); },
      });`);
  const p = 1;
  const latDir = path.join(dir, "latency");
  fs.mkdirSync(latDir);
  const maxN = QUICK ? 200_000 : 3_000_000;
  const max = maxN / seconds(await runLocal(file, [String(maxN), "100000", "0", latDir, String(p)], p));
  for (const f of fs.readdirSync(latDir)) fs.rmSync(path.join(latDir, f));
  const rate = Math.floor(max / 2);
  log(`latency pipeline max ${fmt(max)} events/s; throttled run at ${fmt(rate)} events/s for ${LATENCY_SECONDS} s`);
  await runLocal(file, [String(Math.floor(rate * LATENCY_SECONDS)), String(rate), "1", latDir, String(p)], p);
  const lat: number[] = [];
  for (const f of fs.readdirSync(latDir)) for (const x of JSON.parse(fs.readFileSync(path.join(latDir, f), "utf8")) as number[]) lat.push(x);
  lat.sort((a, b) => a - b);
  const pct = (q: number) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]!;
  out.push(`### End-to-end latency (Nexmark source throttled to ${fmt(rate)} events/s -> keyBy -> sink, p=${p}, buffer timeout 10 ms)\n`);
  out.push("| measure | result | goal |\n| --- | --- | --- |");
  out.push(`| maximum rate of this pipeline (${fmt(maxN)} events, unthrottled) | ${fmt(max)} events/s | |`);
  out.push(`| latency p50 at half of it, ${LATENCY_SECONDS} s (first second dropped, ${lat.length} records) | ${pct(0.5).toFixed(1)} ms | |`);
  out.push(`| latency p99 | ${pct(0.99).toFixed(1)} ms (max ${lat.at(-1)!.toFixed(1)} ms) | <= 20 ms: ${verdict(pct(0.99) <= 20)} |`);
  out.push("");
  out.push("Latency is the sink's wall-clock time minus the event's scheduled wall-clock emission time (the throttled");
  out.push("source's schedule, anchored at its first event).\n");
}

// (d) TaskManager start -> registered, idle RSS (as scripts/bench-skeleton.ts).
async function startup(): Promise<void> {
  const binary = path.join(ROOT, "dist/taskmanager");
  if (!fs.existsSync(binary)) {
    const build = new Child(["bash", path.join(ROOT, "scripts/build")]);
    if ((await build.exited(300_000)) !== 0) throw new Error(`build failed:\n${build.stderr}`);
  }
  const runs = QUICK ? 1 : 5;
  const jm = new Child([binary, "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", "metrics.port=0"], {}, dir);
  const port = Number((await jm.waitForOutput(/rpc=127\.0\.0\.1:(\d+)/))[1]);
  const startMs: number[] = [];
  const rssMb: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const tm = new Child([binary, "-D", `jobmanager.rpc.port=${port}`, "-D", `taskmanager.resource-id=bench-${i}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", "metrics.port=0"], {}, dir);
    await tm.waitForOutput(/registered at the JobManager/, 10_000);
    startMs.push(performance.now() - t0);
    await Bun.sleep(2000);
    rssMb.push(Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${tm.pid}/status`, "utf8"))![1]) / 1024);
    tm.kill("SIGTERM");
    await tm.exited();
  }
  jm.kill("SIGTERM");
  await jm.exited();
  out.push("### TaskManager start (compiled binary `dist/taskmanager`)\n");
  out.push("| measure | result | detail |\n| --- | --- | --- |");
  out.push(`| TaskManager start -> registered | ${median(startMs).toFixed(0)} ms (median of ${runs}) | process spawn to the JobManager's registration reply |`);
  out.push(`| idle TaskManager RSS | ${median(rssMb).toFixed(1)} MB (median of ${runs}) | 2 slots, registered, 2 s after start |`);
  out.push("");
}

const t0 = performance.now();
try {
  if (PARTS.has("sum")) await keyedSum();
  if (PARTS.has("nexmark")) await nexmarkQueries();
  if (PARTS.has("latency")) await latency();
  if (PARTS.has("start")) await startup();
} finally {
  await Child.stopAll();
  fs.rmSync(dir, { recursive: true, force: true });
}
const argv = process.argv.slice(2).filter((a) => a !== "--write");
const header = [
  SECTION,
  "",
  `Command: \`${process.env.TM_BENCH_ALL === "1" ? "bash scripts/bench" : "bun scripts/bench-nexmark.ts"}${argv.length ? " " + argv.join(" ") : ""}\` (${((performance.now() - t0) / 60000).toFixed(1)} minutes).`,
  `Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ${os.type()} ${os.release()}, Bun ${Bun.version}. Date: ${new Date().toISOString().slice(0, 10)}.`,
  "In-process clusters (one JobManager, one TaskManager with 2 slots, a Worker per task), a fresh one per run;",
  "events/s = events / job run time (JobManager's start to end); per core = events/s / parallelism. Nexmark",
  "sources run at the default 100,000 events/s of event time, unthrottled, output discarded.",
  "",
];
const text = [...header, ...out].join("\n");
console.log(text);
if (values.write) {
  const file = path.join(ROOT, "docs/benchmarks.md");
  const doc = fs.readFileSync(file, "utf8");
  const start = doc.indexOf(`\n${SECTION}\n`);
  const block = `${text.trimEnd()}\n\n${END_MARK}\n`;
  let next: string;
  if (start < 0) next = `${doc.trimEnd()}\n\n${block}`;
  else {
    const mark = doc.indexOf(END_MARK, start);
    const nextHeading = doc.indexOf("\n## ", start + 1);
    const end = mark >= 0 && (nextHeading < 0 || mark < nextHeading) ? mark + END_MARK.length + 1 : nextHeading < 0 ? doc.length : nextHeading + 1;
    next = `${doc.slice(0, start + 1)}${block}${doc.slice(end)}`;
  }
  fs.writeFileSync(file, next);
  log(`wrote ${SECTION} into docs/benchmarks.md`);
}
