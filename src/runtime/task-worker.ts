// Entry point of a task's Worker (an extra entrypoint of the compiled binary: see scripts/build).
import { readFileSync } from "node:fs";
import { forceGc, spawnWithWorkerEnvironment, startWorkerProfile, workerHeapReader } from "../runtime-env/index.ts";
import { StreamTask, errorInfo, taskDisplayName } from "./stream-task.ts";
import type { FromWorker, ToWorker } from "./worker-protocol.ts";

declare const self: Worker;

const post = (msg: FromWorker) => self.postMessage(msg);
let task: StreamTask | null = null;
let name = "task";

self.onmessage = (event: MessageEvent<ToWorker>) => handle(event.data);
guardProcess();
spawnWithWorkerEnvironment(); // Bun: a job's child processes get this Worker's environment, not the TaskManager's

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
  const profileDir = process.env.TASK_PROFILE_DIR;
  const writeProfile = profileDir ? await startWorkerProfile(profileDir, name) : null;
  try {
    await t.init(artifactPath);
    const metrics = await t.run();
    writeProfile?.();
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
  void workerHeapReader().then((heapSize) => {
    if (heapSize === null) return; // Deno: not enforced (see docs/configuration.md)
    readHeap = heapSize;
    if (limit > 0) heapTimer = setInterval(() => {
      if (heapSize() <= limit) return;
      // heapSize() may still count garbage: only the heap that survives a full collection counts.
      forceGc?.();
      const heap = heapSize();
      if (heap <= limit) return;
      clearInterval(heapTimer!);
      const mib = (n: number) => Math.round(n / 1048576);
      post({ type: "failed", error: { message: `task exceeded its memory limit of ${mib(limit)} MiB (heap ${mib(heap)} MiB); see taskmanager.task.memory-limit`, task: name } });
    }, HEAP_CHECK_MS);
  });
}

// ---- calls that would end the TaskManager ----
// Job code runs in this Worker, but the process is the TaskManager's: process.kill of its own pid (or its process
// group) and process.abort would end every task of every job on it, and process.exit would end this Worker with no
// more than "task worker exited unexpectedly". Each of them fails this task alone, naming the call. This guards
// against accidents, not against hostile code: job code has the TaskManager's rights (README, "Trust model").
function guardProcess(): void {
  const proc = process as unknown as Record<string, (...args: unknown[]) => unknown>;
  const realExit = proc.exit!.bind(process);
  const realKill = proc.kill!.bind(process);
  const realInternalKill = typeof proc._kill === "function" ? proc._kill.bind(process) : null;
  const ownGroup = processGroup();
  const fail = (call: string): never => {
    const message = `${call} called by the job's code: a task may not end its TaskManager's process, so the task fails instead`;
    post({ type: "failed", error: { message, stack: new Error(message).stack, task: name } });
    realExit(1); // ends this Worker only; the message above is delivered before its close
    throw new Error(message); // not reached
  };
  // Signal 0 only checks that the process exists.
  const hitsOwnProcess = (pid: unknown, signal: unknown) =>
    signal !== 0 && (pid === process.pid || pid === 0 || pid === -1 || pid === -process.pid || (ownGroup !== null && pid === -ownGroup));
  const show = (v: unknown) => (typeof v === "string" ? JSON.stringify(v) : String(v));
  const guards: Record<string, (...args: unknown[]) => unknown> = {
    exit: (code?: unknown) => fail(`process.exit(${code === undefined ? "" : show(code)})`),
    reallyExit: (code?: unknown) => fail(`process.reallyExit(${code === undefined ? "" : show(code)})`),
    abort: () => fail("process.abort()"),
    kill: (pid: unknown, signal: unknown = "SIGTERM") =>
      hitsOwnProcess(Number(pid), signal) ? fail(`process.kill(${show(pid)}, ${show(signal)})`) : realKill(pid, signal),
  };
  if (realInternalKill) {
    guards._kill = (pid: unknown, signal: unknown) =>
      hitsOwnProcess(Number(pid), signal) ? fail(`process.kill(${show(pid)}, ${show(signal)})`) : realInternalKill(pid, signal);
  }
  for (const [key, value] of Object.entries(guards)) {
    try {
      Object.defineProperty(process, key, { value, writable: false, configurable: false, enumerable: true });
    } catch {
      // a runtime whose process object does not let this be replaced: that call stays as it is
    }
  }
}

/** The process group of the TaskManager (Linux: field 5 of /proc/self/stat), or null where that cannot be read. */
function processGroup(): number | null {
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
    return Number.isInteger(pgrp) && pgrp > 0 ? pgrp : null;
  } catch {
    return null;
  }
}
