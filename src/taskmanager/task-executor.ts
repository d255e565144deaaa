// The TaskManager: registers with the JobManager and offers its slots, heartbeats both ways, runs the tasks
// deployed into its slots, and re-registers with backoff when its JobManager goes away.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import type { Config } from "../config/index.ts";
import { connectRpc, type RpcConnection } from "../rpc/rpc-connection.ts";
import { parseRequest } from "../rpc/schemas.ts";
import type { FramedOptions } from "../rpc/framed-connection.ts";
import { securityFromConfig } from "../rpc/security.ts";
import {
  PROTOCOL_VERSION,
  type ErrorInfo,
  type NetworkStats,
  type ProcessStats,
  type RegisterTaskManagerReply,
  type RequestType,
  type SlotStatus,
  type TaskDeployment,
  type TaskMetrics,
  type TaskState,
} from "../rpc/messages.ts";
import { ShuffleEnvironment } from "../network/shuffle-environment.ts";
import { networkSizing, type NetworkSizing } from "../network/buffer-budget.ts";
import { createLogger, recentLogLines } from "../util/log.ts";
import { maskedConfig } from "../config/mask.ts";
import { ArtifactCache } from "./artifact-cache.ts";
import { currentLeaderId, findJobManager } from "../ha/index.ts";
import { localRecoveryDir, Task, type TaskStateOptions } from "./task.ts";
import { bundledTaskWorker, taskWorkerUrl } from "../runtime/worker-url.ts";
import { startTaskManagerEndpoint, type TaskManagerView } from "../metrics/taskmanager-endpoint.ts";
import type { RunningHttpServer } from "../metrics/http-server.ts";
import type { TaskView } from "../metrics/task-metrics.ts";

const log = createLogger("taskmanager");

/** No registration at a JobManager within taskmanager.registration.timeout. */
export class RegistrationTimeoutError extends Error {
  override name = "RegistrationTimeoutError";
}

export class TaskExecutor implements TaskManagerView {
  readonly resourceId: string;
  readonly shuffle: ShuffleEnvironment;
  private readonly artifacts: ArtifactCache;
  private readonly stateOptions: TaskStateOptions;
  private readonly tasks = new Map<string, Task>();
  /** slot index -> job id allocated to it (null = free). */
  private readonly slots: (string | null)[];
  private rpc: RpcConnection | null = null;
  private registration: RegisterTaskManagerReply | null = null;
  /** The highest JobManager epoch followed (HA fencing): requests of an older epoch are refused. */
  epoch = 0;
  /** While the JobManager is lost with HA on: when the grace period ends and the tasks are canceled. */
  private graceTimer: ReturnType<typeof setTimeout> | null = null;
  private graceDeadline = 0;
  private lastHeardFromJobManager = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private stopped = false;
  private registeredWaiters: (() => void)[] = [];
  private ownedTmpDir: string | null = null;
  /** The TaskManager's directory for artifacts and the bundled task Worker entry (taskmanager.tmp.dir, or its own). */
  private readonly tmpDir: string;
  dataPort = 0;
  /** /metrics, /healthz, /readyz (src/metrics/) on taskmanager.host:metrics.port. */
  metricsPort = 0;
  private metricsServer: RunningHttpServer | null = null;
  /** Set by drain() (SIGTERM): no new tasks, no reconnection, /readyz answers 503. */
  draining = false;
  private resolveFatal: (err: Error) => void = () => {};
  /** Resolves when this TaskManager cannot go on (taskmanager.registration.timeout passed); the process should exit. */
  readonly fatal: Promise<Error> = new Promise((resolve) => (this.resolveFatal = resolve));

  constructor(private readonly config: Config) {
    this.resourceId = config["taskmanager.resource-id"] || `tm-${os.hostname()}-${randomBytes(3).toString("hex")}`;
    // Throws on contradictory memory keys (min > max), like any other configuration error, before anything starts.
    this.networkSizing = networkSizing(config, os.totalmem());
    this.shuffle = new ShuffleEnvironment(this.resourceId, {
      segmentSize: config["taskmanager.memory.segment-size"],
      totalBuffers: this.networkSizing.totalBuffers,
      slots: config["taskmanager.numberOfTaskSlots"],
      raiseHint: this.networkSizing.raiseHint,
      buffersPerChannel: config["taskmanager.network.memory.buffers-per-channel"],
      floatingBuffersPerGate: config["taskmanager.network.memory.floating-buffers-per-gate"],
      maxOverdraftBuffers: config["taskmanager.network.memory.max-overdraft-buffers-per-gate"],
      maxBuffersPerChannel: config["taskmanager.network.memory.max-buffers-per-channel"],
      ...(config["taskmanager.network.memory.buffer-debloat.enabled"]
        ? {
            debloat: {
              targetMs: config["taskmanager.network.memory.buffer-debloat.target"],
              periodMs: config["taskmanager.network.memory.buffer-debloat.period"],
              minBufferSize: config["taskmanager.memory.min-segment-size"],
            },
          }
        : {}),
    });
    // A generated directory is this process's alone: removed on stop. A configured one is kept as a cache.
    const tmp = config["taskmanager.tmp.dir"] || fs.mkdtempSync(path.join(os.tmpdir(), "tm-taskmanager-"));
    if (!config["taskmanager.tmp.dir"]) this.ownedTmpDir = tmp;
    this.tmpDir = tmp;
    this.artifacts = new ArtifactCache(path.join(tmp, "artifacts"));
    this.stateOptions = {
      autoWatermarkIntervalMs: config["pipeline.auto-watermark-interval"],
      defaultBackend: config["state.backend"],
      baseDir: config["taskmanager.state.dir"] || path.join(tmp, "state"),
      cacheBytes: config["state.backend.sqlite.cache-size"],
      incremental: config["state.backend.incremental"],
      localRecovery: config["state.backend.local-recovery"],
      memoryLimitBytes: config["taskmanager.task.memory-limit"],
      processLimitBytes: config["taskmanager.memory.process-limit"],
    };
    this.slots = new Array(config["taskmanager.numberOfTaskSlots"]).fill(null);
    // Secret and TLS for the RPC connection and the data port (throws ConfigError on unreadable files).
    const security = securityFromConfig(config);
    this.rpcOptions = { security, maxFrameBytes: config["rpc.max-frame-size"], handshakeTimeoutMs: config["rpc.handshake-timeout"] };
    this.shuffle.transport.configure({
      security,
      handshakeTimeoutMs: config["rpc.handshake-timeout"],
      maxConnectionsPerAddress: config["rpc.max-connections-per-address"],
      keepaliveIntervalMs: config["taskmanager.network.tcp-connection.keepalive.interval"],
      keepaliveTimeoutMs: config["taskmanager.network.tcp-connection.keepalive.timeout"],
      backoffInitialMs: config["taskmanager.network.request-backoff.initial"],
      backoffMaxMs: config["taskmanager.network.request-backoff.max"],
    });
  }

  private readonly rpcOptions: FramedOptions;
  private readonly networkSizing: NetworkSizing;

  get registered(): boolean {
    return this.registration !== null;
  }

  /** Opens the data port and starts (re)connecting to the JobManager in the background. */
  async start(): Promise<void> {
    // Tasks wait for it (once, about 0.1 s): each Worker then starts 25 ms sooner and with 60 ms less CPU. Profiles
    // (TASK_PROFILE_DIR) keep the sources, whose file names they report.
    if (this.config["taskmanager.task.bundle-runtime"] && !process.env.TASK_PROFILE_DIR) {
      this.workerReady = bundledTaskWorker(path.join(this.tmpDir, "runtime")).then(
        (url) => void (this.workerUrl = url ?? this.workerUrl),
        (err: Error) => log.warn("cannot bundle the task Worker's entry; tasks load its source files", { error: err.message }),
      );
    }
    this.dataPort = await this.shuffle.transport.start(this.config["taskmanager.host"], this.config["taskmanager.data.port"]);
    log.info("TaskManager started", { id: this.resourceId, dataPort: this.dataPort, slots: this.slots.length });
    log.info("network memory", { buffers: this.networkSizing.totalBuffers, segmentSize: this.config["taskmanager.memory.segment-size"], from: this.networkSizing.source });
    try {
      const onError = (err: Error) => log.error("metrics request failed", { error: err.message });
      // HTTPS with security.ssl.enabled (the certificate and key of the RPC and data ports).
      this.metricsServer = await startTaskManagerEndpoint(this, this.config["taskmanager.host"], this.config["metrics.port"], onError, this.rpcOptions.security?.tls ?? null);
    } catch (err) {
      await this.shuffle.transport.stop();
      throw err;
    }
    this.metricsPort = this.metricsServer.port;
    log.info("metrics endpoint started", { metrics: `${this.config["taskmanager.host"]}:${this.metricsPort}` });
    void this.connectLoop();
  }

  /** Resolves once registered at a JobManager (for tests and `local`). */
  waitRegistered(): Promise<void> {
    if (this.registered) return Promise.resolve();
    return new Promise((resolve) => this.registeredWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.endGrace();
    for (const t of this.timers) clearInterval(t);
    for (const task of this.tasks.values()) task.cancel();
    const rpc = this.rpc;
    this.rpc = null;
    if (rpc) {
      await rpc.request("disconnectTaskManager", { resourceId: this.resourceId, reason: "TaskManager is shutting down" }, 1000).catch(() => {});
      rpc.close();
    }
    await this.shuffle.transport.stop();
    await this.metricsServer?.stop();
    this.metricsServer = null;
    if (this.ownedTmpDir) fs.rmSync(this.ownedTmpDir, { recursive: true, force: true });
  }

  /**
   * SIGTERM: stop taking work, tell the JobManager (which fails over this TaskManager's tasks at once), cancel the
   * tasks and wait until they have ended, all within graceMs. Resolves true when everything ended in time. stop()
   * follows either way.
   */
  async drain(graceMs: number): Promise<boolean> {
    if (this.draining) return false;
    this.draining = true;
    const deadline = Date.now() + graceMs;
    log.info("shutting down: taking no new tasks, telling the JobManager, canceling tasks", { tasks: this.tasks.size, gracePeriodMs: graceMs });
    const rpc = this.rpc;
    this.rpc = null;
    this.registration = null;
    for (const t of this.timers) clearInterval(t);
    const told = rpc
      ? rpc
          .request("disconnectTaskManager", { resourceId: this.resourceId, reason: "TaskManager is shutting down (SIGTERM)" }, Math.max(1, graceMs))
          // The JobManager answers by removing this TaskManager, which closes the connection: that is a yes too.
          .then(
            () => true,
            // So is a JobManager that is shutting down itself: its notice may overtake the reply.
            (err: Error) => /closed by peer|connection closed$|is shutting down/.test(err.message) || (log.warn("could not tell the JobManager", { error: err.message }), false),
          )
          .finally(() => rpc.close())
      : Promise.resolve(true);
    for (const task of [...this.tasks.values()]) task.cancel();
    const tasksEnded = (async () => {
      while (this.tasks.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return this.tasks.size === 0;
    })();
    const inTime = new Promise<false>((r) => setTimeout(() => r(false), Math.max(0, deadline - Date.now())));
    const ok = await Promise.race([Promise.all([told, tasksEnded]).then(([a, b]) => a && b), inTime]);
    if (ok) log.info("drained: every task has ended and the JobManager knows", {});
    else if (Date.now() >= deadline) log.error("shutdown grace period ended before the drain completed", { gracePeriodMs: graceMs, tasksLeft: this.tasks.size });
    else log.error("the drain did not complete", { tasksLeft: this.tasks.size });
    return ok;
  }

  taskViews(): TaskView[] {
    return [...this.tasks.values()].map((t) => ({ deployment: t.deployment, state: t.state, metrics: t.metrics, buffers: this.shuffle.taskBuffers(t) }));
  }

  slotUsage(): { total: number; used: number } {
    return { total: this.slots.length, used: this.slots.filter((j) => j !== null).length };
  }

  networkBuffers(): { total: number; available: number; requiredInUse: number; optionalInUse: number } {
    const r = this.shuffle.report();
    return { total: r.total, available: r.free, requiredInUse: r.requiredInUse, optionalInUse: r.optionalInUse };
  }

  /** How the network buffers are split among the tasks (the JobManager's TaskManager page). */
  networkStats(): NetworkStats {
    const r = this.shuffle.report();
    return { sizing: this.networkSizing.source, segmentSize: r.segmentSize, requiredInUse: r.requiredInUse, optionalInUse: r.optionalInUse, tasks: r.tasks };
  }

  /**
   * Registers at the JobManager, retrying with backoff. As Flink's taskmanager.registration.timeout: a TaskManager
   * that is not registered for this long (at start, or after losing its JobManager) gives up; `fatal` resolves and
   * the CLI exits with its own code. The backoff is cut short so that one attempt starts at the deadline itself,
   * and only when that last attempt fails does it give up: a JobManager back by then is registered at.
   */
  private async connectLoop(): Promise<void> {
    // With etcd HA the JobManager is whichever leads now (looked up at every attempt); else the configured one.
    const etcd = this.config["high-availability.type"] === "etcd";
    let host = etcd ? "(the etcd leader)" : this.config["jobmanager.rpc.address"];
    let port = this.config["jobmanager.rpc.port"];
    const timeout = this.config["taskmanager.registration.timeout"];
    const deadline = timeout > 0 ? Date.now() + timeout : Infinity;
    let backoff = this.config["taskmanager.registration.initial-backoff"];
    let attempts = 0;
    while (!this.stopped && !this.draining) {
      const startedAt = Date.now();
      try {
        // Waiting a while for a leader (an election takes up to a lease) beats backing off past its arrival.
        if (etcd) ({ host, port } = await findJobManager(this.config, 2 * this.config["high-availability.etcd.lease-ttl"]));
        await this.connectAndRegister(host, port);
        return;
      } catch (err) {
        attempts++;
        if (this.stopped || this.draining) return;
        if (startedAt >= deadline) {
          const giveUp = new RegistrationTimeoutError(
            `could not register at the JobManager ${host}:${port} within taskmanager.registration.timeout (${timeout} ms); giving up`,
          );
          log.error(giveUp.message, { jobManager: `${host}:${port}`, timeoutMs: timeout, attempts, error: (err as Error).message });
          this.resolveFatal(giveUp);
          return;
        }
        if (attempts === 1) {
          // The first failure says plainly what is wrong and what happens next; later ones are quieter.
          log.warn(
            `cannot register at the JobManager ${host}:${port} (jobmanager.rpc.address/port): ${(err as Error).message}; ` +
              `retrying with backoff up to ${this.config["taskmanager.registration.max-backoff"]} ms` +
              (timeout > 0 ? `, exiting after taskmanager.registration.timeout (${timeout} ms) without registration` : ", without a time limit"),
            { attempt: attempts, error: (err as Error).message },
          );
        } else {
          const fn = attempts % 10 === 0 ? log.warn : log.debug;
          fn(`cannot register at the JobManager ${host}:${port}; retrying in ${backoff} ms`, { attempt: attempts, error: (err as Error).message });
        }
        await new Promise((r) => setTimeout(r, Math.max(0, Math.min(backoff, deadline - Date.now()))));
        backoff = Math.min(backoff * 2, this.config["taskmanager.registration.max-backoff"]);
      }
    }
  }

  private async connectAndRegister(host: string, port: number): Promise<void> {
    const rpc = await connectRpc(
      host,
      port,
      { version: PROTOCOL_VERSION, role: "taskmanager", id: this.resourceId },
      (type, payload, conn) => this.onRequest(type, payload, conn),
      this.rpcOptions,
    );
    try {
      const reply = await rpc.request("registerTaskManager", {
        resourceId: this.resourceId,
        dataHost: this.config["taskmanager.host"],
        dataPort: this.dataPort,
        slots: this.slots.length,
        resources: { cpuCores: os.cpus().length, memoryBytes: os.totalmem() },
        pid: process.pid,
        executions: [...this.tasks.keys()],
        executionSlots: Object.fromEntries([...this.tasks].map(([id, t]) => [id, t.deployment.slot])),
        epoch: this.epoch,
      });
      const epoch = typeof reply.epoch === "number" ? reply.epoch : 0;
      if (epoch < this.epoch) throw new Error(`the JobManager answered with epoch ${epoch}, older than epoch ${this.epoch} this TaskManager follows (a deposed leader)`);
      this.epoch = epoch;
      this.endGrace();
      this.cancelStale(reply.cancel, "at registration");
      // Every slot: those still running tasks (kept through a JobManager failover) are claimed by the job that
      // adopts them; the JobManager frees them with the tasks it did not adopt.
      await rpc.request("offerSlots", { resourceId: this.resourceId, slots: this.slots.map((_, i) => i) });
      this.rpc = rpc;
      this.registration = reply;
      this.lastHeardFromJobManager = Date.now();
    } catch (err) {
      rpc.close();
      throw err;
    }
    log.info("registered at the JobManager", { jobManager: `${host}:${port}`, jobManagerId: this.registration.jobManagerId });
    rpc.onClose((err) => this.onJobManagerLost(rpc, err?.message ?? "connection closed"));
    const { interval, timeout } = this.heartbeatSettings(this.registration);
    let checkingLeader = false;
    const timer = setInterval(() => {
      if (Date.now() - this.lastHeardFromJobManager > timeout) {
        rpc.close(new Error(`no heartbeat from the JobManager for ${timeout} ms (its heartbeat.timeout)`));
        return;
      }
      // etcd HA: follow a new leader at once (the old one may be frozen or cut off, not yet timed out).
      if (this.config["high-availability.type"] === "etcd" && !checkingLeader) {
        checkingLeader = true;
        currentLeaderId(this.config)
          .then((id) => {
            if (id && id !== this.registration?.jobManagerId && this.rpc === rpc) rpc.close(new Error(`the leader changed to JobManager ${id}`));
          }, () => {})
          .finally(() => (checkingLeader = false));
      }
      const taskMetrics: Record<string, TaskMetrics> = {};
      for (const [id, task] of this.tasks) taskMetrics[id] = task.metrics;
      rpc.request("heartbeat", { from: this.resourceId, slotReport: this.slotReport(), taskMetrics, process: this.processStats() }, timeout).then(
        (reply) => {
          this.lastHeardFromJobManager = Date.now();
          this.cancelStale(reply?.cancel, "in a heartbeat reply");
        },
        () => {},
      );
    }, interval);
    this.timers.push(timer);
    // One heartbeat timer per JobManager connection: dropped with it, so reconnects do not pile them up.
    rpc.onClose(() => {
      clearInterval(timer);
      this.timers = this.timers.filter((t) => t !== timer);
    });
    for (const w of this.registeredWaiters.splice(0)) w();
  }

  private heartbeatWarned = false;

  /**
   * The JobManager's heartbeat settings govern both sides: a TaskManager with a longer time-out of its own would
   * go on running (and committing) for a job its JobManager has already moved elsewhere. A differing local config
   * is logged once.
   */
  private heartbeatSettings(reply: RegisterTaskManagerReply): { interval: number; timeout: number } {
    const ok = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;
    const interval = ok(reply.heartbeatIntervalMs) ? reply.heartbeatIntervalMs : this.config["heartbeat.interval"];
    const timeout = ok(reply.heartbeatTimeoutMs) ? reply.heartbeatTimeoutMs : this.config["heartbeat.timeout"];
    if (!this.heartbeatWarned && (interval !== this.config["heartbeat.interval"] || timeout !== this.config["heartbeat.timeout"])) {
      this.heartbeatWarned = true;
      log.warn("using the JobManager's heartbeat settings, not this TaskManager's heartbeat.interval/heartbeat.timeout", {
        jobManagerIntervalMs: interval,
        jobManagerTimeoutMs: timeout,
        localIntervalMs: this.config["heartbeat.interval"],
        localTimeoutMs: this.config["heartbeat.timeout"],
      });
    }
    return { interval, timeout };
  }

  /** Attempt fencing: cancels tasks the JobManager says are not current attempts (a restart replaced them). */
  private cancelStale(ids: unknown, where: string): void {
    if (!Array.isArray(ids)) return;
    for (const id of ids) {
      const task = typeof id === "string" ? this.tasks.get(id) : undefined;
      if (!task) continue;
      log.warn(`the JobManager says this task's attempt is not current (${where}); canceling it`, taskLogFields(task));
      task.cancel();
    }
  }

  private onJobManagerLost(rpc: RpcConnection, reason: string): void {
    if (this.rpc !== rpc) return;
    const grace = this.registration?.jobManagerLossGracePeriodMs ?? 0;
    this.rpc = null;
    this.registration = null;
    if (this.stopped || this.draining) return;
    if (grace > 0 && this.tasks.size > 0) {
      // HA: the tasks keep running while this TaskManager finds the next leader, which may adopt them.
      log.warn(`lost the JobManager; keeping ${this.tasks.size} task(s) running for up to ${grace} ms (taskmanager.jobmanager-loss.grace-period) while reconnecting`, { reason });
      this.graceDeadline = Date.now() + grace;
      this.graceTimer = setTimeout(() => {
        this.graceTimer = null;
        if (this.rpc) return;
        log.warn("no JobManager within the grace period; canceling the tasks", { gracePeriodMs: grace });
        this.cancelAll();
      }, grace);
    } else {
      log.warn("lost the JobManager; canceling its tasks and reconnecting", { reason });
      this.cancelAll();
    }
    void this.connectLoop();
  }

  /** Without a JobManager no task can report or be coordinated: cancel them and free the slots. */
  private cancelAll(): void {
    for (const task of this.tasks.values()) task.cancel();
    this.slots.fill(null);
  }

  private endGrace(): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
  }

  /** Heap, RSS and network buffers for the JobManager's TaskManager page (sent with every heartbeat). */
  private processStats(): ProcessStats {
    const mem = process.memoryUsage();
    const buffers = this.networkBuffers();
    return { heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, rss: mem.rss, networkBuffersTotal: buffers.total, networkBuffersAvailable: buffers.available, network: this.networkStats() };
  }

  private slotReport(): SlotStatus[] {
    return this.slots.map((jobId, slot) => ({ slot, jobId }));
  }

  private onRequest(type: RequestType, payload: unknown, conn: RpcConnection): unknown {
    // HA fencing: a JobManager of an older epoch than one this TaskManager follows was deposed; it acts on nothing.
    const epoch = (payload as { epoch?: unknown } | null)?.epoch;
    if (typeof epoch === "number") {
      if (epoch < this.epoch) throw new Error(`fenced: ${type} from a JobManager of epoch ${epoch}; this TaskManager follows epoch ${this.epoch}`);
      this.epoch = epoch;
    }
    this.lastHeardFromJobManager = Date.now();
    switch (type) {
      case "heartbeat":
        parseRequest(type, payload);
        return { slotReport: this.slotReport() };
      case "submitTask":
        return this.submitTask(parseRequest(type, payload), conn);
      case "cancelTask": {
        const p = parseRequest(type, payload);
        const task = this.tasks.get(p.executionId);
        if (!task) throw new Error(`no task ${p.executionId} on ${this.resourceId}`);
        task.cancel();
        return {};
      }
      case "releaseJob":
        this.releaseJob(parseRequest(type, payload).jobId);
        return {};
      case "triggerCheckpoint": {
        const p = parseRequest(type, payload);
        const task = this.taskFor(p.executionId, type);
        if (task.state !== "RUNNING") throw new Error(`task ${task.name} is ${task.state}, not RUNNING`);
        task.post({ type: "checkpoint", checkpointId: p.checkpointId, timestamp: p.timestamp, dir: p.dir, unaligned: p.unaligned === true });
        return {};
      }
      case "notifyCheckpointAborted": {
        const p = parseRequest(type, payload);
        this.taskFor(p.executionId, type).post({ type: "checkpointAborted", checkpointId: p.checkpointId });
        return {};
      }
      case "notifyCheckpointComplete": {
        const p = parseRequest(type, payload);
        this.taskFor(p.executionId, type).post({ type: "checkpointComplete", checkpointId: p.checkpointId });
        return {};
      }
      case "taskManagerInfo":
        parseRequest(type, payload);
        // For the REST API's TaskManager pages: secrets masked, the log bounded by the ring in util/log.ts.
        return { config: maskedConfig(this.config), logs: recentLogLines() };
      default:
        throw new Error(`a TaskManager does not serve ${type}`);
    }
  }

  /** `conn`: the JobManager connection the task came on (this.rpc is set only once offerSlots has returned, and the
   *  JobManager may deploy into the offered slots before that). */
  private async submitTask(d: TaskDeployment, conn: RpcConnection): Promise<object> {
    if (this.draining) throw new Error(`TaskManager ${this.resourceId} is shutting down and takes no new tasks`);
    if (!Number.isInteger(d.slot) || d.slot < 0 || d.slot >= this.slots.length) throw new Error(`slot ${d.slot} does not exist on ${this.resourceId}`);
    const holder = this.slots[d.slot];
    if (holder !== null && holder !== d.jobId) throw new Error(`slot ${d.slot} on ${this.resourceId} is allocated to job ${holder}`);
    if (this.tasks.has(d.executionId)) throw new Error(`task ${d.executionId} is already deployed`);
    this.slots[d.slot] = d.jobId;
    const task = new Task(d, this.shuffle, this.stateOptions, (t, state, error) => this.onTaskState(t, state, error), this.checkpointResponder);
    this.tasks.set(d.executionId, task);
    const rpc = this.rpc ?? conn;
    this.artifacts
      .get(d.artifactHash, async (hash) => {
        if (!rpc) throw new Error("no JobManager connection to fetch the artifact from");
        return (await rpc.request("fetchArtifact", { hash })).bytes;
      })
      .then(
        (file) => this.startSoon(task, file),
        (err: Error) => task.fail(new Error(`cannot fetch job artifact: ${err.message}`)),
      );
    log.info("deploying task", { ...taskLogFields(task), slot: d.slot });
    return {};
  }

  /** Tasks whose artifact is here, waiting for their turn to start their Worker. */
  private readonly startQueue: { task: Task; file: string }[] = [];
  /** Resolves when the task Worker's entry is ready to load (worker-url.ts; never rejects). */
  private workerReady: Promise<void> = Promise.resolve();
  private workerUrl = taskWorkerUrl();

  /**
   * Starts one task's Worker per turn of the event loop. A job of p=64 deploys 128 tasks here at once; creating
   * their Workers in one turn blocked this thread for tens of seconds on a loaded machine, and the replies to
   * submitTask and the heartbeats waited behind them until the JobManager gave up.
   */
  private startSoon(task: Task, file: string): void {
    this.startQueue.push({ task, file });
    if (this.startQueue.length > 1) return;
    const next = () => {
      const item = this.startQueue.shift();
      if (!item) return;
      if (item.task.state === "DEPLOYING") item.task.start(item.file, this.workerUrl);
      if (this.startQueue.length > 0) setImmediate(next);
    };
    void this.workerReady.then(() => setImmediate(next));
  }

  private taskFor(executionId: string, type: string): Task {
    const task = this.tasks.get(executionId);
    if (!task) throw new Error(`${type}: no task ${executionId} on ${this.resourceId}`);
    return task;
  }

  private readonly checkpointResponder = {
    acknowledge: (task: Task, checkpointId: number, snapshot: unknown) => {
      this.rpc?.request("acknowledgeCheckpoint", { executionId: task.executionId, checkpointId, snapshot: snapshot as never }).catch((err: Error) =>
        log.warn("could not acknowledge a checkpoint", { ...taskLogFields(task), checkpoint: checkpointId, error: err.message }),
      );
    },
    approveFinalCommit: async (task: Task) => {
      // During a JobManager failover (HA grace period) the question waits for the next leader.
      if (!this.rpc && this.graceTimer) {
        const left = this.graceDeadline - Date.now();
        await Promise.race([this.waitRegistered(), new Promise((r) => setTimeout(r, Math.max(0, left)))]);
      }
      const rpc = this.rpc;
      if (!rpc) throw new Error("no connection to the JobManager");
      const timeout = this.registration?.heartbeatTimeoutMs ?? this.config["heartbeat.timeout"];
      await rpc.request("approveFinalCommit", { executionId: task.executionId, epoch: this.epoch }, timeout);
    },
    decline: (task: Task, checkpointId: number, reason: string) => {
      log.warn("declining a checkpoint", { ...taskLogFields(task), checkpoint: checkpointId, reason });
      this.rpc?.request("declineCheckpoint", { executionId: task.executionId, checkpointId, reason }).catch(() => {});
    },
  };

  private onTaskState(task: Task, state: TaskState, error?: ErrorInfo): void {
    const fields: Record<string, unknown> = { ...taskLogFields(task), state };
    if (error) fields.error = error.message;
    if (process.env.TM_DEBUG_METRICS) fields.metrics = task.metrics;
    (state === "FAILED" ? log.warn : log.info)("task state changed", fields);
    if (state === "FINISHED" || state === "FAILED" || state === "CANCELED") {
      this.tasks.delete(task.executionId);
      // A slot whose tasks have all ended is free again here (a restarted job may be placed elsewhere).
      const slot = task.deployment.slot;
      if (![...this.tasks.values()].some((t) => t.deployment.slot === slot)) this.slots[slot] = null;
    }
    this.rpc
      ?.request("updateTaskState", { executionId: task.executionId, state, error, metrics: task.metrics })
      .catch((err: Error) => log.warn("could not report a task state", { ...taskLogFields(task), error: err.message }));
  }

  private releaseJob(jobId: string): void {
    for (const task of this.tasks.values()) if (task.deployment.jobId === jobId) task.cancel();
    this.shuffle.releaseJob(jobId);
    for (let i = 0; i < this.slots.length; i++) if (this.slots[i] === jobId) this.slots[i] = null;
    // The job ended: no task of it will restore from the local copies of its checkpoints.
    if (this.stateOptions.localRecovery) fs.rm(localRecoveryDir(this.stateOptions.baseDir, jobId), { recursive: true, force: true }, () => {});
  }
}

/** Every log line about a task names its job, task (vertex) and subtask (0-based), and the attempt. */
function taskLogFields(task: Task): Record<string, unknown> {
  const d = task.deployment;
  return { job: d.jobId, task: d.vertexName, subtask: d.subtaskIndex, attempt: d.attempt, name: task.name };
}
