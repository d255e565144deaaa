// SIGTERM on a TaskManager, with real processes: it stops taking work, tells the JobManager, cancels its tasks and
// exits 0 within taskmanager.shutdown.grace-period; a second SIGTERM, or the end of the grace period, exits at once
// (code 1). The JobManager is SIGSTOPped to make a drain that cannot complete.
import { afterAll, describe, expect, test } from "bun:test";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { opsJobSource } from "./ops-job.ts";

const FAST = ["-D", "heartbeat.interval=200ms", "-D", "taskmanager.registration.max-backoff=200ms"];
const clients: RpcConnection[] = [];

afterAll(async () => {
  for (const c of clients) c.close();
  await Child.stopAll();
  removeTempDirs();
});

async function startJobManager(): Promise<{ jm: Child; rpcPort: number; rest: string }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", "heartbeat.timeout=3s", ...FAST]);
  const rpcPort = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const rest = `http://127.0.0.1:${(await jm.waitForOutput(/REST API started rest=127\.0\.0\.1:(\d+)/))[1]}`;
  return { jm, rpcPort, rest };
}

function startTaskManager(rpcPort: number, id: string, extra: string[] = []): Child {
  return new Child([BUN, "main.ts", "taskmanager", "-D", `jobmanager.rpc.port=${rpcPort}`, "-D", `taskmanager.resource-id=${id}`, "-D", "taskmanager.numberOfTaskSlots=2", ...FAST, ...extra]);
}

describe("TaskManager shutdown on SIGTERM", () => {
  test("drains: tells the JobManager, cancels its running tasks, exits 0; the job fails over", async () => {
    const { jm, rpcPort, rest } = await startJobManager();
    const tm = startTaskManager(rpcPort, "tm-drain", ["-D", "heartbeat.timeout=3s"]);
    await tm.waitForOutput(/registered at the JobManager/);
    const rpc = await connectClient("127.0.0.1", rpcPort);
    clients.push(rpc);
    const jobId = await submitJob(rpc, await prepareJob(writeJob(tempDir(), "ops.ts", opsJobSource("drain-demo")), [], 2));
    await waitFor("4 running tasks", async () => (await rpc.request("jobStatus", { jobId })).tasks.RUNNING === 4, 20_000);
    const t0 = Date.now();
    tm.kill("SIGTERM");
    const code = await tm.exited(10_000);
    if (code !== 0) throw new Error(`exit ${code}:\n${tm.stderr.slice(-3000)}`);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(tm.stderr).toMatch(/SIGTERM: shutting down/);
    expect(tm.stderr).toMatch(/shutting down: taking no new tasks, telling the JobManager, canceling tasks tasks=4/);
    expect(tm.stderr).toMatch(/drained: every task has ended and the JobManager knows/);
    // The JobManager took the goodbye (not a heartbeat time-out) and failed the tasks over at once.
    await jm.waitForOutput(/TaskManager disconnected; its slots are removed id=tm-drain reason=TaskManager is shutting down \(SIGTERM\)/, 2_000);
    expect(jm.stderr).not.toMatch(/TaskManager lost/);
    expect((await (await fetch(`${rest}/taskmanagers`)).json()).taskmanagers).toEqual([]);
    const s = await rpc.request("jobStatus", { jobId });
    expect(["RESTARTING", "SCHEDULING"]).toContain(s.state);
    expect(s.error?.message).toContain("TaskManager tm-drain was lost: TaskManager is shutting down (SIGTERM)");
    await rpc.request("cancelJob", { jobId });
    jm.kill("SIGTERM");
    expect(await jm.exited(10_000)).toBe(0);
  }, 40_000);

  test("a second SIGTERM exits at once; the end of the grace period exits too (code 1 both)", async () => {
    const { jm, rpcPort } = await startJobManager();
    // The JobManager will be stopped: these TaskManagers must not give up on it by heartbeat meanwhile.
    const patient = startTaskManager(rpcPort, "tm-patient", ["-D", "heartbeat.timeout=60s", "-D", "taskmanager.shutdown.grace-period=30s"]);
    const hasty = startTaskManager(rpcPort, "tm-hasty", ["-D", "heartbeat.timeout=60s", "-D", "taskmanager.shutdown.grace-period=1s"]);
    await Promise.all([patient.waitForOutput(/registered at the JobManager/), hasty.waitForOutput(/registered at the JobManager/)]);
    jm.kill("SIGSTOP"); // the goodbye will get no answer: the drain cannot complete
    try {
      patient.kill("SIGTERM");
      hasty.kill("SIGTERM");
      const t0 = Date.now();
      await patient.waitForOutput(/SIGTERM: shutting down/, 5_000);
      // The grace period of 1 s ends: exit 1, saying so.
      expect(await hasty.exited(5_000)).toBe(1);
      expect(Date.now() - t0).toBeLessThan(3_000);
      expect(hasty.stderr).toMatch(/shutdown grace period ended before the drain completed gracePeriodMs=1000/);
      // The 30 s one still waits for the JobManager ...
      await Bun.sleep(300);
      expect(patient.proc.exitCode).toBeNull();
      // ... until a second SIGTERM.
      const t1 = Date.now();
      patient.kill("SIGTERM");
      expect(await patient.exited(5_000)).toBe(1);
      expect(Date.now() - t1).toBeLessThan(1_500);
      expect(patient.stderr).toMatch(/SIGTERM again: exiting at once/);
    } finally {
      jm.kill("SIGCONT");
    }
  }, 40_000);
});
