// Incremental TTL cleanup for the SQLite backend: each step looks at up to N cached entries of TTL states (the
// cache is the authority for its rows) and up to N database rows that are not cached, continuing where the last
// step stopped, and removes or trims what expired. Removals are changes like any other (write-back, change log).
import { unexpiredBytes, unexpiredStored } from "./keyed-backend.ts";
import { decodeMany, heapKeyOfBytes } from "./serde.ts";
import { MapNode, type Entry, type SqlTable } from "./sqlite-cache.ts";
import type { SqliteKeyedStateBackend } from "./sqlite-backend.ts";

const EMPTY = new Uint8Array(0);

export class SqliteTtlCleaner {
  private dbCursor: { kg: number; state: number; k: Uint8Array; uk: Uint8Array };
  private cacheCursor: { table: number; iter: Iterator<Entry | MapNode> | null } = { table: -1, iter: null };

  constructor(private readonly b: SqliteKeyedStateBackend) {
    this.dbCursor = this.start();
  }

  private start() {
    return { kg: this.b.rangeStart - 1, state: 0, k: EMPTY, uk: EMPTY };
  }

  /** After a restore or a dropped cache: start over. */
  reset(): void {
    this.dbCursor = this.start();
    this.cacheCursor = { table: -1, iter: null };
  }

  step(maxEntries: number): number {
    const ttlTables = [...this.b.byId.values()].filter((t) => t.meta.ttlMs !== null);
    if (ttlTables.length === 0) return 0;
    const now = this.b.clock();
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
      if (t.live) {
        // A live value: [value, lastAccessTs], never a list.
        if (e.value === undefined) return;
        const kept = unexpiredStored(t.meta.kind, t.meta.ttlMs!, e.value, now);
        if (kept === e.value) return;
        removed++;
        this.b.cache.setValue(e, kept);
        return;
      }
      if (e.bytes === null) return;
      const kept = unexpiredBytes(t.meta.kind, t.meta.ttlMs!, e.bytes, now);
      if (kept === e.bytes) return;
      removed += t.meta.kind === "list" ? decodeMany(e.bytes).length - (kept === null ? 0 : decodeMany(kept).length) : 1;
      this.b.setBytes(e, kept);
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
    this.b.maybeEvict();
    return removed;
  }

  /** Checks up to `max` database rows of TTL states that are not cached. */
  private cleanupDatabase(maxEntries: number, now: number): number {
    const b = this.b;
    const c = this.dbCursor;
    // Each pass starts with kv_delta merged, so that it sees every row written before it began.
    if (c.kg < b.rangeStart) b.mergeDelta();
    const rows = b.s.scanAfter.all([c.kg, c.state, c.k, c.uk, b.rangeStart, b.rangeEnd, maxEntries]);
    if (rows.length < maxEntries) this.dbCursor = this.start();
    let removed = 0;
    let began = false;
    try {
      for (const r of rows) {
        const kg = Number(r.kg);
        const state = Number(r.state);
        const k = r.k as Uint8Array;
        const uk = r.uk as Uint8Array;
        if (rows.length >= maxEntries) this.dbCursor = { kg, state, k, uk };
        const t = b.byId.get(state);
        if (t === undefined || t.meta.ttlMs === null) continue;
        // A cached entry is the authority for its row (cleanupCache looks at it).
        const hk = heapKeyOfBytes(k);
        if (t.meta.kind === "map") {
          if (t.maps.get(hk)?.entries.has(heapKeyOfBytes(uk))) continue;
        } else if (t.values.has(hk)) continue;
        // A row with a newer version in kv_delta (written during this pass) is stale: the next pass checks that one.
        if (b.deltaHas([kg, state, k, uk])) continue;
        const v = r.v as Uint8Array;
        const kept = unexpiredBytes(t.meta.kind, t.meta.ttlMs, v, now);
        if (kept === v) continue;
        if (!began) {
          b.endRead();
          b.driver.exec("BEGIN");
          began = true;
        }
        if (kept === null) {
          b.s.delete.run([kg, state, k, uk]);
          removed += t.meta.kind === "list" ? decodeMany(v).length : 1;
        } else {
          b.s.update.run([kept, kg, state, k, uk]);
          removed += decodeMany(v).length - decodeMany(kept).length;
        }
        b.recordRow(kg, state, k, uk);
      }
      if (began) b.driver.exec("COMMIT");
    } catch (e) {
      if (began) b.driver.exec("ROLLBACK");
      throw e;
    }
    return removed;
  }
}
