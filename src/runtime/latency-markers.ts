// Latency markers (Flink's metrics.latency.interval, issue 23): a source task emits a marker at an interval, stamped
// with the wall-clock time and its vertex and subtask. Markers travel in band, in order with the records of their
// channel, so they queue behind every buffer as records do, but they bypass user functions: each chained operator
// records how long the marker took to reach it, and the chain's tail forwards it to one random channel of each
// output (as Flink's RecordWriter.randomEmit), so one marker follows one path to a sink.
import type { LatencyStats } from "../rpc/messages.ts";

export interface LatencyMarker {
  type: "latencyMarker";
  /** Date.now() at the source: wall-clock, so comparable between the Workers and processes of one host. */
  markedTime: number;
  sourceVertexId: number;
  sourceSubtask: number;
}

/** Samples kept per (operator, source subtask), as Flink's latency histogram window (metrics.latency.history-size). */
export const LATENCY_HISTORY = 128;

interface Histogram {
  operator: string;
  sourceVertexId: number;
  sourceSubtask: number;
  samples: Float64Array;
  /** Samples ever recorded; the window holds the last min(count, LATENCY_HISTORY). */
  count: number;
  sum: number;
}

/** The latency histograms of one task: per chained operator and source subtask, a window of the last samples. */
export class LatencyTracker {
  private readonly histograms = new Map<string, Histogram>();

  record(operator: string, marker: LatencyMarker, now: number): void {
    const key = `${operator}\u0000${marker.sourceVertexId}\u0000${marker.sourceSubtask}`;
    let h = this.histograms.get(key);
    if (!h) {
      h = { operator, sourceVertexId: marker.sourceVertexId, sourceSubtask: marker.sourceSubtask, samples: new Float64Array(LATENCY_HISTORY), count: 0, sum: 0 };
      this.histograms.set(key, h);
    }
    const ms = now - marker.markedTime;
    h.samples[h.count % LATENCY_HISTORY] = ms;
    h.count++;
    h.sum += ms;
  }

  get empty(): boolean {
    return this.histograms.size === 0;
  }

  /** Quantiles over each window (nearest rank), the minimum and maximum in it, and totals. */
  report(): LatencyStats[] {
    const out: LatencyStats[] = [];
    for (const h of this.histograms.values()) {
      const window = h.samples.slice(0, Math.min(h.count, LATENCY_HISTORY)).sort();
      const q = (p: number) => window[Math.min(window.length - 1, Math.ceil(p * window.length) - 1)]!;
      out.push({
        operator: h.operator,
        sourceVertexId: h.sourceVertexId,
        sourceSubtask: h.sourceSubtask,
        count: h.count,
        sumMs: h.sum,
        minMs: window[0]!,
        p50Ms: q(0.5),
        p95Ms: q(0.95),
        p99Ms: q(0.99),
        maxMs: window[window.length - 1]!,
      });
    }
    return out;
  }
}
