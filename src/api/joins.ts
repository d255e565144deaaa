// Joins of two streams, with Flink's names and semantics, built on the API's own operators:
// - intervalJoin (KeyedStream.intervalJoin(other).between(lower, upper)): event time; each left element a joins the
//   right elements b of its key with a.ts + lower <= b.ts <= a.ts + upper (bounds inclusive unless made exclusive).
//   A keyed co-process function keeps each side's elements in keyed MapState by timestamp until the watermark passes
//   the last time a partner can come (Flink's IntervalJoinOperator); late elements are dropped; a pair carries the
//   larger of its two timestamps.
// - window join (join(other).where(k1).equalTo(k2).window(assigner).apply(fn)) and coGroup (...apply(fn) with both
//   sides' elements of a key and window): as Flink's JoinedStreams/CoGroupedStreams, the two streams tagged, united,
//   keyed and windowed; the window function pairs the sides. Triggers, evictors and allowed lateness pass through.
import type { DataStream, KeyedStream, WindowedStream } from "./environment.ts";
import type { TimeWindow, WindowAssigner } from "./event-time.ts";
import { MapStateDescriptor, type MapState } from "../state/api.ts";
import type { Collector, CoProcessContext, CoOnTimerContext, RuntimeContext } from "./plan.ts";
import type { Evictor, Trigger } from "./triggers.ts";

/** What a ProcessJoinFunction sees of a pair. */
export interface ProcessJoinContext {
  getLeftTimestamp(): number;
  getRightTimestamp(): number;
  /** The pair's timestamp: the larger of the two. */
  getTimestamp(): number;
}

export type ProcessJoinFunction<L, R, OUT> =
  | ((left: L, right: R, ctx: ProcessJoinContext, out: Collector<OUT>) => void)
  | { processElement(left: L, right: R, ctx: ProcessJoinContext, out: Collector<OUT>): void };

/** A collector that can stamp what it emits (the runtime's process collectors can). */
interface TimestampedCollector<T> extends Collector<T> {
  collectWithTimestamp?(value: T, timestamp: number): void;
}

export class IntervalJoin<L, R, K> {
  constructor(
    private readonly left: KeyedStream<L, K>,
    private readonly right: KeyedStream<R, K>,
  ) {}

  /** Right elements from lowerMs to upperMs (inclusive) relative to each left element's timestamp. */
  between(lowerMs: number, upperMs: number): IntervalJoined<L, R, K> {
    if (!Number.isSafeInteger(lowerMs) || !Number.isSafeInteger(upperMs)) throw new Error(`intervalJoin.between: expected integer bounds in milliseconds, got ${lowerMs} and ${upperMs}`);
    if (lowerMs > upperMs) throw new Error(`intervalJoin.between: the lower bound ${lowerMs} is above the upper bound ${upperMs}`);
    return new IntervalJoined(this.left, this.right, lowerMs, upperMs);
  }
}

export class IntervalJoined<L, R, K> {
  private lowerExclusive = false;
  private upperExclusive = false;
  constructor(
    private readonly left: KeyedStream<L, K>,
    private readonly right: KeyedStream<R, K>,
    private readonly lower: number,
    private readonly upper: number,
  ) {}

  lowerBoundExclusive(): this {
    this.lowerExclusive = true;
    return this;
  }

  upperBoundExclusive(): this {
    this.upperExclusive = true;
    return this;
  }

  process<OUT>(fn: ProcessJoinFunction<L, R, OUT>): DataStream<OUT> {
    const call =
      typeof fn === "function" ? fn : typeof fn === "object" && fn !== null && typeof fn.processElement === "function" ? (l: L, r: R, c: ProcessJoinContext, o: Collector<OUT>) => fn.processElement(l, r, c, o) : null;
    if (call === null) throw new Error("Interval Join: expected a function (left, right, ctx, out) or an object with processElement(left, right, ctx, out)");
    const lower = this.lower + (this.lowerExclusive ? 1 : 0);
    const upper = this.upper - (this.upperExclusive ? 1 : 0);
    if (lower > upper) throw new Error(`intervalJoin: the interval [${this.lower}, ${this.upper}] with its exclusive bounds is empty`);
    return this.left.connect(this.right as unknown as DataStream<R>).process(new IntervalJoinFunction<L, R, OUT>(lower, upper, call)).name("Interval Join");
  }
}

/** Elements of one side by timestamp (several may share one). */
type Buffer = MapState<number, unknown[]>;

class IntervalJoinFunction<L, R, OUT> {
  private left!: Buffer;
  private right!: Buffer;

  constructor(
    private readonly lower: number,
    private readonly upper: number,
    private readonly call: (l: L, r: R, c: ProcessJoinContext, o: Collector<OUT>) => void,
  ) {}

  open(ctx: RuntimeContext): void {
    this.left = ctx.getMapState(new MapStateDescriptor<number, unknown[]>("__interval-join-left"));
    this.right = ctx.getMapState(new MapStateDescriptor<number, unknown[]>("__interval-join-right"));
  }

  processElement1(value: L, ctx: CoProcessContext, out: Collector<OUT>): void {
    this.onElement(value, ctx, out, true);
  }

  processElement2(value: R, ctx: CoProcessContext, out: Collector<OUT>): void {
    this.onElement(value, ctx, out, false);
  }

  private onElement(value: unknown, ctx: CoProcessContext, out: TimestampedCollector<OUT>, isLeft: boolean): void {
    const ts = ctx.timestamp();
    if (typeof ts !== "number") throw new Error("Interval Join: a record without a timestamp; an interval join is in event time (assignTimestampsAndWatermarks() upstream of both inputs)");
    const timers = ctx.timerService();
    if (ts < timers.currentWatermark()) return; // late: its partners may be gone (Flink drops it)
    const [ours, theirs] = isLeft ? [this.left, this.right] : [this.right, this.left];
    // For a right element the interval is mirrored: left timestamps in [ts - upper, ts - lower].
    const [lo, hi] = isLeft ? [this.lower, this.upper] : [-this.upper, -this.lower];
    const list = ours.get(ts);
    if (list) list.push(value);
    ours.put(ts, list ?? [value]);
    for (const [t, others] of theirs.entries()) {
      if (t < ts + lo || t > ts + hi) continue;
      for (const other of others) {
        const [l, r, lt, rt] = isLeft ? [value as L, other as R, ts, t] : [other as L, value as R, t, ts];
        const pairTs = Math.max(lt, rt);
        const stamped: Collector<OUT> = { collect: (v) => (out.collectWithTimestamp ? out.collectWithTimestamp(v, pairTs) : out.collect(v)) };
        this.call(l, r, { getLeftTimestamp: () => lt, getRightTimestamp: () => rt, getTimestamp: () => pairTs }, stamped);
      }
    }
    // Kept until the watermark passes the last timestamp a partner can have.
    timers.registerEventTimeTimer(hi > 0 ? ts + hi : ts);
  }

  onTimer(time: number, _ctx: CoOnTimerContext<unknown>): void {
    this.evict(this.left, time, this.upper);
    this.evict(this.right, time, -this.lower);
  }

  /** Drops the elements whose cleanup time (ts + hi, or ts when hi <= 0) has passed. */
  private evict(buffer: Buffer, time: number, hi: number): void {
    const done: number[] = [];
    for (const t of buffer.keys()) if ((hi > 0 ? t + hi : t) <= time) done.push(t);
    for (const t of done) buffer.remove(t);
  }
}

// ---- window join and coGroup ----

export type JoinFunction<L, R, OUT> = ((left: L, right: R) => OUT) | { join(left: L, right: R): OUT };
export type CoGroupFunction<L, R, OUT> =
  | ((lefts: L[], rights: R[], out: Collector<OUT>) => void)
  | { coGroup(lefts: L[], rights: R[], out: Collector<OUT>): void };

type Tagged = [side: 0 | 1, value: unknown];

/** join(other) / coGroup(other): where(key1).equalTo(key2).window(assigner), then apply. */
export class TwoStreams<L, R> {
  constructor(
    private readonly left: DataStream<L>,
    private readonly right: DataStream<R>,
    private readonly what: "join" | "coGroup",
  ) {}

  where<K>(key1: (value: L) => K): { equalTo(key2: (value: R) => K): { window(assigner: WindowAssigner): TwoStreamWindow<L, R> } } {
    if (typeof key1 !== "function") throw new Error(`${this.what}.where: expected a key selector`);
    return {
      equalTo: (key2) => {
        if (typeof key2 !== "function") throw new Error(`${this.what}.equalTo: expected a key selector`);
        return {
          window: (assigner) => {
            if (assigner?.kind !== "windowAssigner" || assigner.type === "count") throw new Error(`${this.what}.window: expected a time window assigner, e.g. TumblingEventTimeWindows.of(10_000)`);
            const tagged = this.left
              .map((v): Tagged => [0, v])
              .name(`${this.what === "join" ? "Join" : "CoGroup"}: tag left`)
              .union(this.right.map((v): Tagged => [1, v]).name(`${this.what === "join" ? "Join" : "CoGroup"}: tag right`));
            const windowed = tagged.keyBy((t) => (t[0] === 0 ? key1(t[1] as L) : key2(t[1] as R))).window(assigner);
            return new TwoStreamWindow<L, R>(windowed, this.what);
          },
        };
      },
    };
  }
}

export class TwoStreamWindow<L, R> {
  constructor(
    private readonly windowed: WindowedStream<Tagged, unknown>,
    private readonly what: "join" | "coGroup",
  ) {}

  trigger(trigger: Trigger<Tagged>): this {
    this.windowed.trigger(trigger);
    return this;
  }

  evictor(evictor: Evictor<Tagged>): this {
    this.windowed.evictor(evictor);
    return this;
  }

  allowedLateness(ms: number): this {
    this.windowed.allowedLateness(ms);
    return this;
  }

  /** join: fn(left, right) for every pair of a key and window; coGroup: fn(lefts, rights, out) per key and window. */
  apply<OUT>(fn: JoinFunction<L, R, OUT> | CoGroupFunction<L, R, OUT>): DataStream<OUT> {
    const split = (elements: Tagged[]) => {
      const lefts: L[] = [];
      const rights: R[] = [];
      for (const [side, v] of elements) (side === 0 ? lefts : rights).push(v as never);
      return { lefts, rights };
    };
    if (this.what === "join") {
      const join = typeof fn === "function" ? (fn as (l: L, r: R) => OUT) : typeof (fn as { join?: unknown })?.join === "function" ? (l: L, r: R) => (fn as { join(l: L, r: R): OUT }).join(l, r) : null;
      if (join === null) throw new Error("Window Join: expected a function (left, right) => value or an object with join(left, right)");
      return this.windowed
        .process((_k: unknown, _ctx: { window: TimeWindow }, elements: Tagged[], out: Collector<OUT>) => {
          const { lefts, rights } = split(elements);
          for (const l of lefts) for (const r of rights) out.collect(join(l, r));
        })
        .name("Window Join");
    }
    const coGroup =
      typeof fn === "function" ? (fn as (l: L[], r: R[], o: Collector<OUT>) => void) : typeof (fn as { coGroup?: unknown })?.coGroup === "function" ? (l: L[], r: R[], o: Collector<OUT>) => (fn as { coGroup(l: L[], r: R[], o: Collector<OUT>): void }).coGroup(l, r, o) : null;
    if (coGroup === null) throw new Error("CoGroup: expected a function (lefts, rights, out) or an object with coGroup(lefts, rights, out)");
    return this.windowed
      .process((_k: unknown, _ctx: { window: TimeWindow }, elements: Tagged[], out: Collector<OUT>) => {
        const { lefts, rights } = split(elements);
        coGroup(lefts, rights, out);
      })
      .name("CoGroup");
  }
}
