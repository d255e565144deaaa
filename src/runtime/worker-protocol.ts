// Messages between a TaskManager's main thread and a task's Worker: control only. Channel data does not go by
// postMessage: every channel is a ring in shared memory (see ChannelRing), handed to the task once. The exception is
// rare: copies of the buffers an unaligned barrier overtook on a remote channel (OvertakenBuffers, once per checkpoint).
import type { ErrorInfo, TaskDeployment, TaskMetrics, TaskSnapshot } from "../rpc/messages.ts";
import type { ConnectChannels, NetworkGrant, OvertakenBuffers, ResizeOutputPools } from "../network/wire.ts";

/** Where and how the task keeps keyed state. */
export interface StateGrant {
  backend: "heap" | "sqlite";
  /** The task's own directory (SQLite files); removed by the TaskManager when the task ends. */
  dir: string;
  cacheBytes: number;
  /** state.backend.incremental: SQLite checkpoints write change sets. */
  incremental?: boolean;
  /** state.backend.local-recovery: the directory of this job vertex subtask's local copies (absent: off). */
  localRecoveryDir?: string;
}

export type ToWorker =
  /** autoWatermarkIntervalMs: the TaskManager's pipeline.auto-watermark-interval (a job may set its own). */
  /** counters: 4 float64s (records in, records out, bytes in, bytes out) the task keeps current after every batch,
   *  so the main thread knows them when the task fails or is canceled between two metrics reports. */
  | { type: "init"; deployment: TaskDeployment; artifactPath: string; network: NetworkGrant; state: StateGrant; autoWatermarkIntervalMs?: number; memoryLimitBytes?: number; counters?: SharedArrayBuffer }
  /** taskmanager.memory.process-limit: the main thread asks whether the Worker still answers (see Task). */
  | { type: "ping" }
  /** The task's channels: each a ring in shared memory (see shared-ring.ts), shared with the peer task's Worker
   * for a local channel and with the main thread for a remote one. */
  | ConnectChannels
  /** The TaskManager redistributed its network buffers: the output pools' new sizes. */
  | ResizeOutputPools
  /** Unaligned checkpoints, remote channels: the buffers a priority event overtook on the TaskManagers' main threads. */
  | OvertakenBuffers
  /** Source tasks only: inject barrier n (snapshot first) after the current chunk. */
  /** Also a task whose inputs have all finished (FLIP-147): it takes the checkpoint once its input is read. */
  | { type: "checkpoint"; checkpointId: number; timestamp: number; dir: string; unaligned?: boolean }
  /** Checkpoint n was aborted: release any alignment of it and drop its pending work. */
  | { type: "checkpointAborted"; checkpointId: number }
  /** Checkpoint n is complete everywhere: commit what it covers (two-phase-commit sinks). */
  | { type: "checkpointComplete"; checkpointId: number }
  /** The JobManager's answer to finalCommitRequest. */
  | { type: "finalCommitReply"; approved: boolean; reason?: string };

export type FromWorker =
  | { type: "running" }
  | { type: "metrics"; metrics: TaskMetrics }
  | { type: "checkpointAck"; checkpointId: number; snapshot: TaskSnapshot }
  | { type: "checkpointDecline"; checkpointId: number; reason: string }
  | { type: "finished"; metrics: TaskMetrics }
  /** End of input left a two-phase-commit sink's final transaction: may this attempt commit it? */
  | { type: "finalCommitRequest" }
  | { type: "failed"; error: ErrorInfo }
  /** The answer to "ping", with this Worker's JavaScript heap in bytes (0 where it cannot be read). */
  | { type: "pong"; heapBytes: number };
