// Unaligned checkpoints under full backpressure, on real clusters (in-process JobManager and TaskManager, real
// sockets and Workers): a keyed operator taking 20 ms per record behind a fast source. The barrier overtakes the
// producer's queued output, which the producer records as its output channel state, so the checkpoint completes in
// about the time the consumer takes to notice the barrier, far below the time it needs to work off the backlog.
// A failure then restores exactly (the oracle), and so does a new job at another parallelism started from such a
// checkpoint, across two TaskManagers, and a restore with event time (records as [timestamp, record]).
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { CheckpointStats, JobStatus } from "../src/rpc/messages.ts";
import { readMetadata } from "../src/jobmanager/checkpoint-store.ts";
import { readChannelState } from "../src/runtime/channel-state.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { committedLines, keyedCountsDiscrepancy, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const startCluster = clusterPerTest();
afterAll(removeTempDirs);
const API = JSON.stringify(path.resolve("src/api/index.ts"));
const SLOW_MS = 20;

async function start(dir: string, slots: number, extra: Partial<Config> = {}, taskManagers = 1): Promise<RpcConnection> {
  const { client } = await startCluster({
    taskManagers,
    slotsPerTaskManager: slots,
    config: {
      ...defaultConfig(),
      "state.checkpoints.dir": path.join(dir, "checkpoints"),
      "state.checkpoints.num-retained": 100,
      "execution.checkpointing.unaligned.enabled": true,
      "execution.checkpointing.timeout": 60_000,
      "restart-strategy.type": "fixed-delay",
      "restart-strategy.fixed-delay.delay": 100,
      ...extra,
    },
  });
  return client;
}

const status = (client: RpcConnection, jobId: string) => client.request("jobStatus", { jobId }) as Promise<JobStatus>;

/**
 * Keyed counting over 1..n (the oracle's job) with 300-byte records: the keyed operator takes slowMs per record
 * while the file `slow` exists, so the fast source is back-pressured and every buffer between them is full; it
 * throws once when `go` exists.
 */
function job(dir: string, n: number, keys: number, slowMs = SLOW_MS, eventTime = false): string {
  const f = (name: string) => JSON.stringify(path.join(dir, name));
  // With event time, records cross the network as [timestamp, record]: so does the channel state.
  const timestamps = eventTime ? ".assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((t) => t[0]))" : "";
  return writeJob(dir, "bp.ts", `
    import * as fs from "node:fs";
    import { FileSink, ValueStateDescriptor, WatermarkStrategy } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(300);
    export default (env) => {
      env.enableCheckpointing(1000);
      env.fromSequence(1, ${n})
        .map((x) => [x, pad])${timestamps}
        .keyBy((t) => t[0] % ${keys})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); this.seen = 0; this.slow = true; },
          processElement(t, ctx, out) {
            if ((++this.seen & 15) === 0) {
              this.slow = fs.existsSync(${f("slow")});
              if (fs.existsSync(${f("go")}) && !fs.existsSync(${f("thrown")})) { fs.writeFileSync(${f("thrown")}, "1"); throw new Error("injected failure"); }
            }
            if (this.slow) Atomics.wait(pause, 0, 0, ${slowMs});
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .startNewChain() // an exchange at parallelism 1 too: its in-flight records are what this file tests
        .sinkTo(FileSink.forRowFormat(${f("out")}).build());
    };`);
}

/** Records of a completed checkpoint's channel state: the consumers' input and the producers' output channel state. */
function channelRecords(metadataPath: string): { input: number; output: number } {
  const { meta } = readMetadata(metadataPath);
  let input = 0, output = 0;
  // Two vertices: the source's chain (its channel state is output channel state) and the keyed operator's.
  const sourceVertex = Math.min(...meta.vertices.map((v) => v.id));
  for (const v of meta.vertices) {
    for (const s of v.subtasks ?? []) {
      if (!s?.channel) continue;
      for (const ch of readChannelState(s.channel)) {
        if (ch.edgeId < 0) continue; // the rest of a source's chunk
        if (v.id === sourceVertex) output += ch.records.length;
        else input += ch.records.length;
      }
    }
  }
  return { input, output };
}

const completedWithState = (s: JobStatus) => s.checkpoints.history.filter((c) => c.status === "COMPLETED" && (c.channelStateBytes ?? 0) > 0);

function metadataOf(dir: string, jobId: string, c: CheckpointStats): string {
  return path.join(dir, "checkpoints", jobId, `chk-${c.id}`, "_metadata");
}

test("under full backpressure an unaligned checkpoint completes far sooner than the backlog drains; a failure then restores exactly", async () => {
  const dir = tempDir("tm-ucp-");
  fs.writeFileSync(path.join(dir, "slow"), "1");
  const N = 20_000, KEYS = 7;
  const client = await start(dir, 2);
  const jobId = await submitJob(client, await prepareJob(job(dir, N, KEYS), [], 1));
  // Under full backpressure: the producer's output is full when the barrier comes (the first checkpoint may come
  // before the job is, while the consumer starts).
  const stats = await waitFor("two completed checkpoints with output channel state", async () => {
    const st = await status(client, jobId);
    const withOutput = completedWithState(st)
      .map((c) => ({ id: c.id, ms: c.durationMs, ...channelRecords(metadataOf(dir, jobId, c)) }))
      .filter((c) => c.output > 0);
    return withOutput.length >= 2 && withOutput;
  }, 60_000, 100);
  console.log(`unaligned under full backpressure: ${stats.map((c) => `${c.id}: ${c.ms} ms, ${c.input} input + ${c.output} output channel state records`).join("; ")}`);
  for (const c of stats) {
    // Working off the backlog would take (input + output) x SLOW_MS (over 30 s); the checkpoint takes about the time
    // the consumer needs to see the barrier between two records and write its files (under 1 s when not loaded).
    expect(c.ms).toBeLessThan(((c.input + c.output) * SLOW_MS) / 10);
    expect(c.ms).toBeLessThan(3_000);
  }
  // A failure under backpressure: the job restarts from a checkpoint with channel state, then runs fast to the end.
  fs.writeFileSync(path.join(dir, "go"), "1");
  await waitFor("the injected failure", () => fs.existsSync(path.join(dir, "thrown")), 30_000, 50);
  fs.rmSync(path.join(dir, "slow"));
  const final = await waitForJob(client, jobId, () => {}, 100);
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  const restored = channelRecords(final.checkpoints.restoredFrom!);
  console.log(`restored from ${final.checkpoints.restoredFrom}: ${restored.input} input + ${restored.output} output channel state records`);
  expect(restored.output).toBeGreaterThan(0);
  expect(keyedCountsDiscrepancy(committedLines(path.join(dir, "out")), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 150_000);

test("a job started at another parallelism from an unaligned checkpoint with output channel state: the output is exact", async () => {
  const dir = tempDir("tm-ucp-rescale-");
  fs.writeFileSync(path.join(dir, "slow"), "1");
  const N = 20_000, KEYS = 7;
  // Two TaskManagers: some of the channels are remote (their barriers overtake the buffers waiting on the
  // TaskManagers' main threads, which the consumer records as the end of its input channel state).
  const client = await start(dir, 2, {}, 2);
  const file = job(dir, N, KEYS, 2);
  const first = await submitJob(client, await prepareJob(file, [], 2));
  await waitFor("a completed checkpoint with output channel state", async () => {
    const st = await status(client, first);
    return completedWithState(st).some((c) => channelRecords(metadataOf(dir, first, c)).output > 0);
  }, 60_000, 100);
  await client.request("cancelJob", { jobId: first });
  const canceled = await waitForJob(client, first, () => {}, 100);
  expect(canceled.state).toBe("CANCELED");
  // The newest completed checkpoint (under backpressure every one holds channel state).
  const latest = canceled.checkpoints.history.filter((c) => c.status === "COMPLETED").sort((a, b) => b.id - a.id)[0]!;
  const chk = path.dirname(metadataOf(dir, first, latest));
  const records = channelRecords(path.join(chk, "_metadata"));
  console.log(`rescaling 2 -> 1 from checkpoint ${latest.id}: ${records.input} input + ${records.output} output channel state records`);
  expect(records.output).toBeGreaterThan(0);
  fs.rmSync(path.join(dir, "slow"));
  const second = await submitJob(client, { ...(await prepareJob(file, [], 1)), fromSavepoint: chk });
  const final = await waitForJob(client, second, () => {}, 100);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.checkpoints.restoredFrom).toContain(chk);
  expect(keyedCountsDiscrepancy(committedLines(path.join(dir, "out")), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 150_000);

test("with event time (records on the wire as [timestamp, record]) a restore from an unaligned checkpoint with output channel state is exact", async () => {
  const dir = tempDir("tm-ucp-et-");
  fs.writeFileSync(path.join(dir, "slow"), "1");
  const N = 10_000, KEYS = 7;
  const client = await start(dir, 2);
  const jobId = await submitJob(client, await prepareJob(job(dir, N, KEYS, 5, true), [], 1));
  await waitFor("a completed checkpoint with output channel state", async () => {
    const st = await status(client, jobId);
    return completedWithState(st).some((c) => channelRecords(metadataOf(dir, jobId, c)).output > 0);
  }, 60_000, 100);
  fs.writeFileSync(path.join(dir, "go"), "1");
  await waitFor("the injected failure", () => fs.existsSync(path.join(dir, "thrown")), 30_000, 50);
  fs.rmSync(path.join(dir, "slow"));
  const final = await waitForJob(client, jobId, () => {}, 100);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  const restored = channelRecords(final.checkpoints.restoredFrom!);
  expect(restored.output).toBeGreaterThan(0);
  expect(keyedCountsDiscrepancy(committedLines(path.join(dir, "out")), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 150_000);
