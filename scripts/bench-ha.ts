// Issue 14's figures: JobManager SIGKILL -> the job RUNNING again, and what a failover costs the running job.
// Real processes on 127.0.0.1 (a JobManager, two TaskManagers with 2 slots each, a keyed counting job at
// parallelism 2 into the exactly-once file sink, checkpoints every 300 ms), per scenario:
//   file-restore   file HA, the script as supervisor restarting the JobManager at once, grace period 0 (restore)
//   file-adopt     the same with the default grace period: the restarted JobManager adopts the running tasks
//   etcd-standby   etcd HA (a real etcd), a standby JobManager, lease 3 s: the leader SIGKILLed
// Measured: kill -> the job RUNNING again (every task running, as the client sees it), records read twice (the
// sources' records over all attempts minus the input), and the sources' throughput during the 5 s after the
// kill against the 5 s before (from the TaskManagers' /metrics, which keep answering while no JobManager does).
//
// Usage: bun scripts/bench-ha.ts [runs]   (default 3; prints a markdown table of medians, min-max)
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { loadConfig } from "../src/config/index.ts";
import { findJobManager } from "../src/ha/index.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { median as med } from "./bench-helpers/stats.ts";

const runs = Number(process.argv[2] ?? 3);
if (!Number.isInteger(runs) || runs < 1) {
  console.error("usage: bun scripts/bench-ha.ts [runs >= 1]");
  process.exit(2);
}
const root = path.resolve(import.meta.dir, "..");
const BUN = process.execPath;
const FAST = ["-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=2s", "-D", "taskmanager.registration.max-backoff=300ms"];
const N = 400_000;
const procs = new Set<ReturnType<typeof Bun.spawn>>();

function spawn(args: string[]): { proc: ReturnType<typeof Bun.spawn>; log: () => string } {
  let text = "";
  const proc = Bun.spawn(args, { cwd: root, stdout: "pipe", stderr: "pipe" });
  procs.add(proc);
  for (const s of [proc.stdout, proc.stderr]) void (async () => { for await (const c of s as ReadableStream<Uint8Array>) text += new TextDecoder().decode(c); })();
  return { proc, log: () => text };
}

async function until<T>(what: string, probe: () => Promise<T | null | false | undefined> | T | null | false | undefined, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function job(out: string): string {
  return `
    import { FileSink, ValueStateDescriptor } from ${JSON.stringify(path.join(root, "src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(300);
      env.fromSequence(1, ${N})
        .map((x) => { if (x % 10 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .keyBy((x) => x % 37)
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
          processElement(x, ctx, out) { const c = this.count.value() + 1; this.count.update(c); out.collect([ctx.getCurrentKey(), c]); },
        })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`;
}

/** Records out of the source tasks on both TaskManagers, from their /metrics. */
async function sourceRecords(metricsPorts: number[]): Promise<number> {
  let sum = 0;
  for (const port of metricsPorts) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    for (const line of text.split("\n")) if (line.startsWith("tm_task_records_out_total{") && line.includes('task_name="Sequence Source')) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

interface Figures {
  runningAgainMs: number;
  adopted: boolean;
  reprocessed: number;
  /** Only with adoption: a restored job's new tasks count from 0 again. */
  dip: number | null;
}

async function scenario(kind: "file-restore" | "file-adopt" | "etcd-standby"): Promise<Figures> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-ha-"));
  try {
    const storage = path.join(dir, "ha");
    let ha: string[];
    let findLeader: () => Promise<{ host: string; port: number }>;
    const jmPort = await freePort();
    if (kind === "etcd-standby") {
      const [c, p] = [await freePort(), await freePort()];
      const url = `http://127.0.0.1:${c}`;
      spawn(["etcd", "--name", "b", "--data-dir", path.join(dir, "etcd"), "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", `http://127.0.0.1:${p}`, "--initial-advertise-peer-urls", `http://127.0.0.1:${p}`, "--initial-cluster", `b=http://127.0.0.1:${p}`]);
      await until("etcd", async () => (await fetch(`${url}/v3/kv/range`, { method: "POST", body: '{"key":"eA=="}' }).catch(() => null))?.ok);
      ha = ["-D", "high-availability.type=etcd", "-D", `high-availability.etcd.endpoints=${url}`];
      const cfg = loadConfig({ overrides: ["high-availability.type=etcd", `high-availability.etcd.endpoints=${url}`] });
      findLeader = () => findJobManager(cfg, 10_000);
    } else {
      ha = ["-D", "high-availability.type=file"];
      findLeader = async () => ({ host: "127.0.0.1", port: jmPort });
    }
    // The grace period is the JobManager's (sent to the TaskManagers at registration).
    const grace = kind === "file-restore" ? ["-D", "taskmanager.jobmanager-loss.grace-period=0"] : [];
    const jmArgs = [BUN, "main.ts", "jobmanager", ...ha, ...grace, "-D", `high-availability.storageDir=${storage}`, "-D", `jobmanager.rpc.port=${kind === "etcd-standby" ? 0 : jmPort}`, "-D", "rest.port=0", "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=10", "-D", "restart-strategy.fixed-delay.delay=200ms", ...FAST];
    let jm = spawn(jmArgs);
    await until("the JobManager", () => /JobManager started/.test(jm.log()));
    if (kind === "etcd-standby") {
      const standby = spawn(jmArgs);
      await until("the standby", () => /standing by/.test(standby.log()));
    }
    const tmHa = kind === "etcd-standby" ? ha : [];
    const tms = ["a", "b"].map((id) => spawn([BUN, "main.ts", "-D", `jobmanager.rpc.port=${jmPort}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=tm-${id}`, ...tmHa, ...FAST]));
    await until("TaskManagers", () => tms.every((t) => /registered at the JobManager/.test(t.log())));
    const metricsPorts = tms.map((t) => Number(/metrics endpoint started metrics=127\.0\.0\.1:(\d+)/.exec(t.log())![1]));
    let conn: RpcConnection | null = null;
    const status = async (jobId: string): Promise<JobStatus | null> => {
      try {
        const l = await findLeader();
        conn ??= await connectClient(l.host, l.port);
        return await conn.request("jobStatus", { jobId }, 1000);
      } catch {
        conn?.close();
        conn = null;
        return null;
      }
    };
    const first = await findLeader();
    const c = await connectClient(first.host, first.port);
    const out = path.join(dir, "out");
    fs.writeFileSync(path.join(dir, "job.ts"), job(out));
    const jobId = await submitJob(c, await prepareJob(path.join(dir, "job.ts"), [], 2));
    c.close();
    await until("two checkpoints", async () => {
      const s = await status(jobId);
      return s && s.state === "RUNNING" && s.checkpoints.completed >= 2;
    });
    const r0 = await sourceRecords(metricsPorts);
    await Bun.sleep(5000);
    const r1 = await sourceRecords(metricsPorts);
    const killedAt = Date.now();
    jm.proc.kill("SIGKILL");
    await jm.proc.exited;
    (conn as RpcConnection | null)?.close();
    conn = null;
    if (kind !== "etcd-standby") jm = spawn(jmArgs); // the supervisor
    let runningAgainMs = 0;
    const watch = until("RUNNING again", async () => {
      const s = await status(jobId);
      return s && s.state === "RUNNING" && s.tasks.RUNNING === 4 && (s.restarts > 0 || (s.adoptions ?? 0) > 0) && (runningAgainMs = Date.now() - killedAt);
    }, 120_000);
    await Bun.sleep(Math.max(0, killedAt + 5000 - Date.now()));
    const r2 = await sourceRecords(metricsPorts).catch(() => NaN);
    await watch;
    const end = await until("FINISHED", async () => {
      const s = await status(jobId);
      return s && (s.state === "FINISHED" || s.state === "FAILED") && s;
    }, 300_000);
    if (end.state !== "FINISHED") throw new Error(`${kind}: the job ${end.state}: ${end.error?.message}`);
    (conn as RpcConnection | null)?.close();
    const adopted = (end.adoptions ?? 0) > 0;
    // Adopted: the same tasks' counters went on to the end (recordsIn counts them). Restored: the killed attempt had
    // read r1 when it was stopped, the new attempt read end.recordsIn (the new leader knows only its own attempts).
    const reprocessed = adopted ? end.recordsIn - N : r1 + end.recordsIn - N;
    return { runningAgainMs, adopted, reprocessed, dip: adopted ? (r2 - r1) / (r1 - r0) : null };
  } finally {
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all([...procs].map((p) => p.exited));
    procs.clear();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const results: Record<string, Figures[]> = {};
for (let r = 1; r <= runs; r++) {
  for (const kind of ["file-restore", "file-adopt", "etcd-standby"] as const) {
    console.error(`run ${r}/${runs}: ${kind}`);
    (results[kind] ??= []).push(await scenario(kind));
    console.error(`  ${JSON.stringify(results[kind]!.at(-1))}`);
  }
}
const cell = (xs: number[], f: (x: number) => string) => `${f(med(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;
console.log(`| Scenario | SIGKILL -> RUNNING again | Adopted | Records read twice | Source throughput in the 5 s after the kill / the 5 s before |`);
console.log(`| --- | --- | --- | --- | --- |`);
for (const [kind, f] of Object.entries(results)) {
  const dips = f.flatMap((x) => (x.dip === null ? [] : [x.dip]));
  console.log(
    `| ${kind} | ${cell(f.map((x) => x.runningAgainMs), (x) => `${(x / 1000).toFixed(1)} s`)} | ${f.filter((x) => x.adopted).length} of ${f.length} | ` +
      `${cell(f.map((x) => x.reprocessed), (x) => String(x))} | ${dips.length ? cell(dips, (x) => `${Math.round(x * 100)} %`) : "- (restored)"} |`,
  );
}
console.log(`\n${runs} run(s); ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(1)} at the end; ${new Date().toISOString()}`);
process.exit(0);
