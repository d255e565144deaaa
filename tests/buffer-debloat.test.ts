// Buffer debloating (FLIP-183) on real clusters (in-process JobManager and two TaskManagers: real Workers, local
// rings and remote channels over TCP on 127.0.0.1): a back-pressured job (fast sources, a keyed sink that takes
// 1 ms per record) run once without and once with debloating. With it, the sinks' input gates announce a buffer size
// far below the segment, the data in flight (measured as the time a record takes from its source to the sink,
// times the sink's throughput) drops to about the target, and aligned checkpoints, whose barriers queue behind that
// data, complete several times faster.
import { afterAll, afterEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { startLocalCluster, type LocalCluster } from "../src/client/local-cluster.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { parsePrometheus } from "./prometheus-parse.ts";

afterAll(removeTempDirs);
const running: { cluster: LocalCluster; client: RpcConnection }[] = [];
afterEach(async () => {
  const all = running.splice(0);
  for (const r of all) r.client.close();
  await Promise.all(all.map((r) => r.cluster.stop()));
});

const TARGET_MS = 300;
const SEGMENT = 32768;

/**
 * Sources of 300-byte records stamped with their creation time, keyed into a sink that takes 1 ms per record and
 * appends, every 100 records, the time the last record took from its source (ms).
 */
function job(dir: string): string {
  return writeJob(dir, "debloat-job.ts", `
    import * as fs from "node:fs";
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(300);
    export default (env) => {
      env.enableCheckpointing(500);
      env.fromSequence(1, 1e12)
        .map((x) => [x, Date.now(), pad])
        .keyBy((t) => t[0] % 64)
        .addSink({
          open(ctx) { this.n = 0; this.file = ${JSON.stringify(path.join(dir, "latency"))} + "-" + ctx.subtaskIndex; },
          invoke(t) {
            Atomics.wait(pause, 0, 0, 1);
            if (++this.n % 100 === 0) fs.appendFileSync(this.file, (Date.now() - t[1]) + "\\n");
          },
        });
    };`);
}

interface Run {
  /** Median and 90th percentile of the source-to-sink times measured after the warm-up, ms. */
  latencyP50: number;
  latencyP90: number;
  /** Records per second through the sinks over the measurement. */
  throughput: number;
  /** Durations of the checkpoints triggered after the warm-up and completed, ms. */
  completedMs: number[];
  /** The sinks' announced buffer sizes at the end (debloating only): in the job status, the REST API, Prometheus. */
  bufferSizes: (number | undefined)[];
  restSizes: (number | undefined)[];
  prometheusSizes: number[];
}

async function measure(debloat: boolean): Promise<Run> {
  const dir = tempDir("tm-debloat-");
  const config: Config = {
    ...defaultConfig(),
    "state.checkpoints.dir": path.join(dir, "checkpoints"),
    "execution.checkpointing.timeout": 60_000,
    "taskmanager.memory.segment-size": SEGMENT,
    "taskmanager.network.memory.buffer-debloat.enabled": debloat,
    "taskmanager.network.memory.buffer-debloat.target": TARGET_MS,
    "taskmanager.network.memory.buffer-debloat.period": 50,
  };
  const cluster = await startLocalCluster({ taskManagers: 2, slotsPerTaskManager: 1, config });
  const client = await connectClient("127.0.0.1", cluster.port);
  running.push({ cluster, client });
  const jobId = await submitJob(client, await prepareJob(job(dir), [], 2));
  const status = () => client.request("jobStatus", { jobId }) as Promise<JobStatus>;
  const sink = async () => (await status()).vertices.find((v) => v.subtasks.length === 2 && /Sink/.test(v.name))!;
  /** Each sink subtask's measurements so far. */
  const latencies = () =>
    [0, 1].map((i) => {
      const f = path.join(dir, `latency-${i}`);
      return fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").filter(Boolean).map(Number) : [];
    });
  await waitFor("records at the sinks", async () => (await sink()).subtasks.every((s) => s.state === "RUNNING") && latencies().every((l) => l.length > 0), 60_000, 100);
  // Warm-up: 10 s, and with debloating also until the backlog of full segments queued before the size settled (about
  // 3 MiB, several seconds at this throughput; longer on a loaded machine) has drained: each sink's latest record
  // took less than 3x the target. Then a 6 s measurement window, longer if two checkpoints take longer.
  await Bun.sleep(10_000);
  if (debloat) await waitFor("the backlog of full segments drained", () => latencies().every((l) => l.at(-1)! < 3 * TARGET_MS), 40_000, 200);
  const from = latencies().map((l) => l.length);
  const inBefore = (await sink()).subtasks.reduce((a, s) => a + s.metrics.recordsIn, 0);
  const startedAt = Date.now();
  const idsBefore = new Set((await status()).checkpoints.history.map((c) => c.id));
  await Bun.sleep(6000);
  // Then at least two checkpoints triggered after the warm-up, completed (aligned ones take seconds without debloating).
  const s = await waitFor("two checkpoints triggered after the warm-up completed", async () => {
    const st = await status();
    return st.checkpoints.history.filter((c) => !idsBefore.has(c.id) && c.status === "COMPLETED").length >= 2 && st;
  }, 60_000, 200);
  const v = await sink();
  const inAfter = v.subtasks.reduce((a, st) => a + st.metrics.recordsIn, 0);
  const elapsedMs = Date.now() - startedAt;
  const rest = await (await fetch(`http://127.0.0.1:${cluster.restPort}/jobs/${jobId}`)).json();
  const restSizes = rest.vertices.find((x: { name: string }) => /Sink/.test(x.name)).subtasks.map((st: { metrics: { debloatedBufferSize?: number } }) => st.metrics.debloatedBufferSize);
  const prometheusSizes: number[] = [];
  for (const tm of cluster.taskManagers) {
    const fam = parsePrometheus(await (await fetch(`http://127.0.0.1:${tm.metricsPort}/metrics`)).text()).get("tm_task_debloated_buffer_size_bytes");
    for (const sample of fam?.samples ?? []) prometheusSizes.push(sample.value);
  }
  const measured = latencies().flatMap((l, i) => l.slice(from[i])).sort((a, b) => a - b);
  await client.request("cancelJob", { jobId });
  return {
    latencyP50: measured[Math.floor(measured.length * 0.5)] ?? NaN,
    latencyP90: measured[Math.floor(measured.length * 0.9)] ?? NaN,
    throughput: ((inAfter - inBefore) / elapsedMs) * 1000,
    completedMs: s.checkpoints.history.filter((c) => !idsBefore.has(c.id) && c.status === "COMPLETED").map((c) => c.durationMs!),
    bufferSizes: v.subtasks.map((st) => st.metrics.debloatedBufferSize),
    restSizes,
    prometheusSizes,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

test("with buffer debloating a back-pressured job keeps about the target in flight, and aligned checkpoints complete much faster", async () => {
  // Side by side: two clusters of their own, mostly asleep in their throttled sinks (16 s of waiting, not 32).
  const [off, on] = await Promise.all([measure(false), measure(true)]);
  const fmt = (r: Run) => `median ${r.latencyP50} ms, p90 ${r.latencyP90} ms at ${Math.round(r.throughput)} records/s (about ${Math.round((r.latencyP50 / 1000) * r.throughput * 330 / 1024)} KiB in flight); checkpoints ${r.completedMs.join(", ")} ms; buffer sizes ${r.bufferSizes.join(", ")}`;
  console.log(`without debloating: ${fmt(off)}\nwith debloating:    ${fmt(on)}`);
  expect(off.bufferSizes.every((b) => b === undefined)).toBe(true);
  expect(off.prometheusSizes).toEqual([]);
  // The metric in the REST API and on each TaskManager's /metrics (one sample per sink subtask).
  expect(on.restSizes.every((b) => typeof b === "number" && b < SEGMENT / 4)).toBe(true);
  expect(on.prometheusSizes).toHaveLength(2);
  expect(on.prometheusSizes.every((b) => b < SEGMENT / 4)).toBe(true);
  // Each sink's gate announced a size far below the segment, and not below the minimum.
  for (const b of on.bufferSizes) {
    expect(b).toBeDefined();
    expect(b!).toBeLessThan(SEGMENT / 4);
    expect(b!).toBeGreaterThanOrEqual(256);
  }
  // Without debloating full segments queue (seconds of data); with it about the target (the median time from source
  // to sink, which also counts up to one source chunk waiting in the writer, and the size's lag behind the sink's
  // throughput, which swings on a loaded machine): within 4x the target.
  expect(off.latencyP50).toBeGreaterThan(4 * TARGET_MS);
  expect(on.latencyP50).toBeLessThan(4 * TARGET_MS);
  expect(on.latencyP50 * 3).toBeLessThan(off.latencyP50);
  expect(on.latencyP90 * 2).toBeLessThan(off.latencyP90);
  // Aligned checkpoints queue behind what is in flight.
  expect(median(on.completedMs) * 2).toBeLessThan(median(off.completedMs));
}, 180_000);
