// Liveness of data connections without a network cut (issue 21): a TaskManager frozen with SIGSTOP keeps its TCP
// connections open but sends nothing. With the heartbeat time-out set long, only the data connection's keepalive
// can notice: its peer must close the connection within taskmanager.network.tcp-connection.keepalive.timeout,
// naming the silent TaskManager, and the job must fail over. (tests/partitions.test.ts cuts real links.)
import { afterAll, afterEach, expect, test } from "bun:test";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const SLOW_HEARTBEAT = ["-D", "heartbeat.interval=500ms", "-D", "heartbeat.timeout=60s"];
const KEEPALIVE = ["-D", "taskmanager.network.tcp-connection.keepalive.interval=200ms", "-D", "taskmanager.network.tcp-connection.keepalive.timeout=2s"];
const clients: RpcConnection[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/** A JobManager and TaskManagers tm-a and tm-b (one slot each) as processes, and a client. */
async function cluster(jobManagerArgs: string[]): Promise<{ tms: Child[]; rpc: RpcConnection }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...SLOW_HEARTBEAT, ...jobManagerArgs]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tms = ["tm-a", "tm-b"].map((id) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=1", "-D", `taskmanager.resource-id=${id}`, ...SLOW_HEARTBEAT, ...KEEPALIVE]));
  await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/)));
  const rpc = await connectClient("127.0.0.1", port);
  clients.push(rpc);
  return { tms, rpc };
}

test("a frozen TaskManager's data connections are closed by the keepalive time-out, naming it; its tasks fail", async () => {
  const dir = tempDir("tm-keepalive-");
  const { tms, rpc } = await cluster(["-D", "restart-strategy.type=none"]);
  // An endless keyed job at parallelism 2 over the two TaskManagers: every subtask talks to the other TaskManager.
  const job = writeJob(dir, "job.ts", `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.fromSequence(1, 1e12).map((x) => { if (x % 100 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .keyBy((x) => x % 7).sum(0).addSink(() => {});
    };`);
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  await waitFor("the job running on both TaskManagers", async () => {
    const s = await rpc.request("jobStatus", { jobId });
    return s.state === "RUNNING" && s.tasks.RUNNING === 4 && s.recordsIn > 1000;
  }, 30_000);
  const frozen = tms[1]!;
  const stoppedAt = Date.now();
  frozen.kill("SIGSTOP");
  try {
    const m = await tms[0]!.waitForOutput(/nothing arrived from TaskManager tm-b \(127\.0\.0\.1:\d+\) for (\d+) ms \(taskmanager\.network\.tcp-connection\.keepalive\.timeout = 2000 ms\)/, 20_000);
    const detectedAfter = Date.now() - stoppedAt;
    expect(Number(m[1])).toBeGreaterThanOrEqual(2000);
    expect(detectedAfter).toBeLessThan(15_000);
    // The tasks on tm-a that used the connection fail naming the peer, and with no restarts the job fails.
    const s = await waitFor("the job failed", async () => {
      const st = await rpc.request("jobStatus", { jobId });
      return st.state === "FAILED" && st;
    }, 20_000);
    expect(s.error?.message).toMatch(/lost the data connection to a (producer|consumer) \(TaskManager tm-b\)/);
  } finally {
    frozen.kill("SIGCONT");
  }
}, 90_000);

test("a quiet but live connection is kept: keepalive frames flow while nothing else does", async () => {
  const dir = tempDir("tm-keepalive-quiet-");
  const { tms, rpc } = await cluster([]);
  // Records only every 3 s (longer than the 2 s keepalive time-out): without keepalive frames the channel would
  // look dead between records.
  const job = writeJob(dir, "job.ts", `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.setBufferTimeout(0);
      env.fromSequence(1, 4).map((x) => { Atomics.wait(pause, 0, 0, 3000); return x; })
        .keyBy((x) => x % 2).sum(0).addSink(() => {});
    };`);
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  const s = await waitFor("the job finished", async () => {
    const st = await rpc.request("jobStatus", { jobId });
    return (st.state === "FINISHED" || st.state === "FAILED") && st;
  }, 60_000);
  expect(s.error?.message).toBeUndefined();
  expect(s.state).toBe("FINISHED");
  expect(tms.map((t) => t.stderr).join("\n")).not.toMatch(/nothing arrived from TaskManager/);
}, 90_000);
