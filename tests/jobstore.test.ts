// The JobManager's job store is bounded as Flink's (jobstore.max-capacity, jobstore.expiration-time): ended jobs
// are dropped oldest first from /jobs, the RPC job list and /metrics; running jobs never are. The same cluster
// has state.savepoints.dir, under which a relative savepoint directory (REST and CLI) is resolved.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { waitForJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { BUN, Child, ROOT, removeTempDirs, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";
import { startOpsCluster } from "./ops-job.ts";
import { parsePrometheus } from "./prometheus-parse.ts";

const EXPIRATION_MS = 12_000;
let dir: string;
let savepointsDir: string;
let rpcPort: number;
let rest: string;
let rpc: RpcConnection;
/** A streaming job that runs through the whole file: never dropped while it runs. */
let running: string;

const listed = async (): Promise<string[]> => ((await (await fetch(`${rest}/jobs`)).json()).jobs as { id: string }[]).map((j) => j.id).sort();
const inMetrics = async (): Promise<string[]> => {
  const f = parsePrometheus(await (await fetch(`${rest}/metrics`)).text()).get("tm_job_state");
  return [...new Set((f?.samples ?? []).map((s) => s.labels.job_id!))].sort();
};

beforeAll(async () => {
  dir = tempDir("tm-jobstore-");
  savepointsDir = path.join(dir, "savepoints");
  let restPort: number;
  ({ rpcPort, restPort, rpc, jobId: running } = await startOpsCluster({
    dir,
    jobName: "long-running",
    parallelism: 1,
    jmArgs: ["-D", "jobstore.max-capacity=2", "-D", `jobstore.expiration-time=${EXPIRATION_MS}ms`, "-D", `state.savepoints.dir=${savepointsDir}`],
  }));
  rest = `http://127.0.0.1:${restPort}`;
}, 40_000);

afterAll(async () => {
  rpc?.close();
  await Child.stopAll();
  removeTempDirs();
});

describe("relative savepoint directories", () => {
  test("are resolved against state.savepoints.dir, over REST and from the CLI", async () => {
    const r = await fetch(`${rest}/jobs/${running}/savepoints`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ "target-directory": "from-rest" }) });
    expect(r.status).toBe(202);
    const { "request-id": requestId } = await r.json();
    const done = await waitFor("the savepoint", async () => {
      const s = await (await fetch(`${rest}/jobs/${running}/savepoints/${requestId}`)).json();
      return s.status.id === "COMPLETED" && s;
    }, 20_000);
    expect(done.operation).toEqual({ location: expect.any(String) });
    expect(path.dirname(done.operation.location)).toBe(path.join(savepointsDir, "from-rest"));
    expect(fs.existsSync(path.join(done.operation.location, "_metadata"))).toBe(true);

    const cliCwd = tempDir("tm-jobstore-cli-");
    const cli = new Child([BUN, path.join(ROOT, "main.ts"), "savepoint", running, "from-cli", "-m", `127.0.0.1:${rpcPort}`], {}, cliCwd);
    expect(await cli.exited(30_000)).toBe(0);
    const printed = /Savepoint completed\. Path: (\S+)/.exec(cli.stdout)?.[1];
    expect(printed && path.dirname(printed)).toBe(path.join(savepointsDir, "from-cli"));
    expect(fs.readdirSync(path.join(savepointsDir, "from-cli"))).toHaveLength(1);
    expect(fs.readdirSync(cliCwd)).toEqual([]);
  }, 60_000);
});

describe("jobstore.max-capacity and jobstore.expiration-time", () => {
  const ended: JobStatus[] = [];

  test("of 4 finished jobs /jobs, the RPC list and /metrics keep the last 2, and the running job", async () => {
    const job = writeJob(dir, "short.ts", `export default (env) => { env.fromSequence(1, 20).map((x) => x + 1).addSink(() => {}); };`);
    for (let i = 0; i < 4; i++) {
      const s = await runJob(rpc, job, [], 1, 100);
      expect(s.state).toBe("FINISHED");
      ended.push(s);
    }
    const kept = [running, ended[2]!.jobId, ended[3]!.jobId].sort();
    expect(await listed()).toEqual(kept);
    expect(((await rpc.request("listJobs", {})) as JobStatus[]).map((j) => j.jobId).sort()).toEqual(kept);
    expect(await inMetrics()).toEqual(kept);
    expect((await fetch(`${rest}/jobs/${ended[0]!.jobId}`)).status).toBe(404);
    // Canceling the streaming job ends a third job: the oldest ended one goes.
    await rpc.request("cancelJob", { jobId: running });
    ended.push(await waitForJob(rpc, running, () => {}, 100));
    expect(await listed()).toEqual([ended[3]!.jobId, running].sort());
    expect(await inMetrics()).toEqual([ended[3]!.jobId, running].sort());
  }, 90_000);

  test("ended jobs are dropped jobstore.expiration-time after their end, not before", async () => {
    const last = ended.slice(-2);
    const goneAt = new Map<string, number>();
    await waitFor("both remaining jobs to expire", async () => {
      const now = Date.now();
      const ids = await listed();
      for (const s of last) if (!ids.includes(s.jobId) && !goneAt.has(s.jobId)) goneAt.set(s.jobId, now);
      return goneAt.size === last.length;
    }, EXPIRATION_MS + 20_000, 100);
    for (const s of last) {
      const age = goneAt.get(s.jobId)! - s.endTime!;
      expect(age).toBeGreaterThanOrEqual(EXPIRATION_MS - 100);
      expect(age).toBeLessThan(EXPIRATION_MS + 5_000);
    }
    expect(await inMetrics()).toEqual([]);
    const m = parsePrometheus(await (await fetch(`${rest}/metrics`)).text());
    expect(m.get("tm_jobmanager_jobs")!.samples.reduce((a, s) => a + s.value, 0)).toBe(0);
  }, EXPIRATION_MS + 30_000);
});
