// Network memory (issue 22): every task gets its required minimum, the rest of the pool is shared and moves to the
// tasks below their configuration as others end; a deployment fails only when the minimum cannot be had.
// The account (BufferBudget) is tested directly, with seeded random arrivals and departures; the rest runs on
// clusters of real Workers and sockets: the keyed sum at p=32 and p=64 on one TaskManager with the default network
// configuration (a `local` cluster in a child process), and in-process a refused deployment, a task that grows as
// another job ends (seen through REST and /metrics), and checkpoints with backpressure on a pool that covers only the
// minimum.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { BufferBudget, channelShare, networkSizing, planBuffers, type TaskBuffers } from "../src/network/buffer-budget.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { RemoteReceiver } from "../src/network/remote-receiver.ts";
import { createRing } from "../src/network/shared-ring.ts";
import type { TaskDeployment } from "../src/rpc/messages.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { BUN, Child, removeTempDirs, rng, tempDir, waitFor, writeJob } from "./helpers.ts";

afterEach(() => Child.stopAll());
afterAll(removeTempDirs);

const HERE = "tm-here";
const THERE = "tm-there";
const SETTINGS = { buffersPerChannel: 2, floatingBuffersPerGate: 8 };

/** A deployment with `outputs` output edges and `inputs` input edges, each to/from `width` subtasks on `where`. */
function deployment(id: string, shape: { parallelism: number; inputs?: number[]; outputs?: number[]; where?: string }): TaskDeployment {
  const at = (n: number) => Array.from({ length: n }, (_, subtask) => ({ resourceId: shape.where ?? HERE, dataHost: "127.0.0.1", dataPort: 1, subtask }));
  return {
    jobId: "j", jobName: "j", executionId: id, vertexId: 1, vertexName: "v", subtaskIndex: 0, parallelism: shape.parallelism, maxParallelism: 128, slot: 0,
    artifactHash: "", jobArgs: [], operatorIds: [], runtimeMode: "streaming", bufferTimeoutMs: 100, planFingerprint: "", stateBackend: null, attempt: 0,
    checkpointingMode: "EXACTLY_ONCE", restore: null,
    inputs: (shape.inputs ?? []).map((w, edgeId) => ({ edgeId, producers: at(w) })),
    outputs: (shape.outputs ?? []).map((w, edgeId) => ({ edgeId, partitioner: "hash" as const, targets: at(w) })),
  };
}

const held = (b: TaskBuffers) => b.outputBuffers.reduce((a, n) => a + n, 0) + b.floating.reduce((a, n) => a + n, 0) + b.plan.rings * b.ringSlots + b.plan.remoteInputs * b.exclusive;

describe("the account (BufferBudget)", () => {
  test("required: one buffer per subpartition, ring slot and remote input channel; configured as before", () => {
    const local = planBuffers(deployment("a", { parallelism: 4, inputs: [4], outputs: [4] }), HERE, SETTINGS);
    expect(local.required).toBe(4 + 4); // output pool: 4 subpartitions; 4 input rings of 1 slot
    expect(local.configured).toBe(4 * 2 + 8 + 4 * 10);
    const remote = planBuffers(deployment("b", { parallelism: 4, inputs: [4], where: THERE }), HERE, SETTINGS);
    expect(remote.required).toBe(4 + 4); // 4 rings + 4 exclusive
    expect(remote.configured).toBe(4 * 10 + 4 * 2 + 8);
  });

  test("a task whose minimum the pool cannot give is refused with the minimum, its configuration, the pool and the key", () => {
    const budget = new BufferBudget<string>({ totalBuffers: 40, ...SETTINGS, slots: 4, raiseHint: "taskmanager.memory.network.max" }, () => {});
    budget.register("a", deployment("a", { parallelism: 1, inputs: [16], outputs: [16] }), HERE); // needs 32
    expect(() => budget.register("b", deployment("b", { parallelism: 1, inputs: [8], outputs: [8] }), HERE)).toThrow(
      "insufficient network buffers: the task needs at least 16 (104 configured), this TaskManager has 8 of 40 not required by other tasks (raise taskmanager.memory.network.max)",
    );
    budget.unregister("a");
    expect(held(budget.register("b", deployment("b", { parallelism: 1, inputs: [8], outputs: [8] }), HERE))).toBeLessThanOrEqual(40);
  });

  test("optional buffers go back when another task needs them and come back when it ends (no starvation)", () => {
    const resized: string[] = [];
    const budget = new BufferBudget<string>({ totalBuffers: 100, ...SETTINGS, slots: 1, raiseHint: "k" }, (key) => resized.push(key));
    const a = budget.register("a", deployment("a", { parallelism: 1, outputs: [10] }), HERE);
    expect(a.outputBuffers).toEqual([28]); // alone: its configured 10 x 2 + 8
    const b = budget.register("b", deployment("b", { parallelism: 1, outputs: [10] }), HERE);
    const c = budget.register("c", deployment("c", { parallelism: 1, outputs: [10] }), HERE);
    const d = budget.register("d", deployment("d", { parallelism: 1, outputs: [10] }), HERE);
    // 4 x 28 > 100: each keeps its 10 and an equal part of the 60 left.
    for (const t of [a, b, c, d]) expect(t.outputBuffers).toEqual([10 + Math.floor((60 / 72) * 18)]);
    expect(resized).toEqual(["a", "b", "c"]); // shrunk as d came (3 x 28 still fit in 100)
    budget.unregister("a"); // the three left fit at their configuration again: all grow back
    for (const t of [b, c, d]) expect(t.outputBuffers).toEqual([28]);
    expect(resized.slice(3)).toEqual(["b", "c", "d"]);
    budget.unregister("b");
    expect(resized.length).toBe(6);
    expect(budget.report()).toEqual({ total: 100, requiredInUse: 20, optionalInUse: 36, free: 44 });
  });

  test("seeded random arrivals and departures: minimums always granted when they fit, never more held than the pool", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const r = rng(seed);
      const total = 200 + Math.floor(r() * 2000);
      const budget = new BufferBudget<number>({ totalBuffers: total, ...SETTINGS, slots: 8, raiseHint: "k" }, () => {});
      const live = new Map<number, TaskBuffers>();
      let requiredSum = 0;
      for (let step = 0; step < 300; step++) {
        if (live.size > 0 && r() < 0.4) {
          const key = [...live.keys()][Math.floor(r() * live.size)]!;
          requiredSum -= live.get(key)!.plan.required;
          live.delete(key);
          budget.unregister(key);
        } else {
          const p = 1 + Math.floor(r() * 16);
          const d = deployment(String(step), { parallelism: p, inputs: r() < 0.7 ? [p] : [], outputs: r() < 0.7 ? [p] : [], where: r() < 0.3 ? THERE : HERE });
          const fixedOptional = [...live.values()].reduce((a, b) => a + b.plan.rings * (b.ringSlots - 1) + b.plan.remoteInputs * (b.exclusive - 1), 0);
          const fits = planBuffers(d, HERE, SETTINGS).required <= total - requiredSum - fixedOptional;
          if (fits) {
            const b = budget.register(step, d, HERE);
            live.set(step, b);
            requiredSum += b.plan.required;
            for (const [i, o] of b.plan.outputs.entries()) expect(b.outputBuffers[i]).toBeGreaterThanOrEqual(o.required);
          } else {
            expect(() => budget.register(step, d, HERE)).toThrow(/insufficient network buffers: the task needs at least \d+/);
          }
        }
        const sumHeld = [...live.values()].reduce((a, b) => a + held(b), 0);
        expect(sumHeld).toBeLessThanOrEqual(total);
        expect(budget.report().free).toBe(total - sumHeld);
        expect(budget.report().requiredInUse).toBe(requiredSum);
      }
    }
  });

  test("a Worker's output pool that shrinks drops buffers as they come back; one that grows creates more", () => {
    const pool = new LocalBufferPool(4, 1024, 0);
    const taken = [pool.request(), pool.request(), pool.request()].map((b) => b!);
    pool.recycle(taken.pop()!); // 2 out, 1 free, 3 created
    pool.resize(1);
    expect(pool.inUse).toBe(2); // the free one is dropped at once
    expect(pool.available).toBe(false);
    pool.recycle(taken.pop()!);
    expect(pool.inUse).toBe(1);
    expect(pool.available).toBe(false); // dropped, not pooled: 1 created, 1 out
    pool.resize(3);
    expect(pool.request()).not.toBeNull();
    expect(pool.request()).not.toBeNull();
    expect(pool.request()).toBeNull();
    expect(pool.inUse).toBe(3);
  });

  test("a remote input gate that shrinks takes its floating buffers back as they are freed: no credit for them", async () => {
    const credits: number[] = [];
    const receiver = new RemoteReceiver(1024, (_to, frame) => credits.push(frame[2] as number));
    const gate = receiver.newGate(4);
    const task = { deployment: deployment("c", { parallelism: 1 }), post: () => {}, fail: (err: Error) => { throw err; } };
    receiver.add("j|0|0|0", task, { resourceId: THERE, dataHost: "127.0.0.1", dataPort: 1 }, gate, 1, createRing(16, 1024));
    const bytes = new Uint8Array(100).fill(7);
    receiver.onData("j|0|0|0", bytes, 5); // backlog 5 > 1 free: the gate lends its 4 floating buffers
    await Promise.resolve();
    expect(credits).toEqual([1, 5]); // the first credit, then the recycled exclusive buffer and 4 floating ones
    receiver.resizeGate(gate, 1); // the TaskManager needs 3 of them elsewhere
    for (let i = 0; i < 5; i++) receiver.onData("j|0|0|0", bytes, 0);
    await Promise.resolve();
    // Of the 5 freed buffers, 3 floating ones went back for good and 1 returned to the gate (its new limit): the
    // channel's own exclusive buffer is credit again.
    expect(credits.slice(2).reduce((a, n) => a + n, 0)).toBe(1);
    expect(gate.floating).toBe(1);
    receiver.resizeGate(gate, 4); // room again: lent once a backlog asks for it
    receiver.onData("j|0|0|0", bytes, 6);
    await Promise.resolve();
    expect(gate.floating).toBe(0);
  });

  test("one blocked channel never leaves another without a buffer", () => {
    expect(channelShare(4, 4, 10)).toBe(1); // at the minimum: one each
    expect(channelShare(16, 4, 10)).toBe(10); // configured 4 x 2 + 8: max-buffers-per-channel as before
    expect(channelShare(7, 4, 10)).toBe(4);
  });
});

describe("sizing from the configuration", () => {
  const base = defaultConfig();
  test("numberOfBuffers wins; else the fraction of the process size within min and max; else of physical memory", () => {
    expect(networkSizing({ ...base, "taskmanager.network.numberOfBuffers": 500, "taskmanager.memory.process.size": 8 * 2 ** 30 }, 1 << 30).totalBuffers).toBe(500);
    expect(networkSizing({ ...base, "taskmanager.memory.process.size": 2000 * 1048576 }, 64 * 2 ** 30).totalBuffers).toBe(Math.floor((200 * 1048576) / 32768));
    expect(networkSizing({ ...base, "taskmanager.memory.process.size": 100 * 1048576 }, 64 * 2 ** 30).totalBuffers).toBe((64 * 1048576) / 32768); // min
    expect(networkSizing({ ...base, "taskmanager.memory.process.size": 0 }, 64 * 2 ** 30).totalBuffers).toBe((1 << 30) / 32768); // max
    expect(networkSizing({ ...base, "taskmanager.memory.process.size": 0 }, 4 * 2 ** 30).totalBuffers).toBe(Math.floor((0.1 * (4 * 2 ** 30)) / 32768));
    expect(() => networkSizing({ ...base, "taskmanager.memory.network.min": 2 * 2 ** 30 }, 4 * 2 ** 30)).toThrow("taskmanager.memory.network.min (2147483648 bytes) is larger than taskmanager.memory.network.max (1073741824 bytes)");
  });
});

// ---- on a cluster ----

const startCluster = clusterPerTest();
/** The machine these tests share is loaded (2 cores, other test runs): starting 128 Workers stalls the process for
 * seconds, so heartbeats get a generous time-out. The network configuration is the default. */
const PATIENT: Partial<Config> = { "heartbeat.timeout": 120_000 };

function keyedSumJob(dir: string, n: number, keys: number, slowSinkMs = 0, checkpointMs = 0): string {
  return writeJob(dir, "keyed-sum.ts", `
    import * as fs from "node:fs";
    export default (env) => {
      ${checkpointMs > 0 ? `env.enableCheckpointing(${checkpointMs});` : ""}
      env.fromSequence(1, ${n})
        .map((x) => [x % ${keys}, x])
        .keyBy((t) => t[0]).sum(1)
        .addSink({
          open(ctx) { this.ctx = ctx; this.last = {}; this.n = 0; },
          invoke(t) { ${slowSinkMs > 0 ? `if (this.n % 20 === 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${slowSinkMs});` : ""} this.n++; this.last[t[0]] = t[1]; },
          close() { fs.writeFileSync(${JSON.stringify(dir)} + "/out-" + this.ctx.subtaskIndex + ".json", JSON.stringify({ n: this.n, last: this.last })); },
        });
    };`);
}

/** Every record arrived exactly once and each key's last sum is the sum computed directly. */
function expectExactSums(dir: string, n: number, keys: number, parallelism: number): void {
  const files = fs.readdirSync(dir).filter((f) => f.startsWith("out-"));
  expect(files.length).toBe(parallelism);
  let count = 0;
  const last = new Map<number, number>();
  for (const f of files) {
    const o = JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as { n: number; last: Record<string, number> };
    count += o.n;
    for (const [k, v] of Object.entries(o.last)) {
      expect(last.has(Number(k))).toBe(false); // each key in one subtask
      last.set(Number(k), v);
    }
  }
  const expected = new Map<number, number>();
  for (let x = 1; x <= n; x++) expected.set(x % keys, (expected.get(x % keys) ?? 0) + x);
  expect(count).toBe(n);
  expect([...last.entries()].sort((a, b) => a[0] - b[0])).toEqual([...expected.entries()].sort((a, b) => a[0] - b[0]));
}

for (const p of [32, 64]) {
  test(`keyed sum at p=${p} on one TaskManager with the default network configuration: exact output`, async () => {
    const dir = tempDir(`tm-netmem-${p}-`);
    // A local cluster of its own process, with the setting docs/configuration.md gives for many more slots than cores
    // (2 p task Workers on this machine's 2 cores): started in the test runner's process, the Workers' hand-offs to
    // the JIT's compiler threads made this test take 70 s in a full run (docs/benchmarks.md, "Many Workers per core").
    const local = new Child([BUN, "main.ts", "local", "-p", String(p), "-D", `heartbeat.timeout=${PATIENT["heartbeat.timeout"]}`, keyedSumJob(dir, 20_000, 500)], { BUN_JSC_useConcurrentJIT: "0" });
    const code = await local.exited(200_000);
    expect({ code, finished: /Job "keyed-sum" \([0-9a-f]+\) FINISHED after/.test(local.stderr) }, local.stderr.slice(-2000)).toEqual({ code: 0, finished: true });
    expectExactSums(dir, 20_000, 500, p);
  }, 240_000);
}

test("a TaskManager whose pool cannot give the minimum refuses the deployment, naming the minimum and the key", async () => {
  const dir = tempDir("tm-netmem-refuse-");
  // 8 x 8 channels: a keyed task needs 8 ring slots, a source 8 output buffers; 40 buffers hold five such minimums.
  const { client } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 8, config: { ...defaultConfig(), ...PATIENT, "taskmanager.network.numberOfBuffers": 40 } });
  const jobId = await submitJob(client, await prepareJob(keyedSumJob(dir, 1000, 10), [], 8));
  const final = await waitForJob(client, jobId, () => {}, 200);
  expect(final.state).toBe("FAILED");
  expect(final.error?.message).toMatch(/^insufficient network buffers: the task needs at least 8 \(\d+ configured\), this TaskManager has [0-7] of 40 not required by other tasks \(raise taskmanager\.network\.numberOfBuffers\)$/);
}, 120_000);

test("a task that started with less than its configuration gets its share when another job ends, within a heartbeat or two", async () => {
  const dir = tempDir("tm-netmem-share-");
  // Two jobs of p=2 (a source -> keyed sink each): each task's minimum is 2; configured, a source's pool is
  // 2 x 2 + 8 = 12 and a keyed task's two rings 2 x 10 = 20. 60 buffers: not both jobs at their configuration.
  const { cluster, client } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 4, config: { ...defaultConfig(), ...PATIENT, "taskmanager.network.numberOfBuffers": 60, "heartbeat.interval": 200 } });
  const gate = path.join(dir, "release-a");
  const job = (name: string, release: string | null) => writeJob(dir, name, `
    import * as fs from "node:fs";
    export default (env) => {
      env.fromSequence(1, 4000)
        .map((x) => { ${release ? `while (x % 2000 === 1000 && !fs.existsSync(${JSON.stringify(release)})) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);` : "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);"} return x; })
        .keyBy((x) => x % 7).addSink(() => {});
    };`);
  const a = await submitJob(client, await prepareJob(job("a.ts", gate), [], 2));
  const tmBuffers = async () => {
    const res = await fetch(`http://127.0.0.1:${cluster.restPort}/taskmanagers/local-tm-0`);
    return (await res.json()) as { network: { requiredInUse: number; optionalInUse: number; total: number } | null; tasks: { jobId: string; vertex: string; networkBuffers: { held: number; configured: number; required: number } | null }[] };
  };
  await waitFor("job a running with its buffers reported", async () => (await tmBuffers()).tasks.filter((t) => t.jobId === a && t.networkBuffers).length === 4, 60_000);
  const b = await submitJob(client, await prepareJob(job("b.ts", null), [], 2));
  const sourcesOfB = async () => (await tmBuffers()).tasks.filter((t) => t.jobId === b && t.vertex.startsWith("Sequence Source") && t.networkBuffers);
  await waitFor("every task of both jobs reported", async () => (await tmBuffers()).tasks.filter((t) => t.networkBuffers).length === 8, 60_000);
  const before = await sourcesOfB();
  for (const t of before) expect(t.networkBuffers!.held).toBeLessThan(t.networkBuffers!.configured); // below its configuration
  for (const t of before) expect(t.networkBuffers!.held).toBeGreaterThanOrEqual(t.networkBuffers!.required);
  const split = (await tmBuffers()).network!;
  expect(split.requiredInUse).toBe(8 * 2); // 8 tasks x 2
  expect(split.requiredInUse + split.optionalInUse).toBeLessThanOrEqual(60);
  // The Prometheus endpoint says the same: per task held vs configured, per TaskManager required vs optional.
  const metrics = await (await fetch(`http://127.0.0.1:${cluster.taskManagers[0]!.metricsPort}/metrics`)).text();
  expect(metrics).toMatch(/^tm_taskmanager_network_buffers_required\{[^}]*\} 16$/m);
  expect(metrics).toMatch(/^tm_task_network_buffers_configured\{[^}]*task_name="Sequence Source[^}]*\} 12$/m);
  const lint = Bun.spawn(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(metrics), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(lint.stdout).text(), new Response(lint.stderr).text(), lint.exited]);
  expect({ problems: (out + err).trim(), code }).toEqual({ problems: "", code: 0 });
  // Job a ends: b's sources grow to their configuration, without b doing anything.
  fs.writeFileSync(gate, "");
  expect((await waitForJob(client, a, () => {}, 200)).state).toBe("FINISHED");
  const t0 = Date.now();
  await waitFor("job b's sources at their configuration", async () => (await sourcesOfB()).every((t) => t.networkBuffers!.held === t.networkBuffers!.configured), 10_000);
  expect(Date.now() - t0).toBeLessThan(10_000);
  expect((await waitForJob(client, b, () => {}, 200)).state).toBe("FINISHED");
}, 180_000);

test("checkpoints complete and backpressure holds with a pool that covers only the minimum", async () => {
  const dir = tempDir("tm-netmem-minimum-");
  const p = 4;
  // Minimum of the keyed sum at p=4 on one TaskManager: 4 sources x 4 subpartitions + 4 keyed tasks x 4 rings.
  const { client } = await startCluster({
    taskManagers: 1,
    slotsPerTaskManager: p,
    config: { ...defaultConfig(), ...PATIENT, "taskmanager.network.numberOfBuffers": 2 * p * p, "state.checkpoints.dir": path.join(dir, "checkpoints") },
  });
  const n = 60_000;
  const jobId = await submitJob(client, await prepareJob(keyedSumJob(dir, n, 100, 5, 100), [], p));
  let backpressured = 0;
  const final = await waitForJob(client, jobId, () => {}, 200, (s: JobStatus) => {
    for (const v of s.vertices) for (const st of v.subtasks) if (v.name.startsWith("Sequence Source") && st.metrics.backPressuredTimeMsPerSecond > 200) backpressured++;
  });
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(0);
  expect(final.checkpoints.completed).toBeGreaterThan(2);
  // A checkpoint that meets the end of the input is aborted (declined or not acknowledged); no other fails.
  expect(final.checkpoints.history.filter((c) => c.status === "FAILED" && !/ended before acknowledging|reached the end of its input/.test(c.failure ?? ""))).toEqual([]);
  expect(backpressured).toBeGreaterThan(0); // the slow sink held the sources back
  expectExactSums(dir, n, 100, p);
}, 180_000);
