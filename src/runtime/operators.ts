// The operators of a chain. Each pushes its output to the next one's process(); the chain's tail pushes
// to the task's record writers. Records move between chained operators as plain objects (no copy).
import * as fs from "node:fs";
import * as path from "node:path";
import type { PlanNode, RichFunction, RuntimeContext } from "../api/plan.ts";
import { canonicalKey } from "../state/key-groups.ts";
import { ValueStateDescriptor, type BroadcastState, type ValueState } from "../state/api.ts";
import type { KeyedStateBackend } from "../state/keyed-backend.ts";
import type { OperatorStateStore } from "../state/operator-state.ts";
import { BucketedFileSink, TwoPhaseCommitFileSink } from "./file-sink.ts";
import { formatRecord } from "./record-format.ts";
import { InternalTimerService, TimestampsAndWatermarksOperator, type Timer } from "./event-time.ts";
import type { ChainOutput, Collector, Operator, OperatorContext } from "./operator.ts";
import { WindowOperator } from "./windows.ts";
import { AsyncWaitOperator } from "./async-wait.ts";

const NO_CHAIN: ChainOutput = { watermark() {}, idle() {}, side() {} };

/** The RuntimeContext a user function gets; keyed state only for functions on a keyed stream. */
export function runtimeContext(ctx: OperatorContext, keyed: boolean, what: string): RuntimeContext {
  const backend = () => {
    if (!keyed || !ctx.keyed) throw new Error(`${what}: keyed state is only available on a keyed stream (call keyBy() first)`);
    return ctx.keyed;
  };
  return {
    subtaskIndex: ctx.subtaskIndex,
    parallelism: ctx.parallelism,
    taskName: ctx.taskName,
    getState: (d) => backend().getState(d),
    getListState: (d) => backend().getListState(d),
    getMapState: (d) => backend().getMapState(d),
    getReducingState: (d) => backend().getReducingState(d),
    getAggregatingState: (d) => backend().getAggregatingState(d),
    getOperatorStateStore: () => ctx.operatorState,
  };
}

/** The key selector of a keyed node, and a function that scopes state to a record's key. */
function keyScope(ctx: OperatorContext, keyNodeId: number | undefined, what: string): ((r: unknown) => void) | null {
  if (keyNodeId === undefined) return null;
  const keyNode = ctx.node(keyNodeId);
  if (keyNode.kind !== "keyBy") throw new Error(`${what} is not on a keyed stream`);
  const keyed = ctx.keyed;
  if (!keyed) throw new Error(`${what}: the task has no keyed state backend`);
  const key = keyNode.fn;
  return (r) => keyed.setCurrentKey(key(r));
}

function userFunction(fn: any, method: string): { call: (v: unknown) => any; rich: RichFunction | null } {
  if (typeof fn === "function") return { call: fn, rich: null };
  return { call: (v) => fn[method](v), rich: fn };
}

export function createOperator(node: PlanNode, ctx: OperatorContext, out: Collector, chain: ChainOutput = NO_CHAIN): Operator {
  switch (node.kind) {
    case "map":
    case "filter":
    case "flatMap": {
      const { call, rich } = userFunction(node.fn, node.kind);
      const scope = keyScope(ctx, node.keyNode, node.name);
      const open = rich?.open ? () => rich.open!(runtimeContext(ctx, node.keyNode !== undefined, node.name)) : undefined;
      const endInput = rich?.close ? () => rich.close!() : undefined;
      const apply =
        node.kind === "map"
          ? (r: unknown) => out(call(r))
          : node.kind === "filter"
            ? (r: unknown) => void (call(r) && out(r))
            : (r: unknown) => {
                const produced = call(r);
                if (produced == null || typeof produced[Symbol.iterator] !== "function") {
                  throw new TypeError(`flatMap function returned ${produced === null ? "null" : typeof produced}, expected an array or iterable`);
                }
                for (const x of produced) out(x);
              };
      const process = scope ? (r: unknown) => (scope(r), apply(r)) : apply;
      return { open, process, endInput };
    }
    case "process":
      return keyedProcess(node, ctx, out, chain);
    case "coMap":
    case "coFlatMap":
    case "coProcess":
      return twoInput(node, ctx, out, chain);
    case "broadcastProcess":
      return broadcastProcess(node, ctx, out, chain);
    case "assignTimestamps":
      return new TimestampsAndWatermarksOperator(node, ctx.time, out, chain);
    case "window":
      return new WindowOperator(node, ctx, out, chain);
    case "async":
      return new AsyncWaitOperator(node, ctx, out, chain);
    case "sideOutput":
      // The operator before it routes only the values of this tag here (see StreamTask's chain wiring).
      return { process: out };
    case "reduce": {
      const keyNode = ctx.node(node.keyNode);
      if (keyNode.kind !== "keyBy" || !ctx.keyed) throw new Error(`reduce node ${node.id} is not keyed`);
      // Its own backend holds only its state (stored under the operator's id), so a fixed name is enough.
      const state = ctx.keyed.getState<any>(new ValueStateDescriptor("reduce"));
      return new KeyedAggregation(ctx.keyed, keyNode.fn, state, node.fn, node.sumField, ctx.runtimeMode === "batch", out, ctx.objectReuse === true);
    }
    case "sink":
      return createSink(node, ctx);
    default:
      throw new Error(`plan node ${node.id} (${node.kind}) cannot run as an operator`);
  }
}

/**
 * The context, collector and timers a process function gets (KeyedProcessFunction, CoProcessFunction): with a keyed
 * backend, the current key and timers (InternalTimerService, checkpointed in "__timers") that call onTimer; without
 * one (non-keyed CoProcessFunction), registering a timer fails naming the operator.
 */
function processContext(
  name: string,
  fn: { onTimer?(ts: number, ctx: any, out: any): void } & object,
  ctx: OperatorContext,
  keyed: KeyedStateBackend | null,
  out: Collector,
  chain: ChainOutput,
  extra: Record<string, unknown> = {},
) {
  const time = ctx.time;
  const collector = {
    collect: (v: unknown) => out(v),
    // Output with a timestamp of its own (an interval join's pair carries the later of its two), as Flink's
    // TimestampedCollector.setAbsoluteTimestamp.
    collectWithTimestamp: (v: unknown, ts: number) => {
      const saved = time.ts;
      time.ts = ts;
      out(v);
      time.ts = saved;
    },
  };
  let domain: "EVENT_TIME" | "PROCESSING_TIME" = "EVENT_TIME";
  let watermark = -Infinity;
  const onTimer = (t: Timer) => {
    if (typeof fn.onTimer !== "function") return;
    domain = t.domain === 0 ? "EVENT_TIME" : "PROCESSING_TIME";
    time.ts = t.domain === 0 ? t.ts : null;
    fn.onTimer(t.ts, context, collector);
  };
  const timers = keyed ? new InternalTimerService(keyed, ctx, "__timers", onTimer) : null;
  const checkTs = (ts: number, what: string) => {
    if (typeof ts !== "number" || Number.isNaN(ts)) throw new Error(`${name}: ${what} expects a timestamp in milliseconds, got ${String(ts)}`);
    return ts;
  };
  const keyedTimers = (what: string) => {
    if (!timers) throw new Error(`${name}: ${what}: timers need keyed connected streams (connect two keyed streams, or keyBy(key1, key2))`);
    return timers;
  };
  const service = {
    currentProcessingTime: () => Date.now(),
    currentWatermark: () => (timers ? timers.currentWatermark : watermark),
    registerEventTimeTimer: (ts: number) => keyedTimers("registerEventTimeTimer").register(0, checkTs(ts, "registerEventTimeTimer")),
    deleteEventTimeTimer: (ts: number) => keyedTimers("deleteEventTimeTimer").delete(0, ts),
    registerProcessingTimeTimer: (ts: number) => keyedTimers("registerProcessingTimeTimer").register(1, checkTs(ts, "registerProcessingTimeTimer")),
    deleteProcessingTimeTimer: (ts: number) => keyedTimers("deleteProcessingTimeTimer").delete(1, ts),
  };
  const context = {
    getCurrentKey: () => {
      if (!keyed) throw new Error(`${name}: getCurrentKey() needs keyed connected streams`);
      return keyed.getCurrentKey();
    },
    timestamp: () => time.ts,
    timerService: () => service,
    output: (tag: { id: string }, value: unknown) => chain.side(tag.id, value),
    timeDomain: () => domain,
    ...extra,
  };
  const lifecycle: Pick<Operator, "processWatermark" | "snapshotState" | "dispose"> = {
    processWatermark(wm) {
      if (timers) timers.advanceWatermark(wm);
      else watermark = wm;
      chain.watermark(wm);
    },
    snapshotState: () => timers?.snapshot(),
    dispose: () => timers?.dispose(),
  };
  return { context, collector, lifecycle };
}

/** A KeyedProcessFunction with timers (InternalTimerService) and side outputs. */
function keyedProcess(node: Extract<PlanNode, { kind: "process" }>, ctx: OperatorContext, out: Collector, chain: ChainOutput): Operator {
  const fn = node.fn;
  const keyNode = ctx.node(node.keyNode);
  if (keyNode.kind !== "keyBy" || !ctx.keyed) throw new Error(`${node.name} is not on a keyed stream`);
  const keyed = ctx.keyed;
  const key = keyNode.fn;
  const { context, collector, lifecycle } = processContext(node.name, fn, ctx, keyed, out, chain);
  return {
    open: fn.open ? () => fn.open!(runtimeContext(ctx, true, node.name)) : undefined,
    process(r) {
      keyed.setCurrentKey(key(r));
      fn.processElement(r, context, collector);
    },
    ...lifecycle,
    endInput: fn.close ? () => fn.close!() : undefined,
  };
}

/**
 * A two-input operator (connect): process() takes the first input's records, process2() the second's (the task
 * knows each input channel's input). Keyed, each side's key selector sets the shared backend's current key.
 */
function twoInput(node: Extract<PlanNode, { kind: "coMap" | "coFlatMap" | "coProcess" }>, ctx: OperatorContext, out: Collector, chain: ChainOutput): Operator {
  const fn = node.fn;
  let keyed: KeyedStateBackend | null = null;
  let keys: [(r: any) => unknown, (r: any) => unknown] | null = null;
  if (node.keyNodes) {
    const [a, b] = node.keyNodes.map((id) => ctx.node(id));
    if (a?.kind !== "keyBy" || b?.kind !== "keyBy" || !ctx.keyed) throw new Error(`${node.name} is not on keyed connected streams`);
    keyed = ctx.keyed;
    keys = [a.fn, b.fn];
  }
  let p1: (r: unknown) => void;
  let p2: (r: unknown) => void;
  let lifecycle: Partial<Operator> = {};
  if (node.kind === "coMap") {
    p1 = (r) => out(fn.map1(r));
    p2 = (r) => out(fn.map2(r));
  } else if (node.kind === "coFlatMap") {
    const emitAll = (produced: any, method: string) => {
      if (produced == null || typeof produced[Symbol.iterator] !== "function") {
        throw new TypeError(`${node.name}: ${method} returned ${produced === null ? "null" : typeof produced}, expected an array or iterable`);
      }
      for (const x of produced) out(x);
    };
    p1 = (r) => emitAll(fn.flatMap1(r), "flatMap1");
    p2 = (r) => emitAll(fn.flatMap2(r), "flatMap2");
  } else {
    const pc = processContext(node.name, fn, ctx, keyed, out, chain);
    const { context, collector } = pc;
    lifecycle = pc.lifecycle;
    p1 = (r) => fn.processElement1(r, context, collector);
    p2 = (r) => fn.processElement2(r, context, collector);
  }
  if (keyed && keys) {
    const [k1, k2] = keys;
    const b = keyed;
    const [a1, a2] = [p1, p2];
    p1 = (r) => (b.setCurrentKey(k1(r)), a1(r));
    p2 = (r) => (b.setCurrentKey(k2(r)), a2(r));
  }
  return {
    open: fn.open ? () => fn.open!(runtimeContext(ctx, keyed !== null, node.name)) : undefined,
    process: p1,
    process2: p2,
    ...lifecycle,
    endInput: fn.close ? () => fn.close!() : undefined,
  };
}

/** A broadcast state as processElement sees it: reads only. */
function readOnly(state: BroadcastState<unknown, unknown>, name: string, operator: string): BroadcastState<unknown, unknown> {
  const refuse = () => {
    throw new Error(`${operator}: the broadcast state "${name}" is read-only in processElement and onTimer (write it in processBroadcastElement)`);
  };
  return {
    get: (k) => state.get(k),
    contains: (k) => state.contains(k),
    entries: () => state.entries(),
    keys: () => state.keys(),
    values: () => state.values(),
    isEmpty: () => state.isEmpty(),
    put: refuse,
    putAll: refuse,
    remove: refuse,
    clear: refuse,
  };
}

/**
 * connect(broadcastStream).process(fn): process() takes the stream's records (processElement, broadcast state
 * read-only; keyed: keyed state and timers), process2() the broadcast records (processBroadcastElement, broadcast
 * state writable, applyToKeyedState over every key of this subtask). Broadcast state is the operator's broadcast
 * state (OperatorStateStore): every subtask holds a copy, and a restore at any parallelism gives each a copy.
 */
function broadcastProcess(node: Extract<PlanNode, { kind: "broadcastProcess" }>, ctx: OperatorContext, out: Collector, chain: ChainOutput): Operator {
  // The contexts are built loosely here; their public shapes are BroadcastReadOnlyContext and BroadcastContext.
  const fn: Record<string, any> & { onTimer?(ts: number, ctx: any, out: any): void } = node.fn;
  let keyed: KeyedStateBackend | null = null;
  let key: ((r: any) => unknown) | null = null;
  if (node.keyNode !== undefined) {
    const keyNode = ctx.node(node.keyNode);
    if (keyNode.kind !== "keyBy" || !ctx.keyed) throw new Error(`${node.name} is not on a keyed stream`);
    keyed = ctx.keyed;
    key = keyNode.fn;
  }
  const store = ctx.operatorState;
  const declared = (d: { name?: unknown; kind?: unknown }, what: string): string => {
    if (typeof d !== "object" || d === null || d.kind !== "map" || typeof d.name !== "string") throw new Error(`${node.name}: ${what} expects a MapStateDescriptor`);
    if (!node.broadcastStates.includes(d.name)) {
      throw new Error(`${node.name}: ${what}: the broadcast state ${JSON.stringify(d.name)} was not given to broadcast(...) (it has ${node.broadcastStates.map((n) => JSON.stringify(n)).join(", ")})`);
    }
    return d.name;
  };
  const views = new Map<string, BroadcastState<unknown, unknown>>();
  const readOnlyState = (d: { name?: unknown; kind?: unknown }) => {
    const name = declared(d, "getBroadcastState");
    let v = views.get(name);
    if (!v) views.set(name, (v = readOnly(store.getBroadcastState(name), name, node.name)));
    return v;
  };
  const time = ctx.time;
  const { context, collector, lifecycle } = processContext(node.name, fn, ctx, keyed, out, chain, {
    getBroadcastState: readOnlyState,
    currentWatermark: () => context.timerService().currentWatermark(),
    currentProcessingTime: () => Date.now(),
  });
  const stateFor = (d: any): unknown => {
    switch (d?.kind) {
      case "value":
        return keyed!.getState(d);
      case "list":
        return keyed!.getListState(d);
      case "map":
        return keyed!.getMapState(d);
      case "reducing":
        return keyed!.getReducingState(d);
      case "aggregating":
        return keyed!.getAggregatingState(d);
      default:
        throw new Error(`${node.name}: applyToKeyedState expects a keyed state descriptor (ValueStateDescriptor, ListStateDescriptor, ...)`);
    }
  };
  const broadcastContext = {
    getBroadcastState: (d: { name?: unknown; kind?: unknown }) => store.getBroadcastState(declared(d, "getBroadcastState")),
    applyToKeyedState: (d: any, f: (key: unknown, state: unknown) => void) => {
      if (!keyed) throw new Error(`${node.name}: applyToKeyedState needs a keyed stream (keyBy before connect)`);
      if (typeof f !== "function") throw new Error(`${node.name}: applyToKeyedState expects a function (key, state)`);
      stateFor(d); // checks the descriptor (and registers its state) before the scan
      // The keys first: the function may change or clear the state while we go.
      for (const k of keyed.keys(d.name)) {
        keyed.setCurrentKey(k);
        const state = stateFor(d);
        // A key whose value has expired (state TTL) is still stored until cleaned up: as Flink, not visited.
        if (isVisible(d.kind, state)) f(k, state);
      }
    },
    timestamp: () => time.ts,
    currentWatermark: () => context.timerService().currentWatermark(),
    currentProcessingTime: () => Date.now(),
    output: (tag: { id: string }, value: unknown) => chain.side(tag.id, value),
  };
  const k = key;
  const b = keyed;
  return {
    open: fn.open ? () => fn.open!(runtimeContext(ctx, keyed !== null, node.name)) : undefined,
    process:
      b && k
        ? (r) => {
            b.setCurrentKey(k(r));
            fn.processElement(r, context, collector);
          }
        : (r) => fn.processElement(r, context, collector),
    process2: (r) => fn.processBroadcastElement(r, broadcastContext, collector),
    ...lifecycle,
    endInput: fn.close ? () => fn.close!() : undefined,
  };
}

/**
 * Keyed reduce and sum over the task's state backend. A sum adds into the accumulator in place (no copy
 * of the record per input); what it emits (streaming) is a copy, so downstream never sees it change.
 * In batch mode only the final value per key is emitted, at end of input: the operator remembers which
 * keys it saw (the backends do not enumerate keys).
 */
class KeyedAggregation implements Operator {
  /** Batch mode: the keys seen, by value (composite keys by their canonical string). */
  private readonly seen: Map<unknown, unknown> | null;
  /** The state holds the accumulator object itself (heap, no TTL): one changed in place needs no update(). */
  private readonly inPlace: boolean;
  /**
   * Without object reuse, what goes downstream is a copy: the accumulator changes with the key's next record, and
   * a chained function may keep what it was given. With it (pipeline.object-reuse) the accumulator itself goes on,
   * as Flink's object reuse, and no record is allocated per input record (about a sixth of a keyed sum's CPU).
   */
  private readonly copyOut: boolean;
  constructor(
    private readonly keyed: KeyedStateBackend,
    private readonly key: (r: any) => unknown,
    private readonly state: ValueState<any>,
    private readonly reduce: (a: any, b: any) => any,
    private readonly sumField: number | string | undefined,
    emitAtEndOnly: boolean,
    private readonly out: Collector,
    objectReuse: boolean,
  ) {
    this.copyOut = !objectReuse;
    this.seen = emitAtEndOnly ? new Map() : null;
    this.inPlace = (state as { storesReference?: boolean }).storesReference === true;
  }
  // A key's first record takes its own method: with it inline, the hot path compared `next !== acc` where acc had
  // been undefined for the first records, and when the JIT compiled before the first repeated key (a race with its
  // compiler thread) that comparison failed its type check on nearly every later record without ever being
  // recompiled well: half the runs of the keyed sum went 35 % slower (docs/benchmarks.md).
  process(record: any): void {
    const k = this.key(record);
    this.keyed.setCurrentKey(k);
    const acc = this.state.value();
    if (acc === undefined) {
      this.first(record, k);
      return;
    }
    let next: any;
    // The accumulator changed in place (a sum, or a reduce that returns its first argument) is stored already where
    // the state keeps the object itself; value() let a running snapshot take this key group's state before the
    // change (heap-backend.ts groupIndex). SQLite needs update() to know the entry changed.
    if (this.sumField !== undefined && typeof acc === "object" && acc !== null) {
      next = acc;
      next[this.sumField] += record[this.sumField];
      if (!this.inPlace) this.state.update(next);
    } else {
      next = this.reduce(acc, record);
      if (next !== acc || !this.inPlace) this.state.update(next);
    }
    if (!this.seen) this.out(this.copyOut ? copyOf(next) : next);
  }
  private first(record: any, k: unknown): void {
    // Without object reuse a copy: the accumulator is changed in place, and the record may be someone else's. With
    // it the record itself becomes the accumulator, as Flink's reduce stores its first value (upstream functions do
    // not keep what they emit).
    const next = this.copyOut ? copyOf(record) : record;
    this.seen?.set(typeof k === "object" && k !== null ? canonicalKey(k) : k, k);
    this.state.update(next);
    if (!this.seen) this.out(this.copyOut ? copyOf(next) : next);
  }
  endInput(): void {
    if (!this.seen) return;
    for (const k of this.seen.values()) {
      this.keyed.setCurrentKey(k);
      this.out(this.state.value());
    }
  }
}

/**
 * A shallow copy of an emitted accumulator. Plain arrays of up to four elements (tuples: a keyed sum's [key, sum]) are
 * copied as array literals: about 2 ns a copy where slice() takes about 9 (scripts/bench-helpers/copy-micro.ts), and
 * a keyed sum spends 60-100 ns per record in all (docs/benchmarks.md). Like slice(), the copy has the elements and not
 * other properties; a hole becomes undefined, as it does through msgpack across an exchange.
 */
function copyOf(v: any): any {
  if (typeof v !== "object" || v === null) return v;
  if (Object.getPrototypeOf(v) === Array.prototype) {
    switch (v.length) {
      case 2:
        return [v[0], v[1]];
      case 3:
        return [v[0], v[1], v[2]];
      case 1:
        return [v[0]];
      case 4:
        return [v[0], v[1], v[2], v[3]];
    }
  }
  return Array.isArray(v) ? v.slice() : { ...v };
}

function createSink(node: Extract<PlanNode, { kind: "sink" }>, ctx: OperatorContext): Operator {
  const spec = node.sink;
  switch (spec.type) {
    case "function": {
      const fn = spec.fn;
      if (typeof fn === "function") return { process: (r) => void fn(r) };
      return { open: () => fn.open?.(runtimeContext(ctx, false, node.name)), process: (r) => fn.invoke(r), endInput: () => fn.close?.() };
    }
    case "print": {
      const prefix = (spec.prefix ? `${spec.prefix}:` : "") + (ctx.parallelism > 1 ? `${ctx.subtaskIndex + 1}> ` : spec.prefix ? " " : "");
      return new LineSink((text) => void process.stdout.write(text), prefix);
    }
    case "fileSink": {
      const opts = { dir: spec.path, subtask: ctx.subtaskIndex, parallelism: ctx.parallelism, attempt: ctx.attempt, jobId: ctx.jobId };
      const sink = spec.bucketAssigner ? new BucketedFileSink(opts, spec.bucketAssigner) : new TwoPhaseCommitFileSink(opts);
      return {
        open: () => sink.open(ctx.restoredCheckpointId),
        process: (r) => sink.write(r),
        snapshotState: (id) => sink.preCommit(id),
        notifyCheckpointComplete: (id) => sink.commit(id),
        // FLIP-147: the final checkpoint pre-commits the rest and its notify commits it; else a final transaction.
        endInput: () => (ctx.finalCheckpoint ? sink.endOfData() : sink.endInput()),
        hasFinalCommit: () => sink.hasFinalCommit,
        finalCommit: () => sink.commitFinal(),
      };
    }
    case "connector":
      return spec.connector.createWriter(ctx, node.uid ?? String(node.id));
    case "textFile": {
      let file = spec.path;
      if (ctx.parallelism > 1) {
        fs.mkdirSync(spec.path, { recursive: true });
        file = path.join(spec.path, String(ctx.subtaskIndex + 1));
      } else {
        fs.mkdirSync(path.dirname(path.resolve(spec.path)), { recursive: true });
      }
      const fd = fs.openSync(file, "w");
      return new LineSink((text) => fs.writeSync(fd, text), "", () => fs.closeSync(fd));
    }
  }
}

class LineSink implements Operator {
  private lines: string[] = [];
  constructor(
    private readonly write: (text: string) => void,
    private readonly prefix: string,
    private readonly close?: () => void,
  ) {}
  process(r: unknown): void {
    this.lines.push(this.prefix + formatRecord(r));
    if (this.lines.length >= 4096) this.flush();
  }
  flush(): void {
    if (this.lines.length === 0) return;
    this.write(this.lines.join("\n") + "\n");
    this.lines = [];
  }
  endInput(): void {
    this.flush();
    this.close?.();
  }
}

/** Whether the current key's state shows a value (one that expired under its TTL reads as none). */
function isVisible(kind: string, state: unknown): boolean {
  switch (kind) {
    case "value":
      return (state as { value(): unknown }).value() !== undefined;
    case "list":
      return (state as { get(): unknown[] }).get().length > 0;
    case "map":
      return !(state as { isEmpty(): boolean }).isEmpty();
    default:
      return (state as { get(): unknown }).get() !== undefined;
  }
}
