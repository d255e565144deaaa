// The SQLite backend's storage cells: what the state objects of keyed-backend.ts call for the current key.
// Value cells (value, reducing and aggregating states) keep live values in the object cache: nothing is
// serialized on their hot path. List and map cells keep serialized bytes and (de)serialize at their boundary.
import type { ListCell, MapCell, ValueCell } from "./keyed-backend.ts";
import { concat, decode, decodeMany, encode, encodeMany } from "./serde.ts";
import type { Entry, SqlTable } from "./sqlite-cache.ts";

/** What the cells need of the backend (SqliteKeyedStateBackend implements it): entries of the current key. */
export interface SqlCellStore {
  maybeEvict(): void;
  valueEntry(t: SqlTable): Entry;
  writeValue(t: SqlTable, bytes: Uint8Array | null): void;
  writeLive(t: SqlTable, v: unknown): void;
  setBytes(e: Entry, bytes: Uint8Array | null): void;
  mapEntry(t: SqlTable, uk: unknown): Entry | undefined;
  writeMapEntry(t: SqlTable, uk: unknown, bytes: Uint8Array | null): void;
  mapEntries(t: SqlTable): [unknown, unknown][];
  mapIsEmpty(t: SqlTable): boolean;
  mapClear(t: SqlTable): void;
}

export class SqlValueCell implements ValueCell {
  constructor(private readonly b: SqlCellStore, private readonly t: SqlTable) {}
  get(): unknown {
    const v = this.b.valueEntry(this.t).value;
    this.b.maybeEvict();
    return v;
  }
  put(s: unknown): void {
    this.b.writeLive(this.t, s);
  }
  remove(): void {
    this.b.writeLive(this.t, undefined);
  }
}

export class SqlListCell implements ListCell {
  constructor(private readonly b: SqlCellStore, private readonly t: SqlTable) {}
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

export class SqlMapCell implements MapCell {
  constructor(private readonly b: SqlCellStore, private readonly t: SqlTable) {}
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
