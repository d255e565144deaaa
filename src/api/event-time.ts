// Event time for job authors, in Flink's shape: watermark strategies (timestamp assigner, watermark generator,
// idleness), window assigners, output tags for side outputs, and the contexts of timers and window functions.
// Everything here is a plain description: the runtime (src/runtime/event-time.ts, windows.ts) checks shapes,
// never `instanceof`, because a job's bundle carries its own copy of this module.

/** Milliseconds, as Flink's Time / Duration helpers. */
export const Time = {
  milliseconds: (n: number) => n,
  seconds: (n: number) => n * 1000,
  minutes: (n: number) => n * 60_000,
  hours: (n: number) => n * 3_600_000,
  days: (n: number) => n * 86_400_000,
};

/** Where a watermark generator emits: a watermark (monotonic: lower or equal ones are dropped) or idleness. */
export interface WatermarkOutput {
  emitWatermark(timestamp: number): void;
  /** No data for now: downstream tasks leave this input out of their watermark until it emits again. */
  markIdle(): void;
}

/** As Flink's WatermarkGenerator: onEvent per record (punctuated watermarks), onPeriodicEmit every interval. */
export interface WatermarkGenerator<T> {
  onEvent(event: T, timestamp: number, output: WatermarkOutput): void;
  onPeriodicEmit(output: WatermarkOutput): void;
}

/** Extracts a record's event time (ms); recordTimestamp is the timestamp it already has, or null. */
export type TimestampAssigner<T> = (element: T, recordTimestamp: number | null) => number;

/** How a stream gets timestamps and watermarks (assignTimestampsAndWatermarks). */
export class WatermarkStrategy<T> {
  readonly kind = "watermarkStrategy";
  private constructor(
    /** A fresh generator per subtask. */
    readonly createGenerator: () => WatermarkGenerator<T>,
    readonly timestampAssigner: TimestampAssigner<T> | null,
    /** Inputs without records for this long are marked idle (null = never). */
    readonly idlenessMs: number | null,
  ) {}

  /** Watermark = highest timestamp seen - maxOutOfOrderness - 1, emitted periodically. */
  static forBoundedOutOfOrderness<T>(maxOutOfOrdernessMs: number): WatermarkStrategy<T> {
    if (!Number.isFinite(maxOutOfOrdernessMs) || maxOutOfOrdernessMs < 0) {
      throw new Error(`WatermarkStrategy.forBoundedOutOfOrderness: expected milliseconds >= 0, got ${maxOutOfOrdernessMs}`);
    }
    return new WatermarkStrategy<T>(() => boundedOutOfOrderness(maxOutOfOrdernessMs), null, null);
  }

  /** Timestamps never decrease: watermark = highest timestamp seen - 1. */
  static forMonotonousTimestamps<T>(): WatermarkStrategy<T> {
    return new WatermarkStrategy<T>(() => boundedOutOfOrderness(0), null, null);
  }

  /** A generator of your own (for example punctuated: it emits from onEvent). */
  static forGenerator<T>(factory: () => WatermarkGenerator<T>): WatermarkStrategy<T> {
    if (typeof factory !== "function") throw new Error("WatermarkStrategy.forGenerator: expected a function that returns a WatermarkGenerator");
    return new WatermarkStrategy<T>(factory, null, null);
  }

  /** Timestamps only, no watermarks. */
  static noWatermarks<T>(): WatermarkStrategy<T> {
    return new WatermarkStrategy<T>(() => ({ onEvent() {}, onPeriodicEmit() {} }), null, null);
  }

  withTimestampAssigner(assigner: TimestampAssigner<T>): WatermarkStrategy<T> {
    if (typeof assigner !== "function") throw new Error("withTimestampAssigner: expected a function (element, recordTimestamp) => number");
    return new WatermarkStrategy<T>(this.createGenerator, assigner, this.idlenessMs);
  }

  withIdleness(ms: number): WatermarkStrategy<T> {
    if (!Number.isFinite(ms) || ms <= 0) throw new Error(`withIdleness: expected milliseconds > 0, got ${ms}`);
    return new WatermarkStrategy<T>(this.createGenerator, this.timestampAssigner, ms);
  }
}

function boundedOutOfOrderness(delay: number): WatermarkGenerator<unknown> {
  let max = -Infinity;
  return {
    onEvent(_e, ts) {
      if (ts > max) max = ts;
    },
    onPeriodicEmit(out) {
      if (max !== -Infinity) out.emitWatermark(max - delay - 1);
    },
  };
}

/** Names a side output: ctx.output(tag, value) in a process function, stream.getSideOutput(tag) to read it. */
export class OutputTag<T = unknown> {
  readonly kind = "outputTag";
  declare readonly _type?: T;
  constructor(readonly id: string) {
    if (typeof id !== "string" || id.length === 0) throw new Error("OutputTag: expected a non-empty id");
  }
}

// ---- Windows ----

export type WindowAssigner =
  | { kind: "windowAssigner"; type: "tumbling"; time: "event" | "processing"; size: number; offset: number }
  | { kind: "windowAssigner"; type: "sliding"; time: "event" | "processing"; size: number; slide: number; offset: number }
  | { kind: "windowAssigner"; type: "session"; time: "event" | "processing"; gap: number }
  | { kind: "windowAssigner"; type: "count"; size: number; slide: number };

function positiveMs(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${what}: expected an integer number of milliseconds > 0, got ${n}`);
  return n;
}
function offsetMs(n: number, size: number, what: string): number {
  if (!Number.isSafeInteger(n) || Math.abs(n) >= size) throw new Error(`${what}: expected an integer offset with |offset| < size, got ${n}`);
  return n;
}

const tumbling = (time: "event" | "processing", name: string) => ({
  of(sizeMs: number, offsetMsArg = 0): WindowAssigner {
    const size = positiveMs(sizeMs, `${name}.of`);
    return { kind: "windowAssigner", type: "tumbling", time, size, offset: offsetMs(offsetMsArg, size, `${name}.of`) };
  },
});
const sliding = (time: "event" | "processing", name: string) => ({
  of(sizeMs: number, slideMs: number, offsetMsArg = 0): WindowAssigner {
    const size = positiveMs(sizeMs, `${name}.of`);
    const slide = positiveMs(slideMs, `${name}.of`);
    return { kind: "windowAssigner", type: "sliding", time, size, slide, offset: offsetMs(offsetMsArg, slide, `${name}.of`) };
  },
});
const session = (time: "event" | "processing", name: string) => ({
  withGap(gapMs: number): WindowAssigner {
    return { kind: "windowAssigner", type: "session", time, gap: positiveMs(gapMs, `${name}.withGap`) };
  },
});

export const TumblingEventTimeWindows = tumbling("event", "TumblingEventTimeWindows");
export const TumblingProcessingTimeWindows = tumbling("processing", "TumblingProcessingTimeWindows");
export const SlidingEventTimeWindows = sliding("event", "SlidingEventTimeWindows");
export const SlidingProcessingTimeWindows = sliding("processing", "SlidingProcessingTimeWindows");
export const EventTimeSessionWindows = session("event", "EventTimeSessionWindows");
export const ProcessingTimeSessionWindows = session("processing", "ProcessingTimeSessionWindows");

/** A time window [start, end): end is exclusive, its last timestamp is end - 1. */
export interface TimeWindow {
  start: number;
  end: number;
}

/** What a window function sees besides the key and the elements. */
export interface WindowContext {
  /** The window being emitted (count windows: start and end are the first and last element's positions). */
  window: TimeWindow;
  currentWatermark(): number;
  currentProcessingTime(): number;
  output<X>(tag: OutputTag<X>, value: X): void;
}

export type ProcessWindowFunction<K, IN, OUT> =
  | ((key: K, context: WindowContext, elements: IN[], out: { collect(value: OUT): void }) => void)
  | { process(key: K, context: WindowContext, elements: IN[], out: { collect(value: OUT): void }): void; open?(ctx: unknown): void; close?(): void };

/** As Flink's AggregateFunction; merge is needed by session windows. */
export interface WindowAggregateFunction<IN, ACC, OUT> {
  createAccumulator(): ACC;
  add(value: IN, accumulator: ACC): ACC;
  getResult(accumulator: ACC): OUT;
  merge?(a: ACC, b: ACC): ACC;
}

export type WindowFunctionSpec =
  | { type: "reduce"; reduce: (a: any, b: any) => any; process: ProcessWindowFunction<any, any, any> | null }
  | { type: "aggregate"; aggregate: WindowAggregateFunction<any, any, any>; process: ProcessWindowFunction<any, any, any> | null }
  | { type: "process"; process: ProcessWindowFunction<any, any, any> };

// ---- Timers ----

export interface TimerService {
  currentProcessingTime(): number;
  /** The operator's current event time: the last watermark it received (-Infinity before the first). */
  currentWatermark(): number;
  registerEventTimeTimer(timestamp: number): void;
  deleteEventTimeTimer(timestamp: number): void;
  registerProcessingTimeTimer(timestamp: number): void;
  deleteProcessingTimeTimer(timestamp: number): void;
}

export type TimeDomain = "EVENT_TIME" | "PROCESSING_TIME";
