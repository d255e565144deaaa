// What both keyed backends share: the current key and its key group, the range check, the state registry, and
// the state objects (with TTL) on top of each backend's storage "cells".
import {
  type AggregatingState,
  type AggregatingStateDescriptor,
  type KeyGroupRange,
  type ListState,
  type ListStateDescriptor,
  type MapState,
  type MapStateDescriptor,
  type ReducingState,
  type ReducingStateDescriptor,
  type StateDescriptor,
  type StateKind,
  type StateTtlConfig,
  type ValueState,
  type ValueStateDescriptor,
} from "./api.ts";
import { keyGroupOf } from "./key-groups.ts";
import { decode, decodeMany, describeKey, encode, encodeMany, heapKeyOf, type HeapKey } from "./serde.ts";
import type { BackendKind, KeyedSnapshotHandle, SnapshotOptions, SnapshotStateMeta } from "./snapshot-format.ts";

export type Clock = () => number;

/** The keyed state backend of one task: the runtime sets the current key, operators read and write state. */
export interface KeyedStateBackend {
  readonly kind: BackendKind;
  readonly keyGroupRange: KeyGroupRange;
  readonly maxParallelism: number;
  /** Scopes all keyed state to `key`; throws if the key's group is outside this backend's range. */
  setCurrentKey(key: unknown): void;
  getCurrentKey(): unknown;
  /** The current key's key group (-1 before the first setCurrentKey). */
  getCurrentKeyGroup(): number;
  /** The current key's heap key (serde.ts): its identity as a JS Map key, computed once by setCurrentKey. */
  getCurrentHeapKey(): HeapKey;
  getState<T>(descriptor: ValueStateDescriptor<T>): ValueState<T>;
  getListState<T>(descriptor: ListStateDescriptor<T>): ListState<T>;
  getMapState<K, V>(descriptor: MapStateDescriptor<K, V>): MapState<K, V>;
  getReducingState<T>(descriptor: ReducingStateDescriptor<T>): ReducingState<T>;
  getAggregatingState<IN, ACC, OUT>(descriptor: AggregatingStateDescriptor<IN, ACC, OUT>): AggregatingState<IN, OUT>;
  /** One incremental TTL cleanup step: looks at up to `maxEntries` stored entries, removes the expired ones,
   *  and returns how many it removed. Call it now and then (e.g. per processed batch). */
  cleanupExpired(maxEntries?: number): number;
  /** Writes a consistent snapshot of this backend's key groups into `dir`. The synchronous part is short;
   *  processing may continue while the returned promise is pending. With `incremental` (SQLite backend opened
   *  with `incremental: true`) only the rows changed since the last completed checkpoint are written, and the
   *  handle lists that checkpoint's files before the new one. */
  snapshot(dir: string, opts?: SnapshotOptions): Promise<KeyedSnapshotHandle>;
  /** Checkpoint `checkpointId` completed everywhere: its snapshot becomes the base of the next change set. */
  notifyCheckpointComplete(checkpointId: number): void;
  /** Replaces this backend's contents with the key groups of its range found in `handles` (from any backend
   *  kind and any old parallelism). */
  restore(handles: readonly KeyedSnapshotHandle[]): Promise<void>;
  /**
   * Flushes (SQLite) and releases resources. The backend is unusable afterwards. `discard`: its working copy is
   * deleted next (a task's end: checkpoints keep what must survive it), so SQLite does not write its cache back.
   */
  close(opts?: CloseOptions): Promise<void>;
  /** Size and cache figures for the task's metrics; cheap enough to call every second. */
  stats(): KeyedStateStats;
  /**
   * The keys (of this backend's key groups) that hold a value of state `name`, as Flink's getKeys (for
   * applyToKeyedState). A scan over the state: for rare operations, not per record.
   */
  keys(name: string): unknown[];
}

export interface CloseOptions {
  /** The backend's files are deleted right after: nothing cached needs writing to them. */
  discard?: boolean;
}

/** What a keyed backend reports to the task's metrics (tm_task_state_*). */
export interface KeyedStateStats {
  /** Heap: bytes of its last snapshot (serialized; 0 before the first); SQLite: bytes of the database's used pages. */
  sizeBytes: number;
  /** Heap: keys stored, over all states (a map state's key counts once); SQLite: null (counting takes a scan). */
  entries: number | null;
  /** SQLite: lookups in the object cache that found the entry, and those that went to SQLite. */
  cacheHits?: number;
  cacheMisses?: number;
}

// ---- Storage cells: the current key's storage for one state, as stored values ----
// With TTL a stored value is [value, lastAccessTs]; a list's elements and a map's values are each wrapped.

export interface ValueCell {
  get(): unknown;
  put(stored: unknown): void;
  remove(): void;
  /** get() returns the stored object itself, so a change made to it is stored already (heap); else put() must follow. */
  readonly keepsReference?: boolean;
}
export interface ListCell {
  /** A fresh array (the caller owns it), or undefined. */
  get(): unknown[] | undefined;
  add(element: unknown): void;
  addAll(elements: unknown[]): void;
  put(elements: unknown[]): void;
  remove(): void;
}
export interface MapCell {
  get(userKey: unknown): unknown;
  contains(userKey: unknown): boolean;
  put(userKey: unknown, stored: unknown): void;
  remove(userKey: unknown): void;
  entries(): Iterable<[unknown, unknown]>;
  isEmpty(): boolean;
  clear(): void;
}
export type Cell = ValueCell | ListCell | MapCell;

export interface BackendOptions {
  maxParallelism: number;
  keyGroupRange: KeyGroupRange;
  clock?: Clock;
}

export function checkRange(maxParallelism: number, range: KeyGroupRange): void {
  if (!Number.isInteger(maxParallelism) || maxParallelism < 1 || maxParallelism > 32768) {
    throw new RangeError(`maxParallelism must be an integer in [1, 32768], got ${maxParallelism}`);
  }
  if (!range || !Number.isInteger(range.start) || !Number.isInteger(range.end) || range.start < 0 || range.end >= maxParallelism || range.start > range.end) {
    throw new RangeError(`key-group range ${JSON.stringify(range)} is not a non-empty range within [0, ${maxParallelism - 1}]`);
  }
}

export function metaOf(d: StateDescriptor): SnapshotStateMeta {
  return { name: d.name, kind: d.kind, ttlMs: d.ttl ? d.ttl.ttlMs : null };
}

/** Throws unless a state registered (or restored) as `have` may be used through a descriptor giving `want`. */
export function checkCompatible(have: SnapshotStateMeta, want: SnapshotStateMeta, where: string): void {
  if (have.kind !== want.kind) {
    throw new Error(`state "${want.name}" is ${articled(have.kind)} state${where}, it cannot be used as ${articled(want.kind)} state`);
  }
  if ((have.ttlMs === null) !== (want.ttlMs === null)) {
    throw new Error(
      `state "${want.name}" was ${have.ttlMs === null ? "registered without" : "registered with"} TTL${where}; enabling or disabling TTL of existing state is not supported`,
    );
  }
}
const articled = (k: StateKind) => (k === "aggregating" ? "an aggregating" : `a ${k}`);

export abstract class KeyedBackendBase implements KeyedStateBackend {
  abstract readonly kind: BackendKind;
  readonly keyGroupRange: KeyGroupRange;
  readonly maxParallelism: number;
  readonly clock: Clock;
  protected readonly kgStart: number;
  protected readonly kgEnd: number;
  /** Index of the current key group within the range; -1 before the first setCurrentKey. */
  kgIdx = -1;
  /** The current key's heap key (see serde.ts). */
  hk: HeapKey = undefined;
  protected curKey: unknown = undefined;
  protected closed = false;
  private readonly stateObjects = new Map<string, { meta: SnapshotStateMeta; state: unknown }>();

  constructor(opts: BackendOptions) {
    checkRange(opts.maxParallelism, opts.keyGroupRange);
    this.maxParallelism = opts.maxParallelism;
    this.keyGroupRange = { start: opts.keyGroupRange.start, end: opts.keyGroupRange.end };
    this.kgStart = opts.keyGroupRange.start;
    this.kgEnd = opts.keyGroupRange.end;
    this.clock = opts.clock ?? Date.now;
  }

  setCurrentKey(key: unknown): void {
    const kg = keyGroupOf(key, this.maxParallelism);
    if (kg < this.kgStart || kg > this.kgEnd) {
      throw new RangeError(
        `key ${describeKey(key)} belongs to key group ${kg}, which is outside this ${this.kind} backend's key-group range [${this.kgStart}, ${this.kgEnd}] (maxParallelism ${this.maxParallelism})`,
      );
    }
    this.hk = heapKeyOf(key);
    this.curKey = key;
    this.kgIdx = kg - this.kgStart;
    this.keyChanged(this.kgIdx);
  }

  getCurrentKey(): unknown {
    return this.curKey;
  }

  getCurrentKeyGroup(): number {
    return this.kgIdx < 0 ? -1 : this.kgIdx + this.kgStart;
  }

  getCurrentHeapKey(): HeapKey {
    return this.hk;
  }

  /** Hook after setCurrentKey. */
  protected abstract keyChanged(kgIdx: number): void;
  /** The storage cell of a state (created, or checked against what is stored). */
  protected abstract cellFor(meta: SnapshotStateMeta): Cell;

  noKey(): never {
    if (this.closed) throw new Error(`the ${this.kind} state backend is closed`);
    throw new Error("keyed state accessed without a current key: call setCurrentKey first");
  }

  getState<T>(d: ValueStateDescriptor<T>): ValueState<T> {
    return this.register(d, (cell) =>
      d.ttl ? new TtlValueStateImpl<T>(cell as ValueCell, d.defaultValue, this.ttl(d.ttl)) : new ValueStateImpl<T>(cell as ValueCell, d.defaultValue),
    );
  }
  getListState<T>(d: ListStateDescriptor<T>): ListState<T> {
    return this.register(d, (cell) => (d.ttl ? new TtlListStateImpl<T>(cell as ListCell, this.ttl(d.ttl)) : new ListStateImpl<T>(cell as ListCell)));
  }
  getMapState<K, V>(d: MapStateDescriptor<K, V>): MapState<K, V> {
    return this.register(d, (cell) => new MapStateImpl<K, V>(cell as MapCell, d.ttl ? this.ttl(d.ttl) : undefined));
  }
  getReducingState<T>(d: ReducingStateDescriptor<T>): ReducingState<T> {
    return this.register(d, (cell) => {
      const ttl = d.ttl ? this.ttl(d.ttl) : undefined;
      return new AppendingStateImpl<T, T, T>(cell as ValueCell, ttl, (v, acc) => (acc === undefined ? v : d.reduce(acc, v)), (acc) => acc);
    });
  }
  getAggregatingState<IN, ACC, OUT>(d: AggregatingStateDescriptor<IN, ACC, OUT>): AggregatingState<IN, OUT> {
    return this.register(d, (cell) => {
      const ttl = d.ttl ? this.ttl(d.ttl) : undefined;
      const f = d.aggregate;
      return new AppendingStateImpl<IN, ACC, OUT>(cell as ValueCell, ttl, (v, acc) => f.add(v, acc === undefined ? f.createAccumulator() : acc), (acc) => f.getResult(acc));
    });
  }

  private ttl(c: StateTtlConfig): Ttl {
    return { ttlMs: c.ttlMs, updateOnRead: c.updateType === "onReadAndWrite", returnExpired: c.visibility === "returnExpiredIfNotCleanedUp", clock: this.clock };
  }

  private register<S>(d: StateDescriptor, make: (cell: Cell) => S): S {
    if (this.closed) throw new Error(`the ${this.kind} state backend is closed`);
    if (typeof d?.name !== "string" || d.name.length === 0) throw new TypeError("a state descriptor needs a non-empty name");
    const meta = metaOf(d);
    const have = this.stateObjects.get(d.name);
    if (have) {
      checkCompatible(have.meta, meta, " in this backend");
      return have.state as S;
    }
    const state = make(this.cellFor(meta));
    this.stateObjects.set(d.name, { meta, state });
    return state;
  }

  abstract cleanupExpired(maxEntries?: number): number;
  abstract snapshot(dir: string, opts?: SnapshotOptions): Promise<KeyedSnapshotHandle>;
  /** Only backends with incremental snapshots need to know. */
  notifyCheckpointComplete(_checkpointId: number): void {}
  abstract restore(handles: readonly KeyedSnapshotHandle[]): Promise<void>;
  abstract close(opts?: CloseOptions): Promise<void>;
  abstract stats(): KeyedStateStats;
  abstract keys(name: string): unknown[];
}

// ---- TTL ----

interface Ttl {
  ttlMs: number;
  updateOnRead: boolean;
  returnExpired: boolean;
  clock: Clock;
}

/** The stored form of a value, list or map entry after TTL filtering at `now`: the same object when nothing
 *  expired, a filtered list, or undefined when everything expired. Used for snapshot, restore and cleanup. */
export function unexpiredStored(kind: StateKind, ttlMs: number, stored: unknown, now: number): unknown {
  if (kind === "list") {
    const list = stored as [unknown, number][];
    let keep: [unknown, number][] | undefined;
    for (let i = 0; i < list.length; i++) {
      if (list[i]![1] + ttlMs <= now) {
        keep ??= list.slice(0, i);
      } else if (keep) keep.push(list[i]!);
    }
    if (keep === undefined) return stored;
    return keep.length === 0 ? undefined : keep;
  }
  return (stored as [unknown, number])[1] + ttlMs <= now ? undefined : stored;
}

/** unexpiredStored on stored bytes: the same bytes, re-encoded bytes, or null when everything expired. */
export function unexpiredBytes(kind: StateKind, ttlMs: number, bytes: Uint8Array, now: number): Uint8Array | null {
  const stored = kind === "list" ? decodeMany(bytes) : decode(bytes);
  const kept = unexpiredStored(kind, ttlMs, stored, now);
  if (kept === undefined) return null;
  if (kept === stored) return bytes;
  return kind === "list" ? encodeMany(kept as unknown[]) : encode(kept);
}

// ---- State objects ----

class ValueStateImpl<T> implements ValueState<T> {
  constructor(private readonly cell: ValueCell, private readonly def: T | undefined) {}
  /** Internal: value() is the stored object itself, so changing that object in place changes the state. */
  get storesReference(): boolean {
    return this.cell.keepsReference === true;
  }
  value(): T | undefined {
    const s = this.cell.get();
    return s === undefined ? this.def : (s as T);
  }
  update(v: T | null | undefined): void {
    if (v === undefined || v === null) this.cell.remove();
    else this.cell.put(v);
  }
  clear(): void {
    this.cell.remove();
  }
}

class TtlValueStateImpl<T> implements ValueState<T> {
  constructor(private readonly cell: ValueCell, private readonly def: T | undefined, private readonly t: Ttl) {}
  value(): T | undefined {
    const s = this.cell.get() as [T, number] | undefined;
    if (s === undefined) return this.def;
    const now = this.t.clock();
    if (s[1] + this.t.ttlMs <= now) {
      this.cell.remove();
      return this.t.returnExpired ? s[0] : this.def;
    }
    if (this.t.updateOnRead) this.cell.put([s[0], now]);
    return s[0];
  }
  update(v: T | null | undefined): void {
    if (v === undefined || v === null) this.cell.remove();
    else this.cell.put([v, this.t.clock()]);
  }
  clear(): void {
    this.cell.remove();
  }
}

function checkElement(v: unknown): void {
  if (v === undefined || v === null) throw new TypeError("list state elements must not be null or undefined");
}

class ListStateImpl<T> implements ListState<T> {
  constructor(private readonly cell: ListCell) {}
  get(): T[] {
    return (this.cell.get() as T[] | undefined) ?? [];
  }
  add(v: T): void {
    checkElement(v);
    this.cell.add(v);
  }
  addAll(vs: Iterable<T>): void {
    const arr = [...vs];
    arr.forEach(checkElement);
    if (arr.length > 0) this.cell.addAll(arr);
  }
  update(vs: Iterable<T>): void {
    const arr = [...vs];
    arr.forEach(checkElement);
    if (arr.length === 0) this.cell.remove();
    else this.cell.put(arr);
  }
  clear(): void {
    this.cell.remove();
  }
}

class TtlListStateImpl<T> implements ListState<T> {
  constructor(private readonly cell: ListCell, private readonly t: Ttl) {}
  get(): T[] {
    const l = this.cell.get() as [T, number][] | undefined;
    if (l === undefined || l.length === 0) return [];
    const now = this.t.clock();
    const out: T[] = [];
    const keep: [T, number][] = [];
    let expired = false;
    for (const e of l) {
      if (e[1] + this.t.ttlMs <= now) {
        expired = true;
        if (this.t.returnExpired) out.push(e[0]);
      } else {
        out.push(e[0]);
        keep.push(this.t.updateOnRead ? [e[0], now] : e);
      }
    }
    if (expired || this.t.updateOnRead) {
      if (keep.length === 0) this.cell.remove();
      else this.cell.put(keep);
    }
    return out;
  }
  add(v: T): void {
    checkElement(v);
    this.cell.add([v, this.t.clock()]);
  }
  addAll(vs: Iterable<T>): void {
    const now = this.t.clock();
    const arr = [...vs].map((v) => (checkElement(v), [v, now]));
    if (arr.length > 0) this.cell.addAll(arr);
  }
  update(vs: Iterable<T>): void {
    const now = this.t.clock();
    const arr = [...vs].map((v) => (checkElement(v), [v, now]));
    if (arr.length === 0) this.cell.remove();
    else this.cell.put(arr);
  }
  clear(): void {
    this.cell.remove();
  }
}

class MapStateImpl<K, V> implements MapState<K, V> {
  constructor(private readonly cell: MapCell, private readonly t: Ttl | undefined) {}

  /** [found, value] with TTL handling. */
  private lookup(k: K): [boolean, V | undefined] {
    const t = this.t;
    if (t === undefined) {
      const v = this.cell.get(k) as V | undefined;
      return v !== undefined ? [true, v] : [this.cell.contains(k), undefined];
    }
    const s = this.cell.get(k) as [V, number] | undefined;
    if (s === undefined) return [false, undefined];
    const now = t.clock();
    if (s[1] + t.ttlMs <= now) {
      this.cell.remove(k);
      return t.returnExpired ? [true, s[0]] : [false, undefined];
    }
    if (t.updateOnRead) this.cell.put(k, [s[0], now]);
    return [true, s[0]];
  }

  get(k: K): V | undefined {
    if (this.t === undefined) return this.cell.get(k) as V | undefined;
    return this.lookup(k)[1];
  }
  contains(k: K): boolean {
    return this.lookup(k)[0];
  }
  put(k: K, v: V): void {
    this.cell.put(k, this.t ? [v, this.t.clock()] : v);
  }
  putAll(entries: Iterable<[K, V]> | Map<K, V>): void {
    for (const [k, v] of entries) this.put(k, v);
  }
  remove(k: K): void {
    this.cell.remove(k);
  }
  private all(): [K, V][] {
    const t = this.t;
    if (t === undefined) return [...this.cell.entries()] as [K, V][];
    const now = t.clock();
    const out: [K, V][] = [];
    const expired: K[] = [];
    const refresh: [K, V][] = [];
    for (const [k, s] of this.cell.entries() as Iterable<[K, [V, number]]>) {
      if (s[1] + t.ttlMs <= now) {
        expired.push(k);
        if (t.returnExpired) out.push([k, s[0]]);
      } else {
        out.push([k, s[0]]);
        if (t.updateOnRead) refresh.push([k, s[0]]);
      }
    }
    for (const k of expired) this.cell.remove(k);
    for (const [k, v] of refresh) this.cell.put(k, [v, now]);
    return out;
  }
  entries(): IterableIterator<[K, V]> {
    if (this.t === undefined) return this.cell.entries()[Symbol.iterator]() as IterableIterator<[K, V]>;
    return this.all()[Symbol.iterator]();
  }
  keys(): IterableIterator<K> {
    return this.all().map((e) => e[0])[Symbol.iterator]();
  }
  values(): IterableIterator<V> {
    return this.all().map((e) => e[1])[Symbol.iterator]();
  }
  isEmpty(): boolean {
    if (this.t === undefined) return this.cell.isEmpty();
    return this.all().length === 0;
  }
  clear(): void {
    this.cell.clear();
  }
}

/** Reducing and aggregating state: an accumulator per key, folded by `fold`. */
class AppendingStateImpl<IN, ACC, OUT> {
  constructor(
    private readonly cell: ValueCell,
    private readonly t: Ttl | undefined,
    private readonly fold: (v: IN, acc: ACC | undefined) => ACC,
    private readonly result: (acc: ACC) => OUT,
  ) {}
  get(): OUT | undefined {
    const s = this.cell.get();
    if (s === undefined) return undefined;
    const t = this.t;
    if (t === undefined) return this.result(s as ACC);
    const [acc, ts] = s as [ACC, number];
    const now = t.clock();
    if (ts + t.ttlMs <= now) {
      this.cell.remove();
      return t.returnExpired ? this.result(acc) : undefined;
    }
    if (t.updateOnRead) this.cell.put([acc, now]);
    return this.result(acc);
  }
  add(v: IN): void {
    const s = this.cell.get();
    const t = this.t;
    if (t === undefined) {
      this.cell.put(this.fold(v, s as ACC | undefined));
      return;
    }
    const now = t.clock();
    // An expired accumulator counts as absent, whatever the visibility (as in Flink's TTL reduce).
    const acc = s === undefined || (s as [ACC, number])[1] + t.ttlMs <= now ? undefined : (s as [ACC, number])[0];
    this.cell.put([this.fold(v, acc), now]);
  }
  clear(): void {
    this.cell.remove();
  }
}
