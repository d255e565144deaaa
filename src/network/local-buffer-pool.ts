// A task's share of its TaskManager's network buffers, inside the task's Worker: a number set by the TaskManager (resize) of
// fixed-size ArrayBuffers (created lazily), plus a few overdraft buffers to finish the record in hand.
// Buffers never leave the Worker: a finished buffer's bytes are copied into its channel's ring, and the buffer
// comes back as soon as they are (it waits, holding its place, while the ring is full).
export class LocalBufferPool {
  private readonly free: ArrayBuffer[] = [];
  private created = 0;
  private overdraftUsed = 0;
  private waiters: (() => void)[] = [];

  constructor(
    private _size: number,
    readonly segmentSize: number,
    private readonly maxOverdraft: number,
  ) {}

  /** Buffers of the pool (overdraft aside): changed by resize() when the TaskManager redistributes its buffers. */
  get size(): number {
    return this._size;
  }

  /**
   * New size: a larger pool creates more buffers as they are needed; a smaller one drops its free buffers down to
   * the new size at once and the others as they come back.
   */
  resize(size: number): void {
    this._size = size;
    while (this.created > this._size && this.free.length > 0) {
      this.free.pop();
      this.created--;
    }
    for (const w of this.waiters.splice(0)) w();
  }

  /** A free buffer, or null when the pool (and its overdraft) is exhausted. */
  request(): ArrayBuffer | null {
    const b = this.free.pop();
    if (b) return b;
    if (this.created < this._size) {
      this.created++;
      return new ArrayBuffer(this.segmentSize);
    }
    if (this.overdraftUsed < this.maxOverdraft) {
      this.overdraftUsed++;
      return new ArrayBuffer(this.segmentSize);
    }
    return null;
  }

  recycle(buf: ArrayBuffer): void {
    if (this.overdraftUsed > 0) this.overdraftUsed--; // overdraft buffers are dropped first
    else if (this.created > this._size) this.created--; // the pool shrank: dropped, not pooled
    else this.free.push(buf);
    for (const w of this.waiters.splice(0)) w(); // waiters re-check their condition
  }

  /** A buffer can be had without overdraft. */
  get available(): boolean {
    return this.overdraftUsed === 0 && (this.free.length > 0 || this.created < this._size);
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
