// A task on the TaskManager's main thread: owns the Worker that runs it and reports its state transitions.
import * as fs from "node:fs";
import * as path from "node:path";
import type { ErrorInfo, TaskDeployment, TaskMetrics, TaskSnapshot, TaskState } from "../rpc/messages.ts";
import { TERMINAL_TASK_STATES, emptyMetrics } from "../rpc/messages.ts";
import type { ShuffleEnvironment, TaskEndpoint } from "../network/shuffle-environment.ts";
import { taskDisplayName } from "../runtime/stream-task.ts";
import { workerOptions } from "../runtime-env/index.ts";
import type { FromWorker, ToWorker } from "../runtime/worker-protocol.ts";

export interface TaskStateOptions {
  defaultBackend: "heap" | "sqlite";
  /** Each task keeps its state files in <baseDir>/<job>/<vertex>-<subtask>. */
  baseDir: string;
  cacheBytes: number;
  /** state.backend.incremental. */
  incremental?: boolean;
  /** state.backend.local-recovery: local copies under <baseDir>/<job>/local/<vertex>-<subtask>. */
  localRecovery?: boolean;
  /** pipeline.auto-watermark-interval: the periodic watermark interval of jobs that do not set their own. */
  autoWatermarkIntervalMs?: number;
  /** taskmanager.task.memory-limit: bytes of heap the task's Worker may hold (0 = no limit); checked in the Worker. */
  memoryLimitBytes?: number;
  /** taskmanager.memory.process-limit: process RSS above which a Worker that does not answer pings is terminated. */
  processLimitBytes?: number;
}

/** Where local recovery keeps a job's copies (per vertex subtask below it, or the whole job's without `subtask`). */
export function localRecoveryDir(baseDir: string, jobId: string, subtask?: string): string {
  const dir = path.join(baseDir, jobId, "local");
  return subtask === undefined ? dir : path.join(dir, subtask);
}

/** The Worker is pinged this often when taskmanager.memory.process-limit is set ... */
const PING_INTERVAL_MS = 250;
/** ... and terminated when it has not answered for this long while the process's RSS is over the limit. */
export const UNRESPONSIVE_MS = 2000;

export type TaskStateListener = (task: Task, state: TaskState, error?: ErrorInfo) => void;

/** Where a task's checkpoint acknowledgements and declines go (the TaskExecutor, to the JobManager). */
export interface CheckpointResponder {
  acknowledge(task: Task, checkpointId: number, snapshot: TaskSnapshot): void;
  decline(task: Task, checkpointId: number, reason: string): void;
  /** Resolves when the JobManager confirms that this task's attempt may commit its final transaction; rejects otherwise. */
  approveFinalCommit(task: Task): Promise<void>;
}

export class Task implements TaskEndpoint {
  state: TaskState = "DEPLOYING";
  metrics: TaskMetrics = emptyMetrics();
  private worker: Worker | null = null;
  private registered = false;
  /** Records and bytes in and out, kept current by the Worker after every batch (see ToWorker "init"). */
  private readonly counters = new Float64Array(new SharedArrayBuffer(32));
  readonly name: string;

  private readonly stateDir: string;

  constructor(
    readonly deployment: TaskDeployment,
    private readonly shuffle: ShuffleEnvironment,
    private readonly stateOptions: TaskStateOptions,
    private readonly onState: TaskStateListener,
    private readonly checkpoints: CheckpointResponder,
  ) {
    // Per attempt: a restarted task on this TaskManager must not share files with the one it replaces.
    this.stateDir = path.join(stateOptions.baseDir, deployment.jobId, `${deployment.vertexId}-${deployment.subtaskIndex}-a${deployment.attempt}`);
    this.name = taskDisplayName(deployment);
  }

  /** Local recovery: this vertex subtask's local copies, kept across attempts (removed when the job is released). */
  get localRecoveryDir(): string {
    return localRecoveryDir(this.stateOptions.baseDir, this.deployment.jobId, `${this.deployment.vertexId}-${this.deployment.subtaskIndex}`);
  }

  get executionId(): string {
    return this.deployment.executionId;
  }

  /** Starts the task's Worker from `workerUrl` (the TaskManager's bundle of the entry, worker-url.ts). */
  start(artifactPath: string, workerUrl: string): void {
    // Under Bun the Worker gets its own process.env (Deno has no such option; README, "Trust model").
    const worker = new Worker(workerUrl, workerOptions(taskEnvironment()));
    this.worker = worker;
    worker.onmessage = (e: MessageEvent<FromWorker>) => this.onWorkerMessage(e.data);
    // Without these handlers a Worker that cannot load would vanish silently.
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault?.();
      this.finish("FAILED", { message: `task worker error: ${e.message}`, task: this.name });
    };
    worker.addEventListener("close", () => {
      if (!TERMINAL_TASK_STATES.has(this.state)) this.finish("FAILED", { message: "task worker exited unexpectedly", task: this.name });
    });
    // init goes first, so the Worker has its task before the network sends it ports and buffers.
    let network;
    try {
      network = this.shuffle.reserve(this);
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    this.registered = true;
    const state = {
      backend: this.deployment.stateBackend ?? this.stateOptions.defaultBackend,
      dir: this.stateDir,
      cacheBytes: this.stateOptions.cacheBytes,
      incremental: this.stateOptions.incremental ?? false,
      ...(this.stateOptions.localRecovery ? { localRecoveryDir: this.localRecoveryDir } : {}),
    };
    this.post({ type: "init", deployment: this.deployment, artifactPath, network, state, autoWatermarkIntervalMs: this.stateOptions.autoWatermarkIntervalMs, memoryLimitBytes: this.stateOptions.memoryLimitBytes ?? 0, counters: this.counters.buffer as SharedArrayBuffer });
    if (this.stateOptions.processLimitBytes) this.startWatchdog(this.stateOptions.processLimitBytes);
    this.shuffle.wire(this);
  }

  /**
   * A Worker that allocates without end inside one record never yields, so its own heap check never runs. The main
   * thread pings it; one that has not answered for UNRESPONSIVE_MS while the process's RSS is over the limit is
   * terminated (which frees its heap) and the task fails. A Worker that answers is left alone whatever the RSS.
   */
  private startWatchdog(limit: number): void {
    let lastPong = Date.now();
    this.onPong = () => (lastPong = Date.now());
    this.watchdog = setInterval(() => {
      if (TERMINAL_TASK_STATES.has(this.state)) return clearInterval(this.watchdog!);
      const silent = Date.now() - lastPong;
      if (silent >= UNRESPONSIVE_MS) {
        const rss = process.memoryUsage.rss();
        if (rss > limit) {
          const mib = (n: number) => Math.round(n / 1048576);
          // No stack: it would show where the TaskManager noticed (its own code), not anything of the job's.
          const message = `task terminated: it has not answered for ${silent} ms while the TaskManager's RSS (${mib(rss)} MiB) exceeds taskmanager.memory.process-limit (${mib(limit)} MiB)`;
          this.finish("FAILED", { message, task: this.name });
          return;
        }
      }
      this.post({ type: "ping" });
    }, PING_INTERVAL_MS);
    (this.watchdog as { unref?: () => void }).unref?.();
  }

  private watchdog: ReturnType<typeof setInterval> | null = null;
  private onPong: () => void = () => {};

  /** Control messages to the Worker (channel data goes through the channels' rings, never by postMessage). */
  post(msg: ToWorker): void {
    if (!this.worker || TERMINAL_TASK_STATES.has(this.state)) return;
    this.worker.postMessage(msg);
  }

  fail(err: Error): void {
    this.finish("FAILED", { message: err.message, stack: err.stack, task: this.name });
  }

  /** Terminates the Worker, also one stuck in an endless loop. */
  cancel(): void {
    this.finish("CANCELED");
  }

  private onWorkerMessage(msg: FromWorker): void {
    if (TERMINAL_TASK_STATES.has(this.state)) return;
    switch (msg.type) {
      case "running":
        this.state = "RUNNING";
        this.onState(this, "RUNNING");
        break;
      case "metrics":
        this.metrics = msg.metrics;
        break;
      case "pong":
        this.onPong();
        break;
      case "checkpointAck":
        this.checkpoints.acknowledge(this, msg.checkpointId, msg.snapshot);
        break;
      case "checkpointDecline":
        this.checkpoints.decline(this, msg.checkpointId, msg.reason);
        break;
      case "finalCommitRequest":
        this.checkpoints.approveFinalCommit(this).then(
          () => this.post({ type: "finalCommitReply", approved: true }),
          (err: Error) => this.post({ type: "finalCommitReply", approved: false, reason: err.message }),
        );
        break;
      case "finished":
        this.metrics = msg.metrics;
        this.finish("FINISHED");
        break;
      case "failed":
        this.finish("FAILED", msg.error);
        break;
    }
  }

  private finish(state: TaskState, error?: ErrorInfo): void {
    if (TERMINAL_TASK_STATES.has(this.state)) return;
    this.state = state;
    // A failed or canceled task's counts are those up to its end, not those of its last report (up to a second old).
    if (state !== "FINISHED") {
      const [recordsIn, recordsOut, bytesIn, bytesOut] = this.counters;
      const m = this.metrics;
      this.metrics = { ...m, recordsIn: Math.max(m.recordsIn, recordsIn!), recordsOut: Math.max(m.recordsOut, recordsOut!), bytesIn: Math.max(m.bytesIn, bytesIn!), bytesOut: Math.max(m.bytesOut, bytesOut!) };
    }
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.registered) this.shuffle.unregisterTask(this, state === "FINISHED");
    this.worker?.terminate();
    // A task's local state lives as long as the task (checkpoints keep what must survive it).
    fs.rm(this.stateDir, { recursive: true, force: true }, () => {});
    // A finished subtask is never restored again: its local copies go too.
    if (state === "FINISHED" && this.stateOptions.localRecovery) fs.rm(this.localRecoveryDir, { recursive: true, force: true }, () => {});
    this.onState(this, state, error);
  }
}

/**
 * The environment of a task's Worker: the TaskManager's without its TM_* variables, so job code does not read the
 * TaskManager's configuration (file paths, a secret that was not removed yet) from process.env.
 */
export function taskEnvironment(env: Record<string, string | undefined> = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !k.startsWith("TM_")) out[k] = v;
  return out;
}
