// The SQLite backend: one database file per task (WAL, synchronous=NORMAL), rows keyed by
// (key group, state id, key bytes, user-key bytes), and a bounded write-behind LRU cache of serialized values in
// front, so that state far larger than memory works with bounded RSS.
//
// - Every state access is synchronous: cache hits touch only JS Maps; misses run a prepared statement.
// - Writes only change the cache (entries become dirty). When the cache grows over its byte bound, the least
//   recently used entries are dropped down to LOW_WATER of the bound and the dirty ones among them are written
//   in one transaction.
// - Snapshot: a read transaction on a second connection pins a consistent view of the database (WAL readers do
//   not block the writer) and the dirty cache entries are collected (references only); the key groups are then
//   read from that view, overlaid with the collected entries and written to the snapshot file asynchronously
//   while processing continues on the main connection. Afterwards the collected entries are flushed in batches.
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { forceGc } from "../runtime-env/index.ts";
import { StateFileError } from "./api.ts";
import {
  checkCompatible,
  KeyedBackendBase,
  unexpiredBytes,
  type BackendOptions,
  type Cell,
  type ListCell,
  type MapCell,
  type ValueCell,
} from "./keyed-backend.ts";
import { ByteWriter, concat, decode, decodeMany, encode, encodeMany, heapKeyOf, heapKeyOfBytes, keyBytesOfHeapKey, keyOfHeapKey, type HeapKey } from "./serde.ts";
import {
  checkKeyedHandle,
  KeyedSnapshotReader,
  KeyedSnapshotWriter,
  snapshotFileName,
  type KeyedSnapshotHandle,
  type SnapshotStateMeta,
} from "./snapshot-format.ts";
import { openSqliteDriver, openSqliteDriverSync, type SqliteDriver, type SqliteStatement, type SqlValue } from "./sqlite-driver.ts";
import { compileQueries, prepareDatabase, type Queries } from "./sqlite-schema.ts";

export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_PAGE_CACHE_BYTES = 16 * 1024 * 1024;
/** Eviction drops entries down to this fraction of the bound, so that writes go out in sizeable batches. */
const LOW_WATER = 0.9;
/** Estimated memory of one cache entry besides its key and value bytes: the Entry object, its Map slot and the
 *  value's Uint8Array object (measured with Bun; see tests/state-sqlite-rss.test.ts). */
export const ENTRY_OVERHEAD = 260;
const EMPTY = new Uint8Array(0);
const FLUSH_BATCH = 16_384;

/** SQLite's BLOB order: memcmp, then the shorter first. */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

export interface SqliteBackendOptions extends BackendOptions {
  /** The database file (created if missing; an existing one is reused, never reset). */
  path: string;
  /** Bound of the write-behind cache, in (estimated) bytes. Default 64 MiB. */
  cacheBytes?: number;
  /** SQLite's own page cache. Default 16 MiB. */
  pageCacheBytes?: number;
  /**
   * Run a full garbage collection (Bun.gc(true), or globalThis.gc where exposed) each time this many bytes of
   * cache entries have been evicted; 0 disables it. Default: the cache bound (at least 32 MiB), i.e. about once
   * per cache turnover.
   * Evicted entries are old-generation garbage, which the engine otherwise lets pile up to several times the
   * cache size before collecting it (see tests/state-sqlite-rss.test.ts).
   */
  gcEveryEvictedBytes?: number;
}

class LruLink {
  prev: LruLink = this;
  next: LruLink = this;
}

class Entry extends LruLink {
  constructor(
    readonly t: SqlTable,
    readonly kg: number,
    readonly hk: HeapKey,
    /** The map node for map state entries, else null. */
    readonly node: MapNode | null,
    readonly uhk: HeapKey,
    /** Serialized stored value; null: absent (a tombstone when dirty). */
    public bytes: Uint8Array | null,
    public dirty: boolean,
    public size: number,
  ) {
    super();
  }
}

class MapNode {
  readonly entries = new Map<HeapKey, Entry>();
  /** True when `entries` holds every user key of this key (loaded, or the key is known to be new). */
  complete = false;
}

interface SqlTable {
  id: number;
  meta: SnapshotStateMeta;
  values: Map<HeapKey, Entry>;
  maps: Map<HeapKey, MapNode>;
}

function keyCost(hk: HeapKey): number {
  return typeof hk === "string" ? 16 + 2 * hk.length : 8;
}

interface Statements {
  get: SqliteStatement;
  upsert: SqliteStatement;
  delete: SqliteStatement;
  update: SqliteStatement;
  scanKey: SqliteStatement;
  deleteKey: SqliteStatement;
  deleteAll: SqliteStatement;
  scanAfter: SqliteStatement;
  insertState: SqliteStatement;
  updateStateTtl: SqliteStatement;
}

export class SqliteKeyedStateBackend extends KeyedBackendBase {
  readonly kind = "sqlite" as const;
  readonly path: string;
  private readonly s: Statements;
  private readonly byName = new Map<string, SqlTable>();
  private readonly byId = new Map<number, SqlTable>();
  private readonly lru = new LruLink();
  private cacheUsed = 0;
  private readonly cacheLimit: number;
  private dirtyCount = 0;
  private readonly gcEvery: number;
  private evictedSinceGc = 0;
  private entryCount = 0;
  /** The current key group and key bytes (computed on the first miss after setCurrentKey). */
  private kg = -1;
  private kb: Uint8Array | null = null;
  private readonly p3: SqlValue[] = [0, 0, EMPTY];
  private readonly p4: SqlValue[] = [0, 0, EMPTY, EMPTY];
  private cleanupCursor: { kg: number; state: number; k: Uint8Array; uk: Uint8Array };
  private cacheCursor: { table: number; iter: Iterator<Entry | MapNode> | null } = { table: -1, iter: null };

  private constructor(
    opts: SqliteBackendOptions,
    private readonly driver: SqliteDriver,
    private readonly q: Queries,
  ) {
    super(opts);
    this.path = opts.path;
    this.cacheLimit = Math.max(64 * 1024, opts.cacheBytes ?? DEFAULT_CACHE_BYTES);
    this.gcEvery = opts.gcEveryEvictedBytes ?? Math.max(this.cacheLimit, 32 * 1024 * 1024);
    const p = (c: { sql: string }) => driver.prepare(c.sql);
    this.s = {
      get: p(q.get),
      upsert: p(q.upsert),
      delete: p(q.delete),
      update: p(q.update),
      scanKey: p(q.scanKey),
      deleteKey: p(q.deleteKey),
      deleteAll: p(q.deleteAll),
      scanAfter: p(q.scanAfter),
      insertState: p(q.insertState),
      updateStateTtl: p(q.updateStateTtl),
    };
    for (const r of driver.prepare(q.states.sql).all()) {
      const t: SqlTable = {
        id: Number(r.id),
        meta: { name: String(r.name), kind: String(r.kind) as SnapshotStateMeta["kind"], ttlMs: r.ttl_ms === null ? null : Number(r.ttl_ms) },
        values: new Map(),
        maps: new Map(),
      };
      this.byName.set(t.meta.name, t);
      this.byId.set(t.id, t);
    }
    this.cleanupCursor = this.cursorStart();
  }

  /** Opens (creating or migrating) the database at `opts.path`. */
  static async open(opts: SqliteBackendOptions): Promise<SqliteKeyedStateBackend> {
    if (typeof opts.path !== "string" || opts.path.length === 0) throw new TypeError("the SQLite backend needs a database file path");
    let driver: SqliteDriver;
    try {
      await fsp.mkdir(path.dirname(opts.path), { recursive: true });
      driver = await openSqliteDriver(opts.path);
    } catch (e) {
      throw new StateFileError(opts.path, `cannot open the state database: ${(e as Error).message}`, { cause: e });
    }
    try {
      const db = await prepareDatabase(driver, { maxParallelism: opts.maxParallelism, pageCacheBytes: opts.pageCacheBytes ?? DEFAULT_PAGE_CACHE_BYTES });
      const backend = new SqliteKeyedStateBackend(opts, driver, compileQueries(db));
      await db.destroy();
      return backend;
    } catch (e) {
      driver.close();
      throw e;
    }
  }

  private cursorStart() {
    return { kg: this.kgStart - 1, state: 0, k: EMPTY, uk: EMPTY };
  }

  protected keyChanged(kgIdx: number): void {
    this.kg = kgIdx + this.kgStart;
    this.kb = null;
  }

  private keyBytes(): Uint8Array {
    return (this.kb ??= keyBytesOfHeapKey(this.hk));
  }

  /** Cache statistics (for tests and metrics). */
  cacheStats(): { usedBytes: number; limitBytes: number; entries: number; dirty: number } {
    return { usedBytes: this.cacheUsed, limitBytes: this.cacheLimit, entries: this.entryCount, dirty: this.dirtyCount };
  }

  /** The SQLite driver in use ("bun:sqlite" or "node:sqlite"). */
  get implementation(): string {
    return this.driver.implementation;
  }

  protected cellFor(meta: SnapshotStateMeta): Cell {
    const t = this.tableFor(meta, ` in ${this.path}`);
    switch (meta.kind) {
      case "list":
        return new SqlListCell(this, t);
      case "map":
        return new SqlMapCell(this, t);
      default:
        return new SqlValueCell(this, t);
    }
  }

  private tableFor(meta: SnapshotStateMeta, where: string): SqlTable {
    let t = this.byName.get(meta.name);
    if (t) {
      checkCompatible(t.meta, meta, where);
      if (meta.ttlMs !== null && meta.ttlMs !== t.meta.ttlMs) {
        this.s.updateStateTtl.run([meta.ttlMs, t.id]);
        t.meta.ttlMs = meta.ttlMs;
      }
      return t;
    }
    const { lastInsertRowid } = this.s.insertState.run([meta.name, meta.kind, meta.ttlMs]);
    t = { id: Number(lastInsertRowid), meta: { ...meta }, values: new Map(), maps: new Map() };
    this.byName.set(meta.name, t);
    this.byId.set(t.id, t);
    return t;
  }

  // ---- The cache ----

  private link(e: LruLink): void {
    const tail = this.lru.prev;
    e.prev = tail;
    e.next = this.lru;
    tail.next = e;
    this.lru.prev = e;
  }

  private unlink(e: LruLink): void {
    e.prev.next = e.next;
    e.next.prev = e.prev;
  }

  touch(e: Entry): void {
    if (this.lru.prev !== e) {
      this.unlink(e);
      this.link(e);
    }
  }

  private add(e: Entry): void {
    this.link(e);
    this.cacheUsed += e.size;
    this.entryCount++;
    if (e.dirty) this.dirtyCount++;
  }

  /** Sets an entry's bytes, marking it dirty. */
  setBytes(e: Entry, bytes: Uint8Array | null): void {
    const delta = (bytes === null ? 0 : bytes.length) - (e.bytes === null ? 0 : e.bytes.length);
    e.size += delta;
    this.cacheUsed += delta;
    e.bytes = bytes;
    if (!e.dirty) {
      e.dirty = true;
      this.dirtyCount++;
    }
    this.touch(e);
  }

  maybeEvict(): void {
    if (this.cacheUsed > this.cacheLimit) this.evict();
  }

  private evict(): void {
    const target = this.cacheLimit * LOW_WATER;
    const before = this.cacheUsed;
    const dirty: Entry[] = [];
    let l = this.lru.next;
    while (this.cacheUsed > target && l !== this.lru) {
      const e = l as Entry;
      l = e.next;
      if (e.node === null) e.t.values.delete(e.hk);
      else {
        e.node.entries.delete(e.uhk);
        e.node.complete = false;
        if (e.node.entries.size === 0) e.t.maps.delete(e.hk);
      }
      this.cacheUsed -= e.size;
      this.entryCount--;
      if (e.dirty) {
        dirty.push(e);
        e.dirty = false;
        this.dirtyCount--;
      }
    }
    this.lru.next = l;
    l.prev = this.lru;
    if (dirty.length > 0) this.writeEntries(dirty);
    this.evictedSinceGc += before - this.cacheUsed;
    if (this.gcEvery > 0 && this.evictedSinceGc >= this.gcEvery && forceGc !== undefined) {
      this.evictedSinceGc = 0;
      forceGc();
    }
  }

  /** Writes entries' current bytes (upsert, or delete for tombstones) in one transaction. */
  private writeEntries(entries: Entry[]): void {
    entries.sort((a, b) => a.kg - b.kg || a.t.id - b.t.id);
    const { upsert, delete: del } = this.s;
    const p5: SqlValue[] = [0, 0, EMPTY, EMPTY, EMPTY];
    const p4 = this.p4;
    this.driver.exec("BEGIN");
    try {
      for (const e of entries) {
        const k = keyBytesOfHeapKey(e.hk);
        const uk = e.node === null ? EMPTY : keyBytesOfHeapKey(e.uhk);
        if (e.bytes !== null) {
          p5[0] = e.kg;
          p5[1] = e.t.id;
          p5[2] = k;
          p5[3] = uk;
          p5[4] = e.bytes;
          upsert.run(p5);
        } else {
          p4[0] = e.kg;
          p4[1] = e.t.id;
          p4[2] = k;
          p4[3] = uk;
          del.run(p4);
        }
      }
      this.driver.exec("COMMIT");
    } catch (err) {
      try {
        this.driver.exec("ROLLBACK");
      } catch {}
      throw new StateFileError(this.path, `writing ${entries.length} cached state entries failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Writes every dirty cache entry to the database (entries stay cached, clean). */
  flush(): void {
    if (this.dirtyCount === 0) return;
    const dirty: Entry[] = [];
    for (let l = this.lru.next; l !== this.lru; l = l.next) {
      const e = l as Entry;
      if (e.dirty) {
        dirty.push(e);
        e.dirty = false;
      }
    }
    this.dirtyCount = 0;
    this.writeEntries(dirty);
  }

  /** Drops the whole cache without writing anything. */
  private dropCache(): void {
    for (let l = this.lru.next; l !== this.lru; l = l.next) (l as Entry).dirty = false;
    for (const t of this.byId.values()) {
      t.values.clear();
      t.maps.clear();
    }
    this.lru.next = this.lru.prev = this.lru;
    this.cacheUsed = this.entryCount = this.dirtyCount = 0;
    this.cacheCursor = { table: -1, iter: null };
  }

  // ---- Operations of the cells (current key) ----

  private checkKey(): void {
    if (this.kgIdx < 0) this.noKey();
  }

  /** The cache entry of the current key for a non-map state, loaded on a miss. */
  valueEntry(t: SqlTable): Entry {
    this.checkKey();
    const e = t.values.get(this.hk);
    if (e !== undefined) {
      this.touch(e);
      return e;
    }
    const p = this.p4;
    p[0] = this.kg;
    p[1] = t.id;
    p[2] = this.keyBytes();
    p[3] = EMPTY;
    const row = this.s.get.get(p);
    const bytes = row === undefined ? null : (row.v as Uint8Array);
    const n = new Entry(t, this.kg, this.hk, null, undefined, bytes, false, ENTRY_OVERHEAD + keyCost(this.hk) + (bytes === null ? 0 : bytes.length));
    t.values.set(this.hk, n);
    this.add(n);
    return n;
  }

  writeValue(t: SqlTable, bytes: Uint8Array | null): void {
    this.checkKey();
    const e = t.values.get(this.hk);
    if (e !== undefined) this.setBytes(e, bytes);
    else {
      const n = new Entry(t, this.kg, this.hk, null, undefined, bytes, true, ENTRY_OVERHEAD + keyCost(this.hk) + (bytes === null ? 0 : bytes.length));
      t.values.set(this.hk, n);
      this.add(n);
    }
    this.maybeEvict();
  }

  mapNode(t: SqlTable, create: boolean): MapNode | undefined {
    this.checkKey();
    let n = t.maps.get(this.hk);
    if (n === undefined && create) t.maps.set(this.hk, (n = new MapNode()));
    return n;
  }

  /** The entry of a user key of the current key, loaded on a miss; undefined when known absent. */
  mapEntry(t: SqlTable, uk: unknown): Entry | undefined {
    const uhk = heapKeyOf(uk);
    const n = this.mapNode(t, true)!;
    const e = n.entries.get(uhk);
    if (e !== undefined) {
      this.touch(e);
      return e;
    }
    if (n.complete) return undefined;
    const p = this.p4;
    p[0] = this.kg;
    p[1] = t.id;
    p[2] = this.keyBytes();
    p[3] = keyBytesOfHeapKey(uhk);
    const row = this.s.get.get(p);
    const bytes = row === undefined ? null : (row.v as Uint8Array);
    const ne = new Entry(t, this.kg, this.hk, n, uhk, bytes, false, ENTRY_OVERHEAD + keyCost(this.hk) + keyCost(uhk) + (bytes === null ? 0 : bytes.length));
    n.entries.set(uhk, ne);
    this.add(ne);
    return ne;
  }

  writeMapEntry(t: SqlTable, uk: unknown, bytes: Uint8Array | null): void {
    const uhk = heapKeyOf(uk);
    const n = this.mapNode(t, true)!;
    const e = n.entries.get(uhk);
    if (e !== undefined) this.setBytes(e, bytes);
    else if (!(bytes === null && n.complete)) {
      const ne = new Entry(t, this.kg, this.hk, n, uhk, bytes, true, ENTRY_OVERHEAD + keyCost(this.hk) + keyCost(uhk) + (bytes === null ? 0 : bytes.length));
      n.entries.set(uhk, ne);
      this.add(ne);
    }
    this.maybeEvict();
  }

  /** All live entries of the current key's map (loading the rest from the database). */
  mapEntries(t: SqlTable): [unknown, unknown][] {
    const n = this.mapNode(t, true)!;
    if (!n.complete) {
      const p = this.p3;
      p[0] = this.kg;
      p[1] = t.id;
      p[2] = this.keyBytes();
      for (const row of this.s.scanKey.all(p)) {
        const uhk = heapKeyOfBytes(row.uk as Uint8Array);
        if (n.entries.has(uhk)) continue;
        const bytes = row.v as Uint8Array;
        const e = new Entry(t, this.kg, this.hk, n, uhk, bytes, false, ENTRY_OVERHEAD + keyCost(this.hk) + keyCost(uhk) + bytes.length);
        n.entries.set(uhk, e);
        this.add(e);
      }
      n.complete = true;
    }
    const out: [unknown, unknown][] = [];
    for (const [uhk, e] of n.entries) {
      if (e.bytes !== null) out.push([keyOfHeapKey(uhk), decode(e.bytes)]);
      this.touch(e);
    }
    if (n.entries.size === 0) t.maps.delete(this.hk);
    this.maybeEvict();
    return out;
  }

  mapIsEmpty(t: SqlTable): boolean {
    const n = this.mapNode(t, false);
    if (n !== undefined) {
      for (const e of n.entries.values()) if (e.bytes !== null) return false;
      if (n.complete) return true;
    }
    return this.mapEntries(t).length === 0;
  }

  mapClear(t: SqlTable): void {
    this.checkKey();
    const p = this.p3;
    p[0] = this.kg;
    p[1] = t.id;
    p[2] = this.keyBytes();
    this.s.deleteKey.run(p);
    const n = t.maps.get(this.hk);
    if (n === undefined) return;
    for (const e of n.entries.values()) {
      this.unlink(e);
      this.cacheUsed -= e.size;
      this.entryCount--;
      if (e.dirty) {
        e.dirty = false; // superseded by the delete (and must not be flushed by a snapshot's write-behind)
        this.dirtyCount--;
      }
    }
    t.maps.delete(this.hk);
  }

  // ---- TTL cleanup, snapshot, restore ----

  cleanupExpired(maxEntries = 1000): number {
    if (this.closed) return 0;
    const ttlTables = [...this.byId.values()].filter((t) => t.meta.ttlMs !== null);
    if (ttlTables.length === 0) return 0;
    const now = this.clock();
    return this.cleanupCache(ttlTables, maxEntries, now) + this.cleanupDatabase(maxEntries, now);
  }

  /** Checks up to `max` cached entries of TTL states (continuing where the last step stopped). */
  private cleanupCache(ttlTables: SqlTable[], max: number, now: number): number {
    const c = this.cacheCursor;
    let removed = 0;
    let visited = 0;
    let slots = 0;
    const check = (e: Entry, t: SqlTable) => {
      visited++;
      if (e.bytes === null) return;
      const kept = unexpiredBytes(t.meta.kind, t.meta.ttlMs!, e.bytes, now);
      if (kept === e.bytes) return;
      removed += t.meta.kind === "list" ? decodeMany(e.bytes).length - (kept === null ? 0 : decodeMany(kept).length) : 1;
      this.setBytes(e, kept);
    };
    while (visited < max && slots <= 2 * ttlTables.length) {
      if (c.iter === null) {
        slots++;
        c.table = (c.table + 1) % ttlTables.length;
        const t = ttlTables[c.table]!;
        c.iter = t.meta.kind === "map" ? t.maps.values() : t.values.values();
        continue;
      }
      const t = ttlTables[c.table % ttlTables.length]!;
      const r = c.iter.next();
      if (r.done) {
        c.iter = null;
        continue;
      }
      if (r.value instanceof MapNode) for (const e of r.value.entries.values()) check(e, t);
      else check(r.value, t);
    }
    this.maybeEvict();
    return removed;
  }

  /** Checks up to `max` database rows of TTL states that are not cached. */
  private cleanupDatabase(maxEntries: number, now: number): number {
    const c = this.cleanupCursor;
    const rows = this.s.scanAfter.all([c.kg, c.state, c.k, c.uk, this.kgStart, this.kgEnd, maxEntries]);
    if (rows.length < maxEntries) this.cleanupCursor = this.cursorStart();
    let removed = 0;
    let began = false;
    try {
      for (const r of rows) {
        const kg = Number(r.kg);
        const state = Number(r.state);
        const k = r.k as Uint8Array;
        const uk = r.uk as Uint8Array;
        if (rows.length >= maxEntries) this.cleanupCursor = { kg, state, k, uk };
        const t = this.byId.get(state);
        if (t === undefined || t.meta.ttlMs === null) continue;
        // A cached entry is the authority for its row (cleanupCache looks at it).
        const hk = heapKeyOfBytes(k);
        if (t.meta.kind === "map") {
          if (t.maps.get(hk)?.entries.has(heapKeyOfBytes(uk))) continue;
        } else if (t.values.has(hk)) continue;
        const v = r.v as Uint8Array;
        const kept = unexpiredBytes(t.meta.kind, t.meta.ttlMs, v, now);
        if (kept === v) continue;
        if (!began) {
          this.driver.exec("BEGIN");
          began = true;
        }
        if (kept === null) {
          this.s.delete.run([kg, state, k, uk]);
          removed += t.meta.kind === "list" ? decodeMany(v).length : 1;
        } else {
          this.s.update.run([kept, kg, state, k, uk]);
          removed += decodeMany(v).length - decodeMany(kept).length;
        }
      }
      if (began) this.driver.exec("COMMIT");
    } catch (e) {
      if (began) this.driver.exec("ROLLBACK");
      throw e;
    }
    return removed;
  }

  /** A PRAGMA's value on the main connection (diagnostics, tests). */
  pragma(name: string): unknown {
    if (!/^[a-z_]+$/.test(name)) throw new TypeError(`bad pragma name ${JSON.stringify(name)}`);
    const row = this.driver.prepare(`PRAGMA ${name}`).get();
    return row === undefined ? undefined : Object.values(row)[0];
  }

  async snapshot(dir: string): Promise<KeyedSnapshotHandle> {
    if (this.closed) throw new Error("the sqlite state backend is closed");
    // Synchronous part (everything before the first await): a read transaction on a second connection pins the
    // database as it is now, and the dirty cache entries as they are now are collected (their byte arrays are
    // never modified, only replaced, so keeping the references is a consistent copy).
    const reader = openSqliteDriverSync(this.path);
    const file = snapshotFileName(dir, `keyed-sqlite-kg${this.kgStart}-${this.kgEnd}`);
    let writer: KeyedSnapshotWriter | undefined;
    let inTxn = false;
    try {
      reader.exec("BEGIN");
      inTxn = true;
      reader.prepare("SELECT count(*) AS n FROM tm_state").get();
      const tables = [...this.byId.values()];
      const states = tables.map((t) => ({ ...t.meta }));
      const index = new Map(tables.map((t, i) => [t.id, i]));
      const now = this.clock();
      const overlay = new Map<number, { s: number; e: Entry; bytes: Uint8Array | null }[]>();
      const candidates: Entry[] = [];
      for (let l = this.lru.next; l !== this.lru; l = l.next) {
        const e = l as Entry;
        if (!e.dirty) continue;
        candidates.push(e);
        let list = overlay.get(e.kg);
        if (list === undefined) overlay.set(e.kg, (list = []));
        list.push({ s: index.get(e.t.id)!, e, bytes: e.bytes });
      }

      // Asynchronous part: each key group from the pinned database, overlaid with the collected dirty entries.
      writer = await KeyedSnapshotWriter.create(file, {
        backend: "sqlite",
        maxParallelism: this.maxParallelism,
        keyGroupRange: { ...this.keyGroupRange },
        createdAt: Date.now(),
        states,
      });
      const scan = reader.prepare(this.q.scanGroup.sql);
      const w = new ByteWriter();
      const kgParam: SqlValue[] = [0];
      let entries = 0;
      const emit = (s: number, k: Uint8Array, uk: Uint8Array, v: Uint8Array) => {
        const meta = states[s]!;
        if (meta.ttlMs !== null) {
          const kept = unexpiredBytes(meta.kind, meta.ttlMs, v, now);
          if (kept === null) return;
          v = kept;
        }
        w.varint(s);
        w.lenBytes(k);
        w.lenBytes(uk);
        w.lenBytes(v);
        entries++;
      };
      for (let kg = this.kgStart; kg <= this.kgEnd; kg++) {
        kgParam[0] = kg;
        const rows = scan.all(kgParam);
        const dirty = overlay.get(kg);
        if (rows.length === 0 && dirty === undefined) continue;
        w.reset();
        entries = 0;
        // Rows come in primary-key order; merge the dirty entries (sorted the same way) into them.
        const d = (dirty ?? [])
          .map((o) => ({ id: o.e.t.id, s: o.s, k: keyBytesOfHeapKey(o.e.hk), uk: o.e.node === null ? EMPTY : keyBytesOfHeapKey(o.e.uhk), bytes: o.bytes }))
          .sort((a, b) => a.id - b.id || compareBytes(a.k, b.k) || compareBytes(a.uk, b.uk));
        let j = 0;
        for (const r of rows) {
          const id = Number(r.state);
          const k = r.k as Uint8Array;
          const uk = r.uk as Uint8Array;
          let c = -1;
          while (j < d.length) {
            const o = d[j]!;
            c = id - o.id || compareBytes(k, o.k) || compareBytes(uk, o.uk);
            if (c < 0) break;
            if (o.bytes !== null) emit(o.s, o.k, o.uk, o.bytes);
            j++;
            if (c === 0) break;
          }
          if (c === 0) continue; // replaced by the dirty entry
          const s = index.get(id);
          if (s === undefined) continue; // registered after the snapshot began: no rows in this view
          emit(s, k, uk, r.v as Uint8Array);
        }
        for (; j < d.length; j++) if (d[j]!.bytes !== null) emit(d[j]!.s, d[j]!.k, d[j]!.uk, d[j]!.bytes!);
        await writer.writeBlock(kg, w.result(), entries);
      }
      reader.exec("COMMIT");
      inTxn = false;
      const handle = await writer.finish();
      // Write-behind: the entries that were dirty at the snapshot go to the database now, in batches.
      await this.flushEntries(candidates);
      return handle;
    } catch (e) {
      await writer?.abort();
      throw e;
    } finally {
      if (inTxn) {
        try {
          reader.exec("ROLLBACK");
        } catch {}
      }
      reader.close();
    }
  }

  /** Writes those of `entries` that are still cached and dirty, in batches, yielding in between. */
  private async flushEntries(entries: Entry[]): Promise<void> {
    for (let i = 0; i < entries.length && !this.closed; i += FLUSH_BATCH) {
      const batch: Entry[] = [];
      for (const e of entries.slice(i, i + FLUSH_BATCH)) {
        if (e.dirty) {
          e.dirty = false;
          this.dirtyCount--;
          batch.push(e);
        }
      }
      if (batch.length > 0) this.writeEntries(batch);
      await new Promise<void>((r) => setTimeout(r, 0));
    }
  }

  async restore(handles: readonly KeyedSnapshotHandle[]): Promise<void> {
    if (this.closed) throw new Error("the sqlite state backend is closed");
    for (const h of handles) checkKeyedHandle(h, this.maxParallelism);
    this.dropCache();
    this.s.deleteAll.run();
    this.cleanupCursor = this.cursorStart();
    const now = this.clock();
    const p5: SqlValue[] = [0, 0, EMPTY, EMPTY, EMPTY];
    for (const h of handles) {
      const from = Math.max(h.keyGroupRange.start, this.kgStart);
      const to = Math.min(h.keyGroupRange.end, this.kgEnd);
      if (from > to) continue;
      for (const file of h.files) {
        const r = await KeyedSnapshotReader.open(file);
        try {
          const tables = r.header.states.map((meta) => this.tableFor(meta, ` in snapshot ${file}`));
          for (let kg = from; kg <= to; kg++) {
            const block = await r.readBlock(kg);
            if (block === undefined) continue;
            this.driver.exec("BEGIN");
            try {
              r.forEachEntry(kg, block, (s, key, uk, value) => {
                const t = tables[s]!;
                let v: Uint8Array | null = value;
                if (t.meta.ttlMs !== null) v = unexpiredBytes(t.meta.kind, t.meta.ttlMs, value, now);
                if (v === null) return;
                if ((t.meta.kind === "map") !== (uk !== null)) throw new Error(`entry of state "${t.meta.name}" ${uk === null ? "without" : "with"} a user key`);
                p5[0] = kg;
                p5[1] = t.id;
                p5[2] = key;
                p5[3] = uk ?? EMPTY;
                p5[4] = v;
                this.s.upsert.run(p5);
              });
              this.driver.exec("COMMIT");
            } catch (e) {
              this.driver.exec("ROLLBACK");
              if (e instanceof StateFileError) throw e;
              throw new StateFileError(file, `cannot restore key group ${kg}: ${(e as Error).message}`, { cause: e });
            }
          }
        } finally {
          await r.close();
        }
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.kgIdx = -1;
    this.dropCache();
    this.driver.close();
  }
}

// ---- Cells ----

class SqlValueCell implements ValueCell {
  constructor(private readonly b: SqliteKeyedStateBackend, private readonly t: SqlTable) {}
  get(): unknown {
    const e = this.b.valueEntry(this.t);
    const v = e.bytes === null ? undefined : decode(e.bytes);
    this.b.maybeEvict();
    return v;
  }
  put(s: unknown): void {
    this.b.writeValue(this.t, encode(s));
  }
  remove(): void {
    this.b.writeValue(this.t, null);
  }
}

class SqlListCell implements ListCell {
  constructor(private readonly b: SqliteKeyedStateBackend, private readonly t: SqlTable) {}
  get(): unknown[] | undefined {
    const e = this.b.valueEntry(this.t);
    const v = e.bytes === null ? undefined : decodeMany(e.bytes);
    this.b.maybeEvict();
    return v;
  }
  private append(more: Uint8Array): void {
    const e = this.b.valueEntry(this.t);
    this.b.setBytes(e, e.bytes === null || e.bytes.length === 0 ? more : concat([e.bytes, more]));
    this.b.maybeEvict();
  }
  add(el: unknown): void {
    this.append(encode(el));
  }
  addAll(els: unknown[]): void {
    this.append(encodeMany(els));
  }
  put(els: unknown[]): void {
    this.b.writeValue(this.t, encodeMany(els));
  }
  remove(): void {
    this.b.writeValue(this.t, null);
  }
}

class SqlMapCell implements MapCell {
  constructor(private readonly b: SqliteKeyedStateBackend, private readonly t: SqlTable) {}
  get(uk: unknown): unknown {
    const e = this.b.mapEntry(this.t, uk);
    const v = e === undefined || e.bytes === null ? undefined : decode(e.bytes);
    this.b.maybeEvict();
    return v;
  }
  contains(uk: unknown): boolean {
    const e = this.b.mapEntry(this.t, uk);
    this.b.maybeEvict();
    return e !== undefined && e.bytes !== null;
  }
  put(uk: unknown, s: unknown): void {
    this.b.writeMapEntry(this.t, uk, encode(s));
  }
  remove(uk: unknown): void {
    this.b.writeMapEntry(this.t, uk, null);
  }
  entries(): Iterable<[unknown, unknown]> {
    return this.b.mapEntries(this.t);
  }
  isEmpty(): boolean {
    return this.b.mapIsEmpty(this.t);
  }
  clear(): void {
    this.b.mapClear(this.t);
  }
}
