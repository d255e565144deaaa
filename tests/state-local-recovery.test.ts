// State metrics and local recovery (issue 16, items 3 and 5) with real processes: a JobManager and one TaskManager
// run a keyed count on the SQLite backend with incremental checkpoints and state.backend.local-recovery on. The
// TaskManager's /metrics shows the keyed state's size, the object cache's hits and misses and the checkpointed bytes
// of full snapshots and change sets (promtool-clean). A failure injected into the keyed operator restarts the job on
// the same TaskManager: it restores from the local copy (tm_task_state_restores_total{source="local"}); with the
// local copy corrupted it falls back to checkpoint storage with a WARN. Either way the output is exactly once.
import { afterAll, afterEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { createKeyedStateBackend, ValueStateDescriptor } from "../src/state/index.ts";
import { LocalStateStore } from "../src/state/local-recovery.ts";
import { BUN, Child, committedLines, keyedCountsDiscrepancy, removeTempDirs, ROOT, tempDir, waitFor, writeJob } from "./helpers.ts";

const KEYS = 2000;
const N = 200_000;
const clients: RpcConnection[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/**
 * The keyed count of tests/helpers.ts keyedJob, with two hooks: the keyed operator throws once when the file
 * `fail` appears (renamed away, so one subtask throws once), and the source holds at record `holdAt` until the file
 * `release` exists (so the restarted job is still running when the test reads its metrics).
 */
function job(out: string, fail: string, release: string, checkpointMs: number): string {
  return `
    import * as fs from "node:fs";
    import { FileSink, ValueStateDescriptor } from ${JSON.stringify(path.resolve(ROOT, "src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(${checkpointMs}).setStateBackend("sqlite");
      env.fromSequence(1, ${N})
        .map((x) => {
          if (x % 20 === 0) Atomics.wait(pause, 0, 0, 1);
          while (x === ${N - 1000} && !fs.existsSync(${JSON.stringify(release)})) Atomics.wait(pause, 0, 0, 20);
          return x;
        })
        .keyBy((x) => x % ${KEYS})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); this.n = 0; },
          processElement(x, ctx, out) {
            if ((++this.n & 63) === 0 && fs.existsSync(${JSON.stringify(fail)})) {
              let mine = true;
              try { fs.renameSync(${JSON.stringify(fail)}, ${JSON.stringify(fail + ".done")}); } catch { mine = false; }
              if (mine) throw new Error("injected failure");
            }
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`;
}

/** The values of a family's samples whose labels start with the given values (task_name is "X -> Y ..."). */
function sample(text: string, name: string, labels: Record<string, string | number>): number[] {
  const out: number[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{")) continue;
    const body = line.slice(name.length + 1, line.lastIndexOf("}"));
    if (Object.entries(labels).every(([k, v]) => body.includes(`${k}="${v}`))) out.push(Number(line.slice(line.lastIndexOf(" ") + 1)));
  }
  return out;
}

async function startCluster(dir: string, checkpointMs: number) {
  const common = [
    "-D", "heartbeat.interval=200ms",
    "-D", "heartbeat.timeout=5s",
    "-D", "taskmanager.registration.max-backoff=200ms",
    "-D", "restart-strategy.type=fixed-delay",
    "-D", "restart-strategy.fixed-delay.attempts=5",
    "-D", "restart-strategy.fixed-delay.delay=200ms",
    "-D", `state.checkpoints.dir=${path.join(dir, "checkpoints")}`,
    "-D", "state.backend.incremental=true",
    "-D", "state.backend.local-recovery=true",
  ];
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...common]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tmState = path.join(dir, "tm-state");
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", "metrics.port=0", "-D", `taskmanager.state.dir=${tmState}`, ...common]);
  const metricsPort = Number((await tm.waitForOutput(/metrics endpoint started.*?127\.0\.0\.1:(\d+)/))[1]);
  await tm.waitForOutput(/registered at the JobManager/);
  const rpc = await connectClient("127.0.0.1", port);
  clients.push(rpc);
  const out = path.join(dir, "out");
  const fail = path.join(dir, "fail");
  const release = path.join(dir, "release");
  const jobId = await submitJob(rpc, await prepareJob(writeJob(dir, "job.ts", job(out, fail, release, checkpointMs)), [], 2));
  const metrics = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const localDirs = () => {
    const base = path.join(tmState, jobId, "local");
    return fs.existsSync(base) ? fs.readdirSync(base).map((d) => path.join(base, d)) : [];
  };
  /** The checkpoint id of every keyed subtask's kept local copy (both subtasks of the keyed vertex). */
  const keptCopies = () =>
    localDirs().flatMap((d) => {
      try {
        return [JSON.parse(fs.readFileSync(path.join(d, "latest.json"), "utf8")).checkpointId as number];
      } catch {
        return [];
      }
    });
  /** The newest checkpoint with metadata (completed) in checkpoint storage. */
  const newestCompleted = () => {
    const jobDir = path.join(dir, "checkpoints", jobId);
    const ids = fs.existsSync(jobDir) ? fs.readdirSync(jobDir).filter((n) => /^chk-\d+$/.test(n) && fs.existsSync(path.join(jobDir, n, "_metadata"))).map((n) => Number(n.slice(4))) : [];
    return ids.length === 0 ? null : Math.max(...ids);
  };
  /** Both keyed subtasks keep a local copy of the newest completed checkpoint: its id. */
  const copiesOfNewest = () => {
    const k = keptCopies();
    const newest = newestCompleted();
    return k.length === 2 && k.every((id) => id === newest) && newest;
  };
  return { jm, tm, rpc, jobId, out, fail, release, metrics, localDirs, keptCopies, copiesOfNewest };
}

test("state metrics move, and a task restarted on the same TaskManager restores from its local copy; output exactly once", async () => {
  const dir = tempDir("tm-local-recovery-");
  // Checkpoints 2 s apart: none completes between seeing the copies of the newest one and the failure.
  const c = await startCluster(dir, 2000);
  const keyedLabels = { job_id: c.jobId, task_name: "Keyed Process" };
  // Both keyed subtasks report state; a full snapshot and later change sets are counted.
  const first = await waitFor("state metrics of both keyed subtasks with full and incremental checkpoints", async () => {
    const m = await c.metrics();
    const inc = sample(m, "tm_task_state_checkpointed_bytes_total", { ...keyedLabels, kind: "incremental", backend: "sqlite" });
    return inc.length === 2 && inc.every((v) => v > 0) && m;
  }, 60_000, 200).catch(async (err) => {
    throw new Error(`${err.message}\n${(await c.metrics()).split("\n").filter((l) => l.startsWith("tm_task_state")).join("\n")}\n${c.tm.stderr.slice(-2000)}`);
  });
  for (const v of sample(first, "tm_task_state_checkpointed_bytes_total", { ...keyedLabels, kind: "full" })) expect(v).toBeGreaterThan(0);
  const full = sample(first, "tm_task_state_checkpointed_bytes_total", { ...keyedLabels, kind: "full" });
  const incremental = sample(first, "tm_task_state_checkpointed_bytes_total", { ...keyedLabels, kind: "incremental" });
  expect(full.length).toBe(2);
  expect(sample(first, "tm_task_state_size_bytes", keyedLabels).every((v) => v > 0)).toBe(true);
  const hits0 = sample(first, "tm_task_state_cache_hits_total", keyedLabels);
  const misses0 = sample(first, "tm_task_state_cache_misses_total", keyedLabels);
  expect(misses0.every((v) => v > 0)).toBe(true); // every key's first lookup goes to SQLite
  // The counters move while the job runs.
  const later = await waitFor("cache hits moving", async () => {
    const m = await c.metrics();
    const h = sample(m, "tm_task_state_cache_hits_total", keyedLabels);
    return h.length === 2 && h.every((v, i) => v > hits0[i]!) && m;
  }, 30_000, 200);
  const ratios = sample(later, "tm_task_state_cache_hit_ratio", keyedLabels);
  expect(ratios.length).toBe(2);
  for (const r of ratios) expect(r).toBeGreaterThan(0.5); // 2000 keys stay cached: almost every lookup hits
  expect(sample(later, "tm_task_state_restores_total", { ...keyedLabels, source: "local" })).toEqual([0, 0]); // not restored
  const lint = Bun.spawn(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(later), stdout: "pipe", stderr: "pipe" });
  const [lo, le, code] = await Promise.all([new Response(lint.stdout).text(), new Response(lint.stderr).text(), lint.exited]);
  expect({ problems: (lo + le).trim(), code }).toEqual({ problems: "", code: 0 });

  // Both keyed subtasks keep a local copy of the newest completed checkpoint; then the keyed operator fails once.
  const kept = await waitFor("local copies of the newest checkpoint in both keyed subtasks", c.copiesOfNewest, 30_000, 10);
  fs.writeFileSync(c.fail, "");
  await waitFor("the injected failure", () => fs.existsSync(c.fail + ".done"), 30_000, 20);
  const restored = await waitFor("the restarted keyed subtasks restored from their local copies", async () => {
    const s = await c.rpc.request("jobStatus", { jobId: c.jobId });
    if (s.restarts < 1) return false;
    const m = await c.metrics();
    const local = sample(m, "tm_task_state_restores_total", { ...keyedLabels, source: "local" });
    return local.length === 2 && m;
  }, 60_000, 200);
  expect(Number(/chk-(\d+)\/_metadata$/.exec((await c.rpc.request("jobStatus", { jobId: c.jobId })).checkpoints.restoredFrom ?? "")?.[1])).toBe(kept);
  expect(sample(restored, "tm_task_state_restores_total", { ...keyedLabels, source: "local" })).toEqual([1, 1]);
  expect(sample(restored, "tm_task_state_restores_total", { ...keyedLabels, source: "checkpoint" })).toEqual([0, 0]);
  expect(c.tm.stderr).toMatch(/restored keyed state from the local copy/);
  expect(c.tm.stderr).not.toMatch(/local recovery: .*(failed|not using)/);

  fs.writeFileSync(c.release, "");
  const final = await waitForJob(c.rpc, c.jobId, () => {}, 200);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  expect(keyedCountsDiscrepancy(committedLines(c.out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  // The job ended: its local copies go with it.
  await waitFor("local copies removed with the job", () => c.localDirs().length === 0, 10_000, 50);
}, 180_000);

test("a corrupt local copy falls back to checkpoint storage with a WARN; output exactly once", async () => {
  const dir = tempDir("tm-local-recovery-corrupt-");
  // Checkpoints far apart: none completes between corrupting the copies and the failure.
  const c = await startCluster(dir, 4000);
  const keyedLabels = { job_id: c.jobId, task_name: "Keyed Process" };
  const kept = await waitFor("local copies of the newest checkpoint in both keyed subtasks", c.copiesOfNewest, 60_000, 10).catch((err) => {
    throw new Error(`${err.message}: ${JSON.stringify(c.localDirs().map((d) => [d, fs.readdirSync(d)]))}\n${c.tm.stderr.split("\n").filter((l) => /local|WARN/.test(l)).join("\n")}`);
  });
  // Flip one byte in the middle of every kept snapshot file (a block, not the index: only the block's CRC32 sees it).
  for (const d of c.localDirs()) {
    for (const f of fs.readdirSync(d).filter((n) => n.endsWith(".snap"))) {
      const p = path.join(d, f);
      const b = fs.readFileSync(p);
      const at = Math.floor(b.length / 2);
      b[at] = b[at]! ^ 0xff;
      fs.writeFileSync(p, b);
    }
  }
  fs.writeFileSync(c.fail, "");
  await waitFor("the injected failure", () => fs.existsSync(c.fail + ".done"), 30_000, 20);
  const restored = await waitFor("the restarted keyed subtasks restored from checkpoint storage", async () => {
    const m = await c.metrics();
    const remote = sample(m, "tm_task_state_restores_total", { ...keyedLabels, source: "checkpoint" });
    return remote.length === 2 && remote.every((v) => v === 1) && m;
  }, 60_000, 200);
  expect(sample(restored, "tm_task_state_restores_total", { ...keyedLabels, source: "local" })).toEqual([0, 0]);
  const status = await c.rpc.request("jobStatus", { jobId: c.jobId });
  expect(Number(/chk-(\d+)\/_metadata$/.exec(status.checkpoints.restoredFrom ?? "")?.[1])).toBe(kept);
  expect(c.tm.stderr).toMatch(/WARN.*local recovery: the local copy of checkpoint \d+ failed to restore; restoring from checkpoint storage: .*checksum mismatch/);

  fs.writeFileSync(c.release, "");
  const final = await waitForJob(c.rpc, c.jobId, () => {}, 200);
  expect(final.error?.message).toBeUndefined();
  expect(final.state).toBe("FINISHED");
  expect(final.restarts).toBe(1);
  expect(keyedCountsDiscrepancy(committedLines(c.out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
}, 180_000);

test("the local store keeps the latest completed checkpoint's chain, reuses copied files, and refuses a mismatched copy", async () => {
  const dir = tempDir("tm-local-store-");
  const range = { start: 0, end: 127 };
  const b = await createKeyedStateBackend({ kind: "sqlite", dir: path.join(dir, "db"), maxParallelism: 128, keyGroupRange: range, incremental: true });
  const s = b.getState(new ValueStateDescriptor<number>("v"));
  const put = (from: number, to: number, v: number) => {
    for (let i = from; i < to; i++) {
      b.setCurrentKey(i);
      s.update(v + i);
    }
  };
  const warnings: string[] = [];
  const store = new LocalStateStore(path.join(dir, "local"), (m) => warnings.push(m));
  put(0, 5000, 0);
  const h1 = await b.snapshot(path.join(dir, "chk-1", "t"), { checkpointId: 1, incremental: true });
  b.notifyCheckpointComplete(1);
  store.keep(1, { op: h1 });
  await store.complete(1);
  const base = path.join(dir, "local", path.basename(h1.files[0]!));
  const baseIno = fs.statSync(base).ino;
  put(0, 50, 1000); // 1% changed: checkpoint 2 is a change set on top of checkpoint 1
  const h2 = await b.snapshot(path.join(dir, "chk-2", "t"), { checkpointId: 2, incremental: true });
  expect(h2.files.length).toBe(2);
  expect(h2.checksums?.length).toBe(2);
  store.keep(2, { op: h2 });
  await store.complete(2);
  expect(fs.statSync(base).ino).toBe(baseIno); // the base was not copied again
  expect(fs.readdirSync(path.join(dir, "local")).sort()).toEqual(["latest.json", ...h2.files.map((f) => path.basename(f))].sort());
  expect(warnings).toEqual([]);

  // A new store (a restarted task) finds the copy of checkpoint 2 and only of checkpoint 2.
  const again = new LocalStateStore(path.join(dir, "local"), (m) => warnings.push(m));
  expect(again.localHandles(1, "op", [h1], range)).toMatchObject({ handles: null, expected: false });
  const local = again.localHandles(2, "op", [h2], range);
  expect(local.handles?.[0]?.files).toEqual(h2.files.map((f) => path.join(dir, "local", path.basename(f))));
  const r = await createKeyedStateBackend({ kind: "heap", maxParallelism: 128, keyGroupRange: range, restoreFrom: local.handles! });
  const rs = r.getState(new ValueStateDescriptor<number>("v"));
  for (const i of [0, 49, 50, 4999]) {
    r.setCurrentKey(i);
    expect(rs.value()).toBe(i < 50 ? 1000 + i : i);
  }
  // A truncated copy is refused by its size, one with another index by its checksum, a missing one as missing.
  const change = path.join(dir, "local", path.basename(h2.files[1]!));
  const bytes = fs.readFileSync(change);
  fs.writeFileSync(change, bytes.subarray(0, bytes.length - 1));
  expect(again.localHandles(2, "op", [h2], range)).toMatchObject({ handles: null, expected: true, reason: expect.stringMatching(/has \d+ bytes, the checkpoint records \d+/) });
  const other = Buffer.from(bytes);
  other[other.length - 6] = other[other.length - 6]! ^ 1; // the index checksum in the trailer (bytes -8..-4)
  fs.writeFileSync(change, other);
  expect(again.localHandles(2, "op", [h2], range)).toMatchObject({ handles: null, expected: true, reason: expect.stringMatching(/checksum/) });
  fs.rmSync(change);
  expect(again.localHandles(2, "op", [h2], range)).toMatchObject({ handles: null, expected: true, reason: expect.stringMatching(/is missing/) });
  await b.close();
  await r.close();
}, 60_000);
