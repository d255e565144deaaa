// Operator (non-keyed) state: list state redistributed on restore by "split" (even split of the concatenation
// of all old subtasks' lists) or "union" (every subtask gets everything), and broadcast state (a map that is the
// same on every subtask; each new subtask restores a copy). Kept on the heap whatever the keyed backend is, as
// in Flink; a snapshot copies it synchronously (it is small) and writes the file asynchronously.
import type { BroadcastState, ListState } from "./api.ts";
import { heapKeyOf, keyOfHeapKey, type HeapKey } from "./serde.ts";
import {
  encodeOperatorSnapshot,
  OPERATOR_FORMAT_VERSION,
  readOperatorSnapshot,
  snapshotFileName,
  writeFileAtomic,
  type OperatorSnapshotHandle,
  type OperatorSnapshotPayload,
  type StateInfo,
} from "./snapshot-format.ts";

export type RedistributionMode = "split" | "union";

class OperatorListState<T> implements ListState<T> {
  elements: T[] = [];
  constructor(readonly name: string, readonly mode: RedistributionMode) {}
  get(): T[] {
    return this.elements.slice();
  }
  add(v: T): void {
    if (v === undefined || v === null) throw new TypeError("list state elements must not be null or undefined");
    this.elements.push(v);
  }
  addAll(vs: Iterable<T>): void {
    for (const v of vs) this.add(v);
  }
  update(vs: Iterable<T>): void {
    this.elements = [];
    this.addAll(vs);
  }
  clear(): void {
    this.elements = [];
  }
}

class HeapBroadcastState<K, V> implements BroadcastState<K, V> {
  readonly map = new Map<HeapKey, V>();
  constructor(readonly name: string) {}
  get(k: K): V | undefined {
    return this.map.get(heapKeyOf(k));
  }
  put(k: K, v: V): void {
    this.map.set(heapKeyOf(k), v);
  }
  putAll(entries: Iterable<[K, V]> | Map<K, V>): void {
    for (const [k, v] of entries) this.put(k, v);
  }
  contains(k: K): boolean {
    return this.map.has(heapKeyOf(k));
  }
  remove(k: K): void {
    this.map.delete(heapKeyOf(k));
  }
  *entries(): IterableIterator<[K, V]> {
    for (const [hk, v] of this.map) yield [keyOfHeapKey(hk) as K, v];
  }
  *keys(): IterableIterator<K> {
    for (const hk of this.map.keys()) yield keyOfHeapKey(hk) as K;
  }
  values(): IterableIterator<V> {
    return this.map.values();
  }
  isEmpty(): boolean {
    return this.map.size === 0;
  }
  clear(): void {
    this.map.clear();
  }
}

export class OperatorStateStore {
  private readonly lists = new Map<string, OperatorListState<any>>();
  private readonly broadcasts = new Map<string, HeapBroadcastState<any, any>>();

  constructor(readonly subtaskIndex = 0, readonly parallelism = 1) {
    if (!(Number.isInteger(parallelism) && parallelism >= 1 && Number.isInteger(subtaskIndex) && subtaskIndex >= 0 && subtaskIndex < parallelism)) {
      throw new RangeError(`bad subtask index ${subtaskIndex} of parallelism ${parallelism}`);
    }
  }

  /** List state redistributed by even split on restore (Flink's getListState). */
  getListState<T>(name: string, mode: RedistributionMode = "split"): ListState<T> {
    if (mode !== "split" && mode !== "union") throw new TypeError(`redistribution mode must be "split" or "union", got ${JSON.stringify(mode)}`);
    if (this.broadcasts.has(name)) throw new Error(`operator state "${name}" is broadcast state, not list state`);
    let s = this.lists.get(name);
    if (s === undefined) this.lists.set(name, (s = new OperatorListState<T>(name, mode)));
    else if (s.mode !== mode) throw new Error(`operator list state "${name}" has redistribution mode "${s.mode}", not "${mode}"`);
    return s;
  }

  /** List state of which every subtask gets the union of all subtasks' lists on restore. */
  getUnionListState<T>(name: string): ListState<T> {
    return this.getListState<T>(name, "union");
  }

  getBroadcastState<K, V>(name: string): BroadcastState<K, V> {
    if (this.lists.has(name)) throw new Error(`operator state "${name}" is list state, not broadcast state`);
    let s = this.broadcasts.get(name);
    if (s === undefined) this.broadcasts.set(name, (s = new HeapBroadcastState<K, V>(name)));
    return s;
  }

  /** Names of all operator states. */
  stateNames(): string[] {
    return [...this.lists.keys(), ...this.broadcasts.keys()];
  }

  /** The states of this store (names, list modes, broadcast). */
  stateInfo(): StateInfo[] {
    return [
      ...[...this.lists.values()].map((s): StateInfo => ({ name: s.name, scope: "operator", kind: "list", mode: s.mode })),
      ...[...this.broadcasts.keys()].map((name): StateInfo => ({ name, scope: "operator", kind: "broadcast" })),
    ];
  }

  async snapshot(dir: string): Promise<OperatorSnapshotHandle> {
    // Synchronous part: the encoding is the copy.
    const payload: OperatorSnapshotPayload = {
      subtaskIndex: this.subtaskIndex,
      parallelism: this.parallelism,
      createdAt: Date.now(),
      lists: [...this.lists.values()].map((s) => ({ name: s.name, mode: s.mode, elements: s.elements })),
      broadcast: [...this.broadcasts.values()].map((s) => ({ name: s.name, entries: [...s.entries()] })),
    };
    const bytes = encodeOperatorSnapshot(payload);
    const file = snapshotFileName(dir, `operator-${this.subtaskIndex}-of-${this.parallelism}`);
    await writeFileAtomic(file, bytes);
    return {
      type: "operator",
      formatVersion: OPERATOR_FORMAT_VERSION,
      files: [file],
      subtaskIndex: this.subtaskIndex,
      parallelism: this.parallelism,
      sizeBytes: bytes.length,
    };
  }

  /** Replaces all operator state with this subtask's share of the snapshots of all old subtasks. */
  async restore(handles: readonly OperatorSnapshotHandle[]): Promise<void> {
    const payloads: OperatorSnapshotPayload[] = [];
    for (const h of [...handles].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
      if (h?.type !== "operator") throw new TypeError(`not an operator state snapshot handle: ${JSON.stringify(h)}`);
      for (const f of h.files) payloads.push(await readOperatorSnapshot(f));
    }
    this.lists.clear();
    this.broadcasts.clear();
    // Lists: the concatenation in old-subtask order, then split or union.
    const all = new Map<string, { mode: RedistributionMode; elements: unknown[] }>();
    for (const p of payloads) {
      for (const l of p.lists) {
        const a = all.get(l.name);
        if (a === undefined) all.set(l.name, { mode: l.mode, elements: [...l.elements] });
        else {
          if (a.mode !== l.mode) throw new Error(`operator list state "${l.name}" has different redistribution modes in the snapshots`);
          for (const e of l.elements) a.elements.push(e);
        }
      }
    }
    for (const [name, { mode, elements }] of all) {
      const s = new OperatorListState<unknown>(name, mode);
      if (mode === "union") s.elements = elements;
      else {
        const n = elements.length;
        s.elements = elements.slice(Math.floor((this.subtaskIndex * n) / this.parallelism), Math.floor(((this.subtaskIndex + 1) * n) / this.parallelism));
      }
      this.lists.set(name, s);
    }
    // Broadcast state: identical on all old subtasks; take the copy of old subtask (index mod old count).
    if (payloads.length > 0) {
      const p = payloads[this.subtaskIndex % payloads.length]!;
      for (const b of p.broadcast) {
        const s = new HeapBroadcastState<unknown, unknown>(b.name);
        for (const [k, v] of b.entries) s.put(k, v);
        this.broadcasts.set(b.name, s);
      }
      // A broadcast state missing from that copy but present elsewhere still comes back.
      for (const other of payloads) {
        for (const b of other.broadcast) {
          if (this.broadcasts.has(b.name)) continue;
          const s = new HeapBroadcastState<unknown, unknown>(b.name);
          for (const [k, v] of b.entries) s.put(k, v);
          this.broadcasts.set(b.name, s);
        }
      }
    }
  }
}
