// The shapes a connector to an external system takes, part of the job API (connectors in src/connectors/ implement
// them) so that the runtime drives every connector the same way
// (Flink's FLIP-27 sources and two-phase-commit sinks, in our terms):
//
// - A source is splits with positions. Its reader, one per source subtask, reads the splits given to it (its
//   initial share, or the restored splits of the checkpoint, reassigned by id % parallelism) and tells their
//   positions at each checkpoint, synchronously between two chunks. A split is plain JSON (it goes into the
//   checkpoint as operator state). poll() is asynchronous: it waits a little for data and may return an empty chunk,
//   so that checkpoint barriers still go out while the external system is quiet.
// - A sink is a writer per subtask (run as an operator of the chain, src/runtime/operators.ts) whose snapshotState (pre-commit at the barrier), endInput and
//   finalCommit may return promises: the task acknowledges the checkpoint only once the pre-commit has settled, and
//   waits for waitReady() after each batch so that a sink that writes asynchronously pushes back on its input.
import type { OperatorStateStore } from "../state/operator-state.ts";

/** A connector split: plain JSON-able data, `id` unique within the source. */
export interface ConnectorSplit {
  type: "connector";
  /** The connector that made it (a split is read only by the same connector). */
  connector: string;
  id: number;
  [field: string]: unknown;
}

/** What a source reader is told about its subtask. */
export interface SourceReaderContext {
  subtaskIndex: number;
  parallelism: number;
  jobId: string;
  attempt: number;
  /** The checkpoint the job was restored from (0 = none). */
  restoredCheckpointId: number;
  /** The restored splits given to this subtask, or null when the job starts without a checkpoint. */
  restoredSplits: ConnectorSplit[] | null;
}

export interface ConnectorSourceReader {
  /** Connects and prepares reading (before the first poll). */
  open(): Promise<void>;
  /**
   * The next records, after waiting at most a short while (a few hundred ms) for them: an empty array when there
   * were none, null when every split is finished (bounded sources only). A chunk never ends in the middle of
   * something the position cannot express (e.g. inside a database transaction).
   */
  poll(): Promise<unknown[] | null>;
  /** Splits with the position right after the last chunk returned (synchronous: called at the barrier). */
  positions(): ConnectorSplit[];
  /** The split the last chunk came from. */
  readonly lastSplitId: number;
  /** Splits that have delivered data recently (idle and finished ones left out, so they hold no watermark back). */
  activeSplitIds(): number[];
  /** The barrier of checkpoint n goes out now, after positions(): remember what n covers. */
  snapshotState?(checkpointId: number): void;
  /** Checkpoint n completed: acknowledge to the external system what it covered. */
  notifyCheckpointComplete?(checkpointId: number): Promise<void> | void;
  /** The task ends (finished, failed or canceled). */
  close(): Promise<void>;
}

/** What env.fromSource() takes for a connector (besides the built-in sources). */
export interface ConnectorSource {
  readonly connector: string;
  createReader(ctx: SourceReaderContext): ConnectorSourceReader;
}

/** What a sink writer is told about its subtask (a subset of the runtime's operator context). */
export interface SinkWriterContext {
  subtaskIndex: number;
  parallelism: number;
  jobId: string;
  attempt: number;
  /** The checkpoint the job was restored from (0 = none). */
  restoredCheckpointId: number;
  /** The subtask's operator state (a sink keeps what its checkpoints cover there). */
  operatorState: OperatorStateStore;
  /**
   * FLIP-147 (execution.checkpointing.checkpoints-after-tasks-finish): end of input is followed by a final checkpoint.
   * A two-phase-commit sink then only stops writing at endInput; the final checkpoint's barrier pre-commits the rest
   * and its notify commits it, as any checkpoint. hasFinalCommit/finalCommit remain the fallback when no final
   * checkpoint completes.
   */
  finalCheckpoint?: boolean;
}

/**
 * One subtask's sink: the runtime runs it as an operator of the chain. snapshotState, endInput and finalCommit may
 * return promises (see the top of this file).
 */
export interface SinkWriter {
  open?(): void | Promise<void>;
  process(record: unknown): void;
  flush?(): void;
  waitReady?(): Promise<void> | null;
  endInput?(): void | Promise<void>;
  hasFinalCommit?(): boolean;
  finalCommit?(): void | Promise<void>;
  snapshotState?(checkpointId: number): void | Promise<void>;
  notifyCheckpointComplete?(checkpointId: number): void | Promise<void>;
  dispose?(): void;
}

/** What sinkTo() takes for a connector: makes the sink writer of one subtask. */
export interface ConnectorSink {
  readonly connector: string;
  /** Operator name shown in the job graph. */
  readonly name: string;
  /** sinkId: the operator's uid, or its node id: tells the sink's own external transactions from others' in the job. */
  createWriter(ctx: SinkWriterContext, sinkId: string): SinkWriter;
}
