// Length-prefixed msgpack frames: [u32 big-endian body length][msgpack body].
// Used by the RPC connections and the data connections alike. One binary form beside msgpack: a network
// buffer frame, [0xC1][u32 backlog][u16 channel id length][channel id][payload], which carries a buffer
// with a single copy (0xC1 is a byte msgpack never uses, so the two forms cannot be confused).
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

const BUFFER_MARK = 0xc1;

/** Bytes of a buffer frame with this channel id and payload length. */
export function bufferFrameLength(channel: string, payloadLength: number): number {
  return 4 + 1 + 4 + 2 + Buffer.byteLength(channel) + payloadLength;
}

/** Writes a data frame carrying a network buffer into dst at off; returns the offset after it. */
export function writeBufferFrame(dst: Buffer, off: number, channel: string, backlog: number, payload: Uint8Array): number {
  const chLen = Buffer.byteLength(channel);
  dst.writeUInt32BE(1 + 4 + 2 + chLen + payload.length, off);
  dst[off + 4] = BUFFER_MARK;
  dst.writeUInt32BE(backlog, off + 5);
  dst.writeUInt16BE(chLen, off + 9);
  dst.write(channel, off + 11, "utf8");
  dst.set(payload, off + 11 + chLen);
  return off + 11 + chLen + payload.length;
}

/** The kind a buffer frame decodes to: DATA in the data plane's frame kinds (src/network/wire.ts). */
export const BUFFER_FRAME_KIND = 0;

/** A data frame carrying a network buffer; decodes to [BUFFER_FRAME_KIND, channel, payload, backlog]. */
export function encodeBufferFrame(channel: string, backlog: number, payload: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(bufferFrameLength(channel, payload.length));
  writeBufferFrame(frame, 0, channel, backlog, payload);
  return frame;
}

function decodeBufferFrame(body: Buffer): unknown {
  if (body.length < 7) throw new FrameError(`truncated buffer frame (${body.length} bytes)`);
  const backlog = body.readUInt32BE(1);
  const chLen = body.readUInt16BE(5);
  if (7 + chLen > body.length) throw new FrameError(`buffer frame's channel id runs past its end`);
  // The payload is a view into the frame, valid only until the decoder's next call (it may be the decoder's
  // scratch memory): the receiver copies it into a buffer of its own at once.
  return [BUFFER_FRAME_KIND, body.toString("utf8", 7, 7 + chLen), body.subarray(7 + chLen), backlog];
}

/** Returned by FrameDecoder.next() when no whole frame is buffered. */
export const NO_FRAME: unique symbol = Symbol("no frame");

/** Accumulates stream chunks and yields whole decoded frames. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Reused to join a network buffer frame that spans chunks (its payload is copied out at once). */
  private scratch: Buffer | null = null;

  /** The largest body accepted; may be changed between frames (a connection lowers it until its handshake is done). */
  constructor(public maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  /** Feeds a chunk; returns the bodies of every frame now complete. Throws FrameError on a bad frame. */
  push(chunk: Uint8Array): unknown[] {
    const out: unknown[] = [];
    this.append(chunk);
    try {
      for (let body = this.next(); body !== NO_FRAME; body = this.next()) out.push(body);
    } catch (err) {
      if (err instanceof FrameError) err.frames = out;
      throw err;
    }
    return out;
  }

  /** Buffers a chunk without decoding it: next() takes the frames out one at a time. */
  append(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.buffered += chunk.byteLength;
  }

  /** The next whole frame's body, or NO_FRAME. Checks the limit as soon as a length prefix is complete. */
  next(): unknown {
    if (this.buffered < 4) return NO_FRAME;
    const head = this.peek(4);
    const length = head.readUInt32BE(0);
    if (length > this.maxFrameBytes) {
      throw new FrameError(`frame of ${length} bytes exceeds the limit of ${this.maxFrameBytes} bytes`);
    }
    if (this.buffered < 4 + length) return NO_FRAME;
    if (length > 0 && this.byteAt(4) === BUFFER_MARK) return decodeBufferFrame(this.take(4 + length, true).subarray(4));
    const frame = this.take(4 + length);
    try {
      return unpackr.unpack(frame.subarray(4));
    } catch (err) {
      throw new FrameError(`undecodable frame body (${length} bytes): ${(err as Error).message}`);
    }
  }

  /** Bytes held that do not yet form a whole frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.merge(n);
    return this.chunks[0]!;
  }

  private byteAt(i: number): number {
    for (const c of this.chunks) {
      if (i < c.length) return c[i]!;
      i -= c.length;
    }
    return -1;
  }

  /** The next n bytes; with `transient` a frame spanning chunks is joined in scratch memory reused by the next call. */
  private take(n: number, transient = false): Buffer {
    if (this.chunks[0]!.length < n) {
      if (transient) return this.joinInScratch(n);
      this.merge(n);
    }
    const first = this.chunks[0]!;
    const frame = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return frame;
  }

  private joinInScratch(n: number): Buffer {
    if (this.scratch === null || this.scratch.length < n) this.scratch = Buffer.allocUnsafeSlow(Math.max(n, 64 * 1024));
    const out = this.scratch;
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      out.set(k === c.length ? c : c.subarray(0, k), filled);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out.subarray(0, n);
  }

  /** Joins just enough leading chunks to hold n bytes (never all of them: that would be quadratic). */
  private merge(n: number): void {
    let count = 0;
    let size = 0;
    while (size < n) size += this.chunks[count++]!.length;
    this.chunks.splice(0, count, Buffer.concat(this.chunks.slice(0, count), size));
  }
}
