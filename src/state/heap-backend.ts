// The heap backend: plain JS Maps, one per state and key group, holding the values themselves (no copies).
//
// Snapshot: the synchronous part marks every key group of the range as pending. From then on, the first
// setCurrentKey into a pending group, the first state access in the current key's group (which an operator can
// reach without calling setCurrentKey), or a cleanup step or restore touching a group, serializes that group
// before it can change, while the async part serializes the untouched groups in the background and writes the file. Each
// group is serialized exactly once, as it was at the snapshot, without copying any map or value.
import {
  checkCompatible,
  KeyedBackendBase,
  unexpiredStored,
  type BackendOptions,
  type Cell,
  type KeyedStateStats,
  type ListCell,
  type MapCell,
  type ValueCell,
} from "./keyed-backend.ts";
import { KeyTable } from "./key-table.ts";
import { ByteWriter, decode, decodeMany, encodeTransient, heapKeyOf, heapKeyOfBytes, keyBytesOfHeapKey, keyOfHeapKey, type HeapKey } from "./serde.ts";
import {
  checkKeyedHandle,
  openChainFile,
  KeyedSnapshotWriter,
  snapshotFileName,
  type KeyedSnapshotHandle,
  type SnapshotStateMeta,
} from "./snapshot-format.ts";

/** A map state's user keys of one key. */
type KgMap = Map<HeapKey, unknown>;

interface HeapTable {
  meta: SnapshotStateMeta;
  /** Per key group of the range (index kg - start): key -> stored value, or for map state key -> (user key -> stored).
   *  A KeyTable: a Map in less memory while the keys are numbers (key-table.ts). */
  maps: (KeyTable | undefined)[];
}

export class HeapKeyedStateBackend extends KeyedBackendBase {
  readonly kind = "heap" as const;
  private readonly tables = new Map<string, HeapTable>();
  private readonly tableList: HeapTable[] = [];
  private readonly size: number;
  /** pending[i] === 1: key group i belongs to the running snapshot and is not serialized yet. Outside a snapshot it
   *  is an array of zeros, never null: the check on every key change then runs the same code from the first record on,
   *  and the JIT does not compile it with the snapshot's branch left out (measured: with null, the compiled key change
   *  exited to the slower tiers again and again while a snapshot ran; docs/benchmarks.md, issue 15). */
  private readonly noSnapshot: Uint8Array;
  private pending: Uint8Array;
  private job: HeapSnapshotJob | null = null;
  /** Set at a snapshot's start: the next state access must check the current key group. */
  private guardCurrent = false;
  private readonly listWriter = new ByteWriter(1024);
  private cleanupCursor = { table: 0, kg: 0, iter: null as Iterator<[HeapKey, unknown]> | null };
  /** Bumped whenever a map state's per-key map may leave its table (removed when empty, cleared, expired, restored
   *  over): a HeapMapCell's cached per-key map is valid only within one generation. */
  mapGen = 0;

  constructor(opts: BackendOptions) {
    super(opts);
    this.size = this.kgEnd - this.kgStart + 1;
    this.noSnapshot = new Uint8Array(this.size);
    this.pending = this.noSnapshot;
  }

  protected keyChanged(kgIdx: number): void {
    this.guardCurrent = false;
    if (this.pending[kgIdx] === 1) this.job!.serialize(kgIdx);
  }

  /** The current key group's index, for a state access: serializes it first if a snapshot still needs it. */
  groupIndex(): number {
    const i = this.kgIdx;
    if (i < 0) this.noKey();
    if (this.guardCurrent) {
      this.guardCurrent = false;
      if (this.pending[i] === 1) this.job!.serialize(i);
    }
    return i;
  }

  private tableFor(meta: SnapshotStateMeta, where: string): HeapTable {
    let t = this.tables.get(meta.name);
    if (t) {
      checkCompatible(t.meta, meta, where);
      if (meta.ttlMs !== null) t.meta.ttlMs = meta.ttlMs;
      return t;
    }
    t = { meta: { ...meta }, maps: new Array(this.size).fill(undefined) };
    this.tables.set(meta.name, t);
    this.tableList.push(t);
    return t;
  }

  protected cellFor(meta: SnapshotStateMeta): Cell {
    const t = this.tableFor(meta, " in the restored snapshot");
    switch (meta.kind) {
      case "list":
        return new HeapListCell(this, t);
      case "map":
        return new HeapMapCell(this, t);
      default:
        return new HeapValueCell(this, t);
    }
  }

  /** Bytes of the last completed snapshot (the state's serialized size). */
  private lastSnapshotBytes = 0;

  keys(name: string): unknown[] {
    const out: unknown[] = [];
    for (const m of this.tables.get(name)?.maps ?? []) if (m !== undefined) for (const [hk] of m.entries()) out.push(keyOfHeapKey(hk));
    return out;
  }

  stats(): KeyedStateStats {
    let entries = 0;
    for (const t of this.tableList) for (const m of t.maps) if (m !== undefined) entries += m.size;
    return { sizeBytes: this.lastSnapshotBytes, entries };
  }

  /** Number of stored entries (keys, or user keys of map state) of a state; for tests and metrics. */
  countEntries(name: string): number {
    const t = this.tables.get(name);
    let n = 0;
    for (const m of t?.maps ?? []) {
      if (m === undefined) continue;
      if (t!.meta.kind === "map") for (const inner of m.values()) n += (inner as KgMap).size;
      else n += m.size;
    }
    return n;
  }

  cleanupExpired(maxEntries = 1000): number {
    const ttlTables = this.tableList.filter((t) => t.meta.ttlMs !== null);
    if (ttlTables.length === 0 || this.closed) return 0;
    const now = this.clock();
    const c = this.cleanupCursor;
    let visited = 0;
    let removed = 0;
    let slotsAdvanced = 0;
    const totalSlots = ttlTables.length * this.size;
    while (visited < maxEntries) {
      if (c.iter === null) {
        if (slotsAdvanced++ > totalSlots) break;
        if (c.table >= ttlTables.length) c.table = 0;
        const m = ttlTables[c.table]!.maps[c.kg];
        if (m !== undefined && m.size > 0) {
          if (this.pending[c.kg] === 1) this.job!.serialize(c.kg);
          c.iter = m.entries();
        } else {
          this.advanceCleanup(ttlTables.length);
          continue;
        }
      }
      const t = ttlTables[c.table]!;
      const m = t.maps[c.kg]!;
      const r = c.iter.next();
      if (r.done) {
        c.iter = null;
        this.advanceCleanup(ttlTables.length);
        continue;
      }
      const [hk, stored] = r.value;
      const ttlMs = t.meta.ttlMs!;
      if (t.meta.kind === "map") {
        const inner = stored as KgMap;
        for (const [uhk, s] of inner) {
          visited++;
          if ((s as [unknown, number])[1] + ttlMs <= now) {
            inner.delete(uhk);
            removed++;
          }
        }
        if (inner.size === 0) {
          m.delete(hk);
          this.mapGen++;
        }
      } else {
        visited++;
        const kept = unexpiredStored(t.meta.kind, ttlMs, stored, now);
        if (kept === undefined) {
          m.delete(hk);
          removed++;
        } else if (kept !== stored) {
          removed += (stored as unknown[]).length - (kept as unknown[]).length;
          m.set(hk, kept);
        }
      }
    }
    return removed;
  }

  private advanceCleanup(tables: number): void {
    const c = this.cleanupCursor;
    c.kg++;
    if (c.kg >= this.size) {
      c.kg = 0;
      c.table = (c.table + 1) % tables;
    }
  }

  async snapshot(dir: string): Promise<KeyedSnapshotHandle> {
    if (this.closed) throw new Error("the heap state backend is closed");
    // Synchronous part: finish an earlier snapshot's serialization, mark all groups pending, serialize the current one.
    this.job?.serializeAll();
    const file = snapshotFileName(dir, `keyed-heap-kg${this.kgStart}-${this.kgEnd}`);
    const job = new HeapSnapshotJob(this, [...this.tableList], this.clock());
    this.job = job;
    this.pending = job.pending;
    // The current key's group can change without another setCurrentKey: its first access serializes it.
    this.guardCurrent = this.kgIdx >= 0;
    // Asynchronous part.
    let writer: KeyedSnapshotWriter | undefined;
    try {
      writer = await KeyedSnapshotWriter.create(file, {
        backend: "heap",
        maxParallelism: this.maxParallelism,
        keyGroupRange: { ...this.keyGroupRange },
        createdAt: Date.now(),
        states: job.states.map((t) => ({ ...t.meta })),
      });
      for (let i = 0; i < this.size; i++) {
        if (job.pending[i] === 1) job.serialize(i);
        const block = job.blocks.get(i);
        if (block === undefined) continue;
        job.blocks.delete(i);
        await writer.writeBlock(i + this.kgStart, block.bytes, block.entries);
      }
      const handle = await writer.finish();
      this.lastSnapshotBytes = handle.sizeBytes;
      return handle;
    } catch (e) {
      await writer?.abort();
      throw e;
    } finally {
      job.serializeAll();
      if (this.job === job) {
        this.job = null;
        this.pending = this.noSnapshot;
      }
    }
  }

  /** Serializes one key group of `tables` into a block (entries in the common snapshot format). */
  serializeGroup(tables: HeapTable[], kgIdx: number, now: number, w: ByteWriter): number {
    let entries = 0;
    for (let s = 0; s < tables.length; s++) {
      const t = tables[s]!;
      const m = t.maps[kgIdx];
      if (m === undefined || m.size === 0) continue;
      const { kind, ttlMs } = t.meta;
      for (const [hk, stored] of m) {
        const kb = keyBytesOfHeapKey(hk);
        if (kind === "map") {
          for (const [uhk, sv] of stored as KgMap) {
            if (ttlMs !== null && (sv as [unknown, number])[1] + ttlMs <= now) continue;
            w.varint(s);
            w.lenBytes(kb);
            w.lenBytes(keyBytesOfHeapKey(uhk));
            w.lenBytes(encodeTransient(sv));
            entries++;
          }
          continue;
        }
        const kept = ttlMs === null ? stored : unexpiredStored(kind, ttlMs, stored, now);
        if (kept === undefined) continue;
        w.varint(s);
        w.lenBytes(kb);
        w.varint(0);
        if (kind === "list") {
          const lw = this.listWriter;
          lw.reset();
          for (const e of kept as unknown[]) lw.bytes(encodeTransient(e));
          w.lenBytes(lw.result());
        } else {
          // An array is encoded from a copy: after msgpack had encoded the live accumulator (a keyed sum's [key, sum]),
          // the operator's compiled read of its fields failed its check again and again (hundreds of exits to the
          // slower tiers per run; none with the copy; JavaScriptCore's reason not found; docs/benchmarks.md, issue 15).
          w.lenBytes(encodeTransient(Array.isArray(kept) ? kept.slice() : kept));
        }
        entries++;
      }
    }
    return entries;
  }

  async restore(handles: readonly KeyedSnapshotHandle[]): Promise<void> {
    if (this.closed) throw new Error("the heap state backend is closed");
    this.job?.serializeAll();
    for (const h of handles) checkKeyedHandle(h, this.maxParallelism);
    for (const t of this.tableList) t.maps.fill(undefined);
    this.mapGen++;
    this.cleanupCursor = { table: 0, kg: 0, iter: null };
    const now = this.clock();
    for (const h of handles) {
      const from = Math.max(h.keyGroupRange.start, this.kgStart);
      const to = Math.min(h.keyGroupRange.end, this.kgEnd);
      if (from > to) continue;
      for (let i = 0; i < h.files.length; i++) {
        const file = h.files[i]!;
        const r = await openChainFile(file, i);
        try {
          const tables = r.header.states.map((meta) => this.tableFor(meta, ` in snapshot ${file}`));
          for (let kg = from; kg <= to; kg++) {
            const block = await r.readBlock(kg);
            if (block === undefined) continue;
            const idx = kg - this.kgStart;
            r.forEachEntry(kg, block, (s, key, uk, value) => {
              const t = tables[s]!;
              const { kind, ttlMs } = t.meta;
              let stored = value === null ? undefined : kind === "list" ? decodeMany(value) : decode(value);
              if (ttlMs !== null && stored !== undefined) stored = unexpiredStored(kind, ttlMs, stored, now);
              if (stored === undefined) {
                // Deleted (a change set of an incremental checkpoint) or expired: an earlier file's value goes too.
                const m = t.maps[idx];
                if (m === undefined) return;
                const hk = heapKeyOfBytes(key);
                if (kind !== "map") m.delete(hk);
                else if (uk !== null) {
                  const inner = m.get(hk) as KgMap | undefined;
                  inner?.delete(heapKeyOfBytes(uk));
                  if (inner !== undefined && inner.size === 0) {
                    m.delete(hk);
                    this.mapGen++;
                  }
                }
                return;
              }
              const m = (t.maps[idx] ??= new KeyTable());
              const hk = heapKeyOfBytes(key);
              if (kind === "map") {
                if (uk === null) throw new Error("map state entry without a user key");
                let inner = m.get(hk) as KgMap | undefined;
                if (inner === undefined) m.set(hk, (inner = new Map()));
                inner.set(heapKeyOfBytes(uk), stored);
              } else {
                m.set(hk, stored);
              }
            });
          }
        } finally {
          await r.close();
        }
      }
    }
  }

  async close(): Promise<void> {
    this.job?.serializeAll();
    this.closed = true;
    this.kgIdx = -1;
    for (const t of this.tableList) t.maps.fill(undefined);
    this.mapGen++;
  }

  /** For HeapSnapshotJob. */
  get groupCount(): number {
    return this.size;
  }
}

class HeapSnapshotJob {
  readonly pending: Uint8Array;
  readonly blocks = new Map<number, { bytes: Uint8Array; entries: number }>();
  private remaining: number;
  private readonly w = new ByteWriter();

  constructor(private readonly b: HeapKeyedStateBackend, readonly states: HeapTable[], private readonly now: number) {
    this.pending = new Uint8Array(b.groupCount).fill(1);
    this.remaining = b.groupCount;
  }

  serialize(kgIdx: number): void {
    if (this.pending[kgIdx] !== 1) return;
    this.pending[kgIdx] = 0;
    this.remaining--;
    this.w.reset();
    const entries = this.b.serializeGroup(this.states, kgIdx, this.now, this.w);
    if (entries > 0) this.blocks.set(kgIdx, { bytes: this.w.result().slice(), entries });
  }

  serializeAll(): void {
    if (this.remaining === 0) return;
    for (let i = 0; i < this.pending.length; i++) if (this.pending[i] === 1) this.serialize(i);
  }
}

// ---- Cells ----

class HeapValueCell implements ValueCell {
  readonly keepsReference = true;
  constructor(private readonly b: HeapKeyedStateBackend, private readonly t: HeapTable) {}
  get(): unknown {
    const i = this.b.groupIndex();
    const m = this.t.maps[i];
    return m === undefined ? undefined : m.get(this.b.hk);
  }
  put(s: unknown): void {
    const i = this.b.groupIndex();
    let m = this.t.maps[i];
    if (m === undefined) m = this.t.maps[i] = new KeyTable();
    m.set(this.b.hk, s);
  }
  remove(): void {
    const i = this.b.groupIndex();
    this.t.maps[i]?.delete(this.b.hk);
  }
}

class HeapListCell implements ListCell {
  constructor(private readonly b: HeapKeyedStateBackend, private readonly t: HeapTable) {}
  private map(create: boolean): KeyTable | undefined {
    const i = this.b.groupIndex();
    let m = this.t.maps[i];
    if (m === undefined && create) m = this.t.maps[i] = new KeyTable();
    return m;
  }
  get(): unknown[] | undefined {
    const l = this.map(false)?.get(this.b.hk) as unknown[] | undefined;
    return l === undefined ? undefined : l.slice();
  }
  add(e: unknown): void {
    const m = this.map(true)!;
    const l = m.get(this.b.hk) as unknown[] | undefined;
    if (l === undefined) m.set(this.b.hk, [e]);
    else l.push(e);
  }
  addAll(es: unknown[]): void {
    const m = this.map(true)!;
    const l = m.get(this.b.hk) as unknown[] | undefined;
    if (l === undefined) m.set(this.b.hk, es);
    else for (const e of es) l.push(e);
  }
  put(es: unknown[]): void {
    this.map(true)!.set(this.b.hk, es);
  }
  remove(): void {
    this.map(false)?.delete(this.b.hk);
  }
}

class HeapMapCell implements MapCell {
  /** The last per-key map found, for (key group, key, generation): window operators touch one key's map several
   *  times per record. */
  private cKg = -1;
  private cHk: HeapKey = undefined;
  private cGen = -1;
  private cInner: KgMap | undefined = undefined;
  constructor(private readonly b: HeapKeyedStateBackend, private readonly t: HeapTable) {}
  private inner(create: boolean): KgMap | undefined {
    const i = this.b.groupIndex(); // also the snapshot's guard: before the cache
    const hk = this.b.hk;
    if (this.cHk === hk && this.cKg === i && this.cGen === this.b.mapGen && this.cInner !== undefined) return this.cInner;
    let m = this.t.maps[i];
    if (m === undefined) {
      if (!create) return undefined;
      m = this.t.maps[i] = new KeyTable();
    }
    let inner = m.get(hk) as KgMap | undefined;
    if (inner === undefined && create) m.set(hk, (inner = new Map()));
    if (inner !== undefined) {
      this.cKg = i;
      this.cHk = hk;
      this.cGen = this.b.mapGen;
      this.cInner = inner;
    }
    return inner;
  }
  get(uk: unknown): unknown {
    return this.inner(false)?.get(heapKeyOf(uk));
  }
  contains(uk: unknown): boolean {
    return this.inner(false)?.has(heapKeyOf(uk)) ?? false;
  }
  put(uk: unknown, s: unknown): void {
    this.inner(true)!.set(heapKeyOf(uk), s);
  }
  remove(uk: unknown): void {
    const inner = this.inner(false);
    if (inner === undefined) return;
    inner.delete(heapKeyOf(uk));
    if (inner.size === 0) {
      this.t.maps[this.b.kgIdx]!.delete(this.b.hk);
      this.b.mapGen++;
    }
  }
  *entries(): Iterable<[unknown, unknown]> {
    const inner = this.inner(false);
    if (inner === undefined) return;
    for (const [uhk, s] of inner) yield [keyOfHeapKey(uhk), s];
  }
  isEmpty(): boolean {
    const inner = this.inner(false);
    return inner === undefined || inner.size === 0;
  }
  clear(): void {
    const i = this.b.groupIndex();
    this.t.maps[i]?.delete(this.b.hk);
    this.b.mapGen++;
  }
}
