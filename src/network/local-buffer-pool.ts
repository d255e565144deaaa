// A task's share of its TaskManager's network buffers, inside the task's Worker: a fixed number of
// fixed-size ArrayBuffers (created lazily), plus a few overdraft buffers to finish the record in hand.
// Buffers never leave the Worker: a finished buffer's bytes are copied into its channel's ring, and the buffer
// comes back as soon as they are (it waits, holding its place, while the ring is full).
import { assert } from "../util/assert.ts";

export class LocalBufferPool {
  private readonly free: ArrayBuffer[] = [];
  /** The buffers handed out and not recycled: a recycle of any other buffer is a bug (twice, or not ours). */
  private readonly out = new Set<ArrayBuffer>();
  private created = 0;
  private overdraftUsed = 0;
  private waiters: (() => void)[] = [];

  constructor(
    readonly size: number,
    readonly segmentSize: number,
    private readonly maxOverdraft: number,
  ) {}

  /** A free buffer, or null when the pool (and its overdraft) is exhausted. */
  request(): ArrayBuffer | null {
    let b = this.free.pop();
    if (b === undefined) {
      if (this.created < this.size) this.created++;
      else if (this.overdraftUsed < this.maxOverdraft) this.overdraftUsed++;
      else return null;
      b = new ArrayBuffer(this.segmentSize);
    }
    this.out.add(b);
    return b;
  }

  recycle(buf: ArrayBuffer): void {
    assert(buf.byteLength === this.segmentSize, () => `buffer pool: recycled a buffer of ${buf.byteLength} bytes, its segments are ${this.segmentSize} bytes`);
    assert(this.out.delete(buf), () => `buffer pool: recycled a buffer that is not out (recycled twice, or not from this pool); ${this.out.size} out, ${this.free.length} free, ${this.created} of ${this.size} created, ${this.overdraftUsed} of ${this.maxOverdraft} overdraft`);
    if (this.overdraftUsed > 0) this.overdraftUsed--; // overdraft buffers are dropped first
    else this.free.push(buf);
    // The books: every buffer created is free or out, plus the overdraft ones out.
    assert(this.free.length + this.out.size === this.created + this.overdraftUsed && this.created <= this.size && this.overdraftUsed <= this.maxOverdraft, () => `buffer pool: ${this.free.length} free + ${this.out.size} out != ${this.created} created (of ${this.size}) + ${this.overdraftUsed} overdraft (of ${this.maxOverdraft})`);
    for (const w of this.waiters.splice(0)) w(); // waiters re-check their condition
  }

  /** A buffer can be had without overdraft. */
  get available(): boolean {
    return this.overdraftUsed === 0 && (this.free.length > 0 || this.created < this.size);
  }

  /** Buffers out of the pool (in builders, in flight, at consumers). */
  get inUse(): number {
    return this.created - this.free.length + this.overdraftUsed;
  }

  /** Resolves at the next recycle. */
  nextRecycle(): Promise<void> {
    return new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  async waitAvailable(): Promise<void> {
    while (!this.available) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Resolves when every buffer is back (all data sent downstream has been read). */
  async allRecycled(): Promise<void> {
    while (this.inUse > 0) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
}
