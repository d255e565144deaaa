// Checkpoint faults on a running job (in-process cluster, real sockets and Workers): a task that cannot write
// its checkpoint files declines, that checkpoint is aborted with the reason, later ones complete, and the job
// runs to the end with the right output. Checkpoints that time out are aborted and the job is unaffected.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { committedLines, removeTempDirs, tempDir, writeJob } from "./helpers.ts";

const startCluster = clusterPerTest();
afterAll(removeTempDirs);

async function start(dir: string, extra: Partial<Config> = {}) {
  const { client } = await startCluster({
    taskManagers: 1,
    slotsPerTaskManager: 2,
    config: { ...defaultConfig(), "state.checkpoints.dir": path.join(dir, "checkpoints"), ...extra },
  });
  return client;
}

function sumJob(dir: string): string {
  return writeJob(dir, "sum.ts", `
    import { FileSink } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(100);
      env.fromSequence(1, 300_000)
        .map((x) => { if (x % 300 === 0) Atomics.wait(pause, 0, 0, 1); return [x % 10, x]; })
        .keyBy((t) => t[0]).sum(1).startNewChain() // two tasks at parallelism 1 too (the sum's is the one that fails)
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(path.join(dir, "out"))}).build());
    };`);
}

/** The last value per key of the committed output, checked against sums computed directly. */
function expectFinalSums(dir: string): void {
  const lines = committedLines(path.join(dir, "out"));
  const last = new Map<number, number>();
  for (const l of lines) {
    const [k, v] = l.slice(1, -1).split(",").map(Number) as [number, number];
    last.set(k, Math.max(last.get(k) ?? 0, v));
  }
  const expected = new Map<number, number>();
  for (let x = 1; x <= 300_000; x++) expected.set(x % 10, (expected.get(x % 10) ?? 0) + x);
  expect(lines.length).toBe(300_000);
  expect([...last.entries()].sort()).toEqual([...expected.entries()].sort());
}

test("a task that cannot write its checkpoint declines it; the checkpoint is aborted with the reason and the job goes on", async () => {
  const dir = tempDir("tm-cp-faults-");
  const client = await start(dir);
  const jobId = await submitJob(client, await prepareJob(sumJob(dir), [], 1));
  // The sum task (vertex 1, subtask 0) finds a file where its directory of checkpoints 1 and 2 should be.
  for (const id of [1, 2]) {
    const chk = path.join(dir, "checkpoints", jobId, `chk-${id}`);
    fs.mkdirSync(chk, { recursive: true });
    fs.writeFileSync(path.join(chk, "1-0"), "in the way");
  }
  const final = await waitForJob(client, jobId, () => {}, 50);
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(0);
  const failed = final.checkpoints.history.filter((c) => c.status === "FAILED" && c.id <= 2);
  expect(failed.map((c) => c.id)).toEqual([1, 2]);
  expect(failed[0]!.failure).toMatch(/declined by Keyed Sum.*EEXIST|declined by Keyed Sum.*exists|declined by Keyed Sum.*not a directory/i);
  expect(final.checkpoints.completed).toBeGreaterThan(0);
  expect(fs.existsSync(path.join(dir, "checkpoints", jobId, "chk-1"))).toBe(false); // cleaned up
  expectFinalSums(dir);
}, 60_000);

test("checkpoints that time out are aborted; the job finishes with the right output", async () => {
  const dir = tempDir("tm-cp-timeout-");
  const client = await start(dir, { "execution.checkpointing.timeout": 1 });
  const jobId = await submitJob(client, await prepareJob(sumJob(dir), [], 1));
  const final = await waitForJob(client, jobId, () => {}, 50);
  expect(final.state).toBe("FINISHED");
  expect(final.checkpoints.completed).toBe(0);
  expect(final.checkpoints.failed).toBeGreaterThan(0);
  expect(final.checkpoints.history.at(-1)!.failure).toMatch(/timed out after 1 ms|ended before acknowledging|declined/);
  expectFinalSums(dir);
}, 60_000);

test("a failure after a savepoint restarts from the savepoint when no newer checkpoint exists (its commits stay)", async () => {
  const dir = tempDir("tm-cp-after-sp-");
  // Without FLIP-147: with it, the job would end only after a final checkpoint, an interval (1 h) later.
  const client = await start(dir, { "restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.delay": 50, "execution.checkpointing.checkpoints-after-tasks-finish": false });
  const go = path.join(dir, "go");
  const thrown = path.join(dir, "thrown");
  const job = writeJob(dir, "sp.ts", `
    import * as fs from "node:fs";
    import { FileSink } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(3_600_000); // no periodic checkpoint during the test: only the savepoint
      env.fromSequence(1, 300_000)
        .map((x) => {
          if (x % 300 === 0) Atomics.wait(pause, 0, 0, 1);
          if (x % 1000 === 0 && fs.existsSync(${JSON.stringify(go)}) && !fs.existsSync(${JSON.stringify(thrown)})) {
            fs.writeFileSync(${JSON.stringify(thrown)}, "x");
            throw new Error("injected failure after the savepoint");
          }
          return [x % 10, x];
        })
        .keyBy((t) => t[0]).sum(1).startNewChain() // two tasks at parallelism 1 too (the sum's is the one that fails)
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(path.join(dir, "out"))}).build());
    };`);
  const jobId = await submitJob(client, await prepareJob(job, [], 1));
  await waitForRunning(client, jobId);
  const sp = await client.request("triggerSavepoint", { jobId, dir: path.join(dir, "sp") }, 60_000);
  fs.writeFileSync(go, "now");
  const final = await waitForJob(client, jobId, () => {}, 50);
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  expect(final.checkpoints.restoredFrom).toBe(sp.path);
  expectFinalSums(dir);
}, 60_000);

async function waitForRunning(client: RpcConnection, jobId: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const s = await client.request("jobStatus", { jobId });
    if (s.state === "RUNNING" && s.tasks.RUNNING === 2) return;
    await Bun.sleep(25);
  }
  throw new Error("the job did not start running");
}

test("AT_LEAST_ONCE mode: checkpoints complete on a job whose keyed tasks read two input channels each", async () => {
  const dir = tempDir("tm-cp-alo-");
  const client = await start(dir);
  const job = writeJob(dir, "alo.ts", `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(100, "AT_LEAST_ONCE");
      env.fromSequence(1, 200_000)
        .map((x) => { if (x % 200 === 0) Atomics.wait(pause, 0, 0, 1); return [x % 10, x]; })
        .keyBy((t) => t[0]).sum(1)
        .addSink(() => {});
    };`);
  const jobId = await submitJob(client, await prepareJob(job, [], 2));
  const final = await waitForJob(client, jobId, () => {}, 50);
  expect(final.state).toBe("FINISHED");
  expect(final.checkpoints.completed).toBeGreaterThan(0);
  // Both sum subtasks read two channels (one per source subtask) and acknowledged every completed checkpoint.
  const done = final.checkpoints.history.filter((c) => c.status === "COMPLETED");
  // (With FLIP-147 a checkpoint after a source finished counts that task as finished, not as one to acknowledge.)
  expect(done.every((c) => c.acknowledged === c.total && c.total + (c.finishedTasks ?? 0) === 4)).toBe(true);
  expect(done.some((c) => c.acknowledged === 4)).toBe(true);
}, 60_000);
