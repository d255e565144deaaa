// A JobManager and TaskManagers in this process (real TCP on 127.0.0.1, real Workers) running real jobs.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { setLogLevel } from "../src/util/log.ts";
import { countWords, expectSameCounts, generateText, readCounts, removeTempDirs, ROOT, runJob, tempDir, waitFor, writeJob } from "./helpers.ts";
import { clusterForTests } from "./cluster-helpers.ts";

const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "jobmanager.slot-request.timeout": 500, "log.level": "warn" };
setLogLevel("warn");
let dir = "";
beforeAll(() => void (dir = tempDir())); // when the tests run: another file's afterAll removes temp dirs
const t = clusterForTests(() => ({ taskManagers: 2, slotsPerTaskManager: 2, config }));
afterAll(removeTempDirs);

const run = (jobFile: string, args: string[], parallelism: number) => runJob(t.client, jobFile, args, parallelism);

describe("local cluster", () => {
  test("word count at parallelism 4 across two TaskManagers matches counts computed directly", async () => {
    const input = path.join(dir, "words.txt");
    generateText(input, 40_000);
    const out = path.join(dir, "wc-out");
    const status = await run(path.join(ROOT, "examples/wordcount.ts"), ["--input", input, "--output", out], 4);
    expect(status.state).toBe("FINISHED");
    expect(fs.readdirSync(out).sort()).toEqual(["1", "2", "3", "4"]);
    const [actual] = readCounts(out);
    expectSameCounts(actual!, countWords(fs.readFileSync(input, "utf8")));
    expect(status.recordsIn).toBe(40_000);
  });

  test("streaming keyed sum emits one update per record, the last one per key being its total", async () => {
    const job = writeJob(dir, "rolling.ts", `
      export default (env) => {
        env.setParallelism(3);
        env.fromSequence(0, 29_999)
          .map((i) => ["k" + (i % 97), i])
          .keyBy((t) => t[0])
          .sum(1)
          .writeAsText(${JSON.stringify(path.join(dir, "rolling"))});
      };`);
    const status = await run(job, [], 3);
    expect(status.state).toBe("FINISHED");
    const lines = fs.readdirSync(path.join(dir, "rolling")).flatMap((f) => fs.readFileSync(path.join(dir, "rolling", f), "utf8").trim().split("\n"));
    expect(lines.length).toBe(30_000);
    const max = new Map<string, number>();
    for (const l of lines) {
      const [, k, v] = /^\((k\d+),(\d+)\)$/.exec(l)!;
      max.set(k!, Math.max(max.get(k!) ?? 0, Number(v)));
    }
    const expected = new Map<string, number>();
    for (let i = 0; i < 30_000; i++) expected.set("k" + (i % 97), (expected.get("k" + (i % 97)) ?? 0) + i);
    expect(max).toEqual(expected);
  });


  test("a keyed sum emits copies a sink may keep; with object reuse (job or pipeline.object-reuse) the accumulator itself", async () => {
    // The sink keeps every record it gets and, at the end, reports how many distinct objects they were, what they
    // hold then and how many are objects the map made: copies keep the running sums as emitted; with object reuse the
    // accumulator is the key's first record itself (as Flink's reduce keeps its first value) and shows its final sum.
    const out = path.join(dir, "reuse");
    fs.mkdirSync(out);
    const job = writeJob(dir, "reuse.ts", `
      import * as fs from "node:fs";
      export default (env, args) => {
        if (args[0] === "on") env.getConfig().enableObjectReuse();
        if (args[0] === "off") env.getConfig().disableObjectReuse();
        if (args[2] === "sqlite") env.setStateBackend("sqlite");
        const kept = [], made = new Set();
        env.fromSequence(0, 999).map((i) => { const t = [i % 10, 1]; made.add(t); return t; }).keyBy((t) => t[0]).sum(1).addSink({
          invoke(r) { kept.push(r); },
          close() {
            const fromMap = kept.filter((r) => made.has(r)).length;
            const report = { n: kept.length, distinct: new Set(kept).size, sums: kept.map((r) => r[1]), fromMap };
            fs.writeFileSync(${JSON.stringify(out)} + "/" + args[1] + ".json", JSON.stringify(report));
          },
        });
      };`);
    const runWith = async (jobSetting: string, clusterDefault: boolean, name: string, backend = "heap") => {
      const jobId = await submitJob(t.client, await prepareJob(job, [jobSetting, name, backend], 1, { objectReuse: clusterDefault }));
      expect((await waitForJob(t.client, jobId, () => {}, 100)).state).toBe("FINISHED");
      return JSON.parse(fs.readFileSync(path.join(out, `${name}.json`), "utf8")) as Report;
    };
    type Report = { n: number; distinct: number; sums: number[]; fromMap: number };
    const running = Array.from({ length: 1000 }, (_, i) => Math.floor(i / 10) + 1); // key i % 10's sum after record i
    const copies = (r: Report) => {
      expect(r.n).toBe(1000);
      expect(r.distinct).toBe(1000);
      expect(r.sums).toEqual(running);
      expect(r.fromMap).toBe(0);
    };
    const reused = (r: Report) => {
      expect(r.n).toBe(1000);
      expect(r.distinct).toBe(10); // one accumulator per key, handed on every time
      expect(r.sums).toEqual(Array(1000).fill(100));
      expect(r.fromMap).toBe(1000); // each key's accumulator is its first record, as the map made it
    };
    copies(await runWith("default", false, "default"));
    reused(await runWith("on", false, "job-on"));
    reused(await runWith("default", true, "cluster-on"));
    copies(await runWith("off", true, "job-off")); // the job's own setting wins over the cluster's
    // SQLite: the state is written back (update) after each change; the cached accumulator is what goes on.
    copies(await runWith("default", false, "sqlite-default", "sqlite"));
    reused(await runWith("on", false, "sqlite-on", "sqlite"));
  }, 60_000);
  test("union, rebalance and broadcast deliver every record the expected number of times", async () => {
    const out = path.join(dir, "fanout");
    const job = writeJob(dir, "fanout.ts", `
      export default (env) => {
        const a = env.fromCollection([1, 2, 3, 4, 5]);
        const b = env.fromSequence(100, 199).setParallelism(2);
        a.union(b).rebalance().map((x) => x * 2).setParallelism(3)
          .broadcast().map((x) => x + 1).setParallelism(2)
          .writeAsText(${JSON.stringify(out)}).setParallelism(2);
      };`);
    const status = await run(job, [], 2);
    expect(status.state).toBe("FINISHED");
    const got = fs.readdirSync(out).flatMap((f) => fs.readFileSync(path.join(out, f), "utf8").trim().split("\n").map(Number)).sort((x, y) => x - y);
    const inputs = [1, 2, 3, 4, 5, ...Array.from({ length: 100 }, (_, i) => 100 + i)];
    const expected = inputs.flatMap((x) => [x * 2 + 1, x * 2 + 1]).sort((x, y) => x - y); // broadcast to 2 subtasks
    expect(got).toEqual(expected);
  });

  test("rescale connects producers to a subset of consumers; a custom partitioner routes by its own rule", async () => {
    const out = path.join(dir, "routing");
    fs.mkdirSync(out, { recursive: true });
    const job = writeJob(dir, "routing.ts", `
      import * as fs from "node:fs";
      const record = (name) => ({
        open(ctx) { this.ctx = ctx; this.got = []; },
        invoke(v) { this.got.push(v); },
        close() { fs.writeFileSync(${JSON.stringify(out)} + "/" + name + "-" + this.ctx.subtaskIndex + ".json", JSON.stringify(this.got)); },
      });
      export default (env) => {
        // Two producers (0..49 and 50..99) rescaled to four consumers: producer i feeds consumers 2i and 2i+1.
        env.fromSequence(0, 99).setParallelism(2).rescale().addSink(record("rescale")).setParallelism(4);
        env.fromSequence(0, 99).setParallelism(2)
          .partitionCustom((key, n) => key % n, (x) => x * 3)
          .addSink(record("custom")).setParallelism(4);
      };`);
    const status = await run(job, [], 2);
    expect(status.state).toBe("FINISHED");
    const read = (name: string, i: number) => JSON.parse(fs.readFileSync(path.join(out, `${name}-${i}.json`), "utf8")) as number[];
    for (let c = 0; c < 4; c++) {
      const got = read("rescale", c);
      expect(got.length).toBe(25); // round robin over two consumers
      const producer = Math.floor(c / 2);
      for (const v of got) expect(Math.floor(v / 50)).toBe(producer);
      expect(read("custom", c).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i).filter((x) => (x * 3) % 4 === c));
    }
  });

  for (const backend of ["heap", "sqlite"] as const) {
    test(`keyed state in a KeyedProcessFunction and a rich map on the ${backend} backend`, async () => {
      const out = path.join(dir, `state-${backend}`);
      const api = JSON.stringify(path.join(ROOT, "src/api/index.ts"));
      const job = writeJob(dir, `state-${backend}.ts`, `
        import { ValueStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor } from ${api};
        export default (env) => {
          env.setStateBackend(${JSON.stringify(backend)}).setParallelism(2);
          // One producer, so each key's events arrive in sequence order (the expectation below relies on it).
          env.fromSequence(0, 2999).setParallelism(1)
            .map((i) => ({ user: "u" + (i % 7), amount: i % 10, i })).setParallelism(1)
            .keyBy((e) => e.user)
            .process({
              open(ctx) {
                this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 }));
                this.last3 = ctx.getListState(new ListStateDescriptor("last3"));
                this.byAmount = ctx.getMapState(new MapStateDescriptor("byAmount"));
                this.total = ctx.getReducingState(new ReducingStateDescriptor("total", (a, b) => a + b));
              },
              processElement(e, ctx, out) {
                this.count.update(this.count.value() + 1);
                const l = [...this.last3.get(), e.i].slice(-3);
                this.last3.update(l);
                this.byAmount.put(e.amount, (this.byAmount.get(e.amount) ?? 0) + 1);
                this.total.add(e.amount);
                if (this.count.value() === Math.floor(3000 / 7)) {
                  out.collect([ctx.getCurrentKey(), this.count.value(), this.total.get(), l, [...this.byAmount.entries()].sort((a, b) => a[0] - b[0])]);
                }
              },
            })
            .keyBy((r) => r[0])
            .map({
              open(ctx) { this.seen = ctx.getState(new ValueStateDescriptor("seen", { default: 0 })); },
              map(r) { this.seen.update(this.seen.value() + 1); return JSON.stringify([...r, this.seen.value()]); },
            })
            .writeAsText(${JSON.stringify(out)});
        };`);
      const status = await run(job, [], 2);
      expect(status.error?.message).toBeUndefined();
      expect(status.state).toBe("FINISHED");
      const got = fs.readdirSync(out).flatMap((f) => fs.readFileSync(path.join(out, f), "utf8").trim().split("\n")).map((l) => JSON.parse(l)).sort((a, b) => a[0].localeCompare(b[0]));
      // Computed here, independently: per user, the state after its 428th event.
      const expected = [];
      for (let u = 0; u < 7; u++) {
        const events = Array.from({ length: 3000 }, (_, i) => i).filter((i) => i % 7 === u).slice(0, Math.floor(3000 / 7));
        if (events.length < Math.floor(3000 / 7)) continue;
        const byAmount = new Map<number, number>();
        for (const i of events) byAmount.set(i % 10, (byAmount.get(i % 10) ?? 0) + 1);
        expected.push(["u" + u, events.length, events.reduce((a, i) => a + (i % 10), 0), events.slice(-3), [...byAmount.entries()].sort((a, b) => a[0] - b[0]), 1]);
      }
      expect(got).toEqual(expected.sort((a, b) => (a[0] as string).localeCompare(b[0] as string)));
    });
  }

  test("keyed state from a function on a non-keyed stream is refused with a clear message", async () => {
    const api = JSON.stringify(path.join(ROOT, "src/api/index.ts"));
    const job = writeJob(dir, "unkeyed-state.ts", `
      import { ValueStateDescriptor } from ${api};
      export default (env) => {
        env.fromSequence(1, 10).map({ open(ctx) { ctx.getState(new ValueStateDescriptor("x")); }, map: (x) => x }).name("Unkeyed").addSink(() => {});
      };`);
    const status = await run(job, [], 1);
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toContain("Unkeyed: keyed state is only available on a keyed stream");
  });

  test("an operator that throws fails its job with the message and the task, while another job runs on", async () => {
    const slow = writeJob(dir, "slow.ts", `
      export default (env) => {
        env.fromSequence(1, 40).map((x) => { const t = Date.now(); while (Date.now() - t < 10) {} return x; })
          .addSink(() => {});
      };`);
    const bad = writeJob(dir, "bad.ts", `
      export default (env) => {
        env.fromSequence(1, 1000).map((x) => { if (x === 500) throw new Error("bad record " + x); return x; }).name("Checker").addSink(() => {});
      };`);
    const slowRun = run(slow, [], 1);
    const status = await run(bad, [], 1);
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toContain("bad record 500");
    expect(status.error?.task).toContain("Checker");
    expect(status.error?.stack).toContain("bad.ts");
    expect((await slowRun).state).toBe("FINISHED");
    const overview = await t.client.request("clusterOverview", {});
    expect(overview.taskManagers).toBe(2);
    expect(overview.slotsAvailable).toBe(4);
  });

  test("canceling a job terminates a task stuck in an endless loop and frees its slots", async () => {
    const job = writeJob(dir, "loop.ts", `export default (env) => { env.fromSequence(1, 10).map((x) => { for (;;) {} }).addSink(() => {}); };`);
    const prepared = await prepareJob(job, [], 2);
    const jobId = await submitJob(t.client, prepared);
    await waitFor("job running", async () => (await t.client.request("jobStatus", { jobId })).tasks.RUNNING === 2);
    const t0 = Date.now();
    await t.client.request("cancelJob", { jobId });
    const status = await waitForJob(t.client, jobId, () => {});
    expect(status.state).toBe("CANCELED");
    expect(Date.now() - t0).toBeLessThan(2000);
    const overview = await t.client.request("clusterOverview", {});
    expect(overview.slotsAvailable).toBe(4);
  });

  test("a job that needs more slots than the cluster has fails with a clear message", async () => {
    const job = writeJob(dir, "wide.ts", `export default (env) => { env.fromSequence(1, 10).addSink(() => {}); };`);
    const status = await run(job, [], 5);
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toMatch(/could not get 5 slots within 500 ms: the cluster has 4 free of 4 slots on 2 TaskManager/);
  });

  test("a job whose builder throws is refused before submission, naming the file", async () => {
    const job = writeJob(dir, "broken.ts", `export default (env) => { throw new Error("no input given"); };`);
    await expect(prepareJob(job, [], 1)).rejects.toThrow(/broken\.ts: building the job failed: no input given/);
  });
});
