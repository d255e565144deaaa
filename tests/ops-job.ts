// The streaming job of the operations tests (REST API, dashboard, shutdown): runs until canceled, about 2000
// records/s at parallelism 2 (the sink sleeps 1 ms per record, which back-pressures the source), checkpoints
// every 300 ms. Vertices: "Numbers -> Doubler" (source chain) and "Sums -> Slow Sink" (after a keyBy). Also the
// cluster those tests start around it (startOpsCluster).
import * as path from "node:path";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, ROOT, waitFor, writeJob } from "./helpers.ts";

export function opsJobSource(name: string): string {
  return `
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.setJobName(${JSON.stringify(name)}).enableCheckpointing(300).setBufferTimeout(0);
      env.fromSequence(1, 1e12).name("Numbers")
        .map((n) => n * 2).name("Doubler")
        .keyBy((n) => (n / 2) % 16)
        .reduce((a, b) => a + b).name("Sums").startNewChain() // two vertices at parallelism 1 too
        .addSink(() => { Atomics.wait(pause, 0, 0, 1); }).name("Slow Sink");
    };`;
}

/** Fast heartbeats and registration retries for the operations tests' processes. */
export const FAST = ["-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=3s", "-D", "taskmanager.registration.max-backoff=200ms"];

export interface OpsCluster {
  jm: Child;
  tm: Child;
  rpcPort: number;
  restPort: number;
  rpc: RpcConnection;
  jobId: string;
}

/**
 * One JobManager (REST on a free port, storage in `dir`) and one TaskManager with two slots as real processes, and
 * the ops job submitted at `parallelism` and running with all its tasks: the set-up of the REST and job store tests.
 */
export async function startOpsCluster(opts: { dir: string; jobName: string; parallelism: number; jmArgs?: string[]; tmArgs?: string[]; jmCwd?: string }): Promise<OpsCluster> {
  const main = path.join(ROOT, "main.ts");
  const jm = new Child([BUN, main, "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", `jobmanager.storage.dir=${opts.dir}/jm`, ...(opts.jmArgs ?? []), ...FAST], {}, opts.jmCwd);
  const rpcPort = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const restPort = Number((await jm.waitForOutput(/REST API started rest=127\.0\.0\.1:(\d+)/))[1]);
  const tm = new Child([BUN, main, "taskmanager", "-D", `jobmanager.rpc.port=${rpcPort}`, "-D", "taskmanager.numberOfTaskSlots=2", ...(opts.tmArgs ?? []), ...FAST]);
  await tm.waitForOutput(/registered at the JobManager/);
  const rpc = await connectClient("127.0.0.1", rpcPort);
  const jobId = await submitJob(rpc, await prepareJob(writeJob(opts.dir, "ops.ts", opsJobSource(opts.jobName)), [], opts.parallelism));
  await waitFor(`the job running with all ${2 * opts.parallelism} tasks`, async () => {
    const s = await rpc.request("jobStatus", { jobId });
    return s.state === "RUNNING" && s.tasks.RUNNING === 2 * opts.parallelism;
  }, 20_000);
  return { jm, tm, rpcPort, restPort, rpc, jobId };
}
