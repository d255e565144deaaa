// File HA with real processes (`bun main.ts`) on 127.0.0.1: a JobManager with high-availability.type = file is
// SIGKILLed mid-job and started again on the same port and storage dir; the job keeps its id, is restored from
// its latest completed checkpoint and finishes with exactly-once output. Also the bad inputs: a second JobManager
// on a held lock, corrupt or foreign job records, a storage dir that cannot be written.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { BUN, Child, committedLines, keyedCountsDiscrepancy, removeTempDirs, tempDir, waitFor, writeJob, keyedJob, KEYS } from "./helpers.ts";
import { freePort } from "./ha-helpers.ts";


const FAST = ["-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=2s", "-D", "taskmanager.registration.max-backoff=300ms"];
const clients: RpcConnection[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

function haArgs(storage: string, port: number, extra: string[] = []): string[] {
  return ["-D", `jobmanager.rpc.port=${port}`, "-D", "rest.port=0", "-D", "high-availability.type=file", "-D", `high-availability.storageDir=${storage}`, ...FAST, ...extra];
}

function startJobManager(storage: string, port: number, extra: string[] = []): Child {
  return new Child([BUN, "main.ts", "jobmanager", ...haArgs(storage, port, ["-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=20", "-D", "restart-strategy.fixed-delay.delay=200ms", ...extra])]);
}

function startTaskManager(port: number, id: string, extra: string[] = []): Child {
  return new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...FAST, ...extra]);
}

async function client(port: number): Promise<RpcConnection> {
  const c = await connectClient("127.0.0.1", port);
  clients.push(c);
  return c;
}

/** The job's status, reconnecting when the JobManager went away. */
async function statusOf(port: number, jobId: string, conn: { c: RpcConnection | null }): Promise<JobStatus | null> {
  try {
    conn.c ??= await client(port);
    return await conn.c.request("jobStatus", { jobId }, 2000);
  } catch {
    conn.c?.close();
    conn.c = null;
    return null;
  }
}

describe("file HA (real processes)", () => {
  test("SIGKILL the JobManager mid-job and start it again: the job keeps its id, resumes from its latest checkpoint, output exact; a corrupt and a foreign job record fail alone", async () => {
    const dir = tempDir("tm-ha-file-");
    const storage = path.join(dir, "ha");
    const port = await freePort();
    // Grace 0 (the JobManager's value governs): the TaskManagers cancel their tasks when the JobManager goes, and
    // the recovered job is restored from its checkpoint.
    const noGrace = ["-D", "taskmanager.jobmanager-loss.grace-period=0"];
    let jm = startJobManager(storage, port, noGrace);
    await jm.waitForOutput(/JobManager started .*epoch=1/, 30_000);
    const tms = ["tm-a", "tm-b"].map((id) => startTaskManager(port, id));
    await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));
    const N = 150_000;
    const out = path.join(dir, "out");
    const job = writeJob(dir, "job.ts", keyedJob(out, N, 10));
    const jobId = await submitJob(await client(port), await prepareJob(job, [], 2));
    const conn: { c: RpcConnection | null } = { c: null };
    const before = await waitFor("two checkpoints", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "RUNNING" && s.checkpoints.completed >= 2 && s;
    }, 60_000, 50);
    expect(before.state).toBe("RUNNING");
    jm.kill("SIGKILL");
    await jm.exited();
    // Meanwhile, two records that cannot be recovered: a truncated one and one naming another job.
    const jobsDir = path.join(storage, "default", "jobs");
    const corrupt = "c".repeat(32), foreign = "f".repeat(32);
    fs.mkdirSync(path.join(jobsDir, corrupt));
    fs.writeFileSync(path.join(jobsDir, corrupt, "job.json"), fs.readFileSync(path.join(jobsDir, jobId, "job.json"), "utf8").slice(0, 100));
    fs.mkdirSync(path.join(jobsDir, foreign));
    fs.copyFileSync(path.join(jobsDir, jobId, "job.json"), path.join(jobsDir, foreign, "job.json"));
    const pointer = JSON.parse(fs.readFileSync(path.join(jobsDir, jobId, "checkpoint.json"), "utf8"));
    const counter = Number(fs.readFileSync(path.join(jobsDir, jobId, "counter"), "utf8"));
    expect(counter).toBeGreaterThanOrEqual(pointer.checkpointId);

    jm = startJobManager(storage, port, noGrace);
    await jm.waitForOutput(/JobManager started .*epoch=2/, 30_000);
    expect(jm.stderr).toMatch(new RegExp(`recovered a job from the HA store job=${jobId}.*from=${pointer.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
    const end = await waitFor("the recovered job FINISHED", async () => {
      const s = await statusOf(port, jobId, conn);
      if (s && (s.state === "FAILED" || s.state === "CANCELED")) throw new Error(`job ${s.state}: ${s.error?.message}\n${jm.stderr.slice(-3000)}`);
      return s && s.state === "FINISHED" && s;
    }, 120_000, 100);
    expect(end.jobId).toBe(jobId);
    expect(end.checkpoints.restoredFrom).toBe(pointer.path);
    // Restored, not adopted: one restart, the old attempt's tasks canceled on the TaskManagers.
    expect({ restarts: end.restarts, adoptions: end.adoptions }).toEqual({ restarts: 1, adoptions: 0 });
    for (const t of tms) expect(t.stderr).toMatch(/lost the JobManager; canceling its tasks/);
    // Checkpoint ids go on above every id the first leader used.
    expect(Math.min(...end.checkpoints.history.map((h) => h.id))).toBeGreaterThan(counter);
    expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });

    const jobs = await conn.c!.request("listJobs", {});
    const broken = Object.fromEntries(jobs.filter((j) => j.jobId !== jobId).map((j) => [j.jobId, j]));
    expect(broken[corrupt]?.state).toBe("FAILED");
    expect(broken[corrupt]?.error?.message).toContain(path.join(jobsDir, corrupt, "job.json"));
    expect(broken[corrupt]?.error?.message).toContain("truncated or corrupt");
    expect(broken[foreign]?.state).toBe("FAILED");
    expect(broken[foreign]?.error?.message).toContain(`names job "${jobId}"`);
    // Moved aside (failed once, not at every start); the finished job left the store.
    expect(fs.readdirSync(jobsDir)).toEqual([]);
    expect(fs.readdirSync(path.join(storage, "default", "jobs-broken")).length).toBe(2);
  }, 240_000);

  test("adoption: JobManager SIGKILL + restart within the grace period: no task restarts, source counters never go back, checkpoints resume, output exact", async () => {
    const dir = tempDir("tm-ha-adopt-");
    const storage = path.join(dir, "ha");
    const port = await freePort();
    let jm = startJobManager(storage, port);
    await jm.waitForOutput(/JobManager started .*epoch=1/, 30_000);
    const tms = ["tm-a", "tm-b"].map((id) => startTaskManager(port, id));
    await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));
    const N = 200_000;
    const out = path.join(dir, "out");
    const jobId = await submitJob(await client(port), await prepareJob(writeJob(dir, "job.ts", keyedJob(out, N, 10)), [], 2));
    const conn: { c: RpcConnection | null } = { c: null };
    const sourceCounts = (s: JobStatus) => s.vertices[0]!.subtasks.map((t) => t.metrics.recordsOut);
    const before = await waitFor("two checkpoints", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "RUNNING" && s.checkpoints.completed >= 2 && sourceCounts(s).every((n) => n > 0) && s;
    }, 60_000, 50);
    const deployed = tms.map((t) => t.stderr.match(/deploying task/g)?.length ?? 0);
    jm.kill("SIGKILL");
    await jm.exited();
    const counter = Number(fs.readFileSync(path.join(storage, "default", "jobs", jobId, "counter"), "utf8"));
    await Promise.all(tms.map((t) => t.waitForOutput(/lost the JobManager; keeping \d+ task\(s\) running for up to 30000 ms/, 10_000)));

    jm = startJobManager(storage, port);
    await jm.waitForOutput(/adopted the running attempt/, 60_000);
    const after = await waitFor("the adopted job checkpointing again with every task's counters reported", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "RUNNING" && s.checkpoints.completed >= 1 && sourceCounts(s).every((n) => n > 0) && s;
    }, 60_000, 50);
    expect(after.adoptions).toBe(1);
    expect(after.restarts).toBe(0);
    // The same tasks went on: their counters are above what they were before the failover.
    sourceCounts(after).forEach((n, i) => expect(n).toBeGreaterThanOrEqual(sourceCounts(before)[i]!));
    expect(Math.min(...after.checkpoints.history.map((h) => h.id))).toBeGreaterThan(counter);
    const end = await waitFor("FINISHED", async () => {
      const s = await statusOf(port, jobId, conn);
      if (s && (s.state === "FAILED" || s.state === "CANCELED")) throw new Error(`job ${s.state}: ${s.error?.message}`);
      return s && s.state === "FINISHED" && s;
    }, 120_000, 100);
    expect(end.restarts).toBe(0);
    // No task was deployed again, none canceled.
    expect(tms.map((t) => t.stderr.match(/deploying task/g)?.length ?? 0)).toEqual(deployed);
    for (const t of tms) expect(t.stderr).not.toMatch(/state=CANCELED|canceling it/);
    expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  }, 240_000);

  test("after a failover (adopted): the REST API, the restart strategy, a savepoint and cancel work as before it; the canceled job leaves the store", async () => {
    const dir = tempDir("tm-ha-after-");
    const storage = path.join(dir, "ha");
    const port = await freePort();
    let jm = startJobManager(storage, port);
    await jm.waitForOutput(/JobManager started .*epoch=1/, 30_000);
    const tms = ["tm-a", "tm-b", "tm-c"].map((id) => startTaskManager(port, id));
    await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));
    const job = writeJob(dir, "endless.ts", `
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env) => {
        env.enableCheckpointing(300);
        env.fromSequence(1, 1e12).map((x) => { if (x % 100 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
          .keyBy((x) => x % 7).sum(0).addSink(() => {});
      };`);
    const jobId = await submitJob(await client(port), await prepareJob(job, [], 2));
    const conn: { c: RpcConnection | null } = { c: null };
    await waitFor("two checkpoints", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "RUNNING" && s.checkpoints.completed >= 2 && s;
    }, 60_000, 50);
    jm.kill("SIGKILL");
    await jm.exited();
    jm = startJobManager(storage, port, ["-D", "rest.port=0"]);
    await jm.waitForOutput(/adopted the running attempt/, 60_000);
    const restPort = Number((await jm.waitForOutput(/REST API started rest=127\.0\.0\.1:(\d+)/))[1]);
    const rest = await (await fetch(`http://127.0.0.1:${restPort}/jobs/${jobId}`)).json();
    expect(rest.state).toBe("RUNNING");
    expect((await (await fetch(`http://127.0.0.1:${restPort}/overview`)).json())["high-availability"]).toMatchObject({ type: "file", epoch: 2 });

    // A TaskManager of the adopted attempt dies: the restart strategy restores the job on the others.
    const adopted = await waitFor("the status from the new JobManager", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.tasks.RUNNING === 4 && s;
    }, 30_000, 50);
    const victim = adopted.vertices[0]!.subtasks[0]!.taskManager;
    tms[["tm-a", "tm-b", "tm-c"].indexOf(victim)]!.kill("SIGKILL");
    const restarted = await waitFor("RUNNING again after the restart", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "RUNNING" && s.restarts === 1 && s.tasks.RUNNING === 4 && s;
    }, 60_000, 50);
    expect(restarted.adoptions).toBe(1);
    expect(restarted.vertices.flatMap((v) => v.subtasks.map((t) => t.taskManager))).not.toContain(victim);
    await waitFor("a checkpoint of the new attempt", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.checkpoints.completed > restarted.checkpoints.completed;
    }, 60_000, 50);

    const sp = await conn.c!.request("triggerSavepoint", { jobId, dir: path.join(dir, "savepoints") }, 30_000);
    expect(fs.existsSync(sp.path)).toBe(true);
    await conn.c!.request("cancelJob", { jobId });
    await waitFor("CANCELED", async () => (await statusOf(port, jobId, conn))?.state === "CANCELED", 30_000, 50);
    await waitFor("the job gone from the HA store", () => fs.readdirSync(path.join(storage, "default", "jobs")).length === 0, 10_000, 50);
  }, 240_000);

  test("`submit` waiting for its job follows the JobManager through a failover and exits 0 when the job finishes", async () => {
    const dir = tempDir("tm-ha-submit-");
    const storage = path.join(dir, "ha");
    const port = await freePort();
    let jm = startJobManager(storage, port);
    await jm.waitForOutput(/JobManager started .*epoch=1/, 30_000);
    const tms = ["tm-a", "tm-b"].map((id) => startTaskManager(port, id));
    await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));
    const N = 100_000;
    const out = path.join(dir, "out");
    const submit = new Child([BUN, "main.ts", "submit", "-p", "2", ...haArgs(storage, port), writeJob(dir, "job.ts", keyedJob(out, N, 10))]);
    const conn: { c: RpcConnection | null } = { c: null };
    await waitFor("the job RUNNING with a checkpoint", async () => {
      const jobs = await (conn.c ??= await client(port)).request("listJobs", {});
      return jobs[0]?.state === "RUNNING" && jobs[0].checkpoints.completed >= 1;
    }, 60_000, 50);
    jm.kill("SIGKILL");
    await jm.exited();
    jm = startJobManager(storage, port);
    expect(await submit.exited(120_000)).toBe(0);
    expect(submit.stderr).toMatch(/lost the JobManager \(.*\); waiting up to 120 s for the next one \(high availability\)/);
    expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  }, 180_000);

  test("the HA storage failing mid-job: the next restart cannot store its attempt, and the job fails saying why", async () => {
    const dir = tempDir("tm-ha-broken-");
    const storage = path.join(dir, "ha");
    const port = await freePort();
    const jm = startJobManager(storage, port);
    await jm.waitForOutput(/JobManager started .*epoch=1/, 30_000);
    const tms = ["tm-a", "tm-b"].map((id) => startTaskManager(port, id));
    await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));
    const job = writeJob(dir, "endless.ts", `export default (env) => { env.enableCheckpointing(300); env.fromSequence(1, 1e12).keyBy((x) => x % 7).sum(0).addSink(() => {}); };`);
    const jobId = await submitJob(await client(port), await prepareJob(job, [], 2));
    const conn: { c: RpcConnection | null } = { c: null };
    const running = await waitFor("a checkpoint", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "RUNNING" && s.checkpoints.completed >= 1 && s;
    }, 60_000, 50);
    // The job's directory in the store becomes a file: every write there fails (EEXIST on mkdir), even as root.
    const jobDir = path.join(storage, "default", "jobs", jobId);
    fs.rmSync(jobDir, { recursive: true });
    fs.writeFileSync(jobDir, "");
    const victim = running.vertices[0]!.subtasks[0]!.taskManager;
    tms[["tm-a", "tm-b"].indexOf(victim)]!.kill("SIGKILL");
    const failed = await waitFor("FAILED", async () => {
      const s = await statusOf(port, jobId, conn);
      return s && s.state === "FAILED" && s;
    }, 60_000, 50);
    expect(failed.error?.message).toMatch(new RegExp(`cannot store attempt 1 in the HA services: (EEXIST|ENOTDIR).*${jobDir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  }, 120_000);

  test("a second JobManager on the same storage dir is refused while the first lives; another host's lock only once stale; a storage dir that cannot be written exits 4", async () => {
    const dir = tempDir("tm-ha-lock-");
    const storage = path.join(dir, "ha");
    const first = startJobManager(storage, await freePort());
    await first.waitForOutput(/JobManager started .*epoch=1/, 30_000);
    const second = startJobManager(storage, await freePort());
    expect(await second.exited(30_000)).toBe(1);
    expect(second.stderr).toMatch(new RegExp(`another JobManager \\(pid ${first.pid}, epoch 1\\) holds the lock file ${path.join(storage, "default", "lock")}`));
    expect(first.proc.exitCode).toBeNull();

    // A lock of another host (a rescheduled pod on a shared mount): while its owner renews it, the new JobManager
    // waits and then refuses; once nobody renews it, it is taken over with the next epoch.
    const lockOf = (name: string) => {
      const d = path.join(dir, name, "default");
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, "lock"), JSON.stringify({ pid: 1, procStart: null, host: "some-other-host", epoch: 7, startedAt: 0 }));
      return path.join(d, "lock");
    };
    // The renewed and the abandoned lock run side by side: each waits about the stale time (10 s) on its own.
    const renewed = lockOf("renewed");
    lockOf("abandoned");
    const toucher = setInterval(() => fs.utimesSync(renewed, new Date(), new Date()), 300);
    try {
      const startedAt = Date.now();
      const refused = startJobManager(path.join(dir, "renewed"), await freePort());
      const taker = startJobManager(path.join(dir, "abandoned"), await freePort());
      await refused.waitForOutput(/waiting for the lock file .* of a JobManager on host some-other-host \(pid 1, epoch 7\) to go stale/, 30_000);
      await taker.waitForOutput(/JobManager started .*epoch=8/, 40_000);
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(9_000);
      expect(await refused.exited(40_000)).toBe(1);
      expect(refused.stderr).toContain("is still being renewed: another JobManager uses high-availability.storageDir");
    } finally {
      clearInterval(toucher);
    }

    const noDir = new Child([BUN, "main.ts", "jobmanager", "-D", "high-availability.type=file", "-D", "jobmanager.rpc.port=0"]);
    expect(await noDir.exited(30_000)).toBe(2);
    expect(noDir.stderr).toContain("high-availability.type = file needs high-availability.storageDir");

    const file = path.join(dir, "a-file");
    fs.writeFileSync(file, "");
    const bad = startJobManager(path.join(file, "ha"), await freePort());
    expect(await bad.exited(30_000)).toBe(4);
    expect(bad.stderr).toContain(`high-availability.storageDir: cannot create the directory ${path.join(file, "ha")}`);
  }, 90_000);
});
