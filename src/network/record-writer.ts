// Producer side of one output edge of a task (runs inside the task's Worker): partitions records into
// per-channel batches, serializes each batch with msgpack, and sends a batch only against credit that the
// consumer handed out. A batch is sealed when full, on the buffer timeout, or at end of input.
import { Packr } from "msgpackr";
import { INITIAL_CREDIT } from "../runtime/worker-protocol.ts";
import type { Partitioner } from "./partitioners.ts";

export const BATCH_RECORDS = 1024;

export interface ChannelSender {
  data(channel: string, bytes: Uint8Array): void;
  end(channel: string): void;
}

interface OutChannel {
  id: string;
  records: unknown[];
  sealed: Uint8Array[];
  credit: number;
}

export class RecordWriter {
  private readonly channels: OutChannel[];
  private readonly byId = new Map<string, OutChannel>();
  private readonly packr = new Packr({ useRecords: true });
  private waiters: (() => void)[] = [];
  recordsOut = 0;

  constructor(
    channelIds: string[],
    private readonly partitioner: Partitioner,
    private readonly sender: ChannelSender,
    private readonly flushEveryRecord: boolean,
  ) {
    this.channels = channelIds.map((id) => ({ id, records: [], sealed: [], credit: INITIAL_CREDIT }));
    for (const c of this.channels) this.byId.set(c.id, c);
  }

  emit(record: unknown): void {
    this.recordsOut++;
    const target = this.partitioner(record);
    if (target >= 0) this.append(this.channels[target]!, record);
    else for (const c of this.channels) this.append(c, record);
  }

  /** True while some channel holds a sealed batch it has no credit for: the task should stop producing. */
  get backpressured(): boolean {
    for (const c of this.channels) if (c.sealed.length > 0) return true;
    return false;
  }

  /** Resolves once no channel is backpressured. */
  waitAvailable(): Promise<void> {
    if (!this.backpressured) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  addCredit(channel: string, n: number): void {
    const c = this.byId.get(channel);
    if (!c) return;
    c.credit += n;
    this.drain(c);
    if (!this.backpressured) for (const w of this.waiters.splice(0)) w();
  }

  hasChannel(channel: string): boolean {
    return this.byId.has(channel);
  }

  /** Seals every partly filled batch (buffer timeout or end of a source chunk). */
  flush(): void {
    for (const c of this.channels) if (c.records.length > 0) this.seal(c);
  }

  /** Flushes, waits until every batch is sent, then sends end-of-partition on every channel. */
  async finish(): Promise<void> {
    this.flush();
    while (this.backpressured) await this.waitAvailable();
    for (const c of this.channels) this.sender.end(c.id);
  }

  private append(c: OutChannel, record: unknown): void {
    c.records.push(record);
    if (this.flushEveryRecord || c.records.length >= BATCH_RECORDS) this.seal(c);
  }

  private seal(c: OutChannel): void {
    // msgpackr reuses its output buffer: copy so the batch can be transferred to another thread.
    const bytes = new Uint8Array(this.packr.pack(c.records));
    c.records = [];
    c.sealed.push(bytes);
    this.drain(c);
  }

  private drain(c: OutChannel): void {
    while (c.credit > 0 && c.sealed.length > 0) {
      c.credit--;
      this.sender.data(c.id, c.sealed.shift()!);
    }
  }
}
