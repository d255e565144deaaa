// The SQLite backend's object cache: deserialized-key entries holding serialized values, in one LRU list, bounded
// in (estimated) bytes. It sits in front of SQLite's own page cache: a hit touches only JS Maps; dirty entries are
// written back in batches when they are evicted (and at snapshots and close).
//
// The cache is deliberately small next to SQLite's page cache (see sqliteMemory): once the state outgrows it,
// a miss costs one indexed SELECT against pages that SQLite (or the OS) usually still holds, and an entry is about
// 10x the memory of its row in a page. Nothing here forces a garbage collection: evicted entries are ordinary
// young garbage when the cache is small, and forced full collections cost more than they save (issue 16).
import type { SnapshotStateMeta } from "./snapshot-format.ts";
import type { HeapKey } from "./serde.ts";

/** Estimated memory of one cache entry besides its key and value bytes: the Entry object, its Map slot and the
 *  value's Uint8Array object (measured with Bun; see tests/state-sqlite-rss.test.ts). */
export const ENTRY_OVERHEAD = 260;
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
    /** Serialized stored value; null: absent (a tombstone when dirty). */
    public bytes: Uint8Array | null,
    /** Changed since it was last written to the database. */
    public dirty: boolean,
    public size: number,
  ) {
    super();
  }
}

/** A map state's cached user keys of one key. */
export class MapNode {
  readonly entries = new Map<HeapKey, Entry>();
  /** True when `entries` holds every user key of this key (loaded, or the key is known to be new). */
  complete = false;
}

/** A registered state: its row in tm_state and its cached entries. */
export interface SqlTable {
  id: number;
  meta: SnapshotStateMeta;
  values: Map<HeapKey, Entry>;
  maps: Map<HeapKey, MapNode>;
}

export function keyCost(hk: HeapKey): number {
  return typeof hk === "string" ? 16 + 2 * hk.length : 8;
}

export function entrySize(hk: HeapKey, uhk: HeapKey | undefined, bytes: Uint8Array | null): number {
  return ENTRY_OVERHEAD + keyCost(hk) + (uhk === undefined ? 0 : keyCost(uhk)) + (bytes === null ? 0 : bytes.length);
}

export class ObjectCache {
  private readonly head = new LruLink();
  usedBytes = 0;
  entries = 0;
  dirty = 0;
  hits = 0;
  misses = 0;

  constructor(readonly limitBytes: number) {}

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
    if (e.dirty) this.dirty++;
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
      if (e.node === null) e.t.values.delete(e.hk);
      else {
        e.node.entries.delete(e.uhk);
        e.node.complete = false;
        if (e.node.entries.size === 0) e.t.maps.delete(e.hk);
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
