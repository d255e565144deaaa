// Length-prefixed msgpack frames: [u32 big-endian body length][msgpack body].
// Used by the RPC connections and the data connections alike.
import { Packr, Unpackr } from "msgpackr";

export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024;

const packr = new Packr({ useRecords: false, moreTypes: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

export class FrameError extends Error {
  override name = "FrameError";
  /** Whole frames decoded from the same input before the bad one: still valid, still to be handled. */
  frames: unknown[] = [];
}

export function encodeFrame(body: unknown): Buffer {
  const payload = packr.pack(body);
  const frame = Buffer.allocUnsafe(4 + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.set(payload, 4);
  return frame;
}

/** Accumulates stream chunks and yields whole decoded frames. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Feeds a chunk; returns the bodies of every frame now complete. Throws FrameError on a bad frame. */
  push(chunk: Uint8Array): unknown[] {
    const out: unknown[] = [];
    try {
      this.decode(chunk, out);
    } catch (err) {
      if (err instanceof FrameError) err.frames = out;
      throw err;
    }
    return out;
  }

  private decode(chunk: Uint8Array, out: unknown[]): void {
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.buffered += chunk.byteLength;
    while (this.buffered >= 4) {
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      if (length > this.maxFrameBytes) {
        throw new FrameError(`frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes} bytes`);
      }
      if (this.buffered < 4 + length) break;
      const frame = this.take(4 + length);
      let body: unknown;
      try {
        body = unpackr.unpack(frame.subarray(4));
      } catch (err) {
        throw new FrameError(`undecodable frame body (${length} bytes): ${(err as Error).message}`);
      }
      out.push(body);
    }
  }

  /** Bytes held that do not yet form a whole frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let frame: Buffer;
    if (first.length >= n) {
      frame = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      frame = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return frame;
  }
}
