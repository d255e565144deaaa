// A task's ends of all its channels, local and remote alike (in the task's Worker): each is a ring in shared
// memory (shared-ring.ts) whose other end is the peer task's Worker (local channel) or the TaskManager's main
// thread (remote channel: remote-sender.ts and remote-receiver.ts hold that thread's ends).
// The producer's finished buffer is copied into a free slot and goes straight back to its pool; when the ring
// is full, buffers and events wait here in order (holding their pool buffers, so the producer is
// backpressured). The consumer hands each slot to its input gate as a view and releases the slot when the gate
// has read it, so a consumer that does not read (barrier alignment, a slow task) fills the ring.
import type { InputGate } from "./input-gate.ts";
import type { BufferSender, ChannelEvent } from "./record-writer.ts";
import { RingReader, RingWriter } from "./shared-ring.ts";

export class RingSender implements BufferSender {
  private readonly ring: RingWriter;
  private readonly waiting: ({ buf: ArrayBuffer; size: number } | { event: ChannelEvent; priority?: boolean })[] = [];
  /** A pump() runs (set and cleared synchronously, so an item that arrives as it ends starts a new one). */
  private pumping = false;
  private flushWaiters: (() => void)[] = [];

  /** Slots that only priority events may take (see reservePrioritySlot). */
  private readonly reserved: number;

  constructor(
    ring: SharedArrayBuffer,
    /** Gives a buffer back to the producer's pool once its bytes are in the ring. */
    private readonly recycle: (buf: ArrayBuffer) => void,
    /** A failure while items wait for room (e.g. an event too large for a slot): fails the task. */
    private readonly onError: (err: unknown) => void,
    /**
     * Unaligned checkpoints: one slot of the ring is kept for priority events, so that a barrier gets into a ring
     * full of data at once instead of after the consumer's next read (which a slow consumer does seconds apart).
     */
    reservePrioritySlot = false,
  ) {
    this.ring = new RingWriter(ring);
    this.reserved = reservePrioritySlot && this.ring.slots > 1 ? 1 : 0;
  }

  /** Room for data (a buffer or an in-band event) without taking the reserved slot. */
  private get roomForData(): boolean {
    return this.ring.free > this.reserved;
  }

  buffer(_channel: string, buf: ArrayBuffer, size: number): void {
    if (this.waiting.length === 0 && this.roomForData && this.ring.tryPush(new Uint8Array(buf, 0, size))) this.recycleLater(buf);
    else this.wait({ buf, size });
  }

  event(_channel: string, event: ChannelEvent): void {
    if (this.waiting.length === 0 && this.roomForData && this.ring.tryPushEvent(event)) return;
    this.wait({ event });
  }

  /** Unaligned barriers and cancel markers: into the ring at once if a slot is free, else ahead of what waits. */
  priorityEvent(_channel: string, event: ChannelEvent): void {
    if (this.ring.tryPushEvent(event)) return;
    this.waiting.unshift({ event, priority: true });
    if (!this.pumping) {
      this.pumping = true;
      void this.pump();
    }
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
        const head0 = this.waiting[0]!;
        await this.ring.whenFree(undefined, "priority" in head0 && head0.priority ? 1 : 1 + this.reserved);
        while (this.waiting.length > 0) {
          const head = this.waiting[0]!;
          if (!("priority" in head && head.priority) && !this.roomForData) break;
          if ("event" in head ? !this.ring.tryPushEvent(head.event) : !this.ring.tryPush(new Uint8Array(head.buf, 0, head.size))) break;
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

/** Feeds a local channel's ring into the gate until its end-of-partition event; failures go to onError. */
export function receiveFromRing(ring: SharedArrayBuffer, channel: string, gate: InputGate, onError: (err: unknown) => void): void {
  const reader = new RingReader(ring);
  const release = () => reader.release();
  void (async () => {
    for (;;) {
      await reader.whenPublished();
      for (let item = reader.take(); item !== null; item = reader.take()) {
        if (item.kind === "buffer") gate.onBytes(channel, item.bytes, release);
        else {
          gate.onEvent(channel, item.event, release);
          if (item.event.type === "end") return;
        }
      }
    }
  })().catch(onError);
}
