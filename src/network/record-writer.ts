// Producer side of one output edge of a task (runs inside the task's Worker): partitions records into
// subpartitions (one per consumer channel), serializes them into fixed-size buffers from the task's
// LocalBufferPool, and hands finished buffers and in-band events to the channel's sender in order.
// A buffer is finished when full, on the buffer timeout (flush), or before an event.
import type { LocalBufferPool } from "./local-buffer-pool.ts";
import type { Partitioner } from "./partitioners.ts";
import { CHUNK_RECORDS, RecordSerializer, decodeChunksFrom, writeTypedChunkHeader, type SerializerOptions } from "./serialization.ts";
import type { CompiledLayout } from "./typed-serialization.ts";
import { assert } from "../util/assert.ts";

/**
 * One channel's output channel state as the writer holds it at an unaligned barrier: the records of the chunk that
 * spans the overtake point, then whole chunks (u32 length, chunk) as bytes, decodable with `shapes` (the serializer's
 * record-shape table where they start; decodeChunksFrom); bytes null when no whole chunk was overtaken.
 */
export interface OvertakenOutput {
  records: unknown[];
  bytes: Uint8Array | null;
  shapes: string[][];
}

/** In-band events travel in order with the records of their channel, except priority events (see sendPriorityEvent). */
export type ChannelEvent =
  /** End of partition: nothing follows on the channel. */
  | { type: "end" }
  /** End of data (FLIP-147): no records follow, but barriers still do until the final checkpoint completes. */
  | { type: "endOfData" }
  /**
   * Checkpoint barrier n: everything before it belongs to checkpoint n; dir is where tasks write their state.
   * Unaligned: it overtook the buffers the producer still held for the channel. `overtakenBytes` is what of them the
   * consumer must record as channel state when it arrives after the barrier: 0 when the producer recorded the records
   * of those buffers itself (its output channel state, see RecordWriter.keepInFlight), else all of them.
   * alignedTimeoutMs (aligned-checkpoint-timeout): an aligned barrier that a task switches to unaligned when alignment
   * is still going on that long after `timestamp`.
   */
  | { type: "barrier"; checkpointId: number; timestamp: number; dir: string; unaligned?: boolean; overtakenBytes?: number; alignedTimeoutMs?: number }
  /** Checkpoint n was given up upstream (Flink's CancelCheckpointMarker): release any alignment of it. */
  | { type: "cancelBarrier"; checkpointId: number }
  | { type: "watermark"; timestamp: number }
  /** A latency marker (runtime/latency-markers.ts): in order with the records, on one channel of each output. */
  | { type: "latencyMarker"; markedTime: number; sourceVertexId: number; sourceSubtask: number };

/** Events that overtake the channel's queued buffers when the consumer's gate gets them. */
export function isPriorityEvent(e: ChannelEvent): boolean {
  return (e.type === "barrier" && e.unaligned === true) || e.type === "cancelBarrier";
}

/** Where a channel's buffers go: its ring (RingSender in channel-ends.ts), whose other end is the consumer
 * task's Worker (local channel) or the TaskManager's main thread (remote channel). */
export interface BufferSender {
  buffer(channel: string, buf: ArrayBuffer, size: number, backlog: number): void;
  event(channel: string, event: ChannelEvent): void;
  /** An event put ahead of every buffer still waiting in the sender (not yet in the channel's ring). */
  priorityEvent?(channel: string, event: ChannelEvent): void;
  /** The buffer size the consumer announced (buffer debloating, FLIP-183), 0 when none: buffers are cut at it. */
  bufferSize?(): number;
  /** Bytes of the buffers waiting in the sender. */
  waitingBytes?(): number;
  /** The buffers waiting in the sender, oldest first (an unaligned barrier decodes what it overtook from them). */
  waitingBuffers?(): Uint8Array[];
  /** Resolves when nothing handed over waits in the sender itself any more. */
  flushed?(): Promise<void>;
  /**
   * Whether the consumer still has earlier buffers of this channel to read, with room left for more: a buffer
   * finished now would wait behind them anyway, so with buffer timeout 0 the writer keeps filling it a little longer.
   */
  consumerBusy?(): boolean;
  /** Items the consumer has read and released so far (a count that only grows): how fast it drains (see coalesced). */
  consumerReleased?(): number;
}

type Finished = { buf: ArrayBuffer; size: number } | { event: ChannelEvent };

interface Subpartition {
  id: string;
  sender: BufferSender | null;
  serializer: RecordSerializer;
  /** Records not serialized yet: they go into the buffer as one chunk. */
  pending: unknown[];
  /** Records per chunk: shrinks for large records, so a chunk fits in a buffer and needs no reassembly. */
  chunkRecords: number;
  buf: ArrayBuffer | null;
  view: Uint8Array | null;
  /** A DataView of buf (set with view), for records encoded straight into it. */
  dv: DataView | null;
  pos: number;
  /**
   * Records written straight into the buffer (writeDirect): the typed layout they are in, once a chunk of pending
   * records went out typed in a layout of fixed size; null while records go through `pending`.
   */
  direct: CompiledLayout | null;
  /** Where the open direct chunk starts in the buffer (its length prefix), -1 when none is open. */
  directAt: number;
  /** Finished buffers and events not yet handed to the sender (it is not connected yet). */
  queue: Finished[];
  /** Bytes and events waiting for a free buffer: kept in order behind everything written before. */
  overflow: (Uint8Array | { event: ChannelEvent } | { cut: true })[];
  /** Buffers of the pool this subpartition holds (filling, queued, in flight, at the consumer). */
  inUse: number;
  /** Bytes serialized into this subpartition so far (its stream offset). */
  written: number;
  /**
   * With keepInFlight: the chunks that did not go whole into the buffer being filled (they may cross a buffer
   * boundary, so their start may be in the ring while their end is not), oldest first, with their records (the
   * objects emitted, no copies) and stream offsets. Every other chunk lies within one buffer: an unaligned barrier
   * decodes it from the bytes it overtook, which the writer holds anyway.
   */
  spanning: { records: unknown[]; start: number; end: number }[];
  /** Buffer timeout 0: records wait (pending, or in the open buffer) while the consumer is busy (see write, releaseHeld). */
  held: boolean;
  /** Bytes per record of the last chunk (buffer timeout 0: how many records make the coalesce bound). */
  recordBytes: number;
  /** Buffer timeout 0: bytes a buffer may collect while its consumer is busy (COALESCE_BYTES..MAX_COALESCE_BYTES). */
  coalesce: number;
  /** The consumer's released count and the time when its drain rate was last taken (see coalesced). */
  drainCount: number;
  drainSince: number;
  /** With keepInFlight: the serializer's record-shape table for the chunks from stream offset `from` on, oldest first (recorded when it changes, which is rare). */
  shapes: { from: number; table: string[][] }[];
}

/** Spanning chunks kept per subpartition before the ones already in the channel's ring are dropped. */
const PRUNE_EVERY = 32;

/**
 * Buffer timeout 0: bytes a buffer may collect, record by record, while its consumer is busy with earlier buffers
 * (see write), for a consumer that drains slowly. Small, so that a back-pressured channel still holds little in
 * flight: a ring of 10 such buffers is 2.5 KiB, against 320 KiB of full ones.
 */
export const COALESCE_BYTES = 256;
/**
 * Buffer timeout 0: the bound for a consumer that drains fast but is behind (a pause of either thread): the bound is
 * what the consumer drains in COALESCE_TARGET_MS, between COALESCE_BYTES and this. At 256 bytes (2-3 Nexmark bids)
 * such a consumer caught up through buffers that hardly drained faster than records came: at 500 K events/s, p99
 * 17-56 ms against 4-7 ms with 2048 bytes (docs/benchmarks.md, issue 23, fourth round); a fixed 2048 though slowed
 * aligned checkpoints of back-pressured jobs (8x the bytes in flight), hence a bound from the drain rate.
 */
export const MAX_COALESCE_BYTES = 4096;
const COALESCE_TARGET_MS = 1;
/** The drain rate is taken over at least this long (ms). */
const DRAIN_WINDOW_MS = 2;
/** A longer window includes time the consumer was idle: it starts a new one instead. */
const DRAIN_WINDOW_MAX_MS = 50;
/** Buffer timeout 0: how often records held for a busy consumer look whether it is done (ms; see write). */
export const HOLD_CHECK_MS = 1;

export class RecordWriter {
  private readonly subs: Subpartition[];
  private readonly byId = new Map<string, Subpartition>();
  private readonly header = new Uint8Array(4);
  private overflowing = 0;
  recordsOut = 0;
  bytesOut = 0;
  buffersOut = 0;
  /** Typed chunks whose records were written straight into the buffer (writeDirect). */
  directChunks = 0;

  constructor(
    channelIds: string[],
    private readonly partitioner: Partitioner,
    readonly pool: LocalBufferPool,
    private readonly flushEveryRecord: boolean,
    /**
     * At most this many of the pool's buffers per subpartition (Flink's max-buffers-per-channel): one channel whose
     * consumer does not read (blocked for barrier alignment, or slow) must not take every buffer, or the others,
     * and the barriers queued in them, could never move again.
     */
    public maxBuffersPerChannel = Infinity,
    /** The edge's record type (declared, or inferred) and event-time wrapping: see RecordSerializer. */
    serializerOptions: SerializerOptions = {},
  ) {
    this.subs = channelIds.map((id) => ({ id, sender: null, serializer: new RecordSerializer(serializerOptions), pending: [], chunkRecords: CHUNK_RECORDS, buf: null, view: null, dv: null, pos: 0, direct: null, directAt: -1, queue: [], overflow: [], inUse: 0, written: 0, spanning: [], shapes: [], held: false, recordBytes: 0, coalesce: COALESCE_BYTES, drainCount: 0, drainSince: 0 }));
    for (const s of this.subs) this.byId.set(s.id, s);
  }

  hasChannel(channel: string): boolean {
    return this.byId.has(channel);
  }

  /**
   * Unaligned checkpoints record what a barrier overtakes here, at the producer (Flink's output channel state): the
   * writer then keeps what it needs to decode the bytes it still holds at a barrier (the record-shape tables, and the
   * records of chunks that may cross a buffer boundary until they are in the ring). Set before the first record.
   */
  keepInFlight = false;

  /** A record for one subpartition, bypassing the partitioner (restored output channel state). */
  emitTo(target: number, record: unknown): void {
    const sp = this.subs[target];
    if (!sp) throw new Error(`record writer: no subpartition ${target} (it has ${this.subs.length})`);
    this.recordsOut++;
    this.put(sp, record);
  }

  /** The channel's route is known: send what waited for it. */
  connect(channel: string, sender: BufferSender): void {
    const sp = this.byId.get(channel);
    if (!sp) throw new Error(`no output channel ${channel}`);
    sp.sender = sender;
    this.send(sp);
  }

  emit(record: unknown): void {
    this.recordsOut++;
    const target = this.partitioner(record);
    if (target >= 0) this.put(this.subs[target]!, record);
    else for (const sp of this.subs) this.put(sp, record);
  }

  private put(sp: Subpartition, record: unknown): void {
    // The open direct chunk has room: the record straight in (the common case, kept short).
    const at = sp.directAt;
    if (at >= 0 && sp.view!.length - sp.pos >= sp.direct!.direct!.size) {
      const end = sp.direct!.direct!.encode(record, sp.view!, sp.dv!, sp.pos);
      if (end >= 0) {
        sp.pos = end;
        return;
      }
    }
    if (sp.direct !== null && sp.pending.length === 0 && sp.overflow.length === 0 && this.writeDirect(sp, sp.direct, record)) return;
    // Through pending: behind the records of the open direct chunk, which is closed first.
    this.closeDirect(sp);
    this.write(sp, record);
  }

  /**
   * A record encoded straight into the subpartition's buffer, in a typed chunk opened for it (after the buffer's last
   * chunk, or in a new buffer when this one is full): no pending array, no chunk encoded aside and copied in. The
   * next records go into the same chunk while it has room (put). False (nothing written) when the record does not fit
   * the layout (write() then takes it: the serializer widens the layout, falls back to msgpack, or fails the record
   * against its declared type) or no buffer is free (write() queues it as overflow). A direct chunk never spans
   * buffers, and is open only while `pending` is empty.
   */
  private writeDirect(sp: Subpartition, layout: CompiledLayout, record: unknown): boolean {
    const { encode, size } = layout.direct!;
    const header = 4 + 3 + layout.sigBytes.length;
    this.closeDirect(sp);
    if (sp.view !== null && sp.view.length - sp.pos < header + size) this.finishBuffer(sp);
    if (sp.view === null && !this.openBuffer(sp)) return false;
    const view = sp.view!;
    // A buffer cut smaller than one chunk of one record (debloating): write() takes the record.
    if (view.length - sp.pos < header + size) return false;
    const at = sp.pos;
    // The chunk's u32 length is written when it closes (closeDirect).
    const end = encode(record, view, sp.dv!, writeTypedChunkHeader(view, at + 4, layout.sigBytes));
    if (end < 0) return false; // no chunk opened: pos is where it was
    sp.directAt = at;
    sp.pos = end;
    return true;
  }

  /** Closes the open direct chunk (writes its length), which counts as written from now on. */
  private closeDirect(sp: Subpartition): void {
    const at = sp.directAt;
    if (at < 0) return;
    sp.directAt = -1;
    const len = sp.pos - at - 4;
    const v = sp.view!;
    v[at] = len >>> 24;
    v[at + 1] = (len >>> 16) & 0xff;
    v[at + 2] = (len >>> 8) & 0xff;
    v[at + 3] = len & 0xff;
    sp.written += len + 4;
    this.bytesOut += len + 4;
    sp.serializer.typedChunks++;
    this.directChunks++;
  }

  /** A buffer of `channel` is free again (its bytes are in the channel's ring). */
  recycle(buf: ArrayBuffer, channel: string): void {
    const sp = this.byId.get(channel);
    assert(sp !== undefined, () => `record writer: a buffer recycled for ${channel}, which is not an output channel of this writer`);
    assert(sp.inUse > 0, () => `record writer: a buffer recycled for ${channel}, which holds ${sp.inUse} buffers (pool: ${this.pool.inUse} of ${this.pool.size} in use)`);
    sp.inUse--;
    this.pool.recycle(buf);
    if (this.overflowing > 0) for (const sp of this.subs) if (sp.overflow.length > 0) this.drain(sp);
  }

  /** True while the task should not produce more: no free buffer, or records wait for one. */
  get backpressured(): boolean {
    return this.overflowing > 0 || !this.pool.available;
  }

  async waitAvailable(): Promise<void> {
    while (this.backpressured) {
      // When every taken buffer is a partly filled one of ours, nothing will come back until we send them.
      if (this.overflowing === 0 && this.pool.inUse <= this.subs.filter((sp) => sp.buf !== null).length) this.flush();
      await this.pool.nextRecycle();
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  /** Finishes every partly filled buffer (buffer timeout). */
  flush(): void {
    for (const sp of this.subs) {
      this.serializePending(sp);
      if (sp.overflow.length === 0) this.finishBuffer(sp);
    }
  }

  broadcastEvent(event: ChannelEvent): void {
    for (const sp of this.subs) this.eventTo(sp, event);
  }

  /** An event on one channel chosen at random (latency markers, as Flink's randomEmit), behind its records. */
  randomEvent(event: ChannelEvent): void {
    this.eventTo(this.subs[Math.floor(Math.random() * this.subs.length)]!, event);
  }

  private eventTo(sp: Subpartition, event: ChannelEvent): void {
    this.serializePending(sp);
    if (sp.overflow.length > 0) {
      sp.overflow.push({ event });
      return;
    }
    this.finishBuffer(sp);
    sp.queue.push({ event });
    this.send(sp);
  }

  /**
   * A priority event (an unaligned barrier, a cancel marker) on every channel: it overtakes what the channel still
   * holds here and in its sender (everything written before it, the partly filled buffer included, which is finished
   * first). For a barrier with keepInFlight, the records of every chunk not wholly in the channel's ring before it
   * (a chunk spanning the overtake point included) go into `outputState` under the channel's id: the producer's
   * output channel state, and the barrier tells the consumer to record nothing after it. With `outputBytes` instead
   * the channel's part goes there undecoded (OvertakenOutput: the spanning chunk's records, then whole chunks as bytes
   * with the shape table where they start), decoded only on restore. Without keepInFlight the barrier says how many
   * bytes it overtook, and the consumer records them when they arrive. Returns the bytes overtaken.
   */
  broadcastPriorityEvent(event: ChannelEvent, outputState?: Map<string, unknown[]>, outputBytes?: Map<string, OvertakenOutput>): number {
    let total = 0;
    for (const sp of this.subs) {
      this.serializePending(sp);
      if (sp.overflow.length === 0) this.finishBuffer(sp);
      const bytes = this.unsentBytes(sp);
      // The overtaken bytes end here: the buffer that takes the last of them is finished there, so that no byte
      // written after the barrier shares a buffer with them (a consumer that records them counts whole buffers).
      if (sp.overflow.length > 0 && event.type === "barrier") sp.overflow.push({ cut: true });
      let ev = event;
      if (event.type === "barrier") {
        if (this.keepInFlight && (outputState || outputBytes)) {
          const o = this.overtaken(sp, bytes);
          if (outputBytes) {
            if (o.records.length > 0 || o.bytes !== null) outputBytes.set(sp.id, o);
          } else {
            if (o.bytes !== null) decodeChunksFrom(o.bytes, o.shapes, o.records);
            if (o.records.length > 0) outputState!.set(sp.id, o.records);
          }
          ev = { ...event, overtakenBytes: 0 };
        } else ev = { ...event, overtakenBytes: bytes };
      }
      const sender = sp.sender;
      if (sender?.priorityEvent) sender.priorityEvent(sp.id, ev);
      // Not connected yet: everything waits here, so the event goes to the head of the queue.
      else sp.queue.unshift({ event: ev });
      total += bytes;
    }
    return total;
  }

  /** Bytes of the subpartition not in its channel's ring yet: filling, queued, overflowing, waiting in the sender. */
  private unsentBytes(sp: Subpartition): number {
    let bytes = sp.pos;
    for (const item of sp.queue) if (!("event" in item)) bytes += item.size;
    for (const item of sp.overflow) if (item instanceof Uint8Array) bytes += item.length;
    if (sp.sender?.priorityEvent) bytes += sp.sender.waitingBytes?.() ?? 0;
    return bytes;
  }

  /**
   * The last `bytes` bytes of the subpartition's stream (not in the ring): the records of the chunk spanning the
   * overtake point (its start is in the ring already), then the whole chunks after it as bytes (copied from what the
   * writer and its sender hold) with the record-shape table the serializer had where they start: decodeChunksFrom
   * reads them. Flink likewise takes the buffers still queued at the barrier and copies nothing per buffer before it.
   */
  private overtaken(sp: Subpartition, bytes: number): OvertakenOutput {
    const sent = sp.written - bytes;
    this.prune(sp, sent);
    const out: unknown[] = [];
    let from = sent;
    const first = sp.spanning[0];
    if (first !== undefined && first.start < sent && first.end > sent) {
      for (let i = 0; i < first.records.length; i++) out.push(first.records[i]);
      from = first.end;
    }
    if (from === sp.written) return { records: out, bytes: null, shapes: [] };
    // The unsent bytes in stream order: waiting in the sender, queued here, the buffer being filled, overflowing.
    const parts: Uint8Array[] = sp.sender?.priorityEvent ? (sp.sender.waitingBuffers?.() ?? []) : [];
    for (const item of sp.queue) if (!("event" in item)) parts.push(new Uint8Array(item.buf, 0, item.size));
    if (sp.view !== null && sp.pos > 0) parts.push(sp.view.subarray(0, sp.pos));
    for (const item of sp.overflow) if (item instanceof Uint8Array) parts.push(item);
    let total = 0;
    for (const b of parts) total += b.length;
    assert(total === bytes, () => `record writer: ${sp.id} holds ${total} unsent bytes, ${bytes} expected`);
    const all = new Uint8Array(sp.written - from);
    let skip = from - sent;
    let at = 0;
    for (const b of parts) {
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      all.set(skip > 0 ? b.subarray(skip) : b, at);
      at += b.length - skip;
      skip = 0;
    }
    let table: string[][] = [];
    for (const s of sp.shapes) if (s.from <= from) table = s.table;
    return { records: out, bytes: all, shapes: table };
  }

  /** Drops the spanning chunks wholly before stream offset `sent` (in the ring) and the shape tables no chunk after it needs. */
  private prune(sp: Subpartition, sent: number): void {
    let drop = 0;
    while (drop < sp.spanning.length && sp.spanning[drop]!.end <= sent) drop++;
    if (drop > 0) sp.spanning.splice(0, drop);
    // The last table starting at or before `sent` is still needed; the ones before it are not.
    let keepFrom = 0;
    for (let i = 0; i < sp.shapes.length; i++) if (sp.shapes[i]!.from <= sent) keepFrom = i;
    if (keepFrom > 0) sp.shapes.splice(0, keepFrom);
  }

  /** Sends end-of-partition after all data, then waits until consumers have read every buffer. */
  async finish(): Promise<void> {
    for (const sp of this.subs) this.serializePending(sp);
    while (this.overflowing > 0) await this.pool.nextRecycle();
    this.broadcastEvent({ type: "end" });
    // Everything went out before the end: nothing stays held (a look already scheduled finds nothing to do).
    for (const sp of this.subs) sp.held = false;
    this.heldSubs.length = 0;
    while (this.subs.some((sp) => sp.queue.length > 0)) await new Promise((r) => setTimeout(r, 5));
    await this.pool.allRecycled();
    // Every buffer is back in the pool, so no subpartition may still count one.
    for (const sp of this.subs) assert(sp.inUse === 0, () => `record writer: every buffer is back in the pool but ${sp.id} still counts ${sp.inUse}`);
    for (const sp of this.subs) await sp.sender?.flushed?.();
  }

  private write(sp: Subpartition, record: unknown): void {
    sp.pending.push(record);
    if (this.flushEveryRecord) {
      // Buffer timeout 0 (Flink's flush after every record): each record is handed over at once, unless the consumer
      // has not read the channel's earlier buffers yet (consumerBusy). The record then waits with the next ones, which
      // go out together, as one chunk in one buffer, when they make about the coalesce bound (see coalesced), or when
      // a later record, the end of the batch (a microtask) or a look every HOLD_CHECK_MS after it finds the consumer
      // done: they could not be read any sooner, and the consumer reads one buffer and one chunk of several records
      // instead of one per record (each buffer costs both threads, each chunk its header and a serializer call, and a
      // back-pressured producer is woken once per half ring of buffers). Holding across batches matters where a batch
      // is a record or two (a paced source): a consumer that fell behind would otherwise catch up through buffers of a
      // record each, hardly faster than they come. Flink's writer likewise appends to the buffer its reader has not
      // taken yet; it fills it whole, this stops at the bound to keep little in flight.
      if (this.mayHold(sp)) {
        // Serialized once they would about fill half the rest (bytes per record as in the last chunk, so the last
        // chunk before the bound is small and overshoots little); handed over once the buffer holds the bound.
        // (Before the channel's first chunk the size is unknown: serialized at once, so that records never pile up
        // unserialized behind a consumer that stays busy, e.g. with an event it has not read.)
        if (sp.recordBytes > 0 && sp.pending.length * sp.recordBytes < (sp.coalesce - sp.pos) / 2) return this.hold(sp);
        this.serializePending(sp);
        if (sp.pos < sp.coalesce && sp.overflow.length === 0) return this.hold(sp);
        this.coalesced(sp);
        this.finishBuffer(sp);
        return;
      }
      this.serializePending(sp);
      this.finishBuffer(sp);
    } else if (sp.pending.length >= sp.chunkRecords) this.serializePending(sp);
  }

  /** Buffer timeout 0: records may wait for this channel's consumer (busy with earlier buffers; the open buffer not full, nothing overflowing). */
  private mayHold(sp: Subpartition): boolean {
    return sp.overflow.length === 0 && sp.pos < sp.coalesce && sp.sender?.consumerBusy?.() === true;
  }

  /**
   * A held buffer reached its bound with the consumer still busy: the next bound is what the consumer drained in
   * COALESCE_TARGET_MS over the last DRAIN_WINDOW_MS or more (buffers released times the bound they were cut at), so
   * a consumer that reads fast gets larger buffers to catch up with and a slow or stalled one keeps COALESCE_BYTES.
   */
  private coalesced(sp: Subpartition): void {
    const released = sp.sender?.consumerReleased?.();
    if (released === undefined) return;
    const now = performance.now();
    const ms = now - sp.drainSince;
    if (ms < DRAIN_WINDOW_MS) return;
    if (ms > DRAIN_WINDOW_MAX_MS) {
      // The consumer was not busy all along (this is the first full buffer in a while): a new window, same bound.
      sp.drainCount = released;
      sp.drainSince = now;
      return;
    }
    const bytesPerMs = ((released - sp.drainCount) * sp.coalesce) / ms;
    sp.coalesce = Math.max(COALESCE_BYTES, Math.min(MAX_COALESCE_BYTES, this.pool.segmentSize >> 2, Math.floor(bytesPerMs * COALESCE_TARGET_MS)));
    sp.drainCount = released;
    sp.drainSince = now;
  }

  private readonly heldSubs: Subpartition[] = [];
  /** A releaseHeld is queued (a microtask at the end of the batch, or a timer while consumers stay busy). */
  private releaseQueued = false;

  private hold(sp: Subpartition): void {
    if (sp.held) return;
    sp.held = true;
    this.heldSubs.push(sp);
    if (!this.releaseQueued) {
      this.releaseQueued = true;
      queueMicrotask(() => this.releaseHeld());
    }
  }

  /**
   * Hands over the buffers kept open (see write) whose consumer is done, or that are full or overflowing; the others
   * stay held, looked at again in HOLD_CHECK_MS.
   */
  private releaseHeld(): void {
    this.releaseQueued = false;
    let kept = 0;
    for (const sp of this.heldSubs) {
      if (this.mayHold(sp)) {
        this.heldSubs[kept++] = sp;
        continue;
      }
      sp.held = false;
      this.serializePending(sp);
      if (sp.overflow.length === 0) this.finishBuffer(sp);
    }
    this.heldSubs.length = kept;
    if (kept > 0) {
      this.releaseQueued = true;
      setTimeout(() => this.releaseHeld(), HOLD_CHECK_MS);
    }
  }

  private serializePending(sp: Subpartition): void {
    if (sp.pending.length === 0) return;
    this.closeDirect(sp);
    const body = sp.serializer.serialize(sp.pending);
    // Typed in a layout of fixed size: the next records go straight into the buffer (not with buffer timeout 0, whose
    // records wait in pending while their consumer is busy: see write).
    sp.direct = this.flushEveryRecord ? null : sp.serializer.directLayout();
    const records = sp.pending.length;
    const len = body.length;
    sp.recordBytes = len / records;
    const start = sp.written;
    sp.written += len + 4;
    // A new record shape: chunks from here on decode with the table as it stands now (an unaligned barrier's state).
    let kept = 0; // with keepInFlight: how long the list just added to is now
    if (this.keepInFlight && sp.serializer.shapesChanged()) kept = sp.shapes.push({ from: sp.written, table: sp.serializer.shapeTable() });
    this.bytesOut += len + 4;
    const segment = this.pool.segmentSize;
    // Adapt the chunk size to the records: about a quarter of a buffer per chunk.
    if (len > segment / 2 && sp.chunkRecords > 1) sp.chunkRecords = Math.max(1, Math.floor(records / 2));
    else if (len < segment / 8 && sp.chunkRecords < CHUNK_RECORDS && records === sp.chunkRecords) sp.chunkRecords *= 2;
    // A chunk that fits a buffer goes into a fresh one rather than span two, when little space is left:
    // the reader then decodes it in place instead of reassembling it.
    if (sp.view !== null && sp.overflow.length === 0 && len + 4 <= segment && sp.view.length - sp.pos < len + 4 && sp.pos > segment / 2) {
      this.finishBuffer(sp);
    }
    if (sp.overflow.length === 0 && sp.view !== null && sp.view.length - sp.pos >= len + 4) {
      const v = sp.view;
      let p = sp.pos;
      v[p++] = len >>> 24;
      v[p++] = (len >>> 16) & 0xff;
      v[p++] = (len >>> 8) & 0xff;
      v[p++] = len & 0xff;
      v.set(body, p);
      sp.pos = p + len;
      sp.pending.length = 0;
      if (sp.pos === v.length) this.finishBuffer(sp);
    } else {
      // It may cross a buffer boundary: with keepInFlight its records stay referenced until its bytes are all in the
      // ring (pruned every PRUNE_EVERY such chunks).
      if (this.keepInFlight) {
        kept = Math.max(kept, sp.spanning.push({ records: sp.pending, start, end: sp.written }));
        sp.pending = [];
      } else sp.pending.length = 0;
      const h = this.header;
      h[0] = len >>> 24;
      h[1] = (len >>> 16) & 0xff;
      h[2] = (len >>> 8) & 0xff;
      h[3] = len & 0xff;
      this.append(sp, h);
      this.append(sp, body);
    }
    // Now and then, drop what the ring has wholly (the chunk's bytes are written by now, so the offsets agree).
    if (kept > 0 && kept % PRUNE_EVERY === 0) this.prune(sp, sp.written - this.unsentBytes(sp));
  }

  private append(sp: Subpartition, bytes: Uint8Array): void {
    if (sp.overflow.length > 0) {
      sp.overflow.push(bytes.slice());
      return;
    }
    const written = this.copyIn(sp, bytes);
    if (written < bytes.length) {
      if (sp.overflow.length === 0) this.overflowing++;
      sp.overflow.push(bytes.slice(written));
    }
  }

  /** Copies bytes into the subpartition's buffers, taking new ones as they fill; returns bytes copied. */
  private copyIn(sp: Subpartition, bytes: Uint8Array): number {
    let off = 0;
    while (off < bytes.length) {
      if (sp.view === null && !this.openBuffer(sp)) return off;
      const n = Math.min(bytes.length - off, sp.view!.length - sp.pos);
      sp.view!.set(n === bytes.length ? bytes : bytes.subarray(off, off + n), sp.pos);
      sp.pos += n;
      off += n;
      if (sp.pos === sp.view!.length) this.finishBuffer(sp);
    }
    return off;
  }

  /** A buffer from the pool to fill; false when the pool (or the channel's share of it) has none free. */
  private openBuffer(sp: Subpartition): boolean {
    if (sp.inUse >= this.maxBuffersPerChannel) return false;
    const buf = this.pool.request();
    if (buf === null) return false;
    sp.inUse++;
    sp.buf = buf;
    // Buffer debloating: a buffer is finished once it holds the size its consumer announced.
    const size = sp.sender?.bufferSize?.() ?? 0;
    sp.view = new Uint8Array(buf, 0, size > 0 && size < buf.byteLength ? size : buf.byteLength);
    sp.dv = new DataView(buf);
    sp.pos = 0;
    return true;
  }

  private drain(sp: Subpartition): void {
    while (sp.overflow.length > 0) {
      const item = sp.overflow[0]!;
      if ("cut" in item) {
        this.finishBuffer(sp);
        sp.overflow.shift();
        continue;
      }
      if (!(item instanceof Uint8Array)) {
        this.finishBuffer(sp);
        sp.queue.push(item);
        sp.overflow.shift();
        continue;
      }
      const written = this.copyIn(sp, item);
      if (written < item.length) {
        sp.overflow[0] = item.subarray(written);
        this.send(sp);
        return;
      }
      sp.overflow.shift();
    }
    this.overflowing--;
    if (this.flushEveryRecord) this.finishBuffer(sp);
    this.send(sp);
  }

  private finishBuffer(sp: Subpartition): void {
    this.closeDirect(sp);
    if (sp.buf === null || sp.pos === 0) return;
    sp.queue.push({ buf: sp.buf, size: sp.pos });
    sp.buf = null;
    sp.view = null;
    sp.dv = null;
    sp.pos = 0;
    this.send(sp);
  }

  private send(sp: Subpartition): void {
    const sender = sp.sender;
    if (sender === null) return;
    let backlog = 0; // buffers (not events) queued behind the one being sent
    for (const item of sp.queue) if (!("event" in item)) backlog++;
    while (sp.queue.length > 0) {
      const item = sp.queue.shift()!;
      if ("event" in item) sender.event(sp.id, item.event);
      else {
        this.buffersOut++;
        sender.buffer(sp.id, item.buf, item.size, --backlog);
      }
    }
  }
}
