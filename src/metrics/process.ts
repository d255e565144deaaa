// Process metrics, the JVM metrics of a Flink process in this runtime's terms: RSS, heap, CPU and event-loop lag.
import { gauge, counter, type Collector } from "./exposition.ts";
import { heapUsage, runtimeVersion } from "../runtime-env/index.ts";

const START_SECONDS = Math.floor(Date.now() / 1000 - process.uptime());

/** Measures how late a timer fires: the event loop's lag. One per process, started on first use. */
class EventLoopLag {
  private timer: ReturnType<typeof setInterval> | null = null;
  private users = 0;
  /** Latest lag and the maximum since the last scrape, in seconds. */
  last = 0;
  max = 0;

  acquire(intervalMs = 200): void {
    if (this.users++ > 0) return;
    let expected = performance.now() + intervalMs;
    this.timer = setInterval(() => {
      const now = performance.now();
      this.last = Math.max(0, now - expected) / 1000;
      this.max = Math.max(this.max, this.last);
      expected = now + intervalMs;
    }, intervalMs);
    (this.timer as { unref?: () => void }).unref?.();
  }

  release(): void {
    if (--this.users > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
  }
}

export const eventLoopLag = new EventLoopLag();

/** The process collector; call eventLoopLag.acquire() while it is in use. */
export function processCollector(role: string): Collector {
  return () => {
    const rss = process.memoryUsage.rss();
    const heap = heapUsage();
    const cpu = process.cpuUsage();
    const maxLag = eventLoopLag.max;
    eventLoopLag.max = eventLoopLag.last;
    return [
      gauge("process_resident_memory_bytes", "Resident set size of the process in bytes.", rss),
      gauge("tm_process_heap_used_bytes", "JavaScript heap in use in bytes (main thread).", heap.used),
      gauge("tm_process_heap_total_bytes", "JavaScript heap allocated in bytes (main thread), at least the heap in use.", heap.total),
      counter("process_cpu_seconds_total", "User and system CPU time of the process in seconds.", (cpu.user + cpu.system) / 1e6),
      gauge("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", START_SECONDS),
      gauge("tm_process_event_loop_lag_seconds", "How late the latest event-loop timer fired, in seconds.", eventLoopLag.last),
      gauge("tm_process_event_loop_lag_max_seconds", "Largest event-loop lag since the previous scrape, in seconds.", maxLag),
      gauge("tm_process_info", "Constant 1, labelled with the process's role and runtime.", [
        { labels: { role, runtime: runtimeVersion(), pid: process.pid }, value: 1 },
      ]),
    ];
  };
}
