// Every message of the RPC protocol, in one place. docs/protocol.md documents each of them.
// A frame body is an object: request {t, id, p}, response {t: "response", re, p} or {t: "response", re, e}.
// Every message is a request with a response, so each side learns that the other took it.
import type { EdgeRecordType, JobGraph, OperatorInfo, PartitionerKind } from "../graph/job-graph.ts";
export type { PartitionerKind };
import type { KeyedSnapshotHandle, OperatorSnapshotHandle, StateInfo } from "../state/snapshot-format.ts";

export const PROTOCOL_VERSION = 1;

/** Who opens a connection; sent in the handshake. */
export type PeerRole = "taskmanager" | "client" | "data";

export interface Hello {
  version: number;
  role: PeerRole;
  /** Resource id of a TaskManager, or a free-form client name. */
  id: string;
  /** With a shared secret: the connector's fresh random nonce (32 bytes) for the challenge-response. */
  nonce?: Uint8Array;
}

export interface HelloReply {
  version: number;
  id: string;
}

export type TaskState = "DEPLOYING" | "RUNNING" | "FINISHED" | "FAILED" | "CANCELING" | "CANCELED";
export type JobState = "CREATED" | "SCHEDULING" | "RUNNING" | "FINISHED" | "FAILING" | "FAILED" | "CANCELING" | "CANCELED" | "RESTARTING";

export const TERMINAL_TASK_STATES: ReadonlySet<TaskState> = new Set(["FINISHED", "FAILED", "CANCELED"]);
export const TERMINAL_JOB_STATES: ReadonlySet<JobState> = new Set(["FINISHED", "FAILED", "CANCELED"]);

export interface ErrorInfo {
  message: string;
  stack?: string;
  /** Where it happened, e.g. "Flat Map -> Map (2/4)". */
  task?: string;
  /** The error's class (name), when it is not in the stack's first line: e.g. "TaskManagerLost". */
  name?: string;
}

/** One failure of a job in its exception history (REST /jobs/<id>/exceptions, as Flink's exceptionHistory). */
export interface ExceptionEntry {
  timestamp: number;
  /** The error's class, e.g. "Error", "TypeError", "TaskManagerLost", "DeploymentFailure", "NoResourceAvailable". */
  name: string;
  message: string;
  stack: string | null;
  /** The failed task, e.g. "Map (2/4)"; null when no task failed (e.g. no slots). */
  task: string | null;
  vertexId: number | null;
  subtask: number | null;
  /** The job's attempt the failure ended (0, then one more per restart). */
  attempt: number;
  taskManagerId: string | null;
  /** The TaskManager's host:data port. */
  endpoint: string | null;
  /** Failures of other tasks in the same failover, after this one (bounded). */
  concurrent: Omit<ExceptionEntry, "concurrent">[];
}

/** Why a job that is not running waits (RESTARTING, or SCHEDULING for slots). */
export interface JobWaiting {
  reason: "restart-delay" | "slots" | "tasks-ending" | "adoption";
  message: string;
  /** restart-delay: milliseconds until the restart. */
  delayLeftMs?: number;
  /** slots: what the job needs and what the cluster has free / in all. */
  slotsNeeded?: number;
  slotsFree?: number;
  slotsTotal?: number;
  /** slots: milliseconds until jobmanager.slot-request.timeout fails the job. */
  timeoutLeftMs?: number;
  /** tasks-ending: tasks of the failed attempt that have not ended yet. */
  tasksLeft?: number;
}

// ---- TaskManager -> JobManager ----
export interface RegisterTaskManager {
  resourceId: string;
  dataHost: string;
  dataPort: number;
  slots: number;
  resources: { cpuCores: number; memoryBytes: number };
  pid: number;
  /** Tasks still alive on the TaskManager (execution ids): the JobManager answers which of them are not current,
   *  and (HA) a new leader adopts the running attempt when these cover all its subtasks. */
  executions?: string[];
  /** The slot of each of `executions` (for adoption). */
  executionSlots?: Record<string, number>;
  /** The highest JobManager epoch this TaskManager has followed: a JobManager of an older one is deposed. */
  epoch?: number;
}

/** JobManager -> TaskManager requests carry the leader's epoch (HA fencing); a TaskManager refuses older epochs. */
export interface Fenced {
  epoch?: number;
}
export interface RegisterTaskManagerReply {
  jobManagerId: string;
  /** The JobManager's heartbeat settings govern both sides (a TaskManager's own config is only its default). */
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  /** Executions of the registration's list that are not current attempts: the TaskManager cancels them at once. */
  cancel?: string[];
  /** The JobManager's leadership epoch (0 without HA). */
  epoch?: number;
  /** With HA on: how long the TaskManager keeps its tasks running after losing this JobManager (its
   *  taskmanager.jobmanager-loss.grace-period), so that the next leader can adopt them; 0 = cancel at once. */
  jobManagerLossGracePeriodMs?: number;
}
/** TaskManager -> JobManager after end of input: may this execution commit its final transaction? */
export interface ApproveFinalCommit {
  executionId: string;
  /** The highest JobManager epoch the TaskManager has followed: a deposed leader refuses. */
  epoch?: number;
}
export interface HeartbeatReply {
  /** JobManager -> TaskManager: executions the TaskManager reported that are not current attempts (cancel them). */
  cancel?: string[];
}
export interface OfferSlots {
  resourceId: string;
  slots: number[];
}
export interface OfferSlotsReply {
  accepted: number[];
}
export interface SlotStatus {
  slot: number;
  jobId: string | null;
}
export interface Heartbeat extends Fenced {
  from: string;
  slotReport?: SlotStatus[];
  /** Latest metrics of the sender's running tasks, by execution id (TaskManager -> JobManager). */
  taskMetrics?: Record<string, TaskMetrics>;
  /** The sender's process (TaskManager -> JobManager): for the dashboard's TaskManager page. */
  process?: ProcessStats;
}
export interface ProcessStats {
  heapUsed: number;
  heapTotal: number;
  rss: number;
  networkBuffersTotal: number;
  networkBuffersAvailable: number;
  /** How the network buffers are split: required (every task's minimum) and optional in use, and per task. */
  network?: NetworkStats;
}
export interface NetworkStats {
  /** How the pool size was derived from the configuration. */
  sizing: string;
  segmentSize: number;
  requiredInUse: number;
  optionalInUse: number;
  /** Per task: its minimum, what it holds now and its configured size (held < configured: below by the difference). */
  tasks: { executionId: string; name: string; required: number; held: number; configured: number }[];
}
export interface TaskManagerInfoReply {
  /** The TaskManager's configuration, secrets masked. */
  config: { key: string; value: string }[];
  /** Its most recent log lines (bounded), oldest first. */
  logs: string[];
}
export interface UpdateTaskState {
  executionId: string;
  state: TaskState;
  error?: ErrorInfo;
  metrics?: TaskMetrics;
}
export interface TaskMetrics {
  recordsIn: number;
  recordsOut: number;
  bytesIn: number;
  bytesOut: number;
  buffersIn: number;
  buffersOut: number;
  /** Times this task's ends of its channels woke a waiting thread (the peer Worker, or the main thread of a remote channel). */
  wakeUps: number;
  /** Fraction of the output pools' buffers in use (0..1), and of input buffers queued in the task. */
  outPoolUsage: number;
  inPoolUsage: number;
  /** As Flink's busyTimeMsPerSecond etc., over the last reporting interval. */
  busyTimeMsPerSecond: number;
  backPressuredTimeMsPerSecond: number;
  idleTimeMsPerSecond: number;
  /** Event-time jobs only: watermarks that went backwards on a channel (ignored), the task's current input and
   *  output watermarks (null before the first), and records that came too late for their window. */
  watermarksIgnored?: number;
  currentInputWatermark?: number | null;
  currentOutputWatermark?: number | null;
  lateRecordsDropped?: number;
  /** Tasks with keyed state only (docs/architecture.md 4.7). */
  state?: TaskStateMetrics;
  /** Buffer debloating (FLIP-183): the buffer size the task's input gate announces to its producers, bytes. */
  debloatedBufferSize?: number;
  /** Latency markers (metrics.latency.interval): per chained operator and source subtask, once a marker arrived. */
  latency?: LatencyStats[];
}
/** How long latency markers took from a source subtask to an operator: over the last markers (a window of 128), and
 *  totals over all of them. */
export interface LatencyStats {
  operator: string;
  sourceVertexId: number;
  sourceSubtask: number;
  count: number;
  sumMs: number;
  minMs: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}
/** A task's keyed state: its size, the SQLite object cache, checkpointed bytes and where it was restored from. */
export interface TaskStateMetrics {
  backend: "heap" | "sqlite";
  /** Heap: bytes of the last snapshot; SQLite: bytes of the database's used pages. */
  sizeBytes: number;
  /** Heap: keys stored; SQLite: null (not counted). */
  entries: number | null;
  /** SQLite: object-cache lookups that hit and missed (totals), and the hit ratio over the last report interval
   *  (null when there were no lookups in it). */
  cacheHits?: number;
  cacheMisses?: number;
  cacheHitRatio?: number | null;
  /** Bytes the task's keyed snapshots wrote themselves, for full snapshots and for change sets, and how many. */
  checkpointedBytesFull: number;
  checkpointedBytesIncremental: number;
  snapshotsFull: number;
  snapshotsIncremental: number;
  /** Keyed backends restored from a local copy (state.backend.local-recovery) and from checkpoint storage. */
  restoresLocal: number;
  restoresRemote: number;
}
export interface DisconnectTaskManager {
  resourceId: string;
  reason: string;
}
export function emptyMetrics(): TaskMetrics {
  return { recordsIn: 0, recordsOut: 0, bytesIn: 0, bytesOut: 0, buffersIn: 0, buffersOut: 0, wakeUps: 0, outPoolUsage: 0, inPoolUsage: 0, busyTimeMsPerSecond: 0, backPressuredTimeMsPerSecond: 0, idleTimeMsPerSecond: 0 };
}
export interface FetchArtifact {
  hash: string;
}
export interface FetchArtifactReply {
  bytes: Uint8Array;
}

// ---- JobManager -> TaskManager ----

/** Where the consumer subtask of a channel runs. */
export interface ChannelTarget {
  resourceId: string;
  dataHost: string;
  dataPort: number;
}

export interface OutputDeployment {
  edgeId: number;
  partitioner: PartitionerKind;
  /** Plan node id of the keyBy (hash) or partitionCustom (custom) node whose functions route this edge. */
  keyNodeId?: number;
  /** The records' declared type and the operator that declared it: the writer serializes them in its layout. */
  recordType?: EdgeRecordType;
  /** The consumer subtasks this producer feeds (one for forward, all for the others) and where they run. */
  targets: (ChannelTarget & { subtask: number })[];
}

export interface InputDeployment {
  edgeId: number;
  /** How the edge routes records (and its keyBy/partitionCustom node): restored channel state is split by it. */
  partitioner?: PartitionerKind;
  keyNodeId?: number;
  /** Which input of a two-input head operator the edge feeds (0 or 1; absent = 0). */
  input?: number;
  /** The producer subtasks that feed this subtask on this edge, and where they run. */
  producers: (ChannelTarget & { subtask: number })[];
}

export interface TaskDeployment extends Fenced {
  jobId: string;
  jobName: string;
  executionId: string;
  vertexId: number;
  vertexName: string;
  subtaskIndex: number;
  parallelism: number;
  maxParallelism: number;
  slot: number;
  artifactHash: string;
  jobArgs: string[];
  /** Plan node ids chained into this task, head first. */
  operatorIds: number[];
  /** Their operator ids (state identities), same order; absent in hand-built deployments (ids "node-<n>"). */
  operators?: OperatorInfo[];
  inputs: InputDeployment[];
  outputs: OutputDeployment[];
  runtimeMode: "streaming" | "batch";
  bufferTimeoutMs: number;
  planFingerprint: string;
  /** The job's keyed state backend, or null for the TaskManager's state.backend. */
  stateBackend: "heap" | "sqlite" | null;
  /** The job's attempt: 0, then one more for each restart (names exactly-once sink files). */
  attempt: number;
  /** Barrier handling: EXACTLY_ONCE aligns a task's inputs, AT_LEAST_ONCE does not. */
  checkpointingMode: "EXACTLY_ONCE" | "AT_LEAST_ONCE";
  /** execution.checkpointing.unaligned.enabled: barriers overtake in-flight buffers, which become channel state. */
  unalignedCheckpoints?: boolean;
  /** execution.checkpointing.aligned-checkpoint-timeout (with unaligned checkpoints): start aligned, switch after this long. */
  alignedCheckpointTimeoutMs?: number;
  /** Object reuse (the job graph's objectReuse): a keyed reduce emits its accumulator without a copy. */
  objectReuse?: boolean;
  /** metrics.latency.interval: sources emit a latency marker this often (absent or 0: none). */
  latencyIntervalMs?: number;
  /** FLIP-147: at end of input the task waits for a checkpoint that covers everything it did, then finishes. */
  finalCheckpoint?: boolean;
  /** State to start from: this task's share is picked by key group (keyed) and redistribution (operator). */
  restore: TaskRestore | null;
}

/**
 * The state a task's operators start from: per operator id (of this task's chain), what every subtask of that
 * operator wrote in one checkpoint or savepoint, whatever chain it ran in then. Each operator picks its share by
 * key group (keyed) and redistribution mode (operator state).
 */
export interface TaskRestore {
  checkpointId: number;
  /** The metadata file it came from (for messages). */
  path: string;
  operators: Record<string, { keyed: KeyedSnapshotHandle[]; operator: OperatorSnapshotHandle[] }>;
  /** Unaligned checkpoints: the in-flight records of the vertex's old subtasks, split by each new subtask. */
  channel?: ChannelStateHandle[];
  /** Every subtask of the vertex had finished (FLIP-147): the task finishes at once. */
  finished?: boolean;
}

/** A task's channel state (input and output) of one unaligned checkpoint (runtime/channel-state.ts). */
export interface ChannelStateHandle {
  type: "channel";
  file: string;
  sizeBytes: number;
  /** Records in it, except those of output chunks kept as bytes (their count is known only when decoded). */
  records: number;
  subtaskIndex: number;
}

/** What one task wrote for a checkpoint: per operator of its chain that has state, handles to its files. */
export interface TaskSnapshot {
  operators: OperatorSubtaskSnapshot[];
  /** Unaligned checkpoints: the records in flight on the task's inputs (task level, not per operator). */
  channel?: ChannelStateHandle | null;
  /** The task had finished before the checkpoint (FLIP-147): no state. */
  finished?: boolean;
  /** Per-task figures (Flink's checkpoint details): alignment, start delay (trigger to first barrier), unaligned. */
  alignmentMs?: number;
  startDelayMs?: number;
  unaligned?: boolean;
}

export interface OperatorSubtaskSnapshot {
  operatorId: string;
  keyed: KeyedSnapshotHandle | null;
  operator: OperatorSnapshotHandle | null;
  /** The states in those files (names, kinds): for messages and `savepoint info`, not for restoring. */
  states: StateInfo[];
}

// ---- checkpoints ----
export interface TriggerCheckpoint extends Fenced {
  executionId: string;
  checkpointId: number;
  timestamp: number;
  /** Directory of this checkpoint (or savepoint); each task writes into <dir>/<vertex>-<subtask>. */
  dir: string;
  /** An unaligned checkpoint (never a savepoint). */
  unaligned?: boolean;
}
export interface AcknowledgeCheckpoint {
  executionId: string;
  checkpointId: number;
  snapshot: TaskSnapshot;
}
export interface DeclineCheckpoint {
  executionId: string;
  checkpointId: number;
  reason: string;
}
export interface NotifyCheckpointComplete extends Fenced {
  executionId: string;
  checkpointId: number;
}
/** Checkpoint n was aborted: a task releases any alignment of it and drops its pending work. */
export interface NotifyCheckpointAborted {
  executionId: string;
  checkpointId: number;
}
export interface TriggerSavepoint {
  jobId: string;
  /** Target directory; empty = state.savepoints.dir. */
  dir?: string;
  /** Cancel the job once the savepoint is complete. */
  cancel?: boolean;
}
export interface TriggerSavepointReply {
  path: string;
  checkpointId: number;
}
export interface CheckpointStats {
  id: number;
  status: "IN_PROGRESS" | "COMPLETED" | "FAILED";
  savepoint: boolean;
  triggerTime: number;
  durationMs: number | null;
  acknowledged: number;
  total: number;
  sizeBytes: number;
  path?: string;
  failure?: string;
  /** Unaligned checkpoints: bytes of channel state written (Flink's "persisted data"). */
  channelStateBytes?: number;
  unaligned?: boolean;
  /** The longest alignment and start delay (trigger to first barrier) over the tasks, ms. */
  alignmentMs?: number;
  startDelayMs?: number;
  /** Tasks that had finished (FLIP-147). */
  finishedTasks?: number;
  /**
   * Per vertex (Flink's checkpoint details per task), over its subtasks that acknowledged: the longest start delay
   * and alignment, ms. Shows where a slow aligned checkpoint waits: at a source (its trigger) or at a consumer.
   */
  vertices?: { vertexId: number; name: string; acknowledged: number; startDelayMs: number; alignmentMs: number }[];
}
export interface CancelTask extends Fenced {
  executionId: string;
}
export interface ReleaseJob extends Fenced {
  jobId: string;
}

// ---- client -> JobManager ----
export interface SubmitJob {
  artifact: Uint8Array;
  jobArgs: string[];
  graph: JobGraph;
  /** A savepoint (or retained checkpoint) directory, or its _metadata file, to start from. */
  fromSavepoint?: string;
  /** Start even if the savepoint holds state of operators the job does not have (that state is dropped). */
  allowNonRestoredState?: boolean;
}
export interface SubmitJobReply {
  jobId: string;
  /** What the submitter should know (stateful operators without uid). */
  warnings?: string[];
}
export interface JobIdRequest {
  jobId: string;
}
export interface SubtaskStatus {
  subtask: number;
  state: TaskState;
  taskManager: string;
  metrics: TaskMetrics;
  /** The job's attempt this subtask belongs to. */
  attempt: number;
  /** The TaskManager's host. */
  host: string;
  /** When it was deployed, and when it ended (null while it runs). */
  startTime: number;
  endTime: number | null;
}
export interface RecordTotals {
  recordsIn: number;
  recordsOut: number;
  bytesIn: number;
  bytesOut: number;
}
export interface VertexStatus {
  id: number;
  name: string;
  parallelism: number;
  subtasks: SubtaskStatus[];
  /** Counts over every attempt of the job: the ended attempts' plus the current one's. */
  totals: RecordTotals;
}
export interface JobStatus {
  jobId: string;
  name: string;
  state: JobState;
  startTime: number;
  endTime: number | null;
  tasks: Record<TaskState, number>;
  /** Records read by the sources and written into the sinks, over every attempt (restarts add up). */
  recordsIn: number;
  recordsOut: number;
  vertices: VertexStatus[];
  error?: ErrorInfo;
  /** Restarts so far (the current attempt; a JobManager failover that restored the job counts as one). */
  restarts: number;
  /** JobManager failovers in which the new leader adopted the running tasks (none restarted). */
  adoptions?: number;
  /** Why the job waits, while it is RESTARTING or SCHEDULING. */
  waiting?: JobWaiting;
  checkpoints: { completed: number; failed: number; latest: CheckpointStats | null; restoredFrom: string | null; history: CheckpointStats[] };
}
export interface ClusterOverview {
  taskManagers: number;
  slotsTotal: number;
  slotsAvailable: number;
  jobsRunning: number;
}

/** Request types with their payload and reply types; the connection refuses any other type. */
export interface RpcRequests {
  registerTaskManager: [RegisterTaskManager, RegisterTaskManagerReply];
  offerSlots: [OfferSlots, OfferSlotsReply];
  heartbeat: [Heartbeat, HeartbeatReply];
  approveFinalCommit: [ApproveFinalCommit, Record<string, never>];
  updateTaskState: [UpdateTaskState, Record<string, never>];
  fetchArtifact: [FetchArtifact, FetchArtifactReply];
  disconnectTaskManager: [DisconnectTaskManager, Record<string, never>];
  submitTask: [TaskDeployment, Record<string, never>];
  cancelTask: [CancelTask, Record<string, never>];
  releaseJob: [ReleaseJob, Record<string, never>];
  triggerCheckpoint: [TriggerCheckpoint, Record<string, never>];
  notifyCheckpointComplete: [NotifyCheckpointComplete, Record<string, never>];
  notifyCheckpointAborted: [NotifyCheckpointAborted, Record<string, never>];
  acknowledgeCheckpoint: [AcknowledgeCheckpoint, Record<string, never>];
  declineCheckpoint: [DeclineCheckpoint, Record<string, never>];
  triggerSavepoint: [TriggerSavepoint, TriggerSavepointReply];
  submitJob: [SubmitJob, SubmitJobReply];
  jobStatus: [JobIdRequest, JobStatus];
  cancelJob: [JobIdRequest, Record<string, never>];
  listJobs: [Record<string, never>, JobStatus[]];
  clusterOverview: [Record<string, never>, ClusterOverview];
  taskManagerInfo: [Record<string, never>, TaskManagerInfoReply];
}
export type RequestType = keyof RpcRequests;

export const REQUEST_TYPES: ReadonlySet<string> = new Set<RequestType>([
  "registerTaskManager",
  "offerSlots",
  "heartbeat",
  "updateTaskState",
  "fetchArtifact",
  "disconnectTaskManager",
  "submitTask",
  "cancelTask",
  "releaseJob",
  "triggerCheckpoint",
  "notifyCheckpointComplete",
  "notifyCheckpointAborted",
  "acknowledgeCheckpoint",
  "declineCheckpoint",
  "triggerSavepoint",
  "submitJob",
  "jobStatus",
  "cancelJob",
  "listJobs",
  "clusterOverview",
  "approveFinalCommit",
  "taskManagerInfo",
]);

/** Which peer roles may send which requests to the JobManager (TaskManagers answer only their JobManager). */
export const JOBMANAGER_ACCEPTS: Record<PeerRole, ReadonlySet<RequestType>> = {
  taskmanager: new Set(["registerTaskManager", "offerSlots", "heartbeat", "updateTaskState", "fetchArtifact", "disconnectTaskManager", "acknowledgeCheckpoint", "declineCheckpoint", "approveFinalCommit"]),
  client: new Set(["submitJob", "jobStatus", "cancelJob", "listJobs", "clusterOverview", "triggerSavepoint"]),
  data: new Set(),
};
