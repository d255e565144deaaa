// The JobManager: RPC endpoint for TaskManagers and clients, resource manager, blob store and job masters.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type * as net from "node:net";
import { randomBytes } from "node:crypto";
import type { Config } from "../config/index.ts";
import { operatorsOf, type JobGraph } from "../graph/job-graph.ts";
import { boundPort, listenFramed } from "../rpc/listen.ts";
import { RpcConnection } from "../rpc/rpc-connection.ts";
import { securityFromConfig } from "../rpc/security.ts";
import { JOBMANAGER_ACCEPTS, TERMINAL_JOB_STATES, type Hello, type RequestType, type SubmitJob } from "../rpc/messages.ts";
import { parseRequest } from "../rpc/schemas.ts";
import { createLogger } from "../util/log.ts";
import { BlobStore } from "./blob-store.ts";
import { JobMaster, type JobHa, type JobMasterOptions, type RestartStrategy } from "./job-master.ts";
import { createHaServices, type HaServices, type JobRecord } from "../ha/index.ts";
import { readMetadata } from "./checkpoint-store.ts";
import { ResourceManager } from "./resource-manager.ts";
import type { JobManagerGateway, TaskManagerInfo } from "./gateway.ts";

const log = createLogger("jobmanager");

/**
 * Jobs that have not ended (running, or waiting for slots or a restart). Ended ones are bounded by jobstore.*; these
 * by this: each holds a JobMaster with its executions and checkpoints, and a client in a loop must not pile up more
 * than a cluster could ever run. Far above what the slots of a real cluster run at once.
 */
export const MAX_ACTIVE_JOBS = 1000;

export class JobManager {
  readonly id = randomBytes(8).toString("hex");
  readonly resourceManager: ResourceManager;
  readonly jobs = new Map<string, JobMaster>();
  private readonly blobs: BlobStore;
  readonly checkpointDir: string;
  private server: net.Server | null = null;
  private readonly connections = new Set<RpcConnection>();
  private ownedDir: string | null = null;
  port = 0;
  /** Ended jobs' jobstore.expiration-time timers. */
  private readonly expiry = new Map<string, ReturnType<typeof setTimeout>>();
  /** Leader election, job store, checkpoint pointers and counter (src/ha/; `none` = nothing survives). */
  readonly ha: HaServices;
  /** This leadership's epoch (0 without HA): every request to a TaskManager carries it. */
  epoch = 0;
  /** Stopping with HA on, or deposed: jobs are left to the next leader (kept in the store, tasks not canceled). */
  private suspended = false;
  private resolveDeposed: (reason: string) => void = () => {};
  /** Resolves when this JobManager lost its leadership and stopped acting; the process should stop (or stand by). */
  readonly deposed: Promise<string> = new Promise((resolve) => (this.resolveDeposed = resolve));

  constructor(readonly config: Config) {
    this.resourceManager = new ResourceManager(config["heartbeat.interval"], config["heartbeat.timeout"], (tm, reason) => {
      if (this.suspended) return;
      for (const job of this.jobs.values()) job.onTaskManagerLost(tm, reason);
    });
    this.ha = createHaServices(config, this.id);
    // A generated directory is this process's alone: removed on stop. A configured one is kept. With HA the
    // artifacts (and, unless state.checkpoints.dir says otherwise, the checkpoints) live in the HA storage dir.
    if (!config["jobmanager.storage.dir"] && !this.ha.dir) this.ownedDir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-jobmanager-"));
    const storage = this.ha.dir ?? (config["jobmanager.storage.dir"] || this.ownedDir!);
    this.blobs = new BlobStore(path.join(storage, "blobs"));
    this.checkpointDir = config["state.checkpoints.dir"] || path.join(storage, "checkpoints");
  }

  async start(): Promise<number> {
    const host = this.config["jobmanager.rpc.address"];
    const c = this.config;
    // With HA: lead first (a standby waits here; file HA refuses while another live JobManager holds the lock),
    // then load every job that had not ended, before any TaskManager can register and report its tasks.
    if (this.ha.type !== "none") log.info("acquiring leadership", { ha: this.ha.type, dir: this.ha.dir });
    this.epoch = await this.ha.becomeLeader();
    this.resourceManager.epoch = this.epoch;
    this.ha.onLeadershipLost((reason) => this.stepDown(reason));
    const recovered = await this.recoverJobs();
    const opts = {
      security: securityFromConfig(c),
      maxFrameBytes: c["rpc.max-frame-size"],
      handshakeTimeoutMs: c["rpc.handshake-timeout"],
      maxConnectionsPerAddress: c["rpc.max-connections-per-address"],
      name: "JobManager RPC",
      portKey: "jobmanager.rpc.port",
    };
    this.server = await listenFramed(host, c["jobmanager.rpc.port"], this.id, (framed) => {
      const hello = framed.peer as Hello;
      const rpc = new RpcConnection(framed, (type, payload, conn) => this.onRequest(hello, type, payload, conn));
      this.connections.add(rpc);
      // Clients are closed when idle; TaskManagers are watched by heartbeats instead.
      if (hello.role === "client") framed.setIdleTimeout(c["rpc.idle-timeout"], () => rpc.serving > 0);
      rpc.onClose((err) => {
        this.connections.delete(rpc);
        // A bad frame, an idle time-out: logged naming the peer (a peer that just goes away is not news).
        if (err && !this.stopping && !/closed by peer|connection closed$/.test(err.message)) {
          log.warn("closed a connection", { peer: framed.remoteAddress, role: hello.role, id: hello.id, error: err.message });
        }
      });
    }, opts);
    this.port = boundPort(this.server);
    this.resourceManager.start();
    log.info("JobManager started", { rpc: `${host}:${this.port}`, id: this.id, ...(this.ha.type !== "none" ? { ha: this.ha.type, epoch: this.epoch } : {}) });
    for (const job of recovered) void job.run();
    return this.port;
  }

  /** The JobManagers standing by (etcd), refreshed every few seconds for the REST API and dashboard. */
  standbyIds: string[] = [];
  private standbyTimer: ReturnType<typeof setInterval> | null = null;

  /** Publishes where this leader serves (etcd: for TaskManagers and clients); the role calls it once REST is up. */
  async publishAddress(restPort: number): Promise<void> {
    await this.ha.publishAddress({ id: this.id, host: this.config["jobmanager.rpc.address"], port: this.port, restPort });
    if (this.ha.type === "etcd" && !this.standbyTimer) {
      const refresh = () => this.ha.standbys().then((s) => (this.standbyIds = s.map((x) => x.id).filter((id) => id !== this.id)), () => {});
      void refresh();
      this.standbyTimer = setInterval(refresh, 2000);
      (this.standbyTimer as { unref?: () => void }).unref?.();
    }
  }

  /**
   * Every job of the HA store that had not ended, as a JobMaster (not yet running): restored from its latest
   * completed checkpoint (the pointer), or its savepoint, or the start. A record or pointer that cannot be used
   * fails that job alone, naming the path; its record is moved aside.
   */
  private async recoverJobs(): Promise<JobMaster[]> {
    if (this.ha.type === "none") return [];
    const { jobs, broken } = await this.ha.recoverJobs();
    const out: JobMaster[] = [];
    for (const r of jobs) {
      let where = `the job record of ${r.jobId}`;
      try {
        const pointer = await this.ha.latestCheckpoint(r.jobId);
        where = pointer ? `checkpoint ${pointer.path}` : where;
        const restore = pointer ? readMetadata(pointer.path) : r.fromSavepoint ? readMetadata(r.fromSavepoint) : null;
        if (restore && restore.meta.jobId !== r.jobId && !restore.meta.savepoint) throw new Error(`${restore.path} is a checkpoint of job ${restore.meta.jobId}`);
        const opts: JobMasterOptions = {
          // Accepted once already: state it left unclaimed then (allowNonRestoredState) is left again.
          ...this.jobOptions(r.graph, null, true),
          initialRestore: restore,
          ha: this.jobHa(r),
          recovered: {
            attempt: r.attempt,
            checkpointIdCounter: await this.ha.checkpointIdCounter(r.jobId),
            // TaskManagers keep their tasks this long: the window in which their reports may arrive for adoption.
            adoptWithinMs: this.config["taskmanager.jobmanager-loss.grace-period"],
          },
        };
        const job = new JobMaster(r.jobId, r.graph, r.artifactHash, r.jobArgs, this.resourceManager, opts, (j) => this.retire(j));
        this.jobs.set(r.jobId, job);
        out.push(job);
        log.info("recovered a job from the HA store", { job: r.jobId, name: r.name, attempt: job.attempt, from: restore?.path ?? "the start" });
      } catch (err) {
        broken.push({ jobId: r.jobId, path: where, error: (err as Error).message });
      }
    }
    for (const b of broken) {
      let moved = "";
      try {
        moved = await this.ha.quarantineJob(b.jobId);
      } catch (err) {
        moved = `(could not move it aside: ${(err as Error).message})`;
      }
      const message = `cannot recover job ${b.jobId} from ${b.path}: ${b.error}; its record is now ${moved}`;
      log.error(message, { job: b.jobId });
      const job = JobMaster.unrecoverable(b.jobId, message, this.resourceManager, this.jobOptions(UNRECOVERABLE_GRAPH, null, false), (j) => this.retire(j));
      this.jobs.set(b.jobId, job);
    }
    return out;
  }

  /** The job's fenced HA writes (undefined without HA). */
  private jobHa(record: JobRecord): JobHa | undefined {
    if (this.ha.type === "none") return undefined;
    const ha = this.ha;
    return {
      epoch: this.epoch,
      persistAttempt: (attempt) => ha.putJob(Object.assign(record, { attempt: Math.max(record.attempt, attempt) })),
      reserveCheckpointId: (id) => ha.reserveCheckpointId(record.jobId, id),
      publishCheckpoint: (id, file) => ha.setLatestCheckpoint(record.jobId, id, file),
    };
  }

  /**
   * Leadership lost (lock taken, lease lapsed): stop acting at once. No request goes to a TaskManager any more,
   * no checkpoint completes, no final commit is approved; the jobs stay in the store for the next leader and the
   * TaskManagers keep their tasks for their grace period.
   */
  private stepDown(reason: string): void {
    if (this.suspended) return;
    log.error("leadership lost; this JobManager stops acting", { reason, epoch: this.epoch });
    this.suspended = true;
    for (const job of this.jobs.values()) job.suspend();
    for (const c of this.connections) c.closeWithNotice(`the JobManager lost its leadership (epoch ${this.epoch}): ${reason}`);
    this.resourceManager.stop();
    this.server?.close();
    this.resolveDeposed(reason);
  }

  /** True once stop() has canceled the jobs and closed every connection (what is left is closing the ports). */
  drained = false;
  private stopping = false;

  /** `reason` (e.g. "the JobManager is shutting down (SIGTERM)") is sent to every connected peer before its connection closes. */
  async stop(reason = "the JobManager is shutting down"): Promise<void> {
    this.stopping = true;
    if (this.standbyTimer) clearInterval(this.standbyTimer);
    for (const timer of this.expiry.values()) clearTimeout(timer);
    // With HA a stop suspends: the jobs stay in the store and the next leader (or this one restarted) goes on.
    if (this.ha.type !== "none") {
      this.suspended = true;
      for (const job of this.jobs.values()) job.suspend();
    } else for (const job of this.jobs.values()) job.cancel();
    for (const c of this.connections) c.closeWithNotice(reason); // before the ResourceManager closes its TaskManagers' without one
    this.resourceManager.stop();
    this.drained = true;
    await new Promise<void>((resolve) => (this.server?.listening ? this.server.close(() => resolve()) : resolve()));
    await this.ha.close().catch((err: Error) => log.warn("could not release the HA leadership", { error: err.message }));
    if (this.ownedDir) fs.rmSync(this.ownedDir, { recursive: true, force: true });
  }

  private onRequest(peer: Hello, type: RequestType, payload: unknown, conn: RpcConnection): unknown {
    if (!JOBMANAGER_ACCEPTS[peer.role].has(type)) throw new Error(`${type} is not allowed for a ${peer.role} connection`);
    const rm = this.resourceManager;
    switch (type) {
      case "registerTaskManager": {
        const p = parseRequest(type, payload);
        if (p.resourceId !== peer.id) throw new Error(`registerTaskManager: resourceId ${p.resourceId} differs from the handshake's ${peer.id}`);
        this.checkLeading(type);
        if (typeof p.epoch === "number" && p.epoch > this.epoch) {
          throw new Error(`fenced: this JobManager's epoch ${this.epoch} is older than epoch ${p.epoch}, which TaskManager ${peer.id} already follows (this JobManager was deposed)`);
        }
        rm.register(p, conn);
        // A recovered job may adopt the running tasks reported here (then they are current, not canceled).
        const reported: unknown[] = Array.isArray(p.executions) ? p.executions : [];
        const tm = rm.taskManagers.get(peer.id)!;
        for (const id of reported) if (typeof id === "string") this.jobOf(id)?.offerRunning(id, tm, p.executionSlots?.[id]);
        return {
          jobManagerId: this.id,
          heartbeatIntervalMs: this.config["heartbeat.interval"],
          heartbeatTimeoutMs: this.config["heartbeat.timeout"],
          cancel: this.staleExecutions(peer.id, p.executions ?? []),
          epoch: this.epoch,
          jobManagerLossGracePeriodMs: this.ha.type === "none" ? 0 : this.config["taskmanager.jobmanager-loss.grace-period"],
        };
      }
      case "offerSlots": {
        const p = parseRequest(type, payload);
        return { accepted: rm.offerSlots(p.resourceId, p.slots) };
      }
      case "heartbeat": {
        const p = parseRequest(type, payload);
        rm.heartbeatFrom(peer.id);
        if (p.process !== undefined) {
          const tm = rm.taskManagers.get(peer.id);
          if (tm) tm.process = p.process;
        }
        if (p.taskMetrics !== undefined) {
          for (const [executionId, metrics] of Object.entries(p.taskMetrics)) {
            this.jobs.get(executionId.split("-")[0]!)?.onTaskMetrics(executionId, metrics);
          }
          // Attempt fencing: tasks the TaskManager still runs that are not current here are canceled there at once.
          const cancel = this.staleExecutions(peer.id, Object.keys(p.taskMetrics));
          if (cancel.length > 0) return { cancel };
        }
        return {};
      }
      case "approveFinalCommit": {
        const p = parseRequest(type, payload);
        const job = this.jobOf(p.executionId);
        if (!job) throw new Error(`approveFinalCommit: unknown execution ${p.executionId}`);
        this.checkLeading(type);
        if (typeof p.epoch === "number" && p.epoch > this.epoch) throw new Error(`fenced: epoch ${this.epoch} is older than epoch ${p.epoch} the TaskManager follows`);
        job.approveFinalCommit(p.executionId, peer.id);
        // A deposed leader approves nothing: with HA the service itself confirms the leadership first.
        return this.ha.type === "none" ? {} : this.ha.confirmLeadership().then(() => (this.checkLeading(type), {}));
      }
      case "acknowledgeCheckpoint": {
        const p = parseRequest(type, payload);
        this.jobOf(p.executionId)?.coordinator.onAcknowledge(p.executionId, p.checkpointId, p.snapshot);
        return {};
      }
      case "declineCheckpoint": {
        const p = parseRequest(type, payload);
        this.jobOf(p.executionId)?.coordinator.onDecline(p.executionId, p.checkpointId, p.reason);
        return {};
      }
      case "triggerSavepoint": {
        const p = parseRequest(type, payload);
        return this.job(p.jobId).savepoint(this.savepointTarget(p.dir ? p.dir : undefined), p.cancel === true);
      }
      case "updateTaskState": {
        const p = parseRequest(type, payload);
        const job = this.jobOf(p.executionId);
        if (!job) throw new Error(`updateTaskState: unknown execution ${p.executionId}`);
        job.onTaskState(p.executionId, p.state, p.error, p.metrics);
        return {};
      }
      case "disconnectTaskManager":
        rm.disconnect(peer.id, parseRequest(type, payload).reason);
        return {};
      case "fetchArtifact":
        return { bytes: this.blobs.get(parseRequest(type, payload).hash) };
      case "submitJob":
        this.checkLeading(type);
        return this.submitJob(parseRequest(type, payload));
      case "jobStatus":
        return this.job(parseRequest(type, payload).jobId).status();
      case "cancelJob":
        this.job(parseRequest(type, payload).jobId).cancel();
        return {};
      case "listJobs":
        parseRequest(type, payload);
        return [...this.jobs.values()].map((j) => j.status());
      case "clusterOverview":
        parseRequest(type, payload);
        return {
          taskManagers: rm.taskManagers.size,
          slotsTotal: rm.totalSlots,
          slotsAvailable: rm.freeSlots,
          jobsRunning: [...this.jobs.values()].filter((j) => j.state === "RUNNING").length,
        };
      default:
        throw new Error(`the JobManager does not serve ${type}`);
    }
  }

  /** A suspended (deposed or stopping) JobManager acts on nothing. */
  private checkLeading(type: string): void {
    if (this.suspended) throw new Error(`${type}: this JobManager (epoch ${this.epoch}) is no longer the leader`);
  }

  private async submitJob(p: SubmitJob): Promise<{ jobId: string; warnings?: string[] }> {
    if (p.artifact.length === 0) throw new Error("submitJob: artifact: expected non-empty bytes, got 0 bytes");
    validateGraph(p.graph);
    const active = [...this.jobs.values()].filter((j) => !TERMINAL_JOB_STATES.has(j.state)).length;
    if (active >= MAX_ACTIVE_JOBS) throw new Error(`submitJob: ${active} jobs have not ended (limit ${MAX_ACTIVE_JOBS}): cancel some, or wait for them to end`);
    const hash = this.blobs.put(p.artifact);
    const jobId = randomBytes(16).toString("hex");
    const opts = this.jobOptions(p.graph, p.fromSavepoint, p.allowNonRestoredState === true);
    const record: JobRecord = {
      jobId,
      name: p.graph.name,
      graph: p.graph,
      artifactHash: hash,
      jobArgs: p.jobArgs,
      fromSavepoint: opts.initialRestore?.path ?? null,
      submittedAt: Date.now(),
      attempt: 0,
    };
    opts.ha = this.jobHa(record);
    const job = new JobMaster(jobId, p.graph, hash, p.jobArgs, this.resourceManager, opts, (j) => this.retire(j));
    record.attempt = job.attempt;
    // With HA the job is stored (fenced) before the client hears its id: an accepted job survives a failover.
    await this.ha.putJob(record);
    this.jobs.set(jobId, job);
    const warnings = uidWarnings(p.graph);
    log.info("job submitted", { job: jobId, name: p.graph.name, vertices: p.graph.vertices.length, ...(warnings.length > 0 ? { warning: warnings.join(" ") } : {}) });
    void job.run();
    return { jobId, ...(warnings.length > 0 ? { warnings } : {}) };
  }

  /**
   * The job store's bound (Flink's jobstore.*): an ended job is kept for jobstore.expiration-time, and of the ended
   * jobs only the jobstore.max-capacity that ended last; running jobs are never dropped.
   */
  private retire(job: JobMaster): void {
    // A job that ended by itself leaves the HA store (a suspended one stays for the next leader).
    if (this.ha.type !== "none" && !this.suspended) {
      this.ha.removeJob(job.jobId).catch((err: Error) => log.warn("could not remove an ended job from the HA store", { job: job.jobId, error: err.message }));
    }
    const timer = setTimeout(() => this.forget(job.jobId, "jobstore.expiration-time"), this.config["jobstore.expiration-time"]);
    (timer as { unref?: () => void }).unref?.();
    this.expiry.set(job.jobId, timer);
    const ended = [...this.jobs.values()].filter((j) => TERMINAL_JOB_STATES.has(j.state)).sort((a, b) => a.endTime! - b.endTime!);
    for (const old of ended.slice(0, Math.max(0, ended.length - this.config["jobstore.max-capacity"]))) this.forget(old.jobId, "jobstore.max-capacity");
  }

  private forget(jobId: string, reason: string): void {
    clearTimeout(this.expiry.get(jobId));
    this.expiry.delete(jobId);
    if (this.jobs.delete(jobId)) log.info("job removed from the job store", { job: jobId, reason });
  }

  /** The read-only view the REST API and its /metrics get (src/jobmanager/gateway.ts). */
  gateway(): JobManagerGateway {
    const jm = this;
    const rm = this.resourceManager;
    return {
      id: jm.id,
      get port() {
        return jm.port;
      },
      config: jm.config,
      jobs: () => jm.jobs.values(),
      job: (id) => jm.jobs.get(id),
      taskManagers: () => rm.taskManagers.values(),
      taskManager: (id) => rm.taskManagers.get(id),
      slots: () => ({ total: rm.totalSlots, free: rm.freeSlots }),
      savepointTarget: (dir) => jm.savepointTarget(dir),
      ha: () => ({ type: jm.ha.type, epoch: jm.epoch, leader: jm.id, standbys: jm.standbyIds }),
      taskManagerInfo: async (id, timeoutMs): Promise<TaskManagerInfo> => {
        const tm = rm.taskManagers.get(id);
        if (!tm) throw new Error(`no TaskManager ${id}`);
        return tm.rpc.request("taskManagerInfo", {}, timeoutMs);
      },
    };
  }

  /**
   * Where a savepoint requested with `dir` goes: an absolute path as it is, a relative one under state.savepoints.dir
   * (never the JobManager's working directory); undefined = the default. Throws when relative without that key.
   */
  savepointTarget(dir: string | undefined): string | undefined {
    if (dir === undefined || path.isAbsolute(dir)) return dir;
    const base = this.config["state.savepoints.dir"];
    if (!base) throw new Error(`the savepoint directory ${JSON.stringify(dir)} is relative and state.savepoints.dir is not set: give an absolute path`);
    return path.resolve(base, dir);
  }

  /** The job's settings from the cluster's config, overridden by what the job itself chose. */
  private jobOptions(graph: JobGraph, fromSavepoint: unknown, allowNonRestoredState: boolean): JobMasterOptions {
    const c = this.config;
    const interval = graph.checkpointInterval || c["execution.checkpointing.interval"];
    let type = c["restart-strategy.type"];
    if (type === "auto") type = interval > 0 ? "exponential-delay" : "none";
    const restart: RestartStrategy =
      type === "fixed-delay"
        ? { type, attempts: c["restart-strategy.fixed-delay.attempts"], delayMs: c["restart-strategy.fixed-delay.delay"] }
        : type === "exponential-delay"
          ? {
              type,
              attempts: c["restart-strategy.exponential-delay.max-attempts"],
              initialMs: c["restart-strategy.exponential-delay.initial-backoff"],
              maxMs: c["restart-strategy.exponential-delay.max-backoff"],
              multiplier: c["restart-strategy.exponential-delay.backoff-multiplier"],
              resetMs: c["restart-strategy.exponential-delay.reset-backoff-threshold"],
            }
          : { type: "none" };
    let initialRestore: JobMasterOptions["initialRestore"] = null;
    if (fromSavepoint !== undefined && fromSavepoint !== null && fromSavepoint !== "") {
      if (typeof fromSavepoint !== "string") throw new Error("submitJob: fromSavepoint must be a path");
      // Throws naming the path when missing, truncated or of another format version.
      initialRestore = { ...readMetadata(fromSavepoint), allowNonRestoredState };
    }
    return {
      slotTimeoutMs: c["jobmanager.slot-request.timeout"],
      restart,
      checkpointing: {
        intervalMs: interval,
        mode: graph.checkpointingMode ?? c["execution.checkpointing.mode"],
        timeoutMs: c["execution.checkpointing.timeout"],
        minPauseMs: c["execution.checkpointing.min-pause"],
        maxConcurrent: c["execution.checkpointing.max-concurrent-checkpoints"],
        unaligned: c["execution.checkpointing.unaligned.enabled"],
        alignedTimeoutMs: c["execution.checkpointing.unaligned.enabled"] ? c["execution.checkpointing.aligned-checkpoint-timeout"] : 0,
        afterTasksFinish: c["execution.checkpointing.checkpoints-after-tasks-finish"],
        baseDir: this.checkpointDir,
        retained: c["state.checkpoints.num-retained"],
        savepointDir: c["state.savepoints.dir"] || path.join(this.checkpointDir, "savepoints"),
      },
      initialRestore,
      exceptionHistorySize: c["web.exception-history-size"],
      latencyIntervalMs: c["metrics.latency.interval"],
    };
  }

  /** Of the executions a TaskManager reports, those that are not current attempts deployed to it. */
  private staleExecutions(resourceId: string, executionIds: unknown[]): string[] {
    return executionIds.filter((id): id is string => typeof id === "string" && !this.jobOf(id)?.isCurrentExecution(id, resourceId)).slice(0, 10_000);
  }

  private jobOf(executionId: unknown): JobMaster | undefined {
    return this.jobs.get(String(executionId).split("-")[0]!);
  }

  private job(jobId: string): JobMaster {
    const job = this.jobs.get(jobId);
    if (!job) throw new Error(`no job ${JSON.stringify(jobId)}`);
    return job;
  }
}

/** Stateful operators without a uid: their state is stored under an id derived from their place in the graph. */
function uidWarnings(g: JobGraph): string[] {
  const noUid = g.vertices.flatMap((v) => operatorsOf(v)).filter((o) => o.stateful && o.uid === null);
  if (noUid.length === 0) return [];
  return [
    `${noUid.length === 1 ? "a stateful operator has" : `${noUid.length} stateful operators have`} no uid: ${noUid.map((o) => `"${o.name}"`).join(", ")}. ` +
      `Their state is stored under an id derived from their position in the graph, which changes when operators are added, removed or reordered before them; ` +
      `set .uid("...") on each so that a savepoint still restores into them after the job changes`,
  ];
}

/** The graph of a job whose record could not be recovered: it exists only to be listed as FAILED. */
const UNRECOVERABLE_GRAPH = { name: "(unrecoverable job)", vertices: [], edges: [], maxParallelism: 1 } as unknown as JobGraph;

function validateGraph(g: JobGraph): void {
  const bad = (what: string) => new Error(`submitJob: invalid job graph: ${what}`);
  if (typeof g !== "object" || g === null) throw bad("not an object");
  if (!Array.isArray(g.vertices) || g.vertices.length === 0) throw bad("no vertices");
  if (!Array.isArray(g.edges)) throw bad("edges must be an array");
  if (!Number.isInteger(g.maxParallelism) || g.maxParallelism < 1) throw bad("maxParallelism must be a positive integer");
  if (g.stateBackend != null && g.stateBackend !== "heap" && g.stateBackend !== "sqlite") throw bad(`unknown state backend ${JSON.stringify(g.stateBackend)}`);
  g.vertices.forEach((v, i) => {
    if (v.id !== i) throw bad(`vertex ${i} has id ${v.id}`);
    if (!Number.isInteger(v.parallelism) || v.parallelism < 1 || v.parallelism > g.maxParallelism) throw bad(`vertex ${i} has parallelism ${v.parallelism}`);
    if (!Array.isArray(v.operatorIds) || v.operatorIds.length === 0) throw bad(`vertex ${i} has no operators`);
    if (v.operators !== undefined) {
      if (!Array.isArray(v.operators) || v.operators.length !== v.operatorIds.length) throw bad(`vertex ${i} has ${v.operatorIds.length} operators but ${Array.isArray(v.operators) ? v.operators.length : "no"} operator ids`);
      v.operators.forEach((o, j) => {
        if (typeof o?.id !== "string" || o.id.length === 0 || o.nodeId !== v.operatorIds[j]) throw bad(`vertex ${i} operator ${j} has no operator id or a wrong node`);
      });
    }
  });
  for (const e of g.edges) {
    if (!g.vertices[e.source] || !g.vertices[e.target]) throw bad(`edge ${e.id} joins unknown vertices`);
    if (!["forward", "rebalance", "rescale", "hash", "broadcast", "custom"].includes(e.partitioner)) throw bad(`edge ${e.id} has partitioner ${e.partitioner}`);
    if (e.partitioner === "forward" && g.vertices[e.source]!.parallelism !== g.vertices[e.target]!.parallelism) throw bad(`forward edge ${e.id} joins different parallelisms`);
  }
}
