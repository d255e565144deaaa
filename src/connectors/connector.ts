// The shapes a connector to an external system takes, so that the runtime drives every connector the same way
// (Flink's FLIP-27 sources and two-phase-commit sinks, in our terms):
//
// - A source is splits with positions. Its reader, one per source subtask, reads the splits given to it (its
//   initial share, or the restored splits of the checkpoint, reassigned by id % parallelism) and tells their
//   positions at each checkpoint, synchronously between two chunks. A split is plain JSON (it goes into the
//   checkpoint as operator state). poll() is asynchronous: it waits a little for data and may return an empty chunk,
//   so that checkpoint barriers still go out while the external system is quiet.
// - A sink is an operator (src/runtime/operators.ts) whose snapshotState (pre-commit at the barrier), endInput and
//   finalCommit may return promises: the task acknowledges the checkpoint only once the pre-commit has settled, and
//   waits for waitReady() after each batch so that a sink that writes asynchronously pushes back on its input.
import type { Operator, OperatorContext } from "../runtime/operators.ts";

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

/** What sinkTo() takes for a connector: makes the sink operator of one subtask. */
export interface ConnectorSink {
  readonly connector: string;
  /** Operator name shown in the job graph. */
  readonly name: string;
  /** sinkId: the operator's uid, or its node id: tells the sink's own external transactions from others' in the job. */
  createWriter(ctx: OperatorContext, sinkId: string): Operator;
}

export function errorText(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(errorText).join("; ");
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}

/** A positive integer option, or a clear error naming it. */
export function positiveIntOption(what: string, name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) throw new Error(`${what}: option ${name} must be an integer >= 1, got ${JSON.stringify(v)}`);
  return v;
}

/** A non-empty string option, or a clear error naming it. */
export function stringOption(what: string, name: string, v: unknown, required: true): string;
export function stringOption(what: string, name: string, v: unknown, required: false): string | undefined;
export function stringOption(what: string, name: string, v: unknown, required: boolean): string | undefined {
  if (v === undefined && !required) return undefined;
  if (typeof v !== "string" || v.length === 0) throw new Error(`${what}: option ${name} must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

/** A promise that resolves after ms (for waits between polls of an external system). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
