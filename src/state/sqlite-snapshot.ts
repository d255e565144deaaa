// Snapshots and restore of the SQLite backend.
//
// Snapshot: the synchronous part opens a read transaction on a second connection, which pins the database as it
// is now (WAL readers do not block the writer), and collects the dirty cache entries (references only: byte
// arrays are replaced, never modified; a live value is serialized on its first access after the snapshot began,
// or when the snapshot reaches its key group, whichever comes first). The asynchronous part reads the key groups from that view, overlays
// the collected entries and writes the file while processing continues; then the collected entries are written
// back in batches.
//
// Incremental checkpoints (backend opened with `incremental: true`): every write-back also records its row in the
// change log `chg` with the current epoch, and every snapshot starts a new epoch. A snapshot taken with
// `incremental: true` whose backend has a base (the snapshot of the last completed checkpoint) writes a change
// set: only the rows recorded after the base's epoch, plus the dirty cache entries, each with its current value or
// as a deletion. Its handle lists the base's files and then its own, so any restore reads a full snapshot and the
// change sets after it, key group by key group, at any parallelism. When a checkpoint completes, its snapshot
// becomes the base and the changes it covers leave the change log. After MAX_CHANGE_SETS change sets, or once
// they add up to more than the full snapshot they build on, the next snapshot is full again (materialization),
// which bounds both restore work and what retained checkpoints keep alive.
import { StateFileError } from "./api.ts";
import { unexpiredBytes } from "./keyed-backend.ts";
import { RowFilter } from "./row-filter.ts";
import { ByteWriter, keyBytesOfHeapKey } from "./serde.ts";
import { settle, type Captured, type Entry } from "./sqlite-cache.ts";
import type { SqliteKeyedStateBackend } from "./sqlite-backend.ts";
import { openSqliteDriverSync, type SqlRow, type SqlValue } from "./sqlite-driver.ts";
import {
  checkKeyedHandle,
  KeyedSnapshotWriter,
  openChainFile,
  snapshotFileName,
  type KeyedSnapshotHandle,
  type SnapshotOptions,
} from "./snapshot-format.ts";

const EMPTY = new Uint8Array(0);
const FLUSH_BATCH = 16_384;
/** At most this many change sets follow a full snapshot. */
export const MAX_CHANGE_SETS = 10;

/** SQLite's BLOB order: memcmp, then the shorter first. */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

interface ChainLink {
  /** The epoch the snapshot closed: it holds every change recorded up to it. */
  epoch: number;
  handle: KeyedSnapshotHandle;
}

/** Which snapshot the next change set builds on. */
export class CheckpointChain {
  base: ChainLink | null = null;
  private readonly pending = new Map<number, ChainLink>();

  add(checkpointId: number, link: ChainLink): void {
    this.pending.set(checkpointId, link);
  }

  /** Checkpoint `id` completed: its snapshot (if this backend took one for it) becomes the base. */
  complete(id: number): ChainLink | undefined {
    const link = this.pending.get(id);
    for (const k of [...this.pending.keys()]) if (k <= id) this.pending.delete(k);
    if (link !== undefined) this.base = link;
    return link;
  }

  reset(): void {
    this.base = null;
    this.pending.clear();
  }

  /** The base a new change set may build on, or null when the next snapshot must be full. */
  baseForNext(): ChainLink | null {
    const b = this.base;
    if (b === null) return null;
    const sizes = b.handle.fileSizes ?? [b.handle.sizeBytes];
    if (sizes.length - 1 >= MAX_CHANGE_SETS) return null;
    let changes = 0;
    for (let i = 1; i < sizes.length; i++) changes += sizes[i]!;
    return changes > sizes[0]! ? null : b;
  }
}

interface Overlay extends Captured {
  s: number;
  e: Entry;
}

/** An overlay entry's bytes as of the snapshot: a live entry not touched since is serialized now. */
function captured(o: Overlay): Uint8Array | null {
  if (o.bytes === undefined && o.e.pending === o) settle(o.e);
  return o.bytes!;
}

export async function snapshotSqlite(b: SqliteKeyedStateBackend, dir: string, opts: SnapshotOptions): Promise<KeyedSnapshotHandle> {
  // Synchronous part (everything before the first await).
  const chainable = opts.incremental === true && b.trackChanges;
  const base = chainable ? b.chain.baseForNext() : null;
  const epoch = b.epoch;
  if (b.trackChanges) b.epoch++; // changes from now on belong to the next snapshot
  const reader = openSqliteDriverSync(b.path);
  const range = b.keyGroupRange;
  const file = snapshotFileName(dir, `keyed-sqlite-kg${range.start}-${range.end}${base ? "-changes" : ""}`);
  let writer: KeyedSnapshotWriter | undefined;
  let inTxn = false;
  try {
    reader.exec("BEGIN");
    inTxn = true;
    reader.prepare("SELECT count(*) AS n FROM tm_state").get(); // the read transaction starts (and pins) here
    const hadDelta = b.deltaBytes > 0;
    const tables = [...b.byId.values()];
    const states = tables.map((t) => ({ ...t.meta }));
    const index = new Map(tables.map((t, i) => [t.id, i]));
    const now = b.clock();
    const overlay = new Map<number, Overlay[]>();
    const candidates = b.cache.collectDirty(false);
    const stamps = candidates.map((e) => e.stamp);
    for (const e of candidates) {
      let list = overlay.get(e.kg);
      if (list === undefined) overlay.set(e.kg, (list = []));
      // Bytes are never changed in place, only replaced: the reference is the copy. A live value is serialized
      // later, when this snapshot reaches it or before anyone gets or replaces it, whichever comes first.
      const o: Overlay = { s: index.get(e.t.id)!, e, bytes: e.t.live ? undefined : e.bytes };
      if (e.t.live) {
        if (e.pending !== null) settle(e); // an earlier snapshot still waiting on it gets its copy first
        e.pending = o;
      }
      list.push(o);
    }

    // Asynchronous part.
    writer = await KeyedSnapshotWriter.create(file, {
      backend: "sqlite",
      maxParallelism: b.maxParallelism,
      keyGroupRange: { ...range },
      createdAt: Date.now(),
      states,
      ...(base ? { changeSet: true } : {}),
    });
    const scan = base ? reader.prepare(b.q.changesOfGroup.sql) : reader.prepare(b.q.scanGroup.sql);
    // A full snapshot reads kv_delta beside kv (a change set's query joins it); empty at the pin, it stays empty
    // in this view.
    const deltaScan = !base && hadDelta ? reader.prepare(b.q.deltaScanGroup.sql) : null;
    const params: SqlValue[] = base ? [0, base.epoch] : [0];
    const w = new ByteWriter();
    let entries = 0;
    const emit = (s: number, k: Uint8Array, uk: Uint8Array, v: Uint8Array | null) => {
      const meta = states[s]!;
      if (meta.ttlMs !== null && v !== null) v = unexpiredBytes(meta.kind, meta.ttlMs, v, now);
      if (v === null) {
        if (!base) return; // absent from a full snapshot
        v = EMPTY; // a deletion in a change set
      }
      w.varint(s);
      w.lenBytes(k);
      w.lenBytes(uk);
      w.lenBytes(v);
      entries++;
    };
    for (let kg = range.start; kg <= range.end; kg++) {
      params[0] = kg;
      const rows = deltaScan === null ? scan.all(params) : withDelta(scan.all(params), deltaScan.all(params));
      const dirty = overlay.get(kg);
      if (rows.length === 0 && dirty === undefined) continue;
      w.reset();
      entries = 0;
      // Rows come in primary-key order; merge the dirty entries (sorted the same way) into them.
      const d = (dirty ?? [])
        .map((o) => ({ id: o.e.t.id, s: o.s, k: keyBytesOfHeapKey(o.e.hk), uk: o.e.node === null ? EMPTY : keyBytesOfHeapKey(o.e.uhk), bytes: captured(o) }))
        .sort((x, y) => x.id - y.id || compareBytes(x.k, y.k) || compareBytes(x.uk, y.uk));
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
          emit(o.s, o.k, o.uk, o.bytes);
          j++;
          if (c === 0) break;
        }
        if (c === 0) continue; // replaced by the dirty entry
        const s = index.get(id);
        if (s === undefined) continue; // registered after the snapshot began: no rows in this view
        emit(s, k, uk, (r.v as Uint8Array | null) ?? null);
      }
      for (; j < d.length; j++) emit(d[j]!.s, d[j]!.k, d[j]!.uk, d[j]!.bytes);
      await writer.writeBlock(kg, w.result(), entries);
    }
    reader.exec("COMMIT");
    inTxn = false;
    let handle = await writer.finish();
    if (base) {
      const sizes = [...(base.handle.fileSizes ?? [base.handle.sizeBytes]), handle.sizeBytes];
      const sums = base.handle.checksums !== undefined && handle.checksums !== undefined ? [...base.handle.checksums, ...handle.checksums] : undefined;
      handle = {
        ...handle,
        files: [...base.handle.files, ...handle.files],
        fileSizes: sizes,
        ...(sums ? { checksums: sums } : { checksums: undefined }),
        newBytes: handle.sizeBytes,
        sizeBytes: sizes.reduce((a, x) => a + x, 0),
      };
    } else if (chainable) {
      handle = { ...handle, fileSizes: [handle.sizeBytes], newBytes: handle.sizeBytes };
    }
    if (chainable && opts.checkpointId !== undefined) b.chain.add(opts.checkpointId, { epoch, handle });
    // Write-behind: the entries that were dirty at the snapshot go to the database now, in batches.
    await flushEntries(b, candidates, stamps, epoch);
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

/** One key group's rows of kv and of kv_delta (both in primary-key order) as one list in that order: a delta row
 *  replaces kv's row of the same key, and a deletion there (v null) stays null for the caller to skip. */
function withDelta(rows: SqlRow[], delta: SqlRow[]): SqlRow[] {
  if (delta.length === 0) return rows;
  const out: SqlRow[] = [];
  let j = 0;
  for (const r of rows) {
    let c = -1;
    while (j < delta.length) {
      const d = delta[j]!;
      c = Number(r.state) - Number(d.state) || compareBytes(r.k as Uint8Array, d.k as Uint8Array) || compareBytes(r.uk as Uint8Array, d.uk as Uint8Array);
      if (c < 0) break;
      out.push(d);
      j++;
      if (c === 0) break;
    }
    if (c !== 0) out.push(r);
  }
  for (; j < delta.length; j++) out.push(delta[j]!);
  return out;
}

/** Writes those of `entries` that are still cached and dirty, in batches, yielding in between. An entry still
 *  holding the bytes the snapshot took is recorded as changed in the snapshot's epoch (the snapshot has it, so the
 *  next change set need not); one changed since is recorded in the current epoch. */
async function flushEntries(b: SqliteKeyedStateBackend, entries: Entry[], stamps: number[], epoch: number): Promise<void> {
  for (let i = 0; i < entries.length && !b.isClosed; i += FLUSH_BATCH) {
    const same: Entry[] = [];
    const changed: Entry[] = [];
    for (let j = i; j < Math.min(entries.length, i + FLUSH_BATCH); j++) {
      const e = entries[j]!;
      if (e.dirty) {
        b.cache.markClean(e);
        (e.stamp === stamps[j] ? same : changed).push(e);
      }
    }
    if (same.length > 0) b.writeEntries(same, epoch);
    if (changed.length > 0) b.writeEntries(changed);
    await new Promise<void>((r) => setTimeout(r, 0));
  }
}

/** Replaces the backend's contents with its key groups from `handles` (full snapshots and change-set chains). */
export async function restoreSqlite(b: SqliteKeyedStateBackend, handles: readonly KeyedSnapshotHandle[]): Promise<void> {
  for (const h of handles) checkKeyedHandle(h, b.maxParallelism);
  b.dropCache();
  b.clearRows();
  const filter = (b.rowFilter = new RowFilter()); // the table is empty: every row from here on is written below
  // What is restored is the state of a checkpoint already: the next checkpoint is a full snapshot (it must not
  // reference files of the restored checkpoint, which may be a savepoint or belong to another job).
  b.s.clearChanges.run();
  b.chain.reset();
  const now = b.clock();
  const p5: SqlValue[] = [0, 0, EMPTY, EMPTY, EMPTY];
  const p4: SqlValue[] = [0, 0, EMPTY, EMPTY];
  for (const h of handles) {
    const from = Math.max(h.keyGroupRange.start, b.rangeStart);
    const to = Math.min(h.keyGroupRange.end, b.rangeEnd);
    if (from > to) continue;
    for (let i = 0; i < h.files.length; i++) {
      const file = h.files[i]!;
      const r = await openChainFile(file, i);
      try {
        const tables = r.header.states.map((meta) => b.tableFor(meta, ` in snapshot ${file}`));
        for (let kg = from; kg <= to; kg++) {
          const block = await r.readBlock(kg);
          if (block === undefined) continue;
          b.driver.exec("BEGIN");
          try {
            r.forEachEntry(kg, block, (s, key, uk, value) => {
              const t = tables[s]!;
              if ((t.meta.kind === "map") !== (uk !== null)) throw new Error(`entry of state "${t.meta.name}" ${uk === null ? "without" : "with"} a user key`);
              let v = value;
              if (v !== null && t.meta.ttlMs !== null) v = unexpiredBytes(t.meta.kind, t.meta.ttlMs, v, now);
              if (v === null) {
                // Deleted (change set) or expired: a value from an earlier file of the chain goes too.
                if (i === 0) return;
                p4[0] = kg;
                p4[1] = t.id;
                p4[2] = key;
                p4[3] = uk ?? EMPTY;
                b.s.delete.run(p4);
                return;
              }
              p5[0] = kg;
              p5[1] = t.id;
              p5[2] = key;
              p5[3] = uk ?? EMPTY;
              p5[4] = v;
              filter.add(kg, t.id, key, uk ?? EMPTY);
              b.s.upsert.run(p5);
            });
            b.driver.exec("COMMIT");
          } catch (e) {
            b.driver.exec("ROLLBACK");
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
