// The SQLite backend's object cache: deserialized-key entries in one LRU list, bounded in (estimated) bytes. It
// sits in front of SQLite's own page cache: a hit touches only JS Maps; dirty entries are written back in batches
// when they are evicted (and at snapshots and close).
//
// Entries of value, reducing and aggregating state hold the live value ("live" tables): a hit neither decodes
// nor encodes, and a value is serialized only when it is written back or a snapshot needs it. List and map
// entries hold serialized bytes (a list appends without decoding; a map's values are per user key).
//
// How big the cache may be is the backend's decision (sqliteLimits): most of the budget while the database is
// small next to it, a quarter once the database outgrows it, because then a miss costs one indexed SELECT
// against pages that SQLite (or the OS) usually still holds, and an entry is several times the memory of its row
// in a page. Nothing here forces a garbage collection: forced full collections cost more than they save (issue 16).
import type { SnapshotStateMeta } from "./snapshot-format.ts";
import { encode, encodeTransient, type HeapKey } from "./serde.ts";

/** Estimated memory of one cache entry besides its key and value bytes: the Entry object, its Map slot and the
 *  value's Uint8Array object (measured with Bun; see tests/state-sqlite-rss.test.ts). */
export const ENTRY_OVERHEAD = 260;
/** The same for an entry holding a live value (no Uint8Array object): 500 K entries with integer keys and number
 *  values measured 207 heap bytes each with Bun 1.4.5, [key, n] tuples 255 (liveSize charges 48 for the tuple). */
export const LIVE_ENTRY_OVERHEAD = 200;
/** Eviction drops entries down to this fraction of the bound, so that write-back goes out in sizeable batches. */
const LOW_WATER = 0.9;

export class LruLink {
  prev: LruLink = this;
  next: LruLink = this;
}

/** One cached row: a value state's value for a key, or one user key's value of a map state. */
export class Entry extends LruLink {
  constructor(
    readonly t: SqlTable,
    readonly kg: number,
    readonly hk: HeapKey,
    /** The map node for map state entries, else null. */
    readonly node: MapNode | null,
    readonly uhk: HeapKey,
    /** Serialized stored value (list and map states); null: absent (a tombstone when dirty). */
    public bytes: Uint8Array | null,
    /** The live stored value (value-like states); undefined: absent (a tombstone when dirty). */
    public value: unknown,
    /** Changed since it was last written to the database. */
    public dirty: boolean,
    public size: number,
  ) {
    super();
  }
  /** Changes with every write of the entry (a snapshot's write-behind tells entries changed since apart). */
  stamp = 0;
  /** Its row was read from kv or written straight there, so kv_delta has no version of it: its writes go to kv. */
  inKv = false;
  /** A snapshot in progress that has not serialized this live entry yet: it must before the value is handed out
   *  or replaced (copy on access), since callers may change a value they got in place before writing it back. */
  pending: Captured | null = null;
}

/** A snapshot's copy of a live entry: undefined until serialized. */
export interface Captured {
  bytes: Uint8Array | null | undefined;
}

/** Serializes a live entry's value for the snapshot waiting on it, if any. */
export function settle(e: Entry): void {
  const p = e.pending;
  if (p !== null) {
    p.bytes = e.value === undefined ? null : encode(e.value);
    e.pending = null;
  }
}


/** A map state's cached user keys of one key. */
export class MapNode {
  /** The key, one string for all of its entries (a record's key is a string of its own, and a key with thousands of
   *  user keys would otherwise keep as many copies). */
  constructor(readonly hk: HeapKey) {}
  readonly entries = new Map<HeapKey, Entry>();
  /** True when `entries` holds every user key of this key (loaded, or the key is known to be new). */
  complete = false;
}

/** A registered state: its row in tm_state and its cached entries. */
export interface SqlTable {
  id: number;
  /** Whether entries hold live values (value, reducing and aggregating states). */
  live: boolean;
  meta: SnapshotStateMeta;
  values: Map<HeapKey, Entry>;
  maps: Map<HeapKey, MapNode>;
  /** The entry (or map node) last looked up and its key: a record reads and then writes each state of its key, and
   *  a second lookup in a large Map costs cache misses (about 10 % of SQLite-backed q16's task). Null once that entry
   *  leaves `values` (or the node `maps`). */
  lastEntry: Entry | null;
  lastEntryHk: HeapKey;
  lastNode: MapNode | null;
  lastNodeHk: HeapKey;
}

/** A table with nothing cached. */
export function newSqlTable(id: number, meta: SnapshotStateMeta, live: boolean): SqlTable {
  return { id, meta, live, values: new Map(), maps: new Map(), lastEntry: null, lastEntryHk: null, lastNode: null, lastNodeHk: null };
}

/** Forgets a table's cached entries. */
export function clearSqlTable(t: SqlTable): void {
  t.values.clear();
  t.maps.clear();
  t.lastEntry = t.lastNode = null;
}

export function keyCost(hk: HeapKey): number {
  return typeof hk === "string" ? 16 + 2 * hk.length : 8;
}

export function entrySize(hk: HeapKey, uhk: HeapKey | undefined, bytes: Uint8Array | null): number {
  return ENTRY_OVERHEAD + keyCost(hk) + (uhk === undefined ? 0 : keyCost(uhk)) + (bytes === null ? 0 : bytes.length);
}

/** The same for a map entry: its key is its node's (charged once, nodeSize). */
export function mapEntrySize(uhk: HeapKey, bytes: Uint8Array | null): number {
  return ENTRY_OVERHEAD + 8 + keyCost(uhk) + (bytes === null ? 0 : bytes.length);
}

/** Estimated memory of a map node: the MapNode, its Map and its slot in the table's Map, and its key. */
export const NODE_OVERHEAD = 200;
function nodeSize(hk: HeapKey): number {
  return NODE_OVERHEAD + keyCost(hk);
}

/** Estimated memory of a live entry holding `v`. */
export function liveEntrySize(hk: HeapKey, v: unknown): number {
  return LIVE_ENTRY_OVERHEAD + keyCost(hk) + liveSize(v, 0);
}

/**
 * Estimated heap bytes of a live value beyond the slot holding it: numbers and booleans are unboxed in the slot;
 * strings, small arrays and plain objects are walked (two levels); anything else is charged twice its encoded
 * size plus an object header.
 */
export function liveSize(v: unknown, depth: number): number {
  switch (typeof v) {
    case "number":
    case "boolean":
    case "undefined":
      return 0;
    case "string":
      return 24 + v.length * 2;
    case "bigint":
      return 32;
    case "object": {
      if (v === null) return 0;
      if (depth < 2 && Array.isArray(v) && v.length <= 16) {
        let n = 32 + 8 * v.length;
        for (let i = 0; i < v.length; i++) n += liveSize(v[i], depth + 1);
        return n;
      }
      if (depth < 2 && Object.getPrototypeOf(v) === Object.prototype) {
        let n = 48;
        let k = 0;
        for (const key in v) {
          if (++k > 16) return 48 + 2 * encodeTransient(v).length;
          n += 16 + liveSize((v as Record<string, unknown>)[key], depth + 1);
        }
        return n;
      }
      return 48 + 2 * encodeTransient(v).length;
    }
    default:
      return 48;
  }
}

export class ObjectCache {
  private readonly head = new LruLink();
  usedBytes = 0;
  entries = 0;
  dirty = 0;
  hits = 0;
  misses = 0;
  private stamps = 0;

  /** The bound; the backend moves it as the database grows or shrinks (sqliteLimits). */
  constructor(public limitBytes: number) {}

  private link(e: LruLink): void {
    const tail = this.head.prev;
    e.prev = tail;
    e.next = this.head;
    tail.next = e;
    this.head.prev = e;
  }

  private unlink(e: LruLink): void {
    e.prev.next = e.next;
    e.next.prev = e.prev;
  }

  /** Puts a new map node in its table, charging its memory. */
  addNode(t: SqlTable, n: MapNode): void {
    t.maps.set(n.hk, n);
    this.usedBytes += nodeSize(n.hk);
  }

  /** Takes a map node out of its table (its entries are gone or going), with its charge and the table's memory of
   *  it as the last node looked up. */
  dropNode(t: SqlTable, n: MapNode): void {
    t.maps.delete(n.hk);
    this.usedBytes -= nodeSize(n.hk);
    if (t.lastNode === n) t.lastNode = null;
  }

  /** Marks an entry most recently used. */
  touch(e: Entry): void {
    if (this.head.prev !== e) {
      this.unlink(e);
      this.link(e);
    }
  }

  add(e: Entry): void {
    this.link(e);
    this.usedBytes += e.size;
    this.entries++;
    if (e.dirty) {
      this.dirty++;
      e.stamp = ++this.stamps;
    }
  }

  /** Removes an entry from the LRU list and the accounting (the caller removes it from its table). Returns
   *  whether it was dirty; it is clean afterwards. */
  remove(e: Entry): boolean {
    this.unlink(e);
    this.usedBytes -= e.size;
    this.entries--;
    const wasDirty = e.dirty;
    if (wasDirty) {
      e.dirty = false;
      this.dirty--;
    }
    return wasDirty;
  }

  /** Sets an entry's bytes, marking it dirty and most recently used. */
  setBytes(e: Entry, bytes: Uint8Array | null): void {
    const delta = (bytes === null ? 0 : bytes.length) - (e.bytes === null ? 0 : e.bytes.length);
    e.size += delta;
    this.usedBytes += delta;
    e.bytes = bytes;
    e.stamp = ++this.stamps;
    if (!e.dirty) {
      e.dirty = true;
      this.dirty++;
    }
    this.touch(e);
  }

  /** Sets a live entry's value (undefined: absent), marking it dirty and most recently used. */
  setValue(e: Entry, v: unknown): void {
    if (e.pending !== null) settle(e);
    const size = liveEntrySize(e.hk, v);
    this.usedBytes += size - e.size;
    e.size = size;
    e.value = v;
    e.stamp = ++this.stamps;
    if (!e.dirty) {
      e.dirty = true;
      this.dirty++;
    }
    this.touch(e);
  }

  markClean(e: Entry): void {
    if (e.dirty) {
      e.dirty = false;
      this.dirty--;
    }
  }

  get overLimit(): boolean {
    return this.usedBytes > this.limitBytes;
  }

  /** Drops least recently used entries down to the low-water mark; returns the dropped dirty ones (now clean),
   *  which the caller must write. */
  evict(): Entry[] {
    const target = this.limitBytes * LOW_WATER;
    const out: Entry[] = [];
    let l = this.head.next;
    while (this.usedBytes > target && l !== this.head) {
      const e = l as Entry;
      l = e.next;
      const t = e.t;
      if (e.node === null) {
        t.values.delete(e.hk);
        if (t.lastEntry === e) t.lastEntry = null;
      } else {
        e.node.entries.delete(e.uhk);
        e.node.complete = false;
        if (e.node.entries.size === 0) {
          this.dropNode(t, e.node);
        }
      }
      this.usedBytes -= e.size;
      this.entries--;
      if (e.dirty) {
        out.push(e);
        e.dirty = false;
        this.dirty--;
      }
    }
    this.head.next = l;
    l.prev = this.head;
    return out;
  }

  /** The dirty entries, oldest first; with `markClean` they become clean (the caller writes them). */
  collectDirty(markClean: boolean): Entry[] {
    const out: Entry[] = [];
    if (this.dirty === 0) return out;
    for (let l = this.head.next; l !== this.head; l = l.next) {
      const e = l as Entry;
      if (e.dirty) {
        out.push(e);
        if (markClean) e.dirty = false;
      }
    }
    if (markClean) this.dirty = 0;
    return out;
  }

  /** Forgets every entry without writing anything (the tables' maps are cleared by the caller). */
  clear(): void {
    for (let l = this.head.next; l !== this.head; l = l.next) (l as Entry).dirty = false;
    this.head.next = this.head.prev = this.head;
    this.usedBytes = this.entries = this.dirty = 0;
  }
}
