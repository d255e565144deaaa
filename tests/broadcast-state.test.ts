// Broadcast state (as Flink's broadcast state pattern): broadcast(MapStateDescriptor...) gives a BroadcastStream;
// stream.connect(it).process(BroadcastProcessFunction) and keyedStream.connect(it).process(KeyedBroadcastProcessFunction)
// with read-only broadcast state in processElement and onTimer, writable in processBroadcastElement, and
// applyToKeyedState over every key of a subtask. Every subtask keeps a copy, checkpointed and restored at any
// parallelism. Each job's output is compared with a reference computed here, single-threaded; the jobs are written
// so that their output does not depend on how the two inputs interleave.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { setLogLevel } from "../src/util/log.ts";
import { createKeyedStateBackend, ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor } from "../src/state/index.ts";
import { removeTempDirs, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";
import { clusterForTests } from "./cluster-helpers.ts";

setLogLevel("warn");
const API = JSON.stringify(path.resolve("src/api/index.ts"));

describe("keys of a keyed state backend (for applyToKeyedState)", () => {
  afterAll(removeTempDirs);
  for (const kind of ["heap", "sqlite"] as const) {
    test(`${kind}: the keys that hold a state, in the backend's key groups, after writes, deletes and a restore`, async () => {
      const dir = tempDir("tm-keys-");
      const open = (sub: string) => createKeyedStateBackend({ kind, maxParallelism: 128, keyGroupRange: { start: 0, end: 127 }, dir: path.join(dir, sub), cacheBytes: 1 << 20 });
      fs.mkdirSync(path.join(dir, "a"));
      fs.mkdirSync(path.join(dir, "b"));
      const b = await open("a");
      const v = b.getState(new ValueStateDescriptor<number>("v"));
      const l = b.getListState(new ListStateDescriptor<number>("l"));
      const m = b.getMapState(new MapStateDescriptor<string, number>("m"));
      const keys = [1, 2, 3, "x", ["a", 1]];
      for (const [i, k] of keys.entries()) {
        b.setCurrentKey(k);
        v.update(i);
        if (i % 2 === 0) l.add(i);
        if (i < 2) m.put("e", i);
      }
      b.setCurrentKey(2);
      v.clear();
      const sorted = (xs: unknown[]) => xs.map((x) => JSON.stringify(x)).sort();
      expect(sorted(b.keys("v"))).toEqual(sorted([1, 3, "x", ["a", 1]]));
      expect(sorted(b.keys("l"))).toEqual(sorted([1, 3, ["a", 1]]));
      expect(sorted(b.keys("m"))).toEqual(sorted([1, 2]));
      expect(b.keys("unknown")).toEqual([]);
      const snap = await b.snapshot(path.join(dir, "snap"));
      await b.close();
      // Restored into the first half of the key groups: only the keys of those groups.
      const half = await createKeyedStateBackend({ kind, maxParallelism: 128, keyGroupRange: { start: 0, end: 63 }, dir: path.join(dir, "b"), cacheBytes: 1 << 20 });
      await half.restore([snap]);
      const { keyGroupOf } = await import("../src/state/key-groups.ts");
      expect(sorted(half.keys("v"))).toEqual(sorted([1, 3, "x", ["a", 1]].filter((k) => keyGroupOf(k, 128) <= 63)));
      await half.close();
    });
  }
});

describe("broadcast state on a cluster", () => {
  const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "log.level": "warn" };
  let dir = "";
  beforeAll(() => void (dir = tempDir("tm-broadcast-"))); // not earlier: other blocks' afterAll remove temp dirs
  const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config: { ...config, "state.checkpoints.dir": path.join(dir, "checkpoints") } }));
  afterAll(removeTempDirs);
  const run = (job: string, args: string[], p: number) => runJob(t.client, job, args, p);
  const readLines = (d: string) =>
    (fs.statSync(d).isDirectory() ? fs.readdirSync(d).map((f) => path.join(d, f)) : [d]).flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0);

  // Events out of order by up to 99 ms; rules (a factor valid from its timestamp on) every 700 ms, in order.
  const K = 10;
  const NE = 4000;
  const NR = 30;
  const genE = (x: number) => ({ k: x % K, v: x % 17, ts: x * 5 - ((x * 37) % 100) });
  const genR = (x: number) => ({ ts: x * 700, factor: (x % 5) + 1 });
  const GEN = `const K = ${K}; const genE = ${genE.toString()}; const genR = ${genR.toString()};`;

  /**
   * An event-time join with the rule valid at each event's time: processElement buffers the event in keyed state
   * and sets a timer at its timestamp; onTimer reads the rules from the broadcast state (read-only there) and
   * emits value x the factor of the latest rule at or before it. When the timer fires the watermark (the minimum of
   * both inputs') has passed it, so every rule up to then is in the broadcast state: the result does not depend on
   * how the inputs interleave.
   */
  const temporalJob = () =>
    writeJob(dir, "temporal.ts", `
      import { MapStateDescriptor, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      ${GEN}
      const rulesState = new MapStateDescriptor("rules");
      export default (env, args) => {
        env.setStateBackend(args[1]).setAutoWatermarkInterval(20);
        const events = env.fromSequence(0, ${NE - 1}).map((x) => { if (x % 8 === 0) Atomics.wait(pause, 0, 0, 1); return genE(x); })
          .assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness(100).withTimestampAssigner((e) => e.ts));
        const rules = env.fromCollection(Array.from({ length: ${NR} }, (_, x) => genR(x)))
          .map((r) => { Atomics.wait(pause, 0, 0, 20); return r; })
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((r) => r.ts));
        events.keyBy((e) => e.k).connect(rules.broadcast(rulesState))
          .process({
            open(ctx) { this.pending = ctx.getMapState(new MapStateDescriptor("pending")); },
            processElement(e, ctx, out) {
              if (ctx.timestamp() !== e.ts || ctx.getCurrentKey() !== e.k) throw new Error("wrong context");
              let readOnly = false;
              try { ctx.getBroadcastState(rulesState).put(1, 1); } catch (err) { readOnly = /read-only/.test(err.message); }
              if (!readOnly) throw new Error("the broadcast state is writable in processElement");
              this.pending.put(e.ts, [...(this.pending.get(e.ts) ?? []), e.v]);
              ctx.timerService().registerEventTimeTimer(e.ts);
            },
            processBroadcastElement(r, ctx, out) {
              if (ctx.timestamp() !== r.ts) throw new Error("wrong broadcast timestamp");
              ctx.getBroadcastState(rulesState).put(r.ts, r.factor);
            },
            onTimer(ts, ctx, out) {
              let best = -1, factor = 0;
              for (const [rts, f] of ctx.getBroadcastState(rulesState).entries()) if (rts <= ts && rts > best) { best = rts; factor = f; }
              for (const v of this.pending.get(ts)) out.collect(JSON.stringify([ctx.getCurrentKey(), ts, v * factor]));
              this.pending.remove(ts);
            },
          })
          .writeAsText(args[0]);
      };`);

  function temporalReference(): string[] {
    const rules = Array.from({ length: NR }, (_, x) => genR(x));
    const out: string[] = [];
    for (let x = 0; x < NE; x++) {
      const e = genE(x);
      let factor = 0;
      for (const r of rules) if (r.ts <= e.ts) factor = r.factor;
      out.push(JSON.stringify([e.k, e.ts, e.v * factor]));
    }
    return out.sort();
  }

  for (const backend of ["heap", "sqlite"] as const) {
    for (const p of [1, 2]) {
      test(`KeyedBroadcastProcessFunction: an event-time join with broadcast rules, read in onTimer (${backend}, p=${p})`, async () => {
        const out = path.join(dir, `temporal-${backend}-${p}`);
        const status = await run(temporalJob(), [out, backend], p);
        expect(status.error?.message).toBeUndefined();
        expect(status.state).toBe("FINISHED");
        expect(readLines(out).sort()).toEqual(temporalReference());
      }, 60_000);
    }
  }

  /**
   * applyToKeyedState: each bonus (broadcast) is added to the state of every key seen so far, and to the running
   * total in the broadcast state; a key seen for the first time starts from that total. Whatever the interleaving,
   * every key ends with the total of all bonuses; a timer at the end emits [key, count, applied, total].
   */
  const bonusJob = () =>
    writeJob(dir, "bonus.ts", `
      import * as fs from "node:fs";
      import { MapStateDescriptor, ValueStateDescriptor, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      // Slow only while the file args[6] exists (when given): the savepoint test lets the job run fast after it.
      let slowNow = true;
      const isSlow = (args, x) => { if (args[6] && x % 64 === 0) slowNow = fs.existsSync(args[6]); return slowNow; };
      const totals = new MapStateDescriptor("totals");
      const seenState = new ValueStateDescriptor("seen");
      export default (env, args) => {
        env.setStateBackend(args[1]);
        const every = Number(args[2]);
        const slow = (x) => { if (x % every === 0 && isSlow(args, x)) Atomics.wait(pause, 0, 0, 2); return x; };
        const events = env.fromSequence(1, Number(args[3])).map(slow).uid("events")
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => x));
        // One bonus per source chunk (1024 records), args[5] ms apart: barriers go out between chunks.
        const bonuses = env.fromSequence(1, Number(args[4]) * 1024).setParallelism(1).uid("bonuses")
          .filter((x) => { if (x % 1024 !== 0) return false; if (isSlow(args, x)) Atomics.wait(pause, 0, 0, Number(args[5])); return true; }).setParallelism(1)
          .map((x) => x / 1024).setParallelism(1);
        events.keyBy((x) => x % 23).connect(bonuses.broadcast(totals))
          .process({
            open(ctx) { this.seen = ctx.getState(seenState); this.subtask = ctx.subtaskIndex; },
            processElement(x, ctx, out) {
              const s = this.seen.value();
              if (s === undefined) {
                this.seen.update({ count: 1, applied: ctx.getBroadcastState(totals).get("bonus") ?? 0 });
                ctx.timerService().registerEventTimeTimer(1e12 + ctx.getCurrentKey());
              } else this.seen.update({ count: s.count + 1, applied: s.applied });
            },
            processBroadcastElement(b, ctx, out) {
              const state = ctx.getBroadcastState(totals);
              state.put("bonus", (state.get("bonus") ?? 0) + b);
              ctx.applyToKeyedState(seenState, (key, s) => { const v = s.value(); s.update({ count: v.count, applied: v.applied + b }); });
            },
            onTimer(ts, ctx, out) {
              const s = this.seen.value();
              out.collect(JSON.stringify([ctx.getCurrentKey(), s.count, s.applied, ctx.getBroadcastState(totals).get("bonus")]));
            },
          }).uid("bonus-op")
          .writeAsText(args[0]);
      };`);

  function bonusReference(n: number, bonuses: number): string[] {
    const total = (bonuses * (bonuses + 1)) / 2;
    const count = new Map<number, number>();
    for (let x = 1; x <= n; x++) count.set(x % 23, (count.get(x % 23) ?? 0) + 1);
    return [...count].map(([k, c]) => JSON.stringify([k, c, total, total])).sort();
  }

  for (const backend of ["heap", "sqlite"] as const) {
    test(`applyToKeyedState reaches every key of each subtask; every subtask gets every broadcast element (${backend}, p=2)`, async () => {
      const out = path.join(dir, `bonus-${backend}`);
      const status = await run(bonusJob(), [out, backend, "50", "6000", "40", "5"], 2);
      expect(status.error?.message).toBeUndefined();
      expect(status.state).toBe("FINISHED");
      expect(readLines(out).sort()).toEqual(bonusReference(6000, 40));
    }, 60_000);
  }

  for (const backend of ["heap", "sqlite"] as const) {
    test(`applyToKeyedState skips keys whose state expired under its TTL (${backend})`, async () => {
      // 10 keys written at once with a 3 s TTL. A second source writes half of them again 3.5 s later and then leaves a
      // marker file; a broadcast element follows 1 s after the marker and visits the keyed state: the first writes
      // have expired by then (about 4.5 s), the second ones not (until about 6.5 s), so only those 5 keys are visited.
      // (Margins of a second or more each way, for a loaded machine.)
      const out = path.join(dir, `ttl-${backend}`);
      const marker = path.join(dir, `ttl-${backend}-rewritten`);
      const job = writeJob(dir, `ttl-${backend}.ts`, `
        import * as fs from "node:fs";
        import { MapStateDescriptor, ValueStateDescriptor } from ${API};
        const pause = new Int32Array(new SharedArrayBuffer(4));
        const seen = new ValueStateDescriptor("seen", { ttl: { ttlMs: 3000 } });
        const rules = new MapStateDescriptor("rules");
        export default (env, args) => {
          env.setStateBackend(args[1]);
          const early = env.fromSequence(0, 9).setParallelism(1);
          const late = env.fromSequence(100, 104).setParallelism(1).map((x) => {
            if (x === 100) Atomics.wait(pause, 0, 0, 3500);
            if (x === 104) fs.writeFileSync(args[2], "");
            return x % 100;
          }).setParallelism(1);
          const tick = env.fromSequence(1, 1).setParallelism(1).map((x) => {
            for (let i = 0; i < 6000 && !fs.existsSync(args[2]); i++) Atomics.wait(pause, 0, 0, 10);
            Atomics.wait(pause, 0, 0, 1000);
            return x;
          }).setParallelism(1);
          early.union(late).keyBy((x) => x).connect(tick.broadcast(rules))
            .process({
              open(ctx) { this.seen = ctx.getState(seen); },
              processElement(x, ctx, out) { this.seen.update(x); },
              processBroadcastElement(b, ctx, out) {
                const visited = [];
                ctx.applyToKeyedState(seen, (key, s) => visited.push(key + "=" + s.value()));
                out.collect(JSON.stringify(visited.sort()));
              },
            })
            .writeAsText(args[0]);
        };`);
      const status = await run(job, [out, backend, marker], 1);
      expect(status.error?.message).toBeUndefined();
      expect(status.state).toBe("FINISHED");
      expect(readLines(out)).toEqual([JSON.stringify(["0=0", "1=1", "2=2", "3=3", "4=4"])]);
    }, 60_000);
  }

  test("broadcast and keyed state survive a savepoint restored at another parallelism (2 -> 3 sqlite, 2 -> 1 heap)", async () => {
    const N = 200_000, B = 60;
    for (const [backend, to] of [["sqlite", 3], ["heap", 1]] as const) {
      const out1 = path.join(dir, `bonus-sp-${backend}-1`);
      const out2 = path.join(dir, `bonus-sp-${backend}-2`);
      // Until the savepoint: events 2 ms every 40 records (about 20000 per second and subtask, 5 s; a chunk of 1024
      // takes 50 ms: the source's task lets the checkpoint's I/O in between chunks), bonuses one per 100 ms; then fast.
      const slowFile = path.join(dir, `bonus-sp-${backend}-slow`);
      fs.writeFileSync(slowFile, "1");
      const args = (out: string) => [out, backend, "40", String(N), String(B), "100", slowFile];
      const jobId = await submitJob(t.client, await prepareJob(bonusJob(), args(out1), 2));
      await waitFor("records and bonuses through the broadcast process operator", async () => {
        const s = await t.client.request("jobStatus", { jobId });
        if (s.state !== "RUNNING") throw new Error(`the job is ${s.state} before the savepoint: ${s.error?.message ?? ""}`);
        const op = s.vertices.find((v) => v.name.includes("Broadcast Process"));
        const bonuses = s.vertices.find((v) => v.name.startsWith("Sequence Source -> Filter"))!.totals.recordsOut;
        // Some bonuses in the broadcast state before the savepoint (its restore matters), not all (more come after).
        return (op?.subtasks.reduce((a, st) => a + (st.metrics?.recordsIn ?? 0), 0) ?? 0) > 1000 && bonuses >= 3;
      }, 20_000);
      const sp = await t.client.request("triggerSavepoint", { jobId, dir: path.join(dir, `savepoints-${backend}`), cancel: true }, 30_000);
      const canceled = await waitForJob(t.client, jobId, () => {});
      expect(canceled.state).toBe("CANCELED");
      expect(canceled.vertices.find((v) => v.name.startsWith("Sequence Source -> Filter"))!.totals.recordsOut).toBeLessThan(B);
      expect(readLines(out1)).toEqual([]); // no timer fired before the savepoint
      fs.rmSync(slowFile);
      const resumed = await waitForJob(t.client, await submitJob(t.client, { ...(await prepareJob(bonusJob(), args(out2), to)), fromSavepoint: sp.path }), () => {});
      expect(resumed.error?.message).toBeUndefined();
      expect(resumed.state).toBe("FINISHED");
      expect(resumed.checkpoints.restoredFrom).toContain(sp.path);
      expect(readLines(out2).sort()).toEqual(bonusReference(N, B));
    }
  }, 120_000);

  test("BroadcastProcessFunction (not keyed): every subtask gets every broadcast element and reads the broadcast state (p=2)", async () => {
    const out = path.join(dir, "non-keyed");
    const job = writeJob(dir, "non-keyed.ts", `
      import { MapStateDescriptor } from ${API};
      const names = new MapStateDescriptor("names");
      export default (env, args) => {
        const words = env.fromSequence(0, 999);
        const dictionary = env.fromCollection(Array.from({ length: 20 }, (_, i) => [i, "name-" + i]));
        words.connect(dictionary.broadcast(names))
          .process({
            open(ctx) { this.subtask = ctx.subtaskIndex; },
            processElement(x, ctx, out) {
              const state = ctx.getBroadcastState(names);
              // What the state holds now depends on timing; that it is a prefix of the dictionary does not.
              const size = [...state.keys()].length;
              for (let i = 0; i < size; i++) if (state.get(i) !== "name-" + i) throw new Error("not a prefix at " + i);
              out.collect("x " + x);
            },
            processBroadcastElement([i, name], ctx, out) {
              ctx.getBroadcastState(names).put(i, name);
              out.collect("bc " + this.subtask + " " + name);
            },
          })
          .writeAsText(args[0]);
      };`);
    const status = await run(job, [out], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    const expected = [...Array.from({ length: 1000 }, (_, x) => `x ${x}`), ...[0, 1].flatMap((s) => Array.from({ length: 20 }, (_, i) => `bc ${s} name-${i}`))];
    expect(readLines(out).sort()).toEqual(expected.sort());
  }, 60_000);

  test("bad input: wrong shapes refused at submission naming the operator; undeclared broadcast state and applyToKeyedState without keys fail the job", async () => {
    const cases: [string, string][] = [
      ["a.connect(b.broadcast(d)).process({ processElement() {} })", "Broadcast Process: expected an object with processElement and processBroadcastElement methods (missing processBroadcastElement)"],
      ["a.keyBy((x) => x).connect(b.broadcast(d)).process((x) => x)", "Keyed Broadcast Process: expected an object with processElement and processBroadcastElement methods, got function"],
      ["a.connect(b.broadcast(d)).process({ processElement() {}, processBroadcastElement() {}, onTimer() {} })", "Broadcast Process: onTimer needs a keyed stream"],
      ["a.connect(b.broadcast({ name: 'x' })).process({})", "broadcast: expected MapStateDescriptors"],
      ["a.connect(b.broadcast(d, d)).process({})", 'broadcast: the state "rules" is given twice'],
    ];
    for (const [i, [code, message]] of cases.entries()) {
      const job = writeJob(dir, `bad-${i}.ts`, `
        import { MapStateDescriptor } from ${API};
        export default (env) => {
          const d = new MapStateDescriptor("rules");
          const a = env.fromSequence(1, 10);
          const b = env.fromSequence(1, 10);
          ${code}.print();
        };`);
      let error = "";
      await prepareJob(job, [], 1).catch((err: Error) => void (error = err.message));
      expect(error).toContain(message);
    }
    const runtimeCases: [string, string][] = [
      ["processBroadcastElement(x, ctx) { ctx.getBroadcastState(new MapStateDescriptor('other')).put(1, 1); }", 'Broadcast Process: getBroadcastState: the broadcast state "other" was not given to broadcast(...) (it has "rules")'],
      ["processBroadcastElement(x, ctx) { ctx.applyToKeyedState(new ValueStateDescriptor('v'), () => {}); }", "Broadcast Process: applyToKeyedState needs a keyed stream"],
    ];
    for (const [i, [method, message]] of runtimeCases.entries()) {
      const job = writeJob(dir, `bad-runtime-${i}.ts`, `
        import { MapStateDescriptor, ValueStateDescriptor } from ${API};
        export default (env) => {
          env.fromSequence(1, 10).connect(env.fromSequence(1, 10).broadcast(new MapStateDescriptor("rules")))
            .process({ processElement() {}, ${method} }).print();
        };`);
      const status = await run(job, [], 1);
      expect(status.state).toBe("FAILED");
      expect(status.error!.message).toContain(message);
    }
  }, 60_000);
});
