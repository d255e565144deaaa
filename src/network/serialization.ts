// Records in network buffers: records are serialized in small chunks of up to CHUNK_RECORDS records (which
// amortizes the per-call cost), each chunk a u32 length and its bytes; a chunk (or even its length) may span
// buffers. A chunk's first byte tags it: a msgpack array header (0x90-0x9f, 0xdc, 0xdd), a msgpack array of the
// records (msgpackr's sequential mode: an object shape is described once per channel stream, then referenced); or
// TYPED_CHUNK (0xc1, which msgpack never uses), a typed chunk: u16 signature length, the layout's signature, then
// the records in its fixed binary layout (typed-serialization.ts). A typed chunk carries its layout, so it decodes
// from any chunk boundary, and a stream mixes both kinds freely: the serializer writes a typed chunk when every
// record fits the edge's declared or inferred type, else msgpack.
// One serializer per subpartition and one deserializer per input channel.
import { Packr, Unpackr } from "msgpackr";
import type { RecordType } from "../graph/record-type.ts";
import { signatureOf } from "../graph/record-type.ts";
import { compileLayout, inferChunkSignature, mismatchError, TypedChunkReader, TypedOut, type CompiledLayout } from "./typed-serialization.ts";

/** A typed chunk's header at `at` in buf: TYPED_CHUNK, the signature's u16 length, the signature; returns its end. */
export function writeTypedChunkHeader(buf: Uint8Array, at: number, sigBytes: Uint8Array): number {
  buf[at] = TYPED_CHUNK;
  buf[at + 1] = sigBytes.length >> 8;
  buf[at + 2] = sigBytes.length & 0xff;
  buf.set(sigBytes, at + 3);
  return at + 3 + sigBytes.length;
}

/** Records per serialized chunk: one msgpack call per chunk instead of per record (5-10x cheaper). */
export const CHUNK_RECORDS = 64;

/** msgpackr's record-shape table of a sequential stream: entry id - 0x40 holds the keys of record id; nextId cycles. */
type ShapeTable = (string[] | undefined)[] & { nextId?: number };

/** The first byte of a typed chunk (msgpack's "never used" byte; a msgpack chunk begins with an array header). */
export const TYPED_CHUNK = 0xc1;

export interface SerializerOptions {
  /** The edge's declared record type and the operator that declared it: a record that does not match fails. */
  declared?: { type: RecordType; operator: string; declaredBy?: string };
  /** Records travel as [timestamp, record] (the job has event time); the type is the record's. */
  eventTime?: boolean;
  /** Without a declared type, infer one from the first records (tasks do unless the job turned it off); default false: msgpack only. */
  infer?: boolean;
}

/** Chunks tried for an inferred type before giving up, and chunks in a row that must not fit before inferring again. */
const INFER_ATTEMPTS = 16;
const MISFITS_BEFORE_REINFER = 4;
/** Chunks that did not fit an inferred layout with int32 fields and did not widen it, before widening is not tried again. */
const WIDEN_TRIES = 16;

export class RecordSerializer {
  private readonly packr = new Packr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Packr>[0]);
  private lastNextId: number | undefined = undefined;
  private lastKeys: unknown = undefined;
  private readonly out = new TypedOut();
  private layout: CompiledLayout | null = null;
  private readonly declared: SerializerOptions["declared"];
  private readonly eventTime: boolean;
  private inferAttempts: number;
  private misfits = 0;
  /** The inferred layout's signature and shape (inferChunkSignature), while it has int32 fields that may widen. */
  private inferred: { shape: string; sig: string } | null = null;
  private widenTries = 0;
  /** Whether the last serialize() wrote a typed chunk. */
  lastTyped = false;
  /** Chunks written typed and as msgpack (tests and benchmarks). */
  typedChunks = 0;
  msgpackChunks = 0;

  constructor(opts: SerializerOptions = {}) {
    this.declared = opts.declared;
    this.eventTime = opts.eventTime === true;
    this.inferAttempts = opts.infer === true ? INFER_ATTEMPTS : 0;
    if (this.declared) {
      const sig = signatureOf(this.declared.type);
      this.layout = compileLayout(this.eventTime ? "@" + sig : sig, false);
    }
  }

  /** The chunk's bytes; valid only until the next call (both encoders reuse their output buffer). */
  serialize(records: unknown[]): Uint8Array {
    if (this.layout === null && this.inferAttempts > 0) this.infer(records);
    if (this.layout !== null) {
      let bytes = this.typed(this.layout, records);
      if (bytes === null && this.inferred !== null && this.widenTries > 0) bytes = this.widen(records);
      if (bytes !== null) {
        this.misfits = 0;
        this.typedChunks++;
        this.lastTyped = true;
        return bytes;
      }
      if (this.declared) {
        for (const r of records) if (this.typed(this.layout, [r]) === null) throw mismatchError(this.declared, r, this.eventTime);
      }
      // An inferred type that keeps missing: the stream changed, infer again.
      if (++this.misfits >= MISFITS_BEFORE_REINFER && this.inferAttempts > 0) this.layout = null;
    }
    this.msgpackChunks++;
    this.lastTyped = false;
    return this.packr.pack(records);
  }

  /**
   * The layout of the last chunk, when it was typed and its layout has no string (fixed bytes per record): the record
   * writer may then write the next records straight into its network buffer, as typed chunks of that layout (it
   * counts them in typedChunks), until one does not fit and goes through serialize() again.
   */
  directLayout(): CompiledLayout | null {
    return this.lastTyped && this.layout !== null && this.layout.direct !== null ? this.layout : null;
  }

  /** The typed chunk (TYPED_CHUNK, u16 signature length, signature, records), or null when a record does not fit. */
  private typed(c: CompiledLayout, records: unknown[]): Uint8Array | null {
    const o = this.out;
    if (o.buf.length < 3 + c.sigBytes.length) o.grow(0, 3 + c.sigBytes.length);
    const end = c.encode(records, o, writeTypedChunkHeader(o.buf, 0, c.sigBytes));
    return end < 0 ? null : o.buf.subarray(0, end);
  }

  private infer(records: unknown[]): void {
    if (records.length === 0) return;
    this.inferAttempts--;
    const inferred = inferChunkSignature(records, this.eventTime);
    if (inferred === null || inferred.sig.length > 4096) return;
    // A strict layout: inferred objects must keep their keys and key order, so they decode as they were.
    this.layout = compileLayout(inferred.sig, true);
    this.inferred = inferred.sig !== inferred.shape ? inferred : null;
    this.widenTries = WIDEN_TRIES;
  }

  /**
   * A chunk did not fit the inferred layout: when a field inferred int32 holds another number in it, that field
   * becomes float64 from now on (never back), and the chunk is encoded again; null when it still does not fit.
   */
  private widen(records: unknown[]): Uint8Array | null {
    const w = inferChunkSignature(records, this.eventTime, this.inferred!)!;
    if (w.sig === this.inferred!.sig) {
      this.widenTries--;
      return null;
    }
    this.layout = compileLayout(w.sig, true);
    this.inferred = w.sig !== w.shape ? w : null;
    return this.typed(this.layout, records);
  }

  /**
   * Whether the last serialize() defined a record shape (a new one, or an id reused for another): the table that
   * decodes the stream from the next chunk on changed. Cheap: a new shape moves msgpackr's next id, and 64 new shapes
   * in one chunk (the id cycling back to where it was) replace the keys under the last id.
   */
  shapesChanged(): boolean {
    const table = (this.packr as unknown as { structures?: ShapeTable }).structures;
    const nextId = table?.nextId;
    const keys = nextId !== undefined ? table![nextId - 0x41] : undefined;
    if (nextId === this.lastNextId && keys === this.lastKeys) return false;
    this.lastNextId = nextId;
    this.lastKeys = keys;
    return true;
  }

  /** A copy of the record-shape table as it stands now: a decoder given it reads the stream from the next chunk on. */
  shapeTable(): string[][] {
    const table = (this.packr as unknown as { structures?: ShapeTable }).structures ?? [];
    return table.map((keys) => (keys ? [...keys] : keys)) as string[][];
  }
}

/**
 * Decodes whole chunks (u32 length, then the chunk) of a subpartition's stream from a chunk boundary, given the
 * record-shape table the serializer had there (RecordSerializer.shapeTable): an unaligned barrier's output channel
 * state, from the bytes it overtook. Every byte must belong to a whole chunk.
 */
export function decodeChunksFrom(bytes: Uint8Array, shapes: string[][], out: unknown[]): void {
  const structures = shapes.map((keys) => (keys ? [...keys] : keys));
  const unpackr = new Unpackr({ sequential: true, useRecords: true, structures } as ConstructorParameters<typeof Unpackr>[0]);
  const typed = new TypedChunkReader();
  let p = 0;
  while (p < bytes.length) {
    if (bytes.length - p < 4) throw new Error(`output channel state: ${bytes.length - p} bytes left after the last whole chunk`);
    const len = ((bytes[p]! << 24) | (bytes[p + 1]! << 16) | (bytes[p + 2]! << 8) | bytes[p + 3]!) >>> 0;
    p += 4;
    if (len === 0 || bytes.length - p < len) throw new Error(`output channel state: a chunk of ${len} bytes with ${bytes.length - p} left`);
    if (bytes[p] === TYPED_CHUNK) typed.read(bytes.subarray(p, p + len), out);
    else pushAll(out, unpackr.unpack(bytes.subarray(p, p + len)));
    p += len;
  }
}

/** The length of the whole chunks at the start of `bytes` (each a u32 length and the chunk); a partial last one is left out. */
export function wholeChunksLength(bytes: Uint8Array): number {
  let p = 0;
  while (bytes.length - p >= 4) {
    const len = ((bytes[p]! << 24) | (bytes[p + 1]! << 16) | (bytes[p + 2]! << 8) | bytes[p + 3]!) >>> 0;
    if (len === 0 || bytes.length - p - 4 < len) break;
    p += 4 + len;
  }
  return p;
}

export class RecordDeserializer {
  private readonly unpackr = new Unpackr({ sequential: true, useRecords: true, copyBuffers: true } as ConstructorParameters<typeof Unpackr>[0]);
  private readonly typed = new TypedChunkReader();
  /** Bytes of a record (or of its length prefix) that began in an earlier buffer. */
  private partial: Uint8Array | null = null;
  private partialFill = 0;
  private header = new Uint8Array(4);
  private headerFill = 0;

  /** True while a record that began in an earlier buffer is incomplete. */
  get hasPartialRecord(): boolean {
    return this.partial !== null || this.headerFill > 0;
  }

  /**
   * Where the stream stands before the next buffer, for decoding it elsewhere from there (decodeChunksFrom): the
   * bytes received of a chunk begun in an earlier buffer (its length prefix included), which the next bytes continue,
   * and a copy of the record-shape table.
   */
  streamState(): { prefix: Uint8Array; shapes: string[][] } {
    let prefix: Uint8Array;
    if (this.partial !== null) {
      prefix = new Uint8Array(4 + this.partialFill);
      new DataView(prefix.buffer).setUint32(0, this.partial.length);
      prefix.set(this.partial.subarray(0, this.partialFill), 4);
    } else prefix = this.header.slice(0, this.headerFill);
    const table = (this.unpackr as unknown as { structures?: (string[] | undefined)[] }).structures ?? [];
    const shapes = table.map((keys) => (keys ? [...keys] : keys)) as string[][];
    return { prefix, shapes };
  }

  /** Buffers read so far (whether a run of bytes recorded elsewhere still continues the stream here). */
  reads = 0;

  /**
   * Decodes every record of the chunks completed by this buffer, appending them to out; or, with `each`, handing each
   * to it as it is decoded. With `goOn` as well, it is asked after each chunk handed to `each`, and every LOOK_EVERY
   * records within one, whether to go on: on false the buffer's other records are appended to out instead.
   */
  read(bytes: Uint8Array, out: unknown[], each?: (record: unknown) => void, goOn?: () => boolean): void {
    this.reads++;
    let p = 0;
    const n = bytes.length;
    let dv: DataView | null = null;
    while (p < n) {
      if (this.partial !== null) {
        const take = Math.min(n - p, this.partial.length - this.partialFill);
        this.partial.set(bytes.subarray(p, p + take), this.partialFill);
        this.partialFill += take;
        p += take;
        if (this.partialFill === this.partial.length) {
          const chunk = this.partial;
          this.partial = null;
          if (this.decode(chunk, out, each, goOn)) each = undefined;
        }
        continue;
      }
      if (this.headerFill > 0 || n - p < 4) {
        while (this.headerFill < 4 && p < n) this.header[this.headerFill++] = bytes[p++]!;
        if (this.headerFill < 4) return;
        this.headerFill = 0;
        this.startRecord(((this.header[0]! << 24) | (this.header[1]! << 16) | (this.header[2]! << 8) | this.header[3]!) >>> 0);
        continue;
      }
      const len = ((bytes[p]! << 24) | (bytes[p + 1]! << 16) | (bytes[p + 2]! << 8) | bytes[p + 3]!) >>> 0;
      p += 4;
      if (len !== 0 && n - p >= len) {
        // A whole chunk in this buffer: a typed one is decoded in place.
        const stopped =
          bytes[p] === TYPED_CHUNK
            ? this.typed.readAt(bytes, (dv ??= new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)), p, p + len, out, each, goOn)
            : this.decode(bytes.subarray(p, p + len), out, each, goOn);
        p += len;
        if (stopped) each = undefined;
      } else {
        this.startRecord(len);
      }
    }
  }

  /** Whether `goOn` said to stop, within the chunk or at its end (see read). */
  private decode(chunk: Uint8Array, out: unknown[], each: ((record: unknown) => void) | undefined, goOn: (() => boolean) | undefined): boolean {
    if (chunk[0] === TYPED_CHUNK) return this.typed.read(chunk, out, each, goOn);
    const records = this.unpackr.unpack(chunk);
    if (each === undefined) {
      pushAll(out, records);
      return false;
    }
    for (const r of asChunk(records)) each(r);
    // A msgpack chunk holds at most CHUNK_RECORDS records: asked after it.
    return goOn !== undefined && !goOn();
  }

  private startRecord(len: number): void {
    if (len === 0) throw new Error("corrupt record stream: a chunk of length 0");
    this.partial = new Uint8Array(len);
    this.partialFill = 0;
  }
}

function pushAll(out: unknown[], chunk: unknown): void {
  const records = asChunk(chunk);
  for (let i = 0; i < records.length; i++) out.push(records[i]);
}

/** A msgpack chunk's records: it must decode to an array. */
function asChunk(chunk: unknown): unknown[] {
  if (!Array.isArray(chunk)) throw new Error("corrupt record stream: a chunk is not an array");
  return chunk;
}
