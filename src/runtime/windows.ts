// Keyed windows (as Flink's WindowOperator): tumbling, sliding and session windows in event or processing
// time, and count windows. Window contents live in the keyed state backend (one MapState per operator, entries
// per window), so they are checkpointed and work on both backends; window timers live in the operator's timer
// service (event-time.ts).
//
// Layout of the MapState "__window" (in the operator's own backend) for the current key, with ns = "<start>|<end>":
//   reduce / aggregate: ns -> accumulator
//   process:            ns -> element count n, "<ns>#<i>" -> element i (0 <= i < n): O(1) per element
//   count windows:      ns "count" as above; sliding count windows keep the last `size` elements at "sliding"
// Session windows also keep the key's open sessions in the ValueState "__sessions".
//
// With a custom trigger or an evictor (WindowedStream.trigger/evictor, api/triggers.ts) windows take the general
// path of Flink's WindowOperator: every element calls the trigger, whose result fires and/or purges the window; its
// timers (in the same timer service, namespace = the window) call it again; a cleanup timer at the window's end plus
// the allowed lateness (processing time: its end) drops contents and trigger state. Trigger state lives in the same
// MapState under "<ns>@<name>". With an evictor, elements are kept one by one with their timestamps, as [ts, value]
// (also for reduce and aggregate, which then run over the remaining elements when the window fires).
import type { PlanNode } from "../api/plan.ts";
import type { TimeWindow, WindowContext } from "../api/event-time.ts";
import { MapStateDescriptor, ValueStateDescriptor, type MapState, type ValueState } from "../state/api.ts";
import type { KeyedStateBackend } from "../state/keyed-backend.ts";
import { InternalTimerService, preview, type Timer } from "./event-time.ts";
import { EventTimeTrigger, ProcessingTimeTrigger, type Evictor, type TimestampedValue, type Trigger, type TriggerContext, type TriggerMergeContext, type TriggerResult } from "../api/triggers.ts";
import type { ChainOutput, Collector, Operator, OperatorContext, TimeContext } from "./operator.ts";

type WindowNode = Extract<PlanNode, { kind: "window" }>;

export class WindowOperator implements Operator {
  private readonly keyed: KeyedStateBackend;
  private readonly key: (r: unknown) => unknown;
  private readonly contents: MapState<string, any>;
  private readonly sessions: ValueState<[number, number][]> | null;
  private readonly timers: InternalTimerService | null;
  private readonly eventTime: boolean;
  private readonly lateness: number;
  private readonly time: TimeContext;
  private readonly collector: { collect: (v: unknown) => void };
  private readonly processFn: ((key: unknown, ctx: WindowContext, elements: unknown[], out: { collect: (v: unknown) => void }) => void) | null;
  /** Records dropped (or sent to the late side output) because every window they belong to had passed. */
  lateRecords = 0;
  /** A custom trigger or an evictor: the general path (null: the default trigger's fast path). */
  private readonly trigger: Trigger | null;
  private readonly evictor: Evictor | null;

  constructor(
    private readonly node: WindowNode,
    private readonly ctx: OperatorContext,
    private readonly out: Collector,
    private readonly chain: ChainOutput,
  ) {
    const keyNode = ctx.node(node.keyNode);
    if (keyNode.kind !== "keyBy" || !ctx.keyed) throw new Error(`${node.name} is not on a keyed stream`);
    this.keyed = ctx.keyed;
    this.key = keyNode.fn;
    this.time = ctx.time;
    // The operator's own state (stored under its operator id): fixed names.
    this.contents = this.keyed.getMapState(new MapStateDescriptor<string, any>("__window"));
    const a = node.assigner;
    this.eventTime = a.type !== "count" && a.time === "event";
    this.lateness = this.eventTime ? node.allowedLateness : 0;
    this.sessions = a.type === "session" ? this.keyed.getState(new ValueStateDescriptor<[number, number][]>("__sessions")) : null;
    this.timers = a.type === "count" ? null : new InternalTimerService(this.keyed, ctx, "__timers", (t) => this.onTimer(t));
    this.collector = { collect: (v) => this.out(v) };
    const p = node.fn.process;
    this.processFn = p === null ? null : typeof p === "function" ? p : (k, c, e, o) => p.process(k, c, e, o);
    this.evictor = node.evictor ?? null;
    this.trigger = node.trigger ?? (this.evictor ? (this.eventTime ? EventTimeTrigger.create() : ProcessingTimeTrigger.create()) : null);
  }

  open(): void {
    const p = this.node.fn.process;
    if (p && typeof p === "object" && typeof p.open === "function") p.open(undefined);
  }

  process(record: unknown): void {
    const k = this.key(record);
    this.keyed.setCurrentKey(k);
    const a = this.node.assigner;
    if (a.type === "count") return this.processCount(record, k, a.size, a.slide);
    let ts: number;
    if (this.eventTime) {
      const t = this.time.ts;
      if (typeof t !== "number" || !Number.isFinite(t)) {
        throw new Error(`${this.node.name}: a record without a timestamp (${String(t)}) reached an event-time window: ${preview(record)}; assign timestamps upstream with assignTimestampsAndWatermarks()`);
      }
      ts = t;
    } else ts = Date.now();
    if (a.type === "session") return this.processSession(record, ts, a.gap);
    if (this.trigger) return this.processTriggered(record, ts, a.size, a.type === "sliding" ? a.slide : a.size, a.offset);
    const wm = this.timers!.currentWatermark;
    let accepted = false;
    const size = a.size;
    const step = a.type === "sliding" ? a.slide : a.size;
    const lastStart = ts - mod(ts - a.offset, step);
    for (let start = lastStart; start > ts - size; start -= step) {
      const end = start + size;
      if (this.eventTime && end - 1 + this.lateness <= wm) continue; // this window is gone
      accepted = true;
      const ns = `${start}|${end}`;
      // Timers are registered when the (key, window) first gets state, not again for every record of it.
      this.registerTimers(ns, start, end, wm, this.add(ns, record));
    }
    if (!accepted) this.late(record, ts, wm);
  }

  private late(record: unknown, ts: number, wm: number): void {
    if (ts + this.lateness > wm) return; // not late, only outside every live window (cannot happen for these assigners)
    this.lateRecords++;
    if (this.node.lateTag !== null) this.chain.side(this.node.lateTag, record);
  }

  /** The window's timers: emit at end - 1 and, with allowed lateness, clean up at end - 1 + lateness. A window
   *  the watermark has passed already (a late record within the lateness) fires at once instead (Flink's
   *  EventTimeTrigger). */
  private registerTimers(ns: string, start: number, end: number, wm: number, first: boolean): void {
    const t = this.timers!;
    if (first && this.lateness > 0) t.register(0, end - 1 + this.lateness, ns);
    if (this.eventTime && end - 1 <= wm) this.fire(t.keyOf(), ns, start, end);
    else if (first) t.register(this.eventTime ? 0 : 1, end - 1, ns);
  }

  private processSession(record: unknown, ts: number, gap: number): void {
    const wm = this.timers!.currentWatermark;
    const open = this.sessions!.value() ?? [];
    // Merge the new window [ts, ts + gap) with every open session it touches (Flink's TimeWindow.intersects).
    let start = ts;
    let end = ts + gap;
    const merged: [number, number][] = [];
    const rest: [number, number][] = [];
    const sorted = open.slice().sort((x, y) => x[0] - y[0]);
    let changed = true;
    let candidates = sorted;
    while (changed) {
      changed = false;
      const next: [number, number][] = [];
      for (const w of candidates) {
        if (w[0] <= end && w[1] >= start) {
          merged.push(w);
          if (w[0] < start) start = w[0];
          if (w[1] > end) end = w[1];
          changed = true;
        } else next.push(w);
      }
      candidates = next;
    }
    rest.push(...candidates);
    if (this.eventTime && end - 1 + this.lateness <= wm) {
      this.late(record, ts, wm);
      return;
    }
    const ns = `${start}|${end}`;
    const t = this.timers!;
    const olds: string[] = [];
    for (const [s, e] of merged) {
      const old = `${s}|${e}`;
      if (old === ns) continue;
      olds.push(old);
      t.delete(this.eventTime ? 0 : 1, e - 1, old);
      if (this.lateness > 0) t.delete(0, e - 1 + this.lateness, old);
      this.mergeInto(old, ns);
    }
    rest.push([start, end]);
    this.sessions!.update(rest);
    if (this.trigger) {
      // Flink's order: the merged windows' trigger state goes into the new window (onMerge), then their triggers are
      // cleared; then the element is added and its trigger called.
      const window = { start, end };
      if (olds.length > 0) {
        const ctx: TriggerMergeContext = {
          ...this.triggerContext(ns),
          mergePartitionedState: <T>(name: string, merge: (a: T, b: T) => T) => {
            const c = this.contents;
            let acc: T | undefined = c.get(`${ns}@${name}`);
            for (const old of olds) {
              const v: T | undefined = c.get(`${old}@${name}`);
              if (v !== undefined) acc = acc === undefined ? v : merge(acc, v);
            }
            if (acc !== undefined) c.put(`${ns}@${name}`, acc);
          },
        };
        this.trigger.onMerge?.(window, ctx);
        for (const old of olds) {
          const [s, e] = old.split("|").map(Number) as [number, number];
          this.trigger.clear({ start: s, end: e }, this.triggerContext(old));
        }
      }
      this.onElementTriggered(record, ts, ns, window);
      return;
    }
    this.add(ns, record);
    // A merged session is a new window with old contents: its timers are registered whatever add() found.
    this.registerTimers(ns, start, end, wm, true);
  }

  // ---- the general path: a custom trigger or an evictor ----

  /** Tumbling and sliding windows with a trigger: each live window gets the element and the trigger's verdict. */
  private processTriggered(record: unknown, ts: number, size: number, step: number, offset: number): void {
    const wm = this.timers!.currentWatermark;
    let accepted = false;
    for (let start = ts - mod(ts - offset, step); start > ts - size; start -= step) {
      const end = start + size;
      if (this.eventTime && end - 1 + this.lateness <= wm) continue;
      accepted = true;
      this.onElementTriggered(record, ts, `${start}|${end}`, { start, end });
    }
    if (!accepted) this.late(record, ts, wm);
  }

  private onElementTriggered(record: unknown, ts: number, ns: string, window: TimeWindow): void {
    this.add(ns, record, ts);
    const result = this.trigger!.onElement(record, ts, window, this.triggerContext(ns));
    this.act(checkResult(result, "onElement"), ns, window);
    // The cleanup timer: contents and trigger state go once the window can get no more elements.
    this.timers!.register(this.eventTime ? 0 : 1, this.cleanupTime(window), ns);
  }

  private cleanupTime(w: TimeWindow): number {
    return this.eventTime ? w.end - 1 + this.lateness : w.end - 1;
  }

  private act(result: TriggerResult, ns: string, window: TimeWindow): void {
    if (result === "FIRE" || result === "FIRE_AND_PURGE") this.fireTriggered(ns, window);
    if (result === "PURGE" || result === "FIRE_AND_PURGE") this.clear(ns);
  }

  private onTimerTriggered(t: Timer): void {
    const [start, end] = t.ns.split("|").map(Number) as [number, number];
    const window = { start, end };
    const ctx = this.triggerContext(t.ns);
    const result = t.domain === 0 ? this.trigger!.onEventTime(t.ts, window, ctx) : this.trigger!.onProcessingTime(t.ts, window, ctx);
    this.act(checkResult(result, t.domain === 0 ? "onEventTime" : "onProcessingTime"), t.ns, window);
    if (t.domain === (this.eventTime ? 0 : 1) && t.ts === this.cleanupTime(window)) {
      this.clear(t.ns);
      this.trigger!.clear(window, ctx);
      this.dropSession(start, end);
    }
  }

  /** The trigger's view of the current key and window ns. */
  private triggerContext(ns: string): TriggerContext {
    const timers = this.timers!;
    const c = this.contents;
    return {
      getCurrentWatermark: () => timers.currentWatermark,
      getCurrentProcessingTime: () => Date.now(),
      registerEventTimeTimer: (time) => timers.register(0, time, ns),
      registerProcessingTimeTimer: (time) => timers.register(1, time, ns),
      deleteEventTimeTimer: (time) => timers.delete(0, time, ns),
      deleteProcessingTimeTimer: (time) => timers.delete(1, time, ns),
      getPartitionedState: <T>(name: string) => ({
        value: () => c.get(`${ns}@${name}`) as T | undefined,
        update: (v: T) => c.put(`${ns}@${name}`, v),
        clear: () => c.remove(`${ns}@${name}`),
      }),
    };
  }

  /** Fires window ns on the general path: evictors around the function, which sees the remaining elements. */
  private fireTriggered(ns: string, window: TimeWindow): void {
    const k = this.timers!.keyOf();
    if (!this.evictor) {
      this.fire(k, ns, window.start, window.end);
      return;
    }
    const c = this.contents;
    const n: number | undefined = c.get(ns);
    if (n === undefined || n === 0) return;
    let es: TimestampedValue[] = [];
    for (let i = 0; i < n; i++) {
      const [timestamp, value] = c.get(`${ns}#${i}`) as [number, unknown];
      es.push({ value, timestamp });
    }
    if (this.evictor.evictBefore) es = checkEvicted(this.evictor.evictBefore(es, window), "evictBefore");
    const f = this.node.fn;
    const values = es.map((e) => e.value);
    let input: unknown[];
    if (values.length === 0) input = [];
    else if (f.type === "process") input = values;
    else if (f.type === "reduce") input = [values.reduce((a, b) => f.reduce(a, b))];
    else input = [f.aggregate.getResult(values.reduce((acc, v) => f.aggregate.add(v, acc), f.aggregate.createAccumulator()))];
    if (input.length > 0) this.emit(k, input, window, window.end - 1);
    if (this.evictor.evictAfter) es = checkEvicted(this.evictor.evictAfter(es, window), "evictAfter");
    // The window keeps what the evictors left.
    this.clear(ns);
    es.forEach((e, i) => c.put(`${ns}#${i}`, [e.timestamp, e.value]));
    if (es.length > 0) c.put(ns, es.length);
  }

  private dropSession(s: number, e: number): void {
    if (!this.sessions) return;
    const open = this.sessions.value() ?? [];
    const rest = open.filter((w) => !(w[0] === s && w[1] === e));
    this.sessions.update(rest.length > 0 ? rest : null);
  }

  /** Moves window `from`'s contents into window `to` (session merge). */
  private mergeInto(from: string, to: string): void {
    const f = this.node.fn;
    const c = this.contents;
    if (f.type === "process" || this.evictor) {
      const n: number = c.get(from) ?? 0;
      let m: number = c.get(to) ?? 0;
      for (let i = 0; i < n; i++) {
        c.put(`${to}#${m++}`, c.get(`${from}#${i}`));
        c.remove(`${from}#${i}`);
      }
      c.put(to, m);
      c.remove(from);
      return;
    }
    const acc = c.get(from);
    c.remove(from);
    if (acc === undefined) return;
    const have = c.get(to);
    if (have === undefined) c.put(to, acc);
    else if (f.type === "reduce") c.put(to, f.reduce(have, acc));
    else c.put(to, f.aggregate.merge!(have, acc));
  }

  /** Adds the record to window ns of the current key; true when the window had no state before (its first record). */
  private add(ns: string, record: unknown, ts = 0): boolean {
    const f = this.node.fn;
    const c = this.contents;
    if (this.evictor) {
      const n: number = c.get(ns) ?? 0;
      c.put(`${ns}#${n}`, [ts, record]);
      c.put(ns, n + 1);
      return n === 0;
    }
    if (f.type === "reduce") {
      const acc = c.get(ns);
      c.put(ns, acc === undefined ? record : f.reduce(acc, record));
      return acc === undefined;
    } else if (f.type === "aggregate") {
      const acc = c.get(ns);
      c.put(ns, f.aggregate.add(record, acc === undefined ? f.aggregate.createAccumulator() : acc));
      return acc === undefined;
    }
    const n: number = c.get(ns) ?? 0;
    c.put(`${ns}#${n}`, record);
    c.put(ns, n + 1);
    return n === 0;
  }

  private elements(ns: string): unknown[] | null {
    const f = this.node.fn;
    const c = this.contents;
    if (f.type === "process") {
      const n: number | undefined = c.get(ns);
      if (n === undefined) return null;
      const out: unknown[] = new Array(n);
      for (let i = 0; i < n; i++) out[i] = c.get(`${ns}#${i}`);
      return out;
    }
    const acc = c.get(ns);
    if (acc === undefined) return null;
    return [f.type === "reduce" ? acc : f.aggregate.getResult(acc)];
  }

  private clear(ns: string): void {
    const c = this.contents;
    if (this.node.fn.type === "process" || this.evictor) {
      const n: number = c.get(ns) ?? 0;
      for (let i = 0; i < n; i++) c.remove(`${ns}#${i}`);
    }
    c.remove(ns);
  }

  /** Emits window [start, end) of the current key (nothing when it is empty); records carry end - 1 as timestamp. */
  private fire(k: unknown, ns: string, start: number, end: number): void {
    const elements = this.elements(ns);
    if (elements === null) return;
    this.emit(k, elements, { start, end }, end - 1);
  }

  private emit(k: unknown, elements: unknown[], window: TimeWindow, ts: number | null): void {
    this.time.ts = ts;
    if (this.processFn === null) {
      for (const e of elements) this.out(e);
      return;
    }
    const timers = this.timers;
    const context: WindowContext = {
      window,
      currentWatermark: () => timers?.currentWatermark ?? -Infinity,
      currentProcessingTime: () => Date.now(),
      output: (tag, value) => this.chain.side(tag.id, value),
    };
    this.processFn(k, context, elements, this.collector);
  }

  private onTimer(t: Timer): void {
    if (this.trigger) return this.onTimerTriggered(t);
    const [s, e] = t.ns.split("|").map(Number) as [number, number];
    const fireAt = e - 1;
    if (t.ts === fireAt) this.fire(t.key, t.ns, s, e);
    if (t.ts === fireAt + this.lateness) {
      this.clear(t.ns);
      this.dropSession(s, e);
    }
  }

  private processCount(record: unknown, k: unknown, size: number, slide: number): void {
    const c = this.contents;
    const total: number = (c.get("total") ?? 0) + 1;
    c.put("total", total);
    if (slide === size) {
      this.add("count", record);
      if (total % size === 0) {
        const elements = this.elements("count")!;
        this.clear("count");
        this.emit(k, elements, { start: total - size, end: total }, this.time.ts);
      }
      return;
    }
    const buf: unknown[] = c.get("sliding") ?? [];
    const next = buf.length >= size ? buf.slice(buf.length - size + 1) : buf.slice();
    next.push(record);
    c.put("sliding", next);
    if (total % slide === 0) {
      const f = this.node.fn;
      let elements: unknown[];
      if (f.type === "process") elements = next;
      else if (f.type === "reduce") elements = [next.reduce((x, y) => f.reduce(x, y))];
      else {
        let acc = f.aggregate.createAccumulator();
        for (const e of next) acc = f.aggregate.add(e, acc);
        elements = [f.aggregate.getResult(acc)];
      }
      this.emit(k, elements, { start: total - next.length, end: total }, this.time.ts);
    }
  }

  processWatermark(wm: number): void {
    this.timers?.advanceWatermark(wm);
    this.chain.watermark(wm);
  }

  snapshotState(): void {
    this.timers?.snapshot();
  }

  endInput(): void {
    // Processing-time windows still open at the end of a bounded input are emitted (Flink drops them).
    if (this.timers && !this.eventTime) this.timers.fireProcessingTime(Infinity);
    const p = this.node.fn.process;
    if (p && typeof p === "object" && typeof p.close === "function") p.close();
  }

  dispose(): void {
    this.timers?.dispose();
  }
}

function mod(a: number, b: number): number {
  const r = a % b;
  return r < 0 ? r + b : r;
}

const RESULTS = new Set<TriggerResult>(["CONTINUE", "FIRE", "PURGE", "FIRE_AND_PURGE"]);

function checkResult(r: unknown, what: string): TriggerResult {
  if (!RESULTS.has(r as TriggerResult)) throw new Error(`window trigger: ${what} returned ${JSON.stringify(r)}; expected "CONTINUE", "FIRE", "PURGE" or "FIRE_AND_PURGE"`);
  return r as TriggerResult;
}

function checkEvicted(es: unknown, what: string): TimestampedValue[] {
  if (!Array.isArray(es)) throw new Error(`window evictor: ${what} returned ${preview(es)}; expected the array of elements to keep`);
  return es as TimestampedValue[];
}
