// Two-input operators (connect): CoMap, CoFlatMap and CoProcess, not keyed and keyed (connect of two keyed streams,
// or keyBy(key1, key2) on the connected streams) with keyed state and timers shared by both inputs per key; the
// operator's watermark is the minimum of both inputs'; state and timers through a savepoint restored at another
// parallelism; functions of the wrong shape refused at submission. Each job's output is compared with a reference
// computed here, single-threaded, from the same generated input (out of order in event time).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { setLogLevel } from "../src/util/log.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { readMetadata } from "../src/jobmanager/checkpoint-store.ts";
import { readChannelState } from "../src/runtime/channel-state.ts";
import { buildJobGraph } from "../src/api/job-graph.ts";
import { describePlan } from "../src/api/plan.ts";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { committedLines, removeTempDirs, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";
import { clusterForTests, clusterPerTest } from "./cluster-helpers.ts";

setLogLevel("warn");
const API = JSON.stringify(path.resolve("src/api/index.ts"));

// The generated input, shared by the jobs (as source text) and the references: out of order by up to 99 ms (A) and
// 149 ms (B) in event time.
const K = 10;
const genA = (x: number) => ({ k: x % K, v: x, ts: x * 5 - ((x * 37) % 100) });
const genB = (x: number) => ({ k: (x * 7) % K, w: x % 13, ts: x * 8 - ((x * 53) % 150) });
const GEN = `const K = ${K}; const genA = ${genA.toString()}; const genB = ${genB.toString()};`;

describe("connected streams on a cluster", () => {
  const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "log.level": "warn" };
  let dir = "";
  beforeAll(() => void (dir = tempDir("tm-connected-"))); // not earlier: other blocks' afterAll remove temp dirs
  const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config: { ...config, "state.checkpoints.dir": path.join(dir, "checkpoints") } }));
  afterAll(removeTempDirs);
  const run = (job: string, args: string[], p: number) => runJob(t.client, job, args, p);
  const readLines = (d: string) =>
    (fs.statSync(d).isDirectory() ? fs.readdirSync(d).map((f) => path.join(d, f)) : [d]).flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0);

  const NA = 4000;
  const NB = 2000;

  /**
   * A KeyedCoProcessFunction: per key and second of event time, the count and sum of each input, emitted by an
   * event-time timer at the end of the second (keyed MapState and timers shared by both inputs). Input B is slow, so
   * its event time lags A's: a record at or behind the operator's watermark is reported "late" (none may be, since
   * the watermark is the minimum of both inputs' and each input's disorder is within its bound).
   */
  const keyedCoProcessJob = () =>
    writeJob(dir, "keyed-co-process.ts", `
      import { MapStateDescriptor, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      ${GEN}
      export default (env, args) => {
        env.setStateBackend(args[1]).setAutoWatermarkInterval(20);
        // A runs ahead in event time (about 40 s of it per second), B behind (about 16 s per second).
        const a = env.fromSequence(0, ${NA - 1}).map((x) => { if (x % 8 === 0) Atomics.wait(pause, 0, 0, 1); return genA(x); })
          .assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness(150).withTimestampAssigner((e) => e.ts));
        const b = env.fromSequence(0, ${NB - 1}).map((x) => { if (x % 2 === 0) Atomics.wait(pause, 0, 0, 1); return genB(x); })
          .assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness(150).withTimestampAssigner((e) => e.ts));
        const add = (self, e, ctx, out, i, value) => {
          if (ctx.timestamp() !== e.ts) throw new Error("wrong timestamp " + ctx.timestamp() + " for " + JSON.stringify(e));
          if (ctx.getCurrentKey() !== e.k) throw new Error("wrong key " + ctx.getCurrentKey());
          if (e.ts <= ctx.timerService().currentWatermark()) out.collect(JSON.stringify(["late", i, e, ctx.timerService().currentWatermark()]));
          const second = Math.floor(e.ts / 1000);
          const acc = [...(self.agg.get(second) ?? [0, 0, 0, 0])];
          acc[i * 2] += 1;
          acc[i * 2 + 1] += value;
          self.agg.put(second, acc);
          ctx.timerService().registerEventTimeTimer(second * 1000 + 999);
        };
        a.keyBy((e) => e.k).connect(b.keyBy((e) => e.k))
          .process({
            open(ctx) { this.agg = ctx.getMapState(new MapStateDescriptor("agg")); },
            processElement1(e, ctx, out) { add(this, e, ctx, out, 0, e.v); },
            processElement2(e, ctx, out) { add(this, e, ctx, out, 1, e.w); },
            onTimer(ts, ctx, out) {
              const second = (ts - 999) / 1000;
              if (ctx.timeDomain() !== "EVENT_TIME" || ctx.timestamp() !== ts || ctx.timerService().currentWatermark() < ts) throw new Error("bad timer context at " + ts);
              out.collect(JSON.stringify([ctx.getCurrentKey(), second, ...this.agg.get(second)]));
              this.agg.remove(second);
            },
          }).uid("co")
          .writeAsText(args[0]);
      };`);

  function keyedCoProcessReference(): string[] {
    const agg = new Map<string, number[]>();
    const add = (k: number, ts: number, i: number, value: number) => {
      const id = JSON.stringify([k, Math.floor(ts / 1000)]);
      const acc = agg.get(id) ?? [0, 0, 0, 0];
      acc[i * 2]! += 1;
      acc[i * 2 + 1]! += value;
      agg.set(id, acc);
    };
    for (let x = 0; x < NA; x++) add(genA(x).k, genA(x).ts, 0, genA(x).v);
    for (let x = 0; x < NB; x++) add(genB(x).k, genB(x).ts, 1, genB(x).w);
    return [...agg].map(([id, acc]) => JSON.stringify([...JSON.parse(id), ...acc])).sort();
  }

  for (const backend of ["heap", "sqlite"] as const) {
    for (const p of [1, 2]) {
      test(`KeyedCoProcessFunction: shared keyed state and timers, watermark the minimum of both inputs (${backend}, p=${p})`, async () => {
        const out = path.join(dir, `keyed-co-${backend}-${p}`);
        const status = await run(keyedCoProcessJob(), [out, backend], p);
        expect(status.error?.message).toBeUndefined();
        expect(status.state).toBe("FINISHED");
        expect(readLines(out).sort()).toEqual(keyedCoProcessReference());
      }, 60_000);
    }
  }

  test("keyBy(key1, key2) on connected streams: a keyed CoFlatMap's state is shared by both inputs of a key (p=2, sqlite)", async () => {
    const out = path.join(dir, "keyed-co-flat-map");
    const job = writeJob(dir, "keyed-co-flat-map.ts", `
      import { ValueStateDescriptor } from ${API};
      ${GEN}
      export default (env, args) => {
        env.setStateBackend("sqlite");
        const a = env.fromSequence(0, ${NA - 1}).map(genA);
        const b = env.fromSequence(0, ${NB - 1}).map(genB).setParallelism(1);
        a.connect(b).keyBy((e) => e.k, (e) => e.k)
          .flatMap({
            open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
            flatMap1(e) { this.count.update(this.count.value() + 1); return [JSON.stringify([e.k, this.count.value()])]; },
            // Every other B record emits nothing (but counts).
            flatMap2(e) { this.count.update(this.count.value() + 1); return e.w % 2 === 0 ? [JSON.stringify([e.k, this.count.value()])] : []; },
          })
          .writeAsText(args[0]);
      };`);
    const status = await run(job, [out], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    // Whatever the interleaving of the inputs, each key's records count 1..n over both inputs (one state per key):
    // no count twice, none above n, and as many lines per key as records that emit (the B records that emit nothing
    // leave gaps). State per input instead of per key would repeat counts.
    const n = new Map<number, number>();
    const lines = new Map<number, number>();
    const bump = (m: Map<number, number>, k: number) => m.set(k, (m.get(k) ?? 0) + 1);
    for (let x = 0; x < NA; x++) (bump(n, genA(x).k), bump(lines, genA(x).k));
    for (let x = 0; x < NB; x++) (bump(n, genB(x).k), genB(x).w % 2 === 0 && bump(lines, genB(x).k));
    const rows = readLines(out).map((l) => JSON.parse(l) as [number, number]);
    const got = new Map<number, number>();
    const seen = new Set<string>();
    for (const [k, c] of rows) {
      expect(seen.has(`${k}:${c}`)).toBe(false);
      seen.add(`${k}:${c}`);
      expect(c).toBeGreaterThanOrEqual(1);
      expect(c).toBeLessThanOrEqual(n.get(k)!);
      bump(got, k);
    }
    expect([...got].sort((x, y) => x[0] - y[0])).toEqual([...lines].sort((x, y) => x[0] - y[0]));
  }, 60_000);

  test("not keyed: CoMap, CoFlatMap and a CoProcessFunction with timestamps and a side output (p=1 and p=2)", async () => {
    for (const p of [1, 2]) {
      const out = path.join(dir, `co-${p}`);
      const job = writeJob(dir, `co-${p}.ts`, `
        import { OutputTag, WatermarkStrategy } from ${API};
        ${GEN}
        const tag = new OutputTag("even-b");
        export default (env, args) => {
          const a = env.fromSequence(0, ${NA - 1}).map(genA).assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness(150).withTimestampAssigner((e) => e.ts));
          const b = env.fromCollection(Array.from({ length: ${NB} }, (_, x) => genB(x))).assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness(150).withTimestampAssigner((e) => e.ts));
          a.connect(b).map({ map1: (e) => "m1 " + e.v, map2: (e) => "m2 " + e.w }).writeAsText(args[0] + "-map");
          a.connect(b).flatMap({ flatMap1: (e) => (e.v % 3 === 0 ? [] : ["f1 " + e.v, "f1 " + -e.v]), flatMap2: (e) => ["f2 " + e.k] }).writeAsText(args[0] + "-flat");
          const processed = a.connect(b).process({
            processElement1(e, ctx, out) { out.collect("p1 " + e.v + " " + (ctx.timestamp() === e.ts)); },
            processElement2(e, ctx, out) {
              if (ctx.timestamp() !== e.ts) throw new Error("wrong timestamp");
              if (e.w % 2 === 0) ctx.output(tag, "side " + e.w); else out.collect("p2 " + e.w);
            },
          });
          processed.writeAsText(args[0] + "-process");
          processed.getSideOutput(tag).writeAsText(args[0] + "-side");
        };`);
      const status = await run(job, [out], p);
      expect(status.error?.message).toBeUndefined();
      expect(status.state).toBe("FINISHED");
      const as = Array.from({ length: NA }, (_, x) => genA(x));
      const bs = Array.from({ length: NB }, (_, x) => genB(x));
      const sorted = (xs: string[]) => xs.sort();
      expect(sorted(readLines(out + "-map"))).toEqual(sorted([...as.map((e) => "m1 " + e.v), ...bs.map((e) => "m2 " + e.w)]));
      expect(sorted(readLines(out + "-flat"))).toEqual(sorted([...as.flatMap((e) => (e.v % 3 === 0 ? [] : ["f1 " + e.v, "f1 " + -e.v])), ...bs.map((e) => "f2 " + e.k)]));
      expect(sorted(readLines(out + "-process"))).toEqual(sorted([...as.map((e) => "p1 " + e.v + " true"), ...bs.filter((e) => e.w % 2 !== 0).map((e) => "p2 " + e.w)]));
      expect(sorted(readLines(out + "-side"))).toEqual(sorted(bs.filter((e) => e.w % 2 === 0).map((e) => "side " + e.w)));
    }
  }, 90_000);

  test("keyed state and timers of a KeyedCoProcessFunction survive a savepoint restored at another parallelism (2 -> 3 sqlite, 2 -> 1 heap)", async () => {
    const N = 200_000;
    const job = writeJob(dir, "co-sp.ts", `
      import * as fs from "node:fs";
      import { ValueStateDescriptor, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      let slowNow = true;
      export default (env, args) => {
        env.setStateBackend(args[1]);
        // Slow (about 20000 records per second and subtask) while the file args[2] exists, so the savepoint comes
        // mid-input. A source's chunk (1024 records) stays short: its task lets the checkpoint's I/O in between chunks.
        const slow = (x) => { if (x % 50 === 0) slowNow = fs.existsSync(args[2]); if (slowNow && x % 20 === 0) Atomics.wait(pause, 0, 0, 1); return x; };
        const a = env.fromSequence(1, ${N}).map(slow).uid("a-map")
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => x));
        const b = env.fromSequence(1, ${N}).map(slow).uid("b-map")
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => x * 2));
        a.connect(b).keyBy((x) => x % 20, (x) => (x * 3) % 20)
          .process({
            open(ctx) {
              this.a = ctx.getState(new ValueStateDescriptor("a", { default: 0 }));
              this.b = ctx.getState(new ValueStateDescriptor("b", { default: 0 }));
            },
            // The timer is registered on a key's first record only: after a restore only the restored timer can fire.
            first(ctx) { if (this.a.value() + this.b.value() === 0) ctx.timerService().registerEventTimeTimer(1e12 + ctx.getCurrentKey()); },
            processElement1(x, ctx) { this.first(ctx); this.a.update(this.a.value() + 1); },
            processElement2(x, ctx) { this.first(ctx); this.b.update(this.b.value() + x); },
            onTimer(ts, ctx, out) { out.collect(JSON.stringify([ctx.getCurrentKey(), ts, this.a.value(), this.b.value()])); },
          }).uid("co-sp")
          .writeAsText(args[0]);
      };`);
    const expected = new Map<number, [number, number]>();
    for (let k = 0; k < 20; k++) expected.set(k, [0, 0]);
    for (let x = 1; x <= N; x++) expected.get(x % 20)![0]++;
    for (let x = 1; x <= N; x++) expected.get((x * 3) % 20)![1] += x;
    const reference = [...expected].map(([k, [a, b]]) => JSON.stringify([k, 1e12 + k, a, b])).sort();
    for (const [backend, to] of [["sqlite", 3], ["heap", 1]] as const) {
      const out1 = path.join(dir, `co-sp-${backend}-1`);
      const out2 = path.join(dir, `co-sp-${backend}-2`);
      const slowFile = path.join(dir, `co-sp-${backend}-slow`);
      fs.writeFileSync(slowFile, "1");
      const jobId = await submitJob(t.client, await prepareJob(job, [out1, backend, slowFile], 2));
      // Some records in (each source subtask emits a chunk before the first savepoint can be taken), not all.
      await waitFor("records through the co-process operator", async () => {
        const s = await t.client.request("jobStatus", { jobId });
        if (s.state !== "RUNNING") throw new Error(`the job is ${s.state} before the savepoint: ${s.error?.message ?? ""}`);
        const co = s.vertices.find((v) => v.name.includes("Co-Process"));
        return (co?.subtasks.reduce((a, st) => a + (st.metrics?.recordsIn ?? 0), 0) ?? 0) > 2000;
      }, 20_000);
      const sp = await t.client.request("triggerSavepoint", { jobId, dir: path.join(dir, `savepoints-${backend}`), cancel: true }, 30_000);
      expect((await waitForJob(t.client, jobId, () => {})).state).toBe("CANCELED");
      expect(readLines(out1)).toEqual([]); // no timer fired before the savepoint
      fs.rmSync(slowFile);
      const resumed = await waitForJob(t.client, await submitJob(t.client, { ...(await prepareJob(job, [out2, backend, slowFile], to)), fromSavepoint: sp.path }), () => {});
      expect(resumed.error?.message).toBeUndefined();
      expect(resumed.state).toBe("FINISHED");
      expect(resumed.checkpoints.restoredFrom).toContain(sp.path);
      expect(readLines(out2).sort()).toEqual(reference);
    }
  }, 120_000);

  test("a function of the wrong shape is refused at submission, naming the operator", async () => {
    const cases: [string, string][] = [
      ["a.connect(b).map({ map1: (x) => x })", "Co-Map: expected an object with map1 and map2 methods (missing map2)"],
      ["a.connect(b).map((x) => x)", "Co-Map: expected an object with map1 and map2 methods, got function"],
      ["a.connect(b).flatMap({ flatMap2: (x) => [x] })", "Co-Flat Map: expected an object with flatMap1 and flatMap2 methods (missing flatMap1)"],
      ["a.keyBy((x) => x).connect(b.keyBy((x) => x)).process({ processElement1() {} })", "Keyed Co-Process: expected an object with processElement1 and processElement2 methods (missing processElement2)"],
      ["a.connect(b).process({ processElement1() {}, processElement2() {}, onTimer() {} })", "Co-Process: onTimer needs keyed connected streams"],
      ["a.connect(b).keyBy((x) => x)", "ConnectedStreams.keyBy: expected two key selectors"],
      ["a.connect([1, 2])", "connect: expected a DataStream"],
    ];
    for (const [i, [code, message]] of cases.entries()) {
      const job = writeJob(dir, `bad-${i}.ts`, `
        export default (env) => {
          const a = env.fromSequence(1, 10);
          const b = env.fromSequence(1, 10);
          ${code}.print();
        };`);
      let error = "";
      await prepareJob(job, [], 1).catch((err: Error) => void (error = err.message));
      expect(error).toContain(message);
    }
    // A runtime misuse names the operator too: a timer in a CoProcessFunction that is not keyed fails the job.
    const job = writeJob(dir, "bad-timer.ts", `
      export default (env) => {
        env.fromSequence(1, 10).connect(env.fromSequence(1, 10))
          .process({ processElement1(x, ctx) { ctx.timerService().registerProcessingTimeTimer(1); }, processElement2() {} }).print();
      };`);
    const status = await run(job, [], 1);
    expect(status.state).toBe("FAILED");
    expect(status.error!.message).toContain("Co-Process: registerProcessingTimeTimer: timers need keyed connected streams");
  }, 60_000);
});

describe("the job graph of connected streams", () => {
  test("each input's edges say which input they feed; a two-input operator heads its chain and keeps both key selectors", () => {
    const env = new StreamExecutionEnvironment();
    const a = env.fromSequence(1, 10);
    const b = env.fromSequence(1, 10).map((x) => x);
    a.union(a.map((x) => x)).connect(b).keyBy((x) => x % 2, (x) => x % 3).map({ map1: (x) => x, map2: (x) => x }).print();
    const g = buildJobGraph(describePlan(env.getPlan()), env.getPlan().settings, 2, "job");
    const co = g.vertices.find((v) => v.name.startsWith("Co-Map"))!;
    expect(co.name).toBe("Co-Map -> Print to Std. Out");
    expect(co.operators![0]!.keyed).toBe(true);
    const ins = g.edges.filter((e) => e.target === co.id).map((e) => ({ from: g.vertices[e.source]!.name, input: e.input ?? 0, partitioner: e.partitioner }));
    expect(ins.sort((x, y) => x.input - y.input || x.from.localeCompare(y.from))).toEqual([
      { from: "Map", input: 0, partitioner: "hash" },
      { from: "Sequence Source", input: 0, partitioner: "hash" },
      { from: "Sequence Source -> Map", input: 1, partitioner: "hash" },
    ]);
  });
});

describe("connected streams and unaligned checkpoints", () => {
  const startCluster = clusterPerTest();
  afterAll(removeTempDirs);

  test("a keyed two-input operator restored from unaligned checkpoints with input channel state: each input's records go back to its own input, exactly once", async () => {
    const dir = tempDir("tm-connected-ucp-");
    fs.writeFileSync(path.join(dir, "slow"), "1");
    const N = 8_000, KEYS = 7;
    const { client } = await startCluster({
      taskManagers: 1,
      slotsPerTaskManager: 2,
      config: {
        ...defaultConfig(),
        "log.level": "warn",
        "state.checkpoints.dir": path.join(dir, "checkpoints"),
        "state.checkpoints.num-retained": 100,
        "execution.checkpointing.unaligned.enabled": true,
        "execution.checkpointing.timeout": 60_000,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.delay": 100,
      },
    });
    const f = (name: string) => JSON.stringify(path.join(dir, name));
    // The operator is slow while the file "slow" exists (both sources back-pressured, buffers full on every channel),
    // and throws once when "go" exists. A record of one input handed to the other's method fails the job.
    const job = writeJob(dir, "co-ucp.ts", `
      import * as fs from "node:fs";
      import { FileSink, ValueStateDescriptor } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      const pad = "x".repeat(300);
      export default (env) => {
        env.enableCheckpointing(1000);
        const a = env.fromSequence(1, ${N}).map((x) => [x, "a", pad]);
        const b = env.fromSequence(1, ${N}).map((x) => [x, "b", pad]);
        a.connect(b).keyBy((t) => t[0] % ${KEYS}, (t) => t[0] % ${KEYS})
          .process({
            open(ctx) {
              this.a = ctx.getState(new ValueStateDescriptor("a", { default: 0 }));
              this.b = ctx.getState(new ValueStateDescriptor("b", { default: 0 }));
              this.seen = 0; this.slow = true;
            },
            step() {
              if ((++this.seen & 15) === 0) {
                this.slow = fs.existsSync(${f("slow")});
                if (fs.existsSync(${f("go")}) && !fs.existsSync(${f("thrown")})) { fs.writeFileSync(${f("thrown")}, "1"); throw new Error("injected failure"); }
              }
              if (this.slow) Atomics.wait(pause, 0, 0, 5);
            },
            processElement1(t, ctx, out) {
              if (t[1] !== "a") throw new Error("processElement1 got a record of input 2: " + t[0]);
              this.step(); this.a.update(this.a.value() + 1); out.collect(["a", ctx.getCurrentKey(), this.a.value()]);
            },
            processElement2(t, ctx, out) {
              if (t[1] !== "b") throw new Error("processElement2 got a record of input 1: " + t[0]);
              this.step(); this.b.update(this.b.value() + 1); out.collect(["b", ctx.getCurrentKey(), this.b.value()]);
            },
          })
          .sinkTo(FileSink.forRowFormat(${f("out")}).build());
      };`);
    const jobId = await submitJob(client, await prepareJob(job, [], 1));
    // Input channel state of the two-input task (not the sources' output state): records that arrived on its channels.
    const inputState = (meta: string) => {
      const { meta: m } = readMetadata(meta);
      const co = m.vertices.find((v) => v.name.includes("Co-Process"))!;
      let n = 0;
      for (const s of co.subtasks ?? []) if (s?.channel) for (const ch of readChannelState(s.channel)) n += ch.records.length;
      return n;
    };
    await waitFor("a completed checkpoint with input channel state at the two-input task", async () => {
      const st = (await client.request("jobStatus", { jobId })) as JobStatus;
      if (st.state !== "RUNNING") throw new Error(`the job is ${st.state}: ${st.error?.message ?? ""}`);
      return st.checkpoints.history.some((c) => c.status === "COMPLETED" && (c.channelStateBytes ?? 0) > 0 && inputState(path.join(dir, "checkpoints", jobId, `chk-${c.id}`, "_metadata")) > 0);
    }, 60_000, 100);
    fs.writeFileSync(path.join(dir, "go"), "1");
    await waitFor("the injected failure", () => fs.existsSync(path.join(dir, "thrown")), 30_000, 50);
    fs.rmSync(path.join(dir, "slow"));
    const final = await waitForJob(client, jobId, () => {}, 100);
    expect(final.error?.message).toBeUndefined();
    expect(final.state).toBe("FINISHED");
    expect(final.restarts).toBe(1);
    const restored = inputState(final.checkpoints.restoredFrom!);
    console.log(`two-input task restored from ${final.checkpoints.restoredFrom} with ${restored} records of input channel state`);
    // Exactly once: per input and key, the counts 1..n once each.
    const lines = committedLines(path.join(dir, "out"));
    const expected: string[] = [];
    for (const side of ["a", "b"]) {
      for (let k = 0; k < KEYS; k++) {
        const n = Math.floor(N / KEYS) + (k >= 1 && k <= N % KEYS ? 1 : 0);
        for (let c = 1; c <= n; c++) expected.push(`(${side},${k},${c})`);
      }
    }
    expect(lines.length).toBe(expected.length);
    expect(lines.sort()).toEqual(expected.sort());
  }, 150_000);
});
