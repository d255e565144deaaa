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
import { JobMaster, type JobMasterOptions, type RestartStrategy } from "./job-master.ts";
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

  constructor(readonly config: Config) {
    this.resourceManager = new ResourceManager(config["heartbeat.interval"], config["heartbeat.timeout"], (tm, reason) => {
      for (const job of this.jobs.values()) job.onTaskManagerLost(tm, reason);
    });
    // A generated directory is this process's alone: removed on stop. A configured one is kept.
    if (!config["jobmanager.storage.dir"]) this.ownedDir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-jobmanager-"));
    this.blobs = new BlobStore(path.join(config["jobmanager.storage.dir"] || this.ownedDir!, "blobs"));
    this.checkpointDir = config["state.checkpoints.dir"] || path.join(config["jobmanager.storage.dir"] || this.ownedDir!, "checkpoints");
  }

  async start(): Promise<number> {
    const host = this.config["jobmanager.rpc.address"];
    const c = this.config;
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
    log.info("JobManager started", { rpc: `${host}:${this.port}`, id: this.id });
    return this.port;
  }

  /** True once stop() has canceled the jobs and closed every connection (what is left is closing the ports). */
  drained = false;
  private stopping = false;

  /** `reason` (e.g. "the JobManager is shutting down (SIGTERM)") is sent to every connected peer before its connection closes. */
  async stop(reason = "the JobManager is shutting down"): Promise<void> {
    this.stopping = true;
    for (const timer of this.expiry.values()) clearTimeout(timer);
    for (const job of this.jobs.values()) job.cancel();
    for (const c of this.connections) c.closeWithNotice(reason); // before the ResourceManager closes its TaskManagers' without one
    this.resourceManager.stop();
    this.drained = true;
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (this.ownedDir) fs.rmSync(this.ownedDir, { recursive: true, force: true });
  }

  private onRequest(peer: Hello, type: RequestType, payload: unknown, conn: RpcConnection): unknown {
    if (!JOBMANAGER_ACCEPTS[peer.role].has(type)) throw new Error(`${type} is not allowed for a ${peer.role} connection`);
    const rm = this.resourceManager;
    switch (type) {
      case "registerTaskManager": {
        const p = parseRequest(type, payload);
        if (p.resourceId !== peer.id) throw new Error(`registerTaskManager: resourceId ${p.resourceId} differs from the handshake's ${peer.id}`);
        rm.register(p, conn);
        return {
          jobManagerId: this.id,
          heartbeatIntervalMs: this.config["heartbeat.interval"],
          heartbeatTimeoutMs: this.config["heartbeat.timeout"],
          cancel: this.staleExecutions(peer.id, p.executions ?? []),
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
        job.approveFinalCommit(p.executionId, peer.id);
        return {};
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

  private submitJob(p: SubmitJob): { jobId: string; warnings?: string[] } {
    if (p.artifact.length === 0) throw new Error("submitJob: artifact: expected non-empty bytes, got 0 bytes");
    validateGraph(p.graph);
    const active = [...this.jobs.values()].filter((j) => !TERMINAL_JOB_STATES.has(j.state)).length;
    if (active >= MAX_ACTIVE_JOBS) throw new Error(`submitJob: ${active} jobs have not ended (limit ${MAX_ACTIVE_JOBS}): cancel some, or wait for them to end`);
    const hash = this.blobs.put(p.artifact);
    const jobId = randomBytes(16).toString("hex");
    const job = new JobMaster(jobId, p.graph, hash, p.jobArgs, this.resourceManager, this.jobOptions(p.graph, p.fromSavepoint, p.allowNonRestoredState === true), (j) => this.retire(j));
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
        afterTasksFinish: c["execution.checkpointing.checkpoints-after-tasks-finish"],
        baseDir: this.checkpointDir,
        retained: c["state.checkpoints.num-retained"],
        savepointDir: c["state.savepoints.dir"] || path.join(this.checkpointDir, "savepoints"),
      },
      initialRestore,
      exceptionHistorySize: c["web.exception-history-size"],
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
