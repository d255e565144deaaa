// Exactly-once end to end with real processes: a JobManager and three TaskManagers run a keyed, stateful job
// that writes through the two-phase-commit file sink; TaskManagers are killed with SIGKILL mid-job (twice, at
// seeded random moments) or a task throws once; the job restarts from its latest checkpoint and the committed
// output equals what an uninterrupted run would write: every (key, count) exactly once. Savepoints restore at
// another parallelism with the same result.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { type JobStatus, TERMINAL_JOB_STATES } from "../src/rpc/messages.ts";
import { BUN, Child, committedLines, FAST_RECOVERY, removeTempDirs, rng, startProcessCluster, tempDir, waitFor, writeJob } from "./helpers.ts";

const KEYS = 37;
const clients: RpcConnection[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

async function startCluster(dir: string, taskManagers: number, extra: string[] = []): Promise<Awaited<ReturnType<typeof startProcessCluster>>> {
  const c = await startProcessCluster(dir, taskManagers, [...FAST_RECOVERY, ...extra]);
  clients.push(c.rpc);
  return c;
}

/**
 * The job: numbers 1..n (throttled so that it runs a few seconds), keyed by n % KEYS, a KeyedProcessFunction that
 * counts per key in ValueState and emits [key, count]: the output set does not depend on how records interleave,
 * so it is exactly {(k, 1..n_k)} for an exactly-once run, whatever failed in between.
 */
function jobSource(opts: { out: string; n: number; backend: "heap" | "sqlite"; throwOnceMarker?: string; throwAfter?: string; pauseEvery?: number }): string {
  return `
    import * as fs from "node:fs";
    import { FileSink, ValueStateDescriptor } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(150).setStateBackend(${JSON.stringify(opts.backend)});
      env.fromSequence(1, ${opts.n})
        .map((x) => { if (x % ${opts.pauseEvery ?? 2000} === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .keyBy((x) => x % ${KEYS})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
          processElement(x, ctx, out) {
            ${opts.throwOnceMarker ? `if (x >= ${Math.floor(opts.n / 2)} && (x & 63) === 0 && fs.existsSync(${JSON.stringify(opts.throwAfter)}) && !fs.existsSync(${JSON.stringify(opts.throwOnceMarker)})) { fs.writeFileSync(${JSON.stringify(opts.throwOnceMarker)}, "thrown"); throw new Error("injected failure at " + x); }` : ""}
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(opts.out)}).build());
    };`;
}

/** Every (key, count) of an uninterrupted run, computed directly. */
function expectExactlyOnce(lines: string[], n: number): void {
  const perKey = new Array<number>(KEYS).fill(0);
  for (let x = 1; x <= n; x++) perKey[x % KEYS]!++;
  const seen = new Set<string>();
  const dups: string[] = [];
  const bad: string[] = [];
  for (const l of lines) {
    const m = /^\((\d+),(\d+)\)$/.exec(l);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > perKey[Number(m[1])]!) bad.push(l);
    else if (seen.has(l)) dups.push(l);
    else seen.add(l);
  }
  expect({ bad: bad.slice(0, 5), duplicates: dups.length, exampleDuplicates: dups.slice(0, 5) }).toEqual({ bad: [], duplicates: 0, exampleDuplicates: [] });
  expect(seen.size).toBe(n); // with no duplicate and nothing out of range, n distinct lines are all of them
}

function runningWithCheckpoint(rpc: RpcConnection, jobId: string): Promise<unknown> {
  return waitFor("the job running with a checkpoint", async () => {
    const s = await rpc.request("jobStatus", { jobId });
    return s.state === "RUNNING" && s.checkpoints.completed > 0;
  }, 30_000);
}

/** `taskmanager cancel --with-savepoint` as a user runs it: exits 0, the job ends CANCELED; returns the savepoint's path. */
async function cancelWithSavepoint(rpc: RpcConnection, port: number, jobId: string, spDir: string): Promise<string> {
  const cancel = new Child([BUN, "main.ts", "cancel", jobId, `--with-savepoint=${spDir}`, "-m", `127.0.0.1:${port}`]);
  const cancelCode = await cancel.exited();
  expect({ cancelCode, stderr: cancelCode === 0 ? "" : cancel.stderr }).toEqual({ cancelCode: 0, stderr: "" });
  expect((await waitForJob(rpc, jobId, () => {}, 100)).state).toBe("CANCELED");
  return /Savepoint completed\. Path: (.+)/.exec(cancel.stdout)![1]!.trim();
}

function taskManagersRunning(s: JobStatus): string[] {
  return [...new Set(s.vertices.flatMap((v) => v.subtasks.filter((t) => t.state === "RUNNING").map((t) => t.taskManager)))];
}

describe("exactly-once recovery (real processes)", () => {
  for (const backend of ["heap", "sqlite"] as const) {
    test(`${backend} backend: two TaskManagers SIGKILLed mid-job; committed output is exactly once`, async () => {
      const dir = tempDir(`tm-recovery-${backend}-`);
      const { rpc, jm, tms, startTm } = await startCluster(dir, 3);
      const out = path.join(dir, "out");
      const N = 400_000;
      const job = writeJob(dir, "job.ts", jobSource({ out, n: N, backend, pauseEvery: 50 }));
      const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
      const random = rng(backend === "heap" ? 11 : 12);
      const byId = new Map(tms.map((tm, i) => [`tm-${i}`, tm]));
      for (let kill = 0; kill < 2; kill++) {
        // Wait until the job runs and has completed a checkpoint in this attempt, then a random moment more.
        const before = (await rpc.request("jobStatus", { jobId })).checkpoints.completed;
        await waitFor("a running job with a new checkpoint", async () => {
          const s = await rpc.request("jobStatus", { jobId });
          return s.state === "RUNNING" && s.tasks.RUNNING === s.vertices.reduce((a, v) => a + v.parallelism, 0) && s.checkpoints.completed > before && s;
        }, 30_000).catch(async (err) => {
          throw new Error(`${err.message}; job status: ${JSON.stringify(await rpc.request("jobStatus", { jobId }))}\nJobManager: ${jm.stderr.slice(-3000)}`);
        });
        await Bun.sleep(50 + Math.floor(random() * 300));
        const s = await rpc.request("jobStatus", { jobId });
        if (s.state !== "RUNNING") break; // finished early: nothing left to kill in
        const victims = taskManagersRunning(s);
        if (victims.length === 0) break; // every task is finishing: nothing left to kill in
        const victimId = victims[Math.floor(random() * victims.length)]!;
        byId.get(victimId)!.kill("SIGKILL");
        byId.delete(victimId);
        // A replacement TaskManager, as a supervisor (systemd, Kubernetes) would start.
        const fresh = `tm-r${kill}`;
        const tm = startTm(fresh);
        byId.set(fresh, tm);
        // The JobManager noticed the loss. Else the next round could see this attempt still RUNNING (a checkpoint
        // acknowledged just before the kill completes after it) and pick the TaskManager already killed.
        await waitFor("the restart after the kill", async () => {
          const now = await rpc.request("jobStatus", { jobId });
          return now.restarts > s.restarts || TERMINAL_JOB_STATES.has(now.state);
        }, 30_000, 50);
      }
      const final = await waitForJob(rpc, jobId, () => {}, 100);
      expect(final.error?.message).toBeUndefined();
      expect(final.state).toBe("FINISHED");
      expect(final.restarts).toBeGreaterThanOrEqual(1);
      expectExactlyOnce(committedLines(out), N);
      // Nothing is left pending or in progress once the job has finished.
      // Only the fencing marker of the last attempt stays (older attempts' markers are removed by newer ones).
      expect(fs.readdirSync(out).filter((f) => f.startsWith("."))).toEqual([`.attempt-${jobId}-${final.restarts}`]);
    }, 120_000);
  }

  test("a task that throws once: the job restarts from its checkpoint and the output is exactly once", async () => {
    const dir = tempDir("tm-recovery-throw-");
    const { rpc } = await startCluster(dir, 2);
    const out = path.join(dir, "out");
    const marker = path.join(dir, "thrown");
    const N = 400_000;
    // It throws in the second half of the input, once the test has seen a completed checkpoint (on a quiet machine
    // the middle of the input can come before the first checkpoint completes).
    const go = path.join(dir, "go");
    const job = writeJob(dir, "job.ts", jobSource({ out, n: N, backend: "heap", throwOnceMarker: marker, throwAfter: go, pauseEvery: 200 }));
    const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
    await waitFor("a completed checkpoint", async () => (await rpc.request("jobStatus", { jobId })).checkpoints.completed > 0, 30_000, 20);
    fs.writeFileSync(go, "1");
    const final = await waitForJob(rpc, jobId, () => {}, 100);
    expect(final.state).toBe("FINISHED");
    expect(fs.readFileSync(marker, "utf8")).toBe("thrown");
    expect(final.restarts).toBe(1);
    // It restarted from a checkpoint taken before the failure, not from the beginning.
    expect(final.checkpoints.restoredFrom).toMatch(/chk-\d+\/_metadata$/);
    expectExactlyOnce(committedLines(out), N);
  }, 90_000);

  test("savepoint, cancel, restore at parallelism 2 -> 4: the same output as one uninterrupted run", async () => {
    const dir = tempDir("tm-savepoint-");
    const { port, rpc } = await startCluster(dir, 2);
    const out = path.join(dir, "out");
    const N = 300_000;
    const job = writeJob(dir, "job.ts", jobSource({ out, n: N, backend: "sqlite", pauseEvery: 50 }));
    const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
    await runningWithCheckpoint(rpc, jobId);
    const spPath = await cancelWithSavepoint(rpc, port, jobId, path.join(dir, "savepoints"));
    expect(fs.existsSync(path.join(spPath, "_metadata"))).toBe(true);
    const partial = committedLines(out).length;
    expect(partial).toBeLessThan(N); // it was stopped part-way

    const resume = new Child([BUN, "main.ts", "submit", "-p", "4", "-s", spPath, "-m", `127.0.0.1:${port}`, job]);
    const resumeCode = await resume.exited(90_000);
    expect({ resumeCode, stderr: resumeCode === 0 ? "" : resume.stderr }).toEqual({ resumeCode: 0, stderr: "" });
    const list = await rpc.request("listJobs", {});
    const resumed = list.find((j) => j.jobId !== jobId)!;
    expect(resumed.state).toBe("FINISHED");
    expect(resumed.vertices.find((v) => v.name.includes("Keyed Process"))!.parallelism).toBe(4);
    expect(resumed.checkpoints.restoredFrom).toBe(path.join(spPath, "_metadata"));
    // The two restored source splits were split for four subtasks: every new source subtask had records to read
    // (none finished at once, which would have stopped the job's checkpoints).
    const sources = resumed.vertices.find((v) => v.name.includes("Sequence Source"))!;
    expect(sources.subtasks.map((t) => t.metrics.recordsIn > 0)).toEqual([true, true, true, true]);
    expectExactlyOnce(committedLines(out), N);

    // A truncated copy of the savepoint is refused at submission, naming the file.
    const broken = path.join(dir, "broken-savepoint");
    fs.cpSync(spPath, broken, { recursive: true });
    const meta = path.join(broken, "_metadata");
    fs.writeFileSync(meta, fs.readFileSync(meta, "utf8").slice(0, 40));
    const refused = new Child([BUN, "main.ts", "submit", "-s", broken, "-m", `127.0.0.1:${port}`, job]);
    expect(await refused.exited(60_000)).toBe(1);
    expect(refused.stderr).toContain(`checkpoint metadata ${meta} is truncated or corrupt`);
  }, 120_000);

  test("a keyBy chained at parallelism 1: savepoint at 1, restore at 2, savepoint at 2, restore at 1; the same output as one uninterrupted run", async () => {
    const dir = tempDir("tm-savepoint-chain-");
    const { port, rpc } = await startCluster(dir, 2);
    const out = path.join(dir, "out");
    const N = 240_000;
    const job = writeJob(dir, "job.ts", jobSource({ out, n: N, backend: "heap", pauseEvery: 40 }));
    const spDir = path.join(dir, "savepoints");
    const chains = async (jobId: string) => (await rpc.request("jobStatus", { jobId })).vertices.map((v) => [v.name.replace(` (${out})`, ""), v.parallelism]);

    // p=1: one task, the keyed process function in the source's chain.
    const first = await submitJob(rpc, await prepareJob(job, [], 1));
    await runningWithCheckpoint(rpc, first);
    expect(await chains(first)).toEqual([["Sequence Source -> Map -> Keyed Process -> File Sink", 1]]);
    const sp1 = await cancelWithSavepoint(rpc, port, first, spDir);
    const afterFirst = committedLines(out).length;

    // p=2 from it: the keyBy is an exchange again, the state split by key group.
    const second = await submitJob(rpc, { ...(await prepareJob(job, [], 2)), fromSavepoint: sp1 });
    await runningWithCheckpoint(rpc, second);
    expect(await chains(second)).toEqual([["Sequence Source -> Map", 2], ["Keyed Process -> File Sink", 2]]);
    await waitFor("the second run to commit output", () => committedLines(out).length > afterFirst, 30_000);
    const sp2 = await cancelWithSavepoint(rpc, port, second, spDir);

    // p=1 again, to the end.
    const third = await submitJob(rpc, { ...(await prepareJob(job, [], 1)), fromSavepoint: sp2 });
    const done = await waitForJob(rpc, third, () => {}, 100);
    expect({ state: done.state, error: done.error?.message ?? "" }).toEqual({ state: "FINISHED", error: "" });
    expect(done.checkpoints.restoredFrom).toBe(path.join(sp2, "_metadata"));
    expectExactlyOnce(committedLines(out), N);
  }, 150_000);

  test("too few slots left after a TaskManager is lost: the job waits up to the slot timeout, then fails saying so", async () => {
    const dir = tempDir("tm-recovery-slots-");
    const { rpc, tms } = await startCluster(dir, 2, ["-D", "jobmanager.slot-request.timeout=1500ms"]);
    const job = writeJob(dir, "job.ts", jobSource({ out: path.join(dir, "out"), n: 2_000_000, backend: "heap", pauseEvery: 50 }));
    const jobId = await submitJob(rpc, await prepareJob(job, [], 4)); // needs all 4 slots
    await waitFor("all tasks running", async () => (await rpc.request("jobStatus", { jobId })).tasks.RUNNING === 8, 30_000);
    tms[1]!.kill("SIGKILL");
    const t0 = Date.now();
    const final = await waitForJob(rpc, jobId, () => {}, 100);
    expect(final.state).toBe("FAILED");
    expect(final.error?.message).toMatch(/could not get 4 slots within 1500 ms to restart the job: the cluster has 2 free of 2 slots on 1 TaskManager/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
  }, 60_000);
});
