// The user-facing state API, in Flink's shape: descriptors, state objects, TTL configuration, errors.
// Every read and write of a state object is synchronous: the runtime calls them from a task's Worker, one record
// at a time. Only opening a backend, snapshot and restore are async.

export type StateKind = "value" | "list" | "map" | "reducing" | "aggregating";

/** Which accesses refresh an entry's last-access timestamp. */
export type TtlUpdateType = "onCreateAndWrite" | "onReadAndWrite";
/** Whether an expired entry that is still stored may be returned (once: reading it also removes it). */
export type TtlVisibility = "neverReturnExpired" | "returnExpiredIfNotCleanedUp";

export interface StateTtlConfig {
  /** An entry expires when `lastAccess + ttlMs <= clock()`. */
  ttlMs: number;
  updateType?: TtlUpdateType; // default "onCreateAndWrite"
  visibility?: TtlVisibility; // default "neverReturnExpired"
}

export interface StateDescriptorBase {
  readonly kind: StateKind;
  readonly name: string;
  readonly ttl?: StateTtlConfig;
}

export class ValueStateDescriptor<T> implements StateDescriptorBase {
  readonly kind = "value" as const;
  readonly defaultValue: T | undefined;
  readonly ttl?: StateTtlConfig;
  constructor(readonly name: string, options: { default?: T; ttl?: StateTtlConfig } = {}) {
    this.defaultValue = options.default;
    this.ttl = checkTtl(name, options.ttl);
  }
}

export class ListStateDescriptor<T> implements StateDescriptorBase {
  readonly kind = "list" as const;
  readonly ttl?: StateTtlConfig;
  declare readonly _element?: T;
  constructor(readonly name: string, options: { ttl?: StateTtlConfig } = {}) {
    this.ttl = checkTtl(name, options.ttl);
  }
}

export class MapStateDescriptor<K, V> implements StateDescriptorBase {
  readonly kind = "map" as const;
  readonly ttl?: StateTtlConfig;
  declare readonly _key?: K;
  declare readonly _value?: V;
  constructor(readonly name: string, options: { ttl?: StateTtlConfig } = {}) {
    this.ttl = checkTtl(name, options.ttl);
  }
}

export class ReducingStateDescriptor<T> implements StateDescriptorBase {
  readonly kind = "reducing" as const;
  readonly ttl?: StateTtlConfig;
  constructor(readonly name: string, readonly reduce: (a: T, b: T) => T, options: { ttl?: StateTtlConfig } = {}) {
    if (typeof reduce !== "function") throw new TypeError(`ReducingStateDescriptor "${name}": reduce must be a function`);
    this.ttl = checkTtl(name, options.ttl);
  }
}

export interface AggregateFunction<IN, ACC, OUT> {
  createAccumulator(): ACC;
  add(value: IN, accumulator: ACC): ACC;
  getResult(accumulator: ACC): OUT;
  merge?(a: ACC, b: ACC): ACC;
}

export class AggregatingStateDescriptor<IN, ACC, OUT> implements StateDescriptorBase {
  readonly kind = "aggregating" as const;
  readonly ttl?: StateTtlConfig;
  constructor(readonly name: string, readonly aggregate: AggregateFunction<IN, ACC, OUT>, options: { ttl?: StateTtlConfig } = {}) {
    for (const f of ["createAccumulator", "add", "getResult"] as const) {
      if (typeof aggregate?.[f] !== "function") throw new TypeError(`AggregatingStateDescriptor "${name}": ${f} must be a function`);
    }
    this.ttl = checkTtl(name, options.ttl);
  }
}

export type StateDescriptor =
  | ValueStateDescriptor<any>
  | ListStateDescriptor<any>
  | MapStateDescriptor<any, any>
  | ReducingStateDescriptor<any>
  | AggregatingStateDescriptor<any, any, any>;

function checkTtl(name: string, ttl: StateTtlConfig | undefined): StateTtlConfig | undefined {
  if (ttl === undefined) return undefined;
  if (!(typeof ttl.ttlMs === "number" && ttl.ttlMs > 0 && Number.isFinite(ttl.ttlMs))) {
    throw new TypeError(`state "${name}": ttl.ttlMs must be a positive finite number of milliseconds, got ${ttl.ttlMs}`);
  }
  const updateType = ttl.updateType ?? "onCreateAndWrite";
  const visibility = ttl.visibility ?? "neverReturnExpired";
  if (updateType !== "onCreateAndWrite" && updateType !== "onReadAndWrite") {
    throw new TypeError(`state "${name}": ttl.updateType must be "onCreateAndWrite" or "onReadAndWrite", got ${JSON.stringify(updateType)}`);
  }
  if (visibility !== "neverReturnExpired" && visibility !== "returnExpiredIfNotCleanedUp") {
    throw new TypeError(`state "${name}": ttl.visibility must be "neverReturnExpired" or "returnExpiredIfNotCleanedUp", got ${JSON.stringify(visibility)}`);
  }
  return { ttlMs: ttl.ttlMs, updateType, visibility };
}

// ---- State objects. Keyed state is scoped to the backend's current key. ----

export interface State {
  clear(): void;
}

export interface ValueState<T> extends State {
  /** The value for the current key, or the descriptor's default (undefined if none) when there is none. */
  value(): T | undefined;
  /** Sets the value; `null` or `undefined` clears it (as in Flink). */
  update(value: T | null | undefined): void;
}

export interface ListState<T> extends State {
  /** A copy of the list (empty when there is none). */
  get(): T[];
  add(value: T): void;
  addAll(values: Iterable<T>): void;
  /** Replaces the list; an empty list clears it. */
  update(values: Iterable<T>): void;
}

export interface MapState<K, V> extends State {
  get(key: K): V | undefined;
  put(key: K, value: V): void;
  putAll(entries: Iterable<[K, V]> | Map<K, V>): void;
  contains(key: K): boolean;
  remove(key: K): void;
  entries(): IterableIterator<[K, V]>;
  keys(): IterableIterator<K>;
  values(): IterableIterator<V>;
  isEmpty(): boolean;
}

export interface AppendingState<IN, OUT> extends State {
  /** The current result, or undefined when nothing was added. */
  get(): OUT | undefined;
  add(value: IN): void;
}

export type ReducingState<T> = AppendingState<T, T>;
export type AggregatingState<IN, OUT> = AppendingState<IN, OUT>;

/** Broadcast state: a map that holds the same contents on every subtask. */
export type BroadcastState<K, V> = Omit<MapState<K, V>, never>;

export interface KeyGroupRange {
  start: number;
  end: number;
}

/** Thrown for unusable files (corrupt databases or snapshots, unknown schema versions); the message names the file. */
export class StateFileError extends Error {
  constructor(readonly file: string, message: string, options?: { cause?: unknown }) {
    super(`${file}: ${message}`, options);
    this.name = "StateFileError";
  }
}
