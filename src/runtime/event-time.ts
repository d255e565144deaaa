// Event time inside a task: the current record's timestamp (a side variable of the chain), the input watermark
// valve (minimum over input channels, idle and ended channels handled, backwards watermarks ignored and counted),
// the timestamp/watermark operator, and the timer service of keyed operators (in-memory priority queues, written
// to operator union list state at each checkpoint and filtered by key group on restore).
import type { PlanNode } from "../api/plan.ts";
import type { WatermarkGenerator, WatermarkOutput } from "../api/event-time.ts";
import type { KeyedStateBackend } from "../state/keyed-backend.ts";
import { heapKeyOf, type HeapKey } from "../state/serde.ts";
import type { ChainOutput, Collector, Operator, OperatorContext, TimeContext } from "./operator.ts";

/** The watermark event on the wire; idle: true marks the channel idle until its next watermark. */
export type WatermarkEvent = { type: "watermark"; timestamp: number; idle?: true };

/**
 * A task's input watermark: the minimum over its input channels' watermarks, where an ended channel counts as
 * +Infinity and an idle channel does not count. Advances only; a channel whose watermark goes backwards keeps
 * its old one (counted in `backwards`). When every channel that has not ended is idle, the input is idle.
 */
export class WatermarkValve {
  private readonly wm = new Map<string, number>();
  private readonly idleChannels = new Set<string>();
  private readonly endedChannels = new Set<string>();
  /** The last watermark this valve output. */
  current = -Infinity;
  /** True while every non-ended channel is idle (and at least one is). */
  idle = false;
  backwards = 0;

  constructor(channels: Iterable<string>) {
    for (const ch of channels) this.wm.set(ch, -Infinity);
  }

  /** A watermark event on a channel; returns the new input watermark when it advanced, else null. */
  onWatermark(channel: string, timestamp: number, idle: boolean): number | null {
    const cur = this.wm.get(channel);
    if (cur === undefined) throw new Error(`watermark on unknown input channel ${channel}`);
    if (idle) this.idleChannels.add(channel);
    else {
      this.idleChannels.delete(channel);
      if (timestamp < cur || Number.isNaN(timestamp)) this.backwards++;
      else this.wm.set(channel, timestamp);
    }
    return this.recompute();
  }

  onEnd(channel: string): number | null {
    this.endedChannels.add(channel);
    this.idleChannels.delete(channel);
    return this.recompute();
  }

  private recompute(): number | null {
    let min = Infinity;
    let active = 0;
    for (const [ch, wm] of this.wm) {
      if (this.idleChannels.has(ch)) continue;
      active++;
      if (!this.endedChannels.has(ch) && wm < min) min = wm;
    }
    this.idle = active === 0 && this.wm.size > 0;
    if (this.idle || min <= this.current) return null;
    this.current = min;
    return min;
  }
}

/** assignTimestampsAndWatermarks: timestamps each record and runs the strategy's watermark generator. */
export class TimestampsAndWatermarksOperator implements Operator {
  private readonly generator: WatermarkGenerator<unknown>;
  private readonly assigner: ((e: unknown, ts: number | null) => number) | null;
  private readonly idlenessMs: number | null;
  private readonly output: WatermarkOutput;
  private last = -Infinity;
  private isIdle = false;
  private seen = 0;
  private lastActive = performance.now();
  /**
   * Per-split watermarks (chained after a source): one generator per split; the operator's watermark is the
   * minimum over the splits not yet exhausted, so a split that lags behind holds it back, as Flink's per-split
   * watermark multiplexing does. null in tasks that do not read splits.
   */
  private splits: Map<number, { gen: WatermarkGenerator<unknown>; out: WatermarkOutput; wm: number; idle: boolean }> | null = null;
  private split: { gen: WatermarkGenerator<unknown>; out: WatermarkOutput; wm: number; idle: boolean } | null = null;

  constructor(
    private readonly node: Extract<PlanNode, { kind: "assignTimestamps" }>,
    private readonly time: TimeContext,
    private readonly out: Collector,
    private readonly chain: ChainOutput,
  ) {
    const s = node.strategy;
    this.generator = s.createGenerator();
    if (typeof this.generator?.onEvent !== "function" || typeof this.generator?.onPeriodicEmit !== "function") {
      throw new Error(`${node.name}: the watermark strategy's generator must have onEvent and onPeriodicEmit`);
    }
    this.assigner = s.timestampAssigner;
    this.idlenessMs = s.idlenessMs;
    this.output = {
      emitWatermark: (ts: number) => {
        if (typeof ts !== "number" || Number.isNaN(ts)) throw new Error(`${node.name}: the watermark generator emitted ${String(ts)}, expected a number`);
        if (ts <= this.last) return;
        this.last = ts;
        this.isIdle = false;
        this.chain.watermark(ts);
      },
      markIdle: () => this.setIdle(true),
    };
  }

  process(record: unknown): void {
    const ts = this.assigner ? this.assigner(record, this.time.ts) : this.time.ts;
    if (typeof ts !== "number" || !Number.isFinite(ts)) {
      throw new Error(
        `${this.node.name}: ${this.assigner ? "the timestamp assigner returned" : "a record arrived without a timestamp and the strategy has no timestamp assigner:"} ${describe(ts)} for record ${preview(record)}; expected a finite number of milliseconds`,
      );
    }
    this.time.ts = ts;
    this.seen++;
    if (this.isIdle) this.setIdle(false);
    this.out(record);
    const split = this.split;
    if (split === null) this.generator.onEvent(record, ts, this.output);
    else {
      split.idle = false;
      split.gen.onEvent(record, ts, split.out);
    }
  }

  /** The source task is about to push a chunk of split `id`; `active` are the splits not yet exhausted. */
  onSourceSplit(id: number, active: readonly number[]): void {
    const splits = (this.splits ??= new Map());
    if (splits.size !== active.length || !splits.has(id)) {
      for (const k of [...splits.keys()]) if (!active.includes(k)) splits.delete(k);
      // Every active split counts from the start, also before its first record (it may hold older events).
      for (const k of active) if (!splits.has(k)) splits.set(k, this.splitState());
    }
    this.split = splits.get(id) ?? null;
    this.emitCombined();
  }

  private splitState() {
    const st = { gen: this.node.strategy.createGenerator(), out: null as unknown as WatermarkOutput, wm: -Infinity, idle: false };
    st.out = {
      emitWatermark: (ts: number) => {
        if (typeof ts !== "number" || Number.isNaN(ts)) throw new Error(`${this.node.name}: the watermark generator emitted ${String(ts)}, expected a number`);
        st.idle = false;
        if (ts > st.wm) {
          st.wm = ts;
          this.emitCombined();
        }
      },
      markIdle: () => {
        st.idle = true;
        this.emitCombined();
      },
    };
    return st;
  }

  /** The minimum over the active splits' watermarks (idle splits left out), emitted when it advances. */
  private emitCombined(): void {
    const splits = this.splits;
    if (splits === null || splits.size === 0) return;
    let min = Infinity;
    for (const st of splits.values()) if (!st.idle && st.wm < min) min = st.wm;
    if (min === Infinity || min === -Infinity) return;
    this.output.emitWatermark(min);
  }

  onPeriodic(): void {
    if (this.idlenessMs !== null) {
      const now = performance.now();
      if (this.seen > 0) {
        this.seen = 0;
        this.lastActive = now;
      } else if (!this.isIdle && now - this.lastActive >= this.idlenessMs) {
        this.setIdle(true);
      }
    }
    if (this.splits === null) this.generator.onPeriodicEmit(this.output);
    else for (const st of this.splits.values()) st.gen.onPeriodicEmit(st.out);
  }

  /** Upstream watermarks are replaced by this operator's own; only the final one (end of input) passes. */
  processWatermark(wm: number): void {
    if (wm === Infinity && this.last < Infinity) {
      this.last = Infinity;
      this.chain.watermark(Infinity);
    }
  }

  private setIdle(idle: boolean): void {
    if (this.isIdle === idle) return;
    this.isIdle = idle;
    this.chain.idle(idle);
  }
}

export function describe(v: unknown): string {
  if (typeof v === "number") return String(v);
  if (v === null || v === undefined) return String(v);
  return `${typeof v} ${preview(v)}`;
}

export function preview(v: unknown): string {
  let s: string;
  try {
    s = typeof v === "string" ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  } catch {
    s = String(v);
  }
  return s.length > 120 ? s.slice(0, 117) + "..." : s;
}

// ---- Timers ----

export type TimerDomain = 0 | 1; // 0 = event time, 1 = processing time

export interface Timer {
  domain: TimerDomain;
  ts: number;
  key: unknown;
  keyGroup: number;
  /** The timer's namespace id: 0 for a process function, the window's id (a TimerNamespaces of the operator) for
   *  a window operator. */
  ns: number;
  /** The key's heap key (serde.ts): the index the timer is deduplicated under. */
  hk: HeapKey;
  /** False once fired or deleted: the queue drops such entries lazily. */
  live: boolean;
}

/**
 * The namespaces of an operator's timers as small integers, and their names in checkpoints (the name is what a
 * snapshot stores, so ids never leave the task). A window operator interns each window it has timers for; the
 * timer service retains an id for each live timer in it and releases it when the timer fires (after onTimer) or is
 * deleted, so the owner may reuse an id once nothing refers to it.
 */
export interface TimerNamespaces {
  /** The id of a namespace name read from a checkpoint (interned if new). */
  idOf(name: string): number;
  /** The name of id, written into checkpoints. */
  nameOf(id: number): string;
  retain(id: number): void;
  release(id: number): void;
}

/** Process functions: the one namespace "" (id 0). */
const DEFAULT_NAMESPACES: TimerNamespaces = {
  idOf(name) {
    if (name !== "") throw new Error(`a checkpointed timer has namespace ${JSON.stringify(name)}; this operator only has timers without one`);
    return 0;
  },
  nameOf: () => "",
  retain() {},
  release() {},
};

/**
 * The timers of one domain in timestamp order: a binary min-heap of the distinct timestamps (plain numbers), each
 * with the bucket of its timers in registration order. Windows of all keys end at the same instants, so most
 * timers join an existing bucket (a Map lookup and a push) and firing walks the bucket without heap work per timer.
 */
class TimerQueue {
  private readonly times: number[] = [];
  private readonly buckets = new Map<number, Timer[]>();

  push(t: Timer): void {
    const b = this.buckets.get(t.ts);
    if (b !== undefined) {
      b.push(t);
      return;
    }
    this.buckets.set(t.ts, [t]);
    const a = this.times;
    const ts = t.ts;
    a.push(ts);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= ts) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = ts;
  }

  /** The earliest timestamp with a bucket (its timers may all be deleted), or undefined. */
  peekTime(): number | undefined {
    return this.times[0];
  }

  /** Removes the earliest bucket and returns its timers (a timer registered at that time later gets a new one). */
  popBucket(): Timer[] {
    const a = this.times;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    const b = this.buckets.get(top)!;
    this.buckets.delete(top);
    return b;
  }

  /** The earliest live timer's timestamp: deleted timers leave the earliest bucket (in order), empty buckets go. */
  earliestLive(): number | undefined {
    for (let ts = this.peekTime(); ts !== undefined; ts = this.peekTime()) {
      const b = this.buckets.get(ts)!;
      if (b[0]!.live) return ts;
      let n = 0;
      for (const t of b) if (t.live) b[n++] = t;
      b.length = n;
      if (n > 0) return ts;
      this.popBucket();
    }
    return undefined;
  }
}

/** Up to this many timers a key keeps in a list searched linearly; more go into a map by timestamp. */
const SMALL = 16;

/**
 * The live timers of one key: a short list compared by numbers (domain, timestamp, namespace id), no string built;
 * a key with many timers (a process function with a timer per record) gets them indexed by timestamp.
 */
class KeyTimers {
  small: Timer[] | null = [];
  byTs: Map<number, Timer[]> | null = null;

  find(domain: TimerDomain, ts: number, ns: number): Timer | undefined {
    const list = this.small ?? this.byTs!.get(ts);
    if (list === undefined) return undefined;
    for (let i = 0; i < list.length; i++) {
      const t = list[i]!;
      if (t.ts === ts && t.ns === ns && t.domain === domain) return t;
    }
    return undefined;
  }

  add(t: Timer): void {
    const small = this.small;
    if (small !== null) {
      if (small.length < SMALL) {
        small.push(t);
        return;
      }
      this.small = null;
      this.byTs = new Map();
      for (const x of small) this.addBig(x);
    }
    this.addBig(t);
  }

  private addBig(t: Timer): void {
    const list = this.byTs!.get(t.ts);
    if (list === undefined) this.byTs!.set(t.ts, [t]);
    else list.push(t);
  }

  /** Removes t; true when the key has no timer left. */
  remove(t: Timer): boolean {
    const small = this.small;
    if (small !== null) {
      removeFrom(small, t);
      return small.length === 0;
    }
    const list = this.byTs!.get(t.ts);
    if (list !== undefined && removeFrom(list, t) && list.length === 0) this.byTs!.delete(t.ts);
    return this.byTs!.size === 0;
  }

  *all(): Iterable<Timer> {
    if (this.small !== null) yield* this.small;
    else for (const list of this.byTs!.values()) yield* list;
  }
}

function removeFrom(list: Timer[], t: Timer): boolean {
  const i = list.indexOf(t);
  if (i < 0) return false;
  list[i] = list[list.length - 1]!;
  list.pop();
  return true;
}

/**
 * The timers of one keyed operator, scoped to the backend's current key. Event-time timers fire in timestamp
 * order when the watermark reaches them, processing-time timers by the wall clock (a setTimeout for the
 * earliest). A timer is identified by numbers only: its key's entry in a map by heap key, then its domain,
 * timestamp and namespace id (TimerNamespaces); registering one that exists is a lookup, no allocation. Deleting
 * is lazy: the queue entry stays, marked not live, and is skipped. Checkpoints store the live timers in the
 * operator's union list state `name` as [key group, domain, timestamp, key, namespace name], so a restore at any
 * parallelism keeps the timers of the key groups it owns.
 */
export class InternalTimerService {
  private readonly byKey = new Map<HeapKey, KeyTimers>();
  private count = 0;
  private readonly queues: [TimerQueue, TimerQueue] = [new TimerQueue(), new TimerQueue()];
  currentWatermark = -Infinity;
  private timeout: ReturnType<typeof setTimeout> | null = null;
  private timeoutAt = Infinity;
  private disposed = false;

  constructor(
    private readonly keyed: KeyedStateBackend,
    private readonly ctx: OperatorContext,
    private readonly stateName: string,
    private readonly onTimer: (t: Timer) => void,
    private readonly namespaces: TimerNamespaces = DEFAULT_NAMESPACES,
  ) {
    const store = ctx.operatorState;
    if (store.stateNames().includes(stateName)) {
      const { start, end } = keyed.keyGroupRange;
      for (const e of store.getUnionListState<[number, TimerDomain, number, unknown, string]>(stateName).get()) {
        const [kg, domain, ts, key, ns] = e;
        if (kg < start || kg > end) continue;
        this.add(domain, ts, key, heapKeyOf(key), kg, namespaces.idOf(ns));
      }
    }
  }

  get size(): number {
    return this.count;
  }

  register(domain: TimerDomain, ts: number, ns = 0): void {
    if (typeof ts !== "number" || Number.isNaN(ts)) throw new Error(`a timer needs a numeric timestamp, got ${String(ts)}`);
    const kg = this.keyed.getCurrentKeyGroup();
    if (kg < 0) throw new Error("timers can only be registered for a key (in processElement or onTimer)");
    this.add(domain, ts, this.keyed.getCurrentKey(), this.keyed.getCurrentHeapKey(), kg, ns);
  }

  /** The current key (timers belong to it). */
  keyOf(): unknown {
    return this.keyed.getCurrentKey();
  }

  delete(domain: TimerDomain, ts: number, ns = 0): void {
    const kt = this.byKey.get(this.keyed.getCurrentHeapKey());
    const t = kt?.find(domain, ts, ns);
    if (t === undefined) return;
    this.unlink(kt!, t);
    this.namespaces.release(ns);
  }

  private add(domain: TimerDomain, ts: number, key: unknown, hk: HeapKey, keyGroup: number, ns: number): void {
    let kt = this.byKey.get(hk);
    if (kt === undefined) {
      kt = new KeyTimers();
      this.byKey.set(hk, kt);
    } else if (kt.find(domain, ts, ns) !== undefined) return;
    const t: Timer = { domain, ts, key, keyGroup, ns, hk, live: true };
    kt.add(t);
    this.count++;
    this.namespaces.retain(ns);
    this.queues[domain].push(t);
    if (domain === 1) this.schedule();
  }

  /** Takes t out of the index (not the queue: it skips t). */
  private unlink(kt: KeyTimers, t: Timer): void {
    t.live = false;
    this.count--;
    if (kt.remove(t)) this.byKey.delete(t.hk);
  }

  /** Fires every event-time timer at or before wm, in timestamp order. */
  advanceWatermark(wm: number): void {
    this.currentWatermark = wm;
    this.fireUpTo(0, wm);
  }

  /** Fires the processing-time timers due at `now` (all of them with Infinity). */
  fireProcessingTime(now: number): void {
    this.fireUpTo(1, now);
    this.schedule();
  }

  private fireUpTo(domain: TimerDomain, upTo: number): void {
    const queue = this.queues[domain];
    for (let ts = queue.peekTime(); ts !== undefined && ts <= upTo; ts = queue.peekTime()) {
      const bucket = queue.popBucket();
      for (let i = 0; i < bucket.length; i++) {
        const t = bucket[i]!;
        if (!t.live) continue; // deleted (or deleted and registered again: that one is its own entry)
        this.unlink(this.byKey.get(t.hk)!, t);
        this.keyed.setCurrentKey(t.key);
        try {
          this.onTimer(t);
        } finally {
          // After onTimer: the namespace id stays valid while it runs (it may register timers in it again).
          this.namespaces.release(t.ns);
        }
      }
    }
  }

  private schedule(): void {
    if (this.disposed) return;
    const top = this.queues[1].earliestLive();
    if (top === undefined) return;
    if (this.timeout !== null && this.timeoutAt <= top) return;
    if (this.timeout !== null) clearTimeout(this.timeout);
    this.timeoutAt = top;
    this.timeout = setTimeout(() => {
      this.timeout = null;
      this.timeoutAt = Infinity;
      try {
        this.fireProcessingTime(Date.now());
        this.ctx.afterAsyncOutput?.();
      } catch (err) {
        this.ctx.fail?.(err);
      }
    }, Math.max(0, Math.min(top - Date.now(), 2 ** 31 - 1)));
  }

  /** Synchronous part of a checkpoint: the live timers into the operator's union list state. */
  snapshot(): void {
    const entries: [number, TimerDomain, number, unknown, string][] = [];
    const names = this.namespaces;
    for (const kt of this.byKey.values()) for (const t of kt.all()) entries.push([t.keyGroup, t.domain, t.ts, t.key, names.nameOf(t.ns)]);
    // An operator that never had a timer stores no timer state (savepoints list only state that exists).
    if (entries.length === 0 && !this.ctx.operatorState.stateNames().includes(this.stateName)) return;
    this.ctx.operatorState.getUnionListState(this.stateName).update(entries);
  }

  dispose(): void {
    this.disposed = true;
    if (this.timeout !== null) clearTimeout(this.timeout);
    this.timeout = null;
  }
}
