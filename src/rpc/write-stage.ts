// Outgoing frames of one connection: frames written in one turn of the event loop are copied into one staging
// buffer and go out in one socket write: one syscall, not one each, and no allocation per frame. node:net keeps
// what it is given until it is written, so a staging buffer is reused only after its write's callback.
import type * as net from "node:net";

/** Size of a connection's staging buffers for outgoing frames, and how many it keeps for reuse. */
const STAGE_BYTES = 256 * 1024;
const MAX_SPARE_STAGES = 4;

export class WriteStage {
  /** The buffer being filled (valid after reserve() until the next flush). */
  stage: Buffer | null = null;
  private stagePos = 0;
  private readonly spareStages: Buffer[] = [];
  private flushScheduled = false;
  private congested = false;
  private drainWaiters: (() => void)[] = [];

  constructor(private readonly socket: net.Socket) {}

  /** False while the socket's send buffer is full; whenWritable() tells when it has drained. */
  get writable(): boolean {
    return !this.congested;
  }

  whenWritable(callback: () => void): void {
    if (!this.congested) callback();
    else this.drainWaiters.push(callback);
  }

  /** Queues one encoded frame; returns false when the socket's write buffer is full (wait for "drain"). */
  enqueue(frame: Uint8Array): boolean {
    if (frame.length > STAGE_BYTES / 4) {
      this.flushOut(); // keeps the order: what was staged goes first
      this.writeOut(frame, null);
    } else {
      const off = this.reserve(frame.length);
      this.stage!.set(frame, off);
    }
    return !this.congested;
  }

  /** Room for len bytes in the staging buffer (this.stage); returns where they go. */
  reserve(len: number): number {
    if (this.stage !== null && this.stage.length - this.stagePos < len) this.flushOut();
    if (this.stage === null) {
      this.stage = len > STAGE_BYTES ? Buffer.allocUnsafeSlow(len) : (this.spareStages.pop() ?? Buffer.allocUnsafeSlow(STAGE_BYTES));
      this.stagePos = 0;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(() => {
          this.flushScheduled = false;
          this.flushOut();
        });
      }
    }
    const off = this.stagePos;
    this.stagePos += len;
    return off;
  }

  /** Writes out what is staged now. */
  flushOut(): void {
    const stage = this.stage;
    if (stage === null) return;
    const used = this.stagePos;
    this.stage = null;
    this.stagePos = 0;
    if (used > 0) this.writeOut(stage.subarray(0, used), stage);
  }

  private writeOut(bytes: Uint8Array, stage: Buffer | null): void {
    if (this.socket.destroyed) return;
    const ok = this.socket.write(bytes, () => {
      if (stage !== null && stage.length === STAGE_BYTES && this.spareStages.length < MAX_SPARE_STAGES) this.spareStages.push(stage);
    });
    if (!ok && !this.congested) {
      this.congested = true;
      this.socket.once("drain", () => {
        this.congested = false;
        for (const w of this.drainWaiters.splice(0)) w();
      });
    }
  }
}
