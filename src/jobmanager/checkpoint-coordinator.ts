// The checkpoint coordinator of one job (as Flink's CheckpointCoordinator): triggers checkpoints at the interval
// by telling every source task to inject barrier n, collects one acknowledgement with state handles per task,
// and completes checkpoint n only when every task has acknowledged: then it writes the metadata last, notifies
// every task, and prunes old checkpoints. A decline, a time-out or a task that ends aborts the checkpoint, removes
// its files and tells every task (notifyCheckpointAborted), which releases any alignment of it; the job keeps
// running. With checkpoints after tasks finish (FLIP-147) finished tasks do not block triggering: they are recorded
// as finished, and a running task whose producers have all finished is triggered like a source; so is one whose
// last running producer acknowledged a checkpoint as finished (it was past its final checkpoint: no barrier from it).
import * as fs from "node:fs";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { operatorsOf, type JobGraph } from "../graph/job-graph.ts";
import type { CheckpointStats, TaskDeployment, TaskSnapshot } from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";
import { CheckpointStore, METADATA_FILE, METADATA_MAGIC, METADATA_VERSION, writeFileAtomic, type CheckpointMetadata, type OperatorSnapshot, type SubtaskTaskState, type VertexSnapshot } from "./checkpoint-store.ts";

const log = createLogger("checkpoints");
const HISTORY = 20;

export interface CheckpointOptions {
  /** 0 = no periodic checkpoints (savepoints still work). */
  intervalMs: number;
  timeoutMs: number;
  minPauseMs: number;
  maxConcurrent: number;
  /** execution.checkpointing.unaligned.enabled (savepoints stay aligned). */
  unaligned?: boolean;
  /** execution.checkpointing.aligned-checkpoint-timeout: checkpoints start aligned; the stats say unaligned once a task switched. */
  alignedTimeoutMs?: number;
  store: CheckpointStore;
  savepointDir: string;
  /** HA: the leadership epoch written into the metadata. */
  epoch?: number;
  /** HA: records that ids up to `id` are used, before the trigger goes out (fenced: rejects for a deposed leader). */
  reserveId?: (id: number) => Promise<void>;
  /** HA: points the job at a completed checkpoint (fenced); tasks are notified, and sinks commit, only after it. */
  publish?: (id: number, metadataFile: string) => Promise<void>;
}

/** What the coordinator needs of the job master. */
export interface CoordinatorHost {
  jobId: string;
  graph: JobGraph;
  attempt(): number;
  /**
   * The tasks of the current attempt, running and finished, or null when a checkpoint cannot be taken now (a task
   * is not running yet, or has finished while checkpoints after finished tasks are off).
   */
  checkpointTasks(): { running: TaskDeployment[]; finished: TaskDeployment[] } | null;
  trigger(executionId: string, checkpointId: number, timestamp: number, dir: string, unaligned: boolean): Promise<void>;
  notifyComplete(executionId: string, checkpointId: number): void;
  notifyAborted(executionId: string, checkpointId: number): void;
}

interface Pending {
  id: number;
  timestamp: number;
  dir: string;
  savepoint: boolean;
  unaligned: boolean;
  tasks: Map<string, TaskDeployment>;
  /** Tasks that had finished when it was triggered, or acknowledged it as finished (recorded as finished, FLIP-147). */
  finished: TaskDeployment[];
  /** Tasks told to inject its barrier. */
  triggered: Set<string>;
  acks: Map<string, TaskSnapshot>;
  timer: ReturnType<typeof setTimeout>;
  stats: CheckpointStats;
  done: { resolve: (r: { path: string; checkpointId: number }) => void; reject: (e: Error) => void } | null;
  /** HA: its pointer is being stored; if it is aborted meanwhile its files stay (the pointer may still land). */
  publishing?: boolean;
}

export class CheckpointCoordinator {
  private nextId: number;
  private readonly pending = new Map<number, Pending>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastCompletedAt = 0;
  private stopped = true;
  readonly history: CheckpointStats[] = [];
  completed = 0;
  failed = 0;

  constructor(
    private readonly host: CoordinatorHost,
    private readonly opts: CheckpointOptions,
    /** Ids continue after the checkpoint a job was restored from, so they only ever grow. */
    firstId = 1,
  ) {
    this.nextId = firstId;
  }

  get periodic(): boolean {
    return this.opts.intervalMs > 0;
  }

  /** Starts periodic checkpoints (if an interval is set). */
  start(): void {
    this.stopped = false;
    this.schedule(this.opts.intervalMs);
  }

  /** Stops triggering and aborts what is in progress (the job is restarting or ending). */
  stop(reason: string): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const p of [...this.pending.values()]) this.abort(p, reason, false);
  }

  /** Ids must stay above a restored checkpoint's. */
  advancePast(id: number): void {
    this.nextId = Math.max(this.nextId, id + 1);
  }

  private schedule(delay: number): void {
    if (this.stopped || !this.periodic || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.periodicTrigger();
    }, Math.max(0, delay));
  }

  private periodicTrigger(): void {
    if (this.stopped) return;
    const sinceLast = Date.now() - this.lastCompletedAt;
    if (this.pending.size >= this.opts.maxConcurrent || sinceLast < this.opts.minPauseMs) {
      this.schedule(Math.max(50, this.opts.minPauseMs - sinceLast));
      return;
    }
    this.triggerNow(false).catch(() => {}); // failures are logged and counted where they happen
    this.schedule(this.opts.intervalMs);
  }

  /** Triggers a checkpoint (or a savepoint into `savepointDir`); resolves with its metadata file when complete. */
  triggerNow(savepoint: boolean, savepointDir?: string): Promise<{ path: string; checkpointId: number }> {
    const all = this.host.checkpointTasks();
    if (!all) return Promise.reject(new Error("not all tasks of the job are running"));
    if (all.running.length === 0) return Promise.reject(new Error("every task of the job has finished"));
    const tasks = all.running;
    const id = this.nextId++;
    const timestamp = Date.now();
    const unaligned = !savepoint && this.opts.unaligned === true;
    let dir: string;
    try {
      dir = savepoint
        ? path.join(savepointDir || this.opts.savepointDir, `savepoint-${this.host.jobId.slice(0, 6)}-${randomBytes(4).toString("hex")}`)
        : this.opts.store.prepare(id);
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      this.failed++;
      const msg = `checkpoint ${id}: cannot create its directory: ${(err as Error).message}`;
      log.error(msg, { job: this.host.jobId });
      this.record({ id, status: "FAILED", savepoint, triggerTime: timestamp, durationMs: 0, acknowledged: 0, total: tasks.length, sizeBytes: 0, failure: msg });
      return Promise.reject(new Error(msg));
    }
    const stats: CheckpointStats = { id, status: "IN_PROGRESS", savepoint, triggerTime: timestamp, durationMs: null, acknowledged: 0, total: tasks.length, sizeBytes: 0, unaligned: unaligned && !(this.opts.alignedTimeoutMs! > 0), ...(all.finished.length > 0 ? { finishedTasks: all.finished.length } : {}) };
    this.record(stats);
    return new Promise((resolve, reject) => {
      const p: Pending = {
        id,
        timestamp,
        dir,
        savepoint,
        unaligned,
        tasks: new Map(tasks.map((t) => [t.executionId, t])),
        finished: [...all.finished],
        triggered: new Set(),
        acks: new Map(),
        timer: setTimeout(() => this.abort(p, `timed out after ${this.opts.timeoutMs} ms (${p.acks.size} of ${p.tasks.size} tasks acknowledged)`), this.opts.timeoutMs),
        stats,
        done: { resolve, reject },
      };
      this.pending.set(id, p);
      log.debug("triggering checkpoint", { job: this.host.jobId, id, savepoint, unaligned });
      const fire = () => {
        if (this.pending.has(id)) this.fire(p, tasks);
      };
      // With HA the id is recorded as used first, so that a new leader never reuses it.
      if (!this.opts.reserveId) fire();
      else this.opts.reserveId(id).then(fire, (err: Error) => this.abort(p, `the checkpoint id counter refused id ${id}: ${err.message}`));
    });
  }

  /** Tells those of `tasks` that no barrier will reach (see tasksToTrigger) to inject checkpoint p's. */
  private fire(p: Pending, tasks: TaskDeployment[]): void {
    for (const t of this.tasksToTrigger(tasks, p.finished)) {
      if (p.triggered.has(t.executionId)) continue;
      p.triggered.add(t.executionId);
      this.host.trigger(t.executionId, p.id, p.timestamp, p.dir, p.unaligned).catch((err: Error) => this.abort(p, `triggering ${t.executionId} failed: ${err.message}`));
    }
  }

  /** Sources, and (FLIP-147) running tasks whose producers have all finished: no barrier will reach them. */
  private tasksToTrigger(running: TaskDeployment[], finished: TaskDeployment[]): TaskDeployment[] {
    const g = this.host.graph;
    const done = new Set(finished.map((t) => `${t.vertexId}/${t.subtaskIndex}`));
    return running.filter((t) => {
      if (g.vertices[t.vertexId]?.isSource) return true;
      return t.inputs.every((i) => {
        const producer = g.edges[i.edgeId]!.source;
        return i.producers.every((p) => done.has(`${producer}/${p.subtask}`));
      });
    });
  }

  onAcknowledge(executionId: string, checkpointId: number, snapshot: TaskSnapshot): void {
    const p = this.pending.get(checkpointId);
    if (!p || !p.tasks.has(executionId) || p.acks.has(executionId)) return; // late: aborted or from an old attempt
    p.acks.set(executionId, snapshot);
    if (snapshot.finished) {
      // FLIP-147: a task past its final checkpoint (about to send end of partition, or sent it) answers a trigger
      // so. It is recorded as finished and sends no barrier, so its consumers whose producers have now all finished
      // are triggered like sources; they take it once they have read all their input (see StreamTask).
      p.finished.push(p.tasks.get(executionId)!);
      p.stats.finishedTasks = (p.stats.finishedTasks ?? 0) + 1;
      this.fire(p, [...p.tasks.values()].filter((t) => !p.acks.has(t.executionId)));
    }
    p.stats.acknowledged = p.acks.size;
    for (const o of snapshot.operators ?? []) p.stats.sizeBytes += (o.keyed?.sizeBytes ?? 0) + (o.operator?.sizeBytes ?? 0);
    p.stats.sizeBytes += snapshot.channel?.sizeBytes ?? 0;
    if (snapshot.channel) p.stats.channelStateBytes = (p.stats.channelStateBytes ?? 0) + snapshot.channel.sizeBytes;
    if (snapshot.alignmentMs !== undefined) p.stats.alignmentMs = Math.max(p.stats.alignmentMs ?? 0, Math.round(snapshot.alignmentMs));
    if (snapshot.unaligned) p.stats.unaligned = true; // switched after the aligned-checkpoint-timeout
    if (snapshot.startDelayMs !== undefined) p.stats.startDelayMs = Math.max(p.stats.startDelayMs ?? 0, Math.round(snapshot.startDelayMs));
    const task = p.tasks.get(executionId)!;
    const vertices = (p.stats.vertices ??= []);
    let v = vertices.find((x) => x.vertexId === task.vertexId);
    if (!v) vertices.push((v = { vertexId: task.vertexId, name: task.vertexName, acknowledged: 0, startDelayMs: 0, alignmentMs: 0 }));
    v.acknowledged++;
    v.startDelayMs = Math.max(v.startDelayMs, Math.round(snapshot.startDelayMs ?? 0));
    v.alignmentMs = Math.max(v.alignmentMs, Math.round(snapshot.alignmentMs ?? 0));
    if (p.acks.size === p.tasks.size) this.complete(p);
  }

  onDecline(executionId: string, checkpointId: number, reason: string): void {
    const p = this.pending.get(checkpointId);
    if (p && p.tasks.has(executionId)) this.abort(p, `declined by ${p.tasks.get(executionId)!.vertexName} (${p.tasks.get(executionId)!.subtaskIndex + 1}): ${reason}`);
  }

  /** A task ended (finished, failed, canceled): checkpoints waiting for it can never complete. */
  onTaskEnded(executionId: string): void {
    for (const p of [...this.pending.values()]) {
      if (p.tasks.has(executionId) && !p.acks.has(executionId)) this.abort(p, `task ${executionId} ended before acknowledging`);
    }
  }

  private complete(p: Pending): void {
    clearTimeout(p.timer);
    this.pending.delete(p.id);
    const g = this.host.graph;
    const meta: CheckpointMetadata = {
      magic: METADATA_MAGIC,
      version: METADATA_VERSION,
      jobId: this.host.jobId,
      jobName: g.name,
      checkpointId: p.id,
      timestamp: p.timestamp,
      savepoint: p.savepoint,
      attempt: this.host.attempt(),
      ...(this.opts.epoch !== undefined ? { epoch: this.opts.epoch } : {}),
      maxParallelism: g.maxParallelism,
      vertices: g.vertices.map((v) => ({ id: v.id, name: v.name, parallelism: v.parallelism, operatorIds: operatorsOf(v).map((o) => o.id) })),
      operators: [],
    };
    // State per operator id, whatever chain each operator ran in.
    const byId = new Map<string, OperatorSnapshot>();
    for (const [executionId, snap] of p.acks) {
      const t = p.tasks.get(executionId)!;
      const vertex = g.vertices[t.vertexId]!;
      for (const o of snap.operators ?? []) {
        let entry = byId.get(o.operatorId);
        if (!entry) {
          const info = operatorsOf(vertex).find((x) => x.id === o.operatorId);
          entry = { id: o.operatorId, uid: info?.uid ?? null, name: info?.name ?? vertex.name, parallelism: vertex.parallelism, subtasks: Array.from({ length: vertex.parallelism }, () => null), states: [] };
          byId.set(o.operatorId, entry);
          meta.operators.push(entry);
        }
        entry.subtasks[t.subtaskIndex] = { keyed: o.keyed, operator: o.operator };
        for (const st of o.states ?? []) if (!entry.states.some((x) => x.name === st.name && x.scope === st.scope)) entry.states.push(st);
      }
      // Task-level state (channel state of an unaligned checkpoint) is kept per vertex subtask.
      if (snap.channel) subtasksOf(meta.vertices[t.vertexId]!)[t.subtaskIndex] = { channel: snap.channel };
    }
    for (const t of p.finished) subtasksOf(meta.vertices[t.vertexId]!)[t.subtaskIndex] = { finished: true };
    let file: string;
    try {
      if (p.savepoint) writeFileAtomic((file = path.join(p.dir, METADATA_FILE)), JSON.stringify(meta));
      else file = this.opts.store.complete(meta, p.dir, !this.opts.publish);
    } catch (err) {
      this.abort(p, `writing its metadata failed: ${(err as Error).message}`);
      return;
    }
    if (!this.opts.publish) return this.finishCompletion(p, file);
    // HA: the pointer is the commit point. A deposed leader's pointer write fails: nothing is notified, nothing
    // commits, and its metadata is never pointed to.
    this.pending.set(p.id, p);
    p.publishing = true;
    this.opts.publish(p.id, file).then(
      () => {
        if (!this.pending.delete(p.id)) return;
        if (!p.savepoint) this.opts.store.prune();
        this.finishCompletion(p, file);
      },
      (err: Error) => this.abort(p, `its pointer could not be stored: ${err.message}`),
    );
  }

  private finishCompletion(p: Pending, file: string): void {
    this.completed++;
    this.lastCompletedAt = Date.now();
    p.stats.status = "COMPLETED";
    p.stats.durationMs = this.lastCompletedAt - p.timestamp;
    p.stats.path = file;
    log.info(p.savepoint ? "savepoint complete" : "checkpoint complete", { job: this.host.jobId, id: p.id, ms: p.stats.durationMs, bytes: p.stats.sizeBytes });
    for (const executionId of p.tasks.keys()) this.host.notifyComplete(executionId, p.id);
    // Older checkpoints still in progress are subsumed by this one.
    for (const other of [...this.pending.values()]) if (other.id < p.id && !other.savepoint) this.abort(other, `subsumed by checkpoint ${p.id}`);
    p.done?.resolve({ path: file, checkpointId: p.id });
  }

  /** notify: tell the tasks (not when the job stops: its tasks are being canceled). */
  private abort(p: Pending, reason: string, notify = true): void {
    if (!this.pending.delete(p.id)) return;
    clearTimeout(p.timer);
    this.failed++;
    p.stats.status = "FAILED";
    p.stats.durationMs = Date.now() - p.timestamp;
    p.stats.failure = reason;
    log.warn(p.savepoint ? "savepoint aborted" : "checkpoint aborted", { job: this.host.jobId, id: p.id, reason });
    if (p.savepoint) fs.rm(p.dir, { recursive: true, force: true }, () => {});
    else if (!p.publishing) this.opts.store.discard(p.id);
    // Tasks release any alignment of it at once (they would otherwise wait for a newer barrier).
    if (notify) for (const executionId of p.tasks.keys()) this.host.notifyAborted(executionId, p.id);
    p.done?.reject(new Error(`checkpoint ${p.id} aborted: ${reason}`));
  }

  private record(s: CheckpointStats): void {
    this.history.push(s);
    if (this.history.length > HISTORY) this.history.shift();
  }

  latestCompleted(): CheckpointStats | null {
    for (let i = this.history.length - 1; i >= 0; i--) if (this.history[i]!.status === "COMPLETED") return this.history[i]!;
    return null;
  }
}

/** A vertex's task-level subtask entries, created (all null) on first use. */
function subtasksOf(v: VertexSnapshot): (SubtaskTaskState | null)[] {
  return (v.subtasks ??= Array.from({ length: v.parallelism }, () => null));
}
