// The JobManager's REST API (JSON, Flink's paths where they fit), its web dashboard and /metrics, /healthz, /readyz.
// Every handler reads the live JobManager: the REST layer keeps no state but vertex rates and savepoint triggers.
import { randomBytes } from "node:crypto";
import * as net from "node:net";
import * as os from "node:os";
import pkg from "../../package.json" with { type: "json" };
import type { JobManagerGateway, JobView, TaskManagerView } from "../jobmanager/gateway.ts";
import { TERMINAL_JOB_STATES, type CheckpointStats, type ExceptionEntry, type JobStatus, type JobWaiting, type SubtaskStatus, type TaskMetrics, type TaskState, type VertexStatus } from "../rpc/messages.ts";
import { HttpError, json, startHttpServer, text, type HttpRequest, type HttpResponse, type RunningHttpServer } from "../metrics/http-server.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../metrics/exposition.ts";
import { eventLoopLag } from "../metrics/process.ts";
import { ConfigError } from "../config/load.ts";
import { bearerMatches, isLoopback, SECRET_ENV_VAR, type TransportSecurity } from "../rpc/security.ts";
import { jobManagerRegistry } from "./jobmanager-metrics.ts";
import { DASHBOARD_HTML } from "./dashboard.ts";
import { maskedConfig } from "../config/mask.ts";
import { recentLogLines } from "../util/log.ts";

/** How long the REST API waits for a TaskManager's configuration and log lines. */
const TASKMANAGER_INFO_TIMEOUT_MS = 5000;

const TASK_STATES: TaskState[] = ["DEPLOYING", "RUNNING", "FINISHED", "FAILED", "CANCELING", "CANCELED"];

/** Backpressure level as Flink's web UI: OK up to 10 % of the time back-pressured, LOW up to 50 %, else HIGH. */
export function backpressureLevel(ratio: number): "ok" | "low" | "high" {
  return ratio <= 0.1 ? "ok" : ratio <= 0.5 ? "low" : "high";
}

interface Rate {
  t: number;
  recordsIn: number;
  recordsOut: number;
  inPerSecond: number;
  outPerSecond: number;
}

/** Who may talk to the REST API from a browser: rest.allowed-hosts and rest.allowed-origins. */
export interface RestAccess {
  allowedHosts: readonly string[];
  allowedOrigins: readonly string[];
}

/** Methods that change nothing; every other one is a mutating call (token, Origin and Content-Type checks). */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

interface SavepointTrigger {
  jobId: string;
  status: "IN_PROGRESS" | "COMPLETED";
  location?: string;
  failure?: string;
}

export class RestServer {
  private server: RunningHttpServer | null = null;
  private readonly rates = new Map<string, Rate>();
  private rateTimer: ReturnType<typeof setInterval> | null = null;
  private readonly savepoints = new Map<string, SavepointTrigger>();
  private readonly metrics;
  port = 0;

  /**
   * `token`: the bearer token of mutating calls (security.rest.token-file, else the shared secret); null = none
   * (then only a loopback address, or security.insecure). `security.tls`: HTTPS with its certificate and key.
   */
  constructor(
    private readonly jm: JobManagerGateway,
    private readonly onError: (err: Error) => void,
    private readonly security: Pick<TransportSecurity, "insecure" | "tls"> = { insecure: false, tls: null },
    private readonly token: Buffer | null = null,
    private readonly access: RestAccess = { allowedHosts: [], allowedOrigins: [] },
  ) {
    this.metrics = jobManagerRegistry(jm);
    for (const o of access.allowedOrigins) {
      if (o !== "*" && normalizeOrigin(o) === null) {
        throw new ConfigError(`rest.allowed-origins: ${JSON.stringify(o)} is not an origin (scheme://host[:port], such as "https://ops.example:8443", or *)`);
      }
    }
  }

  get tls(): boolean {
    return this.security.tls !== null;
  }

  /** rest.address as bound: the name a Host header must carry (besides loopback names and rest.allowed-hosts). */
  private boundHost = "";

  async start(host: string, port: number): Promise<number> {
    // Without a token anyone who reaches the port may cancel jobs: as RPC, loopback only unless insecure.
    if (!this.token && !this.security.insecure && !isLoopback(host)) {
      throw new ConfigError(
        `refusing to listen on ${host}:${port} (REST API) without authentication: set a shared secret (security.auth.secret-file ` +
          `or ${SECRET_ENV_VAR}) or security.rest.token-file, bind rest.address to a loopback address, or set security.insecure = true`,
      );
    }
    eventLoopLag.acquire();
    try {
      this.boundHost = hostName(host);
      this.server = await startHttpServer(host, port, "rest.port", (req) => this.handle(req), this.onError, this.security.tls, MAX_BODY_BYTES);
    } catch (err) {
      eventLoopLag.release();
      throw err;
    }
    this.port = this.server.port;
    this.rateTimer = setInterval(() => this.sampleRates(), 1000);
    (this.rateTimer as { unref?: () => void }).unref?.();
    return this.port;
  }

  async stop(): Promise<void> {
    if (this.rateTimer) clearInterval(this.rateTimer);
    if (!this.server) return;
    eventLoopLag.release();
    await this.server.stop();
    this.server = null;
  }

  /** Records/s per vertex from the change of its totals over the last second. */
  private sampleRates(): void {
    const now = Date.now();
    // Jobs dropped from the job store (jobstore.*) take their rates and savepoint triggers with them.
    for (const key of this.rates.keys()) if (!this.jm.job(key.slice(0, key.indexOf("/")))) this.rates.delete(key);
    for (const [id, t] of this.savepoints) if (!this.jm.job(t.jobId)) this.savepoints.delete(id);
    for (const job of this.jm.jobs()) {
      const status = job.status();
      for (const v of status.vertices) {
        const key = `${job.jobId}/${v.id}`;
        const sum = v.totals; // over every attempt: a restart does not make the rate jump
        const prev = this.rates.get(key);
        const dt = prev ? (now - prev.t) / 1000 : 0;
        const running = !TERMINAL_JOB_STATES.has(status.state);
        this.rates.set(key, {
          t: now,
          recordsIn: sum.recordsIn,
          recordsOut: sum.recordsOut,
          inPerSecond: prev && dt > 0 && running ? Math.max(0, (sum.recordsIn - prev.recordsIn) / dt) : 0,
          outPerSecond: prev && dt > 0 && running ? Math.max(0, (sum.recordsOut - prev.recordsOut) / dt) : 0,
        });
      }
    }
  }

  /**
   * Checks before routing, against other web pages an operator has open: every request must name this server in
   * its Host header (DNS rebinding), a mutating call must come from this server's own origin (or one of
   * rest.allowed-origins) and carry JSON, if anything. Allowed foreign origins get CORS headers.
   */
  private async handle(req: HttpRequest): Promise<HttpResponse> {
    this.checkHost(req);
    const cors = this.corsHeaders(req);
    try {
      if (req.method === "OPTIONS") return { status: 204, body: "", headers: { allow: "GET, HEAD, POST, PATCH, OPTIONS", ...cors } };
      if (!SAFE_METHODS.has(req.method)) {
        this.checkOrigin(req);
        this.authorize(req);
        checkJsonBody(req);
      }
      const r = await this.route(req);
      return cors ? { ...r, headers: { ...r.headers, ...cors } } : r;
    } catch (err) {
      if (cors && err instanceof HttpError) throw new HttpError(err.status, err.message, { ...err.headers, ...cors });
      throw err;
    }
  }

  private checkHost(req: HttpRequest): void {
    const header = req.header("host");
    if (this.access.allowedHosts.includes("*")) return;
    if (header === undefined) throw new HttpError(403, "a request without a Host header is refused (HTTP/1.1 needs one)");
    const { name, port } = splitHostHeader(header);
    if (name === this.boundHost) return;
    const wildcard = this.boundHost === "0.0.0.0" || this.boundHost === "::";
    // Loopback names reach only this machine: no web page can make them its own (DNS rebinding needs a name the
    // attacker controls), so any port is fine (tunnels, port-forwards).
    if ((wildcard || isLoopback(this.boundHost)) && isLoopback(name)) return;
    if (wildcard && localNames().has(name)) return;
    for (const entry of this.access.allowedHosts) {
      const allowed = splitHostHeader(entry);
      if (allowed.name === name && (allowed.port === null || allowed.port === port)) return;
    }
    throw new HttpError(
      403,
      `Host ${JSON.stringify(header)} is not an address of this REST API (rest.address ${this.boundHost}): refused against DNS rebinding; ` +
        `if clients reach the JobManager by this name, add it to rest.allowed-hosts`,
    );
  }

  /** The request's Origin when it is foreign but listed in rest.allowed-origins: CORS headers for it. */
  private corsHeaders(req: HttpRequest): Record<string, string> | undefined {
    const origin = req.header("origin");
    if (origin === undefined || this.isOwnOrigin(origin, req) || !this.originListed(origin)) return undefined;
    return {
      "access-control-allow-origin": origin,
      "access-control-allow-methods": "GET, HEAD, POST, PATCH, OPTIONS",
      "access-control-allow-headers": "authorization, content-type",
      "access-control-max-age": "600",
      vary: "Origin",
    };
  }

  /** A mutating call from a web page: only from this server's own origin or one of rest.allowed-origins. */
  private checkOrigin(req: HttpRequest): void {
    const origin = req.header("origin");
    if (origin === undefined) {
      // No Origin (curl, scripts); a browser that sends none still says where the request comes from.
      const site = req.header("sec-fetch-site");
      if (site !== undefined && site !== "same-origin" && site !== "none") throw new HttpError(403, `${req.method} from another site refused (Sec-Fetch-Site: ${site})`);
      return;
    }
    if (this.isOwnOrigin(origin, req) || this.originListed(origin)) return;
    throw new HttpError(
      403,
      `${req.method} from Origin ${JSON.stringify(origin)} refused: only this REST API's own origin (${this.ownOrigin(req)}) and rest.allowed-origins may make mutating calls`,
    );
  }

  private ownOrigin(req: HttpRequest): string {
    return normalizeOrigin(`${this.tls ? "https" : "http"}://${req.header("host") ?? ""}`) ?? "";
  }

  private isOwnOrigin(origin: string, req: HttpRequest): boolean {
    const o = normalizeOrigin(origin);
    return o !== null && o === this.ownOrigin(req);
  }

  private originListed(origin: string): boolean {
    const o = normalizeOrigin(origin);
    return o !== null && this.access.allowedOrigins.some((a) => a === "*" || normalizeOrigin(a) === o);
  }

  private async route(req: HttpRequest): Promise<HttpResponse> {
    const parts = req.path.split("/").filter((p) => p.length > 0).map(decodeURIComponent);
    const m = req.method;
    const get = m === "GET" || m === "HEAD";
    if (parts.length === 0 || (parts.length === 1 && parts[0] === "index.html")) {
      if (!get) throw new HttpError(405, `${m} is not allowed on ${req.path}`);
      return text(DASHBOARD_HTML, 200, "text/html; charset=utf-8");
    }
    const [head, id, sub, subId] = parts;
    if (get) {
      switch (head) {
        case "metrics":
          return text(this.metrics.render(), 200, PROMETHEUS_CONTENT_TYPE);
        case "healthz":
          return json({ status: "ok" });
        case "readyz":
          return this.port > 0 ? json({ status: "ready" }) : json({ status: "starting" }, 503);
        case "config":
          return json({ "refresh-interval": 1000, "timezone-name": Intl.DateTimeFormat().resolvedOptions().timeZone, "timezone-offset": -new Date().getTimezoneOffset() * 60_000, "flink-version": `tm ${pkg.version}`, "features": { "web-submit": false, "web-cancel": true } });
        case "overview":
          if (parts.length === 1) return json(this.overview());
          break;
        case "taskmanagers":
          if (parts.length === 1) return json({ taskmanagers: [...this.jm.taskManagers()].map((tm) => this.taskManager(tm)) });
          if (parts.length === 2) return json(this.taskManager(this.findTaskManager(id!), true));
          if (parts.length === 3 && (sub === "logs" || sub === "config")) {
            const info = await this.taskManagerInfo(this.findTaskManager(id!));
            return json(sub === "logs" ? { lines: info.logs } : info.config);
          }
          break;
        case "jobmanager":
          // Flink's /jobmanager/config: [{key, value}], secrets masked; /jobmanager/logs: this process's recent lines.
          if (parts.length === 2 && id === "config") return json(maskedConfig(this.jm.config));
          if (parts.length === 2 && id === "logs") return json({ lines: recentLogLines() });
          break;
        case "jobs":
          return json(this.getJobs(parts));
      }
      throw new HttpError(404, `not found: ${req.path}`);
    }
    this.authorize(req);
    if (head === "jobs" && id !== undefined) {
      const job = this.findJob(id);
      // Flink: PATCH /jobs/:jobid?mode=cancel; also POST /jobs/:jobid/cancel for clients without PATCH.
      if ((m === "PATCH" && parts.length === 2) || (m === "POST" && sub === "cancel" && parts.length === 3)) {
        const mode = req.query.get("mode") ?? "cancel";
        if (mode !== "cancel") throw new HttpError(400, `mode ${JSON.stringify(mode)} is not supported (only cancel)`);
        job.cancel();
        return json({}, 202);
      }
      if (m === "POST" && sub === "savepoints" && subId === undefined) return this.triggerSavepoint(job, await req.text());
    }
    throw new HttpError(parts.length > 0 && ["jobs", "overview", "taskmanagers", "config", "metrics"].includes(head!) ? 405 : 404, `${m} ${req.path} is not served`);
  }

  /**
   * Mutating calls (every method but GET and HEAD) need "Authorization: Bearer <token>" when a token is configured.
   * The answer to a missing or wrong token is the same 401, and the token is never logged.
   */
  private authorize(req: HttpRequest): void {
    if (this.token === null) return;
    const header = req.header("authorization");
    if (bearerMatches(header, this.token)) return;
    const challenge = header ? 'Bearer realm="tm", error="invalid_token"' : 'Bearer realm="tm"';
    throw new HttpError(401, `${req.method} needs the header "Authorization: Bearer <token>" with the cluster's REST token`, { "www-authenticate": challenge });
  }

  private getJobs(parts: string[]): unknown {
    const [, id, sub, subId, more] = parts;
    if (id === undefined) return { jobs: [...this.jm.jobs()].map((j) => ({ id: j.jobId, status: j.state })) };
    if (id === "overview" && sub === undefined) return { jobs: [...this.jm.jobs()].map((j) => this.jobOverview(j.status())) };
    const job = this.findJob(id);
    const status = job.status();
    if (sub === undefined) return this.jobDetails(job, status);
    if (sub === "plan" && subId === undefined) return { plan: this.plan(job) };
    if (sub === "config" && subId === undefined) return this.jobConfig(job);
    if (sub === "exceptions" && subId === undefined) return this.exceptions(job);
    if (sub === "vertices" && subId !== undefined && more === undefined) {
      const v = status.vertices.find((x) => String(x.id) === subId);
      if (!v) throw new HttpError(404, `job ${id} has no vertex ${subId}`);
      return { ...this.vertex(job.jobId, v), now: Date.now() };
    }
    if (sub === "checkpoints") {
      if (subId === undefined) return this.checkpoints(status);
      if (subId === "details" && more !== undefined) {
        const c = status.checkpoints.history.find((h) => String(h.id) === more);
        if (!c) throw new HttpError(404, `job ${id} has no checkpoint ${more} in its history`);
        return checkpointJson(c);
      }
    }
    if (sub === "savepoints" && subId !== undefined && more === undefined) {
      const t = this.savepoints.get(subId);
      if (!t || t.jobId !== job.jobId) throw new HttpError(404, `no savepoint trigger ${subId} for job ${id}`);
      return t.status === "IN_PROGRESS"
        ? { status: { id: "IN_PROGRESS" } }
        : { status: { id: "COMPLETED" }, operation: t.failure !== undefined ? { "failure-cause": { class: "Error", "stack-trace": t.failure } } : { location: t.location } };
    }
    throw new HttpError(404, `not found: /${parts.join("/")}`);
  }

  private overview() {
    const jobs = [...this.jm.jobs()];
    const slots = this.jm.slots();
    const count = (s: string) => jobs.filter((j) => j.state === s).length;
    return {
      taskmanagers: [...this.jm.taskManagers()].length,
      "slots-total": slots.total,
      "slots-available": slots.free,
      "jobs-running": jobs.filter((j) => !TERMINAL_JOB_STATES.has(j.state)).length,
      "jobs-finished": count("FINISHED"),
      "jobs-cancelled": count("CANCELED"),
      "jobs-failed": count("FAILED"),
      "flink-version": `tm ${pkg.version}`,
      "jobmanager-id": this.jm.id,
      "rpc-port": this.jm.port,
      "high-availability": this.jm.ha(),
    };
  }

  private taskManager(tm: TaskManagerView, details = false) {
    const slots = [...tm.slots].sort((a, b) => a[0] - b[0]).map(([index, jobId]) => ({ index, jobId }));
    const tasks: { jobId: string; executionId: string; vertex: string; subtask: number; state: TaskState; metrics: TaskMetrics }[] = [];
    for (const job of this.jm.jobs()) {
      for (const ex of job.executions.values()) {
        if (ex.tm === tm) tasks.push({ jobId: job.jobId, executionId: ex.deployment.executionId, vertex: ex.deployment.vertexName, subtask: ex.deployment.subtaskIndex, state: ex.state, metrics: ex.metrics });
      }
    }
    const live = tasks.filter((t) => t.state === "RUNNING" || t.state === "DEPLOYING");
    const sum = sumMetrics(live.map((t) => t.metrics));
    return {
      id: tm.info.resourceId,
      address: tm.info.dataHost,
      dataPort: tm.info.dataPort,
      pid: tm.info.pid,
      slotsNumber: tm.info.slots,
      freeSlots: slots.filter((s) => s.jobId === null).length,
      registeredAt: tm.registeredAt,
      lastHeartbeat: tm.lastHeartbeat,
      timeSinceLastHeartbeat: Date.now() - tm.lastHeartbeat,
      hardware: { cpuCores: tm.info.resources?.cpuCores ?? null, physicalMemory: tm.info.resources?.memoryBytes ?? null },
      metrics: { runningTasks: live.length, recordsIn: sum.recordsIn, recordsOut: sum.recordsOut, bytesIn: sum.bytesIn, bytesOut: sum.bytesOut, ...processJson(tm) },
      slots,
      ...(details ? { network: networkJson(tm), tasks: live.map((t) => ({ jobId: t.jobId, vertex: t.vertex, subtask: t.subtask, state: t.state, recordsIn: t.metrics.recordsIn, recordsOut: t.metrics.recordsOut, networkBuffers: taskBuffersJson(tm, t.executionId), keyedState: t.metrics.state ?? null })) } : {}),
    };
  }

  private jobOverview(s: JobStatus) {
    const end = s.endTime ?? -1;
    return {
      jid: s.jobId,
      name: s.name,
      state: s.state,
      "start-time": s.startTime,
      "end-time": end,
      duration: (s.endTime ?? Date.now()) - s.startTime,
      "last-modification": s.endTime ?? Date.now(),
      tasks: { total: Object.values(s.tasks).reduce((a, b) => a + b, 0), ...Object.fromEntries(TASK_STATES.map((t) => [t.toLowerCase(), s.tasks[t]])) },
    };
  }

  private jobDetails(job: JobView, s: JobStatus) {
    return {
      ...this.jobOverview(s),
      now: Date.now(),
      restarts: s.restarts,
      "records-in": s.recordsIn,
      "records-out": s.recordsOut,
      ...(s.waiting ? { waiting: waitingJson(s.waiting) } : {}),
      ...(s.error ? { error: s.error } : {}),
      vertices: s.vertices.map((v) => this.vertex(job.jobId, v)),
      plan: this.plan(job),
      checkpoints: { completed: s.checkpoints.completed, failed: s.checkpoints.failed, latest: s.checkpoints.latest ? checkpointJson(s.checkpoints.latest) : null },
    };
  }

  private vertex(jobId: string, v: VertexStatus) {
    const counts = Object.fromEntries(TASK_STATES.map((t) => [t, 0])) as Record<TaskState, number>;
    for (const st of v.subtasks) counts[st.state]++;
    const sum = v.totals; // over every attempt: not 0 while the job restarts
    const now = Date.now();
    const live = v.subtasks.filter((s) => s.state === "RUNNING");
    const bp = live.length ? Math.max(...live.map((s) => s.metrics.backPressuredTimeMsPerSecond)) / 1000 : 0;
    const busy = live.length ? Math.max(...live.map((s) => s.metrics.busyTimeMsPerSecond)) / 1000 : 0;
    const rate = this.rates.get(`${jobId}/${v.id}`);
    return {
      id: v.id,
      name: v.name,
      parallelism: v.parallelism,
      status: vertexState(counts, v.parallelism),
      tasks: counts,
      metrics: {
        "read-records": sum.recordsIn,
        "write-records": sum.recordsOut,
        "read-bytes": sum.bytesIn,
        "write-bytes": sum.bytesOut,
        "records-in-per-second": rate?.inPerSecond ?? 0,
        "records-out-per-second": rate?.outPerSecond ?? 0,
      },
      backpressure: { ratio: Math.min(1, bp), level: backpressureLevel(bp) },
      busy: Math.min(1, busy),
      // Flink's low watermark: the minimum over the subtasks, null while one of them has none.
      watermarks: { input: lowWatermark(v.subtasks, "currentInputWatermark"), output: lowWatermark(v.subtasks, "currentOutputWatermark") },
      subtasks: v.subtasks.map((s) => ({
        subtask: s.subtask,
        status: s.state,
        attempt: s.attempt,
        taskmanager: s.taskManager,
        host: s.host,
        "start-time": s.startTime,
        "end-time": s.endTime ?? -1,
        duration: (s.endTime ?? now) - s.startTime,
        metrics: s.metrics,
        backpressure: backpressureLevel(s.metrics.backPressuredTimeMsPerSecond / 1000),
        // Fractions of the last reporting interval (0..1), as Flink's busy/back-pressured/idle ratios.
        "busy-ratio": ratio(s.metrics.busyTimeMsPerSecond),
        "backpressure-ratio": ratio(s.metrics.backPressuredTimeMsPerSecond),
        "idle-ratio": ratio(s.metrics.idleTimeMsPerSecond),
        watermarks: { input: s.metrics.currentInputWatermark ?? null, output: s.metrics.currentOutputWatermark ?? null },
      })),
    };
  }

  /**
   * Flink's /jobs/:jobid/config: the job's execution config (object reuse among it). job-parallelism is the largest
   * parallelism of its vertices (the graph keeps no job default); tm adds its own keys after Flink's.
   */
  private jobConfig(job: JobView) {
    const g = job.graph;
    return {
      jid: job.jobId,
      name: g.name,
      "execution-config": {
        "execution-mode": "PIPELINED",
        "job-parallelism": Math.max(...g.vertices.map((v) => v.parallelism)),
        "object-reuse-mode": g.objectReuse === true,
        "user-config": {},
        "max-parallelism": g.maxParallelism,
        "runtime-mode": g.runtimeMode.toUpperCase(),
        "buffer-timeout": g.bufferTimeoutMs,
        "state-backend": g.stateBackend,
      },
    };
  }

  private plan(job: JobView) {
    const g = job.graph;
    return {
      jid: job.jobId,
      name: g.name,
      type: g.runtimeMode === "batch" ? "BATCH" : "STREAMING",
      "max-parallelism": g.maxParallelism,
      nodes: g.vertices.map((v) => ({
        id: v.id,
        parallelism: v.parallelism,
        operator: v.isSource ? "Source" : "",
        description: v.name,
        inputs: g.edges.filter((e) => e.target === v.id).map((e, num) => ({ num, id: e.source, ship_strategy: e.partitioner.toUpperCase(), exchange: "pipelined_bounded" })),
      })),
    };
  }

  private checkpoints(s: JobStatus) {
    const c = s.checkpoints;
    const history = [...c.history].sort((a, b) => b.id - a.id);
    const completed = history.filter((h) => h.status === "COMPLETED");
    const durations = completed.map((h) => h.durationMs ?? 0);
    const sizes = completed.map((h) => h.sizeBytes);
    const stats = (xs: number[]) => (xs.length ? { min: Math.min(...xs), max: Math.max(...xs), avg: Math.round(xs.reduce((a, b) => a + b, 0) / xs.length) } : { min: 0, max: 0, avg: 0 });
    return {
      counts: {
        restored: c.restoredFrom ? 1 : 0,
        total: c.completed + c.failed + history.filter((h) => h.status === "IN_PROGRESS").length,
        in_progress: history.filter((h) => h.status === "IN_PROGRESS").length,
        completed: c.completed,
        failed: c.failed,
      },
      summary: { end_to_end_duration: stats(durations), state_size: stats(sizes) },
      latest: {
        completed: c.latest ? checkpointJson(c.latest) : null,
        savepoint: (() => {
          const sp = completed.find((h) => h.savepoint);
          return sp ? checkpointJson(sp) : null;
        })(),
        failed: (() => {
          const f = history.find((h) => h.status === "FAILED");
          return f ? checkpointJson(f) : null;
        })(),
        restored: c.restoredFrom ? { external_path: c.restoredFrom } : null,
      },
      history: history.map(checkpointJson),
    };
  }

  private triggerSavepoint(job: JobView, body: string): HttpResponse {
    const p = parseBody(body);
    const dir = p["target-directory"];
    const cancel = p["cancel-job"];
    if (dir !== undefined && dir !== null && typeof dir !== "string") throw new HttpError(400, "target-directory must be a string");
    if (cancel !== undefined && typeof cancel !== "boolean") throw new HttpError(400, "cancel-job must be a boolean");
    let target: string | undefined;
    try {
      target = this.jm.savepointTarget(dir || undefined);
    } catch (err) {
      throw new HttpError(400, `target-directory: ${(err as Error).message}`);
    }
    if (job.state !== "RUNNING") throw new HttpError(409, `job ${job.jobId} is ${job.state}; a savepoint needs it RUNNING`);
    const requestId = randomBytes(16).toString("hex");
    const trigger: SavepointTrigger = { jobId: job.jobId, status: "IN_PROGRESS" };
    this.savepoints.set(requestId, trigger);
    job.savepoint(target, cancel === true).then(
      (r) => Object.assign(trigger, { status: "COMPLETED", location: r.path.replace(/\/_metadata$/, "") }),
      (err: Error) => Object.assign(trigger, { status: "COMPLETED", failure: err.message }),
    );
    return json({ "request-id": requestId }, 202);
  }

  /**
   * Flink's JobExceptionsInfoWithHistory: the latest failure as root-exception, and the history newest first, each
   * entry with its task, TaskManager and the other tasks' failures of the same failover (concurrentExceptions).
   */
  private exceptions(job: JobView) {
    const entryJson = (e: Omit<ExceptionEntry, "concurrent">) => ({
      exceptionName: e.name,
      message: e.message,
      stacktrace: e.stack ?? `${e.name}: ${e.message}`,
      timestamp: e.timestamp,
      taskName: e.task,
      subtaskIndex: e.subtask,
      attempt: e.attempt,
      location: e.endpoint,
      endpoint: e.endpoint,
      taskManagerId: e.taskManagerId,
      failureLabels: {},
    });
    const history = [...job.exceptionHistory].reverse();
    const latest = history[0];
    return {
      "root-exception": latest ? (latest.stack ?? `${latest.name}: ${latest.message}`) : null,
      timestamp: latest?.timestamp ?? null,
      "failed-task": latest?.task ?? null,
      "all-exceptions": latest ? [latest, ...latest.concurrent].map((e) => ({ exception: e.stack ?? `${e.name}: ${e.message}`, task: e.task, location: e.endpoint, timestamp: e.timestamp, taskManagerId: e.taskManagerId })) : [],
      truncated: job.exceptionsTruncated,
      exceptionHistory: {
        entries: history.map((e) => ({ ...entryJson(e), concurrentExceptions: e.concurrent.map(entryJson) })),
        truncated: job.exceptionsTruncated,
      },
    };
  }

  /** A TaskManager's masked configuration and recent log lines, asked for over its RPC connection. */
  private async taskManagerInfo(tm: TaskManagerView) {
    try {
      return await this.jm.taskManagerInfo(tm.info.resourceId, TASKMANAGER_INFO_TIMEOUT_MS);
    } catch (err) {
      throw new HttpError(502, `TaskManager ${tm.info.resourceId} did not answer: ${(err as Error).message}`);
    }
  }

  private findJob(id: string): JobView {
    const job = this.jm.job(id);
    if (!job) throw new HttpError(404, `no job ${id}`);
    return job;
  }

  private findTaskManager(id: string): TaskManagerView {
    const tm = this.jm.taskManager(id);
    if (!tm) throw new HttpError(404, `no TaskManager ${id}`);
    return tm;
  }
}

/** Bodies are small JSON objects (a savepoint's target directory): more is refused with 413 as it arrives. */
const MAX_BODY_BYTES = 64 * 1024;

/**
 * A mutating call carries JSON or nothing: a form or text/plain body is what a foreign page can send without a CORS
 * preflight, so any other declared type, or a body without one, is refused with 415.
 */
function checkJsonBody(req: HttpRequest): void {
  const type = req.header("content-type");
  const mediaType = type?.split(";")[0]!.trim().toLowerCase();
  if (type === undefined ? !req.hasBody : mediaType === "application/json") return;
  throw new HttpError(415, `${req.method} ${req.path} takes a JSON body or none: send "Content-Type: application/json" (got ${type === undefined ? "a body without Content-Type" : JSON.stringify(type)})`);
}

/** host[:port] of a Host header or a rest.allowed-hosts entry, the name lower-cased without [] or a final dot. */
function splitHostHeader(value: string): { name: string; port: number | null } {
  const v = value.trim();
  const m = /^\[([^\]]*)\](?::(\d+))?$/.exec(v) ?? (v.split(":").length === 2 ? /^([^:]*):(\d+)$/.exec(v) : null);
  const name = m ? m[1]! : v;
  return { name: hostName(name), port: m?.[2] !== undefined ? Number(m[2]) : null };
}

function hostName(name: string): string {
  const n = name.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
  return net.isIPv6(n) ? canonicalIPv6(n) : n;
}

function canonicalIPv6(a: string): string {
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}

/** This host's names and addresses, the names a Host header may carry when rest.address is a wildcard address. */
function localNames(): Set<string> {
  const names = new Set([hostName(os.hostname())]);
  for (const list of Object.values(os.networkInterfaces())) for (const i of list ?? []) names.add(hostName(i.address.replace(/%.*$/, "")));
  return names;
}

/** scheme://host[:port] lower-cased, without a default port; null for "null" and anything that is not one. */
function normalizeOrigin(origin: string): string | null {
  try {
    const u = new URL(origin);
    if ((u.protocol !== "http:" && u.protocol !== "https:") || u.pathname !== "/" || u.search || u.hash || u.username) return null;
    return u.origin;
  } catch {
    return null;
  }
}

function parseBody(body: string): Record<string, any> {
  if (body.trim() === "") return {};
  try {
    const p = JSON.parse(body);
    if (typeof p === "object" && p !== null && !Array.isArray(p)) return p;
  } catch {
    // fall through
  }
  throw new HttpError(400, "the request body must be a JSON object");
}

function sumMetrics(ms: TaskMetrics[]) {
  const s = { recordsIn: 0, recordsOut: 0, bytesIn: 0, bytesOut: 0 };
  for (const m of ms) {
    s.recordsIn += m.recordsIn;
    s.recordsOut += m.recordsOut;
    s.bytesIn += m.bytesIn;
    s.bytesOut += m.bytesOut;
  }
  return s;
}

function ratio(msPerSecond: number): number {
  return Math.max(0, Math.min(1, msPerSecond / 1000));
}

function lowWatermark(subtasks: SubtaskStatus[], key: "currentInputWatermark" | "currentOutputWatermark"): number | null {
  let low = Infinity;
  for (const s of subtasks) {
    const wm = s.metrics[key];
    if (typeof wm !== "number") return null;
    low = Math.min(low, wm);
  }
  return subtasks.length > 0 ? low : null;
}

function waitingJson(w: JobWaiting) {
  return {
    reason: w.reason,
    message: w.message,
    ...(w.delayLeftMs !== undefined ? { "delay-left-ms": w.delayLeftMs } : {}),
    ...(w.slotsNeeded !== undefined ? { "slots-needed": w.slotsNeeded, "slots-free": w.slotsFree, "slots-total": w.slotsTotal, "timeout-left-ms": w.timeoutLeftMs } : {}),
    ...(w.tasksLeft !== undefined ? { "tasks-left": w.tasksLeft } : {}),
  };
}

/** Heap, RSS and network buffers from the TaskManager's latest heartbeat (Flink's names where it has them). */
function processJson(tm: TaskManagerView) {
  const p = tm.process;
  if (!p) return {};
  return {
    heapUsed: p.heapUsed,
    // Bun may report more heap in use than allocated: committed is at least what is used.
    heapCommitted: Math.max(p.heapTotal, p.heapUsed),
    rss: p.rss,
    nettyShuffleMemorySegmentsTotal: p.networkBuffersTotal,
    nettyShuffleMemorySegmentsAvailable: p.networkBuffersAvailable,
    nettyShuffleMemorySegmentsUsed: p.networkBuffersTotal - p.networkBuffersAvailable,
  };
}

/** How the TaskManager's network buffers are split (from its latest heartbeat): required vs optional in use. */
function networkJson(tm: TaskManagerView) {
  const p = tm.process;
  if (!p?.network) return null;
  const n = p.network;
  return { sizing: n.sizing, segmentSize: n.segmentSize, total: p.networkBuffersTotal, requiredInUse: n.requiredInUse, optionalInUse: n.optionalInUse, free: p.networkBuffersAvailable };
}

/** A task's network buffers: its minimum, what it holds, its configured size and how far below that it is. */
function taskBuffersJson(tm: TaskManagerView, executionId: string) {
  const t = tm.process?.network?.tasks.find((x) => x.executionId === executionId);
  return t ? { required: t.required, held: t.held, configured: t.configured, belowConfigured: t.configured - t.held } : null;
}

function vertexState(c: Record<TaskState, number>, parallelism: number): string {
  if (c.FAILED > 0) return "FAILED";
  if (c.CANCELING > 0) return "CANCELING";
  if (c.RUNNING > 0) return "RUNNING";
  if (c.DEPLOYING > 0) return "DEPLOYING";
  if (c.FINISHED === parallelism) return "FINISHED";
  if (c.CANCELED > 0) return "CANCELED";
  return "CREATED";
}

function checkpointJson(c: CheckpointStats) {
  return {
    id: c.id,
    status: c.status,
    is_savepoint: c.savepoint,
    trigger_timestamp: c.triggerTime,
    end_to_end_duration: c.durationMs,
    state_size: c.sizeBytes,
    num_acknowledged_subtasks: c.acknowledged,
    num_subtasks: c.total,
    // Flink's names: the type, the in-flight data an unaligned checkpoint persisted, and per vertex (keyed by its
    // id, as Flink's "tasks") the longest start delay and alignment over its subtasks.
    checkpoint_type: c.savepoint ? "SAVEPOINT" : c.unaligned ? "UNALIGNED_CHECKPOINT" : "CHECKPOINT",
    persisted_data: c.channelStateBytes ?? 0,
    tasks: Object.fromEntries((c.vertices ?? []).map((v) => [String(v.vertexId), { name: v.name, num_acknowledged_subtasks: v.acknowledged, start_delay: v.startDelayMs, alignment_duration: v.alignmentMs }])),
    ...(c.path ? { external_path: c.path } : {}),
    ...(c.failure ? { failure_message: c.failure } : {}),
  };
}
