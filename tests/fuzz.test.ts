// Fuzzing the RPC port of a JobManager process and the data port of a TaskManager process (real processes,
// 127.0.0.1, with a shared secret) while a job runs beside: random bytes, valid frames with flipped bits,
// truncated and huge lengths, wrong types, deeply nested msgpack, before and after an authenticated handshake.
// Both processes must stay up, the job must finish with the right result, and their RSS must stay bounded.
//
// TM_FUZZ_FRAMES=N sets how many frames are sent (default 20,000, a few seconds); TM_FUZZ_FRAMES=1000000 is the
// long mode for local runs (docs/benchmarks.md). TM_FUZZ_SEED=N replays a run.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { connectFramed } from "../src/rpc/connect.ts";
import { encodeBufferFrame, encodeFrame } from "../src/rpc/framing.ts";
import { DATA_FRAME } from "../src/network/wire.ts";
import { PROTOCOL_VERSION, REQUEST_TYPES, type PeerRole } from "../src/rpc/messages.ts";
import type { TransportSecurity } from "../src/rpc/security.ts";
import { BUN, Child, removeTempDirs, rng, tempDir, waitFor } from "./helpers.ts";

const FRAMES = Number(process.env.TM_FUZZ_FRAMES ?? 20_000);
const SEED = Number(process.env.TM_FUZZ_SEED ?? 20240611);
const SECRET = "fuzz-cluster-shared-secret-0123456789";
const SECURITY: TransportSecurity = { secret: Buffer.from(SECRET), insecure: false, tls: null };
/** RSS bound for each process under attack (an idle one is about 60-120 MB; a leak of buffered frames would blow it). */
const RSS_LIMIT_MB = 600;
const CONCURRENCY = 8;
const FAST = ["-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=5s"];
const ENV = { TM_SECURITY_AUTH_SECRET: SECRET };

afterAll(async () => {
  await Child.stopAll();
  removeTempDirs();
});

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

test(`fuzzing the JobManager's RPC port and a TaskManager's data port with ${FRAMES} frames while a job runs`, async () => {
  const dir = tempDir("tm-fuzz-");
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...FAST], ENV);
  const jmPort = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const start = (id: string) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${jmPort}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...FAST], ENV);
  const tmA = start("tm-a");
  const tmB = start("tm-b");
  const dataPort = Number((await tmA.waitForOutput(/TaskManager started id=tm-a dataPort=(\d+)/))[1]);
  await Promise.all([tmA, tmB].map((tm) => tm.waitForOutput(/registered at the JobManager/)));

  // The job beside: keyed sums across both TaskManagers, throttled so that it runs as long as the fuzzing.
  const rpc = await connectClient("127.0.0.1", jmPort, { security: SECURITY });
  const out = path.join(dir, "out");
  const jobFile = path.join(dir, "job.ts");
  const N = 200_000;
  // 50 pauses per source subtask: about 7.5 s by default, and as long as the fuzzing (~22 K frames/s) in long mode.
  const PAUSE_MS = Math.max(150, Math.round(FRAMES / 1000));
  fs.writeFileSync(jobFile, `export default (env) => {
    env.fromSequence(1, ${N}).map((x) => { if (x % 1000 === 0) { const t = Date.now(); while (Date.now() - t < ${PAUSE_MS}) {} } return x; })
      .keyBy((x) => x % 8).sum(0).filter((s) => s > 2_400_000_000).writeAsText(${JSON.stringify(out)});
  };`);
  const jobId = await submitJob(rpc, await prepareJob(jobFile, [], 4));
  await waitFor("all 8 tasks of the job running", async () => {
    const s = await rpc.request("jobStatus", { jobId });
    if (s.state !== "RUNNING" && s.state !== "CREATED" && s.state !== "SCHEDULING") throw new Error(`the job is ${s.state}: ${JSON.stringify(s.error ?? s.tasks)}`);
    return s.tasks.RUNNING === 8;
  }, 30_000);

  const rand = rng(SEED);
  const fuzz = new Fuzzer(rand, jmPort, dataPort);
  let maxRss = 0;
  const sampler = setInterval(() => {
    for (const p of [jm, tmA, tmB]) if (p.proc.exitCode === null) maxRss = Math.max(maxRss, rssMb(p.pid));
  }, 250);
  const t0 = Date.now();
  try {
    await Promise.all(Array.from({ length: CONCURRENCY }, () => fuzz.worker(FRAMES)));
  } finally {
    clearInterval(sampler);
  }
  const secs = (Date.now() - t0) / 1000;
  console.log(`fuzz: ${fuzz.sent} frames on ${fuzz.connections} connections in ${secs.toFixed(1)} s (seed ${SEED}); max RSS ${maxRss.toFixed(0)} MB`);

  // Both still up and serving: the job finishes with the right sums, a new client is served.
  expect(jm.proc.exitCode).toBeNull();
  expect(tmA.proc.exitCode).toBeNull();
  expect(tmB.proc.exitCode).toBeNull();
  const status = await waitForJob(rpc, jobId, () => {}, 100);
  expect(status.state).toBe("FINISHED");
  expect(status.recordsIn).toBe(N);
  // The final sum per key k of 1..N is the largest value written for it; the filter keeps only near-final ones.
  const lines = fs.readdirSync(out).flatMap((f) => fs.readFileSync(path.join(out, f), "utf8").split("\n")).filter(Boolean).map(Number);
  const expected = Array.from({ length: 8 }, (_, k) => {
    let s = 0;
    for (let x = k === 0 ? 8 : k; x <= N; x += 8) s += x;
    return s;
  });
  expect(Math.max(...lines)).toBe(Math.max(...expected));
  for (const e of expected) expect(lines).toContain(e);
  const again = await connectClient("127.0.0.1", jmPort, { security: SECURITY });
  expect((await again.request("clusterOverview", {})).taskManagers).toBe(2);
  again.close();
  rpc.close();
  expect(fuzz.sent).toBeGreaterThanOrEqual(FRAMES);
  expect(maxRss).toBeLessThan(RSS_LIMIT_MB);
  for (const p of [jm, tmA, tmB]) expect(rssMb(p.pid)).toBeLessThan(RSS_LIMIT_MB);
  // The bad input was noticed and logged, naming peers; every kind of damage reached the decoder or the handlers.
  const kinds = (text: string) => {
    const counts = new Map<string, number>();
    for (const m of text.matchAll(/error=(.{0,40})/g)) {
      const k = m[1]!.replace(/\d+/g, "N").replace(/".*/, "");
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    return [...counts].sort((a, b) => b[1] - a[1]).slice(0, 12);
  };
  console.log("JobManager errors:", kinds(jm.stderr), "\nTaskManager errors:", kinds(tmA.stderr));
  expect(jm.stderr).toMatch(/refused a connection peer=127\.0\.0\.1:\d+/);
  expect(jm.stderr).toMatch(/closed a connection peer=127\.0\.0\.1:\d+ role=(client|taskmanager) id=fuzz-\d+ error=frame of \d+ bytes exceeds the limit/);
  expect(jm.stderr).toMatch(/closed a connection .*error=undecodable frame body/);
  expect(jm.stderr).toMatch(/closed a connection .*error=(malformed|peer sent unknown message type)/);
  expect(jm.stderr).toMatch(/refused a connection .*error=handshake failed: authentication failed/);
  expect(tmA.stderr).toMatch(/(data connection failed|bad frame) .*peer=fuzz-\d+/);
}, 120_000 + FRAMES * 2);

// ---- the fuzzer ----

const RPC_CORPUS: unknown[] = [
  { t: "clusterOverview", id: 1, p: {} },
  { t: "listJobs", id: 2, p: {} },
  { t: "jobStatus", id: 3, p: { jobId: "0123456789abcdef0123456789abcdef" } },
  { t: "cancelJob", id: 4, p: { jobId: "fedcba9876543210fedcba9876543210" } },
  { t: "triggerSavepoint", id: 5, p: { jobId: "nope", dir: "/nonexistent" } },
  { t: "submitJob", id: 6, p: { artifact: new Uint8Array([1, 2, 3]), jobArgs: ["a"], graph: { vertices: [], edges: [], maxParallelism: 0 } } },
  { t: "heartbeat", id: 7, p: { from: "fuzz", slotReport: [{ slot: 0, jobId: null }], taskMetrics: { "x-0": { recordsIn: 1 } } } },
  { t: "updateTaskState", id: 8, p: { executionId: "nojob-0-0-0", state: "FAILED", error: { message: "m" } } },
  { t: "fetchArtifact", id: 9, p: { hash: "0".repeat(64) } },
  { t: "fetchArtifact", id: 10, p: { hash: "../../etc/passwd" } },
  { t: "acknowledgeCheckpoint", id: 11, p: { executionId: "nojob-1", checkpointId: 1, snapshot: { keyed: null, operator: null } } },
  { t: "declineCheckpoint", id: 12, p: { executionId: "nojob-1", checkpointId: 1, reason: "r" } },
  { t: "registerTaskManager", id: 13, p: { resourceId: "someone-else", dataHost: "127.0.0.1", dataPort: 1, slots: 4, resources: {}, pid: 1 } },
  { t: "offerSlots", id: 14, p: { resourceId: "nobody", slots: [0, 1, 2] } },
  { t: "response", re: 1, p: {} },
  { t: "submitTask", id: 15, p: {} },
];

const DATA_CORPUS: unknown[] = [
  [DATA_FRAME.CREDIT, "nojob|0|0|0", 2],
  [DATA_FRAME.EVENT, "nojob|0|0|0", { type: "end" }],
  [DATA_FRAME.DATA, "nojob|0|0|0", new Uint8Array(64), 0],
  [DATA_FRAME.OVERTAKEN, "nojob|0|0|0", new Uint8Array(64)],
  [DATA_FRAME.EVENT, "nojob|0|0|0", { type: "barrier", checkpointId: 1, timestamp: 1, dir: "/x", unaligned: true }, 1],
  [DATA_FRAME.CREDIT, 12, "x"],
  [9, null],
];

const ROLES: PeerRole[] = ["client", "taskmanager", "data"];

class Fuzzer {
  sent = 0;
  connections = 0;
  private id = 0;

  constructor(
    private readonly rand: () => number,
    private readonly rpcPort: number,
    private readonly dataPort: number,
  ) {}

  private int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  private pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }

  async worker(total: number): Promise<void> {
    while (this.sent < total) {
      const toJm = this.rand() < 0.5;
      const port = toJm ? this.rpcPort : this.dataPort;
      this.connections++;
      if (this.rand() < 0.3) await this.unauthenticated(port);
      else await this.authenticated(port, toJm);
    }
  }

  /** Garbage or mutated Hellos before any handshake. */
  private async unauthenticated(port: number): Promise<void> {
    const frames: Buffer[] = [];
    const n = 1 + this.int(4);
    for (let i = 0; i < n; i++) {
      const hello = { version: this.rand() < 0.9 ? PROTOCOL_VERSION : this.int(5), role: this.pick([...ROLES, "admin", 7]), id: "fuzz", nonce: new Uint8Array(this.rand() < 0.8 ? 32 : this.int(64)) };
      frames.push(this.mutate(encodeFrame(hello)));
    }
    await this.rawSend(port, frames);
  }

  /** A proper handshake with the secret, then a batch of mutated frames on the authenticated connection. */
  private async authenticated(port: number, toJm: boolean): Promise<void> {
    const role: PeerRole = toJm ? this.pick(["client", "taskmanager"] as const) : "data";
    let conn;
    try {
      conn = await connectFramed("127.0.0.1", port, { version: PROTOCOL_VERSION, role, id: `fuzz-${this.id++}` }, { security: SECURITY });
    } catch {
      return; // refused (e.g. over the per-address limit): that is fine too
    }
    conn.setFrameHandler(() => {}); // replies are dropped
    const corpus = toJm ? RPC_CORPUS : DATA_CORPUS;
    const frames: Buffer[] = [];
    const n = 5 + this.int(60);
    for (let i = 0; i < n; i++) {
      const r = this.rand();
      if (r < 0.45) frames.push(encodeFrame(this.retype(structuredClone(this.pick(corpus)))));
      else if (r < 0.9) frames.push(this.mutate(encodeFrame(this.pick(corpus))));
      else if (!toJm && r < 0.95) frames.push(this.mutate(encodeBufferFrame("nojob|0|0|0", this.int(1000), new Uint8Array(this.int(2000)))));
      else frames.push(this.mutate(encodeFrame(this.pick(corpus)), true));
    }
    this.sent += frames.length;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        conn.close();
        resolve();
      }, 300);
      conn.onClose(() => {
        clearTimeout(timer);
        resolve();
      });
      try {
        conn.socket.write(Buffer.concat(frames));
        conn.socket.end();
      } catch {
        resolve();
      }
    });
  }

  /** Replaces fields with values of the wrong type: numbers, strings, arrays, null, nesting. */
  private retype(body: unknown): unknown {
    const wrong = () => this.pick<unknown>([null, -1, 2 ** 53, NaN, "", "x".repeat(this.int(3000)), [], {}, [[[[]]]], true, new Uint8Array(5), this.nested(this.int(200))]);
    if (Array.isArray(body)) {
      const i = this.int(body.length + 1);
      body[i] = wrong();
      return body;
    }
    if (typeof body === "object" && body !== null) {
      const o = body as Record<string, unknown>;
      const r = this.rand();
      if (r < 0.3) o.t = this.rand() < 0.5 ? this.pick([...REQUEST_TYPES]) : wrong();
      else if (r < 0.5) o.id = wrong();
      else if (r < 0.8 && typeof o.p === "object" && o.p !== null) {
        const keys = Object.keys(o.p);
        (o.p as Record<string, unknown>)[keys.length ? this.pick(keys) : "k"] = wrong();
      } else o.p = wrong();
      return o;
    }
    return wrong();
  }

  private nested(depth: number): unknown {
    let v: unknown = 1;
    for (let i = 0; i < depth; i++) v = this.rand() < 0.5 ? [v] : { a: v };
    return v;
  }

  /** Flipped bits, truncated or huge lengths, deep raw nesting, random bodies. */
  private mutate(frame: Buffer, harsh = false): Buffer {
    const f = Buffer.from(frame);
    const r = this.rand();
    if (!harsh && r < 0.5) {
      // Flip 1-8 bits of the body (the length stays right).
      for (let i = 0, n = 1 + this.int(8); i < n && f.length > 4; i++) { const at = 4 + this.int(f.length - 4); f[at] = f[at]! ^ (1 << this.int(8)); }
      return f;
    }
    const h = this.rand();
    if (h < 0.25) {
      const len = this.pick([0xffffffff, 0x7fffffff, 0x04000001, 0x00100000, 0x00010001, f.length + this.int(1000)]);
      f.writeUInt32BE(len >>> 0, 0);
      return f;
    }
    if (h < 0.45) return f.subarray(0, this.int(f.length)); // truncated: the rest never comes (or the next frame's bytes do)
    if (h < 0.7) {
      // Deeply nested msgpack: fixarray-of-one or fixmap-of-one, thousands deep.
      const depth = 1000 + this.int(60_000);
      // [[[...nil]]] (0x91 each level) or {a: {a: ... nil}} (0x81 0xa1 0x61 each level)
      const level = this.rand() < 0.5 ? [0x91] : [0x81, 0xa1, 0x61];
      const body = Buffer.alloc(depth * level.length + 1);
      for (let i = 0; i < depth * level.length; i++) body[i] = level[i % level.length]!;
      body[body.length - 1] = 0xc0;
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      return Buffer.concat([head, body]);
    }
    // A random body of a random (honest) length.
    const body = Buffer.alloc(this.int(4096));
    for (let i = 0; i < body.length; i++) body[i] = this.int(256);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    return Buffer.concat([head, body]);
  }

  private rawSend(port: number, frames: Buffer[]): Promise<void> {
    this.sent += frames.length;
    return new Promise((resolve) => {
      const sock = net.connect(port, "127.0.0.1");
      const timer = setTimeout(() => sock.destroy(), 300);
      sock.on("error", () => {});
      sock.on("connect", () => {
        sock.write(Buffer.concat(frames));
        sock.end();
      });
      sock.resume();
      sock.on("close", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
