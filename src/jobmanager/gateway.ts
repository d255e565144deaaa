// What the JobManager shows to the layers above it (the REST API, its /metrics and dashboard): read-only views of
// jobs and TaskManagers plus the few actions they may take. The REST layer depends on this interface only, never
// on the JobManager's own mutable maps, and the JobManager does not know the REST layer exists (src/roles/ starts
// both).
import type { Config } from "../config/index.ts";
import type { JobGraph } from "../graph/job-graph.ts";
import type { ExceptionEntry, JobState, JobStatus, ProcessStats, RegisterTaskManager, TaskDeployment, TaskManagerInfoReply, TaskMetrics, TaskState } from "../rpc/messages.ts";

/** One task of a job's current attempt, as the JobManager last heard of it. */
export interface ExecutionView {
  readonly deployment: Readonly<TaskDeployment>;
  readonly tm: TaskManagerView;
  readonly state: TaskState;
  readonly metrics: Readonly<TaskMetrics>;
  readonly startTime: number;
  readonly endTime: number | null;
}

export interface JobView {
  readonly jobId: string;
  readonly state: JobState;
  readonly graph: Readonly<JobGraph>;
  readonly executions: ReadonlyMap<string, ExecutionView>;
  /** Failures, newest last; `exceptionsTruncated` once older ones were dropped. */
  readonly exceptionHistory: readonly ExceptionEntry[];
  readonly exceptionsTruncated: boolean;
  status(): JobStatus;
  cancel(): void;
  savepoint(dir: string | undefined, cancel: boolean): Promise<{ path: string; checkpointId: number }>;
}

export interface TaskManagerView {
  readonly info: Readonly<RegisterTaskManager>;
  /** slot index -> job id (null = free); only offered slots are present. */
  readonly slots: ReadonlyMap<number, string | null>;
  readonly lastHeartbeat: number;
  readonly registeredAt: number;
  /** Heap, RSS and network buffers, from the TaskManager's latest heartbeat. */
  readonly process?: Readonly<ProcessStats>;
}

/** A TaskManager's masked configuration and recent log lines (its answer to taskManagerInfo). */
export type TaskManagerInfo = TaskManagerInfoReply;

export interface JobManagerGateway {
  readonly id: string;
  /** The bound RPC port. */
  readonly port: number;
  readonly config: Readonly<Config>;
  jobs(): Iterable<JobView>;
  job(jobId: string): JobView | undefined;
  taskManagers(): Iterable<TaskManagerView>;
  taskManager(resourceId: string): TaskManagerView | undefined;
  slots(): { total: number; free: number };
  /** Where a savepoint goes: `dir` resolved against state.savepoints.dir (throws with the reason if it cannot). */
  savepointTarget(dir: string | undefined): string | undefined;
  /** High availability: the mode, this leader's epoch and the JobManagers standing by (etcd). */
  ha(): { type: "none" | "file" | "etcd"; epoch: number; leader: string; standbys: string[] };
  /** Asks a TaskManager over its RPC connection for its configuration and logs. */
  taskManagerInfo(resourceId: string, timeoutMs: number): Promise<TaskManagerInfo>;
}
