// Per-source-split watermarks: after a savepoint taken at parallelism 2 is restored at parallelism 1, one source
// subtask reads both splits. Their event times overlap (each split covers the same time range), so reading one
// split to its end first would push the watermark past the other split's events and make them late. The splits
// take turns and the watermark is the minimum over them: every window gets all its records, exactly once.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig } from "../src/config/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { committedLines, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const startCluster = clusterPerTest();
afterAll(removeTempDirs);

const HALF = 20_000; // records per split; event time = ((x - 1) % HALF) * 10 ms, the same range in both splits
const WINDOW = 1000; // 100 records of each split per window

test("restored at a lower parallelism, a source reads its splits in turns with per-split watermarks: no record is late", async () => {
  const dir = tempDir("tm-split-wm-");
  const out = path.join(dir, "out");
  const { client: rpc } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: { ...defaultConfig(), "state.checkpoints.dir": path.join(dir, "cp") } });
  const job = writeJob(dir, "job.ts", `
    import { FileSink, OutputTag, TumblingEventTimeWindows, WatermarkStrategy } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(100);
      const late = new OutputTag("late");
      const counts = env.fromSequence(1, ${2 * HALF})
        .map((x) => { if (x % 40 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => ((x - 1) % ${HALF}) * 10))
        .keyBy(() => "all")
        .window(TumblingEventTimeWindows.of(${WINDOW}))
        .sideOutputLateData(late)
        .aggregate(
          { createAccumulator: () => 0, add: (_x, acc) => acc + 1, getResult: (acc) => acc, merge: (a, b) => a + b },
          (key, ctx, c, out) => out.collect([ctx.window.start, c[0]]),
        );
      counts.sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
      counts.getSideOutput(late).map((x) => ["late", x]).sinkTo(FileSink.forRowFormat(${JSON.stringify(out + "-late")}).build());
    };`);
  const first = await submitJob(rpc, await prepareJob(job, [], 2));
  await waitFor("a completed checkpoint", async () => (await rpc.request("jobStatus", { jobId: first })).checkpoints.completed > 0, 30_000);
  const sp = await rpc.request("triggerSavepoint", { jobId: first, dir: path.join(dir, "sp"), cancel: true }, 60_000);
  expect((await waitForJob(rpc, first, () => {}, 50)).state).toBe("CANCELED");

  const resumed = await submitJob(rpc, { ...(await prepareJob(job, [], 1)), fromSavepoint: sp.path });
  const final = await waitForJob(rpc, resumed, () => {}, 50);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  // The restored source subtask really had both splits, with work left in each.
  expect(final.vertices[0]!.subtasks.length).toBe(1);

  const lines = committedLines(out);
  const expected = Array.from({ length: (HALF * 10) / WINDOW }, (_, i) => `(${i * WINDOW},${(2 * WINDOW) / 10})`);
  const lateDir = out + "-late";
  expect(fs.existsSync(lateDir) ? fs.readdirSync(lateDir).filter((f) => !f.startsWith(".") && fs.statSync(path.join(lateDir, f)).size > 0) : []).toEqual([]);
  expect(lines.sort()).toEqual(expected.sort());
}, 90_000);
