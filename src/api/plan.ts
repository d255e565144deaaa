// The stream graph a job's builder function records: one node per transformation, functions included.
// The client strips the functions (describePlan) to build the JobGraph; each task's Worker runs the builder
// again and takes the functions of the nodes chained into it, so a builder must be deterministic.

export type SourceSpec =
  | { type: "collection"; items: unknown[] }
  | { type: "textFile"; path: string }
  | { type: "sequence"; from: number; to: number }
  /** Nexmark events 0..events-1 (src/nexmark/generator.ts); throttle: also emit at ratePerSecond in wall-clock time. */
  | { type: "nexmark"; events: number; seed: number; ratePerSecond: number; firstEventTime: number; throttle: boolean }
  /** A connector to an external system (src/connectors/): its reader reads splits asynchronously. */
  | { type: "connector"; connector: ConnectorSource };

import type {
  AggregatingState,
  BroadcastState,
  AggregatingStateDescriptor,
  ListState,
  ListStateDescriptor,
  MapState,
  MapStateDescriptor,
  ReducingState,
  ReducingStateDescriptor,
  ValueState,
  ValueStateDescriptor,
} from "../state/api.ts";
import type { ConnectorSink, ConnectorSource } from "./connector.ts";
import type { OperatorStateStore } from "../state/operator-state.ts";
import type { OutputTag, TimeDomain, TimerService, WatermarkStrategy, WindowAssigner, WindowFunctionSpec } from "./event-time.ts";
import type { Evictor, Trigger } from "./triggers.ts";
import type { AsyncFunction, AsyncRetryStrategy } from "./async.ts";
import type { RecordType } from "../graph/record-type.ts";

/** What a function sees of the task it runs in (as Flink's RuntimeContext). */
export interface RuntimeContext {
  subtaskIndex: number;
  parallelism: number;
  taskName: string;
  /** Keyed state, scoped to the key of the record being processed (functions on a keyed stream only). */
  getState<T>(descriptor: ValueStateDescriptor<T>): ValueState<T>;
  getListState<T>(descriptor: ListStateDescriptor<T>): ListState<T>;
  getMapState<K, V>(descriptor: MapStateDescriptor<K, V>): MapState<K, V>;
  getReducingState<T>(descriptor: ReducingStateDescriptor<T>): ReducingState<T>;
  getAggregatingState<IN, ACC, OUT>(descriptor: AggregatingStateDescriptor<IN, ACC, OUT>): AggregatingState<IN, OUT>;
  /** Non-keyed (operator) list and broadcast state of this subtask. */
  getOperatorStateStore(): OperatorStateStore;
}

/** A rich function: open(ctx) before the first record, close() at end of input (as Flink's RichFunction). */
export interface RichFunction {
  open?(ctx: RuntimeContext): void | Promise<void>;
  close?(): void;
}
export type MapFunction<T, R> = ((value: T) => R) | (RichFunction & { map(value: T): R });
export type FlatMapFunction<T, R> = ((value: T) => Iterable<R>) | (RichFunction & { flatMap(value: T): Iterable<R> });
export type FilterFunction<T> = ((value: T) => boolean) | (RichFunction & { filter(value: T): boolean });

export interface Collector<T> {
  collect(value: T): void;
}
/** Per-record context of a KeyedProcessFunction. */
export interface KeyedContext<K> {
  getCurrentKey(): K;
  /** The record's event time, or null when it has none. */
  timestamp(): number | null;
  timerService(): TimerService;
  /** Emits to a side output (read it with getSideOutput(tag) on the resulting stream). */
  output<X>(tag: OutputTag<X>, value: X): void;
}
/** The context of onTimer: the key and time domain of the timer that fired. */
export interface OnTimerContext<K> extends KeyedContext<K> {
  timeDomain(): TimeDomain;
}
/** As Flink's KeyedProcessFunction: onTimer(timestamp, ctx, out) when a timer registered with ctx.timerService() fires. */
export interface KeyedProcessFunction<K, IN, OUT> extends RichFunction {
  processElement(value: IN, ctx: KeyedContext<K>, out: Collector<OUT>): void;
  onTimer?(timestamp: number, ctx: OnTimerContext<K>, out: Collector<OUT>): void;
}

/** Per-record context of a CoProcessFunction (keyed: getCurrentKey and timers; not keyed: timers throw). */
export interface CoProcessContext<K = unknown> extends KeyedContext<K> {}
/** The context of a KeyedCoProcessFunction's onTimer. */
export interface CoOnTimerContext<K> extends OnTimerContext<K> {}
/** As Flink's CoMapFunction: map1 for the first input's records, map2 for the second's. */
export interface CoMapFunction<IN1, IN2, OUT> extends RichFunction {
  map1(value: IN1): OUT;
  map2(value: IN2): OUT;
}
/** As Flink's CoFlatMapFunction: each returns the values to emit (an array or any iterable). */
export interface CoFlatMapFunction<IN1, IN2, OUT> extends RichFunction {
  flatMap1(value: IN1): Iterable<OUT>;
  flatMap2(value: IN2): Iterable<OUT>;
}
/**
 * As Flink's CoProcessFunction and KeyedCoProcessFunction: one method per input. On keyed connected streams both
 * inputs share the keyed state and timers of a key (onTimer as in KeyedProcessFunction); not keyed, there are no timers.
 */
export interface CoProcessFunction<IN1, IN2, OUT, K = unknown> extends RichFunction {
  processElement1(value: IN1, ctx: CoProcessContext<K>, out: Collector<OUT>): void;
  processElement2(value: IN2, ctx: CoProcessContext<K>, out: Collector<OUT>): void;
  onTimer?(timestamp: number, ctx: CoOnTimerContext<K>, out: Collector<OUT>): void;
}
export type KeyedCoProcessFunction<K, IN1, IN2, OUT> = CoProcessFunction<IN1, IN2, OUT, K>;

/** Broadcast state as the non-broadcast side sees it (as Flink's ReadOnlyBroadcastState). */
export interface ReadOnlyBroadcastState<K, V> {
  get(key: K): V | undefined;
  contains(key: K): boolean;
  entries(): IterableIterator<[K, V]>;
  keys(): IterableIterator<K>;
  values(): IterableIterator<V>;
  isEmpty(): boolean;
}
/** The context of processElement in a (Keyed)BroadcastProcessFunction: broadcast state read-only. */
export interface BroadcastReadOnlyContext<K = unknown> extends KeyedContext<K> {
  getBroadcastState<BK, BV>(descriptor: MapStateDescriptor<BK, BV>): ReadOnlyBroadcastState<BK, BV>;
  currentWatermark(): number;
  currentProcessingTime(): number;
}
/** The context of processBroadcastElement: broadcast state writable, and (keyed) every key's state. */
export interface BroadcastContext {
  getBroadcastState<BK, BV>(descriptor: MapStateDescriptor<BK, BV>): BroadcastState<BK, BV>;
  /** Keyed only: fn(key, state) for every key of this subtask that holds the descriptor's state (as Flink's). */
  applyToKeyedState<S>(descriptor: { name: string; kind: string }, fn: (key: any, state: S) => void): void;
  timestamp(): number | null;
  currentWatermark(): number;
  currentProcessingTime(): number;
  output<X>(tag: OutputTag<X>, value: X): void;
}
/**
 * As Flink's BroadcastProcessFunction and KeyedBroadcastProcessFunction: processElement for the non-broadcast
 * input (broadcast state read-only; keyed: keyed state and timers), processBroadcastElement for the broadcast one
 * (every subtask gets every element; broadcast state writable). onTimer only when keyed.
 */
export interface BroadcastProcessFunction<IN, BC, OUT, K = unknown> extends RichFunction {
  processElement(value: IN, ctx: BroadcastReadOnlyContext<K>, out: Collector<OUT>): void;
  processBroadcastElement(value: BC, ctx: BroadcastContext, out: Collector<OUT>): void;
  onTimer?(timestamp: number, ctx: BroadcastReadOnlyContext<K> & OnTimerContext<K>, out: Collector<OUT>): void;
}
export type KeyedBroadcastProcessFunction<K, IN, BC, OUT> = BroadcastProcessFunction<IN, BC, OUT, K>;

/** A sink: a function per record, or an object with open/invoke/close (as Flink's RichSinkFunction). */
export type SinkFunction<T = any> = ((value: T) => void) | { open?(ctx: RuntimeContext): void; invoke(value: T): void; close?(): void };

export type SinkSpec =
  | { type: "print"; prefix?: string }
  | { type: "textFile"; path: string }
  | { type: "function"; fn: SinkFunction }
  /** Exactly-once files (two-phase commit on checkpoints): see src/runtime/file-sink.ts. */
  /** bucketAssigner: records go into subdirectories named by it (Flink's BucketAssigner). */
  | { type: "fileSink"; path: string; bucketAssigner?: (record: any) => string }
  /** A connector to an external system (src/connectors/): makes its own sink operator. */
  | { type: "connector"; connector: ConnectorSink };

export type PartitionSpec = "rebalance" | "rescale" | "broadcast" | "forward" | "custom";

export type PlanNode =
  | (NodeBase & { kind: "source"; source: SourceSpec })
  | (NodeBase & { kind: "map" | "flatMap" | "filter"; fn: ((value: any) => any) | (RichFunction & Record<string, any>); keyNode?: number })
  | (NodeBase & { kind: "process"; fn: KeyedProcessFunction<any, any, any>; keyNode: number })
  | (NodeBase & { kind: "keyBy"; fn: (value: any) => unknown })
  | (NodeBase & { kind: "partition"; partitioner: PartitionSpec; custom?: { partition: (key: any, numPartitions: number) => number; key: (value: any) => unknown } })
  | (NodeBase & { kind: "union" })
  | (NodeBase & { kind: "reduce"; fn: (a: any, b: any) => any; keyNode: number; sumField?: number | string })
  | (NodeBase & { kind: "sink"; sink: SinkSpec })
  /** assignTimestampsAndWatermarks: sets each record's timestamp and generates watermarks. */
  | (NodeBase & { kind: "assignTimestamps"; strategy: WatermarkStrategy<any> })
  /** A keyed window with its assigner and function; late records may go to the side output lateTag. */
  | (NodeBase & { kind: "window"; keyNode: number; assigner: WindowAssigner; fn: WindowFunctionSpec; allowedLateness: number; lateTag: string | null; trigger?: Trigger | null; evictor?: Evictor | null })
  /**
   * A two-input operator (connect): inputs [first, second], each possibly a keyBy node. keyNodes: the two keyBy
   * nodes when both inputs are keyed (keyed state and timers are shared by the two inputs' records of a key).
   */
  | (NodeBase & { kind: "coMap" | "coFlatMap" | "coProcess"; fn: RichFunction & Record<string, any>; keyNodes?: [number, number] })
  /**
   * connect(broadcastStream).process(fn): inputs [stream (its keyBy node when keyed), the broadcast partition node];
   * broadcastStates: the names of the MapStateDescriptors given to broadcast(...).
   */
  | (NodeBase & { kind: "broadcastProcess"; fn: BroadcastProcessFunction<any, any, any>; keyNode?: number; broadcastStates: string[] })
  /** getSideOutput(tag) of its input node: the values that node emitted with ctx.output(tag, ...). */
  | (NodeBase & { kind: "sideOutput"; tag: string })
  /** Async I/O (AsyncDataStream): requests of fn in flight, results in input order or as they complete. */
  | (NodeBase & { kind: "async"; fn: AsyncFunction<any, any>; ordered: boolean; timeoutMs: number; capacity: number; retry: AsyncRetryStrategy });

export interface NodeBase {
  id: number;
  name: string;
  inputs: number[];
  /** Explicit parallelism, or null for the job's default. */
  parallelism: number | null;
  uid: string | null;
  chaining: boolean;
  /** startNewChain(): never chained to its input, though what follows may chain to it (Flink's ChainingStrategy.HEAD). */
  startsChain?: boolean;
  /** The records' declared type (DataStream.returns), if any. */
  returns?: RecordType;
}

export type NodeKind = PlanNode["kind"];

/** Virtual nodes only shape edges (partitioning, union); they never become operators. */
export function isVirtual(node: PlanNode): boolean {
  return node.kind === "keyBy" || node.kind === "partition" || node.kind === "union";
}

export interface JobSettings {
  /** Keyed state backend chosen by the job, or null for the TaskManager's state.backend. */
  stateBackend: "heap" | "sqlite" | null;
  parallelism: number | null;
  maxParallelism: number;
  runtimeMode: "streaming" | "batch";
  bufferTimeoutMs: number;
  name: string | null;
  /** Checkpoint interval in ms (0 = the cluster's execution.checkpointing.interval), and the mode. */
  checkpointInterval: number;
  checkpointingMode: CheckpointingMode | null;
  /** Periodic watermark interval in ms, or null for the TaskManager's pipeline.auto-watermark-interval. */
  autoWatermarkInterval?: number | null;
  /** Latency marker interval in ms (0 = off), or null for the JobManager's metrics.latency.interval. */
  latencyTrackingInterval?: number | null;
  /** Infer a record type for edges without a declared one (default true); false: msgpack for them. */
  typeInference?: boolean;
  /** Object reuse (ExecutionConfig.enableObjectReuse), or null/absent for the client's pipeline.object-reuse. */
  objectReuse?: boolean | null;
}

export type CheckpointingMode = "EXACTLY_ONCE" | "AT_LEAST_ONCE";

export interface Plan {
  nodes: PlanNode[];
  settings: JobSettings;
}

/** A node without its functions and data: what the JobManager sees. */
export interface NodeDescription {
  id: number;
  kind: NodeKind;
  name: string;
  inputs: number[];
  parallelism: number | null;
  uid: string | null;
  chaining: boolean;
  startsChain?: boolean;
  partitioner?: PartitionSpec;
  sourceType?: SourceSpec["type"];
  sinkType?: SinkSpec["type"];
  /** Keeps state a savepoint carries: a source (its positions), a keyed operator, a rich function (may use state). */
  stateful?: boolean;
  /** Runs on a keyed stream (its task has a keyed state backend for it). */
  keyed?: boolean;
  /** The records' declared type (DataStream.returns). */
  returns?: RecordType;
}

/** Two-input operators (connect): always the head of their chain, fed by edges of both inputs. */
export function isTwoInput(n: PlanNode): n is Extract<PlanNode, { kind: "coMap" | "coFlatMap" | "coProcess" | "broadcastProcess" }> {
  return n.kind === "coMap" || n.kind === "coFlatMap" || n.kind === "coProcess" || n.kind === "broadcastProcess";
}

/** Whether a node has keyed state: reduce, process, window, and map/filter/flatMap or two-input operators on a keyed stream. */
export function isKeyedOperator(n: PlanNode): boolean {
  if (n.kind === "broadcastProcess") return n.keyNode !== undefined;
  if (isTwoInput(n)) return n.keyNodes !== undefined;
  return n.kind === "reduce" || n.kind === "process" || n.kind === "window" || ((n.kind === "map" || n.kind === "flatMap" || n.kind === "filter") && n.keyNode !== undefined);
}

function isStateful(n: PlanNode): boolean {
  // An async operator keeps its requests in flight in operator state; a broadcast one its broadcast state.
  if (n.kind === "source" || n.kind === "broadcastProcess" || n.kind === "reduce" || n.kind === "process" || n.kind === "window" || n.kind === "async") return true;
  // A rich function (an object with open) may register keyed or operator state in open().
  if (n.kind === "coProcess" && n.keyNodes !== undefined) return true;
  if (n.kind === "map" || n.kind === "flatMap" || n.kind === "filter" || isTwoInput(n)) return typeof n.fn === "object" && n.fn !== null && typeof n.fn.open === "function";
  if (n.kind === "sink" && n.sink.type === "function") return typeof n.sink.fn === "object" && typeof n.sink.fn.open === "function";
  return false;
}

export function describePlan(plan: Plan): NodeDescription[] {
  return plan.nodes.map((n) => {
    const d: NodeDescription = {
      id: n.id,
      kind: n.kind,
      name: n.name,
      inputs: [...n.inputs],
      parallelism: n.parallelism,
      uid: n.uid,
      chaining: n.chaining,
      ...(n.startsChain ? { startsChain: true } : {}),
    };
    if (n.kind === "partition") d.partitioner = n.partitioner;
    if (n.kind === "source") d.sourceType = n.source.type;
    if (n.kind === "sink") d.sinkType = n.sink.type;
    if (isStateful(n)) d.stateful = true;
    if (isKeyedOperator(n)) d.keyed = true;
    if (n.returns !== undefined) d.returns = n.returns;
    return d;
  });
}
