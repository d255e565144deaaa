// Joins (issue 18 item 3) on an in-process cluster with real Workers: intervalJoin (inclusive and exclusive bounds,
// the pair's timestamp), window join and coGroup, on out-of-order input at p=1 and p=2 on both state backends,
// each against a single-threaded reference computed here; the interval join's buffered state through a savepoint
// restored at another parallelism; bad functions refused at submission with the operator named.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { TumblingEventTimeWindows } from "../src/api/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { setLogLevel } from "../src/util/log.ts";
import { clusterForTests, restartingConfig } from "./cluster-helpers.ts";
import { committedLines, removeTempDirs, rng, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";

setLogLevel("warn");
let dir = "";
beforeAll(() => void (dir = tempDir("tm-joins-")));
const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config: restartingConfig() }));
afterAll(removeTempDirs);
const API = JSON.stringify(path.resolve("src/api/index.ts"));

interface Ev {
  id: number;
  k: number;
  ts: number;
}

/** n events over `keys` keys, ~5 ms apart, out of order by up to 400 ms (the watermark lags 1 s: nothing is late). */
function events(seed: number, n: number, keys: number, idFrom: number): Ev[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => ({ id: idFrom + i, k: Math.floor(r() * keys), ts: 100_000 + i * 5 - Math.floor(r() * 400) }));
}

// Key 7 only on the left: coGroup gets windows with one side only, the joins nothing for it.
const LEFT = [...events(41, 1500, 7, 0), ...events(43, 30, 1, 50_000).map((e) => ({ ...e, k: 7 }))];
const RIGHT = events(42, 1500, 7, 100_000);

/** The job's two keyed inputs, from files, with event time (1 s of out-of-orderness). */
const inputs = (backend: string) => `
  import * as fs from "node:fs";
  import { FileSink, TumblingEventTimeWindows, ValueStateDescriptor, WatermarkStrategy } from ${API};
  const wm = WatermarkStrategy.forBoundedOutOfOrderness(1000).withTimestampAssigner((e) => e.ts);
  const read = (env, file) => env.fromCollection(JSON.parse(fs.readFileSync(file, "utf8"))).assignTimestampsAndWatermarks(wm).setParallelism(1);
  const setup = (env, args) => {
    env.setStateBackend(${JSON.stringify(backend)});
    return [read(env, args[0]), read(env, args[1])];
  };`;

function pairsWithin(lower: number, upper: number): string[] {
  const out: string[] = [];
  for (const l of LEFT) for (const r of RIGHT) if (l.k === r.k && r.ts >= l.ts + lower && r.ts <= l.ts + upper) out.push(`(${l.id},${r.id},${Math.max(l.ts, r.ts)})`);
  return out.sort();
}

function windowGroups(size: number): Map<string, { lefts: Ev[]; rights: Ev[] }> {
  const m = new Map<string, { lefts: Ev[]; rights: Ev[] }>();
  const add = (e: Ev, side: "lefts" | "rights") => {
    const start = e.ts - (e.ts % size);
    const id = `${e.k}|${start}`;
    if (!m.has(id)) m.set(id, { lefts: [], rights: [] });
    m.get(id)![side].push(e);
  };
  for (const e of LEFT) add(e, "lefts");
  for (const e of RIGHT) add(e, "rights");
  return m;
}

describe("joins", () => {
  beforeAll(() => {
    fs.writeFileSync(path.join(dir, "left.json"), JSON.stringify(LEFT));
    fs.writeFileSync(path.join(dir, "right.json"), JSON.stringify(RIGHT));
  });
  const files = () => [path.join(dir, "left.json"), path.join(dir, "right.json")];

  for (const backend of ["heap", "sqlite"]) {
    test.each([1, 2])(`intervalJoin, window join and coGroup against references (${backend}, p=%d)`, async (p) => {
      const out = (name: string) => path.join(dir, `${backend}-${p}-${name}`);
      const job = writeJob(dir, `joins-${backend}-${p}.ts`, `${inputs(backend)}
        export default (env, args) => {
          const [left, right] = setup(env, args);
          const l = left.keyBy((e) => e.k), r = right.keyBy((e) => e.k);
          // The pair's timestamp, read downstream by a keyed process function.
          const stamp = (s) => s.keyBy(() => 0).process({ processElement(v, ctx, out) { out.collect([...v, ctx.timestamp()]); } });
          stamp(l.intervalJoin(r).between(-100, 200).process((a, b, ctx, out) => out.collect([a.id, b.id])))
            .sinkTo(FileSink.forRowFormat(${JSON.stringify(out("interval"))}).build());
          stamp(l.intervalJoin(r).between(-100, 200).lowerBoundExclusive().upperBoundExclusive().process({ processElement(a, b, ctx, out) { out.collect([a.id, b.id]); } }))
            .sinkTo(FileSink.forRowFormat(${JSON.stringify(out("interval-exclusive"))}).build());
          left.join(right).where((e) => e.k).equalTo((e) => e.k).window(TumblingEventTimeWindows.of(1000))
            .apply((a, b) => [a.id, b.id])
            .sinkTo(FileSink.forRowFormat(${JSON.stringify(out("window-join"))}).build());
          left.coGroup(right).where((e) => e.k).equalTo((e) => e.k).window(TumblingEventTimeWindows.of(1000))
            .apply((as, bs, out) => out.collect([as.map((e) => e.id).sort((x, y) => x - y).join(" "), bs.map((e) => e.id).sort((x, y) => x - y).join(" ")]))
            .sinkTo(FileSink.forRowFormat(${JSON.stringify(out("cogroup"))}).build());
        };`);
      const status = await runJob(t.client, job, files(), p);
      expect(status.error?.message).toBeUndefined();
      expect(status.state).toBe("FINISHED");

      const interval = pairsWithin(-100, 200);
      expect(interval.length).toBeGreaterThan(1000);
      expect(committedLines(out("interval")).sort()).toEqual(interval);
      const exclusive = pairsWithin(-99, 199);
      expect(exclusive.length).toBeLessThan(interval.length); // the bounds matter for this data
      expect(committedLines(out("interval-exclusive")).sort()).toEqual(exclusive);

      const groups = windowGroups(1000);
      const joined: string[] = [];
      const cogrouped: string[] = [];
      for (const { lefts, rights } of groups.values()) {
        for (const a of lefts) for (const b of rights) joined.push(`(${a.id},${b.id})`);
        const ids = (es: Ev[]) => es.map((e) => e.id).sort((x, y) => x - y).join(" ");
        cogrouped.push(`(${ids(lefts)},${ids(rights)})`);
      }
      expect(committedLines(out("window-join")).sort()).toEqual(joined.sort());
      expect(cogrouped.some((c) => c.startsWith("(,") || c.endsWith(",)"))).toBe(true); // windows with one side only
      expect(committedLines(out("cogroup")).sort()).toEqual(cogrouped.sort());
    }, 120_000);
  }

  test("the interval join's buffered elements go through a savepoint restored at another parallelism (2 -> 3): pair counts per key exact", async () => {
    const source = (backend: string) => `${inputs(backend)}
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env, args) => {
        env.enableCheckpointing(200);
        const [left, right] = setup(env, args);
        // The first run is slow (1 ms every 5 records: about 4 s per input), so that its savepoint falls mid-stream; the
        // second is not. A source's chunk (1024 records) stays short: barriers go in between chunks.
        const slow = (s) => s.map((e) => { if (args[2] === "slow" && e.id % 5 === 0) Atomics.wait(pause, 0, 0, 1); return e; }).setParallelism(1);
        slow(left).uid("left").keyBy((e) => e.k)
          .intervalJoin(slow(right).uid("right").keyBy((e) => e.k)).between(-100, 200).process((a, b, ctx, out) => out.collect(a.k))
          .uid("join")
          .keyBy((k) => k)
          .process({
            open(ctx) { this.n = ctx.getState(new ValueStateDescriptor("n", { default: 0 })); },
            processElement(k, ctx, out) { const n = this.n.value() + 1; this.n.update(n); out.collect([k, n]); },
          })
          .uid("count")
          .sinkTo(FileSink.forRowFormat(args[3]).build());
      };`;
    const left = events(51, 20_000, 7, 0);
    const right = events(52, 20_000, 7, 100_000);
    const spFiles = [path.join(dir, "sp-left.json"), path.join(dir, "sp-right.json")];
    fs.writeFileSync(spFiles[0]!, JSON.stringify(left));
    fs.writeFileSync(spFiles[1]!, JSON.stringify(right));
    const first = writeJob(dir, "sp-join-1.ts", source("sqlite"));
    const jobId = await submitJob(t.client, await prepareJob(first, [...spFiles, "slow", path.join(dir, "sp-out-1")], 2));
    await waitFor("a completed checkpoint", async () => {
      const s = await t.client.request("jobStatus", { jobId });
      if (s.state === "FAILED" || s.state === "FINISHED") throw new Error(`job ended ${s.state} before the savepoint: ${s.error?.message}`);
      return s.state === "RUNNING" && s.checkpoints.completed > 0;
    }, 60_000);
    const sp = await t.client.request("triggerSavepoint", { jobId, dir: path.join(dir, "join-savepoint"), cancel: true }, 60_000);
    expect((await waitForJob(t.client, jobId, () => {}, 50)).state).toBe("CANCELED");
    const second = writeJob(dir, "sp-join-2.ts", source("heap"));
    const prepared = await prepareJob(second, [...spFiles, "fast", path.join(dir, "sp-out-2")], 3);
    const resumed = await waitForJob(t.client, await submitJob(t.client, { ...prepared, fromSavepoint: path.dirname(sp.path) }), () => {}, 50);
    expect(resumed.error?.message).toBeUndefined();
    expect(resumed.state).toBe("FINISHED");
    // The last count per key is the number of pairs of that key over both runs.
    const want = new Map<number, number>();
    const rightTimes = new Map<number, number[]>();
    for (const r of right) rightTimes.set(r.k, [...(rightTimes.get(r.k) ?? []), r.ts]);
    for (const ts of rightTimes.values()) ts.sort((a, b) => a - b);
    const firstAtLeast = (xs: number[], v: number) => {
      let lo = 0, hi = xs.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (xs[mid]! < v) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    };
    for (const l of left) {
      const ts = rightTimes.get(l.k) ?? [];
      const n = firstAtLeast(ts, l.ts + 201) - firstAtLeast(ts, l.ts - 100);
      if (n > 0) want.set(l.k, (want.get(l.k) ?? 0) + n);
    }
    const got = new Map<number, number>();
    for (const line of committedLines(path.join(dir, "sp-out-2"))) {
      const [k, n] = line.slice(1, -1).split(",").map(Number) as [number, number];
      got.set(k, Math.max(got.get(k) ?? 0, n));
    }
    expect(got).toEqual(want);
    // The first run stopped part-way: the second had pairs to add for every key.
    const before = new Map<number, number>();
    for (const line of committedLines(path.join(dir, "sp-out-1"))) {
      const [k, n] = line.slice(1, -1).split(",").map(Number) as [number, number];
      before.set(k, Math.max(before.get(k) ?? 0, n));
    }
    for (const [k, n] of want) expect(before.get(k) ?? 0).toBeLessThan(n);
  }, 120_000);

  test("bad join functions and bounds are refused when the job is built, naming the operator", () => {
    const env = new StreamExecutionEnvironment();
    const a = env.fromSequence(1, 10);
    const b = env.fromSequence(1, 10);
    expect(() => a.keyBy((x) => x).intervalJoin(b.keyBy((x) => x)).between(10, 5)).toThrow("intervalJoin.between: the lower bound 10 is above the upper bound 5");
    expect(() => a.keyBy((x) => x).intervalJoin(b.keyBy((x) => x)).between(0, 0).lowerBoundExclusive().process((x, y, c, o) => o.collect(x))).toThrow("is empty");
    expect(() => a.keyBy((x) => x).intervalJoin(b.keyBy((x) => x)).between(0, 5).process({} as never)).toThrow("Interval Join: expected a function (left, right, ctx, out) or an object with processElement");
    expect(() => a.keyBy((x) => x).intervalJoin(b as never)).toThrow("intervalJoin: expected another keyed stream");
    expect(() => a.join(b).where((x) => x).equalTo((x) => x).window(TumblingEventTimeWindows.of(10)).apply({} as never)).toThrow("Window Join: expected a function (left, right) => value or an object with join(left, right)");
    expect(() => a.coGroup(b).where((x) => x).equalTo((x) => x).window(TumblingEventTimeWindows.of(10)).apply({} as never)).toThrow("CoGroup: expected a function (lefts, rights, out)");
  });
});
