// Measures checkpointing (issue 5), in one run:
//  (a) throughput of a keyed sum with checkpoints off vs every 1 s (heap backend), on an in-process cluster;
//  (b) checkpoint duration and size with 1 million keys in state, on the heap and the SQLite backend;
//  (c) time from SIGKILL of a TaskManager process to the job running again, with the default heartbeat and
//      restart settings (a JobManager and three TaskManagers as real processes).
// With --backpressure instead (issue 15): checkpoint duration and size under full backpressure (fast sources, a
// keyed sink at --slow-ms per 300-byte record, two TaskManagers so channels are local and remote), aligned vs aligned
// with buffer debloating vs unaligned, the modes alternating run by run, with the process's CPU time beside the wall time.
// With --throughput instead: the keyed sum of (a) with checkpoints off, aligned and unaligned every 1 s (issue 15's
// throughput-loss goal for unaligned checkpoints).
// Run: bun scripts/bench-checkpoint.ts [--records 50000000] [--runs 3] [--backpressure [--taskmanagers 2] [--slow-ms 1] | --throughput [--modes off,aligned,unaligned]]
//      [--object-reuse] (pipeline.object-reuse for the jobs: the keyed sum hands on its accumulator uncopied)
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { startLocalCluster } from "../src/client/local-cluster.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { BUN, Child, ROOT } from "../tests/helpers.ts";
import { procThreads } from "./bench-helpers/proc-threads.ts";
import { median } from "./bench-helpers/stats.ts";

const { values } = parseArgs({
  options: { records: { type: "string", default: "50000000" }, runs: { type: "string", default: "3" }, backpressure: { type: "boolean", default: false }, throughput: { type: "boolean", default: false }, taskmanagers: { type: "string", default: "2" }, modes: { type: "string", default: "off,aligned,unaligned" }, interval: { type: "string", default: "1000" }, "slow-ms": { type: "string", default: "1" }, "object-reuse": { type: "boolean", default: false } },
});
const RECORDS = Number(values.records);
const RUNS = Number(values.runs);
const SLOW_MS = Number(values["slow-ms"]);
// --backpressure on 2 TaskManagers (each sink reads a local and a remote channel) or 1 (local channels only).
const TASK_MANAGERS = Number(values.taskmanagers);
if (TASK_MANAGERS !== 1 && TASK_MANAGERS !== 2) throw new Error(`--taskmanagers: expected 1 or 2, got ${values.taskmanagers}`);
if (!(SLOW_MS > 0)) throw new Error(`--slow-ms: expected a positive number of milliseconds, got ${values["slow-ms"]}`);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-cp-"));
const log = (s: string) => console.error(`[bench-checkpoint] ${s}`);
const api = JSON.stringify(path.join(ROOT, "src/api/index.ts"));

function job(name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `import { ValueStateDescriptor } from ${api};\nexport default (env, args) => {\n${body}\n};\n`);
  return file;
}

/** Runs a job on a fresh in-process cluster (1 TaskManager, 2 slots); returns its final status. */
async function runLocal(file: string, args: string[], p: number, onStatus?: (s: JobStatus) => void, extra: Partial<Config> = {}): Promise<JobStatus> {
  const cfg = { ...defaultConfig(), "state.checkpoints.dir": path.join(dir, "checkpoints"), "taskmanager.state.dir": path.join(dir, "state"), ...extra };
  const cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: cfg });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  try {
    const jobId = await submitJob(rpc, await prepareJob(file, args, p, { objectReuse: values["object-reuse"] }));
    if (onStatus) {
      for (;;) {
        const s = await rpc.request("jobStatus", { jobId });
        onStatus(s);
        if (s.endTime !== null) break;
        await Bun.sleep(100);
      }
    }
    return await waitForJob(rpc, jobId, () => {}, 50);
  } finally {
    rpc.close();
    await cluster.stop();
  }
}

const rows: string[] = [];

/** Under full backpressure: one run of a mode on a fresh cluster; its checkpoints after a warm-up. */
async function backpressureRun(mode: "aligned" | "debloat" | "unaligned") {
  const WARMUP_MS = 10_000, WINDOW_MS = 15_000;
  const cfg = {
    ...defaultConfig(),
    "log.level": "warn" as const,
    "state.checkpoints.dir": path.join(dir, "checkpoints-bp"),
    "taskmanager.state.dir": path.join(dir, "state"),
    "execution.checkpointing.timeout": 120_000,
    "execution.checkpointing.unaligned.enabled": mode === "unaligned",
    "taskmanager.network.memory.buffer-debloat.enabled": mode === "debloat",
  };
  const bpJob = job("bp.ts", `
    env.enableCheckpointing(1000);
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(300);
    env.fromSequence(1, 1e12).map((x) => [x, pad]).keyBy((t) => t[0] % 64)
      .process({
        open(ctx) { this.n = ctx.getState(new ValueStateDescriptor("n", { default: 0 })); },
        processElement(t, ctx, out) { Atomics.wait(pause, 0, 0, ${SLOW_MS}); this.n.update(this.n.value() + 1); },
      })
      .addSink(() => {});`);
  const cluster = await startLocalCluster({ taskManagers: TASK_MANAGERS, slotsPerTaskManager: 2 / TASK_MANAGERS, config: cfg });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  try {
    const jobId = await submitJob(rpc, await prepareJob(bpJob, [], 2));
    await Bun.sleep(WARMUP_MS);
    const before = await rpc.request("jobStatus", { jobId });
    const seen = new Set(before.checkpoints.history.map((c) => c.id));
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const recordsIn0 = before.vertices[1]!.subtasks.reduce((a, s) => a + s.metrics.recordsIn, 0);
    await Bun.sleep(WINDOW_MS);
    const s = await rpc.request("jobStatus", { jobId });
    const wallS = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const recordsIn = s.vertices[1]!.subtasks.reduce((a, st) => a + st.metrics.recordsIn, 0) - recordsIn0;
    await rpc.request("cancelJob", { jobId });
    // Checkpoints triggered in the window: the completed ones' durations, and the age of one still in progress.
    const mine = s.checkpoints.history.filter((c) => !seen.has(c.id) && c.status !== "FAILED");
    const done = mine.filter((c) => c.status === "COMPLETED");
    return {
      durations: done.map((c) => c.durationMs!),
      inProgressMs: mine.filter((c) => c.status === "IN_PROGRESS").map((c) => Date.now() - c.triggerTime),
      completed: done.length,
      sizes: done.map((c) => c.sizeBytes),
      channelState: done.map((c) => c.channelStateBytes ?? 0),
      // Where a checkpoint's time goes: the longest wait of a task for its first barrier, and the longest alignment.
      startDelays: done.map((c) => c.startDelayMs ?? 0),
      alignments: done.map((c) => c.alignmentMs ?? 0),
      recordsPerS: recordsIn / wallS,
      cpuS: (cpu.user + cpu.system) / 1e6,
      wallS,
    };
  } finally {
    rpc.close();
    await cluster.stop();
  }
}

async function backpressureBench(): Promise<void> {
  const modes = ["aligned", "debloat", "unaligned"] as const;
  const label = { aligned: "aligned", debloat: "aligned + buffer debloating", unaligned: "unaligned" };
  const runs: Record<string, Awaited<ReturnType<typeof backpressureRun>>[]> = { aligned: [], debloat: [], unaligned: [] };
  const load0 = os.loadavg();
  for (let r = 0; r < RUNS; r++) {
    for (const mode of modes) {
      const x = await backpressureRun(mode);
      runs[mode]!.push(x);
      log(`run ${r + 1}, ${mode}: checkpoints ${x.durations.map((d) => d.toFixed(0)).join(", ")} ms (start delay ${x.startDelays.join(", ")}; alignment ${x.alignments.join(", ")}) (in progress at the end: ${x.inProgressMs.map((d) => d.toFixed(0)).join(", ") || "none"}); ${x.recordsPerS.toFixed(0)} records/s; CPU ${x.cpuS.toFixed(1)} s in ${x.wallS.toFixed(1)} s`);
    }
  }
  const load1 = os.loadavg();
  const range = (xs: number[], f: (x: number) => string) => `${f(median(xs))} (${f(Math.min(...xs))}..${f(Math.max(...xs))})`;
  const ms = (x: number) => `${(x / 1000).toFixed(2)} s`;
  const kib = (x: number) => `${(x / 1024).toFixed(0)} KiB`;
  console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Bun ${Bun.version}; load average ${load0.map((l) => l.toFixed(2)).join(" ")} before, ${load1.map((l) => l.toFixed(2)).join(" ")} after`);
  console.log(`Command: bun scripts/bench-checkpoint.ts --backpressure --taskmanagers ${TASK_MANAGERS} --slow-ms ${SLOW_MS} --runs ${RUNS}\n`);
  console.log("| mode | checkpoint duration | of it: start delay / alignment (longest task) | checkpoints completed | checkpoint size | of it channel state | sink records/s | CPU cores (CPU s / wall s) |");
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const mode of modes) {
    const rs = runs[mode]!;
    // Per run its median checkpoint; over the runs the median of those, with the smallest and largest.
    const dur = rs.map((x) => (x.durations.length ? median(x.durations) : NaN));
    const size = rs.map((x) => (x.sizes.length ? median(x.sizes) : 0));
    const chan = rs.map((x) => (x.channelState.length ? median(x.channelState) : 0));
    const delay = rs.map((x) => (x.startDelays.length ? median(x.startDelays) : NaN));
    const align = rs.map((x) => (x.alignments.length ? median(x.alignments) : NaN));
    console.log(
      `| ${label[mode]} | ${range(dur, ms)} | ${range(delay, ms)} / ${range(align, ms)} | ${rs.map((x) => x.completed).join(", ")} in ${rs[0]!.wallS.toFixed(0)} s | ${range(size, kib)} | ${range(chan, kib)} | ${range(rs.map((x) => x.recordsPerS), (x) => x.toFixed(0))} | ${range(rs.map((x) => x.cpuS / x.wallS), (x) => x.toFixed(2))} |`,
    );
  }
}

/**
 * CPU time per thread of this process (Linux /proc; the in-process cluster's tasks are Worker threads), sampled every
 * 50 ms so that threads that end with their task are counted up to their last sample. Groups: the task Workers
 * ("Worker", one per task: with p=1 the source chain and the keyed sum chain), the garbage collector's helper threads
 * ("Heap Helper" and the like), the main thread (JobManager, TaskManager, RPC, this bench's polls) and the other
 * threads (JavaScriptCore's JIT compiler, mimalloc's scavenger, Bun's file I/O pool: "JITWorker", "mi-scavenger",
 * "Bun Pool n"). BENCH_THREADS=1 logs each run's CPU per thread name.
 */
class ThreadCpu {
  private readonly seen = new Map<string, { comm: string; ms: number; ms0: number }>();
  private readonly timer: ReturnType<typeof setInterval> | null;
  constructor() {
    this.sample(true);
    this.timer = fs.existsSync("/proc/self/task") ? setInterval(() => this.sample(false), 50) : null;
  }
  private sample(initial: boolean): void {
    for (const { tid, comm, cpuSeconds } of procThreads("self")) {
      const ms = cpuSeconds * 1000;
      const prev = this.seen.get(tid);
      if (prev && prev.comm === comm) prev.ms = ms;
      else this.seen.set(tid, { comm, ms, ms0: initial ? ms : 0 });
    }
  }
  /** CPU seconds since construction: the task Workers (busiest first), GC helpers, the rest. */
  stop(): { workers: number[]; gc: number; main: number; other: number; byName: Map<string, number> } {
    if (this.timer) clearInterval(this.timer);
    this.sample(false);
    const workers: number[] = [];
    let gc = 0, main = 0, other = 0;
    const byName = new Map<string, number>();
    for (const [tid, t] of this.seen) {
      const s = (t.ms - t.ms0) / 1000;
      byName.set(t.comm, (byName.get(t.comm) ?? 0) + s);
      if (Number(tid) === process.pid) main += s;
      else if (t.comm === "Worker") workers.push(s);
      else if (/heap|gc|marker|collector/i.test(t.comm)) gc += s;
      else other += s;
    }
    return { workers: workers.filter((w) => w > 0).sort((a, b) => b - a), gc, main, other, byName };
  }
}

/**
 * --throughput: the keyed sum of (a) with checkpoints off, aligned every 1 s and unaligned every 1 s, the three
 * alternating run by run; records/s over the job's run time and the process's CPU time (the whole in-process cluster)
 * per million records, split by thread (ThreadCpu: the two task Workers, the GC helpers, the main thread, the rest).
 * Unaligned mode costs on every record (tasks look at the clock to slice, poll the priority rings) and per checkpoint
 * (channel state), so this is the figure that bounds that cost; short runs also count each fresh Worker's JIT warm-up
 * of the checkpoint code. --interval with --modes unaligned separates the two (e.g. 100 against 3600000: no checkpoint
 * in the run). Final checkpoints (FLIP-147) are off here: the job's time is its input's, not up to an interval more
 * waiting for the checkpoint after its end of input. The keyed jobs at p=1 call startNewChain() so that their keyBy stays
 * an exchange (a keyBy at parallelism 1 chains otherwise): unaligned checkpoints then have channels to record, and the
 * figures compare with the earlier rounds'.
 */
async function throughputBench(): Promise<void> {
  const sumJob = job("sum-u.ts", `
    const interval = Number(args[0]);
    if (interval > 0) env.enableCheckpointing(interval);
    env.fromSequence(1, Number(args[1])).map((x) => [x % 10000, 1]).keyBy((t) => t[0]).sum(1).startNewChain().addSink(() => {});`);
  // --modes picks some of the three (e.g. one mode alone under a profiler); the loss needs "off" in the run.
  const modes = values.modes!.split(",") as ("off" | "aligned" | "unaligned")[];
  for (const m of modes) if (!["off", "aligned", "unaligned"].includes(m)) throw new Error(`--modes: expected off, aligned or unaligned (comma-separated), got ${m}`);
  const res: Record<string, { rate: number; cpu: number; checkpoints: number; tasks: number[]; gc: number; main: number; other: number }[]> = { off: [], aligned: [], unaligned: [] };
  const load0 = os.loadavg();
  for (let r = 0; r < RUNS; r++) {
    // The order rotates round by round, so that no mode always runs first (or right after another).
    for (const mode of modes.map((_, i) => modes[(i + r) % modes.length]!)) {
      const cpu0 = process.cpuUsage();
      const threads = new ThreadCpu();
      const s = await runLocal(sumJob, [mode === "off" ? "0" : String(values.interval), String(RECORDS)], 1, undefined, {
        "execution.checkpointing.unaligned.enabled": mode === "unaligned",
        // The job's time is its input's: with final checkpoints (FLIP-147) on, a bounded job waits for the next
        // checkpoint after its end of input, up to an interval that would count as throughput loss.
        "execution.checkpointing.checkpoints-after-tasks-finish": false,
      });
      const cpu = process.cpuUsage(cpu0);
      const th = threads.stop();
      if (process.env.BENCH_THREADS) log(`threads, CPU s: ${[...th.byName].filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")}`);
      if (s.state !== "FINISHED") throw new Error(`keyed sum (${mode}) ended ${s.state}: ${s.error?.message}`);
      const rate = RECORDS / ((s.endTime! - s.startTime) / 1000);
      const perM = RECORDS / 1e6;
      res[mode]!.push({ rate, cpu: (cpu.user + cpu.system) / 1e6 / perM, checkpoints: s.checkpoints.completed, tasks: th.workers.slice(0, 2).map((w) => w / perM), gc: th.gc / perM, main: th.main / perM, other: th.other / perM });
      log(`run ${r + 1}, ${mode}: ${(rate / 1e6).toFixed(2)} M records/s, ${res[mode]!.at(-1)!.cpu.toFixed(2)} CPU-s per M records (task threads ${res[mode]!.at(-1)!.tasks.map((t) => t.toFixed(3)).join(" + ")}, GC helpers ${res[mode]!.at(-1)!.gc.toFixed(3)}, main thread ${res[mode]!.at(-1)!.main.toFixed(3)}, other threads ${res[mode]!.at(-1)!.other.toFixed(3)}), ${s.checkpoints.completed} checkpoints`);
    }
  }
  const stat = (xs: number[], f: (x: number) => string) => `${f(median(xs))} (${f(Math.min(...xs))}..${f(Math.max(...xs))})`;
  const off = res.off!.length ? median(res.off!.map((x) => x.rate)) : NaN;
  console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Bun ${Bun.version}; load average ${load0.map((l) => l.toFixed(2)).join(" ")} before, ${os.loadavg().map((l) => l.toFixed(2)).join(" ")} after`);
  console.log(`Command: bun scripts/bench-checkpoint.ts --throughput --records ${RECORDS} --runs ${RUNS} --modes ${modes.join(",")}${values["object-reuse"] ? " --object-reuse" : ""}\n`);
  console.log("| keyed sum, p=1 | records/s, median (min..max) | CPU-s per M records | of it the busier task thread | the other task thread | GC helper threads | main thread | other threads (JIT, allocator, file I/O pool) | checkpoints completed | throughput loss vs off (of the medians) | loss per round, median (min..max) | CPU per record vs off, per round |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const mode of modes) {
    const xs = res[mode]!;
    const rate = median(xs.map((x) => x.rate));
    // Paired by round (each mode's run beside the "off" run of the same round): on a shared machine the load
    // drifts between rounds more than it does within one, so the per-round ratios spread less than the medians.
    const paired = mode === "off" || res.off!.length !== xs.length ? null : xs.map((x, i) => ({ loss: 1 - x.rate / res.off![i]!.rate, cpu: x.cpu / res.off![i]!.cpu - 1 }));
    const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
    console.log(`| ${mode === "off" ? "checkpoints off" : `${mode} every ${Number(values.interval) >= 1000 ? `${Number(values.interval) / 1000} s` : `${values.interval} ms`}`} | ${stat(xs.map((x) => x.rate), (v) => `${(v / 1e6).toFixed(2)} M`)} | ${stat(xs.map((x) => x.cpu), (v) => v.toFixed(2))} | ${stat(xs.map((x) => x.tasks[0] ?? NaN), (v) => v.toFixed(2))} | ${stat(xs.map((x) => x.tasks[1] ?? NaN), (v) => v.toFixed(2))} | ${stat(xs.map((x) => x.gc), (v) => v.toFixed(2))} | ${stat(xs.map((x) => x.main), (v) => v.toFixed(2))} | ${stat(xs.map((x) => x.other), (v) => v.toFixed(2))} | ${xs.map((x) => x.checkpoints).join(", ")} | ${mode === "off" ? "" : pct(1 - rate / off)} | ${paired ? stat(paired.map((p) => p.loss), pct) : ""} | ${paired ? stat(paired.map((p) => p.cpu), (v) => `${v >= 0 ? "+" : ""}${pct(v)}`) : ""} |`);
  }
}

try {
  if (values.throughput) {
    await throughputBench();
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
  if (values.backpressure) {
    await backpressureBench();
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
  // (a) keyed sum, checkpoints off vs every 1 s.
  const sumJob = job("sum.ts", `
    const interval = Number(args[0]);
    if (interval > 0) env.enableCheckpointing(interval);
    env.fromSequence(1, Number(args[1])).map((x) => [x % 10000, 1]).keyBy((t) => t[0]).sum(1).startNewChain().addSink(() => {});`);
  // Runs alternate (off, on, off, on, ...) so that drift in the machine's load affects both the same.
  const secs: Record<number, number[]> = { 0: [], 1000: [] };
  const checkpoints: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    for (const interval of [0, 1000]) {
      const s = await runLocal(sumJob, [String(interval), String(RECORDS)], 1);
      if (s.state !== "FINISHED") throw new Error(`keyed sum ended ${s.state}: ${s.error?.message}`);
      secs[interval]!.push((s.endTime! - s.startTime) / 1000);
      if (interval) checkpoints.push(s.checkpoints.completed);
      log(`run ${r + 1}, interval ${interval}: ${(RECORDS / secs[interval]!.at(-1)! / 1e6).toFixed(2)} M records/s`);
    }
  }
  const rate: Record<number, number> = { 0: RECORDS / median(secs[0]!), 1000: RECORDS / median(secs[1000]!) };
  for (const interval of [0, 1000]) {
    rows.push(`| keyed sum, p=1, checkpoints ${interval === 0 ? "off" : "every 1 s"} | ${(rate[interval]! / 1e6).toFixed(2)} M records/s | median of ${RUNS} runs of ${RECORDS / 1e6} M records${interval ? ` (${checkpoints.join(", ")} checkpoints completed)` : ""} |`);
  }
  const loss = 1 - rate[1000]! / rate[0]!;
  rows.push(`| throughput loss with checkpoints every 1 s (goal <= 5%) | **${(loss * 100).toFixed(1)}%: ${loss <= 0.05 ? "met" : "missed"}** | |`);

  // (b) 1 million keys in state: the size and duration of the checkpoints taken once every key is there.
  const bigJob = job("big.ts", `
    env.enableCheckpointing(1000).setStateBackend(args[0]);
    const pause = new Int32Array(new SharedArrayBuffer(4));
    env.fromSequence(1, 4_000_000)
      .map((x) => { if (x > 1_000_000 && x % 5000 === 0) Atomics.wait(pause, 0, 0, 2); return x; })
      .keyBy((x) => x % 1_000_000)
      .process({
        open(ctx) { this.n = ctx.getState(new ValueStateDescriptor("n", { default: 0 })); },
        processElement(x, ctx, out) { this.n.update(this.n.value() + 1); },
      })
      .startNewChain()
      .addSink(() => {});`);
  for (const backend of ["heap", "sqlite"]) {
    let last: JobStatus | null = null;
    const s = await runLocal(bigJob, [backend], 1, (st) => (last = st));
    if (s.state !== "FINISHED") throw new Error(`${backend} job ended ${s.state}: ${s.error?.message}`);
    const full = (last ?? s).checkpoints.history.filter((c) => c.status === "COMPLETED" && c.sizeBytes > 0);
    const biggest = Math.max(...full.map((c) => c.sizeBytes));
    const atFull = full.filter((c) => c.sizeBytes >= biggest * 0.98);
    const dur = median(atFull.map((c) => c.durationMs!));
    log(`${backend}: ${full.length} checkpoints, ${atFull.length} with all keys: ${dur} ms, ${(biggest / 2 ** 20).toFixed(1)} MiB`);
    rows.push(`| checkpoint of 1 M keys, ${backend} backend | ${dur} ms, ${(biggest / 2 ** 20).toFixed(1)} MiB | median duration (trigger to complete) of the ${atFull.length} checkpoints taken with every key in state |`);
  }

  // (c) SIGKILL of a TaskManager -> the job running again, default heartbeat and restart settings.
  const common = ["-D", `state.checkpoints.dir=${path.join(dir, "cp-kill")}`];
  const jm = new Child([BUN, path.join(ROOT, "main.ts"), "jobmanager", "-D", "jobmanager.rpc.port=0", ...common]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tms = new Map<string, Child>();
  for (let i = 0; i < 3; i++) {
    const id = `tm-${i}`;
    tms.set(id, new Child([BUN, path.join(ROOT, "main.ts"), "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...common]));
  }
  await Promise.all([...tms.values()].map((t) => t.waitForOutput(/registered at the JobManager/)));
  const endless = job("endless.ts", `
    env.enableCheckpointing(1000);
    const pause = new Int32Array(new SharedArrayBuffer(4));
    env.fromSequence(1, 1e12).map((x) => { if (x % 1000 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
      .keyBy((x) => x % 1000).sum(0).addSink(() => {});`);
  const rpc = await connectClient("127.0.0.1", port);
  const recoveries: number[] = [];
  try {
    const jobId = await submitJob(rpc, await prepareJob(endless, [], 2));
    for (let k = 0; k < RUNS; k++) {
      let s: JobStatus;
      for (;;) {
        s = await rpc.request("jobStatus", { jobId });
        if (s.state === "RUNNING" && s.tasks.RUNNING === 4 && s.checkpoints.completed > k) break;
        await Bun.sleep(50);
      }
      const victim = s.vertices[0]!.subtasks[0]!.taskManager;
      const restartsBefore = s.restarts;
      const t0 = performance.now();
      tms.get(victim)!.kill("SIGKILL");
      tms.delete(victim);
      for (;;) {
        const st = await rpc.request("jobStatus", { jobId });
        if (st.restarts > restartsBefore && st.state === "RUNNING" && st.tasks.RUNNING === 4) break;
        await Bun.sleep(10);
      }
      recoveries.push(performance.now() - t0);
      log(`recovery ${k + 1}: ${recoveries.at(-1)!.toFixed(0)} ms`);
      const id = `tm-r${k}`;
      tms.set(id, new Child([BUN, path.join(ROOT, "main.ts"), "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...common]));
      await tms.get(id)!.waitForOutput(/registered at the JobManager/);
    }
    await rpc.request("cancelJob", { jobId });
  } finally {
    rpc.close();
    await Child.stopAll();
  }
  const rec = median(recoveries);
  rows.push(`| SIGKILL of a TaskManager -> job RUNNING again (goal < 10 s) | **${(rec / 1000).toFixed(2)} s: ${rec < 10_000 ? "met" : "missed"}** | median of ${RUNS} kills (${recoveries.map((r) => (r / 1000).toFixed(2)).join(", ")} s); defaults: heartbeat 1 s / 6 s, exponential-delay restart from 1 s |`);

  console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Bun ${Bun.version}`);
  console.log(`Command: bun scripts/bench-checkpoint.ts --records ${RECORDS} --runs ${RUNS}\n`);
  console.log("| measure | result | detail |\n| --- | --- | --- |");
  for (const r of rows) console.log(r);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
