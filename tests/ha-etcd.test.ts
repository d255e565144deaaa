// etcd HA with real processes: a real etcd (Debian's etcd-server) on free loopback ports with a temp data dir,
// two JobManagers (leader and standby) and two TaskManagers that find the leader through etcd. The leader is
// SIGKILLed, or SIGSTOPped for longer than its lease (fencing); the standby takes over and the job's committed
// output is exact. Also: etcd unreachable at start.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { loadConfig } from "../src/config/index.ts";
import { findJobManager } from "../src/ha/index.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { freePort } from "./ha-helpers.ts";
import { BUN, Child, committedLines, keyedCountsDiscrepancy, removeTempDirs, tempDir, waitFor, writeJob, keyedJob, KEYS } from "./helpers.ts";

const ETCD = "/usr/bin/etcd";
const haveEtcd = fs.existsSync(ETCD) || spawnSync("which", ["etcd"]).status === 0;
if (!haveEtcd) console.warn("tests/ha-etcd.test.ts: skipped: etcd is not installed (Debian package etcd-server; .ci/run installs it)");
const describeIfEtcd = haveEtcd ? describe : describe.skip;

const FAST = ["-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=2s", "-D", "taskmanager.registration.max-backoff=300ms"];
const clients: RpcConnection[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/** A real etcd on free loopback ports; returns its client URL once it answers. */
export async function startEtcd(dir: string): Promise<{ etcd: Child; url: string }> {
  const [client, peer] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${client}`;
  const etcd = new Child([
    "etcd", "--name", "tm-test", "--data-dir", path.join(dir, "etcd"),
    "--listen-client-urls", url, "--advertise-client-urls", url,
    "--listen-peer-urls", `http://127.0.0.1:${peer}`, "--initial-advertise-peer-urls", `http://127.0.0.1:${peer}`,
    "--initial-cluster", `tm-test=http://127.0.0.1:${peer}`,
  ]);
  await waitFor("etcd answering", async () => {
    try {
      return (await fetch(`${url}/v3/kv/range`, { method: "POST", body: JSON.stringify({ key: "eA==" }) })).ok;
    } catch {
      return false;
    }
  }, 30_000, 100);
  return { etcd, url };
}

function haArgs(storage: string, url: string, ttl = "3s"): string[] {
  return ["-D", "high-availability.type=etcd", "-D", `high-availability.storageDir=${storage}`, "-D", `high-availability.etcd.endpoints=${url}`, "-D", `high-availability.etcd.lease-ttl=${ttl}`, ...FAST];
}

function startJobManager(storage: string, url: string, ttl?: string): Child {
  return new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=20", "-D", "restart-strategy.fixed-delay.delay=200ms", ...haArgs(storage, url, ttl)]);
}

function startTaskManager(url: string, id: string): Child {
  return new Child([BUN, "main.ts", "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, "-D", "high-availability.type=etcd", "-D", `high-availability.etcd.endpoints=${url}`, ...FAST]);
}

/** The job's status from whichever JobManager leads now (found through etcd, as the CLI does). */
async function statusVia(url: string, jobId: string, conn: { c: RpcConnection | null; port: number }): Promise<JobStatus | null> {
  try {
    const leader = await findJobManager(loadConfig({ overrides: ["high-availability.type=etcd", `high-availability.etcd.endpoints=${url}`] }), 0);
    if (conn.c && conn.port !== leader.port) {
      conn.c.close();
      conn.c = null;
    }
    if (!conn.c) {
      conn.c = await connectClient(leader.host, leader.port);
      conn.port = leader.port;
      clients.push(conn.c);
    }
    return await conn.c.request("jobStatus", { jobId }, 2000);
  } catch {
    conn.c?.close();
    conn.c = null;
    return null;
  }
}

async function startCluster(dir: string): Promise<{ url: string; a: Child; b: Child; tms: Child[]; jobId: string; out: string; conn: { c: RpcConnection | null; port: number }; N: number }> {
  const { url } = await startEtcd(dir);
  const storage = path.join(dir, "ha");
  const a = startJobManager(storage, url);
  await a.waitForOutput(/JobManager started .*epoch=\d+/, 30_000);
  const b = startJobManager(storage, url);
  await b.waitForOutput(/standing by/, 30_000);
  const tms = ["tm-a", "tm-b"].map((id) => startTaskManager(url, id));
  await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));
  const N = 200_000;
  const out = path.join(dir, "out");
  const leader = await findJobManager(loadConfig({ overrides: ["high-availability.type=etcd", `high-availability.etcd.endpoints=${url}`] }), 5000);
  const c = await connectClient(leader.host, leader.port);
  clients.push(c);
  const jobId = await submitJob(c, await prepareJob(writeJob(dir, "job.ts", keyedJob(out, N, 10)), [], 2));
  const conn = { c: null as RpcConnection | null, port: 0 };
  await waitFor("two checkpoints", async () => {
    const s = await statusVia(url, jobId, conn);
    return s && s.state === "RUNNING" && s.checkpoints.completed >= 2 && s;
  }, 60_000, 50);
  return { url, a, b, tms, jobId, out, conn, N };
}

async function waitFinished(url: string, jobId: string, conn: { c: RpcConnection | null; port: number }): Promise<JobStatus> {
  return waitFor("the job FINISHED", async () => {
    const s = await statusVia(url, jobId, conn);
    if (s && (s.state === "FAILED" || s.state === "CANCELED")) throw new Error(`job ${s.state}: ${s.error?.message}`);
    return s && s.state === "FINISHED" && s;
  }, 150_000, 100);
}

describeIfEtcd("etcd HA (real etcd, real processes)", () => {
  test("SIGKILL the leader: the standby leads within the lease, adopts the running tasks, output exact", async () => {
    const dir = tempDir("tm-ha-etcd-");
    const c = await startCluster(dir);
    const killedAt = Date.now();
    c.a.kill("SIGKILL");
    await c.b.waitForOutput(/leading \(etcd\)/, 30_000);
    const running = await waitFor("RUNNING under the new leader", async () => {
      const s = await statusVia(c.url, c.jobId, c.conn);
      return s && s.state === "RUNNING" && (s.adoptions ?? 0) + s.restarts > 0 && s;
    }, 60_000, 50);
    const runningAgainMs = Date.now() - killedAt;
    console.log(`etcd failover figures: ${JSON.stringify({ scenario: "leader SIGKILL, lease 3 s", runningAgainMs, adopted: running.adoptions === 1 })}`);
    expect(running.adoptions).toBe(1);
    // The CLI finds the new leader through etcd (no -m).
    const list = new Child([BUN, "main.ts", "list", "-D", "high-availability.type=etcd", "-D", `high-availability.etcd.endpoints=${c.url}`]);
    expect(await list.exited(30_000)).toBe(0);
    expect(list.stdout).toContain(`${c.jobId} : job (RUNNING)`);
    const end = await waitFinished(c.url, c.jobId, c.conn);
    expect(end.jobId).toBe(c.jobId);
    expect(keyedCountsDiscrepancy(committedLines(c.out), c.N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  }, 300_000);

  test("fencing: the leader SIGSTOPped longer than its lease; the standby takes over; SIGCONT: the old one deploys, triggers and commits nothing and stands by again", async () => {
    const dir = tempDir("tm-ha-fence-");
    const c = await startCluster(dir);
    c.a.kill("SIGSTOP");
    await c.b.waitForOutput(/leading \(etcd\)/, 30_000);
    await waitFor("RUNNING under the new leader", async () => {
      const s = await statusVia(c.url, c.jobId, c.conn);
      return s && s.state === "RUNNING" && (s.adoptions ?? 0) + s.restarts > 0 && s;
    }, 60_000, 50);
    const mark = c.a.stderr.length;
    c.a.kill("SIGCONT");
    await c.a.waitForOutput(/lost leadership/, 15_000);
    await c.a.waitForOutput(/standing by again/, 15_000);
    // The new leader's REST API (and dashboard) shows it, its epoch and the old leader standing by.
    const restPort = Number((await c.b.waitForOutput(/REST API started rest=127\.0\.0\.1:(\d+)/))[1]);
    const ha = await waitFor("the old leader listed as a standby", async () => {
      const o = await (await fetch(`http://127.0.0.1:${restPort}/overview`)).json();
      return o["high-availability"]?.standbys.length === 1 && o["high-availability"];
    }, 15_000, 200);
    expect(ha.type).toBe("etcd");
    expect(ha.epoch).toBeGreaterThan(0);
    expect(c.b.stderr).toContain(`JobManager started rpc=127.0.0.1:`);
    expect(c.b.stderr).toMatch(new RegExp(`id=${ha.leader} ha=etcd epoch=${ha.epoch}`));
    const end = await waitFinished(c.url, c.jobId, c.conn);
    expect(end.state).toBe("FINISHED");
    const afterResume = c.a.stderr.slice(mark);
    // What the old leader did after it woke up: no checkpoint completed, nothing deployed or approved.
    expect(afterResume).not.toMatch(/checkpoint complete|job state changed.*state=RUNNING|adopted/);
    expect(keyedCountsDiscrepancy(committedLines(c.out), c.N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  }, 300_000);

  test("etcd unreachable at start: the JobManager exits 2 naming high-availability.etcd.endpoints", async () => {
    const dir = tempDir("tm-ha-noetcd-");
    const url = `http://127.0.0.1:${await freePort()}`;
    const jm = startJobManager(path.join(dir, "ha"), url);
    expect(await jm.exited(30_000)).toBe(2);
    expect(jm.stderr).toContain(`etcd unreachable (high-availability.etcd.endpoints = ${url})`);
    const none = new Child([BUN, "main.ts", "jobmanager", "-D", "high-availability.type=etcd", "-D", `high-availability.storageDir=${dir}`]);
    expect(await none.exited(30_000)).toBe(2);
    expect(none.stderr).toContain("high-availability.type = etcd (from -D flag) needs high-availability.etcd.endpoints");
  }, 60_000);
});
