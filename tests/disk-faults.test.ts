// Disk faults with real processes: the checkpoint storage of a running job stops being writable (a file where the
// job's checkpoint directory was), so checkpoints fail with a clear reason while the job keeps running; once the
// storage is back, checkpoints complete again, and the committed output is exact: nothing committed was lost.
import { afterAll, afterEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, committedLines, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

let rpc: RpcConnection | null = null;
afterEach(async () => {
  rpc?.close();
  rpc = null;
  await Child.stopAll();
});
afterAll(removeTempDirs);

test("unwritable checkpoint storage fails checkpoints, not the job; when it is back they complete; output exact", async () => {
  const dir = tempDir("tm-disk-faults-");
  const cp = path.join(dir, "cp");
  const out = path.join(dir, "out");
  const common = ["-D", `state.checkpoints.dir=${cp}`, "-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=2s"];
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...common]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", ...common]);
  await tm.waitForOutput(/registered at the JobManager/);
  rpc = await connectClient("127.0.0.1", port);
  const N = 400_000;
  const job = writeJob(dir, "job.ts", `
    import { FileSink } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(100);
      env.fromSequence(1, ${N})
        .map((x) => { if (x % 100 === 0) Atomics.wait(pause, 0, 0, 1); return [x % 7, 1]; })
        .keyBy((t) => t[0]).sum(1)
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`);
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  const status = () => rpc!.request("jobStatus", { jobId });
  await waitFor("a completed checkpoint", async () => (await status()).checkpoints.completed > 0, 30_000);
  // The sink commits when the notify of that checkpoint reaches it, a moment after completion.
  const committedBefore = await waitFor("committed sink files", () => {
    const files = fs.existsSync(out) ? fs.readdirSync(out).filter((f) => !f.startsWith(".")) : [];
    return files.length > 0 && files;
  }, 10_000);

  // The storage goes away: a file where the job's checkpoint directory was.
  const jobDir = path.join(cp, jobId);
  fs.renameSync(jobDir, jobDir + ".away");
  fs.writeFileSync(jobDir, "not a directory");
  const failedAt = (await status()).checkpoints.failed;
  const s1 = await waitFor("failing checkpoints", async () => {
    const s = await status();
    return s.checkpoints.failed >= failedAt + 2 && s;
  }, 20_000);
  expect(s1.state).toBe("RUNNING");
  expect(s1.restarts).toBe(0);
  expect(s1.checkpoints.history.filter((c) => c.status === "FAILED").at(-1)!.failure).toContain(`cannot create its directory: ENOTDIR`);
  expect(jm.stderr).toMatch(new RegExp(`checkpoint \\d+: cannot create its directory: ENOTDIR[^\\n]*${jobDir.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`));
  // Nothing already committed is lost.
  for (const f of committedBefore) expect(fs.existsSync(path.join(out, f))).toBe(true);

  // The storage is back: checkpoints complete again and the job ends with the exact output.
  fs.rmSync(jobDir);
  fs.renameSync(jobDir + ".away", jobDir);
  const completedAt = (await status()).checkpoints.completed;
  await waitFor("checkpoints completing again", async () => {
    const s = await status();
    return (s.checkpoints.completed > completedAt || s.state === "FINISHED") && s;
  }, 20_000);
  const final = await waitForJob(rpc, jobId, () => {}, 100);
  expect(final.state).toBe("FINISHED");
  expect(final.checkpoints.completed).toBeGreaterThan(completedAt);
  const lines = committedLines(out);
  expect(lines.length).toBe(N); // one running count per record, exactly once
  const last = new Map<number, number>();
  for (const l of lines) {
    const [k, c] = l.slice(1, -1).split(",").map(Number) as [number, number];
    last.set(k, Math.max(last.get(k) ?? 0, c));
  }
  for (let k = 0; k < 7; k++) expect(last.get(k)).toBe(Math.floor(N / 7) + (k >= 1 && k <= N % 7 ? 1 : 0));
}, 90_000);
