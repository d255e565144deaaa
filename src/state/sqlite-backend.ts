// The SQLite backend: one database file per task, rows keyed by (key group, state id, key bytes, user-key bytes),
// for state far larger than memory with bounded RSS. Its parts:
// - this file: opening, the memory split, the per-key operations of the state cells, write-back;
// - sqlite-cache.ts: the object cache (LRU of live values, or serialized ones for list and map states) in front of
//   SQLite, sized from the budget by sqliteLimits;
// - sqlite-cells.ts: the value, list and map cells the state objects use;
// - sqlite-ttl.ts: incremental TTL cleanup of cache and database;
// - sqlite-snapshot.ts: full and incremental snapshots, the chain of change sets, restore;
// - sqlite-schema.ts: the schema (Kysely migrations) and every statement, built with Kysely and compiled once.
//
// Every state access is synchronous: cache hits touch only JS Maps; misses run a prepared statement. Writes only
// change the cache; evicted dirty entries are written back in one transaction per eviction batch. Memory: one
// budget (`state.backend.sqlite.cache-size`) is split between SQLite's page cache, its memory map of the file
// and the object cache (see sqliteMemory), because past the object cache a miss is served by SQLite's pages.
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { StateFileError } from "./api.ts";
import { checkCompatible, KeyedBackendBase, type BackendOptions, type Cell, type CloseOptions, type KeyedStateStats } from "./keyed-backend.ts";
import { decode, encodeTransient, heapKeyOf, heapKeyOfBytes, keyBytesOfHeapKey, keyOfHeapKey, transientKeyBytes, type HeapKey } from "./serde.ts";
import { clearSqlTable, Entry, entrySize, liveEntrySize, MapNode, mapEntrySize, newSqlTable, ObjectCache, settle, type SqlTable } from "./sqlite-cache.ts";
import { SqlListCell, SqlMapCell, SqlValueCell } from "./sqlite-cells.ts";
import { openSqliteDriver, type SqliteDriver, type SqliteStatement, type SqlRow, type SqlValue } from "./sqlite-driver.ts";
import { compileQueries, prepareDatabase, type Queries, type SqliteMemory } from "./sqlite-schema.ts";
import { CheckpointChain, restoreSqlite, snapshotSqlite } from "./sqlite-snapshot.ts";
import { SqliteTtlCleaner } from "./sqlite-ttl.ts";
import { RowFilter } from "./row-filter.ts";
import type { KeyedSnapshotHandle, SnapshotOptions, SnapshotStateMeta } from "./snapshot-format.ts";

/** The default memory budget per task (`state.backend.sqlite.cache-size`). */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** @deprecated the page cache is now a share of the budget (sqliteMemory); kept for callers of the old option. */
export const DEFAULT_PAGE_CACHE_BYTES = 16 * 1024 * 1024;
const EMPTY = new Uint8Array(0);

/**
 * How a memory budget is split. SQLite's page cache gets half: past the object cache every miss is an indexed
 * read, and a row costs ~40 bytes in a page against ~200-300 as a cache entry, so pages hold several times more
 * of the working set per byte. SQLite maps up to the whole budget of the file (reads from mapped pages skip a
 * copy; those pages are the OS's page cache, shared and reclaimable, although they show in RSS while mapped and
 * touched). `objectCacheBytes` is the object cache's floor, a quarter: see sqliteLimits for its actual bound.
 */
export function sqliteMemory(budgetBytes: number): SqliteMemory & { objectCacheBytes: number } {
  const b = Math.max(256 * 1024, budgetBytes);
  return { objectCacheBytes: Math.floor(b / 4), pageCacheBytes: Math.floor(b / 2), mmapBytes: b };
}

/**
 * The object cache's bound, once the backend has seen a re-read (below), for a database of `dbBytes`: what SQLite's
 * page cache and memory map cannot use of the budget, since neither holds more than the file, and at least the
 * floor (a quarter). State that fits the budget (a small file) gets nearly all of it as live entries, so its hits
 * never reach SQLite or the serializer; state that outgrows it gets the quarter, and the rest goes to SQLite's
 * pages, which hold several times more rows per byte (measured in docs/benchmarks.md, "State at scale", fourth
 * round).
 */
export function sqliteLimits(budgetBytes: number, memory: SqliteMemory & { objectCacheBytes: number }, dbBytes: number): number {
  const b = Math.max(256 * 1024, budgetBytes);
  const sqlite = Math.min(dbBytes, memory.pageCacheBytes) + Math.min(dbBytes, memory.mmapBytes);
  return Math.max(memory.objectCacheBytes, 64 * 1024, b - sqlite);
}

/** Value, reducing and aggregating states keep live values in the object cache; list and map states bytes. */
function isLive(kind: string): boolean {
  return kind !== "list" && kind !== "map";
}

export interface SqliteBackendOptions extends BackendOptions {
  /** The database file (created if missing; an existing one is reused, never reset). */
  path: string;
  /** The memory budget, split by sqliteMemory (default 64 MiB). */
  cacheBytes?: number;
  /** Overrides of the split (benchmarks, tests); an explicit objectCacheBytes is a fixed bound (no sqliteLimits). */
  objectCacheBytes?: number;
  pageCacheBytes?: number;
  mmapBytes?: number;
  /** Track changed rows so that snapshots taken with `incremental: true` write change sets. */
  incremental?: boolean;
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
  recordChange: SqliteStatement;
  recordKeyChanges: SqliteStatement;
  forgetChanges: SqliteStatement;
  clearChanges: SqliteStatement;
  pageCount: SqliteStatement;
  deltaGet: SqliteStatement;
  deltaPut: SqliteStatement;
  deltaScanKey: SqliteStatement;
  deltaDeleteKey: SqliteStatement;
  mergeDeltaRows: SqliteStatement;
  mergeDeltaDeletions: SqliteStatement;
  clearDelta: SqliteStatement;
  recordKeyDeltaChanges: SqliteStatement;
}

/**
 * kv_delta is merged into kv once it holds this share of the file (and at least DELTA_MIN_BYTES): then a merge
 * rewrites kv's leaves once per several write-back batches instead of once per batch. Of the sizes tried (about
 * all of kv, a quarter, a sixteenth) a quarter was fastest, a sixteenth 30 % slower (docs/benchmarks.md, "The
 * SQLite write delta").
 */
const DELTA_SHARE = 0.2;
const DELTA_MIN_BYTES = 1 << 20;

export class SqliteKeyedStateBackend extends KeyedBackendBase {
  readonly kind = "sqlite" as const;
  readonly path: string;
  /** @internal the parts in sqlite-*.ts share these. */
  readonly s: Statements;
  readonly byName = new Map<string, SqlTable>();
  readonly byId = new Map<number, SqlTable>();
  readonly cache: ObjectCache;
  readonly memory: SqliteMemory & { objectCacheBytes: number };
  /** Whether changed rows are recorded (incremental checkpoints). */
  readonly trackChanges: boolean;
  /** The current change epoch: every snapshot starts a new one; recorded changes carry it. */
  epoch = 1;
  readonly chain = new CheckpointChain();
  private readonly ttlCleaner: SqliteTtlCleaner;
  /**
   * The rows written to kv since it was last empty (row-filter.ts): a miss on a row it never saw skips the SELECT.
   * Null while the table may hold rows it did not see (a database file opened with rows in it); a restore empties the
   * table and starts one.
   */
  rowFilter: RowFilter | null;
  private readonly pageSize: number;
  /** The whole memory budget (state.backend.sqlite.cache-size). */
  private readonly budget: number;
  /** Whether the object cache's bound was given explicitly (then it does not adapt). */
  private readonly fixedObjectCache: boolean;
  /** The current key group and key bytes (computed on the first miss after setCurrentKey). */
  private kg = -1;
  private kb: Uint8Array | null = null;
  private readonly p3: SqlValue[] = [0, 0, EMPTY];
  private readonly p4: SqlValue[] = [0, 0, EMPTY, EMPTY];
  private readonly p5: SqlValue[] = [0, 0, EMPTY, EMPTY, EMPTY];
  /**
   * About how many bytes kv_delta holds (the rows written to it since the last merge, overwritten ones counted
   * again); 0 exactly when it is empty, and then no read looks there.
   */
  deltaBytes = 0;
  /** The rows written to kv_delta since its last merge (deletions too): most misses then need not look there. */
  private readonly deltaFilter = new RowFilter();
  private deltaFilterValid = true;
  /** Write-back batches into kv_delta and straight into kv, merges, and rows of the former written to kv as
   *  updates in place (diagnostics, tests). */
  readonly writeBack = { toDelta: 0, direct: 0, merges: 0, updatesInKv: 0 };
  /** Whether the last read() found its row in kv (not in kv_delta). */
  private readFromKv = false;
  /** The bytes of the rows of the last write-back batch that were for the delta (all but updates of kv's rows). */
  private lastBatchBytes = 0;

  private constructor(
    opts: SqliteBackendOptions,
    readonly driver: SqliteDriver,
    readonly q: Queries,
    memory: SqliteMemory & { objectCacheBytes: number },
    budget: number,
    fixedObjectCache: boolean,
  ) {
    super(opts);
    this.path = opts.path;
    this.memory = memory;
    this.cache = new ObjectCache(Math.max(64 * 1024, memory.objectCacheBytes));
    this.trackChanges = opts.incremental === true;
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
      recordChange: p(q.recordChange),
      recordKeyChanges: p(q.recordKeyChanges),
      forgetChanges: p(q.forgetChanges),
      clearChanges: p(q.clearChanges),
      pageCount: driver.prepare("PRAGMA page_count"),
      deltaGet: p(q.deltaGet),
      deltaPut: p(q.deltaPut),
      deltaScanKey: p(q.deltaScanKey),
      deltaDeleteKey: p(q.deltaDeleteKey),
      mergeDeltaRows: p(q.mergeDeltaRows),
      mergeDeltaDeletions: p(q.mergeDeltaDeletions),
      clearDelta: p(q.clearDelta),
      recordKeyDeltaChanges: p(q.recordKeyDeltaChanges),
    };
    this.pageSize = Number(Object.values(driver.prepare("PRAGMA page_size").get() ?? { n: 4096 })[0] ?? 4096);
    this.budget = budget;
    this.fixedObjectCache = fixedObjectCache;
    for (const r of driver.prepare(q.states.sql).all()) {
      const meta: SnapshotStateMeta = { name: String(r.name), kind: String(r.kind) as SnapshotStateMeta["kind"], ttlMs: r.ttl_ms === null ? null : Number(r.ttl_ms) };
      const t = newSqlTable(Number(r.id), meta, isLive(meta.kind));
      this.byName.set(t.meta.name, t);
      this.byId.set(t.id, t);
    }
    this.epoch = Number(driver.prepare(q.maxEpoch.sql).get()?.ep ?? 0) + 1;
    // A file reopened with rows in its delta (written by an earlier process): merge them, so the count below is 0.
    if (driver.prepare("SELECT 1 AS x FROM kv_delta LIMIT 1").get() !== undefined) {
      this.deltaBytes = 1;
      this.mergeDelta();
    }
    this.rowFilter = driver.prepare("SELECT 1 AS x FROM kv LIMIT 1").get() === undefined ? new RowFilter() : null;
    this.ttlCleaner = new SqliteTtlCleaner(this);
    this.adaptCacheLimit();
  }

  /** Opens (creating or migrating) the database at `opts.path`. */
  static async open(opts: SqliteBackendOptions): Promise<SqliteKeyedStateBackend> {
    if (typeof opts.path !== "string" || opts.path.length === 0) throw new TypeError("the SQLite backend needs a database file path");
    const budget = opts.cacheBytes ?? DEFAULT_CACHE_BYTES;
    const split = sqliteMemory(budget);
    const memory = {
      objectCacheBytes: opts.objectCacheBytes ?? split.objectCacheBytes,
      pageCacheBytes: opts.pageCacheBytes ?? split.pageCacheBytes,
      mmapBytes: opts.mmapBytes ?? split.mmapBytes,
    };
    let driver: SqliteDriver;
    try {
      await fsp.mkdir(path.dirname(opts.path), { recursive: true });
      driver = await openSqliteDriver(opts.path);
    } catch (e) {
      throw new StateFileError(opts.path, `cannot open the state database: ${(e as Error).message}`, { cause: e });
    }
    try {
      const db = await prepareDatabase(driver, { maxParallelism: opts.maxParallelism, pageCacheBytes: memory.pageCacheBytes, mmapBytes: memory.mmapBytes });
      const backend = new SqliteKeyedStateBackend(opts, driver, compileQueries(db), memory, budget, opts.objectCacheBytes !== undefined);
      await db.destroy();
      return backend;
    } catch (e) {
      driver.close();
      throw e;
    }
  }

  get rangeStart(): number {
    return this.kgStart;
  }
  get rangeEnd(): number {
    return this.kgEnd;
  }
  get isClosed(): boolean {
    return this.closed;
  }

  protected keyChanged(kgIdx: number): void {
    this.kg = kgIdx + this.kgStart;
    this.kb = null;
  }

  private keyBytes(): Uint8Array {
    return (this.kb ??= keyBytesOfHeapKey(this.hk));
  }

  /** Cache statistics (for tests and metrics). */
  cacheStats(): { usedBytes: number; limitBytes: number; entries: number; dirty: number; hits: number; misses: number; missesKnownAbsent: number } {
    const c = this.cache;
    return { usedBytes: c.usedBytes, limitBytes: c.limitBytes, entries: c.entries, dirty: c.dirty, hits: c.hits, misses: c.misses, missesKnownAbsent: this.rowFilter?.skipped ?? 0 };
  }

  keys(name: string): unknown[] {
    // The cache's dirty entries (writes and deletions) first, so that the table is the whole truth.
    this.flush();
    this.mergeDelta();
    const rows = this.driver
      .prepare("SELECT DISTINCT k FROM kv WHERE state = (SELECT id FROM tm_state WHERE name = ?) AND kg BETWEEN ? AND ?")
      .all([name, this.kgStart, this.kgEnd]);
    return rows.map((r) => keyOfHeapKey(heapKeyOfBytes(r.k as Uint8Array)));
  }

  stats(): KeyedStateStats {
    const c = this.cache;
    if (this.closed) return { sizeBytes: 0, entries: null, cacheHits: c.hits, cacheMisses: c.misses };
    const n = (pragma: string) => Number(Object.values(this.driver.prepare(`PRAGMA ${pragma}`).get() ?? { v: 0 })[0] ?? 0);
    return { sizeBytes: (n("page_count") - n("freelist_count")) * n("page_size"), entries: null, cacheHits: c.hits, cacheMisses: c.misses };
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

  /** The table of a state, registered in tm_state when new. */
  tableFor(meta: SnapshotStateMeta, where: string): SqlTable {
    let t = this.byName.get(meta.name);
    if (t) {
      checkCompatible(t.meta, meta, where);
      if (meta.ttlMs !== null && meta.ttlMs !== t.meta.ttlMs) {
        this.endRead();
        this.s.updateStateTtl.run([meta.ttlMs, t.id]);
        t.meta.ttlMs = meta.ttlMs;
      }
      return t;
    }
    this.endRead();
    const { lastInsertRowid } = this.s.insertState.run([meta.name, meta.kind, meta.ttlMs]);
    t = newSqlTable(Number(lastInsertRowid), { ...meta }, isLive(meta.kind));
    this.byName.set(t.meta.name, t);
    this.byId.set(t.id, t);
    return t;
  }

  // ---- The held read transaction ----

  /** Whether the main connection holds an open (read-only so far) transaction for the hot path's reads. */
  private reading = false;

  /**
   * Reads on a cache miss run inside one transaction held until the next write: in WAL mode each statement
   * outside a transaction is a read transaction of its own, which takes and drops a lock on the shared-memory
   * WAL index (fcntl system calls) and checks the WAL header; held across many misses that cost goes (1 M keys
   * visited cyclically through a 64 MiB budget: about half the CPU time, most of the kernel time). Nothing is
   * ever written inside it uncommitted: every write ends it first (writeEntries commits it with the batch), so
   * a snapshot's second connection always sees every write made so far.
   */
  private beginRead(): void {
    if (!this.reading) {
      this.driver.exec("BEGIN");
      this.reading = true;
    }
  }

  /** Ends the held read transaction, before any write that is not part of a write-back batch. */
  endRead(): void {
    if (this.reading) {
      this.reading = false;
      this.driver.exec("COMMIT");
    }
  }

  // ---- Write-back ----

  maybeEvict(): void {
    if (this.cache.overLimit) {
      const dirty = this.cache.evict();
      // A write transaction costs about one WAL page per page it touches, whatever it changed on the page: write
      // every dirty entry now (they stay cached, clean), not only the evicted ones, so that batches are as large
      // as the cache and later evictions of these entries need no write at all.
      if (dirty.length > 0) this.writeEntries(dirty.concat(this.cache.collectDirty(true)));
    }
  }

  /** Writes entries' current bytes (upsert, or delete for tombstones) in one transaction, recording them as
   *  changed when incremental checkpoints are on. */
  writeEntries(entries: Entry[], epoch = this.epoch): void {
    entries.sort((a, b) => a.kg - b.kg || a.t.id - b.t.id);
    const { deltaPut, upsert, delete: del, recordChange } = this.s;
    const p5 = this.p5;
    const p4 = this.p4;
    let written = 0; // the bytes of the rows that go to the delta unless the batch is direct
    const track = this.trackChanges;
    // The held read transaction, if any, becomes the write transaction (it has written nothing yet).
    if (!this.reading) this.driver.exec("BEGIN");
    this.reading = false;
    // Batches about as large as the delta may grow gain nothing from it (each would be written twice, into the
    // delta and at once again by its merge: 0.74x the get+update rate of a working set the budget's size): while
    // the delta is empty, those go straight into kv. The last batch's size stands for this one's.
    const mergeAt = Math.max(DELTA_MIN_BYTES, DELTA_SHARE * this.databaseBytes());
    const direct = this.deltaBytes === 0 && 2 * this.lastBatchBytes >= mergeAt;
    const deltaBefore = this.deltaBytes;
    let cur: Entry | undefined;
    // A key's entries (its map's user keys, its other states) share its bytes: encode each key once per batch.
    const keys = new Map<HeapKey, Uint8Array>();
    try {
      for (const e of entries) {
        cur = e;
        let k = keys.get(e.hk);
        if (k === undefined) keys.set(e.hk, (k = keyBytesOfHeapKey(e.hk)));
        const uk = e.node === null ? EMPTY : transientKeyBytes(e.uhk); // bound at once (SQLite copies it)
        // A live value is serialized here, into a scratch buffer that the statement copies.
        const bytes = e.t.live ? (e.value === undefined ? null : encodeTransient(e.value)) : e.bytes;
        p5[0] = e.kg;
        p5[1] = e.t.id;
        p5[2] = k;
        p5[3] = uk;
        p5[4] = bytes; // null: the row's deletion
        if (bytes !== null) this.rowFilter?.add(e.kg, e.t.id, k, uk); // before the write: a rollback leaves only a false positive
        if (!e.inKv) written += k.length + uk.length + (bytes === null ? 0 : bytes.length) + 8; // the delta's share
        if (!direct && !e.inKv) {
          // A new row, or one that may have a version in the delta.
          this.deltaFilter.add(e.kg, e.t.id, k, uk);
          deltaPut.run(p5);
        } else {
          // An update of a row in kv (in place, where the delta would write it twice), or a direct batch.
          if (!direct) this.writeBack.updatesInKv++;
          e.inKv = true;
          if (bytes !== null) {
            upsert.run(p5);
          } else {
            p4[0] = e.kg;
            p4[1] = e.t.id;
            p4[2] = k;
            p4[3] = uk;
            del.run(p4);
          }
        }
        if (track) {
          p5[0] = e.kg;
          p5[1] = e.t.id;
          p5[2] = k;
          p5[3] = uk;
          p5[4] = epoch;
          recordChange.run(p5);
        }
      }
      this.lastBatchBytes = written;
      this.writeBack[direct ? "direct" : "toDelta"]++;
      if (!direct) {
        this.deltaBytes += written;
        if (this.deltaBytes >= mergeAt) this.mergeDeltaRows();
      }
      this.driver.exec("COMMIT");
    } catch (err) {
      this.rollback(deltaBefore);
      // A live value is first serialized here (a symbol or a cyclic object cannot be), so name the state.
      const what = cur === undefined ? "" : ` (at an entry of state "${cur.t.meta.name}")`;
      throw new StateFileError(this.path, `writing ${entries.length} cached state entries failed${what}: ${(err as Error).message}`, { cause: err });
    }
    this.adaptCacheLimit();
  }

  /** Moves kv_delta into kv (inside the caller's transaction). */
  private mergeDeltaRows(): void {
    this.s.mergeDeltaRows.run();
    this.s.mergeDeltaDeletions.run();
    this.s.clearDelta.run();
    this.deltaEmptied();
    this.writeBack.merges++;
  }

  /** kv_delta was just emptied: nothing to count, and its filter starts over (and is complete again). */
  private deltaEmptied(): void {
    this.deltaBytes = 0;
    this.deltaFilter.clear();
    this.deltaFilterValid = true;
  }

  /** Rolls back a failed write transaction. A merge in it left the delta's rows in place: count them again, and
   *  let every read look there (the filter was cleared) until the next merge. */
  private rollback(deltaBefore: number): void {
    try {
      this.driver.exec("ROLLBACK");
    } catch {}
    if (this.deltaBytes < deltaBefore) {
      this.deltaBytes = deltaBefore;
      this.deltaFilterValid = false;
    }
  }

  /** Whether kv_delta may have a row (a version or a deletion). */
  private inDelta(p: SqlValue[]): boolean {
    return this.deltaBytes > 0 && (!this.deltaFilterValid || this.deltaFilter.mayContain(p[0] as number, p[1] as number, p[2] as Uint8Array, p[3] as Uint8Array));
  }

  /** Moves kv_delta into kv, so that kv alone is the stored state. */
  mergeDelta(): void {
    if (this.deltaBytes === 0) return;
    this.endRead();
    const deltaBefore = this.deltaBytes;
    this.driver.exec("BEGIN");
    try {
      this.mergeDeltaRows();
      this.driver.exec("COMMIT");
    } catch (err) {
      this.rollback(deltaBefore);
      throw new StateFileError(this.path, `merging the write delta into kv failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Empties kv and kv_delta (before a restore). */
  clearRows(): void {
    this.endRead();
    this.s.deleteAll.run();
    this.s.clearDelta.run();
    this.deltaEmptied();
  }

  /** The database's size in bytes (its pages; the WAL not counted). */
  databaseBytes(): number {
    const r = this.s.pageCount.get();
    return r === undefined ? 0 : Number(Object.values(r)[0] ?? 0) * this.pageSize;
  }

  /**
   * Moves the object cache's bound with the database's size (sqliteLimits), unless it was fixed by the caller.
   * Called after every write-back batch, restore and at open: only writes grow the file.
   */
  adaptCacheLimit(): void {
    if (this.fixedObjectCache || !this.reread) return;
    this.cache.limitBytes = sqliteLimits(this.budget, this.memory, this.databaseBytes());
  }

  /**
   * Whether a cache miss has found its row in the database: the cache dropped something that was needed again.
   * Until then the object cache stays at its floor, so that a stream of new keys (state that only grows) never
   * fills the whole budget with entries before the file shows how big the state is: that transient raised the
   * peak RSS of 2 M new keys through a 64 MiB budget from 288 to 425 MB.
   */
  private reread = false;

  private sawReread(): void {
    this.reread = true;
    this.adaptCacheLimit();
  }

  /** Records one row as changed (TTL cleanup of rows that are not cached). */
  recordRow(kg: number, state: number, k: Uint8Array, uk: Uint8Array): void {
    if (this.trackChanges) {
      this.endRead();
      this.s.recordChange.run([kg, state, k, uk, this.epoch]);
    }
  }

  /** Writes every dirty cache entry to the database (entries stay cached, clean). */
  flush(): void {
    const dirty = this.cache.collectDirty(true);
    if (dirty.length > 0) this.writeEntries(dirty);
  }

  /** Drops the whole cache without writing anything. */
  dropCache(): void {
    this.cache.clear();
    for (const t of this.byId.values()) clearSqlTable(t);
    this.ttlCleaner.reset();
  }

  // ---- Operations of the cells (current key) ----

  /** The row of (kg, state, k, uk) in `p`, or undefined: without a SELECT when the row filter never saw it. */
  private read(p: SqlValue[]): SqlRow | undefined {
    this.readFromKv = false;
    if (this.rowFilter !== null && !this.rowFilter.mayContain(p[0] as number, p[1] as number, p[2] as Uint8Array, p[3] as Uint8Array)) return undefined;
    this.beginRead();
    if (this.inDelta(p)) {
      const d = this.s.deltaGet.get(p);
      if (d !== undefined) return d.v === null ? undefined : d; // the newest version, or its deletion
    }
    const row = this.s.get.get(p);
    this.readFromKv = row !== undefined;
    return row;
  }

  /** Whether kv_delta has a version (or the deletion) of a row: then kv's row is stale. */
  deltaHas(p: SqlValue[]): boolean {
    return this.inDelta(p) && this.s.deltaGet.get(p) !== undefined;
  }

  private checkKey(): void {
    if (this.kgIdx < 0) this.noKey();
  }

  /** The cache entry of the current key for a non-map state, loaded on a miss. The caller may read a live
   *  entry's value (and change it in place before writing it back): a snapshot waiting on it copies it first. */
  valueEntry(t: SqlTable): Entry {
    this.checkKey();
    const e = this.cachedValue(t);
    if (e !== undefined) {
      this.cache.hits++;
      this.cache.touch(e);
      if (e.pending !== null) settle(e);
      return e;
    }
    this.cache.misses++;
    const p = this.p4;
    p[0] = this.kg;
    p[1] = t.id;
    p[2] = this.keyBytes();
    p[3] = EMPTY;
    const row = this.read(p);
    const bytes = row === undefined ? null : (row.v as Uint8Array);
    if (bytes !== null && !this.reread) this.sawReread();
    let n: Entry;
    if (t.live) {
      const v = bytes === null ? undefined : decode(bytes);
      n = new Entry(t, this.kg, this.hk, null, undefined, null, v, false, liveEntrySize(this.hk, v));
    } else n = new Entry(t, this.kg, this.hk, null, undefined, bytes, undefined, false, entrySize(this.hk, undefined, bytes));
    n.inKv = this.readFromKv;
    t.values.set(this.hk, n);
    t.lastEntry = n;
    t.lastEntryHk = this.hk;
    this.cache.add(n);
    return n;
  }

  /** The current key's cached entry of a non-map state (the last one looked up, or from the table). */
  private cachedValue(t: SqlTable): Entry | undefined {
    const hk = this.hk;
    if (t.lastEntry !== null && t.lastEntryHk === hk) return t.lastEntry;
    const e = t.values.get(hk);
    if (e !== undefined) {
      t.lastEntry = e;
      t.lastEntryHk = hk;
    }
    return e;
  }

  /** Writes a list state's bytes for the current key (null: removes it). */
  writeValue(t: SqlTable, bytes: Uint8Array | null): void {
    this.checkKey();
    const e = this.cachedValue(t);
    if (e !== undefined) this.cache.setBytes(e, bytes);
    else {
      // A blind write needs no read: the entry is dirty and replaces whatever the database holds.
      const n = new Entry(t, this.kg, this.hk, null, undefined, bytes, undefined, true, entrySize(this.hk, undefined, bytes));
      t.values.set(this.hk, n);
      this.cache.add(n);
    }
    this.maybeEvict();
  }

  /** Writes a live state's value for the current key (undefined: removes it); nothing is serialized here. */
  writeLive(t: SqlTable, v: unknown): void {
    this.checkKey();
    const e = this.cachedValue(t);
    if (e !== undefined) this.cache.setValue(e, v);
    else {
      const n = new Entry(t, this.kg, this.hk, null, undefined, null, v, true, liveEntrySize(this.hk, v));
      t.values.set(this.hk, n);
      this.cache.add(n);
    }
    this.maybeEvict();
  }

  setBytes(e: Entry, bytes: Uint8Array | null): void {
    this.cache.setBytes(e, bytes);
  }

  mapNode(t: SqlTable, create: boolean): MapNode | undefined {
    this.checkKey();
    const hk = this.hk;
    if (t.lastNode !== null && t.lastNodeHk === hk) return t.lastNode;
    let n = t.maps.get(hk);
    if (n === undefined) {
      if (!create) return undefined;
      this.cache.addNode(t, (n = new MapNode(hk)));
    }
    t.lastNode = n;
    t.lastNodeHk = hk;
    return n;
  }

  /** The entry of a user key of the current key, loaded on a miss; undefined when known absent. */
  mapEntry(t: SqlTable, uk: unknown): Entry | undefined {
    const uhk = heapKeyOf(uk);
    const n = this.mapNode(t, true)!;
    const e = n.entries.get(uhk);
    if (e !== undefined) {
      this.cache.hits++;
      this.cache.touch(e);
      return e;
    }
    if (n.complete) return undefined;
    this.cache.misses++;
    const p = this.p4;
    p[0] = this.kg;
    p[1] = t.id;
    p[2] = this.keyBytes();
    p[3] = keyBytesOfHeapKey(uhk);
    const row = this.read(p);
    const bytes = row === undefined ? null : (row.v as Uint8Array);
    if (bytes !== null && !this.reread) this.sawReread();
    const ne = new Entry(t, this.kg, n.hk, n, uhk, bytes, undefined, false, mapEntrySize(uhk, bytes));
    ne.inKv = this.readFromKv;
    n.entries.set(uhk, ne);
    this.cache.add(ne);
    return ne;
  }

  writeMapEntry(t: SqlTable, uk: unknown, bytes: Uint8Array | null): void {
    const uhk = heapKeyOf(uk);
    const n = this.mapNode(t, true)!;
    const e = n.entries.get(uhk);
    if (e !== undefined) this.cache.setBytes(e, bytes);
    else if (!(bytes === null && n.complete)) {
      const ne = new Entry(t, this.kg, n.hk, n, uhk, bytes, undefined, true, mapEntrySize(uhk, bytes));
      n.entries.set(uhk, ne);
      this.cache.add(ne);
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
      this.beginRead();
      // kv_delta's rows first: they are the newest versions, and a deletion there hides kv's row.
      const deleted = new Set<HeapKey>();
      for (const row of this.deltaBytes > 0 ? this.s.deltaScanKey.all(p) : []) {
        if (row.v === null) deleted.add(heapKeyOfBytes(row.uk as Uint8Array));
        else this.loadMapEntry(t, n, row, false);
      }
      for (const row of this.s.scanKey.all(p)) if (deleted.size === 0 || !deleted.has(heapKeyOfBytes(row.uk as Uint8Array))) this.loadMapEntry(t, n, row, true);
      n.complete = true;
    }
    const out: [unknown, unknown][] = [];
    for (const [uhk, e] of n.entries) {
      if (e.bytes !== null) out.push([keyOfHeapKey(uhk), decode(e.bytes)]);
      this.cache.touch(e);
    }
    if (n.entries.size === 0) this.cache.dropNode(t, n);
    this.maybeEvict();
    return out;
  }

  /** A stored map entry into the cache, unless the cache has that user key already (its version is newer). */
  private loadMapEntry(t: SqlTable, n: MapNode, row: SqlRow, inKv: boolean): void {
    const uhk = heapKeyOfBytes(row.uk as Uint8Array);
    if (n.entries.has(uhk)) return;
    const bytes = row.v as Uint8Array;
    const e = new Entry(t, this.kg, n.hk, n, uhk, bytes, undefined, false, mapEntrySize(uhk, bytes));
    e.inKv = inKv;
    n.entries.set(uhk, e);
    this.cache.add(e);
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
    const n = t.maps.get(this.hk);
    this.endRead();
    if (this.trackChanges) {
      // Every user key goes: the stored ones and the cached ones (a new entry may exist only in the cache, and an
      // earlier snapshot may have taken it from there).
      this.s.recordKeyChanges.run([this.epoch, this.kg, t.id, p[2]]);
      if (this.deltaBytes > 0) this.s.recordKeyDeltaChanges.run([this.epoch, this.kg, t.id, p[2]]);
      if (n !== undefined) for (const e of n.entries.values()) this.recordRow(this.kg, t.id, p[2] as Uint8Array, keyBytesOfHeapKey(e.uhk));
    }
    this.s.deleteKey.run(p);
    if (this.deltaBytes > 0) this.s.deltaDeleteKey.run(p);
    if (n === undefined) return;
    // Dirty entries are superseded by the delete (and must not be written back by a snapshot's write-behind).
    for (const e of n.entries.values()) this.cache.remove(e);
    this.cache.dropNode(t, n);
  }

  // ---- TTL, snapshots, restore ----

  cleanupExpired(maxEntries = 1000): number {
    if (this.closed) return 0;
    return this.ttlCleaner.step(maxEntries);
  }

  /** A PRAGMA's value on the main connection (diagnostics, tests). */
  pragma(name: string): unknown {
    if (!/^[a-z_]+$/.test(name)) throw new TypeError(`bad pragma name ${JSON.stringify(name)}`);
    const row = this.driver.prepare(`PRAGMA ${name}`).get();
    return row === undefined ? undefined : Object.values(row)[0];
  }

  async snapshot(dir: string, opts: SnapshotOptions = {}): Promise<KeyedSnapshotHandle> {
    if (this.closed) throw new Error("the sqlite state backend is closed");
    return snapshotSqlite(this, dir, opts);
  }

  override notifyCheckpointComplete(checkpointId: number): void {
    if (this.closed) return;
    const base = this.chain.complete(checkpointId);
    // The changes up to the new base are in its files now: forget them, so the change log stays as small as
    // what changed since.
    if (base !== undefined) {
      this.endRead();
      this.s.forgetChanges.run([base.epoch]);
    }
  }

  async restore(handles: readonly KeyedSnapshotHandle[]): Promise<void> {
    if (this.closed) throw new Error("the sqlite state backend is closed");
    this.endRead();
    await restoreSqlite(this, handles);
    this.adaptCacheLimit();
  }

  async close(opts?: CloseOptions): Promise<void> {
    if (this.closed) return;
    // A task's end deletes its working copy at once: writing the cache back into it would be wasted (measured: a
    // sixth of a bounded SQLite q16's task CPU with a budget that holds its state; docs/benchmarks.md).
    if (opts?.discard !== true) {
      this.flush();
      this.mergeDelta(); // the file left behind keeps its rows in kv alone
    }
    this.endRead();
    this.closed = true;
    this.kgIdx = -1;
    this.dropCache();
    this.driver.close();
  }
}
