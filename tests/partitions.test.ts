// Network partitions with real hosts: a JobManager and three TaskManagers, each in a network namespace of its own
// joined by a bridge (tests/netns.ts), with a shared secret and the default heartbeat and keepalive settings. Links
// are cut mid-job (a host's link down, or a TaskManager pair cut by bogus neighbour entries while both still reach
// the JobManager) and healed; each scenario checks the committed output of the exactly-once file sink against an
// uninterrupted run's: every record exactly once. The times from cut to detection and to RUNNING again are
// printed, and written as JSON lines to $TM_PARTITION_REPORT when set (scripts/bench-partitions.ts).
//
// Needs root and `ip netns` (CI and the development machine have both); elsewhere the suite is skipped, saying why.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BUN, Child, committedLines, keyedCountsDiscrepancy, keyedJob, KEYS, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { TestNetwork, netnsUnavailable } from "./netns.ts";

const unavailable = netnsUnavailable();
if (unavailable) console.warn(`tests/partitions.test.ts: skipped: ${unavailable}`);
const describeIfNetns = unavailable ? describe.skip : describe;

const JM = 0; // host index of the JobManager; TaskManagers are hosts 1..3
const RPC_PORT = 6123;
const SCENARIO_MS = 180_000;

interface Status {
  t: number;
  jobId: string;
  state: string;
  restarts: number;
  running: number;
  total: number;
  checkpoints: number;
  error?: string;
  tms: string[];
}

/** Networks not removed yet: a scenario removes its own; afterAll removes what a failed start left. */
const networks = new Set<TestNetwork>();

afterAll(async () => {
  await Child.stopAll();
  for (const n of networks) n.destroy();
  removeTempDirs();
});

/**
 * The scenarios run side by side, each with its own namespaces and processes (most of their time is the time-outs
 * they wait out: 127 s one after another, about 35 s together), except when scripts/bench-partitions.ts collects their
 * figures, which must not include the others' load.
 */
const scenario = process.env.TM_PARTITION_REPORT ? test : test.concurrent;

interface Cluster {
  net: TestNetwork;
  dir: string;
  jm: Child;
  tms: Map<string, Child>;
  /** TaskManager resource id -> host index. */
  hostOf: Map<string, number>;
  statuses: Status[];
  agent: Child;
  out: string;
}

/** Starts the cluster in namespaces and submits the job through an agent in the JobManager's namespace. */
async function startCluster(jobSource: (out: string) => string, tmArgs: string[] = []): Promise<Cluster> {
  const net = new TestNetwork(4);
  networks.add(net);
  const children: Child[] = [];
  try {
    return await startIn(net, children, jobSource, tmArgs);
  } catch (err) {
    await Child.stop(children);
    net.destroy();
    networks.delete(net);
    throw err;
  }
}

/** Stops a scenario's cluster and removes its namespaces. */
async function stopCluster(c: Cluster): Promise<void> {
  await Child.stop([c.jm, ...c.tms.values(), c.agent]);
  c.net.destroy();
  networks.delete(c.net);
}

/** Runs a scenario on a cluster of its own, stopped and removed whatever the scenario's outcome. */
async function withCluster(jobSource: (out: string) => string, tmArgs: string[], body: (c: Cluster) => Promise<void>): Promise<void> {
  const c = await startCluster(jobSource, tmArgs);
  try {
    await body(c);
  } finally {
    await stopCluster(c);
  }
}

async function startIn(net: TestNetwork, children: Child[], jobSource: (out: string) => string, tmArgs: string[]): Promise<Cluster> {
  const dir = tempDir("tm-partitions-");
  const secretFile = path.join(dir, "secret");
  fs.writeFileSync(secretFile, Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"), { mode: 0o600 });
  const common = ["-D", `security.auth.secret-file=${secretFile}`, "-D", `jobmanager.rpc.address=${net.address(JM)}`, "-D", `jobmanager.rpc.port=${RPC_PORT}`];
  const restart = ["-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=100", "-D", `state.checkpoints.dir=${path.join(dir, "checkpoints")}`];
  const jm = new Child(net.exec(JM, [BUN, "main.ts", "jobmanager", ...common, ...restart, "-D", "rest.address=127.0.0.1"]));
  children.push(jm);
  await jm.waitForOutput(/JobManager started/, 30_000);
  const tms = new Map<string, Child>();
  const hostOf = new Map<string, number>();
  for (let h = 1; h <= 3; h++) {
    const id = `tm-${h}`;
    hostOf.set(id, h);
    tms.set(id, new Child(net.exec(h, [BUN, "main.ts", ...common, "-D", `taskmanager.host=${net.address(h)}`, "-D", `taskmanager.resource-id=${id}`, "-D", "taskmanager.numberOfTaskSlots=2", ...tmArgs])));
    children.push(tms.get(id)!);
    // In order: slots are taken round-robin in registration order, so tm-1 and tm-2 run the job.
    await tms.get(id)!.waitForOutput(/registered at the JobManager/, 30_000);
  }
  const out = path.join(dir, "out");
  const job = writeJob(dir, "job.ts", jobSource(out));
  const agent = new Child(net.exec(JM, [BUN, "tests/fixtures/job-status-agent.ts", net.address(JM), String(RPC_PORT), secretFile, job, "2"]));
  children.push(agent);
  const statuses: Status[] = [];
  let seen = 0;
  const parse = () => {
    const lines = agent.stdout.split("\n");
    for (; seen < lines.length - 1; seen++) statuses.push(JSON.parse(lines[seen]!));
  };
  const timer = setInterval(parse, 20);
  agent.proc.exited.then(() => (parse(), clearInterval(timer)));
  return { net, dir, jm, tms, hostOf, statuses, agent, out };
}

function latest(c: Cluster): Status | undefined {
  return c.statuses[c.statuses.length - 1];
}

/** Waits for a RUNNING job with every task running and at least `checkpoints` completed checkpoints. */
async function waitRunning(c: Cluster, checkpoints: number, timeoutMs = 60_000): Promise<Status> {
  return waitFor(`the job RUNNING with ${checkpoints} checkpoint(s)`, () => {
    const s = latest(c);
    if (c.agent.proc.exitCode !== null && (!s || s.state !== "RUNNING")) throw new Error(`the job ended early: ${JSON.stringify(s)}\n${c.agent.stderr.slice(-2000)}`);
    return s && s.state === "RUNNING" && s.running === s.total && s.checkpoints >= checkpoints && s;
  }, timeoutMs, 50);
}

async function waitEnd(c: Cluster, timeoutMs = SCENARIO_MS): Promise<Status> {
  await c.agent.exited(timeoutMs);
  const s = latest(c);
  if (!s) throw new Error(`no job status; agent: ${c.agent.stderr.slice(-2000)}`);
  return s;
}

/** Cut -> detection (the job leaves RUNNING) and -> RUNNING again (every task of the last attempt running). */
function timings(c: Cluster, cutAt: number): { detectMs: number | null; runningAgainMs: number | null } {
  const after = c.statuses.filter((s) => s.t >= cutAt);
  const detected = after.find((s) => s.state === "RESTARTING" || s.state === "FAILING" || s.state === "FAILED");
  if (!detected) return { detectMs: null, runningAgainMs: null };
  const lastRestarts = Math.max(...after.map((s) => s.restarts));
  const again = after.find((s) => s.t > detected.t && s.restarts === lastRestarts && s.state === "RUNNING" && s.running === s.total);
  return { detectMs: detected.t - cutAt, runningAgainMs: again ? again.t - cutAt : null };
}

function report(scenario: string, figures: Record<string, unknown>): void {
  const line = JSON.stringify({ scenario, ...figures });
  console.log(`partition figures: ${line}`);
  if (process.env.TM_PARTITION_REPORT) fs.appendFileSync(process.env.TM_PARTITION_REPORT, line + "\n");
}

function logs(c: Cluster): string {
  return [`JobManager:\n${c.jm.stderr.slice(-3000)}`, ...[...c.tms].map(([id, tm]) => `${id}:\n${tm.stderr.slice(-3000)}`)].join("\n");
}

/** One chain per subtask (source -> map -> sink, no shuffle): a subtask reaches the end of its input on its own. */
function chainedJob(n: number, every: number): (out: string) => string {
  return (out) => `
    import { FileSink } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(300);
      env.fromSequence(1, ${n})
        .map((x) => { if (x % ${every} === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`;
}

function expectEachNumberOnce(lines: string[], n: number): void {
  const seen = new Uint8Array(n + 1);
  let dups = 0;
  let bad = 0;
  for (const l of lines) {
    const x = Number(l);
    if (!Number.isInteger(x) || x < 1 || x > n) bad++;
    else if (seen[x] === 1) dups++;
    else seen[x] = 1;
  }
  expect({ bad, duplicates: dups, lines: lines.length }).toEqual({ bad: 0, duplicates: 0, lines: n });
}

describeIfNetns("network partitions (namespaces, real processes, default time-outs)", () => {
  scenario("a TaskManager cut for longer than the heartbeat time-out: lost, restarted elsewhere, output exact", async () => {
    const N = 300_000;
    await withCluster((out) => keyedJob(out, N, 10), [], async (c) => {
      const s = await waitRunning(c, 2);
      const victim = c.hostOf.get(s.tms[0]!)!;
      const cutAt = Date.now();
      c.net.cut(victim);
      await waitFor("the job running again without the cut TaskManager", () => {
        const l = latest(c);
        return l && l.t > cutAt && l.restarts > s.restarts && l.state === "RUNNING" && l.running === l.total && l;
      }, 60_000, 50).catch((err) => { throw new Error(`${err.message}\n${logs(c)}`); });
      const figures = timings(c, cutAt);
      c.net.heal(victim);
      const end = await waitEnd(c);
      expect(end.state).toBe("FINISHED");
      expect(keyedCountsDiscrepancy(committedLines(c.out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
      report("TaskManager cut 12+ s (heartbeat.timeout 6 s)", figures);
      // Declared lost by the heartbeat time-out (6 s by default), not before.
      expect(figures.detectMs!).toBeGreaterThanOrEqual(4_000);
      expect(figures.detectMs!).toBeLessThan(20_000);
    });
  }, SCENARIO_MS);

  scenario("a zombie TaskManager (its own heartbeat.timeout 60 s) cut off near the end of its input commits nothing twice", async () => {
    // Each subtask runs about 15 s; the cut comes early, so the cut TaskManager's subtask would reach the end of its
    // input (and commit its final transaction) long after the JobManager restarted it elsewhere.
    const N = 240_000;
    await withCluster(chainedJob(N, 8), ["-D", "heartbeat.timeout=60s"], async (c) => {
      const s = await waitRunning(c, 2);
      const victimId = s.tms[0]!;
      const victim = c.hostOf.get(victimId)!;
      const cutAt = Date.now();
      c.net.cut(victim);
      // The JobManager's heartbeat time-out governs: the cut TaskManager cancels its tasks on its own.
      await c.tms.get(victimId)!.waitForOutput(/lost the JobManager; canceling its tasks/, 30_000);
      const zombieCanceledAfterMs = Date.now() - cutAt;
      // Heal only after the restarted attempt has run a while, as in the failure this guards against.
      await waitFor("the restarted attempt running", () => {
        const l = latest(c);
        return l && l.restarts > s.restarts && l.state === "RUNNING" && l.running === l.total && l;
      }, 60_000, 50);
      c.net.heal(victim);
      const end = await waitEnd(c);
      expect(end.state).toBe("FINISHED");
      expectEachNumberOnce(committedLines(c.out), N);
      expect(c.tms.get(victimId)!.stderr).toMatch(/using the JobManager's heartbeat settings.*jobManagerTimeoutMs=6000/);
      report("zombie TaskManager cut (its heartbeat.timeout 60 s, JobManager's 6 s)", { ...timings(c, cutAt), zombieCanceledAfterMs });
    });
  }, SCENARIO_MS);

  scenario("the JobManager cut for less than the heartbeat time-out: nothing restarts, output exact", async () => {
    const N = 150_000;
    await withCluster((out) => keyedJob(out, N, 10), [], async (c) => {
      await waitRunning(c, 2);
      const cutAt = Date.now();
      c.net.cut(JM);
      await Bun.sleep(3_000); // the length of the cut is the scenario, not a wait for a condition
      c.net.heal(JM);
      const end = await waitEnd(c);
      expect(end.state).toBe("FINISHED");
      expect(end.restarts).toBe(0);
      expect(keyedCountsDiscrepancy(committedLines(c.out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
      report("JobManager cut 3 s", { ...timings(c, cutAt), restarts: end.restarts });
    });
  }, SCENARIO_MS);

  scenario("the JobManager cut for longer than the heartbeat time-out: tasks canceled, re-registered after the heal, output exact", async () => {
    const N = 300_000;
    await withCluster((out) => keyedJob(out, N, 10), [], async (c) => {
      const s = await waitRunning(c, 2);
      const cutAt = Date.now();
      c.net.cut(JM);
      await Promise.all(s.tms.map((id) => c.tms.get(id)!.waitForOutput(/lost the JobManager; canceling its tasks/, 30_000)));
      const canceledAfter = Date.now() - cutAt;
      const healAt = Date.now() + Math.max(0, 12_000 - canceledAfter);
      await Bun.sleep(healAt - Date.now()); // the cut lasts 12 s: the scenario's length, not a wait for a condition
      c.net.heal(JM);
      const end = await waitEnd(c);
      expect(end.state).toBe("FINISHED");
      expect(keyedCountsDiscrepancy(committedLines(c.out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
      const figures = timings(c, cutAt);
      report("JobManager cut 12 s", { ...figures, tasksCanceledOnTaskManagersMs: canceledAfter, runningAfterHealMs: figures.runningAgainMs === null ? null : figures.runningAgainMs - (healAt - cutAt) });
      expect(canceledAfter).toBeGreaterThanOrEqual(4_000);
    });
  }, SCENARIO_MS);

  scenario("two TaskManagers cut from each other (both reach the JobManager): detected by the data connection's keepalive, restarted, output exact", async () => {
    const N = 300_000;
    await withCluster((out) => keyedJob(out, N, 10), [], async (c) => {
      const s = await waitRunning(c, 2);
      expect(s.tms.length).toBe(2);
      const [a, b] = s.tms.map((id) => c.hostOf.get(id)!) as [number, number];
      const cutAt = Date.now();
      c.net.cutPair(a, b);
      const detected = await waitFor("the cut detected", () => {
        const l = latest(c);
        return l && l.t > cutAt && l.state !== "RUNNING" && l;
      }, 40_000, 50).catch((err) => { throw new Error(`${err.message}\n${logs(c)}`); });
      // The tasks failed naming the peer they lost.
      const tmLogs = [...c.tms.values()].map((t) => t.stderr).join("\n");
      expect(tmLogs).toMatch(/nothing arrived from TaskManager tm-\d \(10\.231\.7\.\d+:\d+\) for \d+ ms \(taskmanager\.network\.tcp-connection\.keepalive\.timeout = 10000 ms\)/);
      const healAt = Math.max(Date.now(), cutAt + 15_000);
      await Bun.sleep(healAt - Date.now()); // the cut lasts 15 s: the scenario's length
      c.net.healPair(a, b);
      const end = await waitEnd(c);
      expect(end.state).toBe("FINISHED");
      expect(keyedCountsDiscrepancy(committedLines(c.out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
      const figures = timings(c, cutAt);
      report("TaskManager-to-TaskManager cut 15 s", figures);
      // Within the keepalive time-out (10 s by default) plus the heartbeat's reporting, not at TCP's give-up.
      expect(detected.t - cutAt).toBeGreaterThanOrEqual(5_000);
      expect(detected.t - cutAt).toBeLessThan(16_000);
    });
  }, SCENARIO_MS);
});
