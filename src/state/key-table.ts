// The heap backend's per-key-group table: a Map<HeapKey, unknown> in less memory while every key is a number.
//
// A JS Map costs 40-90 bytes per entry in Bun (its hash table and entry storage double as they grow; measured
// with 5 M integer keys: 87 bytes per key, against 16 bytes of key and value). Keys are mostly numbers (ids,
// counters), so this table keeps number keys in a Float64Array and their values in a plain array (a number value
// is stored unboxed in both), open addressing with linear probing, at most 3/4 full: 17 bytes per slot, about 25-45
// bytes per key. The first key that is not a number (or is NaN) turns the table into a Map, which it delegates to
// from then on. Iteration order is the table's, not insertion order (nothing relies on it); an iterator stays
// valid under set and delete, as a Map's, but may skip or repeat entries moved by a resize in between (only the
// incremental TTL cleanup iterates across mutations, and it tolerates both).
import type { HeapKey } from "./serde.ts";

const EMPTY = 0;
const FULL = 1;
const DELETED = 2;
const MIN_CAPACITY = 16;

const f64 = new Float64Array(1);
const i32 = new Int32Array(f64.buffer);

function hashNumber(k: number): number {
  let h: number;
  if ((k | 0) === k) h = k;
  else {
    f64[0] = k;
    h = i32[0]! ^ Math.imul(i32[1]!, 0x27d4eb2d);
  }
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}

export class KeyTable {
  private keys: Float64Array;
  private vals: unknown[];
  private state: Uint8Array;
  private mask: number;
  /** Live entries, and slots used (live + deleted), which bounds probing. */
  private live = 0;
  private used = 0;
  /** Set once a key that is not a number arrived: everything lives here then. */
  private generic: Map<HeapKey, unknown> | null = null;

  constructor() {
    this.keys = new Float64Array(MIN_CAPACITY);
    this.vals = new Array(MIN_CAPACITY).fill(undefined);
    this.state = new Uint8Array(MIN_CAPACITY);
    this.mask = MIN_CAPACITY - 1;
  }

  get size(): number {
    return this.generic === null ? this.live : this.generic.size;
  }

  /** The slot of number key `k`, or -1. */
  private find(k: number): number {
    const keys = this.keys;
    const state = this.state;
    const mask = this.mask;
    let i = hashNumber(k) & mask;
    for (;;) {
      const s = state[i]!;
      if (s === EMPTY) return -1;
      if (s === FULL && keys[i] === k) return i;
      i = (i + 1) & mask;
    }
  }

  get(k: HeapKey): unknown {
    if (this.generic !== null) return this.generic.get(k);
    if (typeof k !== "number") return undefined;
    const i = this.find(k);
    return i < 0 ? undefined : this.vals[i];
  }

  has(k: HeapKey): boolean {
    if (this.generic !== null) return this.generic.has(k);
    return typeof k === "number" && this.find(k) >= 0;
  }

  set(k: HeapKey, v: unknown): this {
    if (this.generic !== null) {
      this.generic.set(k, v);
      return this;
    }
    if (typeof k !== "number" || k !== k) {
      this.toGeneric().set(k, v);
      return this;
    }
    if (k === 0) k = 0; // -0 and 0 are one key, as in a Map
    const keys = this.keys;
    const state = this.state;
    const mask = this.mask;
    let i = hashNumber(k) & mask;
    let tomb = -1;
    for (;;) {
      const s = state[i]!;
      if (s === EMPTY) break;
      if (s === FULL) {
        if (keys[i] === k) {
          this.vals[i] = v;
          return this;
        }
      } else if (tomb < 0) tomb = i;
      i = (i + 1) & mask;
    }
    if (tomb >= 0) i = tomb;
    else this.used++;
    keys[i] = k;
    this.vals[i] = v;
    state[i] = FULL;
    this.live++;
    if (this.used * 4 > (mask + 1) * 3) this.resize();
    return this;
  }

  delete(k: HeapKey): boolean {
    if (this.generic !== null) return this.generic.delete(k);
    if (typeof k !== "number") return false;
    const i = this.find(k);
    if (i < 0) return false;
    this.state[i] = DELETED;
    this.vals[i] = undefined;
    this.live--;
    if (this.live === 0) {
      // Empty: drop a large table; a small one is only reset (a key set and removed per record allocates nothing).
      if (this.mask + 1 > MIN_CAPACITY) this.clear();
      else {
        this.state.fill(EMPTY);
        this.used = 0;
      }
    }
    return true;
  }

  clear(): void {
    this.generic = null;
    this.keys = new Float64Array(MIN_CAPACITY);
    this.vals = new Array(MIN_CAPACITY).fill(undefined);
    this.state = new Uint8Array(MIN_CAPACITY);
    this.mask = MIN_CAPACITY - 1;
    this.live = this.used = 0;
  }

  /** Rehashes into a table sized for the live entries (grows when full, drops tombstones). */
  private resize(): void {
    let cap = MIN_CAPACITY;
    while (this.live * 2 > cap) cap *= 2; // at most half full afterwards
    const { keys, vals, state } = this;
    this.keys = new Float64Array(cap);
    this.vals = new Array(cap).fill(undefined);
    this.state = new Uint8Array(cap);
    this.mask = cap - 1;
    this.used = this.live;
    for (let j = 0; j < state.length; j++) {
      if (state[j] !== FULL) continue;
      const k = keys[j]!;
      let i = hashNumber(k) & this.mask;
      while (this.state[i] !== EMPTY) i = (i + 1) & this.mask;
      this.keys[i] = k;
      this.vals[i] = vals[j];
      this.state[i] = FULL;
    }
  }

  private toGeneric(): Map<HeapKey, unknown> {
    const m = new Map<HeapKey, unknown>();
    for (const [k, v] of this.entries()) m.set(k, v);
    this.clear();
    this.generic = m;
    return m;
  }

  *entries(): IterableIterator<[HeapKey, unknown]> {
    if (this.generic !== null) {
      yield* this.generic.entries();
      return;
    }
    // Re-read the arrays at every step: a resize in between replaces them (see the file comment).
    for (let i = 0; ; i++) {
      if (this.generic !== null) return;
      if (i >= this.state.length) return;
      if (this.state[i] === FULL) yield [this.keys[i]!, this.vals[i]];
    }
  }

  *values(): IterableIterator<unknown> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[HeapKey, unknown]> {
    return this.entries();
  }
}
