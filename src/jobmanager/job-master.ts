// Runs one job: waits for slots, deploys every subtask (eagerly, as streaming jobs need), follows task
// states to the job's final state, and cancels the remaining tasks when one fails.
import type { JobGraph } from "../api/job-graph.ts";
import { consumersOf, producersOf, requiredSlots } from "../api/job-graph.ts";
import {
  TERMINAL_JOB_STATES,
  TERMINAL_TASK_STATES,
  type ErrorInfo,
  type JobState,
  type JobStatus,
  type TaskDeployment,
  type TaskMetrics,
  type TaskState,
  type VertexStatus,
  emptyMetrics,
} from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";
import type { RegisteredTaskManager, ResourceManager, SlotAssignment } from "./resource-manager.ts";

const log = createLogger("jobmaster");
const CANCEL_TIMEOUT_MS = 10_000;

interface Execution {
  deployment: TaskDeployment;
  tm: RegisteredTaskManager;
  state: TaskState;
  metrics: TaskMetrics;
}

export class JobMaster {
  state: JobState = "CREATED";
  readonly startTime = Date.now();
  endTime: number | null = null;
  error: ErrorInfo | undefined;
  readonly executions = new Map<string, Execution>();
  private doneWaiters: (() => void)[] = [];
  private cancelTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly jobId: string,
    readonly graph: JobGraph,
    private readonly artifactHash: string,
    private readonly jobArgs: string[],
    private readonly rm: ResourceManager,
    private readonly slotTimeoutMs: number,
    private readonly onTerminal: (job: JobMaster) => void,
  ) {}

  /** Resolves when the job reached FINISHED, FAILED or CANCELED. */
  done(): Promise<void> {
    if (TERMINAL_JOB_STATES.has(this.state)) return Promise.resolve();
    return new Promise((resolve) => this.doneWaiters.push(resolve));
  }

  async run(): Promise<void> {
    this.transition("SCHEDULING");
    const needed = requiredSlots(this.graph);
    const deadline = Date.now() + this.slotTimeoutMs;
    let slots: SlotAssignment[] | null = null;
    while (this.state === "SCHEDULING") {
      slots = this.rm.allocate(this.jobId, needed);
      if (slots) break;
      const left = deadline - Date.now();
      if (left <= 0) {
        this.error = {
          message: `could not get ${needed} slots within ${this.slotTimeoutMs} ms: the cluster has ${this.rm.freeSlots} free of ${this.rm.totalSlots} slots on ${this.rm.taskManagers.size} TaskManager(s)`,
        };
        this.transition("FAILED");
        return;
      }
      await this.rm.waitForSlots(left);
    }
    if (!slots) return; // canceled while waiting
    this.deploy(slots);
  }

  private deploy(slots: SlotAssignment[]): void {
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
          executionId: `${this.jobId}-${v.id}-${i}`,
          vertexId: v.id,
          vertexName: v.name,
          subtaskIndex: i,
          parallelism: v.parallelism,
          maxParallelism: g.maxParallelism,
          slot: slots[i]!.slot,
          artifactHash: this.artifactHash,
          jobArgs: this.jobArgs,
          operatorIds: v.operatorIds,
          inputs: g.edges
            .filter((e) => e.target === v.id)
            .map((e) => ({
              edgeId: e.id,
              producers: producersOf(e.partitioner, i, g.vertices[e.source]!.parallelism, v.parallelism).map((s) => ({ ...location(s), subtask: s })),
            })),
          outputs: g.edges
            .filter((e) => e.source === v.id)
            .map((e) => ({
              edgeId: e.id,
              partitioner: e.partitioner,
              ...(e.keyNodeId !== undefined ? { keyNodeId: e.keyNodeId } : {}),
              targets: consumersOf(e.partitioner, i, v.parallelism, g.vertices[e.target]!.parallelism).map((s) => ({ ...location(s), subtask: s })),
            })),
          runtimeMode: g.runtimeMode,
          bufferTimeoutMs: g.bufferTimeoutMs,
          planFingerprint: g.planFingerprint,
          stateBackend: g.stateBackend ?? null,
        };
        this.executions.set(deployment.executionId, { deployment, tm: slots[i]!.tm, state: "DEPLOYING", metrics: emptyMetrics() });
      }
    }
    this.transition("RUNNING");
    for (const ex of this.executions.values()) {
      ex.tm.rpc.request("submitTask", ex.deployment).catch((err: Error) =>
        this.onTaskState(ex.deployment.executionId, "FAILED", { message: `deploying to ${ex.tm.info.resourceId} failed: ${err.message}` }),
      );
    }
  }

  onTaskState(executionId: string, state: TaskState, error?: ErrorInfo, metrics?: TaskMetrics): void {
    const ex = this.executions.get(executionId);
    if (!ex || TERMINAL_TASK_STATES.has(ex.state)) return;
    ex.state = state;
    if (metrics) ex.metrics = metrics;
    if (state === "FAILED" && this.state === "RUNNING") {
      this.error = error ?? { message: "task failed" };
      this.error.task ??= `${ex.deployment.vertexName} (${ex.deployment.subtaskIndex + 1}/${ex.deployment.parallelism})`;
      log.warn("task failed; failing the job", { job: this.jobId, task: this.error.task, error: this.error.message });
      this.transition("FAILING");
      this.cancelRemaining();
    }
    this.checkDone();
  }

  onTaskMetrics(executionId: string, metrics: TaskMetrics): void {
    const ex = this.executions.get(executionId);
    if (ex && !TERMINAL_TASK_STATES.has(ex.state)) ex.metrics = metrics;
  }

  onTaskManagerLost(tm: RegisteredTaskManager, reason: string): void {
    for (const [id, ex] of this.executions) {
      if (ex.tm === tm && !TERMINAL_TASK_STATES.has(ex.state)) {
        this.onTaskState(id, "FAILED", { message: `TaskManager ${tm.info.resourceId} was lost: ${reason}` });
      }
    }
  }

  cancel(): void {
    if (TERMINAL_JOB_STATES.has(this.state) || this.state === "CANCELING") return;
    const scheduling = this.state === "SCHEDULING" || this.state === "CREATED";
    this.transition("CANCELING");
    if (scheduling) this.rm.release(this.jobId);
    this.cancelRemaining();
    this.checkDone();
  }

  status(): JobStatus {
    const tasks = { DEPLOYING: 0, RUNNING: 0, FINISHED: 0, FAILED: 0, CANCELING: 0, CANCELED: 0 } as Record<TaskState, number>;
    let recordsIn = 0, recordsOut = 0;
    const sinks = new Set(this.graph.vertices.filter((v) => !this.graph.edges.some((e) => e.source === v.id)).map((v) => v.id));
    for (const ex of this.executions.values()) {
      tasks[ex.state]++;
      if (this.graph.vertices[ex.deployment.vertexId]!.isSource) recordsIn += ex.metrics.recordsIn;
      if (sinks.has(ex.deployment.vertexId)) recordsOut += ex.metrics.recordsOut;
    }
    const vertices: VertexStatus[] = this.graph.vertices.map((v) => ({ id: v.id, name: v.name, parallelism: v.parallelism, subtasks: [] }));
    for (const ex of this.executions.values()) {
      vertices[ex.deployment.vertexId]!.subtasks.push({ subtask: ex.deployment.subtaskIndex, state: ex.state, taskManager: ex.tm.info.resourceId, metrics: ex.metrics });
    }
    for (const v of vertices) v.subtasks.sort((a, b) => a.subtask - b.subtask);
    return { jobId: this.jobId, name: this.graph.name, state: this.state, startTime: this.startTime, endTime: this.endTime, tasks, recordsIn, recordsOut, vertices, ...(this.error ? { error: this.error } : {}) };
  }

  private cancelRemaining(): void {
    for (const [id, ex] of this.executions) {
      if (TERMINAL_TASK_STATES.has(ex.state)) continue;
      ex.tm.rpc.request("cancelTask", { executionId: id }).catch(() => this.onTaskState(id, "CANCELED"));
    }
    // A TaskManager that never answers must not keep the job from ending.
    this.cancelTimer ??= setTimeout(() => {
      for (const [id, ex] of this.executions) if (!TERMINAL_TASK_STATES.has(ex.state)) this.onTaskState(id, "CANCELED");
      this.checkDone();
    }, CANCEL_TIMEOUT_MS);
  }

  private checkDone(): void {
    if (TERMINAL_JOB_STATES.has(this.state)) return;
    const all = [...this.executions.values()];
    if (!all.every((ex) => TERMINAL_TASK_STATES.has(ex.state))) return;
    if (this.state === "FAILING") this.transition("FAILED");
    else if (this.state === "CANCELING") this.transition("CANCELED");
    else if (all.length > 0 && all.every((ex) => ex.state === "FINISHED")) this.transition("FINISHED");
  }

  private transition(state: JobState): void {
    this.state = state;
    log.info("job state changed", { job: this.jobId, name: this.graph.name, state });
    if (!TERMINAL_JOB_STATES.has(state)) return;
    this.endTime = Date.now();
    if (this.cancelTimer) clearTimeout(this.cancelTimer);
    this.rm.release(this.jobId);
    const tms = new Set([...this.executions.values()].map((ex) => ex.tm));
    for (const tm of tms) tm.rpc.request("releaseJob", { jobId: this.jobId }).catch(() => {});
    this.onTerminal(this);
    for (const w of this.doneWaiters.splice(0)) w();
  }
}
