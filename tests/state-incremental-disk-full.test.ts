// A disk that fills during an incremental checkpoint (issue 16), with real processes and a real full file system:
// the checkpoint directory is a small tmpfs. A JobManager and a TaskManager run a keyed count on the SQLite backend
// with state.backend.incremental on. Once incremental checkpoints complete, a filler file takes all but a few KiB of
// the tmpfs: the next checkpoint's files hit ENOSPC part-way, the task declines it (the reason names ENOSPC) and the
// job goes on without a restart. The filler is removed; a later checkpoint completes (it carries the changes of the
// declined ones, which were never a base); the TaskManager is SIGKILLed and the job restores from that checkpoint or
// a later one, and the committed output is exactly once.
// Needs `mount -t tmpfs` (root); where that is not permitted the test is skipped, naming mount's error.
import { afterAll, afterEach, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { CheckpointStats } from "../src/rpc/messages.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { Child, committedLines, FAST_RECOVERY, keyedCountsDiscrepancy, keyedJob, removeTempDirs, startProcessCluster, tempDir, waitFor, writeJob } from "./helpers.ts";

const KEYS = 20_000;
const dir = tempDir("tm-incr-diskfull-");
const checkpoints = path.join(dir, "checkpoints");
fs.mkdirSync(checkpoints);

/** Mounts an 8 MiB tmpfs on the checkpoint directory; the error text when mounting is not permitted. */
function mountTmpfs(): string | null {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", checkpoints], { stdio: "pipe" });
    return null;
  } catch (e) {
    return ((e as { stderr?: Buffer }).stderr?.toString().trim() || (e as Error).message).split("\n")[0]!;
  }
}
const mountError = mountTmpfs();

const clients: RpcConnection[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(() => {
  if (mountError === null) {
    try {
      execFileSync("umount", [checkpoints], { stdio: "pipe" });
    } catch {
      execFileSync("umount", ["-l", checkpoints], { stdio: "pipe" }); // busy: detach now, freed once unused
    }
  }
  removeTempDirs();
});

/** Fills the file system of `file`'s directory up to `leave` bytes, in one file. */
function fill(file: string, leave: number): void {
  const fd = fs.openSync(file, "w");
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOSPC") throw e;
  }
  // A few KiB back, so that the next checkpoint's files start and fail part-way rather than at their first byte.
  fs.ftruncateSync(fd, Math.max(0, fs.fstatSync(fd).size - leave));
  fs.closeSync(fd);
}

const run = mountError === null ? test : test.skip;
run(`a disk that fills during an incremental checkpoint: declined naming ENOSPC, the job goes on, output exactly once${mountError ? ` (skipped: mount -t tmpfs failed: ${mountError})` : ""}`, async () => {
  // Checkpoints go to the tmpfs; the TaskManager's working state (the SQLite databases) stays outside it.
  const { rpc, jm, tms, startTm } = await startProcessCluster(dir, 1, [
    ...FAST_RECOVERY,
    "-D", `state.checkpoints.dir=${checkpoints}`,
    "-D", "state.checkpoints.num-retained=1",
    "-D", "state.backend.incremental=true",
    "-D", `taskmanager.state.dir=${path.join(dir, "state")}`,
  ]);
  clients.push(rpc);
  let tm = tms[0]!;

  const out = path.join(dir, "out");
  const N = 600_000;
  const jobId = await submitJob(rpc, await prepareJob(writeJob(dir, "job.ts", keyedJob(out, N, 40, { keys: KEYS, checkpointMs: 200, backend: "sqlite" })), [], 1));
  const status = () => rpc.request("jobStatus", { jobId });
  const history = async (): Promise<CheckpointStats[]> => (await status()).checkpoints.history;
  const context = async () => `job: ${JSON.stringify((await status()).checkpoints.history.slice(-5))}\nJobManager: ${jm.stderr.slice(-1500)}`;
  const withContext = async (err: Error) => {
    throw new Error(`${err.message}; ${await context()}`);
  };

  // Incremental checkpoints complete: one whose task directory holds a change set beside a full snapshot's chain.
  const before = await waitFor("a completed incremental checkpoint", async () => {
    const s = await status();
    const c = s.checkpoints.latest;
    if (c?.status !== "COMPLETED" || !c.path) return false;
    // With num-retained=1 the next checkpoint (every 200 ms) may have subsumed and removed this one since the status
    // was read: look again at the next one.
    let text: string;
    try {
      text = fs.readFileSync(c.path, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw e;
    }
    const meta = JSON.parse(text) as { operators: { subtasks: ({ keyed?: { files: string[] } } | null)[] }[] };
    return meta.operators.some((o) => o.subtasks.some((x) => (x?.keyed?.files.length ?? 0) >= 2)) && c;
  }, 60_000, 20).catch(withContext);

  // The disk fills: the next checkpoints are declined by the task for want of space, and aborted.
  const filler = path.join(checkpoints, "filler");
  fill(filler, 8 * 1024);
  const declined = await waitFor("a checkpoint declined for want of space", async () => (await history()).find((c) => c.id > before.id && c.status === "FAILED" && /ENOSPC|no space left/i.test(c.failure ?? "")), 60_000, 20).catch(withContext);
  expect(declined.failure).toMatch(/^declined by .*Keyed/);
  expect(declined.failure).toMatch(/ENOSPC/);
  const during = await status();
  expect(during.state).toBe("RUNNING");
  expect(during.restarts).toBe(0);
  // Space is back: later checkpoints complete, and the job never restarted for the declined ones.
  fs.rmSync(filler);
  const after = await waitFor("a checkpoint completed after space came back", async () => {
    const c = (await status()).checkpoints.latest;
    return c?.status === "COMPLETED" && c.id > declined.id && c;
  }, 60_000, 20).catch(withContext);
  // An aborted checkpoint leaves nothing behind on the disk.
  expect(fs.existsSync(path.join(checkpoints, jobId, `chk-${declined.id}`))).toBe(false);
  const s = await status();
  expect(s.restarts).toBe(0);
  expect(s.state).toBe("RUNNING");

  // The TaskManager dies; a new one takes over from the checkpoint written after the declined ones (or a later one).
  tm.kill("SIGKILL");
  tm = startTm("tm-b");
  const final = await waitForJob(rpc, jobId, () => {}, 100);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBeGreaterThanOrEqual(1);
  const restoredId = Number(/chk-(\d+)\/_metadata$/.exec(final.checkpoints.restoredFrom ?? "")?.[1]);
  expect(restoredId).toBeGreaterThanOrEqual(after.id);
  expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 240_000);
