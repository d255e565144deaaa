// Window triggers and evictors (issue 18 item 5) on an in-process cluster (real Workers): out-of-order input from one
// source subtask with a punctuated watermark (highest timestamp - 201 after each record), so arrival order per key
// and the watermark are exact, through windows at parallelism 2 with CountTrigger, PurgingTrigger,
// ContinuousEventTimeTrigger, CountEvictor and TimeEvictor, on both state backends; each firing is compared with a
// simulation of Flink's semantics written here. Also: trigger state survives a restart (exactly-once FileSink), and
// bad triggers fail with the cause named.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { CountTrigger, TumblingEventTimeWindows, TumblingProcessingTimeWindows } from "../src/api/index.ts";
import { setLogLevel } from "../src/util/log.ts";
import { clusterForTests, restartingConfig } from "./cluster-helpers.ts";
import { committedLines, removeTempDirs, rng, runJob, tempDir, writeJob } from "./helpers.ts";

setLogLevel("warn");
let dir = "";
beforeAll(() => void (dir = tempDir("tm-window-triggers-")));
const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 2, config: restartingConfig() }));
afterAll(removeTempDirs);
const API = JSON.stringify(path.resolve("src/api/index.ts"));

interface Ev {
  id: number;
  k: string;
  ts: number;
  v: number;
}
const BOUND = 200;

/** 3000 events over 3 keys, ~10 ms apart, jittered up to 300 ms, 4% delayed by 300..1500 ms. */
function events(seed: number): Ev[] {
  const r = rng(seed);
  return Array.from({ length: 3000 }, (_, i) => {
    let ts = 10_000 + i * 10 - Math.floor(r() * 300);
    if (r() < 0.04) ts -= 300 + Math.floor(r() * 1200);
    return { id: i, k: `k${Math.floor(r() * 3)}`, ts, v: 1 + Math.floor(r() * 100) };
  });
}

function lines(sub: string): string[] {
  const d = path.join(dir, sub);
  if (!fs.existsSync(d)) return [];
  const files = fs.statSync(d).isDirectory() ? fs.readdirSync(d).map((f) => path.join(d, f)) : [d];
  return files.flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0).sort();
}

const SIZE = 1000;
const windowOf = (ts: number): [number, number] => {
  const start = ts - (((ts % SIZE) + SIZE) % SIZE);
  return [start, start + SIZE];
};

/**
 * Tumbling event-time windows (no lateness) with a general trigger, simulated: elements in arrival order, the
 * watermark after each; timers fire in time order as the watermark passes them, also those registered while firing.
 * `onElement` and `onTimer` return what to emit (or nothing) and may register timers; a window's state is dropped at
 * its cleanup time (its end - 1).
 */
function simulate<S>(
  evs: Ev[],
  init: () => S,
  onElement: (s: S, e: Ev, w: [number, number], register: (t: number) => void, wm: number) => unknown[] | null,
  onTimer: (s: S, time: number, w: [number, number], register: (t: number) => void) => unknown[] | null,
): unknown[] {
  const out: unknown[] = [];
  const windows = new Map<string, { k: string; w: [number, number]; s: S; timers: Set<number> }>();
  let wm = -Infinity;
  let max = -Infinity;
  const advance = (to: number) => {
    wm = to;
    for (;;) {
      let next: { id: string; t: number } | null = null;
      for (const [id, x] of windows) for (const tm of x.timers) if (tm <= wm && (next === null || tm < next.t)) next = { id, t: tm };
      if (next === null) return;
      const x = windows.get(next.id)!;
      x.timers.delete(next.t);
      const r = onTimer(x.s, next.t, x.w, (tm) => x.timers.add(tm));
      if (r) out.push([x.k, x.w[0], x.w[1], ...r]);
      if (next.t === x.w[1] - 1) windows.delete(next.id); // cleanup
    }
  };
  for (const e of evs) {
    const w = windowOf(e.ts);
    if (w[1] - 1 > wm) {
      const id = `${e.k}|${w[0]}`;
      let x = windows.get(id);
      if (!x) windows.set(id, (x = { k: e.k, w, s: init(), timers: new Set([w[1] - 1]) }));
      const r = onElement(x.s, e, w, (tm) => x!.timers.add(tm), wm);
      if (r) out.push([e.k, w[0], w[1], ...r]);
    }
    max = Math.max(max, e.ts);
    if (max - BOUND - 1 > wm) advance(max - BOUND - 1);
  }
  advance(Infinity);
  return out;
}

/**
 * PurgingTrigger.of(CountTrigger.of(3)) with a sum: every 3 elements of a window, their sum, and the window is purged;
 * leftovers never fire (the count replaced the event-time trigger) and are dropped at cleanup.
 */
function purgingCountSums(input: Ev[]): unknown[] {
  return simulate(input, () => ({ n: 0, sum: 0 }), (s, e) => {
    s.n++;
    s.sum += e.v;
    if (s.n < 3) return null;
    const r = [s.sum];
    s.n = 0;
    s.sum = 0;
    return r;
  }, () => null);
}

describe("triggers and evictors", () => {
  test.each(["heap", "sqlite"])("CountTrigger, PurgingTrigger, ContinuousEventTimeTrigger, CountEvictor, TimeEvictor: every firing as simulated (%s backend)", async (backend) => {
    const input = events(backend === "heap" ? 21 : 22);
    const inputFile = path.join(dir, `events-${backend}.json`);
    fs.writeFileSync(inputFile, JSON.stringify(input));
    const out = (name: string) => JSON.stringify(path.join(dir, `${backend}-${name}`));
    const job = writeJob(dir, `triggers-${backend}.ts`, `
      import * as fs from "node:fs";
      import { ContinuousEventTimeTrigger, CountEvictor, CountTrigger, PurgingTrigger, TimeEvictor, TumblingEventTimeWindows, WatermarkStrategy } from ${API};
      const punctuated = () => {
        let max = -Infinity;
        return { onEvent(e, ts, out) { max = Math.max(max, ts); out.emitWatermark(max - ${BOUND} - 1); }, onPeriodicEmit() {} };
      };
      const show = (k, ctx, rest) => JSON.stringify([k, ctx.window.start, ctx.window.end, ...rest]);
      export default (env, args) => {
        env.setParallelism(2).setStateBackend(args[1]);
        const keyed = env.fromCollection(JSON.parse(fs.readFileSync(args[0], "utf8")))
          .assignTimestampsAndWatermarks(WatermarkStrategy.forGenerator(punctuated).withTimestampAssigner((e) => e.ts))
          .setParallelism(1)
          .keyBy((e) => e.k);
        const window = () => keyed.window(TumblingEventTimeWindows.of(${SIZE}));
        const count = { createAccumulator: () => 0, add: (e, n) => n + 1, getResult: (n) => n };
        window().trigger(PurgingTrigger.of(CountTrigger.of(3)))
          .reduce((a, b) => ({ ...a, v: a.v + b.v }), (k, ctx, [r], out) => out.collect(show(k, ctx, [r.v])))
          .writeAsText(${out("count-purging")});
        window().trigger(CountTrigger.of(4))
          .aggregate(count, (k, ctx, [n], out) => out.collect(show(k, ctx, [n])))
          .writeAsText(${out("count")});
        window().trigger(ContinuousEventTimeTrigger.of(250))
          .aggregate(count, (k, ctx, [n], out) => out.collect(show(k, ctx, [n])))
          .writeAsText(${out("continuous")});
        window().evictor(CountEvictor.of(2))
          .process((k, ctx, es, out) => out.collect(show(k, ctx, [es.map((e) => e.id)])))
          .writeAsText(${out("count-evictor")});
        window().evictor(TimeEvictor.of(300))
          .reduce((a, b) => ({ ...a, v: a.v + b.v }), (k, ctx, [r], out) => out.collect(show(k, ctx, [r.v])))
          .writeAsText(${out("time-evictor")});
      };`);
    const status = await runJob(t.client, job, [inputFile, backend], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    const expectLines = (name: string, want: unknown[]) => {
      expect(want.length).toBeGreaterThan(20);
      expect(lines(`${backend}-${name}`)).toEqual(want.map((x) => JSON.stringify(x)).sort());
    };

    expectLines("count-purging", purgingCountSums(input));
    // Every 4 elements, not purged: the count of the whole window so far.
    expectLines("count", simulate(input, () => ({ n: 0, total: 0 }), (s) => {
      s.total++;
      if (++s.n < 4) return null;
      s.n = 0;
      return [s.total];
    }, () => null));
    // Early firings every 250 ms of event time from the first element's interval on, and at the end.
    expectLines("continuous", simulate(input, () => ({ n: 0, fireAt: undefined as number | undefined }), (s, e, w, register) => {
      s.n++;
      if (s.fireAt === undefined) {
        s.fireAt = Math.min(e.ts - (e.ts % 250) + 250, w[1] - 1);
        register(s.fireAt);
      }
      return null;
    }, (s, time, w, register) => {
      if (time === w[1] - 1) return [s.n];
      if (time !== s.fireAt) return null;
      s.fireAt = Math.min(time + 250, w[1] - 1);
      register(s.fireAt);
      return [s.n];
    }));
    // The default event-time trigger with evictors: the last 2 elements by arrival; the elements within 300 ms of the
    // window's newest one.
    expectLines("count-evictor", simulate(input, () => ({ es: [] as Ev[] }), (s, e) => {
      s.es.push(e);
      return null;
    }, (s, time, w) => (time === w[1] - 1 ? [s.es.slice(-2).map((e) => e.id)] : null)));
    expectLines("time-evictor", simulate(input, () => ({ es: [] as Ev[] }), (s, e) => {
      s.es.push(e);
      return null;
    }, (s, time, w) => {
      if (time !== w[1] - 1) return null;
      const newest = Math.max(...s.es.map((e) => e.ts));
      return [s.es.filter((e) => e.ts > newest - 300).reduce((a, e) => a + e.v, 0)];
    }));
  }, 120_000);

  test("trigger state is in checkpoints: a restart gives the same CountTrigger firings, exactly once", async () => {
    const input = events(31);
    const inputFile = path.join(dir, "events-restart.json");
    fs.writeFileSync(inputFile, JSON.stringify(input));
    const out = path.join(dir, "restart-out");
    const flag = path.join(dir, "restart-thrown");
    const job = writeJob(dir, "triggers-restart.ts", `
      import * as fs from "node:fs";
      import { CountTrigger, FileSink, PurgingTrigger, TumblingEventTimeWindows, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      const punctuated = () => {
        let max = -Infinity;
        return { onEvent(e, ts, out) { max = Math.max(max, ts); out.emitWatermark(max - ${BOUND} - 1); }, onPeriodicEmit() {} };
      };
      export default (env, args) => {
        env.setParallelism(2).enableCheckpointing(100);
        env.fromCollection(JSON.parse(fs.readFileSync(args[0], "utf8")))
          .map((e) => {
            Atomics.wait(pause, 0, 0, 1);
            if (e.id === 2000 && !fs.existsSync(args[1])) { fs.writeFileSync(args[1], ""); throw new Error("once"); }
            return e;
          })
          .setParallelism(1)
          .assignTimestampsAndWatermarks(WatermarkStrategy.forGenerator(punctuated).withTimestampAssigner((e) => e.ts))
          .setParallelism(1)
          .keyBy((e) => e.k)
          .window(TumblingEventTimeWindows.of(${SIZE}))
          .trigger(PurgingTrigger.of(CountTrigger.of(3)))
          .reduce((a, b) => ({ ...a, v: a.v + b.v }), (k, ctx, [r], out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, r.v])))
          .sinkTo(FileSink.forRowFormat(args[2]).build());
      };`);
    const status = await runJob(t.client, job, [inputFile, flag, out], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    expect(status.restarts).toBe(1);
    expect(committedLines(out).sort()).toEqual(purgingCountSums(input).map((x) => JSON.stringify(x)).sort());
  }, 120_000);

  test("a trigger that returns something else fails the task naming it", async () => {
    const job = writeJob(dir, "bad-trigger.ts", `
      import { TumblingProcessingTimeWindows } from ${API};
      export default (env) => {
        env.fromSequence(1, 100).keyBy((x) => x % 3).window(TumblingProcessingTimeWindows.of(1000))
          .trigger({ onElement: () => "BOOM", onEventTime: () => "CONTINUE", onProcessingTime: () => "CONTINUE", clear() {} })
          .reduce((a, b) => a + b).addSink(() => {});
      };`);
    const status = await runJob(t.client, job, [], 1);
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toContain('window trigger: onElement returned "BOOM"');
  }, 60_000);

  test("bad triggers and evictors are refused when the job is built", () => {
    const env = new StreamExecutionEnvironment();
    const keyed = env.fromSequence(1, 10).keyBy((x) => x % 2);
    expect(() => keyed.window(TumblingEventTimeWindows.of(10)).trigger({ onElement: () => "FIRE" } as never)).toThrow("trigger: expected a trigger with onElement, onEventTime, onProcessingTime and clear (missing onEventTime)");
    expect(() => keyed.window(TumblingEventTimeWindows.of(10)).evictor({} as never)).toThrow("evictor: expected an evictor with evictBefore and/or evictAfter");
    expect(() => keyed.countWindow(3).trigger(CountTrigger.of(2))).toThrow("count windows have their own trigger");
    expect(() => CountTrigger.of(0)).toThrow("CountTrigger.of: expected an integer count >= 1, got 0");
    // As Flink, processing-time windows take allowedLateness and ignore it.
    expect(() => keyed.window(TumblingProcessingTimeWindows.of(10)).allowedLateness(100)).not.toThrow();
  });
});
