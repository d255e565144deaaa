// Network stack throughput (issue 3). In one run:
//  (a) raw loopback TCP between two Bun processes, 32 KiB writes;
//  (b) a two-TaskManager job moving 32 KiB payloads over a remote channel, and small records (about 30 bytes)
//      over a remote and over a local channel; (b)/(a) for the 32 KiB payloads.
// (a) and (b) alternate --runs times (median, min-max), with the CPU they take per 32 KiB buffer: (a) of both
// processes, (b) of both TaskManagers (every thread, from /proc/<pid>/stat), and the load average.
// Run: bun scripts/bench-network.ts [--gib 2] [--records 5000000] [--runs 3]
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { BUN, Child, ROOT } from "../tests/helpers.ts";

const { values } = parseArgs({ options: { gib: { type: "string", default: "2" }, records: { type: "string", default: "5000000" }, runs: { type: "string", default: "3" }, D: { type: "string", short: "D", multiple: true, default: [] } } });
// Extra -D key=value flags for the TaskManagers (e.g. buffer counts), to explore settings.
const tmFlags = values.D.flatMap((d) => ["-D", d]);
const bytesTotal = Math.round(Number(values.gib) * 2 ** 30);
const smallRecords = Number(values.records);
const SEG = 32 * 1024;
const RUNS = Number(values.runs);
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`--runs: expected a positive integer, got ${values.runs}`);

/** CPU seconds (user + system, every thread) a process has used so far (Linux /proc). */
function cpuOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (100 per second)
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-net-"));

async function rawTcp(): Promise<{ bytesPerSec: number; cpuSec: number }> {
  const sink = new Child([BUN, path.join(ROOT, "scripts/bench-helpers/tcp-sink.ts"), String(bytesTotal)]);
  const port = Number((await sink.waitForOutput(/PORT (\d+)/))[1]);
  const c0 = process.cpuUsage();
  const sock = net.connect(port, "127.0.0.1");
  await new Promise((r) => sock.once("connect", r));
  const chunk = Buffer.alloc(SEG, 7);
  for (let sent = 0; sent < bytesTotal; sent += SEG) {
    if (!sock.write(chunk)) await new Promise((r) => sock.once("drain", r));
  }
  const done = await sink.waitForOutput(/DONE ([\d.]+) CPU ([\d.]+)/, 120_000);
  const secs = Number(done[1]);
  const c = process.cpuUsage(c0);
  const cpuSec = (c.user + c.system) / 1e6 + Number(done[2]); // the sink's whole life: its start-up is small
  sock.destroy();
  return { bytesPerSec: bytesTotal / secs, cpuSec };
}

/** Runs a job whose only sink subtask that receives data measures its own rate; returns records/s and bytes/s. */
async function stackRun(port: number, name: string, records: number, makeRecord: string, toSubtask: 0 | 1, recordBytes: number) {
  const out = path.join(dir, `${name}.json`);
  const file = path.join(dir, `${name}.ts`);
  fs.writeFileSync(file, `
    import * as fs from "node:fs";
    const make = ${makeRecord};
    export default (env) => {
      env.setBufferTimeout(100);
      env.fromSequence(1, ${records}).map(make)
        .partitionCustom(() => ${toSubtask}, () => 0)
        .addSink({
          open(ctx) { this.ctx = ctx; this.n = 0; this.t0 = 0; },
          invoke(r) { if (this.n++ === 0) this.t0 = performance.now(); },
          close() { if (this.n > 0) fs.writeFileSync(${JSON.stringify(out)}, JSON.stringify({ n: this.n, seconds: (performance.now() - this.t0) / 1000 })); },
        }).setParallelism(2);
    };`);
  const rpc = await connectClient("127.0.0.1", port);
  try {
    const jobId = await submitJob(rpc, await prepareJob(file, [], 1));
    const status = await waitForJob(rpc, jobId, () => {});
    if (status.state !== "FINISHED") throw new Error(`${name}: ${status.state} ${status.error?.message}`);
  } finally {
    rpc.close();
  }
  const r = JSON.parse(fs.readFileSync(out, "utf8"));
  if (r.n !== records) throw new Error(`${name}: ${r.n} of ${records} records arrived`);
  return { recordsPerSec: r.n / r.seconds, bytesPerSec: (r.n * recordBytes) / r.seconds };
}

try {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0"]);
  const port = Number((await jm.waitForOutput(/rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tms = ["a", "b"].map((id) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=bench-${id}`, ...tmFlags]));
  await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/)));
  // Subtask 0 of every vertex runs in slot 0 (bench-a), subtask 1 in slot 1 (bench-b): the source is in bench-a.
  const payload = SEG - 64;
  const bigN = Math.floor(bytesTotal / payload);
  const makePayload = `(() => { const p = new Uint8Array(${payload}).fill(7); return () => p; })()`;
  const loads = [os.loadavg()[0]!];
  const raws: { bytesPerSec: number; cpuSec: number }[] = [];
  const bigs: { bytesPerSec: number; recordsPerSec: number; cpuSec: number }[] = [];
  for (let r = 0; r < RUNS; r++) {
    raws.push(await rawTcp());
    const t0 = tms.reduce((a, t) => a + cpuOf(t.pid), 0);
    const run = await stackRun(port, "payload-remote", bigN, makePayload, 1, payload);
    bigs.push({ ...run, cpuSec: tms.reduce((a, t) => a + cpuOf(t.pid), 0) - t0 });
    loads.push(os.loadavg()[0]!);
  }
  const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const span = (xs: number[], f: (x: number) => string) => `${f(med(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;
  const gbs = (x: number) => (x / 1e9).toFixed(2);
  const us = (x: number) => x.toFixed(0);
  const buffers = Math.ceil(bytesTotal / SEG);
  const bigLocal = await stackRun(port, "payload-local", bigN, `(() => { const p = new Uint8Array(${payload}).fill(7); return () => p; })()`, 0, payload);
  const small = `(i) => ["key-" + (i % 1000), i, 7]`;
  const smallBytes = 4 + 1 + 9 + 9 + 1; // msgpack of ["key-123", i, 7]: array header, fixstr, uint32/64, fixint
  const remote = await stackRun(port, "small-remote", smallRecords, small, 1, smallBytes);
  const local = await stackRun(port, "small-local", smallRecords, small, 0, smallBytes);

  console.log(`(a) and (b): median (min-max) of ${RUNS} alternating runs; load average ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}\n`);
  console.log(`| measure | result |\n|---|---|`);
  console.log(`| (a) raw loopback TCP, two Bun processes, 32 KiB writes | ${span(raws.map((r) => r.bytesPerSec), gbs)} GB/s; CPU ${span(raws.map((r) => (r.cpuSec * 1e6) / buffers), us)} us per 32 KiB |`);
  console.log(`| (b) 32 KiB payloads, remote channel between two TaskManagers | ${span(bigs.map((r) => r.bytesPerSec), gbs)} GB/s (${span(bigs.map((r) => r.recordsPerSec / 1000), us)} K records/s); CPU of both TaskManagers ${span(bigs.map((r) => (r.cpuSec * 1e6) / bigN), us)} us per buffer |`);
  console.log(`| 32 KiB payloads, local channel (same TaskManager) | ${(bigLocal.bytesPerSec / 1e9).toFixed(2)} GB/s (${(bigLocal.recordsPerSec / 1000).toFixed(0)} K records/s) |`);
  console.log(`| (b)/(a) for 32 KiB payloads (goal >= 0.7) | ${span(bigs.map((b, i) => b.bytesPerSec / raws[i]!.bytesPerSec), (x) => x.toFixed(2))} |`);
  console.log(`| small records (~25 B) over a remote channel | ${(remote.recordsPerSec / 1e6).toFixed(2)} M records/s |`);
  console.log(`| small records (~25 B) over a local channel | ${(local.recordsPerSec / 1e6).toFixed(2)} M records/s |`);
  console.log(`\nmachine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Bun ${Bun.version}; ${(bytesTotal / 2 ** 30).toFixed(1)} GiB per throughput run, ${smallRecords} small records`);
} finally {
  await Child.stopAll();
  fs.rmSync(dir, { recursive: true, force: true });
}
