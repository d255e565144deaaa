// Windows on an in-process cluster (real Workers and sockets): out-of-order input with known lateness through
// tumbling, sliding, session and count windows with reduce, aggregate and process functions, allowed lateness
// and late data to a side output. The watermark is punctuated (emitted after each record: highest timestamp
// seen - 200 - 1) from one source subtask, so which records are late is exact; the expected firings are
// computed in this file by a direct simulation of the window semantics, not by the runtime's code.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { setLogLevel } from "../src/util/log.ts";
import { removeTempDirs, rng, runJob, tempDir, writeJob } from "./helpers.ts";
import { clusterForTests } from "./cluster-helpers.ts";

const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "log.level": "warn" };
setLogLevel("warn");
let dir = "";
beforeAll(() => void (dir = tempDir("tm-windows-"))); // when the tests run: another file's afterAll removes temp dirs
const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 2, config }));
afterAll(removeTempDirs);
const API = JSON.stringify(path.resolve("src/api/index.ts"));

const run = (jobFile: string, args: string[], parallelism: number) => runJob(t.client, jobFile, args, parallelism);

interface Ev {
  id: number;
  k: string;
  ts: number;
  v: number;
}

const BOUND = 200; // watermark = max timestamp - BOUND - 1

/** 3000 events over 3 keys, ~10 ms apart, jittered up to 300 ms, and 4% delayed by 300..1500 ms. */
function events(seed: number): Ev[] {
  const r = rng(seed);
  const out: Ev[] = [];
  for (let i = 0; i < 3000; i++) {
    let ts = 10_000 + i * 10 - Math.floor(r() * 300);
    if (r() < 0.04) ts -= 300 + Math.floor(r() * 1200);
    out.push({ id: i, k: `k${Math.floor(r() * 3)}`, ts, v: 1 + Math.floor(r() * 100) });
  }
  return out;
}

/** Outputs of every line in every file of a sink directory, as sorted strings. */
function lines(sub: string): string[] {
  const d = path.join(dir, sub);
  if (!fs.existsSync(d)) return [];
  const files = fs.statSync(d).isDirectory() ? fs.readdirSync(d).map((f) => path.join(d, f)) : [d];
  return files.flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0).sort();
}

// ---- the simulation: Flink's window semantics written out directly ----

type Window = [number, number];
interface Firing {
  k: string;
  w: Window;
  evs: Ev[];
}

/** Tumbling or sliding event-time windows with allowed lateness; returns every firing and the late records. */
function simulateFixed(evs: Ev[], assign: (ts: number) => Window[], lateness: number): { firings: Firing[]; late: Ev[] } {
  let wm = -Infinity;
  let max = -Infinity;
  const contents = new Map<string, { k: string; w: Window; evs: Ev[]; fired: boolean }>();
  const firings: Firing[] = [];
  const late: Ev[] = [];
  const advance = (to: number) => {
    wm = to;
    for (const [id, c] of [...contents].sort((a, b) => a[1].w[1] - b[1].w[1])) {
      if (!c.fired && c.w[1] - 1 <= wm) {
        firings.push({ k: c.k, w: c.w, evs: c.evs.slice() });
        c.fired = true;
      }
      if (c.w[1] - 1 + lateness <= wm) contents.delete(id);
    }
  };
  for (const e of evs) {
    let accepted = false;
    for (const w of assign(e.ts)) {
      if (w[1] - 1 + lateness <= wm) continue;
      accepted = true;
      const id = `${e.k}|${w[0]}|${w[1]}`;
      let c = contents.get(id);
      if (!c) contents.set(id, (c = { k: e.k, w, evs: [], fired: false }));
      c.evs.push(e);
      if (w[1] - 1 <= wm) {
        firings.push({ k: e.k, w, evs: c.evs.slice() });
        c.fired = true;
      }
    }
    if (!accepted && e.ts + lateness <= wm) late.push(e);
    max = Math.max(max, e.ts);
    if (max - BOUND - 1 > wm) advance(max - BOUND - 1);
  }
  advance(Infinity);
  return { firings, late };
}

/** Event-time session windows (no lateness): a record opens [ts, ts + gap) and merges every session it touches. */
function simulateSessions(evs: Ev[], gap: number): { firings: Firing[]; late: Ev[] } {
  let wm = -Infinity;
  let max = -Infinity;
  let open: { k: string; w: Window; evs: Ev[] }[] = [];
  const firings: Firing[] = [];
  const late: Ev[] = [];
  for (const e of evs) {
    let w: Window = [e.ts, e.ts + gap];
    let merged: typeof open = [];
    let changed = true;
    while (changed) {
      changed = false;
      for (const s of open) {
        if (s.k === e.k && !merged.includes(s) && s.w[0] <= w[1] && s.w[1] >= w[0]) {
          merged.push(s);
          w = [Math.min(w[0], s.w[0]), Math.max(w[1], s.w[1])];
          changed = true;
        }
      }
    }
    if (w[1] - 1 <= wm) {
      if (e.ts <= wm) late.push(e);
    } else {
      open = open.filter((s) => !merged.includes(s));
      open.push({ k: e.k, w, evs: [...merged.flatMap((s) => s.evs), e] });
    }
    max = Math.max(max, e.ts);
    if (max - BOUND - 1 > wm) {
      wm = max - BOUND - 1;
      for (const s of open.filter((s) => s.w[1] - 1 <= wm)) firings.push(s);
      open = open.filter((s) => s.w[1] - 1 > wm);
    }
  }
  firings.push(...open);
  return { firings, late };
}

const tumbling = (size: number) => (ts: number): Window[] => {
  const start = ts - (((ts % size) + size) % size);
  return [[start, start + size]];
};
const sliding = (size: number, slide: number) => (ts: number): Window[] => {
  const out: Window[] = [];
  for (let start = ts - (((ts % slide) + slide) % slide); start > ts - size; start -= slide) out.push([start, start + size]);
  return out;
};
const sum = (evs: Ev[]) => evs.reduce((a, e) => a + e.v, 0);
const ids = (evs: Ev[]) => evs.map((e) => e.id).sort((a, b) => a - b);

describe("event-time windows", () => {
  test.each(["heap", "sqlite"])("tumbling, sliding and session windows (reduce, aggregate, process), allowed lateness, late side output, count windows: every firing as simulated (%s backend)", async (backend) => {
    const input = events(backend === "heap" ? 11 : 12);
    const inputFile = path.join(dir, "events.json");
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(inputFile, JSON.stringify(input));
    const out = (name: string) => JSON.stringify(path.join(dir, name));
    const job = writeJob(dir, "windows.ts", `
      import * as fs from "node:fs";
      import { EventTimeSessionWindows, OutputTag, SlidingEventTimeWindows, TumblingEventTimeWindows, WatermarkStrategy } from ${API};
      const punctuated = () => {
        let max = -Infinity;
        return { onEvent(e, ts, out) { max = Math.max(max, ts); out.emitWatermark(max - ${BOUND} - 1); }, onPeriodicEmit() {} };
      };
      export default (env, args) => {
        env.setParallelism(2).setStateBackend(args[1]);
        const evs = env.fromCollection(JSON.parse(fs.readFileSync(args[0], "utf8")))
          .assignTimestampsAndWatermarks(WatermarkStrategy.forGenerator(punctuated).withTimestampAssigner((e) => e.ts))
          .setParallelism(1);
        const keyed = evs.keyBy((e) => e.k);
        const lateTag = new OutputTag("late");
        const tumblingSums = keyed.window(TumblingEventTimeWindows.of(1000)).sideOutputLateData(lateTag)
          .reduce((a, b) => ({ ...a, v: a.v + b.v }), (k, ctx, [r], out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, r.v])));
        tumblingSums.writeAsText(${out("tumbling-reduce")});
        tumblingSums.getSideOutput(lateTag).map((e) => String(e.id)).writeAsText(${out("tumbling-late")});
        keyed.window(TumblingEventTimeWindows.of(1000)).allowedLateness(500)
          .aggregate({ createAccumulator: () => 0, add: (e, n) => n + 1, getResult: (n) => n }, (k, ctx, [n], out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, n])))
          .writeAsText(${out("tumbling-lateness")});
        keyed.window(SlidingEventTimeWindows.of(1000, 250))
          .process((k, ctx, elements, out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, elements.map((e) => e.id).sort((a, b) => a - b)])))
          .writeAsText(${out("sliding-process")});
        keyed.window(EventTimeSessionWindows.withGap(40))
          .aggregate({ createAccumulator: () => 0, add: (e, s) => s + e.v, getResult: (s) => s, merge: (a, b) => a + b }, (k, ctx, [s], out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, s])))
          .writeAsText(${out("session-aggregate")});
        keyed.window(EventTimeSessionWindows.withGap(40))
          .process((k, ctx, elements, out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, elements.map((e) => e.id).sort((a, b) => a - b)])))
          .writeAsText(${out("session-process")});
        keyed.countWindow(3).reduce((a, b) => ({ ...a, v: a.v + b.v })).map((r) => JSON.stringify([r.k, r.v])).writeAsText(${out("count-reduce")});
        keyed.countWindow(4, 2).process((k, ctx, elements, out) => out.collect(JSON.stringify([k, elements.map((e) => e.id)]))).writeAsText(${out("count-sliding")});
      };`);
    const status = await run(job, [inputFile, backend], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");

    const fixed = simulateFixed(input, tumbling(1000), 0);
    expect(fixed.late.length).toBeGreaterThan(20); // the data really has late records
    expect(lines("tumbling-reduce")).toEqual(fixed.firings.map((f) => JSON.stringify([f.k, f.w[0], f.w[1], sum(f.evs)])).sort());
    expect(lines("tumbling-late")).toEqual(fixed.late.map((e) => String(e.id)).sort());

    const withLateness = simulateFixed(input, tumbling(1000), 500);
    const lateFirings = withLateness.firings.length - new Set(withLateness.firings.map((f) => `${f.k}|${f.w[0]}`)).size;
    expect(lateFirings).toBeGreaterThan(5); // some windows fire again for late records
    expect(lines("tumbling-lateness")).toEqual(withLateness.firings.map((f) => JSON.stringify([f.k, f.w[0], f.w[1], f.evs.length])).sort());

    const slid = simulateFixed(input, sliding(1000, 250), 0);
    expect(lines("sliding-process")).toEqual(slid.firings.map((f) => JSON.stringify([f.k, f.w[0], f.w[1], ids(f.evs)])).sort());

    const sessions = simulateSessions(input, 40);
    expect(sessions.firings.some((f) => f.evs.length >= 3)).toBe(true); // sessions that merged several records
    expect(lines("session-aggregate")).toEqual(sessions.firings.map((f) => JSON.stringify([f.k, f.w[0], f.w[1], sum(f.evs)])).sort());
    expect(lines("session-process")).toEqual(sessions.firings.map((f) => JSON.stringify([f.k, f.w[0], f.w[1], ids(f.evs)])).sort());

    // Count windows: per key in arrival order (one source subtask, so the input order).
    const byKey = new Map<string, Ev[]>();
    for (const e of input) byKey.set(e.k, [...(byKey.get(e.k) ?? []), e]);
    const countReduce: string[] = [];
    const countSliding: string[] = [];
    for (const [k, evs] of byKey) {
      for (let i = 3; i <= evs.length; i += 3) countReduce.push(JSON.stringify([k, sum(evs.slice(i - 3, i))]));
      for (let i = 2; i <= evs.length; i += 2) countSliding.push(JSON.stringify([k, evs.slice(Math.max(0, i - 4), i).map((e) => e.id)]));
    }
    expect(lines("count-reduce")).toEqual(countReduce.sort());
    expect(lines("count-sliding")).toEqual(countSliding.sort());
  }, 60_000);

  test("processing-time tumbling windows: every record counted once, windows aligned to the clock and emitted after they end", async () => {
    const job = writeJob(dir, "proc-windows.ts", `
      import { TumblingProcessingTimeWindows } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env) => {
        env.setParallelism(2);
        env.fromSequence(1, 2000).setParallelism(1)
          .map((x) => { if (x % 20 === 0) Atomics.wait(pause, 0, 0, 2); return x; })
          .keyBy((x) => x % 5)
          .window(TumblingProcessingTimeWindows.of(100))
          .process((k, ctx, els, out) => out.collect(JSON.stringify([k, ctx.window.start, ctx.window.end, els.length, Date.now()])))
          .writeAsText(${JSON.stringify(path.join(dir, "proc-windows"))});
      };`);
    const status = await run(job, [], 2);
    expect(status.state).toBe("FINISHED");
    const rows = lines("proc-windows").map((l) => JSON.parse(l) as [number, number, number, number, number]);
    const perKey = new Map<number, number>();
    const lastStart = new Map<number, number>();
    for (const [k, start] of rows) lastStart.set(k, Math.max(lastStart.get(k) ?? -Infinity, start));
    for (const [k, start, end, n, emitted] of rows) {
      expect(end - start).toBe(100);
      expect(start % 100).toBe(0);
      // Fired by the clock; only a key's last window may be emitted early, at the end of the input.
      if (start !== lastStart.get(k)) expect(emitted).toBeGreaterThanOrEqual(end - 1);
      perKey.set(k, (perKey.get(k) ?? 0) + n);
    }
    expect([...perKey.entries()].sort()).toEqual([0, 1, 2, 3, 4].map((k) => [k, 400]));
    expect(new Set(rows.map((r) => r[1])).size).toBeGreaterThan(1); // the input spanned several windows
  }, 60_000);
});
