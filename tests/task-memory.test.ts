// Per-task memory limits with real processes on 127.0.0.1: a task that allocates without bound is failed alone
// and the TaskManager lives on, running another job beside it.
// - taskmanager.task.memory-limit: the Worker checks its own JavaScriptCore heap (bun:jsc heapSize) between batches.
// - taskmanager.memory.process-limit: the main thread terminates a Worker that stops answering pings (stuck in one
//   record that allocates without end) while the process's RSS is over the limit.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, describeFailure, submitJob, waitForJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { NO_SECURITY } from "../src/rpc/security.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=5s", "-D", "taskmanager.registration.max-backoff=200ms"];
const MiB = 1024 * 1024;
const closers: (() => void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/** A JobManager and one TaskManager with 2 slots and the given extra flags; returns a client and the TaskManager. */
async function cluster(tmArgs: string[]): Promise<{ rpc: RpcConnection; tm: Child; metricsUrl: string }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", ...FAST]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", "taskmanager.resource-id=tm-mem", ...FAST, ...tmArgs]);
  const metricsUrl = `http://127.0.0.1:${(await tm.waitForOutput(/metrics endpoint started metrics=127\.0\.0\.1:(\d+)/))[1]}`;
  await tm.waitForOutput(/registered at the JobManager/);
  const rpc = await connectClient("127.0.0.1", port, { security: NO_SECURITY });
  closers.push(() => rpc.close());
  return { rpc, tm, metricsUrl };
}

/** A well-behaved endless job (one task at parallelism 1): its sink counts records into a file every 200 ms. */
function steadyJob(dir: string): string {
  const file = path.join(dir, "steady.ts");
  const out = path.join(dir, "steady-count");
  fs.writeFileSync(file, `
import * as fs from "node:fs";
export default (env) => {
  let n = 0, last = 0;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  env.fromSequence(1, 1e12).map((x) => x * 2).name("Steady").addSink((x) => {
    n++;
    if (n % 100 === 0) Atomics.wait(sleeper, 0, 0, 5); // about 20,000 records/s, mostly asleep
    if (Date.now() - last > 200) { last = Date.now(); fs.writeFileSync(${JSON.stringify(out)}, String(n)); }
  });
};`);
  return file;
}

const steadyCount = (dir: string) => {
  try {
    return Number(fs.readFileSync(path.join(dir, "steady-count"), "utf8"));
  } catch {
    return 0;
  }
};

async function rssOf(metricsUrl: string): Promise<number> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  return Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)![1]);
}

async function running(rpc: RpcConnection, jobId: string): Promise<void> {
  await waitFor(`job ${jobId} running`, async () => (await rpc.request("jobStatus", { jobId })).state === "RUNNING", 20_000);
}

describe("per-task memory limit", () => {
  test("a task that keeps allocating record by record fails with 'exceeded its memory limit'; the TaskManager and another job live on", async () => {
    const dir = tempDir("tm-mem-");
    const { rpc, tm, metricsUrl } = await cluster(["-D", `taskmanager.task.memory-limit=${128 * MiB}`]);
    const steadyId = await submitJob(rpc, await prepareJob(steadyJob(dir), [], 1));
    await running(rpc, steadyId);

    // Every record adds about 200 bytes that stay reachable: the heap grows without bound, one batch at a time.
    const hog = path.join(dir, "hog.ts");
    fs.writeFileSync(hog, `export default (env) => { const kept = []; env.fromSequence(1, 1e12).map((x) => { kept.push({ x, s: "record " + x + " ".repeat(120) }); return x; }).name("Hog").addSink(() => {}); };`);
    const t0 = Date.now();
    const hogId = await submitJob(rpc, await prepareJob(hog, [], 1));
    const status = await waitForJob(rpc, hogId, () => {}, 100);
    const seconds = (Date.now() - t0) / 1000;
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toMatch(/^task exceeded its memory limit of 128 MiB \(heap (\d+) MiB\)/);
    const heap = Number(/heap (\d+) MiB/.exec(status.error!.message)![1]);
    expect(heap).toBeGreaterThan(128);
    expect(heap).toBeLessThan(400); // caught soon after the limit, not when the machine runs out
    expect(status.error?.task).toMatch(/Hog/);
    console.log(`hog failed after ${seconds.toFixed(1)} s with heap ${heap} MiB`);

    // The TaskManager is alive and registered, the hog's slot is free again, the other job goes on.
    expect(tm.proc.exitCode).toBeNull();
    await waitFor("the hog's slot free", async () => (await rpc.request("clusterOverview", {})).slotsAvailable === 1, 5_000);
    expect((await rpc.request("jobStatus", { jobId: steadyId })).state).toBe("RUNNING");
    const before = steadyCount(dir);
    await waitFor("the steady job's sink to move on", () => steadyCount(dir) > before, 5_000);
    expect((await fetch(`${metricsUrl}/readyz`)).status).toBe(200);
    // The hog's heap went with its Worker.
    await waitFor("the TaskManager's RSS back under 600 MiB", async () => (await rssOf(metricsUrl)) < 600 * MiB, 15_000);
    await tm.waitForOutput(/task state changed .*state=FAILED/);
  }, 90_000);

  test("a task stuck in one record that allocates without end is terminated once the process RSS is over taskmanager.memory.process-limit", async () => {
    const dir = tempDir("tm-mem-rss-");
    // The heap limit is set too: it cannot help here, the Worker never yields to check it.
    const { rpc, tm, metricsUrl } = await cluster(["-D", `taskmanager.memory.process-limit=${500 * MiB}`, "-D", `taskmanager.task.memory-limit=${128 * MiB}`]);
    const steadyId = await submitJob(rpc, await prepareJob(steadyJob(dir), [], 1));
    await running(rpc, steadyId);
    const baseRss = await rssOf(metricsUrl);
    expect(baseRss).toBeLessThan(450 * MiB); // otherwise the limit below means nothing

    // The first record never returns: it keeps 1 MiB more every ~5 ms (about 200 MiB/s) and never yields.
    const hog = path.join(dir, "stuck.ts");
    fs.writeFileSync(hog, `export default (env) => { const kept = []; env.fromSequence(1, 10).map((x) => { for (;;) { kept.push(new Float64Array(131072).fill(x)); const t = Date.now(); while (Date.now() - t < 5) {} } }).name("Stuck").addSink(() => {}); };`);
    const hogId = await submitJob(rpc, await prepareJob(hog, [], 1));
    let peak = 0;
    const status = await waitForJob(rpc, hogId, () => {}, 100, () => void rssOf(metricsUrl).then((r) => (peak = Math.max(peak, r)), () => {}));
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toMatch(/^task terminated: it has not answered for \d+ ms while the TaskManager's RSS \(\d+ MiB\) exceeds taskmanager\.memory\.process-limit \(500 MiB\)/);
    console.log(`stuck task terminated: ${status.error?.message}; peak RSS seen ${Math.round(peak / MiB)} MiB`);
    // What the client prints: the task and the message, no stack frame of the TaskManager's own code.
    expect(describeFailure(status)).toBe(`Task ${status.error?.task} failed.\nCaused by: ${status.error?.message}`);

    expect(tm.proc.exitCode).toBeNull();
    await waitFor("the stuck task's slot free", async () => (await rpc.request("clusterOverview", {})).slotsAvailable === 1, 5_000);
    const before = steadyCount(dir);
    await waitFor("the steady job's sink to move on", () => steadyCount(dir) > before, 5_000);
    expect((await rpc.request("jobStatus", { jobId: steadyId })).state).toBe("RUNNING");
    // Terminating the Worker gave its memory back.
    await waitFor("RSS back under the limit", async () => (await rssOf(metricsUrl)) < 500 * MiB, 5_000);
  }, 90_000);

  test("a job that allocates much garbage but keeps little stays under the limit and finishes", async () => {
    const dir = tempDir("tm-mem-off-");
    const { rpc } = await cluster(["-D", `taskmanager.task.memory-limit=${256 * MiB}`]);
    // About 60 MiB of garbage per second but little that stays: under the limit, it must not be failed.
    const file = path.join(dir, "churn.ts");
    fs.writeFileSync(file, `export default (env) => { env.fromSequence(1, 300000).map((x) => ({ x, s: "v" + x + " ".repeat(200) })).map((o) => o.s.length).addSink(() => {}); };`);
    const jobId = await submitJob(rpc, await prepareJob(file, [], 2));
    const status = await waitForJob(rpc, jobId, () => {}, 100);
    expect(status.error?.message ?? "").toBe("");
    expect(status.state).toBe("FINISHED");
  }, 60_000);
});
