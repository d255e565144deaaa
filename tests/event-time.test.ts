// Event time: the input watermark valve (minimum over channels, idle and ended channels, backwards watermarks
// ignored and counted), the timer service (order, dedup, delete, snapshot and restore by key group), and jobs on
// an in-process cluster: KeyedProcessFunction timers and side outputs, idle inputs that do not hold the
// watermark back, timers that survive a savepoint restored at another parallelism, and bad timestamps.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { setLogLevel } from "../src/util/log.ts";
import { InternalTimerService, WatermarkValve, type Timer } from "../src/runtime/event-time.ts";
import { createKeyedStateBackend, OperatorStateStore } from "../src/state/index.ts";
import { keyGroupOf } from "../src/state/key-groups.ts";
import type { OperatorContext } from "../src/runtime/operator.ts";
import { removeTempDirs, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";
import { clusterForTests } from "./cluster-helpers.ts";

setLogLevel("warn");
const API = JSON.stringify(path.resolve("src/api/index.ts"));

describe("watermark valve", () => {
  test("the input watermark is the minimum over channels and only advances", () => {
    const v = new WatermarkValve(["a", "b"]);
    expect(v.onWatermark("a", 100, false)).toBeNull(); // b still at -Infinity
    expect(v.onWatermark("b", 50, false)).toBe(50);
    expect(v.onWatermark("b", 150, false)).toBe(100);
    expect(v.onWatermark("a", 120, false)).toBe(120);
    expect(v.onWatermark("a", 130, false)).toBe(130);
    expect(v.current).toBe(130);
  });

  test("a watermark that goes backwards on one channel is ignored and counted", () => {
    const v = new WatermarkValve(["a", "b"]);
    v.onWatermark("a", 100, false);
    v.onWatermark("b", 100, false);
    expect(v.onWatermark("a", 40, false)).toBeNull();
    expect(v.backwards).toBe(1);
    // a keeps 100: b moving on is not held back by the ignored 40
    expect(v.onWatermark("b", 200, false)).toBeNull(); // min(100, 200) is no advance
    expect(v.onWatermark("a", 90, false)).toBeNull();
    expect(v.backwards).toBe(2);
    expect(v.onWatermark("a", 180, false)).toBe(180);
    expect(v.current).toBe(180);
  });

  test("idle channels are left out; when all are idle the input is idle; an ended channel holds nothing back", () => {
    const v = new WatermarkValve(["a", "b", "c"]);
    v.onWatermark("a", 10, false);
    v.onWatermark("b", 500, false);
    expect(v.onWatermark("c", 20, false)).toBe(10);
    expect(v.onWatermark("a", 0, true)).toBe(20); // a idle: min(b, c)
    expect(v.onEnd("c")).toBe(500); // c ended: only b counts
    expect(v.idle).toBe(false);
    expect(v.onWatermark("b", 500, true)).toBe(Infinity); // a and b idle, c ended: the ended one is +Infinity
    expect(v.current).toBe(Infinity);
  });

  test("all channels idle makes the input idle; a watermark on one makes it active again", () => {
    const v = new WatermarkValve(["a", "b"]);
    v.onWatermark("a", 10, false);
    v.onWatermark("b", 20, false);
    v.onWatermark("a", 10, true);
    expect(v.idle).toBe(false);
    v.onWatermark("b", 20, true);
    expect(v.idle).toBe(true);
    expect(v.onWatermark("a", 30, false)).toBe(30);
    expect(v.idle).toBe(false);
    expect(v.backwards).toBe(0);
  });
});

describe("timer service", () => {
  async function service(range: { start: number; end: number }, store: OperatorStateStore, fired: Timer[]) {
    const keyed = await createKeyedStateBackend({ kind: "heap", maxParallelism: 16, keyGroupRange: range, dir: "", cacheBytes: 1 << 20, restoreFrom: [] });
    const ctx = { operatorState: store } as unknown as OperatorContext;
    return { keyed, timers: new InternalTimerService(keyed, ctx, "__timers-x", (t) => fired.push(t)) };
  }

  test("event-time timers fire in timestamp order when the watermark passes them, once per key and timestamp; deleted ones never", async () => {
    const fired: Timer[] = [];
    const { keyed, timers } = await service({ start: 0, end: 15 }, new OperatorStateStore(), fired);
    const expected: [string, number][] = [];
    for (let i = 0; i < 200; i++) {
      const key = `k${i % 7}`;
      const ts = (i * 7919) % 1000;
      keyed.setCurrentKey(key);
      timers.register(0, ts);
      timers.register(0, ts); // duplicate
      if (i % 5 === 0) timers.delete(0, ts);
    }
    // Expected independently: the last register/delete per (key, ts) wins.
    const liveSet = new Map<string, boolean>();
    for (let i = 0; i < 200; i++) liveSet.set(`k${i % 7}|${(i * 7919) % 1000}`, i % 5 !== 0);
    for (const [id, live] of liveSet) if (live) expected.push([id.split("|")[0]!, Number(id.split("|")[1])]);
    timers.advanceWatermark(499);
    expect(fired.every((t) => t.ts <= 499)).toBe(true);
    timers.advanceWatermark(Infinity);
    const got = fired.map((t) => [t.key as string, t.ts] as [string, number]);
    for (let i = 1; i < got.length; i++) expect(got[i]![1]).toBeGreaterThanOrEqual(got[i - 1]![1]);
    expect(got.map((g) => g.join("|")).sort()).toEqual(expected.map((e) => e.join("|")).sort());
    await keyed.close();
  });

  test("a snapshot restores the timers of each key group into the subtask that owns it", async () => {
    const store = new OperatorStateStore(0, 1);
    const { keyed, timers } = await service({ start: 0, end: 15 }, store, []);
    for (let k = 0; k < 50; k++) {
      keyed.setCurrentKey(k);
      timers.register(0, 1000 + k);
      timers.register(1, Date.now() + 3_600_000);
    }
    timers.snapshot();
    timers.dispose();
    const dir = tempDir("tm-timers-");
    const handle = await store.snapshot(dir);
    const fired: Timer[][] = [[], []];
    const ranges = [{ start: 0, end: 6 }, { start: 7, end: 15 }];
    for (let i = 0; i < 2; i++) {
      const s = new OperatorStateStore(i, 2);
      await s.restore([handle]);
      const { keyed: kb, timers: t } = await service(ranges[i]!, s, fired[i]!);
      expect(t.size).toBe(2 * [...Array(50).keys()].filter((k) => keyGroupOf(k, 16) >= ranges[i]!.start && keyGroupOf(k, 16) <= ranges[i]!.end).length);
      t.advanceWatermark(Infinity);
      t.dispose();
      await kb.close();
    }
    const all = [...fired[0]!, ...fired[1]!].map((t) => t.key as number).sort((a, b) => a - b);
    expect(all).toEqual([...Array(50).keys()]);
    for (let i = 0; i < 2; i++) for (const t of fired[i]!) expect(keyGroupOf(t.key, 16)).toBeGreaterThanOrEqual(ranges[i]!.start);
    await keyed.close();
    removeTempDirs();
  });
});

describe("event time on a cluster", () => {
  const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "log.level": "warn" };
  let dir = "";
  beforeAll(() => void (dir = tempDir("tm-event-time-"))); // not earlier: other blocks' afterAll remove temp dirs
  const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config: { ...config, "state.checkpoints.dir": path.join(dir, "checkpoints") } }));
  afterAll(removeTempDirs);
  const run = (job: string, args: string[], p: number) => runJob(t.client, job, args, p);
  const readLines = (d: string) =>
    (fs.statSync(d).isDirectory() ? fs.readdirSync(d).map((f) => path.join(d, f)) : [d]).flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0);

  test("KeyedProcessFunction: event-time timers fire in order once the watermark passes them, deleted timers never, processing-time timers by the clock; side outputs", async () => {
    const out = path.join(dir, "timers");
    const job = writeJob(dir, "timers.ts", `
      import { OutputTag, ValueStateDescriptor, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      const tag = new OutputTag("hundreds");
      export default (env) => {
        env.setParallelism(2).setAutoWatermarkInterval(20);
        const fast = env.fromSequence(1, 3000).setParallelism(1)
          .map((x) => { if (x % 10 === 0) Atomics.wait(pause, 0, 0, 1); return { x, ts: x * 10 - ((x * 37) % 50) }; });
        // One more record after 1.5 s (its own task), which keeps the job running while processing-time timers are due.
        const late = env.fromElements(3001).map((x) => { Atomics.wait(pause, 0, 0, 1500); return { x, ts: x * 10 - ((x * 37) % 50) }; }).disableChaining();
        const result = fast.union(late)
          .assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness(100).withTimestampAssigner((e) => e.ts)).setParallelism(1)
          .keyBy((e) => e.x % 4)
          .process({
            open(ctx) { this.started = ctx.getState(new ValueStateDescriptor("started")); },
            processElement(e, ctx, out) {
              if (ctx.timestamp() !== e.ts) throw new Error("wrong timestamp " + ctx.timestamp());
              ctx.timerService().registerEventTimeTimer(Math.floor(e.ts / 1000) * 1000 + 999);
              if (e.x % 7 === 0) { ctx.timerService().registerEventTimeTimer(1e9 + e.x); ctx.timerService().deleteEventTimeTimer(1e9 + e.x); }
              // One processing-time timer per key, mid-run (x >= 1000), so that it is due well before the input ends.
              if (e.x >= 1000 && !this.started.value()) { this.started.update(true); ctx.timerService().registerProcessingTimeTimer(ctx.timerService().currentProcessingTime() + 30); }
              if (e.x % 100 === 0) ctx.output(tag, e.x);
            },
            onTimer(ts, ctx, out) {
              if (ctx.timeDomain() === "PROCESSING_TIME") out.collect(JSON.stringify(["proc", ctx.getCurrentKey()]));
              else out.collect(JSON.stringify([ctx.getCurrentKey(), ts, ctx.timerService().currentWatermark() >= ts, ctx.timestamp() === ts]));
            },
          });
        result.writeAsText(${JSON.stringify(out)});
        result.getSideOutput(tag).map((x) => "side " + x).writeAsText(${JSON.stringify(out + "-side")});
      };`);
    const status = await run(job, [], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    // Each subtask file keeps its order: per key, event-time timers come in timestamp order.
    const expected = new Set<string>();
    for (let x = 1; x <= 3001; x++) expected.add(JSON.stringify([x % 4, Math.floor((x * 10 - ((x * 37) % 50)) / 1000) * 1000 + 999, true, true]));
    const files = fs.readdirSync(out).map((f) => fs.readFileSync(path.join(out, f), "utf8").split("\n").filter((l) => l.length > 0));
    const all = files.flat();
    expect(all.filter((l) => l.startsWith('["proc"')).sort()).toEqual([0, 1, 2, 3].map((k) => JSON.stringify(["proc", k])));
    const eventLines = all.filter((l) => !l.startsWith('["proc"'));
    expect(eventLines.sort()).toEqual([...expected].sort());
    for (const f of files) {
      const last = new Map<number, number>();
      for (const l of f.filter((l) => !l.startsWith('["proc"'))) {
        const [k, ts] = JSON.parse(l) as [number, number];
        expect(ts).toBeGreaterThan(last.get(k) ?? -Infinity);
        last.set(k, ts);
      }
    }
    expect(readLines(out + "-side").sort()).toEqual(Array.from({ length: 30 }, (_, i) => `side ${(i + 1) * 100}`).sort());
    // The window task reports its event-time figures with its metrics.
    const proc = status.vertices.find((v) => v.name.includes("Keyed Process"))!;
    for (const s of proc.subtasks) expect((s.metrics as unknown as Record<string, unknown>).watermarksIgnored).toBe(0);
  }, 60_000);

  /** Window results per 1 s of event time of a fast stream, unioned with a stream that stalls for 3 s. */
  function idleJob(name: string, idleness: boolean, marker: string): string {
    return writeJob(dir, `${name}.ts`, `
      import * as fs from "node:fs";
      import { TumblingEventTimeWindows, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env) => {
        env.setParallelism(1).setAutoWatermarkInterval(50);
        const strategy = (s) => ${idleness ? "s.withIdleness(300)" : "s"};
        const fast = env.fromSequence(0, 1999)
          .map((x) => { if (x % 10 === 0) Atomics.wait(pause, 0, 0, 10); return { k: "fast", ts: x * 10 }; })
          .assignTimestampsAndWatermarks(strategy(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((e) => e.ts)));
        // The slow stream: one record, then its map blocks for 3 s (in a task of its own), then one more.
        const slow = env.fromCollection([0, 1])
          .map((i) => { if (i === 1) { Atomics.wait(pause, 0, 0, 3000); fs.writeFileSync(${JSON.stringify(marker)}, String(Date.now())); } return { k: "slow", ts: i * 10 }; })
          .disableChaining()
          .assignTimestampsAndWatermarks(strategy(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((e) => e.ts)));
        fast.union(slow).keyBy((e) => e.k)
          .window(TumblingEventTimeWindows.of(1000))
          .process((k, ctx, els, out) => out.collect(JSON.stringify([k, ctx.window.start, els.length, Date.now()])))
          .writeAsText(${JSON.stringify(path.join(dir, name))});
      };`);
  }

  test("an idle input (withIdleness) does not hold the watermark back; without idleness it does", async () => {
    const results: Record<string, { early: number; total: number }> = {};
    for (const idleness of [true, false]) {
      const name = idleness ? "idle-on" : "idle-off";
      const marker = path.join(dir, `${name}.marker`);
      const status = await run(idleJob(name, idleness, marker), [], 1);
      expect(status.state).toBe("FINISHED");
      const slowDone = Number(fs.readFileSync(marker, "utf8"));
      const rows = readLines(path.join(dir, name)).map((l) => JSON.parse(l) as [string, number, number, number]);
      const fast = rows.filter((r) => r[0] === "fast");
      // Every fast window is there with its 100 records, whenever it fired.
      expect(fast.map((r) => [r[1], r[2]]).sort((a, b) => a[0]! - b[0]!)).toEqual(Array.from({ length: 20 }, (_, i) => [i * 1000, 100]));
      results[name] = { early: fast.filter((r) => r[3] < slowDone).length, total: fast.length };
    }
    // With idleness the stalled stream is left out, so the fast windows fire while it stalls (the last ones may
    // wait for the end of input); without, every window waits for the stalled stream.
    expect(results["idle-on"]!.early).toBeGreaterThanOrEqual(15);
    expect(results["idle-off"]!.early).toBe(0);
  }, 60_000);

  test("timers survive a savepoint restored at another parallelism (2 -> 3)", async () => {
    const out1 = path.join(dir, "sp-out-1");
    const out2 = path.join(dir, "sp-out-2");
    const N = 100_000;
    const job = writeJob(dir, "sp.ts", `
      import { ValueStateDescriptor, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env, args) => {
        env.setStateBackend(args[1]);
        env.fromSequence(1, ${N})
          .map((x) => { if (x % 100 === 0) Atomics.wait(pause, 0, 0, 2); return x; })
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => x))
          .keyBy((x) => x % 20)
          .process({
            open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
            processElement(x, ctx, out) {
              // The timer is registered only on a key's first record: after a restore only the restored timer can fire.
              if (this.count.value() === 0) ctx.timerService().registerEventTimeTimer(1e12 + ctx.getCurrentKey());
              this.count.update(this.count.value() + 1);
            },
            onTimer(ts, ctx, out) { out.collect(JSON.stringify([ctx.getCurrentKey(), ts, this.count.value()])); },
          })
          .writeAsText(args[0]);
      };`);
    const prepared = await prepareJob(job, [out1, "sqlite"], 2);
    const jobId = await submitJob(t.client, prepared);
    await waitFor("the job running", async () => (await t.client.request("jobStatus", { jobId })).tasks.RUNNING === 4, 20_000);
    await Bun.sleep(300);
    const sp = await t.client.request("triggerSavepoint", { jobId, dir: path.join(dir, "savepoints"), cancel: true }, 30_000);
    const canceled = await waitForJob(t.client, jobId, () => {});
    expect(canceled.state).toBe("CANCELED");
    expect(readLines(out1)).toEqual([]); // no timer fired before the savepoint
    const resumed = await waitForJob(t.client, await submitJob(t.client, { ...(await prepareJob(job, [out2, "sqlite"], 3)), fromSavepoint: sp.path }), () => {});
    expect(resumed.error?.message).toBeUndefined();
    expect(resumed.state).toBe("FINISHED");
    expect(resumed.checkpoints.restoredFrom).toContain(sp.path);
    expect(fs.readdirSync(out2).sort()).toEqual(["1", "2", "3"]);
    const expected = Array.from({ length: 20 }, (_, k) => JSON.stringify([k, 1e12 + k, N / 20]));
    expect(readLines(out2).sort()).toEqual(expected.sort());
  }, 90_000);

  test("a record without a valid timestamp fails the job with a message naming the operator", async () => {
    const noAssigner = writeJob(dir, "no-ts.ts", `
      import { TumblingEventTimeWindows } from ${API};
      export default (env) => {
        env.fromSequence(1, 100).keyBy((x) => x % 3).window(TumblingEventTimeWindows.of(1000)).reduce((a, b) => a + b).print();
      };`);
    const s1 = await run(noAssigner, [], 1);
    expect(s1.state).toBe("FAILED");
    expect(s1.error!.message).toContain("Event-Time Tumbling Window Reduce: a record without a timestamp (null) reached an event-time window");

    const badAssigner = writeJob(dir, "bad-ts.ts", `
      import { WatermarkStrategy } from ${API};
      export default (env) => {
        env.fromSequence(1, 100)
          .map((x) => ({ x, ts: x === 42 ? "yesterday" : x }))
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((e) => e.ts))
          .name("Event Timestamps")
          .print();
      };`);
    const s2 = await run(badAssigner, [], 1);
    expect(s2.state).toBe("FAILED");
    expect(s2.error!.message).toContain('Event Timestamps: the timestamp assigner returned string "yesterday" for record {"x":42,"ts":"yesterday"}');
  }, 60_000);
});
