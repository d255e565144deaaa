// The sending end of remote channels, on the producer's TaskManager main thread. The producer Worker writes its
// finished buffers and events into a ring shared with this thread (and gets its buffers back at once); they wait
// there until the consumer grants credit, then go out on the peer's TCP connection straight from the ring
// (one copy into the connection's staging buffer). Events go out at once, in order with the buffers.
// Priority events (unaligned barriers, cancel markers) come through the channel's priority ring with their place in
// the data ring: they go out at once, without credit, ahead of the buffers before them that still wait here, and
// carry copies of those buffers (OVERTAKEN frames), which go out again as data afterwards, as before.
import type { FramedConnection } from "../rpc/framed-connection.ts";
import type { ChannelEvent } from "./record-writer.ts";
import { DATA_FRAME, type TaskEndpoint } from "./wire.ts";
import { RingReader, type RingItem } from "./shared-ring.ts";

/** Rings that nobody writes any more are waited on with this time-out, so that a wait never pins a ring. */
export const RING_WAIT_MS = 1000;

interface RemoteOutput {
  task: TaskEndpoint | null; // null once the producer finished: the channel drains on its own
  conn: FramedConnection | null;
  credit: number;
  /** The producer's ring of finished buffers and events. */
  ring: RingReader;
  /**
   * Items taken from the ring and not sent yet (their slots unreleased), in order: a buffer waiting for credit, and
   * what a priority event overtook (buffers, and events behind them).
   */
  held: RingItem[];
  /** Items taken from the data ring so far: the position a priority event's ringPosition counts in. */
  taken: number;
  /** Unaligned checkpoints: the producer's priority events, each with its place in the data ring. */
  priority: RingReader | null;
  /** A wait for the producer to publish is pending (data ring, priority ring). */
  waiting: boolean;
  priorityWaiting: boolean;
}

/** Partition requests (credit) that arrived before their producer was deployed here are bounded by this. */
const MAX_EARLY_CREDIT = 100_000;

export class RemoteSender {
  private readonly outputs = new Map<string, RemoteOutput>();
  /** Credit (partition requests) that arrived before the producer task was deployed here. */
  private readonly earlyCredit = new Map<string, { conn: FramedConnection; n: number }>();

  /** Whether a consumer's partition request (its first credit) waits here for channel ch's producer. */
  hasEarlyCredit(ch: string): boolean {
    return this.earlyCredit.has(ch);
  }
  /** Connections with a resume-on-drain callback registered. */
  private readonly drainWaits = new WeakSet<FramedConnection>();

  /** `closed`: the channel sent its end-of-partition (late frames for it are dropped from now on). */
  constructor(private readonly closed: (ch: string) => void) {}

  /** A remote output channel of a task being wired: this thread reads its ring. */
  add(ch: string, task: TaskEndpoint, ring: SharedArrayBuffer, priority?: SharedArrayBuffer): void {
    const ro: RemoteOutput = { task, conn: null, credit: 0, ring: new RingReader(ring), held: [], taken: 0, priority: priority ? new RingReader(priority) : null, waiting: false, priorityWaiting: false };
    this.outputs.set(ch, ro);
    this.whenPriority(ch, ro);
    const early = this.earlyCredit.get(ch);
    if (early) {
      // The consumer asked before this producer was here: start sending (from the ring) as soon as it writes.
      this.earlyCredit.delete(ch);
      ro.conn = early.conn;
      ro.credit = early.n;
      this.trySend(ch, ro);
    }
  }

  /**
   * Credit for a channel (the first is its partition request); `stale`: the channel or its job is gone. bufferSize:
   * the consumer's debloated buffer size, handed to the producer Worker through its ring.
   */
  onCredit(conn: FramedConnection, ch: string, n: number, stale: boolean, bufferSize?: number): void {
    const ro = this.outputs.get(ch);
    if (ro) {
      // A channel sends on the connection its first credit came on, for good: its buffers on two TCP streams could
      // arrive out of order. (Two TaskManagers that dial each other at once may send its credit on either.)
      ro.conn ??= conn;
      if (bufferSize !== undefined) ro.ring.announceBufferSize(bufferSize);
      ro.credit += n;
      this.trySend(ch, ro);
    } else if (!stale) {
      if (this.earlyCredit.size >= MAX_EARLY_CREDIT) throw new Error("too many partition requests for channels not deployed here");
      const early = this.earlyCredit.get(ch);
      this.earlyCredit.set(ch, { conn: early?.conn ?? conn, n: (early?.n ?? 0) + n });
    }
  }

  /**
   * The channel's producer ended. A finished producer's channel keeps draining when its ring still holds data
   * (its end-of-partition may still wait for credit or a connection); returns false when the channel is dropped.
   */
  producerEnded(ch: string, task: TaskEndpoint, finished: boolean): boolean {
    const ro = this.outputs.get(ch);
    if (ro?.task !== task) return true;
    if (finished && (ro.held.length > 0 || ro.ring.available > 0 || (ro.priority?.available ?? 0) > 0)) {
      ro.task = null;
      return true;
    }
    this.outputs.delete(ch);
    return false;
  }

  releaseJob(ofJob: (ch: string) => boolean): void {
    for (const map of [this.earlyCredit, this.outputs] as Map<string, unknown>[]) {
      for (const ch of map.keys()) if (ofJob(ch)) map.delete(ch);
    }
  }

  /** The connection closed: its channels' producers fail (a finished one's undrained channels are dropped). */
  onConnectionClosed(conn: FramedConnection | null, fail: (task: TaskEndpoint | null) => void): void {
    for (const [ch, ro] of this.outputs) {
      if (ro.conn !== null && ro.conn === conn) {
        fail(ro.task);
        if (!ro.task) this.outputs.delete(ch);
      }
    }
  }

  /**
   * Sends what the producer's ring holds, buffers as far as credit goes, events at once (in order); a priority event
   * at once, ahead of the items before it that are still here.
   */
  private trySend(ch: string, ro: RemoteOutput): void {
    const conn = ro.conn;
    if (conn === null || conn.closed) return;
    // Priority events go out even into a full socket: they are small, and what they overtake is what waits.
    if (ro.priority) this.sendPriority(ch, ro, conn);
    if (!conn.writable) {
      this.resumeOnDrain(conn);
      return;
    }
    for (;;) {
      if (ro.held.length === 0) {
        const item = ro.ring.take();
        if (item === null) {
          this.whenPublished(ch, ro);
          return;
        }
        ro.taken++;
        ro.held.push(item);
        // A priority event published before this item is visible now: it may belong before it.
        if (ro.priority) this.sendPriority(ch, ro, conn);
      }
      const head = ro.held[0]!;
      if (head.kind === "event") {
        ro.held.shift();
        ro.ring.release();
        conn.send([DATA_FRAME.EVENT, ch, head.event]);
        if (head.event.type === "end") {
          this.outputs.delete(ch);
          this.closed(ch);
          return;
        }
        continue;
      }
      if (ro.credit === 0) return; // the buffer waits for credit, still in its slot
      ro.credit--;
      ro.held.shift();
      // The backlog is what the ring holds behind this buffer (events included: close enough for lending).
      const flowing = conn.sendBuffer(ch, ro.ring.available + ro.held.length, head.bytes);
      ro.ring.release(); // copied into the connection's staging buffer: the producer may reuse the slot
      if (!flowing) {
        this.resumeOnDrain(conn);
        return;
      }
    }
  }

  /**
   * Sends the priority events the producer has published, each ahead of the items before its place in the data ring
   * that are still here (taken now if still in the ring: the producer published them before the event): first a
   * copy of each such buffer (OVERTAKEN), then the event with their count. The buffers stay here, and go out as data
   * against credit as before: what they are to the consumer's checkpoint is its business (remote-receiver.ts).
   */
  private sendPriority(ch: string, ro: RemoteOutput, conn: FramedConnection): void {
    const pr = ro.priority!;
    for (let item = pr.take(); item !== null; item = pr.take()) {
      pr.release(); // an event is copied out of its slot
      if (item.kind !== "event") throw new Error(`priority ring of ${ch}: a buffer, only events go there`);
      const { ringPosition, ...event } = item.event as ChannelEvent & { ringPosition: number };
      if (!Number.isInteger(ringPosition)) throw new Error(`priority ring of ${ch}: an event without its position`);
      while (ro.taken < ringPosition) {
        const next = ro.ring.take();
        if (next === null) throw new Error(`priority ring of ${ch}: an event at item ${ringPosition} of the data ring, which has published ${ro.taken}`);
        ro.taken++;
        ro.held.push(next);
      }
      // Items taken past the event's place came after it (at most the one taken just now); the rest are before it.
      const before = ro.held.length - (ro.taken - ringPosition);
      if (before < 0) throw new Error(`priority ring of ${ch}: an event at item ${ringPosition} of the data ring, but ${ro.taken - ro.held.length} items were sent already`);
      let n = 0;
      for (let i = 0; i < before; i++) {
        const h = ro.held[i]!;
        if (h.kind !== "buffer") continue;
        conn.send([DATA_FRAME.OVERTAKEN, ch, h.bytes.slice()]);
        n++;
      }
      conn.send(n > 0 ? [DATA_FRAME.EVENT, ch, event, n] : [DATA_FRAME.EVENT, ch, event]);
    }
    this.whenPriority(ch, ro);
  }

  /**
   * Stops writing into a full socket (it would only buffer and copy) and resumes every channel of the
   * connection on drain. Registered whenever a sender finds the socket full: the write that filled it happens
   * at the end of the turn, after sendBuffer has already said "flowing".
   */
  private resumeOnDrain(conn: FramedConnection): void {
    if (this.drainWaits.has(conn)) return;
    this.drainWaits.add(conn);
    conn.whenWritable(() => {
      this.drainWaits.delete(conn);
      for (const [id, other] of this.outputs) if (other.conn === conn) this.trySend(id, other);
    });
  }

  /** Sends the producer's priority events as they come (or looks again after RING_WAIT_MS, while the channel is here). */
  private whenPriority(ch: string, ro: RemoteOutput): void {
    // With an event waiting and no connection (no credit yet), the first credit sends it and arms this again.
    if (!ro.priority || ro.priorityWaiting || ro.priority.available > 0) return;
    ro.priorityWaiting = true;
    void ro.priority.whenPublished(RING_WAIT_MS).then(() => {
      ro.priorityWaiting = false;
      if (this.outputs.get(ch) !== ro) return;
      try {
        if (ro.priority!.available > 0) this.trySend(ch, ro);
      } catch (err) {
        this.outputs.delete(ch);
        ro.task?.fail(new Error(`remote output channel ${ch}: ${(err as Error).message}`));
        return;
      }
      this.whenPriority(ch, ro);
    });
  }

  /** Tries again when the producer publishes (or after RING_WAIT_MS, while the channel is still here). */
  private whenPublished(ch: string, ro: RemoteOutput): void {
    if (ro.waiting) return;
    ro.waiting = true;
    void ro.ring.whenPublished(RING_WAIT_MS).then(() => {
      ro.waiting = false;
      if (this.outputs.get(ch) !== ro) return;
      try {
        this.trySend(ch, ro);
      } catch (err) {
        // Only a corrupt ring gets here (a frame handler would close the connection instead).
        this.outputs.delete(ch);
        ro.task?.fail(new Error(`remote output channel ${ch}: ${(err as Error).message}`));
      }
    });
  }
}
