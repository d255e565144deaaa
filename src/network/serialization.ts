// Records in network buffers: records are serialized in small chunks (a msgpack array of up to CHUNK_RECORDS
// records, which amortizes msgpack's per-call cost), each chunk a u32 length and its bytes; a chunk (or even
// its length) may span buffers. One serializer per subpartition and one deserializer per input channel, both
// in msgpackr's sequential mode: an object shape is described once per channel stream, then referenced.
import { Packr, Unpackr } from "msgpackr";

/** Records per serialized chunk: one msgpack call per chunk instead of per record (5-10x cheaper). */
export const CHUNK_RECORDS = 64;

/** msgpackr's record-shape table of a sequential stream: entry id - 0x40 holds the keys of record id; nextId cycles. */
type ShapeTable = (string[] | undefined)[] & { nextId?: number };

export class RecordSerializer {
  private readonly packr = new Packr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Packr>[0]);
  private lastNextId: number | undefined = undefined;
  private lastKeys: unknown = undefined;

  /** The chunk's bytes; valid only until the next call (msgpackr reuses its output buffer). */
  serialize(records: unknown[]): Uint8Array {
    return this.packr.pack(records);
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
  let p = 0;
  while (p < bytes.length) {
    if (bytes.length - p < 4) throw new Error(`output channel state: ${bytes.length - p} bytes left after the last whole chunk`);
    const len = ((bytes[p]! << 24) | (bytes[p + 1]! << 16) | (bytes[p + 2]! << 8) | bytes[p + 3]!) >>> 0;
    p += 4;
    if (len === 0 || bytes.length - p < len) throw new Error(`output channel state: a chunk of ${len} bytes with ${bytes.length - p} left`);
    pushAll(out, unpackr.unpack(bytes.subarray(p, p + len)));
    p += len;
  }
}

export class RecordDeserializer {
  private readonly unpackr = new Unpackr({ sequential: true, useRecords: true, copyBuffers: true } as ConstructorParameters<typeof Unpackr>[0]);
  /** Bytes of a record (or of its length prefix) that began in an earlier buffer. */
  private partial: Uint8Array | null = null;
  private partialFill = 0;
  private header = new Uint8Array(4);
  private headerFill = 0;

  /** True while a record that began in an earlier buffer is incomplete. */
  get hasPartialRecord(): boolean {
    return this.partial !== null || this.headerFill > 0;
  }

  /** Decodes every record of the chunks completed by this buffer, appending them to out. */
  read(bytes: Uint8Array, out: unknown[]): void {
    let p = 0;
    const n = bytes.length;
    while (p < n) {
      if (this.partial !== null) {
        const take = Math.min(n - p, this.partial.length - this.partialFill);
        this.partial.set(bytes.subarray(p, p + take), this.partialFill);
        this.partialFill += take;
        p += take;
        if (this.partialFill === this.partial.length) {
          pushAll(out, this.unpackr.unpack(this.partial));
          this.partial = null;
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
      if (n - p >= len) {
        pushAll(out, this.unpackr.unpack(bytes.subarray(p, p + len)));
        p += len;
      } else {
        this.startRecord(len);
      }
    }
  }

  private startRecord(len: number): void {
    if (len === 0) throw new Error("corrupt record stream: a chunk of length 0");
    this.partial = new Uint8Array(len);
    this.partialFill = 0;
  }
}

function pushAll(out: unknown[], chunk: unknown): void {
  if (!Array.isArray(chunk)) throw new Error("corrupt record stream: a chunk is not an array");
  for (let i = 0; i < chunk.length; i++) out.push(chunk[i]);
}
