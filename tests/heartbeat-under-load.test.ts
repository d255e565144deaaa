// Heartbeats with the default settings (1 s interval, 6 s timeout): a TaskManager whose tasks keep both cores
// busy for 60 s is never declared lost, because heartbeats are answered on its main thread while tasks run in
// Workers; a frozen one (SIGSTOP) is declared lost within the timeout.
import { afterAll, afterEach, expect, test } from "bun:test";
import * as path from "node:path";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const BUSY_SECONDS = Number(process.env.TM_BUSY_SECONDS ?? 60);
let rpc: RpcConnection | undefined;

afterEach(async () => {
  rpc?.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

test(`tasks that keep both cores busy for ${BUSY_SECONDS} s do not make their TaskManager look lost; SIGSTOP does, within the timeout`, async () => {
  const dir = tempDir("tm-hb-load-");
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0"]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", "taskmanager.resource-id=tm-busy"]);
  await tm.waitForOutput(/registered at the JobManager/);
  rpc = await connectClient("127.0.0.1", port);
  // Two sources whose map burns CPU without end: both cores stay busy in the TaskManager's Workers.
  const job = writeJob(dir, "busy.ts", `
    export default (env) => {
      env.fromSequence(1, 1e15).map((x) => { let h = x; for (let i = 0; i < 20000; i++) h = Math.imul(h ^ i, 16777619); return h; })
        .addSink(() => {});
    };`);
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  await waitFor("both tasks running", async () => (await rpc!.request("jobStatus", { jobId })).tasks.RUNNING === 2, 15_000);
  const until = Date.now() + BUSY_SECONDS * 1000;
  let samples = 0;
  while (Date.now() < until) {
    const s = await rpc.request("jobStatus", { jobId });
    const o = await rpc.request("clusterOverview", {});
    expect({ state: s.state, running: s.tasks.RUNNING, taskManagers: o.taskManagers }).toEqual({ state: "RUNNING", running: 2, taskManagers: 1 });
    samples++;
    await Bun.sleep(500);
  }
  expect(samples).toBeGreaterThan(BUSY_SECONDS); // it was watched the whole time
  const busy = (await rpc.request("jobStatus", { jobId })).vertices[0]!.subtasks.map((t) => t.metrics.busyTimeMsPerSecond);
  expect(Math.min(...busy)).toBeGreaterThan(500); // the tasks really were busy
  expect(jm.stderr).not.toMatch(/TaskManager lost/);

  tm.kill("SIGSTOP");
  const t0 = Date.now();
  await waitFor("the frozen TaskManager declared lost", async () => (await rpc!.request("clusterOverview", {})).taskManagers === 0, 15_000);
  const lostAfter = Date.now() - t0;
  expect(lostAfter).toBeGreaterThanOrEqual(5_000); // not before the 6 s timeout (minus the last heartbeat's age)
  expect(lostAfter).toBeLessThanOrEqual(8_000); // the timeout plus one check interval
  expect(jm.stderr).toMatch(/TaskManager lost; its slots are freed id=tm-busy reason=no heartbeat for 6000 ms/);
  tm.kill("SIGCONT");
}, (BUSY_SECONDS + 60) * 1000);

void path;
