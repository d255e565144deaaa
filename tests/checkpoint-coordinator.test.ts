// The checkpoint coordinator and checkpoint storage on their own: completion only with every task's
// acknowledgement, metadata written last, retention, aborts (decline, time-out, a task that ends, unwritable
// storage) that clean up, and metadata files that are truncated or of another version refused by path.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import type { JobGraph } from "../src/graph/job-graph.ts";
import { CheckpointCoordinator, type CoordinatorHost } from "../src/jobmanager/checkpoint-coordinator.ts";
import { CheckpointStore, METADATA_FILE, readMetadata, type CheckpointMetadata } from "../src/jobmanager/checkpoint-store.ts";
import { checkRestoreFits } from "../src/jobmanager/job-master.ts";
import type { TaskDeployment, TaskSnapshot } from "../src/rpc/messages.ts";
import { removeTempDirs, tempDir, waitFor } from "./helpers.ts";

afterAll(removeTempDirs);

const graph = {
  name: "g",
  vertices: [
    { id: 0, name: "Source", parallelism: 2, isSource: true, operatorIds: [0] },
    { id: 1, name: "Sink", parallelism: 1, isSource: false, operatorIds: [1] },
  ],
  edges: [{ id: 0, source: 0, target: 1, partitioner: "rebalance" }],
  maxParallelism: 128,
} as unknown as JobGraph;

const tasks = [
  { executionId: "j-0-0-0", vertexId: 0, subtaskIndex: 0, vertexName: "Source" },
  { executionId: "j-0-1-0", vertexId: 0, subtaskIndex: 1, vertexName: "Source" },
  { executionId: "j-1-0-0", vertexId: 1, subtaskIndex: 0, vertexName: "Sink", inputs: [{ edgeId: 0, producers: [{ subtask: 0 }, { subtask: 1 }] }] },
] as TaskDeployment[];

function setup(opts: { timeoutMs?: number; retained?: number; running?: boolean; base?: string; finished?: string[] } = {}) {
  const base = opts.base ?? tempDir("tm-coord-");
  const store = new CheckpointStore(base, "job1", opts.retained ?? 2);
  const triggered: { executionId: string; id: number; dir: string }[] = [];
  const notified: [string, number][] = [];
  const aborted: [string, number][] = [];
  const finished = new Set(opts.finished ?? []);
  const host: CoordinatorHost = {
    jobId: "job1",
    graph,
    attempt: () => 0,
    checkpointTasks: () => (opts.running === false ? null : { running: tasks.filter((t) => !finished.has(t.executionId)), finished: tasks.filter((t) => finished.has(t.executionId)) }),
    trigger: async (executionId, id, _ts, dir) => void triggered.push({ executionId, id, dir }),
    notifyComplete: (executionId, id) => void notified.push([executionId, id]),
    notifyAborted: (executionId, id) => void aborted.push([executionId, id]),
  };
  const c = new CheckpointCoordinator(host, { intervalMs: 0, timeoutMs: opts.timeoutMs ?? 60_000, minPauseMs: 0, maxConcurrent: 1, store, savepointDir: path.join(base, "sp") });
  return { c, store, base, triggered, notified, aborted };
}

// Vertex 0's operator is "node-0", vertex 1's "node-1" (graphs built by hand get ids from their plan node ids).
const snap = (n: number): TaskSnapshot => ({
  operators: [{ operatorId: n < 2 ? "node-0" : "node-1", keyed: null, operator: { type: "operator", formatVersion: 1, files: [`f${n}`], subtaskIndex: n, parallelism: 2, sizeBytes: 10 }, states: [{ name: "s", scope: "operator", kind: "list", mode: "union" }] }],
});

describe("CheckpointCoordinator", () => {
  test("triggers only the source tasks; completes only when every task acknowledged; metadata last; notifies all", async () => {
    const { c, store, triggered, notified } = setup();
    const done = c.triggerNow(false);
    expect(triggered.map((t) => t.executionId)).toEqual(["j-0-0-0", "j-0-1-0"]);
    const dir = triggered[0]!.dir;
    expect(dir).toBe(store.dirOf(1));
    c.onAcknowledge("j-0-0-0", 1, snap(0));
    c.onAcknowledge("j-1-0-0", 1, snap(2));
    expect(fs.existsSync(path.join(dir, METADATA_FILE))).toBe(false); // not before the last acknowledgement
    expect(notified).toEqual([]);
    c.onAcknowledge("j-0-1-0", 1, snap(1));
    const r = await done;
    expect(r).toEqual({ path: path.join(dir, METADATA_FILE), checkpointId: 1 });
    const { meta } = readMetadata(dir);
    // State is stored per operator id, each with its subtasks in order.
    expect(meta.operators.map((o) => o.id)).toEqual(["node-0", "node-1"]);
    expect(meta.operators[0]!.subtasks.map((s) => s!.operator!.subtaskIndex)).toEqual([0, 1]);
    expect(meta.operators[1]!.subtasks.length).toBe(1);
    expect(meta.operators[0]!.states).toEqual([{ name: "s", scope: "operator", kind: "list", mode: "union" }]);
    expect(meta.vertices.map((v) => v.operatorIds)).toEqual([["node-0"], ["node-1"]]);
    expect(notified.map(([e]) => e).sort()).toEqual(tasks.map((t) => t.executionId).sort());
    expect(c.completed).toBe(1);
    expect(c.latestCompleted()!.sizeBytes).toBe(30);
  });

  test("a decline aborts the checkpoint and removes its directory; the next one still completes", async () => {
    const { c, store } = setup();
    const first = c.triggerNow(false);
    c.onAcknowledge("j-0-0-0", 1, snap(0));
    c.onDecline("j-1-0-0", 1, "disk full");
    await expect(first).rejects.toThrow(/checkpoint 1 aborted: declined by Sink \(1\): disk full/);
    await waitFor("the aborted checkpoint's directory removed", () => !fs.existsSync(store.dirOf(1)), 10_000);
    expect(c.failed).toBe(1);
    const second = c.triggerNow(false);
    for (const t of tasks) c.onAcknowledge(t.executionId, 2, snap(0));
    expect((await second).checkpointId).toBe(2);
    expect(store.latest()!.meta.checkpointId).toBe(2);
  });

  test("an aborted checkpoint is announced to every task (they release its alignment at once)", async () => {
    const { c, aborted } = setup();
    const p = c.triggerNow(false);
    c.onAcknowledge("j-0-0-0", 1, snap(0));
    c.onDecline("j-0-1-0", 1, "trigger failed");
    await expect(p).rejects.toThrow(/aborted/);
    expect(aborted.map(([e, id]) => `${e}:${id}`).sort()).toEqual(tasks.map((t) => `${t.executionId}:1`).sort());
  });

  test("finished tasks (FLIP-147) do not block a checkpoint: recorded as finished; a task whose producers all finished is triggered", async () => {
    const one = setup({ finished: ["j-0-0-0"] });
    const p1 = one.c.triggerNow(false);
    expect(one.triggered.map((t) => t.executionId)).toEqual(["j-0-1-0"]);
    one.c.onAcknowledge("j-0-1-0", 1, snap(1));
    one.c.onAcknowledge("j-1-0-0", 1, snap(2));
    const { meta } = readMetadata((await p1).path);
    // Finished is task-level state (per vertex subtask); the running subtask's operator state is under its operator id.
    expect(meta.vertices[0]!.subtasks).toEqual([{ finished: true }, null]);
    expect(meta.operators.find((o) => o.id === "node-0")!.subtasks.map((s) => s?.operator?.subtaskIndex ?? null)).toEqual([null, 1]);
    const both = setup({ finished: ["j-0-0-0", "j-0-1-0"] });
    const p2 = both.c.triggerNow(false);
    expect(both.triggered.map((t) => t.executionId)).toEqual(["j-1-0-0"]);
    both.c.onAcknowledge("j-1-0-0", 1, snap(2));
    expect((await p2).checkpointId).toBe(1);
    const all = setup({ finished: tasks.map((t) => t.executionId) });
    await expect(all.c.triggerNow(false)).rejects.toThrow(/every task of the job has finished/);
  });

  test("a task past its final checkpoint acknowledges as finished: recorded finished, and its consumer, whose producers have now all finished, is triggered", async () => {
    // Source 0 had finished; source 1 ran when checkpoint 1 was triggered, so the sink was left to its barriers. But
    // source 1 was past its final checkpoint (its end of partition sent, which the sink may have read already): it
    // sends no barrier and says finished instead. Before, the sink was never asked and the checkpoint hung.
    const { c, triggered } = setup({ finished: ["j-0-0-0"] });
    const p = c.triggerNow(false);
    expect(triggered.map((t) => t.executionId)).toEqual(["j-0-1-0"]);
    c.onAcknowledge("j-0-1-0", 1, { operators: [], finished: true });
    expect(triggered.map((t) => t.executionId)).toEqual(["j-0-1-0", "j-1-0-0"]);
    expect(c.history.at(-1)!).toMatchObject({ status: "IN_PROGRESS", acknowledged: 1, total: 2, finishedTasks: 2 });
    c.onAcknowledge("j-0-1-0", 1, { operators: [], finished: true }); // a repeat changes nothing
    expect(triggered.length).toBe(2);
    c.onAcknowledge("j-1-0-0", 1, snap(2));
    const { meta } = readMetadata((await p).path);
    expect(meta.vertices[0]!.subtasks).toEqual([{ finished: true }, { finished: true }]);
    expect(meta.operators.find((o) => o.id === "node-1")!.subtasks.map((s) => s?.operator?.subtaskIndex ?? null)).toEqual([2]);
    // With the other source still running, the sink still waits for that source's barrier: it is not triggered.
    const other = setup();
    const p2 = other.c.triggerNow(false);
    other.c.onAcknowledge("j-0-0-0", 1, { operators: [], finished: true });
    expect(other.triggered.map((t) => t.executionId)).toEqual(["j-0-0-0", "j-0-1-0"]);
    other.c.onAcknowledge("j-0-1-0", 1, snap(1));
    other.c.onAcknowledge("j-1-0-0", 1, snap(2));
    expect(readMetadata((await p2).path).meta.vertices[0]!.subtasks).toEqual([{ finished: true }, null]);
  });

  test("a checkpoint that times out is aborted; late acknowledgements are ignored", async () => {
    const { c } = setup({ timeoutMs: 30 });
    const p = c.triggerNow(false);
    c.onAcknowledge("j-0-0-0", 1, snap(0));
    await expect(p).rejects.toThrow(/timed out after 30 ms \(1 of 3 tasks acknowledged\)/);
    c.onAcknowledge("j-0-1-0", 1, snap(1));
    c.onAcknowledge("j-1-0-0", 1, snap(2));
    expect(c.completed).toBe(0);
    expect(c.history.at(-1)!.status).toBe("FAILED");
  });

  test("a task that ends before acknowledging aborts the checkpoint; nothing is triggered while tasks are not all running", async () => {
    const { c } = setup();
    const p = c.triggerNow(false);
    c.onTaskEnded("j-1-0-0");
    await expect(p).rejects.toThrow(/ended before acknowledging/);
    const idle = setup({ running: false });
    await expect(idle.c.triggerNow(false)).rejects.toThrow(/not all tasks of the job are running/);
    expect(idle.triggered).toEqual([]);
  });

  test("unwritable storage fails the checkpoint with the reason; no task is asked", async () => {
    const base = tempDir("tm-coord-ro-");
    fs.writeFileSync(path.join(base, "job1"), "a file where the job's directory should be");
    const { c, triggered } = setup({ base });
    await expect(c.triggerNow(false)).rejects.toThrow(/checkpoint 1: cannot create its directory: .*(EEXIST|ENOTDIR|not a directory|file already exists)/i);
    expect(triggered).toEqual([]);
    expect(c.failed).toBe(1);
  });

  test("keeps the configured number of completed checkpoints; savepoints are not pruned", async () => {
    const { c, store, base } = setup({ retained: 2 });
    for (let id = 1; id <= 4; id++) {
      const p = c.triggerNow(false);
      for (const t of tasks) c.onAcknowledge(t.executionId, id, snap(0));
      await p;
    }
    expect(fs.readdirSync(store.jobDir).sort()).toEqual(["chk-3", "chk-4"]);
    const sp = c.triggerNow(true);
    for (const t of tasks) c.onAcknowledge(t.executionId, 5, snap(0));
    const { path: spFile } = await sp;
    expect(spFile.startsWith(path.join(base, "sp"))).toBe(true);
    expect(readMetadata(spFile).meta.savepoint).toBe(true);
    expect(fs.readdirSync(store.jobDir).sort()).toEqual(["chk-3", "chk-4"]);
  });
});

describe("CheckpointStore metadata", () => {
  function completed(store: CheckpointStore, id: number) {
    const dir = store.prepare(id);
    store.complete({ magic: "tm-checkpoint", version: 2, jobId: "job1", jobName: "g", checkpointId: id, timestamp: 0, savepoint: false, attempt: 0, maxParallelism: 128, vertices: [], operators: [] }, dir);
    return path.join(dir, METADATA_FILE);
  }

  test("a truncated newest metadata file is refused by path and the previous checkpoint is used", () => {
    const store = new CheckpointStore(tempDir("tm-store-"), "job1", 5);
    completed(store, 1);
    const newest = completed(store, 2);
    const text = fs.readFileSync(newest, "utf8");
    fs.writeFileSync(newest, text.slice(0, text.length >> 1));
    expect(() => readMetadata(newest)).toThrow(`checkpoint metadata ${newest} is truncated or corrupt`);
    expect(store.latest()!.meta.checkpointId).toBe(1);
  });

  test("metadata of an unknown version is refused by path; a directory without metadata is not a checkpoint", () => {
    const store = new CheckpointStore(tempDir("tm-store-"), "job1", 5);
    completed(store, 1);
    const f = completed(store, 2);
    fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, "utf8")), version: 99 }));
    store.prepare(3); // in progress: no metadata yet
    expect(() => readMetadata(f)).toThrow(`checkpoint metadata ${f} has format version 99; this build reads format version 2`);
    // Format version 1 (state per operator chain) is refused, saying what it is.
    fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, "utf8")), version: 1 }));
    expect(() => readMetadata(f)).toThrow(`checkpoint metadata ${f} has format version 1, which stored state per operator chain (before operator ids); this build restores format version 2 only`);
    expect(store.latest()!.meta.checkpointId).toBe(1);
    expect(() => readMetadata(path.join(store.jobDir, "missing"))).toThrow(/cannot read checkpoint metadata .*missing.*ENOENT/);
  });
});

describe("restoring unaligned checkpoints with broadcast edges", () => {
  // A source broadcasting into "Rules" (parallelism 2 in the checkpoint), whose subtask 0 had records in flight.
  const graph = (rulesParallelism: number): JobGraph => ({
    name: "bc",
    vertices: [
      { id: 0, name: "Source", operatorIds: [0], parallelism: 1, isSource: true },
      { id: 1, name: "Rules", operatorIds: [1], parallelism: rulesParallelism, isSource: false },
    ],
    edges: [{ id: 0, source: 0, target: 1, partitioner: "broadcast" }],
    maxParallelism: 128,
    runtimeMode: "streaming",
    bufferTimeoutMs: 10,
    planFingerprint: "x",
    stateBackend: null,
  });
  const meta = (withChannelState: boolean) => ({
    meta: {
      magic: "tm-checkpoint",
      version: 2,
      jobId: "j",
      jobName: "bc",
      checkpointId: 3,
      timestamp: 0,
      savepoint: false,
      attempt: 0,
      maxParallelism: 128,
      vertices: [
        { id: 0, name: "Source", parallelism: 1, operatorIds: ["node-0"] },
        { id: 1, name: "Rules", parallelism: 2, operatorIds: ["node-1"], subtasks: [withChannelState ? { channel: { type: "channel", file: "f", sizeBytes: 10, records: 2, subtaskIndex: 0 } } : null, null] },
      ],
      operators: [],
    } as unknown as CheckpointMetadata,
    path: "/ckpt/chk-3",
  });

  test("at another parallelism of the broadcast consumer: refused naming the edge, the parallelism and the way out", () => {
    expect(() => checkRestoreFits(meta(true), graph(3), false)).toThrow(
      'cannot restore /ckpt/chk-3 at this parallelism: it is an unaligned checkpoint with records in flight on the broadcast edge into "Rules", which ran at parallelism 2 and would now run at 3; restore it at parallelism 2, or take a savepoint (always aligned) and rescale from that',
    );
  });

  test("at the same parallelism, or without records in flight, it restores", () => {
    expect(checkRestoreFits(meta(true), graph(2), false)).toEqual([]);
    expect(checkRestoreFits(meta(false), graph(3), false)).toEqual([]);
  });
});

describe("restoring unaligned checkpoints into other chains", () => {
  // Taken at parallelism 2: "Source -> Map" and "Keyed Sum -> Sink" joined by a keyBy, the sum with records in flight.
  const meta = (withChannelState: boolean) => ({
    meta: {
      magic: "tm-checkpoint",
      version: 2,
      jobId: "j",
      jobName: "sum",
      checkpointId: 4,
      timestamp: 0,
      savepoint: false,
      attempt: 0,
      maxParallelism: 128,
      vertices: [
        { id: 0, name: "Source -> Map", parallelism: 2, operatorIds: ["node-0", "node-1"] },
        {
          id: 1,
          name: "Keyed Sum -> Sink",
          parallelism: 2,
          operatorIds: ["node-2", "node-3"],
          subtasks: [null, withChannelState ? { channel: { type: "channel", file: "f", sizeBytes: 10, records: 2, subtaskIndex: 1 } } : null],
        },
      ],
      operators: [],
    } as unknown as CheckpointMetadata,
    path: "/ckpt/chk-4",
  });
  const graph = (p: number): JobGraph => ({
    name: "sum",
    vertices:
      p === 1
        ? [{ id: 0, name: "Source -> Map -> Keyed Sum -> Sink", operatorIds: [0, 1, 2, 3], parallelism: 1, isSource: true }]
        : [
            { id: 0, name: "Source -> Map", operatorIds: [0, 1], parallelism: p, isSource: true },
            { id: 1, name: "Keyed Sum -> Sink", operatorIds: [2, 3], parallelism: p, isSource: false },
          ],
    edges: p === 1 ? [] : [{ id: 0, source: 0, target: 1, partitioner: "hash" }],
    maxParallelism: 128,
    runtimeMode: "streaming",
    bufferTimeoutMs: 10,
    planFingerprint: "x",
    stateBackend: null,
  });

  test("into a graph that chains the keyBy (parallelism 1): refused naming the chain and the ways out, not restored without its records", () => {
    expect(() => checkRestoreFits(meta(true), graph(1), false)).toThrow(
      'cannot restore /ckpt/chk-4: it is an unaligned checkpoint with records in flight into or out of the chain "Keyed Sum -> Sink", which this job graph no longer has as one task',
    );
    expect(() => checkRestoreFits(meta(true), graph(1), false)).toThrow(/pipeline\.operator-chaining\.keyed-at-parallelism-one as it was\), or take a savepoint/);
  });

  test("the same chains at another parallelism, or no records in flight, restore", () => {
    expect(checkRestoreFits(meta(true), graph(3), false)).toEqual([]);
    expect(checkRestoreFits(meta(false), graph(1), false)).toEqual([]);
  });
});
