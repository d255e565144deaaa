// Event time inside a task: the current record's timestamp (a side variable of the chain), the input watermark
// valve (minimum over input channels, idle and ended channels handled, backwards watermarks ignored and counted),
// the timestamp/watermark operator, and the timer service of keyed operators (in-memory priority queues, written
// to operator union list state at each checkpoint and filtered by key group on restore).
import type { PlanNode } from "../api/plan.ts";
import type { WatermarkGenerator, WatermarkOutput } from "../api/event-time.ts";
import type { KeyedStateBackend } from "../state/keyed-backend.ts";
import { heapKeyOf } from "../state/serde.ts";
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
  /** The timer's namespace: "" for a process function, the window for a window operator. */
  ns: string;
  id: string;
}

/** A binary min-heap by timestamp. */
class TimerHeap {
  private readonly a: Timer[] = [];
  get size(): number {
    return this.a.length;
  }
  peek(): Timer | undefined {
    return this.a[0];
  }
  push(t: Timer): void {
    const a = this.a;
    a.push(t);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.ts <= t.ts) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = t;
  }
  pop(): Timer | undefined {
    const a = this.a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= a.length) break;
        const r = l + 1;
        const c = r < a.length && a[r]!.ts < a[l]!.ts ? r : l;
        if (a[c]!.ts >= last.ts) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}

/**
 * The timers of one keyed operator, scoped to the backend's current key. Event-time timers fire in timestamp
 * order when the watermark reaches them, processing-time timers by the wall clock (a setTimeout for the
 * earliest). Deleting is lazy: the heap entry stays and is skipped. Checkpoints store the live timers in the
 * operator's union list state `name`, each with its key group, so a restore at any parallelism keeps the timers
 * of the key groups it owns.
 */
export class InternalTimerService {
  private readonly live = new Map<string, Timer>();
  private readonly heaps: [TimerHeap, TimerHeap] = [new TimerHeap(), new TimerHeap()];
  currentWatermark = -Infinity;
  private timeout: ReturnType<typeof setTimeout> | null = null;
  private timeoutAt = Infinity;
  private disposed = false;

  constructor(
    private readonly keyed: KeyedStateBackend,
    private readonly ctx: OperatorContext,
    private readonly stateName: string,
    private readonly onTimer: (t: Timer) => void,
  ) {
    const store = ctx.operatorState;
    if (store.stateNames().includes(stateName)) {
      const { start, end } = keyed.keyGroupRange;
      for (const e of store.getUnionListState<[number, TimerDomain, number, unknown, string]>(stateName).get()) {
        const [kg, domain, ts, key, ns] = e;
        if (kg < start || kg > end) continue;
        this.add(domain, ts, key, kg, ns);
      }
    }
  }

  get size(): number {
    return this.live.size;
  }

  register(domain: TimerDomain, ts: number, ns = ""): void {
    if (typeof ts !== "number" || Number.isNaN(ts)) throw new Error(`a timer needs a numeric timestamp, got ${String(ts)}`);
    const kg = this.keyed.getCurrentKeyGroup();
    if (kg < 0) throw new Error("timers can only be registered for a key (in processElement or onTimer)");
    this.add(domain, ts, this.keyed.getCurrentKey(), kg, ns);
  }

  /** The current key (timers belong to it). */
  keyOf(): unknown {
    return this.keyed.getCurrentKey();
  }

  delete(domain: TimerDomain, ts: number, ns = ""): void {
    this.live.delete(timerId(domain, ts, this.keyed.getCurrentKey(), ns));
  }

  private add(domain: TimerDomain, ts: number, key: unknown, keyGroup: number, ns: string): void {
    const id = timerId(domain, ts, key, ns);
    if (this.live.has(id)) return;
    const t: Timer = { domain, ts, key, keyGroup, ns, id };
    this.live.set(id, t);
    this.heaps[domain].push(t);
    if (domain === 1) this.schedule();
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
    const heap = this.heaps[domain];
    for (let t = heap.peek(); t !== undefined && t.ts <= upTo; t = heap.peek()) {
      heap.pop();
      if (this.live.get(t.id) !== t) continue; // deleted (or deleted and registered again: that one is its own entry)
      this.live.delete(t.id);
      this.keyed.setCurrentKey(t.key);
      this.onTimer(t);
    }
  }

  private schedule(): void {
    if (this.disposed) return;
    const heap = this.heaps[1];
    let top = heap.peek();
    while (top !== undefined && this.live.get(top.id) !== top) {
      heap.pop();
      top = heap.peek();
    }
    if (top === undefined) return;
    if (this.timeout !== null && this.timeoutAt <= top.ts) return;
    if (this.timeout !== null) clearTimeout(this.timeout);
    this.timeoutAt = top.ts;
    this.timeout = setTimeout(() => {
      this.timeout = null;
      this.timeoutAt = Infinity;
      try {
        this.fireProcessingTime(Date.now());
        this.ctx.afterAsyncOutput?.();
      } catch (err) {
        this.ctx.fail?.(err);
      }
    }, Math.max(0, Math.min(top.ts - Date.now(), 2 ** 31 - 1)));
  }

  /** Synchronous part of a checkpoint: the live timers into the operator's union list state. */
  snapshot(): void {
    const entries: [number, TimerDomain, number, unknown, string][] = [];
    for (const t of this.live.values()) entries.push([t.keyGroup, t.domain, t.ts, t.key, t.ns]);
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

function timerId(domain: TimerDomain, ts: number, key: unknown, ns: string): string {
  const hk = heapKeyOf(key);
  return `${domain}|${ts}|${ns}|${typeof hk}:${String(hk)}`; // ns has a fixed shape, so the key goes last
}
