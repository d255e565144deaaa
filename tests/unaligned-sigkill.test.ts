// Unaligned checkpoints with real processes (issue 15): a JobManager and three TaskManagers run a back-pressured keyed
// count (a fast source of 300-byte records into an operator that takes 1 ms per record) with unaligned checkpoints
// every 300 ms. Twice, once a checkpoint with channel state has completed, a TaskManager running a keyed task is
// SIGKILLed while checkpoints are being taken; the job restores from an unaligned checkpoint, replays its in-flight
// records, and the committed output is exactly once.
import { afterAll, afterEach, expect, test } from "bun:test";
import * as path from "node:path";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { readMetadata } from "../src/jobmanager/checkpoint-store.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { Child, committedLines, FAST_RECOVERY, keyedCountsDiscrepancy, removeTempDirs, startProcessCluster, tempDir, waitFor, writeJob } from "./helpers.ts";

const clients: RpcConnection[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

const API = JSON.stringify(path.resolve("src/api/index.ts"));

test("SIGKILLed TaskManagers during unaligned checkpoints under backpressure: restored with channel state, output exactly once", async () => {
  const dir = tempDir("tm-unaligned-kill-");
  const { rpc, tms: started, startTm } = await startProcessCluster(dir, 3, [
    ...FAST_RECOVERY,
    "-D", "state.checkpoints.num-retained=100",
    "-D", "execution.checkpointing.unaligned.enabled=true",
    // Final checkpoints (FLIP-147) stay on, the default: at the end of the input each source finishes only once a
    // checkpoint after its end of input has completed, under the same kills and backpressure.
  ]);
  clients.push(rpc);
  const tms = new Map(started.map((tm, i) => [`tm-${i}`, tm]));

  const out = path.join(dir, "out");
  const N = 24_000, KEYS = 11;
  const job = writeJob(dir, "bp.ts", `
    import { FileSink, ValueStateDescriptor } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const pad = "x".repeat(300);
    export default (env) => {
      env.enableCheckpointing(300);
      env.fromSequence(1, ${N})
        .map((x) => [x, pad])
        .keyBy((t) => t[0] % ${KEYS})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
          processElement(t, ctx, out) {
            Atomics.wait(pause, 0, 0, 1);
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`);
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  const status = () => rpc.request("jobStatus", { jobId }) as Promise<JobStatus>;
  const withChannelState = (s: JobStatus) => s.checkpoints.history.filter((c) => c.status === "COMPLETED" && c.unaligned === true && (c.channelStateBytes ?? 0) > 0).length;

  for (let kill = 0; kill < 2; kill++) {
    // Running again, with one more completed unaligned checkpoint with channel state than before, and one in progress.
    const before = withChannelState(await status());
    const s = await waitFor(`kill ${kill + 1}: a new completed checkpoint with channel state and one in progress`, async () => {
      const st = await status();
      return st.state === "RUNNING" && withChannelState(st) > before && st.checkpoints.history.some((c) => c.status === "IN_PROGRESS") && st;
    }, 60_000, 20);
    const keyed = s.vertices.find((v) => v.name.startsWith("Keyed Process"))!;
    const victim = keyed.subtasks.find((t) => t.state === "RUNNING" && t.taskManager !== undefined)!.taskManager!;
    tms.get(victim)!.kill("SIGKILL");
    tms.delete(victim);
    tms.set(`tm-r${kill}`, startTm(`tm-r${kill}`));
    await waitFor(`kill ${kill + 1}: the job restarted`, async () => (await status()).restarts > kill, 60_000, 50);
  }

  const final = await waitForJob(rpc, jobId, () => {}, 100);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBeGreaterThanOrEqual(2);
  // The last restore read in-flight records from an unaligned checkpoint.
  const restored = readMetadata(final.checkpoints.restoredFrom!).meta;
  const channelRecords = restored.vertices.flatMap((v) => (v.subtasks ?? []).map((t) => t?.channel?.records ?? 0)).reduce((x, y) => x + y, 0);
  console.log(`[unaligned-sigkill] restored from checkpoint ${restored.checkpointId} with ${channelRecords} in-flight records; ${final.restarts} restarts`);
  expect(channelRecords).toBeGreaterThan(0);
  expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 180_000);
