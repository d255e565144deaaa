// What job authors write against, shaped after Flink's DataStream API.
import { IntervalJoin, TwoStreams } from "./joins.ts";
import { AsyncRetryStrategies, checkAsyncFunction, type AsyncFunction, type AsyncRetryStrategy } from "./async.ts";
import { checkEvictor, checkTrigger, type Evictor, type Trigger } from "./triggers.ts";
import type {
  BroadcastProcessFunction,
  CoFlatMapFunction,
  CoMapFunction,
  CoProcessFunction,
  FilterFunction,
  FlatMapFunction,
  JobSettings,
  KeyedProcessFunction,
  MapFunction,
  PartitionSpec,
  CheckpointingMode,
  Plan,
  PlanNode,
  SinkFunction,
  SinkSpec,
  SourceSpec,
} from "./plan.ts";
import type { ConnectorSink } from "./connector.ts";
import { checkReturnsType, type TypeInformation } from "./types.ts";
import type { MapStateDescriptor } from "../state/api.ts";
import type { OutputTag, ProcessWindowFunction, WatermarkStrategy, WindowAggregateFunction, WindowAssigner, WindowFunctionSpec } from "./event-time.ts";

export const DEFAULT_MAX_PARALLELISM = 128;
export const DEFAULT_BUFFER_TIMEOUT_MS = 100;

/** The job's execution settings that Flink keeps in ExecutionConfig (env.getConfig()). */
export class ExecutionConfig {
  constructor(private readonly settings: JobSettings) {}
  /**
   * Object reuse (Flink's pipeline.object-reuse): a keyed reduce or sum keeps the key's first record as its
   * accumulator, hands that object itself to the operators chained after it, not a copy, and changes it with the
   * key's next record; functions must not keep or change what they are given, nor change what they emitted.
   * Overrides the cluster's pipeline.object-reuse.
   */
  enableObjectReuse(): this {
    this.settings.objectReuse = true;
    return this;
  }
  /** Every value a keyed reduce emits is a copy of its own (the default), whatever pipeline.object-reuse says. */
  disableObjectReuse(): this {
    this.settings.objectReuse = false;
    return this;
  }
  /** Whether this job turned object reuse on itself (false: off, or left to pipeline.object-reuse). */
  isObjectReuseEnabled(): boolean {
    return this.settings.objectReuse === true;
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
type NewNode = DistributiveOmit<PlanNode, "id" | "parallelism" | "uid" | "chaining">;

export class StreamExecutionEnvironment {
  private readonly nodes: PlanNode[] = [];
  private readonly settings: JobSettings = {
    stateBackend: null,
    parallelism: null,
    maxParallelism: DEFAULT_MAX_PARALLELISM,
    runtimeMode: "streaming",
    bufferTimeoutMs: DEFAULT_BUFFER_TIMEOUT_MS,
    name: null,
    checkpointInterval: 0,
    checkpointingMode: null,
    autoWatermarkInterval: null,
    latencyTrackingInterval: null,
  };

  /** The job's ExecutionConfig (object reuse). */
  getConfig(): ExecutionConfig {
    return new ExecutionConfig(this.settings);
  }

  /** Latency markers of this job every `ms` (0 = off); default: the JobManager's metrics.latency.interval. */
  setLatencyTrackingInterval(ms: number): this {
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`setLatencyTrackingInterval: expected a number of milliseconds >= 0, got ${ms}`);
    this.settings.latencyTrackingInterval = ms;
    return this;
  }

  /** Periodic watermark interval of this job in ms (0 = off); default: the TaskManager's pipeline.auto-watermark-interval. */
  setAutoWatermarkInterval(ms: number): this {
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`setAutoWatermarkInterval: expected a number of milliseconds >= 0, got ${ms}`);
    this.settings.autoWatermarkInterval = ms;
    return this;
  }

  /** Default parallelism of every operator of this job (otherwise the cluster's parallelism.default). */
  setParallelism(parallelism: number): this {
    this.settings.parallelism = positiveInt(parallelism, "setParallelism");
    return this;
  }

  /** Number of key groups: the upper bound for rescaling keyed state (default 128). */
  setMaxParallelism(maxParallelism: number): this {
    this.settings.maxParallelism = positiveInt(maxParallelism, "setMaxParallelism");
    return this;
  }

  /** "batch" on bounded input: keyed aggregations emit only their final value per key at end of input. */
  setRuntimeMode(mode: "streaming" | "batch"): this {
    if (mode !== "streaming" && mode !== "batch") throw new Error(`setRuntimeMode: expected "streaming" or "batch", got ${JSON.stringify(mode)}`);
    this.settings.runtimeMode = mode;
    return this;
  }

  /** Longest time a partly filled network buffer waits before it is sent (0 = send after every record). */
  setBufferTimeout(ms: number): this {
    if (!Number.isFinite(ms) || ms < 0) throw new Error(`setBufferTimeout: expected a number of milliseconds >= 0, got ${ms}`);
    this.settings.bufferTimeoutMs = ms;
    return this;
  }

  /**
   * Whether the network infers a record type for the edges without a declared one (DataStream.returns), and then
   * serializes the chunks whose records all fit it in its fixed binary layout instead of msgpack (default true).
   */
  setTypeInference(enabled: boolean): this {
    if (typeof enabled !== "boolean") throw new Error(`setTypeInference: expected true or false, got ${JSON.stringify(enabled)}`);
    this.settings.typeInference = enabled;
    return this;
  }

  /** Keyed state backend for this job: "heap" (in memory) or "sqlite" (on disk, larger than memory). */
  setStateBackend(kind: "heap" | "sqlite"): this {
    if (kind !== "heap" && kind !== "sqlite") throw new Error(`setStateBackend: expected "heap" or "sqlite", got ${JSON.stringify(kind)}`);
    this.settings.stateBackend = kind;
    return this;
  }

  /** Takes a checkpoint every intervalMs (as Flink's enableCheckpointing); the mode defaults to EXACTLY_ONCE. */
  enableCheckpointing(intervalMs: number, mode: CheckpointingMode = "EXACTLY_ONCE"): this {
    if (!Number.isFinite(intervalMs) || intervalMs < 10) throw new Error(`enableCheckpointing: expected an interval of at least 10 ms, got ${intervalMs}`);
    if (mode !== "EXACTLY_ONCE" && mode !== "AT_LEAST_ONCE") throw new Error(`enableCheckpointing: expected mode "EXACTLY_ONCE" or "AT_LEAST_ONCE", got ${JSON.stringify(mode)}`);
    this.settings.checkpointInterval = intervalMs;
    this.settings.checkpointingMode = mode;
    return this;
  }

  setJobName(name: string): this {
    this.settings.name = name;
    return this;
  }

  /** A non-parallel source of the given elements. */
  fromCollection<T>(items: Iterable<T>): DataStream<T> {
    return this.source({ type: "collection", items: [...items] }, "Collection Source", 1);
  }

  fromElements<T>(...items: T[]): DataStream<T> {
    return this.fromCollection(items);
  }

  /** Lines of a text file; parallel subtasks read disjoint byte ranges, split at line boundaries. */
  readTextFile(path: string): DataStream<string> {
    return this.source({ type: "textFile", path }, `Text File Source (${path})`, null);
  }

  /** The numbers from..to (inclusive), split between parallel subtasks. */
  fromSequence(from: number, to: number): DataStream<number> {
    if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || to < from) {
      throw new Error(`fromSequence: expected integers from <= to, got ${from}..${to}`);
    }
    return this.source({ type: "sequence", from, to }, "Sequence Source", null);
  }

  /**
   * A source described by a Source object, as Flink's fromSource(source, watermarkStrategy, sourceName), e.g.
   * `env.fromSource(NexmarkSource.events({ events: 1e6, seed: 1 }), strategy)`. With a watermark strategy the
   * source is followed by assignTimestampsAndWatermarks(strategy) (chained, so watermarks are per source split);
   * pass null (or nothing) for a stream without event time.
   */
  fromSource<T>(source: Source<T>, watermarkStrategy?: WatermarkStrategy<T> | null, sourceName?: string): DataStream<T> {
    // Checked by shape: the job's bundle has its own copy of the modules that make sources.
    if (typeof source !== "object" || source === null || source.kind !== "source" || typeof source.spec !== "object" || source.spec === null || typeof source.spec.type !== "string") {
      throw new Error("fromSource: expected a Source, e.g. NexmarkSource.events({ events: 1000000 })");
    }
    if (source.spec.type === "collection") throw new Error("fromSource: use fromCollection for collections");
    if (source.spec.type === "connector" && (typeof source.spec.connector !== "object" || source.spec.connector === null || typeof source.spec.connector.createReader !== "function")) {
      throw new Error("fromSource: a connector source needs a connector with createReader()");
    }
    // A connector that reads one stream of changes in one place (a replication slot) runs at parallelism 1.
    const nonParallel = source.spec.type === "connector" && source.nonParallel === true;
    const stream = this.source<T>(source.spec, sourceName ?? source.name, nonParallel ? 1 : null);
    return watermarkStrategy == null ? stream : stream.assignTimestampsAndWatermarks(watermarkStrategy);
  }

  /** @internal */
  addNode(node: NewNode, parallelism: number | null = null): PlanNode {
    const full = { ...node, id: this.nodes.length, parallelism, uid: null, chaining: true } as PlanNode;
    this.nodes.push(full);
    return full;
  }

  /** @internal The recorded plan. */
  getPlan(): Plan {
    return { nodes: this.nodes, settings: { ...this.settings } };
  }

  private source<T>(source: SourceSpec, name: string, parallelism: number | null): DataStream<T> {
    return new DataStream<T>(this, this.addNode({ kind: "source", source, name, inputs: [] }, parallelism));
  }
}

/** Settings every operator takes: parallelism, name, uid. */
class OperatorSettings {
  constructor(protected readonly node: PlanNode) {}

  /** @internal The plan node this stream or operator stands for. */
  get planNode(): PlanNode {
    return this.node;
  }

  setParallelism(parallelism: number): this {
    this.node.parallelism = positiveInt(parallelism, "setParallelism");
    return this;
  }

  name(name: string): this {
    this.node.name = name;
    return this;
  }

  /** Stable id of the operator, so its state can be matched across job versions. */
  uid(uid: string): this {
    this.node.uid = uid;
    return this;
  }

  /** Runs this operator in a task of its own: chained neither to its input nor to what follows. */
  disableChaining(): this {
    this.node.chaining = false;
    return this;
  }
}

export class DataStream<T> extends OperatorSettings {
  constructor(
    protected readonly env: StreamExecutionEnvironment,
    node: PlanNode,
  ) {
    super(node);
  }

  map<R>(fn: MapFunction<T, R>): DataStream<R> {
    return this.then("map", fn, "Map");
  }

  /**
   * Declares the type of this stream's records (as Flink's returns(TypeInformation)), e.g.
   * `.returns(Types.TUPLE(Types.STRING, Types.INT))`: they cross the network in that type's fixed binary layout, and
   * a record that does not match it fails the task, naming this operator and the field. Without it the type is
   * inferred from the first records, and records that do not fit it go as msgpack.
   */
  returns(type: TypeInformation<T>): this {
    if (this.node.kind === "keyBy" || this.node.kind === "partition" || this.node.kind === "union") {
      throw new Error(`returns: declare the type on the operator that produces the records, not on ${this.node.kind === "keyBy" ? "a keyBy" : this.node.kind === "union" ? "a union" : "a partitioning"}`);
    }
    this.node.returns = checkReturnsType(type);
    return this;
  }

  /** fn returns the values to emit (an array or any iterable). */
  flatMap<R>(fn: FlatMapFunction<T, R>): DataStream<R> {
    return this.then("flatMap", fn, "Flat Map");
  }

  filter(fn: FilterFunction<T>): DataStream<T> {
    return this.then("filter", fn, "Filter");
  }

  /** Partitions by key: records with equal keys (by value) go to the same subtask, by key group. */
  keyBy<K>(keySelector: (value: T) => K): KeyedStream<T, K> {
    const node = this.env.addNode({ kind: "keyBy", fn: keySelector, name: "Key By", inputs: [this.node.id] });
    return new KeyedStream<T, K>(this.env, node);
  }

  /**
   * Event time: each record gets a timestamp (the strategy's assigner, or the one it already has) and the
   * strategy's generator emits watermarks, periodically (pipeline.auto-watermark-interval) or per record.
   */
  assignTimestampsAndWatermarks(strategy: WatermarkStrategy<T>): DataStream<T> {
    if (typeof strategy !== "object" || strategy === null || strategy.kind !== "watermarkStrategy" || typeof strategy.createGenerator !== "function") {
      throw new Error("assignTimestampsAndWatermarks: expected a WatermarkStrategy (e.g. WatermarkStrategy.forBoundedOutOfOrderness(ms))");
    }
    const node = this.env.addNode({ kind: "assignTimestamps", strategy, name: "Timestamps/Watermarks", inputs: [this.node.id] });
    return new DataStream<T>(this.env, node);
  }

  /** The values this operator (a process function or a window) emitted to the side output `tag`. */
  getSideOutput<X>(tag: OutputTag<X>): DataStream<X> {
    if (typeof tag !== "object" || tag === null || tag.kind !== "outputTag" || typeof tag.id !== "string") throw new Error("getSideOutput: expected an OutputTag");
    if (this.node.kind !== "process" && this.node.kind !== "coProcess" && this.node.kind !== "broadcastProcess" && this.node.kind !== "window") throw new Error("getSideOutput: only the result of process() or of a window function has side outputs");
    const node = this.env.addNode({ kind: "sideOutput", tag: tag.id, name: `Side Output (${tag.id})`, inputs: [this.node.id] });
    return new DataStream<X>(this.env, node);
  }

  /**
   * Two inputs for one operator (as Flink's connect): map/flatMap/process get one method per input. Both streams
   * keyed (or keyBy(k1, k2) on the result): the operator's keyed state and timers are shared by both inputs per key.
   */
  connect<T2>(other: DataStream<T2>): ConnectedStreams<T, T2>;
  /** With a BroadcastStream (broadcast(descriptor...)): process(BroadcastProcessFunction), keyed on a KeyedStream. */
  connect<T2>(other: BroadcastStream<T2>): BroadcastConnectedStream<T, T2>;
  connect<T2>(other: DataStream<T2> | BroadcastStream<T2>): ConnectedStreams<T, T2> | BroadcastConnectedStream<T, T2> {
    if (typeof other === "object" && other !== null && (other as BroadcastStream<T2>).kind === "broadcastStream") {
      const b = other as BroadcastStream<T2>;
      return new BroadcastConnectedStream<T, T2>(this.env, this.node, b.planNode, b.stateNames);
    }
    if (!(typeof other === "object" && other !== null && typeof (other as DataStream<T2>).planNode === "object")) throw new Error("connect: expected a DataStream or a BroadcastStream");
    return new ConnectedStreams<T, T2>(this.env, this.node, (other as DataStream<T2>).planNode);
  }

  /** A window join (Flink's join): join(other).where(k1).equalTo(k2).window(assigner).apply((left, right) => value). */
  join<R>(other: DataStream<R>): TwoStreams<T, R> {
    return new TwoStreams<T, R>(this, other, "join");
  }

  /** Flink's coGroup: coGroup(other).where(k1).equalTo(k2).window(assigner).apply((lefts, rights, out) => ...). */
  coGroup<R>(other: DataStream<R>): TwoStreams<T, R> {
    return new TwoStreams<T, R>(this, other, "coGroup");
  }

  union(...others: DataStream<T>[]): DataStream<T> {
    const inputs = [this.node.id, ...others.map((o) => o.node.id)];
    return new DataStream<T>(this.env, this.env.addNode({ kind: "union", name: "Union", inputs }));
  }

  rebalance(): DataStream<T> {
    return this.partition("rebalance");
  }

  /** Every record to every consumer subtask; with MapStateDescriptors, a BroadcastStream for broadcast state. */
  broadcast(): DataStream<T>;
  broadcast(...descriptors: MapStateDescriptor<any, any>[]): BroadcastStream<T>;
  broadcast(...descriptors: MapStateDescriptor<any, any>[]): DataStream<T> | BroadcastStream<T> {
    if (descriptors.length === 0) return this.partition("broadcast");
    const names: string[] = [];
    for (const d of descriptors) {
      // Checked by shape: the job's bundle has its own copy of the state module.
      if (typeof d !== "object" || d === null || d.kind !== "map" || typeof d.name !== "string" || d.name.length === 0) {
        throw new Error("broadcast: expected MapStateDescriptors (new MapStateDescriptor(name)) for the broadcast state");
      }
      if (names.includes(d.name)) throw new Error(`broadcast: the state ${JSON.stringify(d.name)} is given twice`);
      names.push(d.name);
    }
    return new BroadcastStream<T>(this.partition("broadcast").planNode, names);
  }

  forward(): DataStream<T> {
    return this.partition("forward");
  }

  /** Round-robin to a subset of the consumers (pointwise, as Flink's rescale): no all-to-all connections. */
  rescale(): DataStream<T> {
    return this.partition("rescale");
  }

  /** Routes each record to partition(key(record), numPartitions), which must return 0..numPartitions-1. */
  partitionCustom<K>(partition: (key: K, numPartitions: number) => number, key: (value: T) => K): DataStream<T> {
    if (typeof partition !== "function" || typeof key !== "function") throw new Error("partitionCustom: expected a partitioner function and a key selector");
    const node = this.env.addNode({ kind: "partition", partitioner: "custom", custom: { partition, key }, name: "Custom Partition", inputs: [this.node.id] });
    return new DataStream<T>(this.env, node);
  }

  /** Prints each record on the stdout of the TaskManager that runs it ("n> " prefix when parallel). */
  print(prefix?: string): DataSink {
    return this.sink({ type: "print", prefix }, "Print to Std. Out");
  }

  /** One file at path at parallelism 1; a directory of files 1..n at parallelism n. */
  writeAsText(path: string): DataSink {
    return this.sink({ type: "textFile", path }, `Text File Sink (${path})`);
  }

  /**
   * Exactly-once row files in a directory, as Flink's FileSink: records go to in-progress files, become pending
   * at each checkpoint and visible (part-<subtask>-<attempt>-<txn>) when the checkpoint completes; a restore
   * commits what its checkpoint covered and deletes the rest. Without checkpointing, files appear at end of input.
   */
  sinkTo(sink: FileSinkSpec | ConnectorSinkSpec): DataSink {
    // Checked by shape: the job's bundle has its own copy of this module, so instanceof would not hold.
    if (typeof sink === "object" && sink !== null && sink.kind === "connectorSink") {
      const c = sink.connector;
      if (typeof c !== "object" || c === null || typeof c.createWriter !== "function" || typeof c.name !== "string") throw new Error("sinkTo: a connector sink needs a connector with createWriter()");
      return this.sink({ type: "connector", connector: c }, c.name);
    }
    if (typeof sink !== "object" || sink === null || sink.kind !== "fileSink" || typeof sink.path !== "string") {
      throw new Error("sinkTo: expected FileSink.forRowFormat(dir).build(), or a connector sink such as PostgresSink.exactlyOnceSink(...)");
    }
    // Its file names are per subtask, attempt and checkpoint: two file sinks of a job in one directory would collide.
    const taken = this.env.getPlan().nodes.some((n) => n.kind === "sink" && n.sink.type === "fileSink" && n.sink.path === sink.path);
    if (taken) throw new Error(`sinkTo: another file sink of this job already writes to ${sink.path}; give each file sink a directory of its own`);
    if (sink.bucketAssigner !== undefined && typeof sink.bucketAssigner !== "function") throw new Error("sinkTo: a file sink's bucket assigner must be a function of the record");
    return this.sink({ type: "fileSink", path: sink.path, ...(sink.bucketAssigner ? { bucketAssigner: sink.bucketAssigner } : {}) }, `File Sink (${sink.path})`);
  }

  /** A function per record, or an object with open(ctx) / invoke(value) / close() (called at end of input). */
  addSink(fn: SinkFunction<T>): DataSink {
    if (typeof fn !== "function" && (typeof fn !== "object" || fn === null || typeof fn.invoke !== "function")) {
      throw new Error("addSink: expected a function or an object with an invoke(value) method");
    }
    return this.sink({ type: "function", fn }, "Sink");
  }

  override setParallelism(parallelism: number): this {
    if (this.node.kind === "source" && this.node.source.type === "collection" && parallelism !== 1) {
      throw new Error("setParallelism: a collection source is non-parallel (parallelism 1)");
    }
    if (this.node.kind === "source" && this.node.source.type === "connector" && this.node.parallelism === 1 && parallelism !== 1) {
      throw new Error(`setParallelism: ${this.node.name} is non-parallel (parallelism 1)`);
    }
    return super.setParallelism(parallelism);
  }

  /** Starts a new chain at this operator (as Flink's): it never runs in its input's task; what follows may chain to it. */
  startNewChain(): this {
    this.node.startsChain = true;
    return this;
  }

  protected then<R>(kind: "map" | "flatMap" | "filter", fn: any, name: string, keyNode?: number): DataStream<R> {
    if (typeof fn !== "function" && (typeof fn !== "object" || fn === null || typeof fn[kind] !== "function")) {
      throw new Error(`${kind}: expected a function or an object with a ${kind}(value) method`);
    }
    const node = this.env.addNode({ kind, fn, name, inputs: [this.node.id], ...(keyNode !== undefined ? { keyNode } : {}) });
    return new DataStream<R>(this.env, node);
  }

  /** AsyncDataStream's operator (use AsyncDataStream.orderedWait / unorderedWait). */
  asyncWait<R>(fn: AsyncFunction<T, R>, ordered: boolean, timeoutMs: number, capacity: number, retry: AsyncRetryStrategy): DataStream<R> {
    const what = ordered ? "AsyncDataStream.orderedWait" : "AsyncDataStream.unorderedWait";
    checkAsyncFunction(fn, what);
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Error(`${what}: expected a time-out in milliseconds > 0, got ${timeoutMs}`);
    if (!Number.isSafeInteger(capacity) || capacity < 1) throw new Error(`${what}: expected a capacity >= 1, got ${capacity}`);
    if (typeof retry !== "object" || retry === null || retry.kind !== "asyncRetryStrategy") throw new Error(`${what}: expected a retry strategy from AsyncRetryStrategies`);
    const node = this.env.addNode({ kind: "async", fn, ordered, timeoutMs, capacity, retry, name: ordered ? "Async Wait (ordered)" : "Async Wait (unordered)", inputs: [this.node.id] });
    return new DataStream<R>(this.env, node);
  }

  private partition(partitioner: PartitionSpec): DataStream<T> {
    return new DataStream<T>(this.env, this.env.addNode({ kind: "partition", partitioner, name: partitioner, inputs: [this.node.id] }));
  }

  private sink(sink: SinkSpec, name: string): DataSink {
    return new DataSink(this.env.addNode({ kind: "sink", sink, name, inputs: [this.node.id] }));
  }
}

export class KeyedStream<T, K> extends DataStream<T> {
  /** Flink's interval join (event time): intervalJoin(other).between(lower, upper).process((left, right, ctx, out) => ...). */
  intervalJoin<R>(other: KeyedStream<R, K>): IntervalJoin<T, R, K> {
    if ((other as { planNode?: PlanNode } | null)?.planNode?.kind !== "keyBy") throw new Error("intervalJoin: expected another keyed stream (keyBy on both sides)");
    return new IntervalJoin<T, R, K>(this, other);
  }

  // On a keyed stream, functions may use keyed state (scoped to each record's key).
  override map<R>(fn: MapFunction<T, R>): DataStream<R> {
    return this.then("map", fn, "Map", this.node.id);
  }

  override flatMap<R>(fn: FlatMapFunction<T, R>): DataStream<R> {
    return this.then("flatMap", fn, "Flat Map", this.node.id);
  }

  override filter(fn: FilterFunction<T>): DataStream<T> {
    return this.then("filter", fn, "Filter", this.node.id);
  }

  /** A KeyedProcessFunction: processElement(value, ctx, out) with keyed state through open(ctx). */
  process<R>(fn: KeyedProcessFunction<K, T, R>): DataStream<R> {
    if (typeof fn !== "object" || fn === null || typeof fn.processElement !== "function") {
      throw new Error("process: expected an object with a processElement(value, ctx, out) method");
    }
    return new DataStream<R>(this.env, this.env.addNode({ kind: "process", fn, keyNode: this.node.id, name: "Keyed Process", inputs: [this.node.id] }));
  }

  /** Windows per key: tumbling, sliding and session windows in event or processing time. */
  window(assigner: WindowAssigner): WindowedStream<T, K> {
    if (typeof assigner !== "object" || assigner === null || assigner.kind !== "windowAssigner") {
      throw new Error("window: expected a window assigner, e.g. TumblingEventTimeWindows.of(10_000)");
    }
    return new WindowedStream<T, K>(this.env, this.node, assigner);
  }

  /** Count windows per key: every `size` records (tumbling), or the last `size` records every `slide` records. */
  countWindow(size: number, slide?: number): WindowedStream<T, K> {
    if (!Number.isSafeInteger(size) || size < 1) throw new Error(`countWindow: expected a size >= 1, got ${size}`);
    if (slide !== undefined && (!Number.isSafeInteger(slide) || slide < 1)) throw new Error(`countWindow: expected a slide >= 1, got ${slide}`);
    return new WindowedStream<T, K>(this.env, this.node, { kind: "windowAssigner", type: "count", size, slide: slide ?? size });
  }

  /** Rolling reduce per key: emits the new aggregate after every record (only the final one in batch mode). */
  reduce(fn: (a: T, b: T) => T): DataStream<T> {
    if (typeof fn !== "function") throw new Error(`reduce: expected a function, got ${typeof fn}`);
    return new DataStream<T>(this.env, this.env.addNode({ kind: "reduce", fn, keyNode: this.node.id, name: "Keyed Reduce", inputs: [this.node.id] }));
  }

  /** Rolling sum of a field (tuple index or property name); other fields are kept from the first record. */
  sum(field: number | string): DataStream<T> {
    const add = (a: any, b: any) => {
      if (typeof a !== "object" || a === null) return (a as number) + (b as number);
      const out = Array.isArray(a) ? a.slice() : { ...a };
      out[field] = out[field] + b[field];
      return out;
    };
    // sumField lets the runtime add in place instead of copying the record for every input.
    const node = this.env.addNode({ kind: "reduce", fn: add, keyNode: this.node.id, sumField: field, name: `Keyed Sum (${field})`, inputs: [this.node.id] });
    return new DataStream<T>(this.env, node);
  }
}

/**
 * Two streams connected for one two-input operator (as Flink's ConnectedStreams). Keyed when both were keyed
 * streams or after keyBy(k1, k2): then records of equal keys from both inputs meet in one subtask and share the
 * operator's keyed state and timers. Watermarks: the operator's event time is the minimum of both inputs'.
 */
export class ConnectedStreams<IN1, IN2> {
  constructor(
    private readonly env: StreamExecutionEnvironment,
    private readonly first: PlanNode,
    private readonly second: PlanNode,
  ) {}

  /** Whether both inputs are keyed (their keyBy nodes are the operator's inputs). */
  get isKeyed(): boolean {
    return this.first.kind === "keyBy" && this.second.kind === "keyBy";
  }

  /** Keys both inputs, the first by key1 and the second by key2 (the keys must be comparable by value). */
  keyBy<K>(key1: (value: IN1) => K, key2: (value: IN2) => K): ConnectedStreams<IN1, IN2> {
    if (typeof key1 !== "function" || typeof key2 !== "function") throw new Error("ConnectedStreams.keyBy: expected two key selectors (key1, key2)");
    const k1 = this.env.addNode({ kind: "keyBy", fn: key1, name: "Key By", inputs: [this.first.id] });
    const k2 = this.env.addNode({ kind: "keyBy", fn: key2, name: "Key By", inputs: [this.second.id] });
    return new ConnectedStreams<IN1, IN2>(this.env, k1, k2);
  }

  /** A CoMapFunction: { map1(value1), map2(value2) }, each returning one value. */
  map<R>(fn: CoMapFunction<IN1, IN2, R>): DataStream<R> {
    return this.make("coMap", fn, ["map1", "map2"], "Co-Map");
  }

  /** A CoFlatMapFunction: { flatMap1(value1), flatMap2(value2) }, each returning the values to emit. */
  flatMap<R>(fn: CoFlatMapFunction<IN1, IN2, R>): DataStream<R> {
    return this.make("coFlatMap", fn, ["flatMap1", "flatMap2"], "Co-Flat Map");
  }

  /** A CoProcessFunction (KeyedCoProcessFunction when keyed): processElement1/2(value, ctx, out), onTimer when keyed. */
  process<R, K = unknown>(fn: CoProcessFunction<IN1, IN2, R, K>): DataStream<R> {
    if (!this.isKeyed && typeof fn === "object" && fn !== null && typeof fn.onTimer === "function") {
      throw new Error("Co-Process: onTimer needs keyed connected streams (connect two keyed streams, or keyBy(key1, key2)); timers are per key");
    }
    return this.make("coProcess", fn, ["processElement1", "processElement2"], this.isKeyed ? "Keyed Co-Process" : "Co-Process");
  }

  private make<R>(kind: "coMap" | "coFlatMap" | "coProcess", fn: any, methods: [string, string], name: string): DataStream<R> {
    if (typeof fn !== "object" || fn === null) throw new Error(`${name}: expected an object with ${methods[0]} and ${methods[1]} methods, got ${fn === null ? "null" : typeof fn}`);
    const missing = methods.filter((m) => typeof fn[m] !== "function");
    if (missing.length > 0) throw new Error(`${name}: expected an object with ${methods[0]} and ${methods[1]} methods (missing ${missing.join(" and ")})`);
    const keyNodes: [number, number] | undefined = this.isKeyed ? [this.first.id, this.second.id] : undefined;
    const node = this.env.addNode({ kind, fn, name, inputs: [this.first.id, this.second.id], ...(keyNodes ? { keyNodes } : {}) });
    return new DataStream<R>(this.env, node);
  }
}

/** A stream broadcast with the descriptors of its broadcast state (as Flink's BroadcastStream): connect it to a stream. */
export class BroadcastStream<T> {
  readonly kind = "broadcastStream";
  declare readonly _type?: T;
  constructor(
    /** @internal The broadcast partition node. */
    readonly planNode: PlanNode,
    /** The broadcast states' names (their MapStateDescriptors'). */
    readonly stateNames: string[],
  ) {}
}

/**
 * A stream connected with a BroadcastStream (as Flink's BroadcastConnectedStream): process(fn) with a
 * KeyedBroadcastProcessFunction when the stream is keyed, else a BroadcastProcessFunction. Every subtask gets every
 * broadcast element and keeps its own copy of the broadcast state, which checkpoints and restores at any parallelism.
 */
export class BroadcastConnectedStream<IN, BC> {
  constructor(
    private readonly env: StreamExecutionEnvironment,
    private readonly input: PlanNode,
    private readonly broadcastNode: PlanNode,
    private readonly stateNames: string[],
  ) {}

  process<R, K = unknown>(fn: BroadcastProcessFunction<IN, BC, R, K>): DataStream<R> {
    const keyed = this.input.kind === "keyBy";
    const name = keyed ? "Keyed Broadcast Process" : "Broadcast Process";
    if (typeof fn !== "object" || fn === null) throw new Error(`${name}: expected an object with processElement and processBroadcastElement methods, got ${fn === null ? "null" : typeof fn}`);
    const missing = ["processElement", "processBroadcastElement"].filter((m) => typeof (fn as any)[m] !== "function");
    if (missing.length > 0) throw new Error(`${name}: expected an object with processElement and processBroadcastElement methods (missing ${missing.join(" and ")})`);
    if (!keyed && typeof fn.onTimer === "function") throw new Error(`${name}: onTimer needs a keyed stream (keyBy before connect); timers are per key`);
    const node = this.env.addNode({
      kind: "broadcastProcess",
      fn,
      name,
      inputs: [this.input.id, this.broadcastNode.id],
      broadcastStates: [...this.stateNames],
      ...(keyed ? { keyNode: this.input.id } : {}),
    });
    return new DataStream<R>(this.env, node);
  }
}

/** A keyed stream cut into windows (as Flink's WindowedStream); a window function makes it a stream again. */
export class WindowedStream<T, K> {
  private lateness = 0;
  private lateTag: string | null = null;
  private customTrigger: Trigger<T> | null = null;
  private customEvictor: Evictor<T> | null = null;
  constructor(
    private readonly env: StreamExecutionEnvironment,
    private readonly keyed: PlanNode,
    private readonly assigner: WindowAssigner,
  ) {}

  /**
   * Event time: records up to `ms` behind the watermark still update their windows (each late one fires again).
   * Processing-time windows accept it and ignore it, as in Flink (nothing is late in processing time).
   */
  allowedLateness(ms: number): this {
    if (!Number.isSafeInteger(ms) || ms < 0) throw new Error(`allowedLateness: expected an integer number of milliseconds >= 0, got ${ms}`);
    if (this.assigner.type === "count") throw new Error("allowedLateness: count windows have no lateness");
    if (this.assigner.time === "event") this.lateness = ms;
    return this;
  }

  /** When windows fire and purge (Flink's Trigger; built-ins in api/triggers.ts): replaces the assigner's default. */
  trigger(trigger: Trigger<T>): this {
    checkTrigger(trigger, "trigger");
    if (this.assigner.type === "count") throw new Error("trigger: count windows have their own trigger; use a tumbling or sliding window with CountTrigger");
    if (this.assigner.type === "session" && trigger.canMerge?.() !== true) throw new Error("trigger: session windows merge, so their trigger needs canMerge() returning true and onMerge");
    this.customTrigger = trigger;
    return this;
  }

  /** Removes elements of a window before and/or after the window function (Flink's Evictor: CountEvictor, TimeEvictor). */
  evictor(evictor: Evictor<T>): this {
    checkEvictor(evictor, "evictor");
    if (this.assigner.type === "count") throw new Error("evictor: count windows keep their own elements; use a tumbling or sliding window with an evictor");
    this.customEvictor = evictor;
    return this;
  }

  /** Records too late for every window they belong to go to this side output instead of being dropped. */
  sideOutputLateData(tag: OutputTag<T>): this {
    if (typeof tag !== "object" || tag === null || tag.kind !== "outputTag") throw new Error("sideOutputLateData: expected an OutputTag");
    this.lateTag = tag.id;
    return this;
  }

  /** Incremental reduce per window; with a process function it gets the single reduced value and the window. */
  reduce(fn: (a: T, b: T) => T): DataStream<T>;
  reduce<R = any>(fn: (a: T, b: T) => T, process: ProcessWindowFunction<K, T, R>): DataStream<R>;
  reduce<R>(fn: (a: T, b: T) => T, process?: ProcessWindowFunction<K, T, R>): DataStream<R> {
    if (typeof fn !== "function") throw new Error("reduce: expected a function (a, b) => value");
    return this.make({ type: "reduce", reduce: fn, process: checkProcess(process, true) }, "Reduce");
  }

  /** Incremental aggregation per window (session windows need merge); an optional process function sees the result. */
  aggregate<ACC, V>(agg: WindowAggregateFunction<T, ACC, V>): DataStream<V>;
  aggregate<ACC, V, R = any>(agg: WindowAggregateFunction<T, ACC, V>, process: ProcessWindowFunction<K, V, R>): DataStream<R>;
  aggregate<ACC, V, R>(agg: WindowAggregateFunction<T, ACC, V>, process?: ProcessWindowFunction<K, V, R>): DataStream<R> {
    for (const f of ["createAccumulator", "add", "getResult"] as const) {
      if (typeof agg?.[f] !== "function") throw new Error(`aggregate: expected an object with createAccumulator, add and getResult (missing ${f})`);
    }
    if (this.assigner.type === "session" && typeof agg.merge !== "function") throw new Error("aggregate: session windows merge, so the aggregate function needs merge(a, b)");
    return this.make({ type: "aggregate", aggregate: agg, process: checkProcess(process, true) }, "Aggregate");
  }

  /** All elements of a window at once: fn(key, context, elements, out) or { process(key, context, elements, out) }. */
  process<R = any>(fn: ProcessWindowFunction<K, T, R>): DataStream<R> {
    return this.make({ type: "process", process: checkProcess(fn, false)! }, "Process");
  }

  private make<R>(fn: WindowFunctionSpec, what: string): DataStream<R> {
    const a = this.assigner;
    const name = a.type === "count" ? `Count Window (${a.size}${a.slide !== a.size ? `, ${a.slide}` : ""}) ${what}` : `${a.time === "event" ? "Event" : "Processing"}-Time ${a.type[0]!.toUpperCase()}${a.type.slice(1)} Window ${what}`;
    const custom = { ...(this.customTrigger ? { trigger: this.customTrigger } : {}), ...(this.customEvictor ? { evictor: this.customEvictor } : {}) };
    const node = this.env.addNode({ kind: "window", keyNode: this.keyed.id, assigner: a, fn, allowedLateness: this.lateness, lateTag: this.lateTag, ...custom, name, inputs: [this.keyed.id] });
    return new DataStream<R>(this.env, node);
  }
}

function checkProcess(fn: ProcessWindowFunction<any, any, any> | undefined, optional: boolean): ProcessWindowFunction<any, any, any> | null {
  if (fn === undefined && optional) return null;
  if (typeof fn !== "function" && (typeof fn !== "object" || fn === null || typeof (fn as any).process !== "function")) {
    throw new Error("window process function: expected a function (key, context, elements, out) or an object with process(key, context, elements, out)");
  }
  return fn;
}

export class DataSink extends OperatorSettings {}

/** What fromSource takes: a description of a replayable, splittable source (e.g. NexmarkSource.events(...)). */
export interface Source<T> {
  readonly kind: "source";
  readonly spec: SourceSpec;
  /** Default operator name. */
  readonly name: string;
  /** A connector source that must run at parallelism 1. */
  readonly nonParallel?: boolean;
  /** The records' type (never set). */
  readonly _type?: T;
}

/** What sinkTo takes for a connector (PostgresSink..., JetStreamSink...). */
export interface ConnectorSinkSpec {
  readonly kind: "connectorSink";
  readonly connector: ConnectorSink;
}

/**
 * Async I/O (Flink's AsyncDataStream): fn is called per record and returns a promise of its outputs; up to `capacity`
 * requests are in flight (then the stream back-pressures); a request not done within timeoutMs (over all its attempts)
 * fails the task, or gives fn.timeout(input)'s outputs; retries by the strategy. Requests in flight at a checkpoint
 * are issued again after a restore from it.
 */
export const AsyncDataStream = {
  orderedWait<IN, OUT>(stream: DataStream<IN>, fn: AsyncFunction<IN, OUT>, timeoutMs: number, capacity = 100): DataStream<OUT> {
    return stream.asyncWait(fn, true, timeoutMs, capacity, AsyncRetryStrategies.NO_RETRY);
  },
  unorderedWait<IN, OUT>(stream: DataStream<IN>, fn: AsyncFunction<IN, OUT>, timeoutMs: number, capacity = 100): DataStream<OUT> {
    return stream.asyncWait(fn, false, timeoutMs, capacity, AsyncRetryStrategies.NO_RETRY);
  },
  orderedWaitWithRetry<IN, OUT>(stream: DataStream<IN>, fn: AsyncFunction<IN, OUT>, timeoutMs: number, capacity: number, retry: AsyncRetryStrategy): DataStream<OUT> {
    return stream.asyncWait(fn, true, timeoutMs, capacity, retry);
  },
  unorderedWaitWithRetry<IN, OUT>(stream: DataStream<IN>, fn: AsyncFunction<IN, OUT>, timeoutMs: number, capacity: number, retry: AsyncRetryStrategy): DataStream<OUT> {
    return stream.asyncWait(fn, false, timeoutMs, capacity, retry);
  },
};

/** What sinkTo takes: FileSink.forRowFormat(dir).build(). */
export class FileSinkSpec {
  readonly kind = "fileSink";
  constructor(
    readonly path: string,
    /** Records go into subdirectories of path named by this (a relative path, e.g. "dt=2023-11-14/hm=22:13"). */
    readonly bucketAssigner?: (record: any) => string,
  ) {}
}

interface FileSinkBuilder {
  /** Flink's withBucketAssigner: each record goes into the subdirectory named by assigner(record). */
  withBucketAssigner(assigner: (record: any) => string): FileSinkBuilder;
  build(): FileSinkSpec;
}

export const FileSink = {
  forRowFormat(dir: string): FileSinkBuilder {
    if (typeof dir !== "string" || dir.length === 0) throw new Error("FileSink.forRowFormat: expected a directory path");
    const builder = (assigner?: (record: any) => string): FileSinkBuilder => ({
      withBucketAssigner(a) {
        if (typeof a !== "function") throw new Error("FileSink.withBucketAssigner: expected a function (record) => bucket id");
        return builder(a);
      },
      build: () => new FileSinkSpec(dir, assigner),
    });
    return builder();
  },
};

function positiveInt(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what}: expected an integer >= 1, got ${n}`);
  return n;
}

/** The shape of a job module's default export. */
export type JobBuilder = (env: StreamExecutionEnvironment, args: string[]) => void | Promise<void>;
