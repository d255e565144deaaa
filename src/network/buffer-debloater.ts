// Buffer debloating (FLIP-183, as Flink's BufferDebloater): an input gate measures the throughput its task reads
// at, and computes the buffer size that keeps about `target` of data in flight: throughput * target divided by the
// buffers that can be in flight for the gate. The producers cut their buffers at that size, so a back-pressured
// channel holds little data, and an aligned barrier behind it gets through in about the target time.
import type { DebloatOptions } from "./wire.ts";

/** Flink's buffer-debloat.samples default: the size follows an exponential moving average over about this many periods. */
const SAMPLES = 20;
const ALPHA = 2 / (SAMPLES + 1);
/** Flink's buffer-debloat.threshold-percentages default: smaller changes are not announced. */
const THRESHOLD = 0.25;

export class BufferDebloater {
  /** The smoothed size (bytes), and the size last announced. */
  private size: number;
  announced: number;

  constructor(
    private readonly opts: DebloatOptions,
    /** The segment size: the largest buffer, where a gate starts. */
    private readonly maxSize: number,
  ) {
    this.size = maxSize;
    this.announced = maxSize;
  }

  /**
   * One measurement period: `bytes` the task read while it was not idle for `activeMs` (idle time, waiting for
   * input, says nothing about how fast it can read, as Flink's throughput calculator leaves it out), with
   * `buffersInFlight` buffers that can hold the gate's data in flight. Returns the size to announce when it changed
   * by more than the threshold, else null.
   */
  update(bytes: number, activeMs: number, buffersInFlight: number): number | null {
    if (activeMs <= 0 || buffersInFlight <= 0) return null;
    const throughput = (bytes / activeMs) * 1000;
    const desired = Math.min(this.maxSize, Math.max(this.opts.minBufferSize, (throughput * this.opts.targetMs) / 1000 / buffersInFlight));
    this.size += ALPHA * (desired - this.size);
    const next = Math.round(Math.min(this.maxSize, Math.max(this.opts.minBufferSize, this.size)));
    // As Flink's skipUpdate: reaching the minimum or the segment is always announced.
    if (next === this.announced) return null;
    const bound = next <= this.opts.minBufferSize || next >= this.maxSize;
    if (!bound && Math.abs(next - this.announced) < THRESHOLD * this.announced) return null;
    this.announced = next;
    return next;
  }
}
