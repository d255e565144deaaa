// Serialization shared by the backends and the snapshot format: msgpack values, key identity, CRC32, varints.
import { Packr, RESET_BUFFER_MODE, REUSE_BUFFER_MODE } from "msgpackr";
import { canonicalKey } from "./key-groups.ts";
import { nativeCrc32 } from "../runtime-env/index.ts";

// No records (they make encodings depend on earlier ones), so the same value always gives the same bytes.
const packr = new Packr({ useRecords: false, useBigIntExtension: true, mapsAsObjects: true });

/** A fresh (unshared) byte array holding the msgpack encoding of `v`. */
export function encode(v: unknown): Uint8Array {
  // REUSE_BUFFER_MODE returns msgpackr's whole buffer with start/end set: no view object, only the copy (a plain
  // Uint8Array; Buffer's own slice would be a view into msgpackr's buffer).
  const target = packr.pack(v, REUSE_BUFFER_MODE | RESET_BUFFER_MODE) as unknown as Uint8Array & { start: number; end: number };
  const start = target.start;
  const n = target.end - start;
  const out = new Uint8Array(n);
  if (n <= 64) for (let i = 0; i < n; i++) out[i] = target[start + i]!;
  else out.set(target.subarray(start, target.end));
  return out;
}

/** The encoding of `v` in a scratch buffer that the next encode overwrites: copy it or use it at once. */
export function encodeTransient(v: unknown): Uint8Array {
  return packr.pack(v, RESET_BUFFER_MODE);
}

/**
 * Small values are decoded from a copy in one scratch array, as msgpackr recommends for bytes read from a database:
 * msgpackr reads through a DataView of its source's ArrayBuffer, and a small Uint8Array made by copying (every
 * cached state entry, every SQLite row) has none until asked for, when JavaScriptCore allocates one and moves the
 * bytes into it. That took 39 % of a SQLite-backed q5 window Worker; the copy costs a few nanoseconds. The scratch
 * decoder copies binary values out (copyBuffers), so nothing decoded aliases the scratch array.
 */
const scratchUnpackr = new Packr({ useRecords: false, useBigIntExtension: true, mapsAsObjects: true, copyBuffers: true });
const SCRATCH_BYTES = 8192;
const scratch = new Uint8Array(new ArrayBuffer(SCRATCH_BYTES));

export function decode(bytes: Uint8Array): any {
  const n = bytes.length;
  if (n > SCRATCH_BYTES || n === 0) return packr.unpack(bytes);
  if (n <= 64) for (let i = 0; i < n; i++) scratch[i] = bytes[i]!;
  else scratch.set(bytes);
  return scratchUnpackr.unpack(scratch, n);
}

/** Several values encoded back to back (how list state is stored: appending needs no decoding). */
export function encodeMany(values: readonly unknown[]): Uint8Array {
  if (values.length === 1) return encode(values[0]);
  const parts: Uint8Array[] = [];
  let n = 0;
  for (const v of values) {
    const b = encode(v);
    parts.push(b);
    n += b.length;
  }
  return concat(parts, n);
}

export function decodeMany(bytes: Uint8Array): any[] {
  const n = bytes.length;
  if (n === 0) return [];
  if (n > SCRATCH_BYTES) return packr.unpackMultiple(bytes) as any[];
  // As decode: from a copy in the scratch array (a view of it has its ArrayBuffer already).
  scratch.set(bytes);
  return scratchUnpackr.unpackMultiple(scratch.subarray(0, n)) as any[];
}

export function concat(parts: readonly Uint8Array[], total?: number): Uint8Array {
  let n = total ?? 0;
  if (total === undefined) for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// ---- Key identity ----
//
// A key (and a map state's user key) has two equivalent identities:
// - its *heap key*, used as a JS Map key: the primitive itself (a string starting with \u0001 gets one more \u0001
//   in front), or "\u0001" + canonicalKey(key) for a composite key (array or plain object);
// - its *key bytes*, stored in SQLite and in snapshots: the msgpack encoding of the primitive (-0 as 0), or the byte
//   0xc1 (never used by msgpack) followed by the UTF-8 of canonicalKey(key) for a composite key.
// Two keys have equal heap keys exactly when they have equal key bytes.

export type HeapKey = string | number | boolean | bigint | null | undefined;

const COMPOSITE_TAG = 0xc1;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

export function heapKeyOf(key: unknown): HeapKey {
  switch (typeof key) {
    case "string":
      return key.charCodeAt(0) === 1 ? "\u0001" + key : key;
    case "number":
    case "boolean":
    case "bigint":
    case "undefined":
      return key;
    case "object":
      return key === null ? null : "\u0001" + canonicalKey(key);
    default:
      throw new TypeError(`a state key must be a string, number, boolean, bigint, null, array or plain object, got a ${typeof key}`);
  }
}

/** The key bytes of a heap key. */
export function keyBytesOfHeapKey(hk: HeapKey): Uint8Array {
  if (typeof hk === "string" && hk.charCodeAt(0) === 1) {
    if (hk.charCodeAt(1) === 1) return encode(hk.slice(1));
    const json = textEncoder.encode(hk.slice(1));
    const out = new Uint8Array(json.length + 1);
    out[0] = COMPOSITE_TAG;
    out.set(json, 1);
    return out;
  }
  if (typeof hk === "number") {
    const n = writeIntKey(hk);
    if (n === 0) return encode(hk);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = intScratch[i]!;
    return out;
  }
  return encode(hk);
}

/** keyBytesOfHeapKey, in a scratch array for a 32-bit integer key that the next call overwrites: for bytes bound to
 *  a statement at once (SQLite copies them). A write-back batch encodes a user key per row, mostly small integers. */
export function transientKeyBytes(hk: HeapKey): Uint8Array {
  if (typeof hk === "number") {
    const n = writeIntKey(hk);
    if (n !== 0) return intViews[n]!;
  }
  return keyBytesOfHeapKey(hk);
}

const intScratch = new Uint8Array(5);
const intViews = [0, 1, 2, 3, 4, 5].map((n) => intScratch.subarray(0, n));

/** Writes msgpack's encoding of v as msgpackr writes it (useRecords off) into intScratch and returns its length, or
 *  0 when v is not a 32-bit integer (the caller encodes it). -0 passes as 0 (-0 >>> 0 === -0), as msgpackr has it. */
function writeIntKey(v: number): number {
  const b = intScratch;
  if (v >>> 0 === v) {
    if (v < 0x80) {
      b[0] = v;
      return 1;
    }
    if (v < 0x100) {
      b[0] = 0xcc;
      b[1] = v;
      return 2;
    }
    if (v < 0x10000) {
      b[0] = 0xcd;
      b[1] = v >>> 8;
      b[2] = v;
      return 3;
    }
    b[0] = 0xce;
    b[1] = v >>> 24;
    b[2] = v >>> 16;
    b[3] = v >>> 8;
    b[4] = v;
    return 5;
  }
  if (v >> 0 !== v) return 0;
  if (v >= -0x20) {
    b[0] = v;
    return 1;
  }
  if (v >= -0x80) {
    b[0] = 0xd0;
    b[1] = v;
    return 2;
  }
  if (v >= -0x8000) {
    b[0] = 0xd1;
    b[1] = v >> 8;
    b[2] = v;
    return 3;
  }
  b[0] = 0xd2;
  b[1] = v >> 24;
  b[2] = v >> 16;
  b[3] = v >> 8;
  b[4] = v;
  return 5;
}

/** The heap key of some key bytes. */
export function heapKeyOfBytes(bytes: Uint8Array): HeapKey {
  if (bytes[0] === COMPOSITE_TAG) return "\u0001" + textDecoder.decode(bytes.subarray(1));
  return heapKeyOf(decode(bytes));
}

/** The key a heap key stands for (a composite key comes back as parsed from its canonical JSON). */
export function keyOfHeapKey(hk: HeapKey): unknown {
  if (typeof hk === "string" && hk.charCodeAt(0) === 1) {
    if (hk.charCodeAt(1) === 1) return hk.slice(1);
    return JSON.parse(hk.slice(1));
  }
  return hk;
}

export function describeKey(key: unknown): string {
  try {
    const s = typeof key === "bigint" ? `${key}n` : typeof key === "string" ? JSON.stringify(key) : canonicalKey(key) ?? String(key);
    return s.length > 80 ? s.slice(0, 77) + "..." : s;
  } catch {
    return String(key);
  }
}

// ---- CRC32 (IEEE), Bun's native one when available ----

let crcTable: Int32Array | undefined;
function crc32Js(data: Uint8Array): number {
  if (crcTable === undefined) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  const t = crcTable;
  let c = -1;
  for (let i = 0; i < data.length; i++) c = t[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
export { crc32Js as crc32Portable };

export const crc32: (data: Uint8Array) => number = nativeCrc32 ?? crc32Js;

// ---- A growable byte buffer with unsigned LEB128 varints ----

export class ByteWriter {
  buf: Uint8Array;
  pos = 0;
  constructor(initial = 1 << 16) {
    this.buf = new Uint8Array(initial);
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
  }
  varint(v: number): void {
    this.ensure(10);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  /** A varint length followed by the bytes. */
  lenBytes(b: Uint8Array): void {
    this.varint(b.length);
    this.bytes(b);
  }
  result(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
  reset(): void {
    this.pos = 0;
  }
}

export class ByteReader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.buf.length) throw new RangeError("truncated varint");
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
    throw new RangeError("varint too long");
  }
  bytes(n: number): Uint8Array {
    if (this.pos + n > this.buf.length) throw new RangeError("truncated data");
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  lenBytes(): Uint8Array {
    return this.bytes(this.varint());
  }
}
