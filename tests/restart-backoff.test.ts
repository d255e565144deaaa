// restart-strategy.exponential-delay.reset-backoff-threshold against a cluster of real processes (a `bun main.ts`
// JobManager and TaskManager on 127.0.0.1, the job through the `submit` CLI): a job that fails, then runs longer
// than the threshold and fails again restarts the second time after the initial backoff again, while a job that
// fails twice in quick succession waits initial * multiplier the second time. The delays are read from the
// JobManager's "restarting the job" log lines, the restart history it writes.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as path from "node:path";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=2s", "-D", "taskmanager.registration.max-backoff=200ms"];
const INITIAL_MS = 400;
const MULTIPLIER = 4;
const THRESHOLD_MS = 3000;

afterEach(() => Child.stopAll());
afterAll(removeTempDirs);

async function cluster(dir: string): Promise<{ jm: Child; port: number }> {
  const jm = new Child([
    BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", `jobmanager.storage.dir=${dir}/jm`, ...FAST,
    "-D", "restart-strategy.type=exponential-delay",
    "-D", `restart-strategy.exponential-delay.initial-backoff=${INITIAL_MS}ms`,
    "-D", `restart-strategy.exponential-delay.backoff-multiplier=${MULTIPLIER}`,
    "-D", "restart-strategy.exponential-delay.max-backoff=20s",
    "-D", `restart-strategy.exponential-delay.reset-backoff-threshold=${THRESHOLD_MS}ms`,
  ]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=1", "-D", "taskmanager.resource-id=tm-backoff", ...FAST]);
  await tm.waitForOutput(/registered at the JobManager/);
  return { jm, port };
}

/**
 * An endless job whose map fails on attempt 0 at once and on attempt 1 after `stableMs` of its own running
 * (marker files count the attempts that failed), and runs on attempt 2.
 */
function failingJob(dir: string, stableMs: number): string {
  const m1 = JSON.stringify(path.join(dir, "failed-1"));
  const m2 = JSON.stringify(path.join(dir, "failed-2"));
  return writeJob(dir, "fails-twice.ts", `
    import * as fs from "node:fs";
    const pause = new Int32Array(new SharedArrayBuffer(4));
    let started = 0;
    export default (env) => {
      env.setJobName("fails-twice");
      env.fromSequence(1, 1e15)
        .map((n) => {
          Atomics.wait(pause, 0, 0, 1);
          if (!fs.existsSync(${m1})) { fs.writeFileSync(${m1}, "x"); throw new Error("first failure"); }
          if (!fs.existsSync(${m2})) {
            if (started === 0) started = Date.now();
            if (Date.now() - started >= ${stableMs}) { fs.writeFileSync(${m2}, "x"); throw new Error("second failure"); }
          }
          return n;
        })
        .addSink(() => {});
    };`);
}

/** The delays of the JobManager's "restarting the job" lines, in order. */
function restartDelays(jm: Child): number[] {
  return [...jm.stderr.matchAll(/restarting the job .*delayMs=(\d+)/g)].map((m) => Number(m[1]));
}

async function runUntilTwoRestarts(stableMs: number): Promise<{ delays: number[]; jm: Child }> {
  const dir = tempDir("tm-backoff-");
  const { jm, port } = await cluster(dir);
  new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, "-p", "1", failingJob(dir, stableMs)]);
  await waitFor("the second restart", () => restartDelays(jm).length >= 2, 60_000, 50);
  return { delays: restartDelays(jm), jm };
}

describe("exponential-delay restart backoff", () => {
  test(`a job that ran longer than reset-backoff-threshold (${THRESHOLD_MS} ms) before its second failure restarts after the initial backoff again`, async () => {
    const { delays, jm } = await runUntilTwoRestarts(THRESHOLD_MS + 1500);
    // Without the reset the second delay would be INITIAL_MS * MULTIPLIER.
    expect(delays).toEqual([INITIAL_MS, INITIAL_MS]);
    expect(jm.stderr).toMatch(/the restart backoff starts over/);
  }, 90_000);

  test("a job that fails again soon after its restart waits initial * multiplier the second time (no reset)", async () => {
    const { delays, jm } = await runUntilTwoRestarts(0);
    expect(delays).toEqual([INITIAL_MS, INITIAL_MS * MULTIPLIER]);
    expect(jm.stderr).not.toMatch(/the restart backoff starts over/);
  }, 90_000);
});
