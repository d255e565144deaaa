// Consumer side of a task's inputs (runs inside the task's Worker): buffers and events of all input
// channels arrive in one queue, in arrival order (each channel's own order is kept); poll() decodes one
// buffer's records and then releases it (frees its slot in the channel's ring).
import type { ChannelEvent } from "./record-writer.ts";
import { RecordDeserializer } from "./serialization.ts";

type Arrival =
  | { channel: string; bytes: Uint8Array; release: () => void }
  | { channel: string; event: ChannelEvent; release: (() => void) | null };

export type GateItem = { channel: string; records: unknown[] } | { channel: string; event: ChannelEvent };

export class InputGate {
  private readonly deserializers = new Map<string, RecordDeserializer>();
  private readonly queue: Arrival[] = [];
  private head = 0;
  private wake: (() => void) | null = null;
  private open: number;
  private readonly ended = new Set<string>();
  /** Barrier alignment: channels whose arrivals are held back (in order) until unblockAll(). */
  private readonly blocked = new Set<string>();
  private held: Arrival[] = [];
  buffersIn = 0;
  bytesIn = 0;

  constructor(channels: Iterable<string>) {
    for (const ch of channels) this.deserializers.set(ch, new RecordDeserializer());
    this.open = this.deserializers.size;
  }

  hasChannel(channel: string): boolean {
    return this.deserializers.has(channel);
  }

  /** All channels delivered end-of-partition. */
  get finished(): boolean {
    return this.open === 0;
  }

  /** Buffers received and not yet read. */
  get queuedBuffers(): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if ("bytes" in this.queue[i]!) n++;
    for (const a of this.held) if ("bytes" in a) n++;
    return n;
  }

  /** Channels that have not delivered end-of-partition. */
  get openChannels(): number {
    return this.open;
  }

  isEnded(channel: string): boolean {
    return this.ended.has(channel);
  }

  /** Holds back what arrives on `channel` from now on (it delivered a barrier the others have not yet). */
  block(channel: string): void {
    this.blocked.add(channel);
  }

  /** Alignment done: held arrivals come next, each channel's still in its own order. */
  unblockAll(): void {
    this.blocked.clear();
    if (this.held.length === 0) return;
    this.queue.splice(this.head, 0, ...this.held);
    this.held = [];
  }

  /** A buffer that arrived as an ArrayBuffer of its own (unit tests); recycle gets it back once read. */
  onBuffer(channel: string, buf: ArrayBuffer, size: number, recycle: (buf: ArrayBuffer) => void): void {
    this.onBytes(channel, new Uint8Array(buf, 0, size), () => recycle(buf));
  }

  /** A buffer's bytes (e.g. a view of a ring slot), valid until release() is called after they are read. */
  onBytes(channel: string, bytes: Uint8Array, release: () => void): void {
    this.check(channel);
    this.push({ channel, bytes, release });
  }

  /** An event; release (if given) is called when it is read, in order with the channel's buffers. */
  onEvent(channel: string, event: ChannelEvent, release: (() => void) | null = null): void {
    this.check(channel);
    this.push({ channel, event, release });
  }

  /** The next item, or null when nothing has arrived. */
  poll(): GateItem | null {
    let a: Arrival;
    for (;;) {
      if (this.head === this.queue.length) return null;
      a = this.queue[this.head++]!;
      if (this.blocked.size === 0 || !this.blocked.has(a.channel)) break;
      this.held.push(a); // a blocked channel: kept, unread and unrecycled, which backpressures its producer
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if ("event" in a) {
      a.release?.();
      if (a.event.type === "end") {
        const d = this.deserializers.get(a.channel)!;
        if (d.hasPartialRecord) throw new Error(`channel ${a.channel} ended in the middle of a record`);
        if (this.ended.has(a.channel)) throw new Error(`channel ${a.channel} ended twice`);
        this.ended.add(a.channel);
        this.open--;
      }
      return { channel: a.channel, event: a.event };
    }
    const records: unknown[] = [];
    this.buffersIn++;
    this.bytesIn += a.bytes.length;
    try {
      this.deserializers.get(a.channel)!.read(a.bytes, records);
    } finally {
      a.release();
    }
    return { channel: a.channel, records };
  }

  /** Resolves when something arrives. */
  waitNext(): Promise<void> {
    if (this.head < this.queue.length) return Promise.resolve();
    return new Promise((resolve) => (this.wake = resolve));
  }

  private push(a: Arrival): void {
    this.queue.push(a);
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private check(channel: string): void {
    if (!this.deserializers.has(channel)) throw new Error(`received data for unknown input channel ${channel}`);
  }
}
