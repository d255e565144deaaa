// Entry point of a task's Worker (an extra entrypoint of the compiled binary: see scripts/build).
import { StreamTask, errorInfo, taskDisplayName } from "./stream-task.ts";
import type { FromWorker, ToWorker } from "./worker-protocol.ts";

declare const self: Worker;

const post = (msg: FromWorker) => self.postMessage(msg);
let task: StreamTask | null = null;
let name = "task";

self.onmessage = (event: MessageEvent<ToWorker>) => handle(event.data);

function handle(msg: ToWorker): void {
  try {
    if (msg.type === "ping") {
      post({ type: "pong", heapBytes: heapBytes() });
    } else if (msg.type === "init") {
      name = taskDisplayName(msg.deployment);
      watchHeap(msg.memoryLimitBytes ?? 0);
      task = new StreamTask(msg.deployment, msg.network, msg.state, post, msg.autoWatermarkIntervalMs);
      if (msg.counters) task.shareCounters(msg.counters);
      void start(task, msg.artifactPath);
    } else {
      task?.onMessage(msg);
    }
  } catch (err) {
    post({ type: "failed", error: errorInfo(err, name) });
  }
}

async function start(t: StreamTask, artifactPath: string): Promise<void> {
  try {
    await t.init(artifactPath);
    const metrics = await t.run();
    post({ type: "finished", metrics });
  } catch (err) {
    t.publishCounters(); // the records up to the failure count (the main thread reads them on "failed")
    post({ type: "failed", error: errorInfo(err, name) });
  }
}

// ---- taskmanager.task.memory-limit ----
// Bun's Workers ignore resourceLimits, but each Worker is a JavaScriptCore VM of its own, and bun:jsc's heapSize()
// called here is this Worker's heap alone. A timer checks it; timers run whenever the task loop yields (after
// every batch of records), so a task that keeps allocating record by record is failed within a check or two.
// (A single record that allocates without end never yields: taskmanager.memory.process-limit is for that.)
const HEAP_CHECK_MS = 100;
let readHeap: (() => number) | null = null;
let heapTimer: ReturnType<typeof setInterval> | null = null;

function heapBytes(): number {
  return readHeap ? readHeap() : 0;
}

/** limit 0: only read the heap (for "pong"). */
function watchHeap(limit: number): void {
  if (typeof Bun === "undefined") return; // Deno: not enforced (see docs/configuration.md)
  void import("bun:jsc").then((jsc) => {
    readHeap = () => jsc.heapSize();
    if (limit > 0) heapTimer = setInterval(() => {
      if (jsc.heapSize() <= limit) return;
      // heapSize() may still count garbage: only the heap that survives a full collection counts.
      Bun.gc(true);
      const heap = jsc.heapSize();
      if (heap <= limit) return;
      clearInterval(heapTimer!);
      const mib = (n: number) => Math.round(n / 1048576);
      post({ type: "failed", error: { message: `task exceeded its memory limit of ${mib(limit)} MiB (heap ${mib(heap)} MiB); see taskmanager.task.memory-limit`, task: name } });
    }, HEAP_CHECK_MS);
  });
}
