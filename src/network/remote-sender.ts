// The sending end of remote channels, on the producer's TaskManager main thread. The producer Worker writes its
// finished buffers and events into a ring shared with this thread (and gets its buffers back at once); they wait
// there until the consumer grants credit, then go out on the peer's TCP connection straight from the ring
// (one copy into the connection's staging buffer). Events go out at once, in order with the buffers.
import type { FramedConnection } from "../rpc/framed-connection.ts";
import { DATA_FRAME, type TaskEndpoint } from "./wire.ts";
import { RingReader } from "./shared-ring.ts";

/** Rings that nobody writes any more are waited on with this time-out, so that a wait never pins a ring. */
export const RING_WAIT_MS = 1000;

interface RemoteOutput {
  task: TaskEndpoint | null; // null once the producer finished: the channel drains on its own
  conn: FramedConnection | null;
  credit: number;
  /** The producer's ring of finished buffers and events. */
  ring: RingReader;
  /** A buffer taken from the ring that waits for credit (unreleased). */
  held: Uint8Array | null;
  /** A wait for the producer to publish is pending. */
  waiting: boolean;
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
  add(ch: string, task: TaskEndpoint, ring: SharedArrayBuffer): void {
    const ro: RemoteOutput = { task, conn: null, credit: 0, ring: new RingReader(ring), held: null, waiting: false };
    this.outputs.set(ch, ro);
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
      ro.conn = conn;
      if (bufferSize !== undefined) ro.ring.announceBufferSize(bufferSize);
      ro.credit += n;
      this.trySend(ch, ro);
    } else if (!stale) {
      if (this.earlyCredit.size >= MAX_EARLY_CREDIT) throw new Error("too many partition requests for channels not deployed here");
      const early = this.earlyCredit.get(ch);
      this.earlyCredit.set(ch, { conn, n: (early?.n ?? 0) + n });
    }
  }

  /**
   * The channel's producer ended. A finished producer's channel keeps draining when its ring still holds data
   * (its end-of-partition may still wait for credit or a connection); returns false when the channel is dropped.
   */
  producerEnded(ch: string, task: TaskEndpoint, finished: boolean): boolean {
    const ro = this.outputs.get(ch);
    if (ro?.task !== task) return true;
    if (finished && (ro.held !== null || ro.ring.available > 0)) {
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

  /** Sends what the producer's ring holds, buffers as far as credit goes, events at once (in order). */
  private trySend(ch: string, ro: RemoteOutput): void {
    const conn = ro.conn;
    if (conn === null || conn.closed) return;
    if (!conn.writable) {
      this.resumeOnDrain(conn);
      return;
    }
    for (;;) {
      let bytes = ro.held;
      if (bytes === null) {
        const item = ro.ring.take();
        if (item === null) {
          this.whenPublished(ch, ro);
          return;
        }
        if (item.kind === "event") {
          ro.ring.release();
          conn.send([DATA_FRAME.EVENT, ch, item.event]);
          if (item.event.type === "end") {
            this.outputs.delete(ch);
            this.closed(ch);
            return;
          }
          continue;
        }
        bytes = item.bytes;
      }
      if (ro.credit === 0) {
        ro.held = bytes;
        return;
      }
      ro.credit--;
      ro.held = null;
      // The backlog is what the ring holds behind this buffer (events included: close enough for lending).
      const flowing = conn.sendBuffer(ch, ro.ring.available, bytes);
      ro.ring.release(); // copied into the connection's staging buffer: the producer may reuse the slot
      if (!flowing) {
        this.resumeOnDrain(conn);
        return;
      }
    }
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
