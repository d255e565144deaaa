// The contracts between a task and the operators of its chain (what stream-task.ts, operators.ts, event-time.ts
// and windows.ts share), kept apart so that none of those files imports another for its types.
import type { KeyedStateBackend } from "../state/keyed-backend.ts";
import type { OperatorStateStore } from "../state/operator-state.ts";
import type { PlanNode } from "../api/plan.ts";

/** The timestamp of the record being pushed through the chain (null = none). One per task. */
export interface TimeContext {
  ts: number | null;
}

/** What an operator emits besides records: watermarks and idleness (to the next operator or the writers), side outputs. */
export interface ChainOutput {
  watermark(wm: number): void;
  idle(idle: boolean): void;
  side(tag: string, value: unknown): void;
}

export type Collector = (record: unknown) => void;

export interface Operator {
  /** Before the first record: rich functions' open(ctx). */
  open?(): void | Promise<void>;
  process(record: unknown): void;
  /** A two-input operator's second input (process() takes the first). */
  process2?(record: unknown): void;
  /** Called after each input batch or source chunk: a place to flush buffered output. */
  flush?(): void;
  /**
   * After each input batch: a promise while the operator cannot take more input yet (a sink writing to an
   * external system asynchronously), which the task waits for; it rejects when that writing failed (fails the task).
   */
  waitReady?(): Promise<void> | null;
  /** End of all input: emit what is held back, release resources (a connector sink may pre-commit asynchronously). */
  endInput?(): void | Promise<void>;
  /**
   * After end of input: whether this operator has an external commit to make (a two-phase-commit sink's final
   * transaction). The task then asks the JobManager whether its attempt is still current and calls finalCommit().
   */
  hasFinalCommit?(): boolean;
  finalCommit?(): void | Promise<void>;
  /**
   * Synchronous part of checkpoint n, before the barrier goes downstream (a two-phase-commit sink pre-commits).
   * A promise: the asynchronous rest of the pre-commit, which the checkpoint's acknowledgement waits for.
   */
  snapshotState?(checkpointId: number): void | Promise<void>;
  /** Checkpoint n completed everywhere (a rejected promise fails the task). */
  notifyCheckpointComplete?(checkpointId: number): void | Promise<void>;
  /** Event time advanced to wm: fire event-time timers, then pass wm on (ChainOutput.watermark). */
  processWatermark?(wm: number): void;
  /** Every pipeline.auto-watermark-interval: periodic watermarks and idleness. */
  onPeriodic?(): void;
  /** The task ends (finished or failed): stop wall-clock timers, close connections. */
  dispose?(): void;
}

export interface OperatorContext {
  subtaskIndex: number;
  parallelism: number;
  taskName: string;
  runtimeMode: "streaming" | "batch";
  /** pipeline.object-reuse: a keyed reduce hands on its accumulator itself, not a copy. */
  objectReuse?: boolean;
  /** Looks up a plan node by id (for the key selector of a keyed operator). */
  node(id: number): PlanNode;
  /** The task's keyed state backend (present when the chain has a keyed operator). */
  keyed: KeyedStateBackend | null;
  operatorState: OperatorStateStore;
  /** The job's id, its attempt (restarts so far) and the checkpoint it was restored from (0 = none). */
  jobId: string;
  attempt: number;
  restoredCheckpointId: number;
  /** The timestamp of the record in flight through the chain (event time). */
  time: TimeContext;
  /** FLIP-147: end of input is followed by a final checkpoint, whose notify commits what is left. */
  finalCheckpoint?: boolean;
  /** Fails the task from a callback outside the task loop (processing-time timers). */
  fail?(err: unknown): void;
  /** After output produced outside the task loop (processing-time timers): flush what waits. */
  afterAsyncOutput?(): void;
}
