// Async I/O (issue 18 item 4, Flink's AsyncDataStream) on an in-process cluster with real Workers: ordered results in
// input order, unordered ones never across a watermark, the capacity bounds requests in flight, time-outs and retries
// follow the strategy and then fail the task with the cause, and the requests in flight at a checkpoint or savepoint
// are issued again after a restore (also at another parallelism), so keyed counts downstream are exact.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { AsyncDataStream, AsyncRetryStrategies } from "../src/api/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { setLogLevel } from "../src/util/log.ts";
import { clusterForTests, restartingConfig } from "./cluster-helpers.ts";
import { committedLines, removeTempDirs, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";

setLogLevel("warn");
let dir = "";
beforeAll(() => void (dir = tempDir("tm-async-io-")));
const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config: restartingConfig() }));
afterAll(removeTempDirs);
const API = JSON.stringify(path.resolve("src/api/index.ts"));

/** Output lines per part file of a FileSink directory, in the order written. */
function files(out: string): string[][] {
  return fs.readdirSync(out).filter((f) => !f.startsWith(".")).map((f) => fs.readFileSync(path.join(out, f), "utf8").split("\n").filter((l) => l.length > 0));
}

/** The last count per key of "(key,count)" lines: the final keyed counts. */
function finalCounts(lines: string[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const l of lines) {
    const [k, c] = l.slice(1, -1).split(",").map(Number) as [number, number];
    m.set(k, Math.max(m.get(k) ?? 0, c));
  }
  return m;
}
const expectedCounts = (n: number, keys: number) => {
  const m = new Map<number, number>();
  for (let x = 1; x <= n; x++) m.set(x % keys, (m.get(x % keys) ?? 0) + 1);
  return m;
};

describe("async I/O", () => {
  test.each([1, 2])("orderedWait keeps each subtask's input order; unorderedWait emits as requests complete (p=%d)", async (p) => {
    const out = (name: string) => JSON.stringify(path.join(dir, `${name}-${p}`));
    const job = writeJob(dir, `order-${p}.ts`, `
      import { AsyncDataStream, FileSink } from ${API};
      // Later records finish first within each group of 10: x % 10 = 0 waits longest.
      const slow = (x) => new Promise((resolve) => setTimeout(() => resolve([x]), (10 - (x % 10)) * 3));
      export default (env) => {
        env.enableCheckpointing(200);
        const xs = env.fromSequence(1, 2000);
        AsyncDataStream.orderedWait(xs, slow, 10_000, 20).sinkTo(FileSink.forRowFormat(${out("ordered")}).build());
        AsyncDataStream.unorderedWait(xs, slow, 10_000, 20).sinkTo(FileSink.forRowFormat(${out("unordered")}).build());
      };`);
    const status = await runJob(t.client, job, [], p);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    const all = Array.from({ length: 2000 }, (_, i) => String(i + 1)).sort();
    const ordered = files(path.join(dir, `ordered-${p}`));
    expect(ordered.flat().sort()).toEqual(all);
    for (const lines of ordered) expect(lines.map(Number)).toEqual(lines.map(Number).sort((a, b) => a - b));
    const unordered = files(path.join(dir, `unordered-${p}`));
    expect(unordered.flat().sort()).toEqual(all);
    // Completion order differs from input order somewhere.
    expect(unordered.some((lines) => lines.some((l, i) => i > 0 && Number(l) < Number(lines[i - 1])))).toBe(true);
  }, 60_000);

  test("unordered results never cross a watermark: event-time windows downstream count every record", async () => {
    const out = path.join(dir, "unordered-wm");
    const job = writeJob(dir, "unordered-wm.ts", `
      import { AsyncDataStream, FileSink, TumblingEventTimeWindows, WatermarkStrategy } from ${API};
      // A watermark after every record (its timestamp - 1): a result that overtook one would be late and dropped.
      const punctuated = () => ({ onEvent(x, ts, out) { out.emitWatermark(ts - 1); }, onPeriodicEmit() {} });
      const slow = (x) => new Promise((resolve) => setTimeout(() => resolve([x]), (10 - (x % 10)) * 2));
      export default (env) => {
        const xs = env.fromSequence(1, 3000).assignTimestampsAndWatermarks(WatermarkStrategy.forGenerator(punctuated).withTimestampAssigner((x) => x * 10));
        AsyncDataStream.unorderedWait(xs, slow, 10_000, 50)
          .keyBy((x) => x % 3)
          .window(TumblingEventTimeWindows.of(1000))
          .aggregate({ createAccumulator: () => 0, add: (x, n) => n + 1, getResult: (n) => n }, (k, ctx, [n], out) => out.collect([k, ctx.window.start, n]))
          .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
      };`);
    const status = await runJob(t.client, job, [], 1);
    expect(status.state).toBe("FINISHED");
    const want: string[] = [];
    const counts = new Map<string, number>();
    for (let x = 1; x <= 3000; x++) {
      const key = `${x % 3},${x * 10 - ((x * 10) % 1000)}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    for (const [k, n] of counts) want.push(`(${k},${n})`);
    expect(committedLines(out).sort()).toEqual(want.sort());
  }, 60_000);

  test("at most `capacity` requests are in flight; the source is back-pressured meanwhile", async () => {
    const stats = path.join(dir, "capacity.json");
    const job = writeJob(dir, "capacity.ts", `
      import * as fs from "node:fs";
      import { AsyncDataStream } from ${API};
      let inFlight = 0, max = 0;
      const fn = {
        asyncInvoke(x) {
          inFlight++;
          max = Math.max(max, inFlight);
          return new Promise((resolve) => setTimeout(() => { inFlight--; resolve([x]); }, 5));
        },
        close() { fs.writeFileSync(${JSON.stringify(stats)}, JSON.stringify({ max })); },
      };
      export default (env) => {
        AsyncDataStream.orderedWait(env.fromSequence(1, 3000), fn, 10_000, 7).addSink(() => {});
      };`);
    const status = await runJob(t.client, job, [], 1);
    expect(status.state).toBe("FINISHED");
    const { max } = JSON.parse(fs.readFileSync(stats, "utf8"));
    expect(max).toBe(7);
  }, 60_000);

  test("requests in flight at a checkpoint are issued again after a restart: keyed counts downstream are exact", async () => {
    const out = path.join(dir, "restart-out");
    const flag = path.join(dir, "restart-thrown");
    const N = 6000, KEYS = 13;
    const job = writeJob(dir, "restart.ts", `
      import * as fs from "node:fs";
      import { AsyncDataStream, FileSink, ValueStateDescriptor } from ${API};
      const slow = (x) => new Promise((resolve) => setTimeout(() => resolve([x]), 20 + (x % 7) * 5));
      export default (env) => {
        env.enableCheckpointing(100);
        const xs = AsyncDataStream.unorderedWait(env.fromSequence(1, ${N}), slow, 10_000, 100);
        xs.keyBy((x) => x % ${KEYS})
          .process({
            open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
            processElement(x, ctx, out) {
              if (x === ${N / 2} && !fs.existsSync(${JSON.stringify(flag)})) { fs.writeFileSync(${JSON.stringify(flag)}, ""); throw new Error("once"); }
              const c = this.count.value() + 1;
              this.count.update(c);
              out.collect([ctx.getCurrentKey(), c]);
            },
          })
          .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
      };`);
    const status = await runJob(t.client, job, [], 2);
    expect(status.error?.message).toBeUndefined();
    expect(status.state).toBe("FINISHED");
    expect(status.restarts).toBe(1);
    const lines = committedLines(out);
    expect(new Set(lines).size).toBe(lines.length); // each (key, count) once
    expect(finalCounts(lines)).toEqual(expectedCounts(N, KEYS));
    expect(lines.length).toBe(N);
  }, 120_000);

  test("a savepoint with requests in flight restores at another parallelism (2 -> 3) with exact counts", async () => {
    const N = 20_000, KEYS = 7;
    const source = (out: string) => `
      import { AsyncDataStream, FileSink, ValueStateDescriptor } from ${API};
      const slow = (x) => new Promise((resolve) => setTimeout(() => resolve([x]), 30));
      export default (env) => {
        env.enableCheckpointing(200);
        AsyncDataStream.orderedWait(env.fromSequence(1, ${N}).uid("numbers"), slow, 10_000, 200).uid("lookup")
          .keyBy((x) => x % ${KEYS})
          .process({
            open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
            processElement(x, ctx, out) {
              const c = this.count.value() + 1;
              this.count.update(c);
              out.collect([ctx.getCurrentKey(), c]);
            },
          }).uid("count")
          .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
      };`;
    const first = writeJob(dir, "savepoint-1.ts", source(path.join(dir, "sp-out-1")));
    const jobId = await submitJob(t.client, await prepareJob(first, [], 2));
    await waitFor("a completed checkpoint", async () => {
      const s = await t.client.request("jobStatus", { jobId });
      if (s.state === "FAILED" || s.state === "FINISHED") throw new Error(`job ended ${s.state} before the savepoint: ${s.error?.message}`);
      return s.state === "RUNNING" && s.checkpoints.completed > 0;
    }, 60_000);
    const sp = await t.client.request("triggerSavepoint", { jobId, dir: path.join(dir, "savepoint"), cancel: true }, 60_000);
    expect((await waitForJob(t.client, jobId, () => {}, 50)).state).toBe("CANCELED");
    // The savepoint holds requests that were in flight.
    const second = writeJob(dir, "savepoint-2.ts", source(path.join(dir, "sp-out-2")));
    const resumed = await waitForJob(t.client, await submitJob(t.client, { ...(await prepareJob(second, [], 3)), fromSavepoint: path.dirname(sp.path) }), () => {}, 50);
    expect(resumed.error?.message).toBeUndefined();
    expect(resumed.state).toBe("FINISHED");
    expect(finalCounts(committedLines(path.join(dir, "sp-out-2")))).toEqual(expectedCounts(N, KEYS));
  }, 120_000);

  test("retries by the strategy, a result predicate, a timeout function; then the cause fails the task", async () => {
    const attempts = path.join(dir, "attempts");
    const out = path.join(dir, "retry-out");
    const job = writeJob(dir, "retry.ts", `
      import * as fs from "node:fs";
      import { AsyncDataStream, AsyncRetryStrategies, FileSink } from ${API};
      const tries = new Map();
      export default (env, args) => {
        const xs = env.fromSequence(1, 50);
        const mode = args[0];
        const fn = {
          async asyncInvoke(x) {
            const n = (tries.get(x) ?? 0) + 1;
            tries.set(x, n);
            fs.appendFileSync(${JSON.stringify(attempts)} + "-" + mode, x + "\\n");
            if (mode === "flaky" && n < 3) throw new Error("flaky " + x);
            if (mode === "empty" && n < 2) return [];
            if (mode === "broken") throw new Error("service down for " + x);
            if (mode === "hang" || mode === "hang-timeout") return new Promise(() => {});
            return [x * 10];
          },
          ...(mode === "hang-timeout" ? { timeout: (x) => [-x] } : {}),
        };
        const retry = AsyncRetryStrategies.fixedDelay(3, 5, { ifResult: (r) => r.length === 0 });
        AsyncDataStream.orderedWaitWithRetry(xs, fn, mode.startsWith("hang") ? 300 : 10_000, 10, retry)
          .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)} + "-" + mode).build());
      };`);
    const lines = (mode: string) => committedLines(`${out}-${mode}`).map((l) => Number(l)).sort((a, b) => a - b);
    const tries = (mode: string) => fs.readFileSync(`${attempts}-${mode}`, "utf8").split("\n").filter((l) => l).length;
    const x10 = Array.from({ length: 50 }, (_, i) => (i + 1) * 10);

    let s = await runJob(t.client, job, ["flaky"], 1);
    expect(s.state).toBe("FINISHED");
    expect(lines("flaky")).toEqual(x10);
    expect(tries("flaky")).toBe(150); // 3 attempts each

    s = await runJob(t.client, job, ["empty"], 1);
    expect(s.state).toBe("FINISHED");
    expect(lines("empty")).toEqual(x10);
    expect(tries("empty")).toBe(100);

    s = await runJob(t.client, job, ["hang-timeout"], 1);
    expect(s.state).toBe("FINISHED");
    expect(lines("hang-timeout")).toEqual(Array.from({ length: 50 }, (_, i) => -50 + i));

    s = await runJob(t.client, job, ["broken"], 1);
    expect(s.state).toBe("FAILED");
    expect(s.error?.message).toMatch(/the async function failed after 3 attempts on \d+: service down for \d+/);

    s = await runJob(t.client, job, ["hang"], 1);
    expect(s.state).toBe("FAILED");
    expect(s.error?.message).toMatch(/the async function did not complete within 300 ms on \d+/);
  }, 120_000);

  test("bad functions and settings are refused when the job is built, naming the call", () => {
    const xs = new StreamExecutionEnvironment().fromSequence(1, 10);
    expect(() => AsyncDataStream.orderedWait(xs, {} as never, 1000)).toThrow("AsyncDataStream.orderedWait: expected a function (input) => Promise<outputs> or an object with asyncInvoke(input)");
    expect(() => AsyncDataStream.unorderedWait(xs, async (x) => [x], 0)).toThrow("AsyncDataStream.unorderedWait: expected a time-out in milliseconds > 0, got 0");
    expect(() => AsyncDataStream.orderedWait(xs, async (x) => [x], 1000, 0)).toThrow("expected a capacity >= 1, got 0");
    expect(() => AsyncRetryStrategies.fixedDelay(0, 10)).toThrow("AsyncRetryStrategies.fixedDelay: expected maxAttempts >= 1, got 0");
    expect(() => AsyncRetryStrategies.exponentialBackoff(3, 10, 100, 0.5)).toThrow("expected a multiplier >= 1, got 0.5");
  });
});
