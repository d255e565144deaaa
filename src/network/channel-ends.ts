// A task's ends of all its channels, local and remote alike (in the task's Worker): each is a ring in shared
// memory (shared-ring.ts) whose other end is the peer task's Worker (local channel) or the TaskManager's main
// thread (remote channel: remote-sender.ts and remote-receiver.ts hold that thread's ends).
// The producer's finished buffer is copied into a free slot and goes straight back to its pool; when the ring
// is full, buffers and events wait here in order (holding their pool buffers, so the producer is
// backpressured). The consumer hands each slot to its input gate as a view and releases the slot when the gate
// has read it, so a consumer that does not read (barrier alignment, a slow task) fills the ring.
import type { InputGate } from "./input-gate.ts";
import type { BufferSender, ChannelEvent } from "./record-writer.ts";
import { RingReader, RingWriter, type RingItem } from "./shared-ring.ts";

/** A priority event in a channel's priority ring: it goes in after the first `ringPosition` items of the data ring. */
type PositionedEvent = ChannelEvent & { ringPosition: number };

/** A remote channel's priority event as its consumer's TaskManager puts it in the priority ring: with the id and count
 * of the buffers it overtook there, which come to the Worker by message (OvertakenInbox). */
type RemotePositionedEvent = PositionedEvent & { overtaken?: number; overtakenBuffers?: number };

/**
 * A consumer Worker's overtaken buffers of remote channels (OvertakenBuffers messages), until the ring reader reaches
 * the priority event that names them. Bounded: one entry per priority event in the channel's priority ring.
 */
export class OvertakenInbox {
  private readonly byChannel = new Map<string, Map<number, Uint8Array[]>>();

  put(channel: string, id: number, buffers: Uint8Array[]): void {
    let m = this.byChannel.get(channel);
    if (!m) this.byChannel.set(channel, (m = new Map()));
    // Posted only as their event goes into the priority ring: at most its slots wait (plus one being read).
    if (m.size > PRIORITY_RING_SLOTS) throw new Error(`input channel ${channel}: more than ${m.size} sets of overtaken buffers wait for their priority events`);
    m.set(id, buffers);
  }

  take(channel: string, id: number): Uint8Array[] | undefined {
    const m = this.byChannel.get(channel);
    const b = m?.get(id);
    if (b !== undefined) m!.delete(id);
    return b;
  }
}

/** Slots and slot size of a channel's priority ring (barriers of about 60 bytes plus their checkpoint directory). */
export const PRIORITY_RING_SLOTS = 4;
export const PRIORITY_RING_SLOT_BYTES = 4096;

export class RingSender implements BufferSender {
  private readonly ring: RingWriter;
  /** Unaligned checkpoints on a local channel: priority events that find the data ring full go here. */
  private readonly priority: RingWriter | null;
  private readonly waiting: ({ buf: ArrayBuffer; size: number } | { event: ChannelEvent })[] = [];
  /** Items (buffers and events) put into the data ring so far: a priority event's position in the channel. */
  private pushed = 0;
  /** A pump() runs (set and cleared synchronously, so an item that arrives as it ends starts a new one). */
  private pumping = false;
  private flushWaiters: (() => void)[] = [];

  constructor(
    ring: SharedArrayBuffer,
    /** Gives a buffer back to the producer's pool once its bytes are in the ring. */
    private readonly recycle: (buf: ArrayBuffer) => void,
    /** A failure while items wait for room (e.g. an event too large for a slot): fails the task. */
    private readonly onError: (err: unknown) => void,
    /** The channel's priority ring (unaligned checkpoints), read by receiveFromRing or the main thread (remote). */
    priorityRing?: SharedArrayBuffer,
    /**
     * A remote channel: priority events go to the priority ring first, even when the data ring has room, so that the
     * main thread sends them ahead of what waits there for credit (remote-sender.ts).
     */
    private readonly remote = false,
  ) {
    this.ring = new RingWriter(ring);
    this.priority = priorityRing ? new RingWriter(priorityRing) : null;
  }

  buffer(_channel: string, buf: ArrayBuffer, size: number): void {
    if (this.waiting.length === 0 && this.ring.tryPush(new Uint8Array(buf, 0, size))) {
      this.pushed++;
      this.recycleLater(buf);
    } else this.wait({ buf, size });
  }

  event(_channel: string, event: ChannelEvent): void {
    if (this.waiting.length === 0 && this.ring.tryPushEvent(event)) {
      this.pushed++;
      return;
    }
    this.wait({ event });
  }

  /**
   * Unaligned barriers and cancel markers: into the data ring at once if a slot is free; else into the priority ring
   * with their position (the items of the data ring before them), so that the consumer gets them without waiting for
   * a slot of a ring full of data (a slow consumer frees one per buffer it reads); else ahead of what waits.
   */
  priorityEvent(_channel: string, event: ChannelEvent): void {
    if (this.remote && this.priority && this.priority.tryPushEvent({ ...event, ringPosition: this.pushed } as PositionedEvent)) return;
    if (this.ring.tryPushEvent(event)) {
      this.pushed++;
      return;
    }
    if (this.priority) {
      const positioned: PositionedEvent = { ...event, ringPosition: this.pushed };
      if (this.priority.tryPushEvent(positioned)) return;
    }
    this.waiting.unshift({ event });
    if (!this.pumping) {
      this.pumping = true;
      void this.pump();
    }
  }

  /** The consumer has buffers of this channel still to read (in the ring, or waiting here for a slot). */
  consumerBusy(): boolean {
    return this.waiting.length > 0 || this.ring.free < this.ring.slots;
  }

  /** How many items the consumer has read and released so far (it grows while the consumer makes progress). */
  consumerReleased(): number {
    return this.ring.releasedCount();
  }

  /** The buffer size the consumer announced (buffer debloating), 0 when none: the writer cuts buffers at it. */
  bufferSize(): number {
    return this.ring.announcedBufferSize;
  }

  /** The bytes of the buffers waiting here for a slot, oldest first (views, valid until they are sent). */
  waitingBuffers(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const item of this.waiting) if ("buf" in item) out.push(new Uint8Array(item.buf, 0, item.size));
    return out;
  }

  waitingBytes(): number {
    let n = 0;
    for (const item of this.waiting) if ("buf" in item) n += item.size;
    return n;
  }

  /** Resolves when everything handed over is in the ring (the end-of-partition event included). */
  flushed(): Promise<void> {
    if (!this.pumping) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }

  private wait(item: { buf: ArrayBuffer; size: number } | { event: ChannelEvent }): void {
    this.waiting.push(item);
    if (!this.pumping) {
      this.pumping = true;
      void this.pump();
    }
  }

  private async pump(): Promise<void> {
    try {
      while (this.waiting.length > 0) {
        await this.ring.whenFree();
        while (this.waiting.length > 0) {
          const head = this.waiting[0]!;
          if ("event" in head ? !this.ring.tryPushEvent(head.event) : !this.ring.tryPush(new Uint8Array(head.buf, 0, head.size))) break;
          this.pushed++;
          this.waiting.shift();
          if ("buf" in head) this.recycleLater(head.buf);
        }
      }
    } catch (err) {
      this.onError(err);
    } finally {
      this.pumping = false;
      for (const w of this.flushWaiters.splice(0)) w();
    }
  }

  // Recycled after the current call returns: recycling drains the writer's overflow into new buffers, which
  // would re-enter buffer() from inside the writer's send loop.
  private recycled: ArrayBuffer[] = [];
  private recycleLater(buf: ArrayBuffer): void {
    this.recycled.push(buf);
    if (this.recycled.length === 1) {
      queueMicrotask(() => {
        const bufs = this.recycled;
        this.recycled = [];
        for (const b of bufs) this.recycle(b);
      });
    }
  }
}

/**
 * A channel's consumer end, a source of its gate: poll() hands over at once what has arrived (the gate calls it
 * whenever the task reads), armWake() waits for the next item (the gate calls it when the task found nothing and
 * waits), at most one wait at a time.
 */
export interface RingReceiver {
  poll(): void;
  armWake(): void;
}

/**
 * Feeds a local channel's ring into the gate until its end-of-partition event; failures go to onError. With a
 * priority ring, a priority event found there goes to the gate right after the data ring's items before it (its
 * ring position), ahead of those behind it, whichever ring the consumer looks at first.
 * The receiver registers with the gate, which drains it whenever the task reads and waits on it only while the task
 * has nothing to read: a wait kept pending all the time made the producer wake this thread for every buffer it
 * published (Atomics.notify of a pending waitAsync costs about 8 us across both threads), busy or not.
 */
export function receiveFromRing(ring: SharedArrayBuffer, channel: string, gate: InputGate, onError: (err: unknown) => void, priorityRing?: SharedArrayBuffer, overtaken?: OvertakenInbox): RingReceiver {
  const reader = new RingReader(ring);
  const priority = priorityRing ? new RingReader(priorityRing) : null;
  const release = () => reader.release();
  let taken = 0;
  let ended = false;
  let next: RemotePositionedEvent | null = null;
  /** A data item taken while a priority event before it waits for its overtaken buffers (remote channels). */
  let stalled: RingItem | null = null;
  /** Priority events whose place is before data item `index`; false while one of them waits for its buffers. */
  const priorityBefore = (index: number): boolean => {
    if (!priority) return true;
    for (;;) {
      if (next === null) {
        const item = priority.take();
        if (item === null) return true;
        priority.release(); // an event is copied out of its slot
        if (item.kind !== "event") throw new Error(`priority ring of ${channel}: a buffer, only events go there`);
        next = item.event as RemotePositionedEvent;
      }
      // Its items before it were published before it: the data ring yields them first.
      if (next.ringPosition > index) return true;
      if (next.overtaken !== undefined) {
        if (!overtaken) throw new Error(`priority ring of ${channel}: an event with overtaken buffers on a channel that has none`);
        const buffers = overtaken.take(channel, next.overtaken);
        if (buffers === undefined) return false; // posted before the event: their message is on its way
        if (buffers.length !== next.overtakenBuffers) throw new Error(`input channel ${channel}: ${buffers.length} overtaken buffers arrived for a priority event that overtook ${next.overtakenBuffers}`);
        const { ringPosition: _p, overtaken: _o, overtakenBuffers: _n, ...event } = next;
        next = null;
        gate.onOvertakingEvent(channel, event as ChannelEvent, buffers);
        continue;
      }
      const { ringPosition: _, ...event } = next;
      next = null;
      gate.onEvent(channel, event as ChannelEvent, null);
    }
  };
  const drain = () => {
    if (ended) return;
    for (let item = stalled ?? reader.take(); item !== null; item = reader.take()) {
      // Seen after the data item: a priority event published before it is visible now.
      stalled = null;
      if (!priorityBefore(taken)) {
        stalled = item;
        return;
      }
      taken++;
      if (item.kind === "buffer") gate.onBytes(channel, item.bytes, release);
      else {
        gate.onEvent(channel, item.event, release);
        if (item.event.type === "end") {
          ended = true;
          return;
        }
      }
    }
    priorityBefore(taken);
  };
  let waiting = false;
  const poll = () => {
    try {
      drain();
    } catch (err) {
      onError(err);
    }
  };
  const receiver: RingReceiver = {
    poll,
    armWake: () => {
      if (waiting || ended) return;
      waiting = true;
      void reader.whenPublished().then(() => {
        waiting = false;
        poll();
      });
    },
  };
  gate.addSource(receiver);
  return receiver;
}
