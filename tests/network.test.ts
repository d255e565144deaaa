// The network stack across real TaskManager processes: exactly-once delivery and per-channel order through a
// keyBy shuffle, backpressure from a slow sink with bounded memory, a stalled channel that does not stall
// the others sharing its TCP connection, and a record larger than a network buffer.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { BUN, Child, removeTempDirs, ROOT, tempDir, waitFor } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=5s"];
let dir: string;
let rpc: RpcConnection;
let tms: Child[];

beforeAll(async () => {
  dir = tempDir("tm-net-");
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...FAST]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  tms = ["a", "b"].map((id) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=tm-${id}`, ...FAST]));
  await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/)));
  rpc = await connectClient("127.0.0.1", port);
});

afterAll(async () => {
  rpc?.close();
  await Child.stopAll();
  removeTempDirs();
});

function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024;
}

/** Runs a job, sampling the TaskManagers' RSS and the job's status while it runs. */
async function runJob(name: string, source: string, parallelism = 2, onStatus?: (s: JobStatus) => void) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, source);
  const jobId = await submitJob(rpc, await prepareJob(file, [], parallelism));
  let peakRss = 0;
  const sampler = setInterval(async () => {
    for (const tm of tms) peakRss = Math.max(peakRss, rssMb(tm.pid));
    if (onStatus) onStatus(await rpc.request("jobStatus", { jobId }));
  }, 100);
  try {
    const status = await waitForJob(rpc, jobId, () => {});
    return { status, peakRss };
  } finally {
    clearInterval(sampler);
  }
}

const summaries = (prefix: string) =>
  fs.readdirSync(dir).filter((f) => f.startsWith(prefix)).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")));

describe("network stack across two TaskManager processes", () => {
  test("10 million records through a keyBy shuffle: each exactly once, per-channel order kept, RSS bounded", async () => {
    const N = 10_000_000;
    const { status, peakRss } = await runJob("shuffle.ts", `
      import * as fs from "node:fs";
      import { assignKeyToOperator } from ${JSON.stringify(path.join(ROOT, "src/state/key-groups.ts"))};
      export default (env) => {
        env.fromSequence(0, ${N - 1})
          .keyBy((x) => x % 1009)
          .addSink({
            open(ctx) { this.ctx = ctx; this.n = 0; this.sum = 0; this.last = [-1, -1]; this.outOfOrder = 0; this.misrouted = 0; },
            invoke(x) {
              this.n++; this.sum += x;
              const producer = x < ${N / 2} ? 0 : 1; // fromSequence gives each source subtask a contiguous half
              if (x <= this.last[producer]) this.outOfOrder++;
              this.last[producer] = x;
              if (assignKeyToOperator(x % 1009, this.ctx.parallelism, 128) !== this.ctx.subtaskIndex) this.misrouted++;
            },
            close() {
              fs.writeFileSync(${JSON.stringify(dir)} + "/shuffle-" + this.ctx.subtaskIndex + ".json",
                JSON.stringify({ n: this.n, sum: this.sum, outOfOrder: this.outOfOrder, misrouted: this.misrouted }));
            },
          });
      };`);
    expect(status.state).toBe("FINISHED");
    const parts = summaries("shuffle-");
    expect(parts).toHaveLength(2);
    expect(parts.reduce((a, p) => a + p.n, 0)).toBe(N);
    expect(parts.reduce((a, p) => a + p.sum, 0)).toBe((N * (N - 1)) / 2);
    for (const p of parts) {
      expect(p.outOfOrder).toBe(0);
      expect(p.misrouted).toBe(0);
      expect(p.n).toBeGreaterThan(N / 4); // both consumers got a fair share
    }
    // Both TaskManagers sent and received over the network.
    const sources = status.vertices[0]!.subtasks;
    expect(new Set(sources.map((s) => s.taskManager))).toEqual(new Set(["tm-a", "tm-b"]));
    expect(peakRss).toBeLessThan(250); // MB per TaskManager process (about 90 MB seen)
  }, 120_000);

  test("a slow sink backpressures the sources; memory stays bounded and every record arrives", async () => {
    const N = 60_000;
    let maxBackpressure = 0;
    const { status, peakRss } = await runJob("slow.ts", `
      import * as fs from "node:fs";
      export default (env) => {
        env.fromSequence(1, ${N})
          .map((x) => [x, "payload-".repeat(8)])
          .keyBy((t) => t[0] % 7)
          .addSink({
            open(ctx) { this.ctx = ctx; this.n = 0; this.sum = 0; },
            invoke(t) { const until = performance.now() + 0.05; while (performance.now() < until) {} this.n++; this.sum += t[0]; },
            close() { fs.writeFileSync(${JSON.stringify(dir)} + "/slow-" + this.ctx.subtaskIndex + ".json", JSON.stringify({ n: this.n, sum: this.sum })); },
          });
      };`, 2, (s) => {
      for (const st of s.vertices[0]?.subtasks ?? []) maxBackpressure = Math.max(maxBackpressure, st.metrics.backPressuredTimeMsPerSecond);
    });
    expect(status.state).toBe("FINISHED");
    const parts = summaries("slow-");
    expect(parts.reduce((a, p) => a + p.n, 0)).toBe(N);
    expect(parts.reduce((a, p) => a + p.sum, 0)).toBe((N * (N + 1)) / 2);
    expect(maxBackpressure).toBeGreaterThan(100); // sources spent most of some second waiting for buffers
    expect(peakRss).toBeLessThan(250); // MB per TaskManager process (about 90 MB seen)
  }, 60_000);

  test("one stalled channel does not stall the other channels sharing the TCP connection", async () => {
    const flag = path.join(dir, "release-stall");
    const jobPromise = runJob("stall.ts", `
      import * as fs from "node:fs";
      const nap = new Int32Array(new SharedArrayBuffer(4));
      const summary = (name) => ({
        open(ctx) { this.ctx = ctx; this.n = 0; this.sum = 0; },
        invoke(x) {
          // Pipeline X's second sink subtask blocks its Worker until the test releases it.
          if (name === "x" && this.ctx.subtaskIndex === 1) while (!fs.existsSync(${JSON.stringify(flag)})) Atomics.wait(nap, 0, 0, 5);
          this.n++; this.sum += x;
        },
        close() { fs.writeFileSync(${JSON.stringify(dir)} + "/stall-" + name + "-" + this.ctx.subtaskIndex + ".json", JSON.stringify({ n: this.n, sum: this.sum })); },
      });
      export default (env) => {
        env.fromSequence(1, 200000).keyBy((x) => x % 11).addSink(summary("x"));
        env.fromSequence(1, 300000).keyBy((x) => x % 13).addSink(summary("y"));
      };`);
    // Pipeline Y completes while X is stalled on the same TaskManager pair.
    await waitFor("pipeline y done", () => summaries("stall-y-").length === 2, 30_000);
    expect(summaries("stall-x-").some((p) => p.n === undefined)).toBe(false);
    expect(fs.existsSync(path.join(dir, "stall-x-1.json"))).toBe(false);
    const y = summaries("stall-y-");
    expect(y.reduce((a, p) => a + p.n, 0)).toBe(300_000);
    fs.writeFileSync(flag, "go");
    const { status } = await jobPromise;
    expect(status.state).toBe("FINISHED");
    const x = summaries("stall-x-");
    expect(x.reduce((a, p) => a + p.n, 0)).toBe(200_000);
    expect(x.reduce((a, p) => a + p.sum, 0)).toBe((200_000 * 200_001) / 2);
  }, 60_000);

  test("records of 2 MiB cross between TaskManagers intact", async () => {
    const make = `(i) => { let s = ""; let v = i * 2654435761 >>> 0; while (s.length < 2 * 1024 * 1024) { v = (Math.imul(v, 1103515245) + 12345) >>> 0; s += String.fromCharCode(32 + (v % 95), 0x4e00 + (v % 500)); } return s; }`;
    const { status } = await runJob("big.ts", `
      import * as fs from "node:fs";
      import { createHash } from "node:crypto";
      const make = ${make};
      export default (env) => {
        env.fromSequence(0, 5)
          .map((i) => [i, make(i)])
          .keyBy((t) => t[0])
          .addSink({
            open(ctx) { this.ctx = ctx; this.seen = []; },
            invoke(t) { this.seen.push([t[0], t[1].length, createHash("sha256").update(t[1]).digest("hex")]); },
            close() { fs.writeFileSync(${JSON.stringify(dir)} + "/big-" + this.ctx.subtaskIndex + ".json", JSON.stringify(this.seen)); },
          });
      };`);
    expect(status.state).toBe("FINISHED");
    const seen = summaries("big-").flat().sort((a, b) => a[0] - b[0]);
    const makeFn = eval(make) as (i: number) => string;
    const expected = [0, 1, 2, 3, 4, 5].map((i) => {
      const s = makeFn(i);
      return [i, s.length, createHash("sha256").update(s).digest("hex")];
    });
    expect(seen).toEqual(expected);
    // Both TaskManagers received some of them, so records crossed the network.
    expect(summaries("big-").filter((p) => p.length > 0)).toHaveLength(2);
  }, 60_000);
});
