// Metric families of tasks (one sample per running task), shared by the TaskManager's /metrics. Labels as Flink's
// Prometheus reporter: job_id, job_name, task_name, subtask_index, plus task_attempt_num.
import type { TaskDeployment, TaskMetrics, TaskState } from "../rpc/messages.ts";
import { counter, gauge, summary, type MetricFamily } from "./exposition.ts";

export interface TaskView {
  deployment: TaskDeployment;
  state: TaskState;
  metrics: TaskMetrics;
  /** The task's network buffers: its minimum, what it holds now, its configured size (absent once released). */
  buffers?: { required: number; held: number; configured: number };
}

/** The metrics every task reports (the event-time ones are optional and exported only where present). */
type CoreMetric = Exclude<keyof TaskMetrics, "watermarksIgnored" | "currentInputWatermark" | "currentOutputWatermark" | "lateRecordsDropped" | "state" | "debloatedBufferSize" | "latency">;

const COUNTERS: [CoreMetric, string, string][] = [
  ["recordsIn", "tm_task_records_in_total", "Records the task received."],
  ["recordsOut", "tm_task_records_out_total", "Records the task emitted."],
  ["bytesIn", "tm_task_bytes_in_total", "Bytes the task received over the network stack."],
  ["bytesOut", "tm_task_bytes_out_total", "Bytes the task sent over the network stack."],
  ["buffersIn", "tm_task_buffers_in_total", "Network buffers the task received."],
  ["buffersOut", "tm_task_buffers_out_total", "Network buffers the task sent."],
  ["wakeUps", "tm_task_wake_ups_total", "Times the task's channel ends woke a waiting thread (a peer task, or the main thread for a remote channel); at most one per buffer in or out."],
];

// Flink's xTimeMsPerSecond in base units: the fraction of the time (0..1), the value divided by `divisor`.
const GAUGES: [CoreMetric, string, string, number][] = [
  ["busyTimeMsPerSecond", "tm_task_busy_time_ratio", "Fraction of the time the task was busy, 0..1 (Flink's busyTimeMsPerSecond / 1000).", 1000],
  ["backPressuredTimeMsPerSecond", "tm_task_backpressured_time_ratio", "Fraction of the time the task was back-pressured, 0..1 (Flink's backPressuredTimeMsPerSecond / 1000).", 1000],
  ["idleTimeMsPerSecond", "tm_task_idle_time_ratio", "Fraction of the time the task was idle, 0..1 (Flink's idleTimeMsPerSecond / 1000).", 1000],
  ["outPoolUsage", "tm_task_out_pool_usage", "Fraction of the task's output buffer pools in use (0..1).", 1],
  ["inPoolUsage", "tm_task_in_pool_usage", "Fraction of the task's input buffers queued (0..1).", 1],
];

export function taskLabels(d: TaskDeployment): Record<string, string | number> {
  return { job_id: d.jobId, job_name: d.jobName, task_name: d.vertexName, subtask_index: d.subtaskIndex, task_attempt_num: d.attempt };
}

export function taskFamilies(tasks: TaskView[]): MetricFamily[] {
  const out: MetricFamily[] = [];
  for (const [key, name, help] of COUNTERS) {
    out.push(counter(name, help, tasks.map((t) => ({ labels: taskLabels(t.deployment), value: t.metrics[key] }))));
  }
  for (const [key, name, help, divisor] of GAUGES) {
    out.push(gauge(name, help, tasks.map((t) => ({ labels: taskLabels(t.deployment), value: t.metrics[key] / divisor }))));
  }
  // Event-time tasks: watermarks and late records, for the tasks that report them.
  const eventTime = tasks.filter((t) => t.metrics.watermarksIgnored !== undefined);
  if (eventTime.length > 0) {
    out.push(counter("tm_task_watermarks_ignored_total", "Watermarks that went backwards on an input channel and were ignored.", eventTime.map((t) => ({ labels: taskLabels(t.deployment), value: t.metrics.watermarksIgnored ?? 0 }))));
    out.push(counter("tm_task_late_records_dropped_total", "Records that came after their window's allowed lateness.", eventTime.map((t) => ({ labels: taskLabels(t.deployment), value: t.metrics.lateRecordsDropped ?? 0 }))));
    const withWm = eventTime.filter((t) => typeof t.metrics.currentInputWatermark === "number");
    out.push(gauge("tm_task_current_input_watermark", "The task's input watermark (ms since the epoch), the minimum over its active input channels.", withWm.map((t) => ({ labels: taskLabels(t.deployment), value: t.metrics.currentInputWatermark as number }))));
  }
  const debloated = tasks.filter((t) => t.metrics.debloatedBufferSize !== undefined);
  if (debloated.length > 0) {
    out.push(gauge("tm_task_debloated_buffer_size_bytes", "Buffer debloating (FLIP-183): the buffer size the task's input gate announces to its producers.", debloated.map((t) => ({ labels: taskLabels(t.deployment), value: t.metrics.debloatedBufferSize! }))));
  }
  const withBuffers = tasks.filter((t) => t.buffers !== undefined);
  out.push(gauge("tm_task_network_buffers", "Network buffers the task holds now (its minimum plus its share of the optional ones).", withBuffers.map((t) => ({ labels: taskLabels(t.deployment), value: t.buffers!.held }))));
  out.push(gauge("tm_task_network_buffers_configured", "Network buffers the task's channels are configured for; the task is below by the difference to tm_task_network_buffers.", withBuffers.map((t) => ({ labels: taskLabels(t.deployment), value: t.buffers!.configured }))));
  out.push(gauge("tm_task_network_buffers_required", "Network buffers the task needs at least to make progress.", withBuffers.map((t) => ({ labels: taskLabels(t.deployment), value: t.buffers!.required }))));
  out.push(...stateFamilies(tasks));
  // Latency markers (metrics.latency.interval): a summary per chained operator and source subtask, in seconds.
  const latency = tasks.flatMap((t) =>
    (t.metrics.latency ?? []).map((l) => ({
      labels: { ...taskLabels(t.deployment), operator_name: l.operator, source_vertex_id: l.sourceVertexId, source_subtask_index: l.sourceSubtask },
      quantiles: [[0.5, l.p50Ms / 1000], [0.95, l.p95Ms / 1000], [0.99, l.p99Ms / 1000], [1, l.maxMs / 1000]] as [number, number][],
      sum: l.sumMs / 1000,
      count: l.count,
    })),
  );
  out.push(summary("tm_task_latency_seconds", "Latency markers (metrics.latency.interval): how long markers took from a source subtask to this operator, over the last 128 markers (quantile 1 is their maximum).", latency));
  out.push(gauge("tm_task_running", "1 when the task is RUNNING, else 0 (deploying or ending).", tasks.map((t) => ({ labels: taskLabels(t.deployment), value: t.state === "RUNNING" ? 1 : 0 }))));
  return out;
}

/** Keyed state (issue 16, item 5): tasks with a keyed backend only, labelled with the backend. */
function stateFamilies(tasks: TaskView[]): MetricFamily[] {
  const withState = tasks.filter((t) => t.metrics.state !== undefined);
  const labels = (t: TaskView, extra: Record<string, string> = {}) => ({ ...taskLabels(t.deployment), backend: t.metrics.state!.backend, ...extra });
  const each = (f: (s: NonNullable<TaskMetrics["state"]>) => number | null | undefined, extra: Record<string, string> = {}) =>
    withState.flatMap((t) => {
      const v = f(t.metrics.state!);
      return typeof v === "number" ? [{ labels: labels(t, extra), value: v }] : [];
    });
  return [
    gauge("tm_task_state_size_bytes", "Size of the task's keyed state: SQLite, the bytes of its database's used pages; heap, the bytes of its last snapshot.", each((s) => s.sizeBytes)),
    gauge("tm_task_state_entries", "Keys in the task's heap backend (over all states; a map state's key counts once).", each((s) => s.entries)),
    counter("tm_task_state_cache_hits_total", "Lookups in the SQLite backend's object cache that found the entry.", each((s) => s.cacheHits)),
    counter("tm_task_state_cache_misses_total", "Lookups in the SQLite backend's object cache that went to SQLite.", each((s) => s.cacheMisses)),
    gauge("tm_task_state_cache_hit_ratio", "Hit ratio of the SQLite backend's object cache over the last report interval (0..1).", each((s) => s.cacheHitRatio)),
    counter("tm_task_state_checkpointed_bytes_total", "Bytes the task's keyed snapshots wrote themselves: kind=full for full snapshots, kind=incremental for change sets.", [
      ...each((s) => s.checkpointedBytesFull, { kind: "full" }),
      ...each((s) => s.checkpointedBytesIncremental, { kind: "incremental" }),
    ]),
    counter("tm_task_state_snapshots_total", "Keyed snapshots the task wrote: kind=full or kind=incremental (change sets).", [
      ...each((s) => s.snapshotsFull, { kind: "full" }),
      ...each((s) => s.snapshotsIncremental, { kind: "incremental" }),
    ]),
    counter("tm_task_state_restores_total", "Keyed backends the task restored: source=local from its TaskManager's local copy (state.backend.local-recovery), source=checkpoint from checkpoint storage.", [
      ...each((s) => s.restoresLocal, { source: "local" }),
      ...each((s) => s.restoresRemote, { source: "checkpoint" }),
    ]),
  ];
}
