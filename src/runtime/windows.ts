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
// A record builds no string for its windows: the operator's WindowTable holds each window that has timers with its
// ns built once, and the timers name windows by the table's small integer ids (checkpoints by ns).
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
import { InternalTimerService, preview, type Timer, type TimerNamespaces } from "./event-time.ts";
import { EventTimeTrigger, ProcessingTimeTrigger, type Evictor, type TimestampedValue, type Trigger, type TriggerContext, type TriggerMergeContext, type TriggerResult } from "../api/triggers.ts";
import type { ChainOutput, Collector, Operator, OperatorContext, TimeContext } from "./operator.ts";

type WindowNode = Extract<PlanNode, { kind: "window" }>;

/** A window as the operator knows it while it has timers: its namespace id and its state key ("<start>|<end>"). */
interface WindowNs {
  id: number;
  start: number;
  end: number;
  /** The window's user key in the MapState "__window" and its timers' namespace in checkpoints. */
  ns: string;
  /** Live timers in this window (of any key), plus pins held during a session merge. */
  refs: number;
  /** The next window with the same start (session windows of other lengths). */
  next: WindowNs | null;
}

/**
 * The windows of one operator that have timers, each interned to a small integer id (the timers' namespace id) with
 * its state key built once: a record finds its windows by a lookup on the start, builds no string. Aligned windows
 * (tumbling, sliding) are shared by all keys, so there are a handful; session windows are one per key and session.
 * A window is freed when its last timer fires (after onTimer) or is deleted, and its id is reused; as timers retain
 * their window's id, an id never names two windows while anything refers to it. State is keyed by the ns string,
 * never by the id, so checkpoints do not depend on ids.
 */
export class WindowTable implements TimerNamespaces {
  private readonly byStart = new Map<number, WindowNs>();
  /** Index: id (0 is the "no namespace" id of process functions, never a window). */
  private readonly byId: (WindowNs | undefined)[] = [undefined];
  private readonly free: number[] = [];

  /** Windows with an id now. */
  get size(): number {
    return this.byId.length - 1 - this.free.length;
  }

  /** The highest id handed out so far (ids are reused, so this stays near the most windows alive at once). */
  get highestId(): number {
    return this.byId.length - 1;
  }

  /** The window [start, end), interned if new (with no references: a timer or pin must follow). */
  intern(start: number, end: number): WindowNs {
    const head = this.byStart.get(start);
    for (let w: WindowNs | null = head ?? null; w !== null; w = w.next) if (w.end === end) return w;
    const id = this.free.length > 0 ? this.free.pop()! : this.byId.length;
    const ns = `${start}|${end}`;
    ns.charCodeAt(0); // flattens the concatenation once (JSC ropes): later Map lookups hash a flat string
    const w: WindowNs = { id, start, end, ns, refs: 0, next: head ?? null };
    this.byId[id] = w;
    this.byStart.set(start, w);
    return w;
  }

  window(id: number): WindowNs {
    const w = this.byId[id];
    if (w === undefined) throw new Error(`window namespace id ${id} is not in use`);
    return w;
  }

  idOf(name: string): number {
    const bar = name.indexOf("|");
    const start = Number(name.slice(0, bar));
    const end = Number(name.slice(bar + 1));
    if (bar < 0 || !Number.isFinite(start) || !Number.isFinite(end) || `${start}|${end}` !== name) {
      throw new Error(`a checkpointed window timer has namespace ${JSON.stringify(name)}; expected "<start>|<end>"`);
    }
    return this.intern(start, end).id;
  }

  nameOf(id: number): string {
    return this.window(id).ns;
  }

  retain(id: number): void {
    this.window(id).refs++;
  }

  release(id: number): void {
    const w = this.window(id);
    if (--w.refs > 0) return;
    // Unlink from its start's chain, then free the id.
    const head = this.byStart.get(w.start)!;
    if (head === w) {
      if (w.next === null) this.byStart.delete(w.start);
      else this.byStart.set(w.start, w.next);
    } else {
      let p = head;
      while (p.next !== w) p = p.next!;
      p.next = w.next;
    }
    this.byId[id] = undefined;
    this.free.push(id);
  }
}

export class WindowOperator implements Operator {
  private readonly keyed: KeyedStateBackend;
  private readonly key: (r: unknown) => unknown;
  private readonly contents: MapState<string, any>;
  private readonly sessions: ValueState<[number, number][]> | null;
  private readonly timers: InternalTimerService | null;
  /** The windows with timers, by id (the timers' namespaces). */
  readonly windows = new WindowTable();
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
    this.timers = a.type === "count" ? null : new InternalTimerService(this.keyed, ctx, "__timers", (t) => this.onTimer(t), this.windows);
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
      const w = this.windows.intern(start, end);
      // Timers are registered when the (key, window) first gets state, not again for every record of it.
      this.registerTimers(w, wm, this.add(w.ns, record));
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
  private registerTimers(w: WindowNs, wm: number, first: boolean): void {
    const t = this.timers!;
    const end = w.end;
    if (first && this.lateness > 0) t.register(0, end - 1 + this.lateness, w.id);
    if (this.eventTime && end - 1 <= wm) this.fire(t.keyOf(), w.ns, w.start, end);
    else if (first) t.register(this.eventTime ? 0 : 1, end - 1, w.id);
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
    const table = this.windows;
    const w = table.intern(start, end);
    const ns = w.ns;
    const t = this.timers!;
    // The merged windows stay pinned (their ids valid) until their triggers are cleared below.
    const olds: WindowNs[] = [];
    table.retain(w.id);
    for (const [s, e] of merged) {
      if (s === start && e === end) continue;
      const old = table.intern(s, e);
      table.retain(old.id);
      olds.push(old);
      t.delete(this.eventTime ? 0 : 1, e - 1, old.id);
      if (this.lateness > 0) t.delete(0, e - 1 + this.lateness, old.id);
      this.mergeInto(old.ns, ns);
    }
    rest.push([start, end]);
    this.sessions!.update(rest);
    try {
      this.mergedSession(record, ts, wm, w, olds);
    } finally {
      for (const old of olds) table.release(old.id);
      table.release(w.id);
    }
  }

  private mergedSession(record: unknown, ts: number, wm: number, w: WindowNs, olds: WindowNs[]): void {
    const { start, end, ns } = w;
    if (this.trigger) {
      // Flink's order: the merged windows' trigger state goes into the new window (onMerge), then their triggers are
      // cleared; then the element is added and its trigger called.
      const window = { start, end };
      if (olds.length > 0) {
        const ctx: TriggerMergeContext = {
          ...this.triggerContext(w),
          mergePartitionedState: <T>(name: string, merge: (a: T, b: T) => T) => {
            const c = this.contents;
            let acc: T | undefined = c.get(`${ns}@${name}`);
            for (const old of olds) {
              const v: T | undefined = c.get(`${old.ns}@${name}`);
              if (v !== undefined) acc = acc === undefined ? v : merge(acc, v);
            }
            if (acc !== undefined) c.put(`${ns}@${name}`, acc);
          },
        };
        this.trigger.onMerge?.(window, ctx);
        for (const old of olds) this.trigger.clear({ start: old.start, end: old.end }, this.triggerContext(old));
      }
      this.onElementTriggered(record, ts, w, window);
      return;
    }
    this.add(ns, record);
    // A merged session is a new window with old contents: its timers are registered whatever add() found.
    this.registerTimers(w, wm, true);
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
      this.onElementTriggered(record, ts, this.windows.intern(start, end), { start, end });
    }
    if (!accepted) this.late(record, ts, wm);
  }

  private onElementTriggered(record: unknown, ts: number, w: WindowNs, window: TimeWindow): void {
    // The cleanup timer first (contents and trigger state go once the window can get no more elements): it keeps
    // the window's id while the trigger runs.
    this.timers!.register(this.eventTime ? 0 : 1, this.cleanupTime(window), w.id);
    this.add(w.ns, record, ts);
    const result = this.trigger!.onElement(record, ts, window, this.triggerContext(w));
    this.act(checkResult(result, "onElement"), w.ns, window);
  }

  private cleanupTime(w: TimeWindow): number {
    return this.eventTime ? w.end - 1 + this.lateness : w.end - 1;
  }

  private act(result: TriggerResult, ns: string, window: TimeWindow): void {
    if (result === "FIRE" || result === "FIRE_AND_PURGE") this.fireTriggered(ns, window);
    if (result === "PURGE" || result === "FIRE_AND_PURGE") this.clear(ns);
  }

  private onTimerTriggered(t: Timer): void {
    const w = this.windows.window(t.ns);
    const { start, end, ns } = w;
    const window = { start, end };
    const ctx = this.triggerContext(w);
    const result = t.domain === 0 ? this.trigger!.onEventTime(t.ts, window, ctx) : this.trigger!.onProcessingTime(t.ts, window, ctx);
    this.act(checkResult(result, t.domain === 0 ? "onEventTime" : "onProcessingTime"), ns, window);
    if (t.domain === (this.eventTime ? 0 : 1) && t.ts === this.cleanupTime(window)) {
      this.clear(ns);
      this.trigger!.clear(window, ctx);
      this.dropSession(start, end);
    }
  }

  /** The trigger's view of the current key and window w (its id stays valid while a timer or pin holds it). */
  private triggerContext(w: WindowNs): TriggerContext {
    const timers = this.timers!;
    const c = this.contents;
    const { id, ns } = w;
    return {
      getCurrentWatermark: () => timers.currentWatermark,
      getCurrentProcessingTime: () => Date.now(),
      registerEventTimeTimer: (time) => timers.register(0, time, id),
      registerProcessingTimeTimer: (time) => timers.register(1, time, id),
      deleteEventTimeTimer: (time) => timers.delete(0, time, id),
      deleteProcessingTimeTimer: (time) => timers.delete(1, time, id),
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
    const { start, end, ns } = this.windows.window(t.ns);
    const fireAt = end - 1;
    if (t.ts === fireAt) this.fire(t.key, ns, start, end);
    if (t.ts === fireAt + this.lateness) {
      this.clear(ns);
      this.dropSession(start, end);
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
