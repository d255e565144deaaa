// Incremental checkpoints end to end with real processes: a JobManager and three TaskManagers run a keyed count
// over 5000 keys on the SQLite backend with state.backend.incremental on. Once the latest completed checkpoint is
// a chain (a full snapshot plus change sets), a TaskManager running the job is SIGKILLed; the job restores from
// the chain and the committed output is exactly once. Retention (num-retained 2) leaves every file that the
// retained checkpoints reference. A second job is rescaled (2 -> 3) from an incremental checkpoint whose chain starts
// at a checkpoint that retention has already deleted (its _metadata gone, its keyed files kept for the chain).
import { afterAll, afterEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { referencedFiles, type CheckpointMetadata } from "../src/jobmanager/checkpoint-store.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { Child, committedLines, FAST_RECOVERY, keyedCountsDiscrepancy, keyedJob, removeTempDirs, startProcessCluster, tempDir, waitFor, writeJob } from "./helpers.ts";

const KEYS = 5000;
const clients: RpcConnection[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/** The newest chk-<n>/_metadata under the job's checkpoint directory, parsed. */
function latestMetadata(jobDir: string): { id: number; meta: CheckpointMetadata } | null {
  let names: string[];
  try {
    names = fs.readdirSync(jobDir);
  } catch {
    return null;
  }
  const ids = names.map((n) => /^chk-(\d+)$/.exec(n)).filter((m) => m !== null).map((m) => Number(m![1])).sort((a, b) => b - a);
  for (const id of ids) {
    try {
      return { id, meta: JSON.parse(fs.readFileSync(path.join(jobDir, `chk-${id}`, "_metadata"), "utf8")) };
    } catch {}
  }
  return null;
}

const chainLength = (meta: CheckpointMetadata) => Math.max(0, ...meta.operators.flatMap((o) => o.subtasks.map((s) => s?.keyed?.files.length ?? 0)));

/** The files of the chains in a checkpoint's metadata whose own checkpoint has no _metadata any more. */
const filesOfDeletedCheckpoints = (meta: CheckpointMetadata) =>
  meta.operators.flatMap((o) => o.subtasks.flatMap((s) => s?.keyed?.files ?? [])).filter((f) => !fs.existsSync(path.join(path.dirname(path.dirname(f)), "_metadata")));

test("SIGKILL of a TaskManager with incremental SQLite checkpoints: restored from a chain, output exactly once", async () => {
  const dir = tempDir("tm-incr-recovery-");
  const checkpoints = path.join(dir, "checkpoints");
  const { rpc, jm, tms: started, startTm } = await startProcessCluster(dir, 3, [...FAST_RECOVERY, "-D", "state.checkpoints.num-retained=2", "-D", "state.backend.incremental=true"]);
  clients.push(rpc);
  const tms = new Map(started.map((tm, i) => [`tm-${i}`, tm]));

  const out = path.join(dir, "out");
  const N = 300_000;
  const job = writeJob(dir, "job.ts", keyedJob(out, N, 40, { keys: KEYS, checkpointMs: 200, backend: "sqlite" }));
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  const jobDir = path.join(checkpoints, jobId);

  // Wait for a completed checkpoint whose keyed state is a chain of at least a full snapshot and a change set.
  const chained = await waitFor("a completed incremental checkpoint", () => {
    const l = latestMetadata(jobDir);
    return l !== null && chainLength(l.meta) >= 2 && l;
  }, 60_000, 20).catch(async (err) => {
    throw new Error(`${err.message}; job: ${JSON.stringify(await rpc.request("jobStatus", { jobId }))}\nJobManager: ${jm.stderr.slice(-2000)}`);
  });
  const s = await rpc.request("jobStatus", { jobId });
  expect(s.state).toBe("RUNNING");
  const victim = s.vertices.flatMap((v) => v.subtasks).find((t) => t.state === "RUNNING" && t.taskManager !== undefined)!.taskManager!;
  tms.get(victim)!.kill("SIGKILL");
  tms.set("tm-r", startTm("tm-r"));

  const final = await waitForJob(rpc, jobId, () => {}, 100);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBeGreaterThanOrEqual(1);
  // Restored from the chained checkpoint or a later one (each later one is a chain too, or a full one).
  const restoredId = Number(/chk-(\d+)\/_metadata$/.exec(final.checkpoints.restoredFrom ?? "")?.[1]);
  expect(restoredId).toBeGreaterThanOrEqual(chained.id);
  expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });

  // Retention: the checkpoints that remain (at most two with metadata) reference only files that exist, and
  // older directories hold nothing but referenced files.
  const metas = fs.readdirSync(jobDir).filter((n) => fs.existsSync(path.join(jobDir, n, "_metadata")));
  expect(metas.length).toBeGreaterThanOrEqual(1);
  expect(metas.length).toBeLessThanOrEqual(2);
  const referenced = new Set<string>();
  for (const n of metas) for (const f of referencedFiles(JSON.parse(fs.readFileSync(path.join(jobDir, n, "_metadata"), "utf8")))) referenced.add(f);
  expect([...referenced].filter((f) => !fs.existsSync(f))).toEqual([]);
  const oldest = Math.min(...metas.map((n) => Number(n.slice(4))));
  const leftovers = fs
    .readdirSync(jobDir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.resolve(d.parentPath, d.name))
    .filter((f) => Number(/chk-(\d+)/.exec(path.relative(jobDir, f))?.[1]) < oldest && !referenced.has(f));
  expect(leftovers).toEqual([]);
}, 150_000);

test("rescale 2 -> 3 from an incremental checkpoint whose chain starts in a checkpoint deleted by retention: output exactly once", async () => {
  const dir = tempDir("tm-incr-rescale-");
  const checkpoints = path.join(dir, "checkpoints");
  const { rpc, jm, tms: started, startTm } = await startProcessCluster(dir, 2, [
    ...FAST_RECOVERY,
    "-D", "restart-strategy.type=none",
    "-D", "state.checkpoints.num-retained=3",
    "-D", "state.backend.incremental=true",
  ]);
  clients.push(rpc);
  let tms = started;

  // Many keys against the records of one interval, so that change sets stay small and chains grow long.
  const keys = 50_000;
  const N = 400_000;
  const out = path.join(dir, "out");
  const job = writeJob(dir, "job.ts", keyedJob(out, N, 40, { keys, checkpointMs: 200, backend: "sqlite" }));
  const first = await submitJob(rpc, await prepareJob(job, [], 2));
  const jobDir = path.join(checkpoints, first);
  // A completed checkpoint whose chain reaches back into a checkpoint that retention deleted.
  const chained = await waitFor("a retained incremental checkpoint built on a deleted one", () => {
    const l = latestMetadata(jobDir);
    return l !== null && chainLength(l.meta) >= 2 && filesOfDeletedCheckpoints(l.meta).length > 0 && l;
  }, 90_000, 20).catch(async (err) => {
    throw new Error(`${err.message}; job: ${JSON.stringify(await rpc.request("jobStatus", { jobId: first }))}\nJobManager: ${jm.stderr.slice(-2000)}`);
  });
  // Stop the job where it is (no further checkpoint can complete without its tasks), then cancel what is left.
  for (const tm of tms) tm.kill("SIGKILL");
  const stopped = await waitForJob(rpc, first, () => {}, 100);
  expect(stopped.state).toBe("FAILED");
  const restoreFrom = path.join(jobDir, `chk-${chained.id}`, "_metadata");
  expect(fs.existsSync(restoreFrom)).toBe(true); // at most a checkpoint or two completed after it: still retained
  const deleted = filesOfDeletedCheckpoints(chained.meta);
  expect(deleted.length).toBeGreaterThan(0);
  expect(deleted.filter((f) => !fs.existsSync(f))).toEqual([]);

  // A new job at parallelism 3 from that checkpoint: every new subtask restores its key groups from the chains of
  // the old two, and the output, the first job's committed part and the second's, is exactly once.
  tms = ["c", "d"].map((id) => startTm(`tm-${id}`));
  await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/)));
  const second = await submitJob(rpc, { ...(await prepareJob(job, [], 3)), fromSavepoint: restoreFrom });
  const final = await waitForJob(rpc, second, () => {}, 100);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.checkpoints.restoredFrom).toBe(restoreFrom);
  expect(final.vertices.map((v) => v.parallelism)).toContain(3);
  expect(keyedCountsDiscrepancy(committedLines(out), N, keys)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 240_000);
