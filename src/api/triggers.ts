// Window triggers and evictors (as Flink's Trigger and Evictor). A trigger decides, per key and window, when the
// window function runs (FIRE) and when the window's contents are dropped (PURGE): on each element, and on the timers
// it registers. An evictor removes elements from a window before and/or after the function runs. The built-ins are
// Flink's; a custom trigger or evictor is an object of the same shape. Windows with neither use the default trigger
// of their assigner (event time: fire when the watermark passes the window's end; processing time: when the clock
// does) on the runtime's fast path.
import type { TimeWindow } from "./event-time.ts";

export type TriggerResult = "CONTINUE" | "FIRE" | "PURGE" | "FIRE_AND_PURGE";

/** A value kept per key and window for a trigger (Flink's partitioned state), cleared with the window. */
export interface TriggerState<T> {
  value(): T | undefined;
  update(value: T): void;
  clear(): void;
}

/** What a trigger may do, for the current key and the window it was called for. */
export interface TriggerContext {
  getCurrentWatermark(): number;
  getCurrentProcessingTime(): number;
  registerEventTimeTimer(time: number): void;
  registerProcessingTimeTimer(time: number): void;
  deleteEventTimeTimer(time: number): void;
  deleteProcessingTimeTimer(time: number): void;
  /** State of this trigger for the current key and window, by name. */
  getPartitionedState<T>(name: string): TriggerState<T>;
}

/** onMerge's context (session windows): also merges the merged windows' state of `name` into the new window. */
export interface TriggerMergeContext extends TriggerContext {
  mergePartitionedState<T>(name: string, merge: (a: T, b: T) => T): void;
}

export interface Trigger<T = any> {
  onElement(element: T, timestamp: number, window: TimeWindow, ctx: TriggerContext): TriggerResult;
  onEventTime(time: number, window: TimeWindow, ctx: TriggerContext): TriggerResult;
  onProcessingTime(time: number, window: TimeWindow, ctx: TriggerContext): TriggerResult;
  /** The window is purged for good (its cleanup time passed, or it was merged away): delete timers and state. */
  clear(window: TimeWindow, ctx: TriggerContext): void;
  /** Session windows need triggers that can merge. */
  canMerge?(): boolean;
  onMerge?(window: TimeWindow, ctx: TriggerMergeContext): void;
}

const maxTs = (w: TimeWindow) => w.end - 1;

/** The default of event-time windows: FIRE when the watermark passes the window's end. */
export const EventTimeTrigger = {
  create(): Trigger {
    return {
      onElement: (_e, _ts, w, ctx) => {
        if (maxTs(w) <= ctx.getCurrentWatermark()) return "FIRE"; // a late element within the allowed lateness
        ctx.registerEventTimeTimer(maxTs(w));
        return "CONTINUE";
      },
      onEventTime: (time, w) => (time === maxTs(w) ? "FIRE" : "CONTINUE"),
      onProcessingTime: () => "CONTINUE",
      clear: (w, ctx) => ctx.deleteEventTimeTimer(maxTs(w)),
      canMerge: () => true,
      onMerge: (w, ctx) => {
        if (maxTs(w) > ctx.getCurrentWatermark()) ctx.registerEventTimeTimer(maxTs(w));
      },
    };
  },
};

/** The default of processing-time windows: FIRE when the clock passes the window's end. */
export const ProcessingTimeTrigger = {
  create(): Trigger {
    return {
      onElement: (_e, _ts, w, ctx) => {
        ctx.registerProcessingTimeTimer(maxTs(w));
        return "CONTINUE";
      },
      onEventTime: () => "CONTINUE",
      onProcessingTime: () => "FIRE",
      clear: (w, ctx) => ctx.deleteProcessingTimeTimer(maxTs(w)),
      canMerge: () => true,
      onMerge: (w, ctx) => ctx.registerProcessingTimeTimer(maxTs(w)),
    };
  },
};

/** FIRE every `count` elements of a window (the count restarts after each firing). */
export const CountTrigger = {
  of(count: number): Trigger {
    if (!Number.isSafeInteger(count) || count < 1) throw new Error(`CountTrigger.of: expected an integer count >= 1, got ${count}`);
    return {
      onElement: (_e, _ts, _w, ctx) => {
        const state = ctx.getPartitionedState<number>("count");
        const n = (state.value() ?? 0) + 1;
        if (n >= count) {
          state.clear();
          return "FIRE";
        }
        state.update(n);
        return "CONTINUE";
      },
      onEventTime: () => "CONTINUE",
      onProcessingTime: () => "CONTINUE",
      clear: (_w, ctx) => ctx.getPartitionedState("count").clear(),
      canMerge: () => true,
      onMerge: (_w, ctx) => ctx.mergePartitionedState<number>("count", (a, b) => a + b),
    };
  },
};

/** Turns every FIRE of `trigger` into FIRE_AND_PURGE. */
export const PurgingTrigger = {
  of(trigger: Trigger): Trigger {
    checkTrigger(trigger, "PurgingTrigger.of");
    const purge = (r: TriggerResult): TriggerResult => (r === "FIRE" ? "FIRE_AND_PURGE" : r);
    return {
      onElement: (e, ts, w, ctx) => purge(trigger.onElement(e, ts, w, ctx)),
      onEventTime: (t, w, ctx) => purge(trigger.onEventTime(t, w, ctx)),
      onProcessingTime: (t, w, ctx) => purge(trigger.onProcessingTime(t, w, ctx)),
      clear: (w, ctx) => trigger.clear(w, ctx),
      canMerge: () => trigger.canMerge?.() === true,
      onMerge: (w, ctx) => trigger.onMerge?.(w, ctx),
    };
  },
};

/** Event time: FIRE every `interval` ms of event time while the window is open (early results), and at its end. */
export const ContinuousEventTimeTrigger = {
  of(intervalMs: number): Trigger {
    if (!Number.isSafeInteger(intervalMs) || intervalMs < 1) throw new Error(`ContinuousEventTimeTrigger.of: expected an integer interval >= 1 ms, got ${intervalMs}`);
    // As Flink: the first firing at the end of the element's interval (ts rounded down to the interval, plus it).
    const next = (ts: number) => ts - (((ts % intervalMs) + intervalMs) % intervalMs) + intervalMs;
    return {
      onElement: (_e, ts, w, ctx) => {
        if (maxTs(w) <= ctx.getCurrentWatermark()) return "FIRE";
        ctx.registerEventTimeTimer(maxTs(w));
        const state = ctx.getPartitionedState<number>("fire-time");
        if (state.value() === undefined) {
          const t = Math.min(next(ts), maxTs(w));
          state.update(t);
          ctx.registerEventTimeTimer(t);
        }
        return "CONTINUE";
      },
      onEventTime: (time, w, ctx) => {
        if (time === maxTs(w)) return "FIRE";
        const state = ctx.getPartitionedState<number>("fire-time");
        if (state.value() !== time) return "CONTINUE";
        const t = Math.min(time + intervalMs, maxTs(w));
        state.update(t);
        ctx.registerEventTimeTimer(t);
        return "FIRE";
      },
      onProcessingTime: () => "CONTINUE",
      clear: (w, ctx) => {
        const state = ctx.getPartitionedState<number>("fire-time");
        const t = state.value();
        if (t !== undefined) ctx.deleteEventTimeTimer(t);
        state.clear();
        ctx.deleteEventTimeTimer(maxTs(w));
      },
      canMerge: () => true,
      onMerge: (w, ctx) => {
        ctx.mergePartitionedState<number>("fire-time", (a, b) => Math.min(a, b));
        const t = ctx.getPartitionedState<number>("fire-time").value();
        if (t !== undefined) ctx.registerEventTimeTimer(t);
        if (maxTs(w) > ctx.getCurrentWatermark()) ctx.registerEventTimeTimer(maxTs(w));
      },
    };
  },
};

/** An element in a window as an evictor sees it. */
export interface TimestampedValue<T = any> {
  value: T;
  /** Its event time, or the processing time it arrived at (processing-time windows). */
  timestamp: number;
}

/** Removes elements from a window: evictBefore runs before the window function, evictAfter after it. Each gets the
 *  window's elements in arrival order and returns those to keep. */
export interface Evictor<T = any> {
  evictBefore?(elements: TimestampedValue<T>[], window: TimeWindow): TimestampedValue<T>[];
  evictAfter?(elements: TimestampedValue<T>[], window: TimeWindow): TimestampedValue<T>[];
}

/** Keeps the last `maxCount` elements (before the function, or after it with doEvictAfter). */
export const CountEvictor = {
  of(maxCount: number, doEvictAfter = false): Evictor {
    if (!Number.isSafeInteger(maxCount) || maxCount < 1) throw new Error(`CountEvictor.of: expected an integer count >= 1, got ${maxCount}`);
    const evict = (es: TimestampedValue[]) => (es.length > maxCount ? es.slice(es.length - maxCount) : es);
    return doEvictAfter ? { evictAfter: evict } : { evictBefore: evict };
  },
};

/** Keeps the elements at most `windowMs` older than the window's newest element. */
export const TimeEvictor = {
  of(windowMs: number, doEvictAfter = false): Evictor {
    if (!Number.isSafeInteger(windowMs) || windowMs < 0) throw new Error(`TimeEvictor.of: expected an integer number of milliseconds >= 0, got ${windowMs}`);
    const evict = (es: TimestampedValue[]) => {
      if (es.length === 0) return es;
      const newest = Math.max(...es.map((e) => e.timestamp));
      return es.filter((e) => e.timestamp > newest - windowMs);
    };
    return doEvictAfter ? { evictAfter: evict } : { evictBefore: evict };
  },
};

/** Checked at job build time: a trigger of the wrong shape is named there, not in the task. */
export function checkTrigger(t: unknown, what: string): asserts t is Trigger {
  for (const f of ["onElement", "onEventTime", "onProcessingTime", "clear"] as const) {
    if (typeof (t as Record<string, unknown> | null)?.[f] !== "function") throw new Error(`${what}: expected a trigger with onElement, onEventTime, onProcessingTime and clear (missing ${f})`);
  }
}

export function checkEvictor(e: unknown, what: string): asserts e is Evictor {
  const o = e as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null || (typeof o.evictBefore !== "function" && typeof o.evictAfter !== "function")) {
    throw new Error(`${what}: expected an evictor with evictBefore and/or evictAfter`);
  }
}
