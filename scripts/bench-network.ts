// Network stack throughput (issue 3). In one run:
//  (a) raw loopback TCP between two Bun processes, 32 KiB writes;
//  (b) a two-TaskManager job moving 32 KiB payloads over a remote channel, and small records (about 30 bytes)
//      over a remote and over a local channel; (b)/(a) for the 32 KiB payloads.
// Run: bun scripts/bench-network.ts [--gib 2] [--records 5000000]
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { BUN, Child, ROOT } from "../tests/helpers.ts";

const { values } = parseArgs({ options: { gib: { type: "string", default: "2" }, records: { type: "string", default: "5000000" }, D: { type: "string", short: "D", multiple: true, default: [] } } });
// Extra -D key=value flags for the TaskManagers (e.g. buffer counts), to explore settings.
const tmFlags = values.D.flatMap((d) => ["-D", d]);
const bytesTotal = Math.round(Number(values.gib) * 2 ** 30);
const smallRecords = Number(values.records);
const SEG = 32 * 1024;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-net-"));

async function rawTcp(): Promise<number> {
  const sink = new Child([BUN, path.join(ROOT, "scripts/bench-helpers/tcp-sink.ts"), String(bytesTotal)]);
  const port = Number((await sink.waitForOutput(/PORT (\d+)/))[1]);
  const sock = net.connect(port, "127.0.0.1");
  await new Promise((r) => sock.once("connect", r));
  const chunk = Buffer.alloc(SEG, 7);
  for (let sent = 0; sent < bytesTotal; sent += SEG) {
    if (!sock.write(chunk)) await new Promise((r) => sock.once("drain", r));
  }
  const secs = Number((await sink.waitForOutput(/DONE ([\d.]+)/, 120_000))[1]);
  sock.destroy();
  return bytesTotal / secs;
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
  const raw = await rawTcp();
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0"]);
  const port = Number((await jm.waitForOutput(/rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tms = ["a", "b"].map((id) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=bench-${id}`, ...tmFlags]));
  await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/)));
  // Subtask 0 of every vertex runs in slot 0 (bench-a), subtask 1 in slot 1 (bench-b): the source is in bench-a.
  const payload = SEG - 64;
  const bigN = Math.floor(bytesTotal / payload);
  const big = await stackRun(port, "payload-remote", bigN, `(() => { const p = new Uint8Array(${payload}).fill(7); return () => p; })()`, 1, payload);
  const bigLocal = await stackRun(port, "payload-local", bigN, `(() => { const p = new Uint8Array(${payload}).fill(7); return () => p; })()`, 0, payload);
  const small = `(i) => ["key-" + (i % 1000), i, 7]`;
  const smallBytes = 4 + 1 + 9 + 9 + 1; // msgpack of ["key-123", i, 7]: array header, fixstr, uint32/64, fixint
  const remote = await stackRun(port, "small-remote", smallRecords, small, 1, smallBytes);
  const local = await stackRun(port, "small-local", smallRecords, small, 0, smallBytes);

  console.log(`| measure | result |\n|---|---|`);
  console.log(`| (a) raw loopback TCP, two Bun processes, 32 KiB writes | ${(raw / 1e9).toFixed(2)} GB/s |`);
  console.log(`| (b) 32 KiB payloads, remote channel between two TaskManagers | ${(big.bytesPerSec / 1e9).toFixed(2)} GB/s (${(big.recordsPerSec / 1000).toFixed(0)} K records/s) |`);
  console.log(`| 32 KiB payloads, local channel (same TaskManager) | ${(bigLocal.bytesPerSec / 1e9).toFixed(2)} GB/s (${(bigLocal.recordsPerSec / 1000).toFixed(0)} K records/s) |`);
  console.log(`| (b)/(a) for 32 KiB payloads (goal >= 0.7) | ${(big.bytesPerSec / raw).toFixed(2)} |`);
  console.log(`| small records (~25 B) over a remote channel | ${(remote.recordsPerSec / 1e6).toFixed(2)} M records/s |`);
  console.log(`| small records (~25 B) over a local channel | ${(local.recordsPerSec / 1e6).toFixed(2)} M records/s |`);
  console.log(`\nmachine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Bun ${Bun.version}; ${(bytesTotal / 2 ** 30).toFixed(1)} GiB per throughput run, ${smallRecords} small records`);
} finally {
  await Child.stopAll();
  fs.rmSync(dir, { recursive: true, force: true });
}
