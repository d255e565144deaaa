// The abort path on a real cluster (issue 15): a checkpoint whose trigger fails on one of two sources must not leave
// the other source's channel blocked at the consumer. Before the cancel marker and the coordinator's
// checkpoint-aborted notice, the consumer kept the channel that had delivered barrier n blocked until a newer barrier
// overtook it (one interval later), and that source stalled meanwhile.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig } from "../src/config/index.ts";
import { submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const startCluster = clusterPerTest();
afterAll(removeTempDirs);
const INTERVAL_MS = 2500;
const BLOCKED = 3; // the checkpoint source A cannot write

test("a trigger that fails on one of two sources leaves no channel blocked: the other source's records keep arriving", async () => {
  const dir = tempDir("tm-cp-abort-");
  const checkpoints = path.join(dir, "checkpoints");
  const arrivals = path.join(dir, "b-arrivals");
  const { client } = await startCluster({
    taskManagers: 1,
    slotsPerTaskManager: 3,
    config: { ...defaultConfig(), "state.checkpoints.dir": checkpoints },
  });
  // Two sources into one keyed task; every 200th record of source B, the task notes the time it arrived.
  const job = writeJob(dir, "two.ts", `
    import * as fs from "node:fs";
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pace = (x) => { if (x % 50 === 0) Atomics.wait(pause, 0, 0, 1); return x; };
    export default (env) => {
      env.enableCheckpointing(${INTERVAL_MS});
      // A is slow (200 ms per 1000 records), so B's barrier reaches the keyed task first and aligns (blocks B) before
      // A comes to the trigger between two of its chunks and declines.
      const a = env.fromSequence(1, 1e12).map((x) => { if (x % 1000 === 0) Atomics.wait(pause, 0, 0, 200); return x; }).map((x) => ["a", x]).name("Source A");
      const b = env.fromSequence(1, 1e12).map(pace).map((x) => ["b", x]).name("Source B");
      a.union(b)
        .keyBy((t) => t[1] % 4)
        .process({
          processElement(t, ctx, out) {
            if (t[0] === "b" && t[1] % 200 === 0) fs.appendFileSync(${JSON.stringify(arrivals)}, Date.now() + "\\n");
          },
        })
        .addSink(() => {});
    };`);
  const jobId = await submitJob(client, await prepareJob(job, [], 1));
  const status = () => client.request("jobStatus", { jobId }) as Promise<JobStatus>;
  const first = await waitFor("the job running", async () => {
    const s = await status();
    return s.state === "RUNNING" && s.tasks.RUNNING === 3 && s;
  }, 30_000, 20);
  // Source A's directory of checkpoint BLOCKED is taken by a file: its snapshot fails there and it declines.
  const sourceA = first.vertices.find((v) => v.name.endsWith("Source A"))!;
  const chk = path.join(checkpoints, jobId, `chk-${BLOCKED}`);
  fs.mkdirSync(chk, { recursive: true });
  fs.writeFileSync(path.join(chk, `${sourceA.id}-0`), "in the way");

  const s = await waitFor(`checkpoint ${BLOCKED} failed and the next one completed`, async () => {
    const st = await status();
    const h = st.checkpoints.history;
    return h.some((c) => c.id === BLOCKED && c.status === "FAILED") && h.some((c) => c.id === BLOCKED + 1 && c.status === "COMPLETED") && st;
  }, 60_000, 50);
  await client.request("cancelJob", { jobId });
  const failed = s.checkpoints.history.find((c) => c.id === BLOCKED)!;
  expect(failed.failure).toMatch(/declined by Sequence Source/);
  const next = s.checkpoints.history.find((c) => c.id === BLOCKED + 1)!;

  // B's records between the failed checkpoint's trigger and the next trigger: no stall of a second or more.
  const times = fs.readFileSync(arrivals, "utf8").trim().split("\n").map(Number);
  const window = times.filter((t) => t >= failed.triggerTime && t <= next.triggerTime);
  let gap = 0;
  for (let i = 1; i < window.length; i++) gap = Math.max(gap, window[i]! - window[i - 1]!);
  gap = Math.max(gap, (window[0] ?? next.triggerTime) - failed.triggerTime, next.triggerTime - (window.at(-1) ?? failed.triggerTime));
  console.log(`[checkpoint-abort] ${window.length} arrival marks of source B between triggers ${BLOCKED} and ${BLOCKED + 1} (${next.triggerTime - failed.triggerTime} ms); longest gap ${gap} ms`);
  expect(next.triggerTime - failed.triggerTime).toBeGreaterThanOrEqual(INTERVAL_MS - 100);
  expect(window.length).toBeGreaterThan(10);
  expect(gap).toBeLessThan(1000);
}, 90_000);
