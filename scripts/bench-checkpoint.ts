// Measures checkpointing (issue 5), in one run:
//  (a) throughput of a keyed sum with checkpoints off vs every 1 s (heap backend), on an in-process cluster;
//  (b) checkpoint duration and size with 1 million keys in state, on the heap and the SQLite backend;
//  (c) time from SIGKILL of a TaskManager process to the job running again, with the default heartbeat and
//      restart settings (a JobManager and three TaskManagers as real processes).
//  (d) with --backpressure, only this: under full backpressure (a fast source into a keyed operator that takes
//      --slow-ms per record), the duration and size of aligned and unaligned checkpoints, runs alternating.
// Run: bun scripts/bench-checkpoint.ts [--records 50000000] [--runs 3] [--backpressure [--slow-ms 10]]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig } from "../src/config/index.ts";
import { startLocalCluster } from "../src/client/local-cluster.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { BUN, Child, ROOT } from "../tests/helpers.ts";

const { values } = parseArgs({
  options: { records: { type: "string", default: "50000000" }, runs: { type: "string", default: "3" }, backpressure: { type: "boolean", default: false }, "slow-ms": { type: "string", default: "10" } },
});
const RECORDS = Number(values.records);
const RUNS = Number(values.runs);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-cp-"));
const log = (s: string) => console.error(`[bench-checkpoint] ${s}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const api = JSON.stringify(path.join(ROOT, "src/api/index.ts"));

function job(name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `import { ValueStateDescriptor } from ${api};\nexport default (env, args) => {\n${body}\n};\n`);
  return file;
}

/** Runs a job on a fresh in-process cluster (1 TaskManager, 2 slots); returns its final status. */
async function runLocal(file: string, args: string[], p: number, onStatus?: (s: JobStatus) => void): Promise<JobStatus> {
  const cfg = { ...defaultConfig(), "state.checkpoints.dir": path.join(dir, "checkpoints"), "taskmanager.state.dir": path.join(dir, "state") };
  const cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: cfg });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  try {
    const jobId = await submitJob(rpc, await prepareJob(file, args, p));
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

/**
 * (d) One run under full backpressure: 300-byte records from a fast source into a keyed operator taking `slowMs`
 * per record; the first checkpoint (triggered 2 s after the start, the channels full by then) is measured, with the
 * process's CPU time (all threads) over the same span.
 */
async function backpressureRun(unaligned: boolean, slowMs: number): Promise<{ ms: number; bytes: number; channelBytes: number; cpuMs: number; wallMs: number }> {
  const file = job("bp.ts", `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(300);
    env.enableCheckpointing(2000);
    env.fromSequence(1, 1e12).map((x) => [x, pad]).keyBy((t) => t[0] % 7)
      .process({
        open(ctx) { this.n = ctx.getState(new ValueStateDescriptor("n", { default: 0 })); },
        processElement(t, ctx, out) { Atomics.wait(pause, 0, 0, ${slowMs}); this.n.update(this.n.value() + 1); },
      })
      .addSink(() => {});`);
  const cfg = {
    ...defaultConfig(),
    "state.checkpoints.dir": path.join(dir, "checkpoints"),
    "taskmanager.state.dir": path.join(dir, "state"),
    "execution.checkpointing.unaligned.enabled": unaligned,
    "execution.checkpointing.timeout": 600_000,
  };
  const cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: cfg });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  try {
    const jobId = await submitJob(rpc, await prepareJob(file, [], 1));
    let cpu0: NodeJS.CpuUsage | null = null;
    let t0 = 0;
    for (;;) {
      const s: JobStatus = await rpc.request("jobStatus", { jobId });
      if (s.state !== "RUNNING" && s.state !== "CREATED" && s.state !== "SCHEDULING") throw new Error(`back-pressured job ended ${s.state}: ${s.error?.message}`);
      const first = s.checkpoints.history.find((c) => c.id === 1);
      if (first && cpu0 === null) {
        cpu0 = process.cpuUsage();
        t0 = performance.now();
      }
      if (first?.status === "FAILED") throw new Error("the first checkpoint failed");
      if (first?.status === "COMPLETED") {
        const cpu = process.cpuUsage(cpu0!);
        await rpc.request("cancelJob", { jobId });
        await waitForJob(rpc, jobId, () => {}, 50);
        return { ms: first.durationMs!, bytes: first.sizeBytes, channelBytes: first.channelStateBytes ?? 0, cpuMs: (cpu.user + cpu.system) / 1000, wallMs: performance.now() - t0 };
      }
      await Bun.sleep(20);
    }
  } finally {
    rpc.close();
    await cluster.stop();
  }
}

async function backpressureBench(): Promise<void> {
  const slowMs = Number(values["slow-ms"]);
  const res: Record<"aligned" | "unaligned", Awaited<ReturnType<typeof backpressureRun>>[]> = { aligned: [], unaligned: [] };
  // Alternating, so that drift in the machine's load falls on both alike.
  for (let r = 0; r < RUNS; r++) {
    for (const mode of ["aligned", "unaligned"] as const) {
      const x = await backpressureRun(mode === "unaligned", slowMs);
      res[mode].push(x);
      log(`run ${r + 1}, ${mode}: ${x.ms} ms, ${(x.bytes / 1024).toFixed(0)} KiB (${(x.channelBytes / 1024).toFixed(0)} KiB channel state), CPU ${x.cpuMs.toFixed(0)} ms in ${x.wallMs.toFixed(0)} ms`);
    }
  }
  const range = (xs: number[], unit: string, f = (v: number) => v.toFixed(0)) => `${f(median(xs))} ${unit} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;
  const rowsBp: string[] = [];
  for (const mode of ["aligned", "unaligned"] as const) {
    const xs = res[mode];
    rowsBp.push(
      `| ${mode} | ${range(xs.map((x) => x.ms), "ms")} | ${range(xs.map((x) => x.bytes / 1024), "KiB", (v) => v.toFixed(1))} | ${range(xs.map((x) => x.channelBytes / 1024), "KiB", (v) => v.toFixed(1))} | ${range(xs.map((x) => (x.cpuMs / x.wallMs) * 100), "%")} |`,
    );
  }
  const ratio = median(res.aligned.map((x) => x.ms)) / median(res.unaligned.map((x) => x.ms));
  const u = median(res.unaligned.map((x) => x.ms));
  console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Bun ${Bun.version}`);
  console.log(`Command: bun scripts/bench-checkpoint.ts --backpressure --slow-ms ${slowMs} --runs ${RUNS}\n`);
  console.log("| checkpoint under full backpressure | duration, median (min-max) | size | of it channel state | CPU of the process during it |\n| --- | --- | --- | --- | --- |");
  for (const r of rowsBp) console.log(r);
  console.log(`\nGoals: unaligned <= 1 s: **${u <= 1000 ? "met" : "missed"}** (${u} ms); >= 10x faster than aligned: **${ratio >= 10 ? "met" : "missed"}** (${ratio.toFixed(1)}x).`);
}

if (values.backpressure) {
  try {
    await backpressureBench();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.exit(0);
}

const rows: string[] = [];
try {
  // (a) keyed sum, checkpoints off vs every 1 s.
  const sumJob = job("sum.ts", `
    const interval = Number(args[0]);
    if (interval > 0) env.enableCheckpointing(interval);
    env.fromSequence(1, Number(args[1])).map((x) => [x % 10000, 1]).keyBy((t) => t[0]).sum(1).addSink(() => {});`);
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
