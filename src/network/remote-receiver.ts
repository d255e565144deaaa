// The receiving end of remote channels, on the consumer's TaskManager main thread: exclusive buffers per channel
// plus floating buffers per gate, lent to channels that report a backlog; every free buffer is announced to the
// producer as credit (as Flink since 1.5). An arriving buffer goes straight into the consumer Worker's input ring
// when it has room, and its network buffer is credit again at once; otherwise it waits in that buffer until the
// ring has room. The Worker is thus off the credit loop while its ring has room.
// A priority event (unaligned barrier, cancel marker) does not queue behind that: it goes into the channel's
// priority ring at once, at its place in the data ring, and the Worker gets (by message) copies of the buffers it
// overtook, those waiting here and those the producer's TaskManager sent with it (OVERTAKEN frames): they are the
// in-flight part of the channel that the Worker's gate has not seen yet (input-gate.ts, onOvertakingEvent).
import type { ChannelTarget } from "../rpc/messages.ts";
import { assert } from "../util/assert.ts";
import { isPriorityEvent, type ChannelEvent } from "./record-writer.ts";
import { RING_WAIT_MS } from "./remote-sender.ts";
import { RingWriter } from "./shared-ring.ts";
import { DATA_FRAME, type TaskEndpoint } from "./wire.ts";

/** An input gate's floating buffers, shared by its remote channels. */
export interface FloatingPool {
  /** Floating buffers the gate may have now (resized as the TaskManager's tasks come and go). */
  limit: number;
  /** Floating buffers not lent to a channel: limit minus those lent, below 0 while the gate is over its limit. */
  floating: number;
  spare: ArrayBuffer[]; // allocated floating buffers not in use
  channels: RemoteInput[];
}

interface RemoteInput {
  id: string;
  task: TaskEndpoint;
  producer: ChannelTarget;
  gate: FloatingPool;
  free: ArrayBuffer[];
  /** Its exclusive buffers: with the floating ones it holds, every network buffer of the channel. */
  exclusive: number;
  floatingHeld: number;
  backlog: number;
  ended: boolean;
  /** Credit granted but not yet sent to the producer. */
  unannounced: number;
  /** The consumer Worker's input ring for this channel. */
  ring: RingWriter;
  /** Arrivals waiting for room in the ring, in order (a buffer holds one of the channel's network buffers). */
  pending: ({ buf: ArrayBuffer; size: number } | { event: ChannelEvent })[];
  /** A wait for room in the ring is pending. */
  waiting: boolean;
  /** Items pushed into the ring so far: a priority event's place in it. */
  pushed: number;
  /** Unaligned checkpoints: the Worker's priority ring for this channel. */
  priority: RingWriter | null;
  /** Priority events waiting for room in the priority ring (rare: 4 slots); the data waits behind them. */
  priorityPending: PriorityArrival[];
  /** OVERTAKEN buffers that arrived for the channel's next priority event (copies). */
  overtaken: Uint8Array[];
  /** Ids of the buffers posted to the Worker with priority events. */
  overtakenId: number;
}

/** A priority event at its place in the data ring, with copies of the buffers it overtook (posted to the Worker). */
interface PriorityArrival {
  event: ChannelEvent & { ringPosition: number; overtaken?: number; overtakenBuffers?: number };
  buffers: Uint8Array[];
}

export class RemoteReceiver {
  private readonly inputs = new Map<string, RemoteInput>();
  /** Remote input channels with credit to announce at the end of this turn. */
  private creditDue: RemoteInput[] = [];

  constructor(
    private readonly segmentSize: number,
    /** Sends a credit frame to the producer's TaskManager (connecting on first use). */
    private readonly send: (to: ChannelTarget, frame: unknown[]) => void,
    /** The most buffers a priority event may overtake at the producer: its remote ring's slots at most. */
    private readonly maxOvertaken = Number.MAX_SAFE_INTEGER,
  ) {}

  newGate(floating: number): FloatingPool {
    return { limit: floating, floating, spare: [], channels: [] };
  }

  /** A remote input channel of a task being wired, with `exclusive` buffers, feeding `ring`. */
  add(ch: string, task: TaskEndpoint, producer: ChannelTarget, gate: FloatingPool, exclusive: number, ring: SharedArrayBuffer, priority?: SharedArrayBuffer): void {
    const free = Array.from({ length: exclusive }, () => new ArrayBuffer(this.segmentSize));
    const ri: RemoteInput = {
      id: ch, task, producer, gate, free, exclusive, floatingHeld: 0, backlog: 0, ended: false, unannounced: 0, ring: new RingWriter(ring), pending: [], waiting: false,
      pushed: 0, priority: priority ? new RingWriter(priority) : null, priorityPending: [], overtaken: [], overtakenId: 0,
    };
    gate.channels.push(ri);
    this.inputs.set(ch, ri);
    // The first credit also asks the producer's TaskManager for the partition.
    this.send(producer, [DATA_FRAME.CREDIT, ch, free.length]);
  }

  /** The gate's floating buffers now number `limit`: more are lent as channels need them, fewer are not lent again. */
  resizeGate(gate: FloatingPool, limit: number): void {
    gate.floating += limit - gate.limit;
    gate.limit = limit;
    if (gate.spare.length > Math.max(0, gate.floating)) gate.spare.length = Math.max(0, gate.floating);
    if (gate.floating > 0) for (const ri of gate.channels) if (!ri.ended) this.lendFloating(ri);
  }

  /** The channel's task ended. */
  remove(ch: string, task: TaskEndpoint): void {
    if (this.inputs.get(ch)?.task === task) this.inputs.delete(ch);
  }

  releaseJob(ofJob: (ch: string) => boolean): void {
    for (const ch of this.inputs.keys()) if (ofJob(ch)) this.inputs.delete(ch);
  }

  has(ch: string): boolean {
    return this.inputs.has(ch);
  }

  /** A buffer for `ch` (spends one credit). Throws on a protocol violation: the caller closes the connection. */
  onData(ch: string, bytes: Uint8Array, backlog: number): void {
    const ri = this.inputs.get(ch)!;
    const buf = ri.free.pop();
    if (!buf) throw new Error(`channel ${ch} sent a buffer without credit`);
    if (ri.overtaken.length > 0) throw new Error(`channel ${ch} sent a buffer between overtaken buffers and their priority event`);
    ri.backlog = backlog;
    if (ri.pending.length === 0 && ri.priorityPending.length === 0 && ri.ring.tryPush(bytes)) {
      ri.pushed++;
      this.recycleInput(ri, buf); // straight into the consumer's ring: the network buffer is free again
    } else {
      new Uint8Array(buf).set(bytes);
      ri.pending.push({ buf, size: bytes.length });
      this.whenRingFree(ri);
    }
    this.lendFloating(ri);
  }

  /** A buffer the channel's next priority event overtook at the producer (sent before it, without credit). */
  onOvertaken(ch: string, bytes: Uint8Array): void {
    const ri = this.inputs.get(ch)!;
    if (!ri.priority) throw new Error(`channel ${ch} sent an overtaken buffer, but its job has no unaligned checkpoints`);
    if (ri.overtaken.length >= this.maxOvertaken) throw new Error(`channel ${ch} sent more than ${this.maxOvertaken} overtaken buffers before a priority event (the producer's ring holds at most that many)`);
    ri.overtaken.push(bytes.slice());
  }

  /** An event; `overtaken`: the OVERTAKEN buffers sent right before it (a priority event's). */
  onEvent(ch: string, event: ChannelEvent, overtaken = 0): void {
    const ri = this.inputs.get(ch)!;
    if (overtaken !== ri.overtaken.length) throw new Error(`channel ${ch} sent a ${event.type} that overtook ${overtaken} buffers, but ${ri.overtaken.length} overtaken buffers came before it`);
    if (ri.priority && isPriorityEvent(event) && !ri.ended) {
      this.onPriorityEvent(ri, event);
      return;
    }
    if (event.type === "end") {
      ri.ended = true;
      ri.gate.floating += ri.floatingHeld;
      ri.floatingHeld = 0;
    }
    if (ri.pending.length > 0 || ri.priorityPending.length > 0 || !ri.ring.tryPushEvent(event)) {
      ri.pending.push({ event });
      this.whenRingFree(ri);
    } else ri.pushed++;
  }

  /**
   * A priority event overtakes what of its channel waits here and what it overtook at the producer: the Worker gets
   * copies of those buffers (in channel order: here, then the producer's) by message, and the event in its priority
   * ring at its place in the data ring, naming them. The buffers go into the data ring after it, as they would have.
   */
  private onPriorityEvent(ri: RemoteInput, event: ChannelEvent): void {
    const buffers: Uint8Array[] = [];
    for (const p of ri.pending) if ("buf" in p) buffers.push(new Uint8Array(p.buf, 0, p.size).slice());
    for (const b of ri.overtaken.splice(0)) buffers.push(b);
    if (buffers.length === 0 && ri.pending.length === 0 && ri.priorityPending.length === 0 && ri.ring.tryPushEvent(event)) {
      ri.pushed++; // nothing to overtake: in order is at once
      return;
    }
    const positioned: PriorityArrival = { event: { ...event, ringPosition: ri.pushed }, buffers };
    if (buffers.length > 0) positioned.event = { ...positioned.event, overtaken: ++ri.overtakenId, overtakenBuffers: buffers.length };
    if (ri.priorityPending.length > 0) ri.priorityPending.push(positioned); // behind the others (their wait is pending)
    else if (!this.tryPushPriority(ri, positioned)) {
      ri.priorityPending.push(positioned);
      this.whenPriorityFree(ri);
    }
  }

  /**
   * Into the priority ring if it has room, the overtaken buffers posted to the Worker right before (its ring reader
   * waits for them where the event is): so the Worker holds at most a ring's worth of them.
   */
  private tryPushPriority(ri: RemoteInput, p: PriorityArrival): boolean {
    if (ri.priority!.free === 0) return false;
    if (p.buffers.length > 0) ri.task.post({ type: "overtaken", channel: ri.id, id: p.event.overtaken!, buffers: p.buffers });
    if (!ri.priority!.tryPushEvent(p.event)) throw new Error(`the priority ring of ${ri.id} has a free slot but took no event`);
    return true;
  }

  /** Priority events waiting for room in the priority ring: the data ring gets nothing past their place meanwhile. */
  private whenPriorityFree(ri: RemoteInput): void {
    void ri.priority!.whenFree(RING_WAIT_MS).then(() => {
      if (this.inputs.get(ri.id) !== ri) return;
      try {
        while (ri.priorityPending.length > 0 && this.tryPushPriority(ri, ri.priorityPending[0]!)) ri.priorityPending.shift();
      } catch (err) {
        this.inputs.delete(ri.id);
        ri.task.fail(new Error(`remote input channel ${ri.id}: ${(err as Error).message}`));
        return;
      }
      if (ri.priorityPending.length > 0) this.whenPriorityFree(ri);
      else if (ri.pending.length > 0) this.whenRingFree(ri);
    });
  }

  /** The connection to `peer` is gone: consumers still expecting data from it fail. */
  onConnectionClosed(peer: string, fail: (task: TaskEndpoint) => void): void {
    for (const ri of this.inputs.values()) if (!ri.ended && ri.producer.resourceId === peer) fail(ri.task);
  }

  private recycleInput(ri: RemoteInput, buf: ArrayBuffer): void {
    if (ri.ended) return;
    const gate = ri.gate;
    if (ri.floatingHeld > 0 && (ri.free.length >= ri.backlog || gate.floating < 0)) {
      // Not needed here any more (or the gate is over its limit): back to the gate, or lent to a channel whose
      // backlog is larger than its credit.
      ri.floatingHeld--;
      const needy = gate.floating >= 0 ? gate.channels.find((c) => !c.ended && c.backlog > c.free.length) : undefined;
      if (needy) {
        needy.floatingHeld++;
        this.grant(needy, [buf]);
      } else {
        gate.floating++;
        if (gate.floating > 0) gate.spare.push(buf); // else dropped: the gate had more than its limit
      }
      assert(gate.floating <= gate.limit, () => `floating buffers of a gate over its limit: ${gate.floating} free of ${gate.limit}`);
      return;
    }
    this.grant(ri, [buf]);
  }

  /**
   * Free buffers become credit for the producer. Credit is announced once per turn for all the buffers freed in
   * it (as Flink's unannounced credit): on loopback a tiny write costs about as much as a 32 KiB one.
   */
  private grant(ri: RemoteInput, bufs: ArrayBuffer[]): void {
    for (const b of bufs) ri.free.push(b);
    // The channel's books: every buffer it holds is credit (free) or an arrival waiting for its ring.
    const waiting = ri.pending.reduce((n, p) => n + ("buf" in p ? 1 : 0), 0);
    assert(ri.ended || ri.free.length + waiting === ri.exclusive + ri.floatingHeld, () => `remote input ${ri.id}: ${ri.free.length} credit + ${waiting} waiting != ${ri.exclusive} exclusive + ${ri.floatingHeld} floating buffers`);
    if (ri.unannounced === 0) this.creditDue.push(ri);
    ri.unannounced += bufs.length;
    if (this.creditDue.length === 1) queueMicrotask(() => this.announceCredit());
  }

  private announceCredit(): void {
    for (const ri of this.creditDue.splice(0)) {
      const n = ri.unannounced;
      ri.unannounced = 0;
      if (n === 0 || this.inputs.get(ri.id) !== ri) continue;
      // Buffer debloating: the size the consumer Worker announced in its ring goes to the producer with the credit.
      const size = ri.ring.announcedBufferSize;
      this.send(ri.producer, size > 0 ? [DATA_FRAME.CREDIT, ri.id, n, size] : [DATA_FRAME.CREDIT, ri.id, n]);
    }
  }

  /** Moves waiting arrivals into the consumer's ring when it has room (or checks again after RING_WAIT_MS). */
  private whenRingFree(ri: RemoteInput): void {
    if (ri.waiting) return;
    ri.waiting = true;
    void ri.ring.whenFree(RING_WAIT_MS).then(() => {
      ri.waiting = false;
      if (this.inputs.get(ri.id) !== ri) return;
      if (ri.priorityPending.length > 0) return; // resumed once they are in their ring
      try {
        while (ri.pending.length > 0) {
          const head = ri.pending[0]!;
          if ("event" in head ? !ri.ring.tryPushEvent(head.event) : !ri.ring.tryPush(new Uint8Array(head.buf, 0, head.size))) break;
          ri.pushed++;
          ri.pending.shift();
          if ("buf" in head) this.recycleInput(ri, head.buf);
        }
      } catch (err) {
        // An event too large for a slot (a frame handler would close the connection instead).
        this.inputs.delete(ri.id);
        ri.task.fail(new Error(`remote input channel ${ri.id}: ${(err as Error).message}`));
        return;
      }
      if (ri.pending.length > 0) this.whenRingFree(ri);
    });
  }

  /** Lends floating buffers of the gate to a channel whose backlog exceeds its free buffers. */
  private lendFloating(ri: RemoteInput): void {
    const want = Math.min(ri.backlog - ri.free.length, ri.gate.floating);
    if (want <= 0) return;
    ri.gate.floating -= want;
    ri.floatingHeld += want;
    const bufs = Array.from({ length: want }, () => ri.gate.spare.pop() ?? new ArrayBuffer(this.segmentSize));
    this.grant(ri, bufs);
  }
}
