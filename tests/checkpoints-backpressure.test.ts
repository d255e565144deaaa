// Checkpoints where they used to fail, on real clusters (in-process JobManager and TaskManager, real sockets and
// Workers): under full backpressure unaligned checkpoints complete and hold the in-flight records; a job restarted from an unaligned checkpoint replays its channel state exactly
// once; a job keeps checkpointing after one of its sources finished (FLIP-147), and that source's two-phase-commit
// sink is committed by a checkpoint, not by the end of the job.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { CheckpointStats, JobStatus } from "../src/rpc/messages.ts";
import { readMetadata } from "../src/jobmanager/checkpoint-store.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { committedLines, keyedCountsDiscrepancy, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const startCluster = clusterPerTest();
afterAll(removeTempDirs);
const API = JSON.stringify(path.resolve("src/api/index.ts"));

async function start(dir: string, extra: Partial<Config> = {}): Promise<RpcConnection> {
  const { client } = await startCluster({
    taskManagers: 1,
    slotsPerTaskManager: 2,
    config: { ...defaultConfig(), "state.checkpoints.dir": path.join(dir, "checkpoints"), "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.delay": 100, ...extra },
  });
  return client;
}

const status = (client: RpcConnection, jobId: string) => client.request("jobStatus", { jobId }) as Promise<JobStatus>;

/**
 * A fast source of 300-byte records into a keyed operator that takes `slowMs` per record (Atomics.wait): the
 * source is back-pressured and the channel between them stays full.
 */
function backpressuredJob(dir: string, n: number, slowMs: number, keys: number, extra = ""): string {
  return writeJob(dir, "bp.ts", `
    import * as fs from "node:fs";
    import { FileSink, ValueStateDescriptor } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(300);
    export default (env) => {
      env.enableCheckpointing(300);
      env.fromSequence(1, ${n})
        .map((x) => [x, pad])
        .keyBy((t) => t[0] % ${keys})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); this.seen = 0; },
          processElement(t, ctx, out) {
            Atomics.wait(pause, 0, 0, ${slowMs});
            ${extra}
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .startNewChain() // an exchange at parallelism 1 too: the back-pressured channel is what this file tests
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(path.join(dir, "out"))}).build());
    };`);
}

/** Checkpoints of the job until `count` of them have ended (completed or failed), or `ms` passed. */
async function checkpointsWhileRunning(client: RpcConnection, jobId: string, count: number, ms: number): Promise<CheckpointStats[]> {
  let last: CheckpointStats[] = [];
  await waitFor(`${count} checkpoints ended`, async () => {
    const s = await status(client, jobId);
    last = s.checkpoints.history.filter((c) => c.status !== "IN_PROGRESS");
    return last.length >= count || s.state !== "RUNNING";
  }, ms, 100).catch(() => {});
  return last;
}

test("under backpressure unaligned checkpoints complete and carry the in-flight records as channel state", async () => {
  const dir = tempDir("tm-bp-");
  const client = await start(dir, { "execution.checkpointing.unaligned.enabled": true, "execution.checkpointing.timeout": 15_000 });
  const jobId = await submitJob(client, await prepareJob(backpressuredJob(dir, 1_000_000, 2, 7), [], 1));
  const u = await checkpointsWhileRunning(client, jobId, 4, 60_000);
  await client.request("cancelJob", { jobId });
  await waitForJob(client, jobId, () => {}, 100);
  console.log(`unaligned: ${u.map((c) => `${c.id}:${c.status}:${c.durationMs}ms:${c.channelStateBytes ?? 0}B`).join(" ")}`);
  expect(u.length).toBeGreaterThanOrEqual(4);
  expect(u.every((c) => c.status === "COMPLETED" && c.unaligned === true)).toBe(true);
  expect(u.filter((c) => (c.channelStateBytes ?? 0) > 0).length).toBeGreaterThanOrEqual(3);
}, 120_000);

test("unaligned: fixed-size records that turn slow in the middle of the stream do not hold checkpoints back (the task looks at the clock between chunks, then record by record)", async () => {
  const dir = tempDir("tm-bp-turn-slow-");
  const slow = path.join(dir, "slow");
  // Without debloating, so that every buffer holds 32 KiB of records.
  const client = await start(dir, { "execution.checkpointing.unaligned.enabled": true, "execution.checkpointing.timeout": 30_000, "taskmanager.network.memory.buffer-debloat.enabled": false });
  // Int pairs: typed records of a fixed size, written straight into the buffers as chunks of up to 64 records. The
  // first 300,000 records take no time (the task then looks at the clock between chunks only), the later ones 10 ms
  // each: a buffer of them would hold the task for half a minute, a chunk for at most 64 * 10 ms.
  const job = writeJob(dir, "turn-slow.ts", `
    import * as fs from "node:fs";
    import { ValueStateDescriptor } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(200);
      env.fromSequence(1, 2_000_000)
        .map((x) => [x % 7, 1])
        .keyBy((t) => t[0])
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); this.seen = 0; },
          processElement(t, ctx, out) {
            if (++this.seen > 300_000) {
              if (this.seen === 300_001) fs.writeFileSync(${JSON.stringify(slow)}, String(Date.now()));
              Atomics.wait(pause, 0, 0, 10);
            }
            this.count.update(this.count.value() + t[1]);
            out.collect([t[0], this.count.value()]);
          },
        })
        .startNewChain()
        .addSink({ invoke() {} });
    };`);
  const jobId = await submitJob(client, await prepareJob(job, [], 1));
  await waitFor("the records turned slow", () => fs.existsSync(slow), 60_000, 50);
  const since = Number(fs.readFileSync(slow, "utf8"));
  let after: CheckpointStats[] = [];
  await waitFor("four checkpoints triggered after the records turned slow ended", async () => {
    after = (await status(client, jobId)).checkpoints.history.filter((c) => c.triggerTime > since && c.status !== "IN_PROGRESS");
    return after.length >= 4;
  }, 60_000, 100);
  await client.request("cancelJob", { jobId });
  await waitForJob(client, jobId, () => {}, 100);
  console.log(`after turning slow: ${after.map((c) => `${c.id}:${c.status}:${c.durationMs}ms:${c.channelStateBytes ?? 0}B`).join(" ")}`);
  expect(after.every((c) => c.status === "COMPLETED" && c.unaligned === true)).toBe(true);
  // A 32 KiB buffer holds about 3,600 such records: read in one go, about 36 s; a chunk at a time, 0.6 s.
  expect(Math.max(...after.map((c) => c.durationMs ?? Infinity))).toBeLessThan(2_500);
}, 150_000);

test("an aligned barrier leaves a back-pressured source within a few records, not after the rest of its chunk; the REST details name each vertex's start delay", async () => {
  // 3 KB records into a sink that takes 2 ms per record: a source chunk of 1024 records (3 MB) takes about 2 s to
  // drain, far more than the output pool holds. Barriers go in between chunks, so before chunks shrank under
  // backpressure a trigger waited about 1 s on average (0-2 s) at the source; now a few records.
  const dir = tempDir("tm-bp-source-delay-");
  const { client, cluster } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: { ...defaultConfig(), "state.checkpoints.dir": path.join(dir, "checkpoints"), "execution.checkpointing.timeout": 60_000, "log.level": "warn" } });
  const job = writeJob(dir, "bp-big.ts", `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(3000);
    export default (env) => {
      env.enableCheckpointing(200);
      env.fromSequence(1, 1e12).map((x) => [x, pad]).keyBy((t) => t[0] % 8)
        .addSink(() => { Atomics.wait(pause, 0, 0, 2); }).disableChaining();
    };`);
  const jobId = await submitJob(client, await prepareJob(job, [], 1));
  const done = await waitFor("6 completed checkpoints", async () => {
    const h = (await status(client, jobId)).checkpoints.history.filter((c) => c.status === "COMPLETED");
    return h.length >= 6 && h;
  }, 90_000, 100);
  const details = await Promise.all(done.map(async (c) => (await fetch(`http://127.0.0.1:${cluster.restPort}/jobs/${jobId}/checkpoints/details/${c.id}`)).json()));
  await client.request("cancelJob", { jobId });
  const vertices = (await status(client, jobId)).vertices;
  const [source, sink] = [vertices.find((v) => /Source/.test(v.name))!, vertices.find((v) => /Sink/.test(v.name))!];
  for (const d of details) {
    expect(d.checkpoint_type).toBe("CHECKPOINT");
    expect(Object.keys(d.tasks).sort()).toEqual([String(source.id), String(sink.id)].sort());
    expect(d.tasks[String(source.id)]).toMatchObject({ name: source.name, num_acknowledged_subtasks: 1 });
  }
  const sourceDelays = details.map((d) => d.tasks[String(source.id)].start_delay as number).sort((a, b) => a - b);
  const sinkDelays = details.map((d) => d.tasks[String(sink.id)].start_delay as number);
  console.log(`source start delays ${sourceDelays.join(", ")} ms; sink start delays ${sinkDelays.join(", ")} ms`);
  expect(sourceDelays[Math.floor(sourceDelays.length / 2)]!).toBeLessThan(300);
  // The sink's first barrier comes after the source's, behind the records in flight.
  expect(details.every((d) => d.tasks[String(sink.id)].start_delay >= d.tasks[String(source.id)].start_delay)).toBe(true);
}, 120_000);

test("a job restarted from an unaligned checkpoint with channel state: the committed output is exact", async () => {
  const dir = tempDir("tm-bp-restore-");
  const go = path.join(dir, "go");
  const thrown = path.join(dir, "thrown");
  const N = 8_000, KEYS = 7;
  const client = await start(dir, { "execution.checkpointing.unaligned.enabled": true, "state.checkpoints.num-retained": 100 });
  // Throws once, after the test has seen a completed checkpoint with channel state.
  const failOnce = `if ((++this.seen & 31) === 0 && fs.existsSync(${JSON.stringify(go)}) && !fs.existsSync(${JSON.stringify(thrown)})) { fs.writeFileSync(${JSON.stringify(thrown)}, "1"); throw new Error("injected failure"); }`;
  const jobId = await submitJob(client, await prepareJob(backpressuredJob(dir, N, 1, KEYS, failOnce), [], 1));
  // Two of them: the second one's channel state must also hold the buffers the first one decoded early and the task
  // had not read yet (they were once left out, and restoring from the second checkpoint lost them).
  await waitFor("two completed checkpoints with channel state", async () => (await status(client, jobId)).checkpoints.history.filter((c) => c.status === "COMPLETED" && (c.channelStateBytes ?? 0) > 0).length >= 2, 30_000, 100);
  fs.writeFileSync(go, "1");
  const final = await waitForJob(client, jobId, () => {}, 100);
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  const restored = readMetadata(final.checkpoints.restoredFrom!).meta;
  const channelRecords = restored.vertices.flatMap((v) => (v.subtasks ?? []).map((s) => s?.channel?.records ?? 0)).reduce((x, y) => x + y, 0);
  console.log(`restored from checkpoint ${restored.checkpointId} with ${channelRecords} in-flight records`);
  expect(restored.checkpointId).toBeGreaterThanOrEqual(2);
  expect(channelRecords).toBeGreaterThan(0);
  expect(keyedCountsDiscrepancy(committedLines(path.join(dir, "out")), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 120_000);

test("aligned-checkpoint-timeout: under backpressure checkpoints start aligned, switch to unaligned, and a restore from one is exact", async () => {
  const dir = tempDir("tm-bp-timeout-");
  const go = path.join(dir, "go");
  const thrown = path.join(dir, "thrown");
  const N = 24_000, KEYS = 7, TIMEOUT = 300;
  const client = await start(dir, {
    "execution.checkpointing.unaligned.enabled": true,
    "execution.checkpointing.aligned-checkpoint-timeout": TIMEOUT,
    "state.checkpoints.num-retained": 100,
  });
  const failOnce = `if ((++this.seen & 31) === 0 && fs.existsSync(${JSON.stringify(go)}) && !fs.existsSync(${JSON.stringify(thrown)})) { fs.writeFileSync(${JSON.stringify(thrown)}, "1"); throw new Error("injected failure"); }`;
  // Parallelism 2: each keyed subtask aligns two input channels, so a switch also releases a blocked channel.
  const jobId = await submitJob(client, await prepareJob(backpressuredJob(dir, N, 1, KEYS, failOnce), [], 2));
  const switched = (c: CheckpointStats) => c.status === "COMPLETED" && c.unaligned === true && (c.channelStateBytes ?? 0) > 0;
  const before = await waitFor("two completed checkpoints switched to unaligned with channel state", async () => {
    const s = await status(client, jobId);
    return s.checkpoints.history.filter(switched).length >= 2 && s.checkpoints.history;
  }, 40_000, 100);
  fs.writeFileSync(go, "1");
  console.log(`timeout ${TIMEOUT} ms: ${before.map((c) => `${c.id}:${c.status}:${c.unaligned ? "U" : "A"}:${c.durationMs}ms:start ${c.startDelayMs}ms:${c.channelStateBytes ?? 0}B`).join(" ")}`);
  // They started aligned: the barrier reached the keyed task in order, behind the backlog, after the time-out
  // (an unaligned barrier from the start overtakes the backlog and arrives within milliseconds).
  expect(before.filter(switched).some((c) => (c.startDelayMs ?? 0) >= TIMEOUT)).toBe(true);
  const final = await waitForJob(client, jobId, () => {}, 100);
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  const restored = readMetadata(final.checkpoints.restoredFrom!).meta;
  expect(final.checkpoints.history.find((c) => c.id === restored.checkpointId)?.unaligned).toBe(true);
  expect(keyedCountsDiscrepancy(committedLines(path.join(dir, "out")), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 120_000);

test("FLIP-147: a job keeps checkpointing after its bounded source finished; that source's sink is committed by a checkpoint", async () => {
  const dir = tempDir("tm-flip147-");
  const client = await start(dir);
  const job = writeJob(dir, "two.ts", `
    import { FileSink } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(200);
      env.fromSequence(1, 5000).sinkTo(FileSink.forRowFormat(${JSON.stringify(path.join(dir, "bounded"))}).build());
      env.fromSequence(1, 100_000_000)
        .map((x) => { if (x % 100 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(path.join(dir, "unbounded"))}).build());
    };`);
  const jobId = await submitJob(client, await prepareJob(job, [], 1));
  const s = await waitFor("3 checkpoints completed after the bounded pipeline finished", async () => {
    const st = await status(client, jobId);
    return st.checkpoints.history.filter((c) => c.status === "COMPLETED" && (c.finishedTasks ?? 0) > 0).length >= 3 && st;
  }, 30_000, 100);
  expect(s.state).toBe("RUNNING");
  expect(s.tasks.FINISHED).toBe(1);
  // The bounded sink's output is all there while the job runs, committed under checkpoint ids (not a final commit).
  const lines = committedLines(path.join(dir, "bounded")).map(Number).sort((x, y) => x - y);
  expect(lines).toEqual(Array.from({ length: 5000 }, (_, i) => i + 1));
  const completed = new Set(s.checkpoints.history.filter((c) => c.status === "COMPLETED").map((c) => c.id));
  const txns = fs.readdirSync(path.join(dir, "bounded")).filter((f) => f.startsWith("part-")).map((f) => Number(f.split("-").at(-1)));
  expect(txns.length).toBeGreaterThan(0);
  for (const t of txns) expect(t).toBeLessThan(Number.MAX_SAFE_INTEGER);
  expect(Math.max(...txns)).toBeLessThanOrEqual(Math.max(...completed));
  await client.request("cancelJob", { jobId });
  await waitForJob(client, jobId, () => {}, 100);
}, 60_000);
