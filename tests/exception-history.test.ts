// Failures and record counts over restarts, and the operator's REST views of each process, against a cluster of real processes (`bun main.ts` JobManager and
// TaskManagers on 127.0.0.1, jobs through the `submit` CLI): each failure stays in the job's exception history
// (REST /jobs/<id>/exceptions, Flink's shape), a RESTARTING job says what it waits for, and the record counts of
// the client's final line and of the REST API add up over the attempts instead of starting again from zero.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as path from "node:path";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=1s", "-D", "taskmanager.registration.max-backoff=200ms"];

afterEach(() => Child.stopAll());
afterAll(removeTempDirs);

async function startJobManager(dir: string, extra: string[] = []): Promise<{ jm: Child; port: number; rest: string }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", `jobmanager.storage.dir=${dir}/jm`, ...FAST, ...extra]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const rest = `http://127.0.0.1:${(await jm.waitForOutput(/REST API started rest=127\.0\.0\.1:(\d+)/))[1]}`;
  return { jm, port, rest };
}

async function startTaskManager(jmPort: number, id: string, slots = 2): Promise<Child> {
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${jmPort}`, "-D", `taskmanager.numberOfTaskSlots=${slots}`, "-D", `taskmanager.resource-id=${id}`, ...FAST]);
  await tm.waitForOutput(/registered at the JobManager/);
  return tm;
}

async function get(rest: string, p: string): Promise<any> {
  const r = await fetch(rest + p);
  const body = await r.json();
  if (r.status !== 200) throw new Error(`GET ${p}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

async function onlyJobId(rest: string): Promise<string> {
  return waitFor("the submitted job", async () => (await get(rest, "/jobs")).jobs[0]?.id as string | undefined, 20_000);
}

describe("exception history and record counts over restarts", () => {
  test("a job whose map throws at record 500 on attempt 0 only: the failure is in the history, RESTARTING shows the delay left and the counts so far, the final line adds up both attempts", async () => {
    const dir = tempDir("tm-exc-");
    const { port, rest } = await startJobManager(dir, ["-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=2", "-D", "restart-strategy.fixed-delay.delay=2s"]);
    await startTaskManager(port, "tm-exc");
    // One chained task (source, map, sink at parallelism 1): the failing task is the one that read the records.
    // The marker file makes only the first attempt throw.
    const marker = path.join(dir, "thrown-once");
    const job = writeJob(dir, "throws-once.ts", `
      import * as fs from "node:fs";
      export default (env) => {
        env.setJobName("throws-once");
        env.fromSequence(1, 2000).name("Numbers")
          .map((n) => {
            if (n === 500 && !fs.existsSync(${JSON.stringify(marker)})) {
              fs.writeFileSync(${JSON.stringify(marker)}, "x");
              throw new Error("boom at record 500");
            }
            return n;
          }).name("Exploder")
          .addSink(() => {}).name("Discard");
      };`);
    const submit = new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, "-p", "1", job]);
    const jobId = await onlyJobId(rest);
    const restarting = await waitFor("the job RESTARTING with its restart delay", async () => {
      const j = await get(rest, `/jobs/${jobId}`);
      return j.state === "RESTARTING" && j.waiting?.reason === "restart-delay" && j;
    }, 20_000, 20);
    expect(restarting.waiting["delay-left-ms"]).toBeGreaterThan(0);
    expect(restarting.waiting["delay-left-ms"]).toBeLessThanOrEqual(2000);
    expect(restarting.waiting.message).toMatch(/restarting in \d+\.\d s/);
    // The failed attempt's counts, not 0: exactly the 500 records the source had read when the map threw.
    expect(restarting["records-in"]).toBe(500);
    expect(restarting["records-out"]).toBe(499);

    const exc = await get(rest, `/jobs/${jobId}/exceptions`);
    expect(exc["root-exception"]).toContain("boom at record 500");
    expect(exc.timestamp).toBeGreaterThan(Date.now() - 60_000);
    expect(exc.exceptionHistory.truncated).toBe(false);
    expect(exc.exceptionHistory.entries).toHaveLength(1);
    const [e] = exc.exceptionHistory.entries;
    expect(e).toMatchObject({ exceptionName: "Error", message: "boom at record 500", taskName: "Numbers -> Exploder -> Discard (1/1)", subtaskIndex: 0, attempt: 0, taskManagerId: "tm-exc" });
    expect(e.endpoint).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(e.stacktrace).toContain("boom at record 500");
    expect(e.timestamp).toBe(exc.timestamp);

    expect(await submit.exited(60_000)).toBe(0);
    // Attempt 0 read 500 records, attempt 1 all 2000: 2500 read, 499 + 2000 into the sink.
    expect(submit.stderr).toMatch(/FINISHED after [\d.]+ s; 2500 records read by sources, 2499 records into sinks over 2 attempts; 1 restart\(s\)/);
    const done = await get(rest, `/jobs/${jobId}`);
    expect([done.state, done["records-in"], done["records-out"]]).toEqual(["FINISHED", 2500, 2499]);
    expect(done.vertices[0].metrics["read-records"]).toBe(2500);
    // The history outlives the restart: the finished job still shows why it restarted.
    expect((await get(rest, `/jobs/${jobId}/exceptions`))["root-exception"]).toContain("boom at record 500");
  }, 90_000);

  test("a job that fails at record 500 without restarts reports the records it read, not 0", async () => {
    const dir = tempDir("tm-exc-");
    const { port, rest } = await startJobManager(dir, ["-D", "restart-strategy.type=none"]);
    await startTaskManager(port, "tm-fail");
    // Source and map in separate tasks (rebalance): the source is canceled when the map fails, and its counts too
    // must be those at its end, not those of its last metrics report.
    const job = writeJob(dir, "fails.ts", `
      export default (env) => {
        env.setJobName("fails-at-500");
        env.fromSequence(1, 1e12).name("Numbers").rebalance()
          .map((n) => { if (n === 500) throw new Error("bad record 500"); return n; }).name("Checker")
          .addSink(() => {}).name("Discard");
      };`);
    const submit = new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, "-p", "1", job]);
    expect(await submit.exited(60_000)).toBe(1);
    const m = /FAILED after [\d.]+ s; (\d+) records read by sources, (\d+) records into sinks/.exec(submit.stderr);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(500);
    expect(Number(m![2])).toBeGreaterThanOrEqual(499);
    expect(submit.stderr).toContain("bad record 500");
    const jobId = await onlyJobId(rest);
    const j = await get(rest, `/jobs/${jobId}`);
    const checker = j.vertices.find((v: any) => v.name === "Checker -> Discard");
    expect(checker.status).toBe("FAILED");
    expect(checker.metrics["read-records"]).toBeGreaterThanOrEqual(500);
    expect(j.vertices.find((v: any) => v.name === "Numbers").status).toBe("CANCELED");
    const exc = await get(rest, `/jobs/${jobId}/exceptions`);
    expect(exc["root-exception"]).toContain("bad record 500");
    expect(exc.exceptionHistory.entries[0]).toMatchObject({ taskName: "Checker -> Discard (1/1)", taskManagerId: "tm-fail", attempt: 0 });
  }, 60_000);

  test("a lost TaskManager is in the history with the failover's other tasks; RESTARTING says which slots it waits for; a new TaskManager lets it run again", async () => {
    const dir = tempDir("tm-exc-");
    const { port, rest } = await startJobManager(dir, ["-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=5", "-D", "restart-strategy.fixed-delay.delay=100ms"]);
    const a = await startTaskManager(port, "tm-a");
    const job = writeJob(dir, "endless.ts", `export default (env) => { env.setJobName("endless"); env.fromSequence(0, 1e15).name("Numbers").keyBy((x) => x % 10).sum(0).name("Sums").addSink(() => {}); };`);
    new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, "-p", "2", job]);
    const jobId = await onlyJobId(rest);
    await waitFor("records flowing", async () => {
      const j = await get(rest, `/jobs/${jobId}`);
      return j.state === "RUNNING" && j.tasks.running === 4 && j["records-in"] > 0;
    }, 30_000, 50);
    a.kill("SIGKILL");
    const waiting = await waitFor("the job waiting for slots", async () => {
      const j = await get(rest, `/jobs/${jobId}`);
      return j.state === "RESTARTING" && j.waiting?.reason === "slots" && j;
    }, 20_000, 50);
    expect(waiting.waiting).toMatchObject({ "slots-needed": 2, "slots-free": 0, "slots-total": 0 });
    expect(waiting.waiting.message).toContain("the job needs 2, the cluster has 0 free of 0");
    expect(waiting["records-in"]).toBeGreaterThan(0); // the lost attempt's records, not 0

    const exc = await get(rest, `/jobs/${jobId}/exceptions`);
    expect(exc["root-exception"]).toContain("TaskManager tm-a was lost");
    const [e] = exc.exceptionHistory.entries;
    expect(e).toMatchObject({ exceptionName: "TaskManagerLost", taskManagerId: "tm-a", attempt: 0 });
    // All four tasks ran on tm-a: the first is the entry, the other three its concurrent exceptions.
    expect(e.concurrentExceptions).toHaveLength(3);
    expect(e.concurrentExceptions.every((c: any) => c.taskManagerId === "tm-a" && c.exceptionName === "TaskManagerLost")).toBe(true);

    await startTaskManager(port, "tm-b");
    await waitFor("the job running again", async () => {
      const j = await get(rest, `/jobs/${jobId}`);
      return j.state === "RUNNING" && j.tasks.running === 4 && j.waiting === undefined;
    }, 30_000, 50);
    const after = await get(rest, `/jobs/${jobId}/exceptions`);
    expect(after["root-exception"]).toContain("TaskManager tm-a was lost");
    expect(after.exceptionHistory.entries).toHaveLength(1);
  }, 90_000);
});

describe("configuration, log lines and process figures of each process", () => {
  test("/jobmanager/config and /taskmanagers/<id>/config mask secrets; /jobmanager/logs and /taskmanagers/<id>/logs hold each process's own lines; /taskmanagers/<id> has heap, RSS and buffers", async () => {
    const dir = tempDir("tm-exc-");
    const secretPath = path.join(dir, "tls-private-key-path.pem"); // only named: TLS stays off
    const { port, rest } = await startJobManager(dir, ["-D", `security.ssl.key-file=${secretPath}`]);
    const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.resource-id=tm-ops", "-D", "taskmanager.network.numberOfBuffers=1000", "-D", `security.ssl.key-file=${secretPath}`, ...FAST]);
    await tm.waitForOutput(/registered at the JobManager/);

    for (const p of ["/jobmanager/config", "/taskmanagers/tm-ops/config"]) {
      const config: { key: string; value: string }[] = await get(rest, p);
      const value = (k: string) => config.find((e) => e.key === k)?.value;
      expect(value("security.ssl.key-file")).toBe("******");
      expect(value("security.auth.secret-file")).toBe(""); // unset: nothing to hide
      expect(JSON.stringify(config)).not.toContain("tls-private-key-path");
      expect(value("jobmanager.rpc.port")).toBe(p.startsWith("/jobmanager") ? "0" : String(port));
    }
    expect((await get(rest, "/taskmanagers/tm-ops/config")).find((e: any) => e.key === "taskmanager.resource-id").value).toBe("tm-ops");

    // Each process answers with its own ring: the TaskManager's holds its registration, the JobManager's its side.
    const tmLogs: string[] = (await get(rest, "/taskmanagers/tm-ops/logs")).lines;
    expect(tmLogs.some((l) => l.includes("[taskmanager] registered at the JobManager"))).toBe(true);
    expect(tmLogs.some((l) => l.includes("[resourcemanager]"))).toBe(false);
    const jmLogs: string[] = (await get(rest, "/jobmanager/logs")).lines;
    expect(jmLogs.some((l) => l.includes("[resourcemanager] TaskManager registered") && l.includes("id=tm-ops"))).toBe(true);

    const t = await waitFor("process figures from a heartbeat", async () => {
      const d = await get(rest, "/taskmanagers/tm-ops");
      return d.metrics.rss > 0 && d;
    }, 10_000);
    expect(t.metrics.heapUsed).toBeGreaterThan(0);
    expect(t.metrics.heapCommitted).toBeGreaterThanOrEqual(t.metrics.heapUsed);
    expect(t.metrics.rss).toBeGreaterThan(t.metrics.heapUsed);
    expect(t.metrics).toMatchObject({ nettyShuffleMemorySegmentsTotal: 1000, nettyShuffleMemorySegmentsAvailable: 1000, nettyShuffleMemorySegmentsUsed: 0 });

    const missing = await fetch(rest + "/taskmanagers/nobody/logs");
    expect(missing.status).toBe(404);
    expect((await missing.json()).errors[0]).toContain("no TaskManager nobody");
  }, 60_000);
});
