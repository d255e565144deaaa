// Runs one job: waits for slots, deploys every subtask (eagerly, as streaming jobs need), follows task
// states to the job's final state, coordinates its checkpoints, and on a failure cancels the remaining tasks and
// either restarts the job from its latest completed checkpoint (restart strategy) or fails it.
import type { JobGraph } from "../graph/job-graph.ts";
import { consumersOf, operatorsOf, producersOf, requiredSlots } from "../graph/job-graph.ts";
import {
  TERMINAL_JOB_STATES,
  TERMINAL_TASK_STATES,
  type ErrorInfo,
  type ExceptionEntry,
  type JobState,
  type JobWaiting,
  type RecordTotals,
  type JobStatus,
  type TaskDeployment,
  type TaskMetrics,
  type TaskRestore,
  type TaskState,
  type VertexStatus,
  emptyMetrics,
} from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";
import type { RegisteredTaskManager, ResourceManager, SlotAssignment } from "./resource-manager.ts";
import { CheckpointCoordinator, type CheckpointOptions } from "./checkpoint-coordinator.ts";
import { CheckpointStore, readMetadata, type CheckpointMetadata } from "./checkpoint-store.ts";
import type { StateInfo } from "../state/snapshot-format.ts";

export type RestartStrategy =
  | { type: "none" }
  | { type: "fixed-delay"; attempts: number; delayMs: number }
  /** resetMs: restart-strategy.exponential-delay.reset-backoff-threshold (the backoff starts over after that long without a failure). */
  | { type: "exponential-delay"; attempts: number; initialMs: number; maxMs: number; multiplier: number; resetMs?: number };

export interface JobMasterOptions {
  slotTimeoutMs: number;
  restart: RestartStrategy;
  /** afterTasksFinish: execution.checkpointing.checkpoints-after-tasks-finish (FLIP-147). */
  checkpointing: Omit<CheckpointOptions, "store"> & { mode: "EXACTLY_ONCE" | "AT_LEAST_ONCE"; baseDir: string; retained: number; afterTasksFinish?: boolean };
  /** A savepoint or checkpoint to start from (already read), and whether state no operator claims may be dropped. */
  initialRestore: { meta: CheckpointMetadata; path: string; allowNonRestoredState?: boolean } | null;
  /** web.exception-history-size: failures kept in the exception history (default 16). */
  exceptionHistorySize?: number;
  /** metrics.latency.interval: how often sources emit latency markers (0 = never; a job's own setting wins). */
  latencyIntervalMs?: number;
  /** With HA: the job's fenced writes (attempts, checkpoint ids and pointers). */
  ha?: JobHa;
  /** A job recovered after a JobManager failover: the attempt it had deployed and the highest checkpoint id used.
   *  With `adoptWithinMs` > 0 it first waits that long for the TaskManagers to report that attempt's tasks. */
  recovered?: { attempt: number; checkpointIdCounter: number; adoptWithinMs?: number };
}

/** What a job writes to the HA services; each write fails (FencedError) once this JobManager no longer leads. */
export interface JobHa {
  readonly epoch: number;
  /** Before an attempt is deployed: a new leader continues above it (sink files, channel ids carry attempts). */
  persistAttempt(attempt: number): Promise<void>;
  reserveCheckpointId(id: number): Promise<void>;
  publishCheckpoint(id: number, metadataFile: string): Promise<void>;
}

/** Failures of other tasks kept with the first failure of a failover. */
const MAX_CONCURRENT_EXCEPTIONS = 16;

const log = createLogger("jobmaster");
const CANCEL_TIMEOUT_MS = 10_000;

interface Execution {
  deployment: TaskDeployment;
  tm: RegisteredTaskManager;
  state: TaskState;
  metrics: TaskMetrics;
  startTime: number;
  endTime: number | null;
}

function zeroTotals(): RecordTotals {
  return { recordsIn: 0, recordsOut: 0, bytesIn: 0, bytesOut: 0 };
}

export class JobMaster {
  state: JobState = "CREATED";
  readonly startTime = Date.now();
  endTime: number | null = null;
  error: ErrorInfo | undefined;
  readonly executions = new Map<string, Execution>();
  private doneWaiters: (() => void)[] = [];
  private cancelTimer: ReturnType<typeof setTimeout> | null = null;
  /** Restarts so far: the current attempt's number. */
  attempt = 0;
  private firstAttempt: number;
  private restartPending = false;
  private restoredFrom: { meta: CheckpointMetadata; path: string } | null;
  private lastSavepoint: { meta: CheckpointMetadata; path: string } | null = null;
  readonly coordinator: CheckpointCoordinator;
  private readonly store: CheckpointStore;
  /** Failures, newest last, at most web.exception-history-size; `exceptionsTruncated` once older ones were dropped. */
  readonly exceptionHistory: ExceptionEntry[] = [];
  exceptionsTruncated = false;
  /** Per vertex: the counts of the ended attempts (a restart adds the attempt's to them). */
  private readonly priorTotals: RecordTotals[];
  /** What the job waits for while it is not running (restart delay, slots). */
  private wait: { reason: "restart-delay"; until: number } | { reason: "slots"; needed: number; deadline: number } | { reason: "adoption"; until: number; needed: number } | null = null;

  constructor(
    readonly jobId: string,
    readonly graph: JobGraph,
    private readonly artifactHash: string,
    private readonly jobArgs: string[],
    private readonly rm: ResourceManager,
    private readonly opts: JobMasterOptions,
    private readonly onTerminal: (job: JobMaster) => void,
  ) {
    const c = opts.checkpointing;
    this.store = new CheckpointStore(c.baseDir, jobId, c.retained, opts.ha?.epoch);
    this.restoredFrom = opts.initialRestore;
    if (this.restoredFrom) {
      const dropped = checkRestoreFits(this.restoredFrom, graph, opts.initialRestore?.allowNonRestoredState === true);
      if (dropped.length > 0) log.warn("starting without state the savepoint holds (allowNonRestoredState)", { job: jobId, path: this.restoredFrom.path, dropped: dropped.join("; ") });
      // Attempts go on from the job that wrote the savepoint, so its uncommitted sink files count as older.
      this.attempt = (this.restoredFrom.meta.attempt ?? 0) + 1;
    }
    // After a failover: above every attempt the previous leader deployed (unless that attempt is adopted); the
    // restore counts as a restart.
    if (opts.recovered) this.attempt = Math.max(this.attempt, opts.recovered.attempt + 1);
    this.firstAttempt = opts.recovered ? this.attempt - 1 : this.attempt;
    if (opts.recovered?.adoptWithinMs) this.adoption = { attempt: opts.recovered.attempt, candidates: new Map(), done: null };
    this.priorTotals = graph.vertices.map(() => zeroTotals());
    this.coordinator = new CheckpointCoordinator(
      {
        jobId,
        graph,
        attempt: () => this.attempt,
        checkpointTasks: () => this.checkpointTasks(),
        trigger: async (executionId, checkpointId, timestamp, dir, unaligned) => {
          const ex = this.executions.get(executionId);
          if (!ex) throw new Error(`no task ${executionId}`);
          await ex.tm.rpc.request("triggerCheckpoint", { executionId, checkpointId, timestamp, dir, epoch: this.rm.epoch, ...(unaligned ? { unaligned } : {}) });
        },
        notifyComplete: (executionId, checkpointId) => {
          this.executions.get(executionId)?.tm.rpc.request("notifyCheckpointComplete", { executionId, checkpointId, epoch: this.rm.epoch }).catch(() => {});
        },
        notifyAborted: (executionId, checkpointId) => {
          const ex = this.executions.get(executionId);
          if (ex && ex.state === "RUNNING") ex.tm.rpc.request("notifyCheckpointAborted", { executionId, checkpointId }).catch(() => {});
        },
      },
      {
        ...c,
        store: this.store,
        ...(opts.ha
          ? { epoch: opts.ha.epoch, reserveId: (id: number) => opts.ha!.reserveCheckpointId(id), publish: (id: number, file: string) => opts.ha!.publishCheckpoint(id, file) }
          : {}),
      },
      Math.max(this.restoredFrom?.meta.checkpointId ?? 0, opts.recovered?.checkpointIdCounter ?? 0) + 1,
    );
  }

  /** A job whose HA record could not be recovered: listed as FAILED with the reason (which names the path). */
  static unrecoverable(jobId: string, message: string, rm: ResourceManager, opts: JobMasterOptions, onTerminal: (job: JobMaster) => void): JobMaster {
    const job = new JobMaster(jobId, ({ name: "(unrecoverable job)", vertices: [], edges: [], maxParallelism: 1 } as unknown as JobGraph), "", [], rm, opts, onTerminal);
    job.error = { name: "RecoveryFailure", message };
    job.recordException(job.error, null);
    job.transition("FAILED");
    return job;
  }

  /**
   * A recovered job waiting to adopt the attempt the previous leader ran: the tasks of it that TaskManagers
   * reported at registration (not canceled meanwhile), until every subtask is present or the window ends.
   */
  private adoption: {
    attempt: number;
    candidates: Map<string, { tm: RegisteredTaskManager; slot: number }>;
    done: (() => void) | null;
  } | null = null;
  /** Failovers in which this JobManager adopted the running attempt (no task restarted). */
  adoptions = 0;

  /**
   * A TaskManager (registering) reports a running task of this job. Kept as a candidate while the job waits to
   * adopt that attempt; returns whether it was kept (then it is not canceled).
   */
  offerRunning(executionId: string, tm: RegisteredTaskManager, slot: unknown): boolean {
    const a = this.adoption;
    if (!a || this.state !== "SCHEDULING" || !Number.isInteger(slot)) return false;
    const parts = executionId.split("-");
    const [vertexId, subtask, attempt] = parts.slice(1).map(Number) as [number, number, number];
    const v = this.graph.vertices[vertexId];
    if (parts.length !== 4 || attempt !== a.attempt || !v || !(subtask >= 0 && subtask < v.parallelism)) return false;
    a.candidates.set(executionId, { tm, slot: slot as number });
    const needed = this.graph.vertices.reduce((n, v) => n + v.parallelism, 0);
    if (a.candidates.size === needed) a.done?.();
    return true;
  }

  /**
   * Adoption (beyond Flink): wait up to the window for the reports of every subtask of the previous attempt;
   * when they are all there, consistently placed (subtask i of every vertex in one slot), keep that attempt
   * running: no task restarts, checkpoints resume above the counter. Returns false when the job must be
   * restored instead (the candidates are canceled then).
   */
  private async adopt(withinMs: number): Promise<boolean> {
    const a = this.adoption!;
    const needed = this.graph.vertices.reduce((n, v) => n + v.parallelism, 0);
    if (a.candidates.size < needed) {
      this.wait = { reason: "adoption", until: Date.now() + withinMs, needed };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, withinMs);
        a.done = () => (clearTimeout(timer), resolve());
      });
      this.wait = null;
    }
    this.adoption = null;
    const slots: SlotAssignment[] = [];
    let reason = a.candidates.size < needed ? `${a.candidates.size} of ${needed} tasks of attempt ${a.attempt} were reported within ${withinMs} ms` : "";
    for (const [id, c] of a.candidates) {
      const subtask = Number(id.split("-")[2]);
      const live = this.rm.taskManagers.get(c.tm.info.resourceId) === c.tm;
      const at = slots[subtask];
      if (!live) reason ||= `TaskManager ${c.tm.info.resourceId} is gone`;
      else if (at && (at.tm !== c.tm || at.slot !== c.slot)) reason ||= `subtask ${subtask} runs in different slots`;
      else slots[subtask] = { tm: c.tm, slot: c.slot };
    }
    if (this.state !== "SCHEDULING") reason ||= `the job is ${this.state}`;
    if (reason) {
      log.warn("not adopting the running tasks; restoring the job from its latest checkpoint", { job: this.jobId, attempt: a.attempt, reason });
      for (const [id, c] of a.candidates) {
        if (c.tm.slots.get(c.slot) === this.jobId) c.tm.slots.set(c.slot, null);
        c.tm.rpc.request("cancelTask", { executionId: id, epoch: this.rm.epoch }).catch(() => {});
      }
      return false;
    }
    for (const { tm, slot } of slots) tm.slots.set(slot, this.jobId);
    this.attempt = a.attempt;
    this.firstAttempt = a.attempt;
    this.buildExecutions(slots, "RUNNING");
    this.adoptions++;
    log.info("adopted the running attempt: no task restarted", { job: this.jobId, attempt: a.attempt, tasks: this.executions.size });
    this.transition("RUNNING");
    this.coordinator.start();
    return true;
  }

  /** Set by suspend(): this JobManager no longer acts for the job (stopping with HA, or deposed). */
  private suspended = false;

  /**
   * The JobManager stops with HA on, or lost its leadership: the job stays as it is for the next leader. No
   * checkpoint is triggered or completed, no request goes out, task reports are ignored; the tasks keep running.
   */
  suspend(): void {
    this.suspended = true;
    this.coordinator.stop("the JobManager is suspending the job (HA)");
    if (this.cancelTimer) clearTimeout(this.cancelTimer);
    this.cancelTimer = null;
    for (const w of this.doneWaiters.splice(0)) w();
  }

  /** Resolves when the job reached FINISHED, FAILED or CANCELED. */
  done(): Promise<void> {
    if (TERMINAL_JOB_STATES.has(this.state)) return Promise.resolve();
    return new Promise((resolve) => this.doneWaiters.push(resolve));
  }

  async run(): Promise<void> {
    this.transition("SCHEDULING");
    const within = this.opts.recovered?.adoptWithinMs ?? 0;
    if (this.adoption && within > 0 && (await this.adopt(within))) return;
    if (this.state !== "SCHEDULING") return;
    const slots = await this.allocateSlots("SCHEDULING", "");
    if (!slots) return; // canceled while waiting, or failed for want of slots
    if (!(await this.persistAttempt("SCHEDULING"))) return;
    this.deploy(slots);
    this.coordinator.start();
  }

  /** Waits (while the job stays in `state`) up to the slot timeout for all the slots the job needs; fails it otherwise. */
  private async allocateSlots(state: JobState, purpose: string): Promise<SlotAssignment[] | null> {
    const needed = requiredSlots(this.graph);
    const deadline = Date.now() + this.opts.slotTimeoutMs;
    try {
      while (this.state === state) {
        const slots = this.rm.allocate(this.jobId, needed);
        if (slots) return slots;
        const left = deadline - Date.now();
        if (left <= 0) {
          this.error = {
            name: "NoResourceAvailable",
            message: `could not get ${needed} slots within ${this.opts.slotTimeoutMs} ms${purpose}: the cluster has ${this.rm.freeSlots} free of ${this.rm.totalSlots} slots on ${this.rm.taskManagers.size} TaskManager(s)`,
          };
          this.recordException(this.error, null);
          this.transition("FAILED");
          return null;
        }
        this.wait = { reason: "slots", needed, deadline };
        await this.rm.waitForSlots(left);
      }
      return null;
    } finally {
      this.wait = null;
    }
  }

  /** FLIP-147 is on: finished tasks do not block checkpoints, and a task at end of input waits for a final one. */
  private get checkpointsAfterFinish(): boolean {
    const c = this.opts.checkpointing;
    return c.intervalMs > 0 && c.afterTasksFinish !== false;
  }

  /**
   * The tasks of the current attempt for a checkpoint: every one RUNNING, or (FLIP-147) RUNNING or FINISHED;
   * null when one is deploying, failed or canceled.
   */
  private checkpointTasks(): { running: TaskDeployment[]; finished: TaskDeployment[] } | null {
    if (this.state !== "RUNNING" || this.executions.size === 0) return null;
    const running: TaskDeployment[] = [];
    const finished: TaskDeployment[] = [];
    for (const ex of this.executions.values()) {
      if (ex.state === "RUNNING") running.push(ex.deployment);
      else if (ex.state === "FINISHED" && this.checkpointsAfterFinish) finished.push(ex.deployment);
      else return null;
    }
    return { running, finished };
  }

  /** The state the tasks of vertex v start from: for each of its operators, what that operator id wrote. */
  private restoreFor(vertexId: number): TaskRestore | null {
    const r = this.restoredFrom;
    if (!r) return null;
    const vertex = this.graph.vertices[vertexId]!;
    const operators: TaskRestore["operators"] = {};
    for (const op of operatorsOf(vertex)) {
      const saved = r.meta.operators.find((o) => o.id === op.id);
      if (!saved) continue;
      operators[op.id] = {
        keyed: saved.subtasks.flatMap((s) => (s?.keyed ? [s.keyed] : [])),
        operator: saved.subtasks.flatMap((s) => (s?.operator ? [s.operator] : [])),
      };
    }
    // Task-level state (channel state, finished) belongs to a chain: taken from the vertex of the checkpoint that
    // ran the same head operator (ids may have moved in an upgrade).
    const head = operatorsOf(vertex)[0]?.id;
    const old = r.meta.vertices.find((v) => v.operatorIds[0] === head);
    const subtasks = old?.subtasks ?? [];
    const channel = subtasks.flatMap((s) => (s?.channel ? [s.channel] : []));
    const finished = subtasks.length > 0 && subtasks.every((s) => s?.finished === true);
    return { checkpointId: r.meta.checkpointId, path: r.path, operators, ...(channel.length > 0 ? { channel } : {}), ...(finished ? { finished } : {}) };
  }

  /** Savepoint: a checkpoint into its own directory, kept until the user deletes it; optionally cancels the job. */
  async savepoint(dir: string | undefined, cancel: boolean): Promise<{ path: string; checkpointId: number }> {
    if (this.state !== "RUNNING") throw new Error(`job ${this.jobId} is ${this.state}; a savepoint needs it RUNNING`);
    const r = await this.coordinator.triggerNow(true, dir);
    // Its notify may already have committed sink output: a later failover must not go back before it.
    try {
      this.lastSavepoint = readMetadata(r.path);
    } catch (err) {
      log.warn("cannot read back the savepoint just written", { job: this.jobId, path: r.path, error: (err as Error).message });
    }
    if (cancel) this.cancel();
    return r;
  }

  /** Restarts counted for the backoff: for exponential-delay those since the backoff was last reset. */
  private backoffRestarts = 0;
  /** When the current attempt was deployed: the reset threshold counts from there. */
  private runningSince = 0;

  private restartDelay(): number | null {
    const r = this.opts.restart;
    const restarts = this.attempt - this.firstAttempt;
    if (r.type === "none") return null;
    if (r.type === "fixed-delay") return restarts >= r.attempts ? null : r.delayMs;
    if (this.backoffRestarts >= r.attempts) return null;
    return Math.min(r.maxMs, r.initialMs * r.multiplier ** this.backoffRestarts);
  }

  /**
   * A failure: with exponential-delay, a job that ran at least reset-backoff-threshold since its last restart starts
   * the backoff (and the attempts it counts) over, as Flink's restart-strategy.exponential-delay.reset-backoff-threshold.
   */
  private noteFailure(): void {
    const r = this.opts.restart;
    const now = Date.now();
    if (r.type === "exponential-delay" && r.resetMs !== undefined && this.runningSince > 0 && now - this.runningSince >= r.resetMs) {
      if (this.backoffRestarts > 0) log.info("the job ran longer than the reset-backoff-threshold: the restart backoff starts over", { job: this.jobId, ranMs: now - this.runningSince });
      this.backoffRestarts = 0;
    }
  }

  /** All tasks of the failed attempt have ended: wait the strategy's delay, then deploy from the latest checkpoint. */
  private async restart(): Promise<void> {
    const delay = this.restartDelay() ?? 0;
    this.backoffRestarts++;
    log.info("restarting the job", { job: this.jobId, attempt: this.attempt + 1, delayMs: delay });
    this.wait = { reason: "restart-delay", until: Date.now() + delay };
    await new Promise((r) => setTimeout(r, delay));
    this.wait = null;
    if (this.state !== "RESTARTING") return; // canceled meanwhile
    this.rm.release(this.jobId);
    this.attempt++;
    // The ended attempt's counts stay in the job's totals: records read and written add up over restarts.
    for (const ex of this.executions.values()) addTotals(this.priorTotals[ex.deployment.vertexId]!, ex.metrics);
    this.executions.clear();
    this.error = undefined;
    // The newest of: the latest retained checkpoint, a savepoint taken since, what the job was started from.
    for (const candidate of [this.store.latest(), this.lastSavepoint]) {
      if (candidate && candidate.meta.checkpointId > (this.restoredFrom?.meta.checkpointId ?? 0)) this.restoredFrom = candidate;
    }
    if (this.restoredFrom) this.coordinator.advancePast(this.restoredFrom.meta.checkpointId);
    const slots = await this.allocateSlots("RESTARTING", " to restart the job");
    if (!slots || this.state !== "RESTARTING") return;
    if (!(await this.persistAttempt("RESTARTING"))) return;
    this.restartPending = false;
    this.deploy(slots);
    this.coordinator.start();
  }

  /** HA: the attempt is stored before it is deployed; false (slots released) when that failed or the job moved on. */
  private async persistAttempt(state: JobState): Promise<boolean> {
    if (!this.opts.ha) return true;
    try {
      await this.opts.ha.persistAttempt(this.attempt);
    } catch (err) {
      log.error("cannot store the job's attempt in the HA services; not deploying", { job: this.jobId, attempt: this.attempt, error: (err as Error).message });
      this.rm.release(this.jobId);
      // Deposed: the next leader runs the job. Otherwise (the storage dir failing) the job fails, saying why.
      if ((err as Error).name !== "FencedError" && this.state === state) {
        this.error = { name: "HighAvailabilityStoreError", message: `cannot store attempt ${this.attempt} in the HA services: ${(err as Error).message}` };
        this.recordException(this.error, null);
        this.transition("FAILED");
      }
      return false;
    }
    if (this.state === state) return true;
    this.rm.release(this.jobId);
    return false;
  }

  private deploy(slots: SlotAssignment[]): void {
    if (this.suspended) return;
    this.buildExecutions(slots, "DEPLOYING");
    this.transition("RUNNING");
    this.runningSince = Date.now();
    for (const ex of this.executions.values()) {
      ex.tm.rpc.request("submitTask", { ...ex.deployment, epoch: this.rm.epoch }).catch((err: Error) =>
        this.onTaskState(ex.deployment.executionId, "FAILED", { name: "DeploymentFailure", message: `deploying to ${ex.tm.info.resourceId} failed: ${err.message}` }),
      );
    }
  }

  /** The current attempt's executions, subtask i of every vertex in slots[i] (deployed now, or adopted). */
  private buildExecutions(slots: SlotAssignment[], state: TaskState): void {
    const g = this.graph;
    const location = (subtask: number) => {
      const { tm } = slots[subtask]!;
      return { resourceId: tm.info.resourceId, dataHost: tm.info.dataHost, dataPort: tm.info.dataPort };
    };
    for (const v of g.vertices) {
      for (let i = 0; i < v.parallelism; i++) {
        const deployment: TaskDeployment = {
          jobId: this.jobId,
          jobName: g.name,
          executionId: `${this.jobId}-${v.id}-${i}-${this.attempt}`,
          vertexId: v.id,
          vertexName: v.name,
          subtaskIndex: i,
          parallelism: v.parallelism,
          maxParallelism: g.maxParallelism,
          slot: slots[i]!.slot,
          artifactHash: this.artifactHash,
          jobArgs: this.jobArgs,
          operatorIds: v.operatorIds,
          operators: operatorsOf(v),
          inputs: g.edges
            .filter((e) => e.target === v.id)
            .map((e) => ({
              edgeId: e.id,
              partitioner: e.partitioner,
              ...(e.keyNodeId !== undefined ? { keyNodeId: e.keyNodeId } : {}),
              ...(e.input !== undefined ? { input: e.input } : {}),
              producers: producersOf(e.partitioner, i, g.vertices[e.source]!.parallelism, v.parallelism).map((s) => ({ ...location(s), subtask: s })),
            })),
          outputs: g.edges
            .filter((e) => e.source === v.id)
            .map((e) => ({
              edgeId: e.id,
              partitioner: e.partitioner,
              ...(e.keyNodeId !== undefined ? { keyNodeId: e.keyNodeId } : {}),
              ...(e.recordType !== undefined ? { recordType: e.recordType } : {}),
              targets: consumersOf(e.partitioner, i, v.parallelism, g.vertices[e.target]!.parallelism).map((s) => ({ ...location(s), subtask: s })),
            })),
          runtimeMode: g.runtimeMode,
          bufferTimeoutMs: g.bufferTimeoutMs,
          planFingerprint: g.planFingerprint,
          stateBackend: g.stateBackend ?? null,
          attempt: this.attempt,
          checkpointingMode: this.opts.checkpointing.mode,
          ...(this.opts.checkpointing.unaligned && this.opts.checkpointing.mode === "EXACTLY_ONCE" ? { unalignedCheckpoints: true } : {}),
          ...(this.opts.checkpointing.unaligned && this.opts.checkpointing.mode === "EXACTLY_ONCE" && this.opts.checkpointing.alignedTimeoutMs! > 0
            ? { alignedCheckpointTimeoutMs: this.opts.checkpointing.alignedTimeoutMs }
            : {}),
          ...(this.checkpointsAfterFinish ? { finalCheckpoint: true } : {}),
          ...(g.objectReuse === true ? { objectReuse: true } : {}),
          ...((this.opts.latencyIntervalMs ?? 0) > 0 ? { latencyIntervalMs: this.opts.latencyIntervalMs } : {}),
          restore: this.restoreFor(v.id),
        };
        this.executions.set(deployment.executionId, { deployment, tm: slots[i]!.tm, state, metrics: emptyMetrics(), startTime: Date.now(), endTime: null });
      }
    }
  }

  onTaskState(executionId: string, state: TaskState, error?: ErrorInfo, metrics?: TaskMetrics): void {
    if (this.suspended) return;
    const ex = this.executions.get(executionId);
    if (!ex || TERMINAL_TASK_STATES.has(ex.state)) return;
    ex.state = state;
    if (metrics) ex.metrics = metrics;
    if (TERMINAL_TASK_STATES.has(state)) {
      ex.endTime = Date.now();
      this.coordinator.onTaskEnded(executionId);
    }
    if (state === "FAILED") {
      error = { ...(error ?? { message: "task failed" }) };
      error.task ??= `${ex.deployment.vertexName} (${ex.deployment.subtaskIndex + 1}/${ex.deployment.parallelism})`;
      this.recordException(error, ex);
    }
    if (state === "FAILED" && this.state === "RUNNING") {
      this.error = error!;
      this.noteFailure();
      this.coordinator.stop("the job is failing over");
      if (this.restartDelay() !== null) {
        log.warn("task failed; restarting the job from its latest checkpoint", { job: this.jobId, task: this.error.task, error: this.error.message, attempt: this.attempt });
        this.restartPending = true;
        this.transition("RESTARTING");
      } else {
        log.warn("task failed; failing the job", { job: this.jobId, task: this.error.task, error: this.error.message });
        this.transition("FAILING");
      }
      this.cancelRemaining();
    }
    this.checkDone();
  }

  /** Whether an execution is of the current attempt, deployed to that TaskManager, and not ended. */
  isCurrentExecution(executionId: string, resourceId: string): boolean {
    if (this.adoption?.candidates.get(executionId)?.tm.info.resourceId === resourceId) return true;
    const ex = this.executions.get(executionId);
    return ex !== undefined && ex.tm.info.resourceId === resourceId && !TERMINAL_TASK_STATES.has(ex.state);
  }

  /**
   * A task reached the end of its input with a final transaction to commit. Approved only for a running task of
   * the current attempt on the TaskManager that asks, while the job runs; otherwise throws the reason.
   */
  approveFinalCommit(executionId: string, resourceId: string): void {
    const ex = this.executions.get(executionId);
    if (!ex) throw new Error(`execution ${executionId} is not of the current attempt ${this.attempt} of job ${this.jobId}`);
    if (ex.tm.info.resourceId !== resourceId) throw new Error(`execution ${executionId} is deployed to ${ex.tm.info.resourceId}, not ${resourceId}`);
    if (ex.state !== "RUNNING") throw new Error(`execution ${executionId} is ${ex.state}, not RUNNING`);
    if (this.state !== "RUNNING") throw new Error(`job ${this.jobId} is ${this.state}`);
  }

  onTaskMetrics(executionId: string, metrics: TaskMetrics): void {
    const ex = this.executions.get(executionId);
    if (ex && !TERMINAL_TASK_STATES.has(ex.state)) ex.metrics = metrics;
  }

  onTaskManagerLost(tm: RegisteredTaskManager, reason: string): void {
    for (const [id, ex] of this.executions) {
      if (ex.tm === tm && !TERMINAL_TASK_STATES.has(ex.state)) {
        this.onTaskState(id, "FAILED", { name: "TaskManagerLost", message: `TaskManager ${tm.info.resourceId} was lost: ${reason}` });
      }
    }
  }

  cancel(): void {
    if (this.suspended || TERMINAL_JOB_STATES.has(this.state) || this.state === "CANCELING") return;
    const scheduling = this.state === "SCHEDULING" || this.state === "CREATED" || this.state === "RESTARTING";
    this.coordinator.stop("the job is canceled");
    this.transition("CANCELING");
    if (scheduling) this.rm.release(this.jobId);
    this.cancelRemaining();
    this.checkDone();
  }

  status(): JobStatus {
    const tasks = { DEPLOYING: 0, RUNNING: 0, FINISHED: 0, FAILED: 0, CANCELING: 0, CANCELED: 0 } as Record<TaskState, number>;
    const vertices: VertexStatus[] = this.graph.vertices.map((v) => ({ id: v.id, name: v.name, parallelism: v.parallelism, subtasks: [], totals: { ...this.priorTotals[v.id]! } }));
    for (const ex of this.executions.values()) {
      tasks[ex.state]++;
      const v = vertices[ex.deployment.vertexId]!;
      addTotals(v.totals, ex.metrics);
      v.subtasks.push({
        subtask: ex.deployment.subtaskIndex,
        state: ex.state,
        taskManager: ex.tm.info.resourceId,
        metrics: ex.metrics,
        attempt: ex.deployment.attempt,
        host: ex.tm.info.dataHost,
        startTime: ex.startTime,
        endTime: ex.endTime,
      });
    }
    for (const v of vertices) v.subtasks.sort((a, b) => a.subtask - b.subtask);
    // Records read by the sources and written into the sinks, over every attempt.
    let recordsIn = 0, recordsOut = 0;
    const sinks = new Set(this.graph.vertices.filter((v) => !this.graph.edges.some((e) => e.source === v.id)).map((v) => v.id));
    for (const v of vertices) {
      if (this.graph.vertices[v.id]!.isSource) recordsIn += v.totals.recordsIn;
      if (sinks.has(v.id)) recordsOut += v.totals.recordsOut;
    }
    const waiting = this.waiting();
    const c = this.coordinator;
    return {
      jobId: this.jobId,
      name: this.graph.name,
      state: this.state,
      startTime: this.startTime,
      endTime: this.endTime,
      tasks,
      recordsIn,
      recordsOut,
      vertices,
      ...(this.error ? { error: this.error } : {}),
      restarts: this.attempt - this.firstAttempt,
      adoptions: this.adoptions,
      ...(waiting ? { waiting } : {}),
      checkpoints: { completed: c.completed, failed: c.failed, latest: c.latestCompleted(), restoredFrom: this.restoredFrom?.path ?? null, history: [...c.history] },
    };
  }

  /** Why the job waits: the restart delay, slots, or tasks of the failed attempt still ending. */
  private waiting(): JobWaiting | null {
    if (this.state !== "RESTARTING" && this.state !== "SCHEDULING") return null;
    const w = this.wait;
    const now = Date.now();
    if (w?.reason === "restart-delay") {
      const left = Math.max(0, w.until - now);
      return { reason: "restart-delay", delayLeftMs: left, message: `restarting in ${(left / 1000).toFixed(1)} s (the restart strategy's delay after restart ${this.attempt - this.firstAttempt + 1})` };
    }
    if (w?.reason === "adoption") {
      const left = Math.max(0, w.until - now);
      const got = this.adoption?.candidates.size ?? 0;
      return { reason: "adoption", message: `waiting for the TaskManagers to report the running attempt: ${got} of ${w.needed} tasks; restoring from the latest checkpoint in ${(left / 1000).toFixed(1)} s otherwise` };
    }
    if (w?.reason === "slots") {
      const free = this.rm.freeSlots, total = this.rm.totalSlots;
      return {
        reason: "slots",
        slotsNeeded: w.needed,
        slotsFree: free,
        slotsTotal: total,
        timeoutLeftMs: Math.max(0, w.deadline - now),
        message: `waiting for slots: the job needs ${w.needed}, the cluster has ${free} free of ${total} on ${this.rm.taskManagers.size} TaskManager(s); failing in ${Math.ceil(Math.max(0, w.deadline - now) / 1000)} s (jobmanager.slot-request.timeout)`,
      };
    }
    if (this.state === "RESTARTING") {
      const left = [...this.executions.values()].filter((ex) => !TERMINAL_TASK_STATES.has(ex.state)).length;
      if (left > 0) return { reason: "tasks-ending", tasksLeft: left, message: `waiting for ${left} task(s) of the failed attempt to end` };
    }
    return null;
  }

  /**
   * A failure into the exception history: the first of an attempt is an entry of its own, later ones of the same
   * attempt (the other tasks failing as the job fails over) go with it as concurrent exceptions.
   */
  private recordException(error: ErrorInfo, ex: Execution | null): void {
    const d = ex?.deployment;
    const entry: Omit<ExceptionEntry, "concurrent"> = {
      timestamp: Date.now(),
      name: error.name ?? errorName(error.stack),
      message: error.message,
      stack: error.stack ?? null,
      task: error.task ?? null,
      vertexId: d?.vertexId ?? null,
      subtask: d?.subtaskIndex ?? null,
      attempt: this.attempt,
      taskManagerId: ex?.tm.info.resourceId ?? null,
      endpoint: ex ? `${ex.tm.info.dataHost}:${ex.tm.info.dataPort}` : null,
    };
    const last = this.exceptionHistory[this.exceptionHistory.length - 1];
    if (last && last.attempt === this.attempt && this.state !== "RUNNING") {
      if (last.concurrent.length < MAX_CONCURRENT_EXCEPTIONS) last.concurrent.push(entry);
      return;
    }
    this.exceptionHistory.push({ ...entry, concurrent: [] });
    const max = this.opts.exceptionHistorySize ?? 16;
    if (this.exceptionHistory.length > max) {
      this.exceptionHistory.splice(0, this.exceptionHistory.length - max);
      this.exceptionsTruncated = true;
    }
  }

  private cancelRemaining(): void {
    for (const [id, ex] of this.executions) {
      if (TERMINAL_TASK_STATES.has(ex.state)) continue;
      ex.tm.rpc.request("cancelTask", { executionId: id, epoch: this.rm.epoch }).catch(() => this.onTaskState(id, "CANCELED"));
    }
    // A TaskManager that never answers must not keep the job from ending.
    if (this.cancelTimer) clearTimeout(this.cancelTimer);
    this.cancelTimer = setTimeout(() => {
      this.cancelTimer = null;
      for (const [id, ex] of this.executions) if (!TERMINAL_TASK_STATES.has(ex.state)) this.onTaskState(id, "CANCELED");
      this.checkDone();
    }, CANCEL_TIMEOUT_MS);
  }

  private checkDone(): void {
    if (TERMINAL_JOB_STATES.has(this.state)) return;
    const all = [...this.executions.values()];
    if (!all.every((ex) => TERMINAL_TASK_STATES.has(ex.state))) return;
    if (this.state === "RESTARTING") {
      if (this.restartPending && this.cancelTimer) {
        clearTimeout(this.cancelTimer);
        this.cancelTimer = null;
      }
      if (this.restartPending && all.length > 0) {
        this.restartPending = false;
        void this.restart();
      }
      return;
    }
    if (this.state === "FAILING") this.transition("FAILED");
    else if (this.state === "CANCELING") this.transition("CANCELED");
    else if (all.length > 0 && all.every((ex) => ex.state === "FINISHED")) this.transition("FINISHED");
  }

  private transition(state: JobState): void {
    this.state = state;
    log.info("job state changed", { job: this.jobId, name: this.graph.name, state });
    if (!TERMINAL_JOB_STATES.has(state)) return;
    this.endTime = Date.now();
    this.coordinator.stop(`the job is ${state}`);
    if (this.cancelTimer) clearTimeout(this.cancelTimer);
    this.rm.release(this.jobId);
    const tms = new Set([...this.executions.values()].map((ex) => ex.tm));
    for (const tm of tms) tm.rpc.request("releaseJob", { jobId: this.jobId, epoch: this.rm.epoch }).catch(() => {});
    this.onTerminal(this);
    for (const w of this.doneWaiters.splice(0)) w();
  }
}

function addTotals(t: RecordTotals, m: TaskMetrics): void {
  t.recordsIn += m.recordsIn;
  t.recordsOut += m.recordsOut;
  t.bytesIn += m.bytesIn;
  t.bytesOut += m.bytesOut;
}

/** "TypeError" from a stack whose first line is "TypeError: message"; else "Error". */
function errorName(stack: string | undefined): string {
  const m = stack ? /^([A-Za-z_$][\w$.]*)(?::|$)/.exec(stack.split("\n", 1)[0]!) : null;
  return m ? m[1]! : "Error";
}

/** How a state is shown in messages: `count (keyed value)`, `__source-splits (operator list, union)`. */
export function describeState(s: StateInfo): string {
  return `${s.name} (${s.scope} ${s.kind}${s.mode ? `, ${s.mode}` : ""})`;
}

/**
 * A checkpoint or savepoint fits a job when it has the same max parallelism (key groups) and every operator in it
 * with state is an operator of the job (by operator id), keyed state going to an operator on a keyed stream.
 * Chains, their count and parallelism may differ. State no operator claims is refused, naming each operator id
 * and its states, unless `allowNonRestoredState`; then it is dropped, and what was dropped is returned.
 */
export function checkRestoreFits(r: { meta: CheckpointMetadata; path: string }, g: JobGraph, allowNonRestoredState: boolean): string[] {
  if (r.meta.maxParallelism !== g.maxParallelism) {
    throw new Error(`cannot restore ${r.path}: it has max parallelism ${r.meta.maxParallelism}, the job ${g.maxParallelism} (key groups cannot change)`);
  }
  const ops = new Map(g.vertices.flatMap((v) => operatorsOf(v)).map((o) => [o.id, o]));
  const unclaimed: string[] = [];
  for (const saved of r.meta.operators) {
    if (saved.states.length === 0) continue; // nothing in it to lose
    const label = `operator id ${JSON.stringify(saved.id)} ("${saved.name}"${saved.uid !== null ? `, uid ${JSON.stringify(saved.uid)}` : ", no uid"})`;
    const op = ops.get(saved.id);
    if (!op) {
      unclaimed.push(`${label} with state ${saved.states.map(describeState).join(", ")}`);
      continue;
    }
    const keyed = saved.states.filter((s) => s.scope === "keyed");
    if (keyed.length > 0 && !op.keyed) {
      unclaimed.push(`${label} with keyed state ${keyed.map(describeState).join(", ")}: the job's operator "${op.name}" with that id is not on a keyed stream`);
    }
  }
  if (unclaimed.length > 0 && !allowNonRestoredState) {
    throw new Error(
      `cannot restore ${r.path}: it holds state that no operator of the job claims: ${unclaimed.join("; ")}. ` +
        `Give the operators their old uids, or start with --allowNonRestoredState (-n) to drop that state`,
    );
  }
  checkBroadcastChannelState(r, g);
  checkChannelStateChains(r, g);
  return unclaimed;
}

/**
 * In-flight records (an unaligned checkpoint's channel state) belong to a chain's network edges, so they can go back
 * only into the same chain: a task of another shape would not have those edges and would lose the records. Chains
 * change when an edge becomes chained or not, e.g. a keyBy at parallelism 1 (pipeline.operator-chaining.
 * keyed-at-parallelism-one) restored from a checkpoint taken at parallelism 2. Refused, naming the ways out.
 */
function checkChannelStateChains(r: { meta: CheckpointMetadata; path: string }, g: JobGraph): void {
  const chains = new Set(g.vertices.map((v) => operatorsOf(v).map((o) => o.id).join(",")));
  for (const old of r.meta.vertices) {
    if (!(old.subtasks ?? []).some((s) => s?.channel) || chains.has(old.operatorIds.join(","))) continue;
    throw new Error(
      `cannot restore ${r.path}: it is an unaligned checkpoint with records in flight into or out of the chain "${old.name}", which this job graph ` +
        `no longer has as one task (its operators are chained differently); restore it with the chaining it was taken with (the same parallelism, ` +
        `or pipeline.operator-chaining.keyed-at-parallelism-one as it was), or take a savepoint (always aligned) and restore from that`,
    );
  }
}

/**
 * In-flight records of a broadcast edge (an unaligned checkpoint's channel state) go to each consumer once only if
 * the consumer vertex keeps its parallelism: its old consumer c's records then go to the new subtask c. At another
 * parallelism they would be split as on any other edge (old c to new c mod p), so a new subtask beyond the old count
 * would miss them and a smaller vertex would get some twice. Refused, naming the way out, rather than run inexactly.
 */
function checkBroadcastChannelState(r: { meta: CheckpointMetadata; path: string }, g: JobGraph): void {
  const oldVertexOf = (v: JobGraph["vertices"][number]) => r.meta.vertices.find((o) => o.operatorIds[0] === operatorsOf(v)[0]?.id);
  const hasChannelState = (v: JobGraph["vertices"][number]) => (oldVertexOf(v)?.subtasks ?? []).some((s) => s?.channel);
  for (const e of g.edges) {
    if (e.partitioner !== "broadcast") continue;
    const [producer, consumer] = [g.vertices[e.source]!, g.vertices[e.target]!];
    const old = oldVertexOf(consumer);
    if (!old || old.parallelism === consumer.parallelism || !(hasChannelState(producer) || hasChannelState(consumer))) continue;
    throw new Error(
      `cannot restore ${r.path} at this parallelism: it is an unaligned checkpoint with records in flight on the broadcast edge into "${consumer.name}", ` +
        `which ran at parallelism ${old.parallelism} and would now run at ${consumer.parallelism}; restore it at parallelism ${old.parallelism}, ` +
        `or take a savepoint (always aligned) and rescale from that`,
    );
  }
}
