// Client side of job submission: hands a prepared job to a JobManager and follows it to its end.
import { defaultConfig, type Config } from "../config/index.ts";
import { connectRpc, type RpcConnection } from "../rpc/rpc-connection.ts";
import type { FramedOptions } from "../rpc/framed-connection.ts";
import { PROTOCOL_VERSION, TERMINAL_JOB_STATES, type JobStatus } from "../rpc/messages.ts";
import { securityFromConfig } from "../rpc/security.ts";
import type { PreparedJob } from "./prepare-job.ts";

/** Secret, TLS and limits of client connections, from a config (the secret file, or TM_SECURITY_AUTH_SECRET). */
export function clientOptions(config: Config): FramedOptions {
  return { security: securityFromConfig(config), maxFrameBytes: config["rpc.max-frame-size"], handshakeTimeoutMs: config["rpc.handshake-timeout"] };
}

let processClientOptions: FramedOptions | null = null;

/** Makes connectClient() without options use this config's security (the CLI calls it once it has its config). */
export function useClientConfig(config: Config): void {
  processClientOptions = clientOptions(config);
}

export async function connectClient(host: string, port: number, opts?: FramedOptions): Promise<RpcConnection> {
  opts ??= processClientOptions ?? clientOptions(defaultConfig());
  return connectRpc(
    host,
    port,
    { version: PROTOCOL_VERSION, role: "client", id: `client-${process.pid}` },
    (type) => {
      throw new Error(`a client does not serve ${type}`);
    },
    opts,
  );
}

export interface SubmitOptions {
  fromSavepoint?: string;
  /** With fromSavepoint: drop state of operators the job does not have instead of refusing. */
  allowNonRestoredState?: boolean;
  /** Called with the JobManager's warnings (stateful operators without uid). */
  onWarning?: (warning: string) => void;
}

export async function submitJob(rpc: RpcConnection, job: PreparedJob & SubmitOptions): Promise<string> {
  const payload = {
    artifact: job.artifact,
    jobArgs: job.jobArgs,
    graph: job.graph,
    ...(job.fromSavepoint ? { fromSavepoint: job.fromSavepoint } : {}),
    ...(job.allowNonRestoredState ? { allowNonRestoredState: true } : {}),
  };
  const { jobId, warnings } = await rpc.request("submitJob", payload, 120_000);
  for (const w of warnings ?? []) job.onWarning?.(w);
  return jobId;
}

/**
 * Polls the job's status until it is terminal, calling onChange whenever its state changes and onPoll (if given)
 * with every status polled.
 */
export async function waitForJob(
  rpc: RpcConnection,
  jobId: string,
  onChange: (s: JobStatus) => void,
  pollMs = 200,
  onPoll?: (s: JobStatus) => void,
): Promise<JobStatus> {
  let last = "";
  for (;;) {
    const status = await rpc.request("jobStatus", { jobId });
    if (status.state !== last) {
      last = status.state;
      onChange(status);
    }
    onPoll?.(status);
    if (TERMINAL_JOB_STATES.has(status.state)) return status;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

export interface ProgressOptions {
  /** Where lines go (normally process.stderr.write). */
  write: (text: string) => void;
  /** A terminal: one status line redrawn in place; otherwise plain lines. */
  tty: boolean;
  /** Terminal width, to keep the redrawn line on one row (default 120). */
  columns?: number;
  /** Redraw interval on a terminal (default 1000 ms). */
  refreshMs?: number;
  /** Interval of the summary lines while RUNNING when not on a terminal (default 5000 ms). */
  summaryMs?: number;
  now?: () => number;
}

/**
 * Live progress of a job for `local` and `submit`, fed with every polled status (waitForJob's onChange and onPoll).
 * On a terminal: a status line (state, records, records/s, restarts, last checkpoint and its age) redrawn in place
 * about once a second with a carriage return and an erase-line sequence, and a permanent line per state change.
 * Otherwise: one line per state change, plus one summary line every summaryMs while RUNNING.
 */
export class JobProgress {
  private readonly refreshMs: number;
  private readonly summaryMs: number;
  private readonly now: () => number;
  private lastState = "";
  private lastOutput = 0;
  /** Records read by the sources over the last seconds, for records/s. */
  private samples: { t: number; records: number }[] = [];
  private rate = 0;
  private drawn = false;

  constructor(private readonly opts: ProgressOptions) {
    this.refreshMs = opts.refreshMs ?? 1000;
    this.summaryMs = opts.summaryMs ?? 5000;
    this.now = opts.now ?? Date.now;
  }

  /** Call with every polled status; returns nothing, writes when something is due. */
  update(s: JobStatus): void {
    const t = this.now();
    this.measureRate(s, t);
    const changed = s.state !== this.lastState;
    this.lastState = s.state;
    const terminal = TERMINAL_JOB_STATES.has(s.state);
    if (this.opts.tty) {
      if (changed) {
        this.clear();
        this.opts.write(describeStatus(s) + "\n");
      }
      if (!terminal && (changed || t - this.lastOutput >= this.refreshMs)) {
        this.clear();
        this.opts.write(this.fit(progressLine(s, this.rate, t)));
        this.drawn = true;
        this.lastOutput = t;
      }
      return;
    }
    if (changed) {
      this.opts.write(describeStatus(s) + "\n");
      this.lastOutput = t;
    } else if (s.state === "RUNNING" && t - this.lastOutput >= this.summaryMs) {
      this.opts.write(progressLine(s, this.rate, t) + "\n");
      this.lastOutput = t;
    }
  }

  /** Erases the status line (a terminal only), e.g. before other output or at the end. */
  clear(): void {
    if (this.drawn) this.opts.write("\r\x1b[2K");
    this.drawn = false;
  }

  private measureRate(s: JobStatus, t: number): void {
    if (s.state !== "RUNNING") {
      this.samples = [];
      this.rate = 0;
      return;
    }
    if (this.samples.length > 0 && s.recordsIn < this.samples[this.samples.length - 1]!.records) this.samples = []; // restarted
    this.samples.push({ t, records: s.recordsIn });
    // Metrics arrive with heartbeats (about once a second) and sources count in batches: average over 5 s.
    while (this.samples.length > 2 && t - this.samples[1]!.t >= 5000) this.samples.shift();
    const first = this.samples[0]!;
    this.rate = t - first.t >= 1000 ? ((s.recordsIn - first.records) * 1000) / (t - first.t) : 0;
  }

  private fit(line: string): string {
    const cols = this.opts.columns || 120; // a pseudo-terminal without a size reports 0
    return line.length < cols ? line : line.slice(0, Math.max(1, cols - 2)) + "…";
  }
}

/**
 * One line of a running job's progress: state, elapsed time, records (over every attempt), records/s, restarts, last
 * checkpoint, and what a RESTARTING job waits for.
 */
export function progressLine(s: JobStatus, recordsPerSecond: number, now = Date.now()): string {
  const secs = (((s.endTime ?? now) - s.startTime) / 1000).toFixed(0);
  let line = `${s.state} ${secs} s: ${s.recordsIn} records in, ${s.recordsOut} out, ${Math.round(recordsPerSecond)} records/s, ${s.restarts} restart(s)`;
  const latest = s.checkpoints?.latest;
  if (latest) {
    const done = latest.triggerTime + (latest.durationMs ?? 0);
    line += `, checkpoint ${latest.id} ${Math.max(0, (now - done) / 1000).toFixed(0)} s ago`;
  } else {
    line += ", no checkpoint";
  }
  // RESTARTING or SCHEDULING: what the job waits for (the restart delay, slots).
  if (s.waiting) line += `; ${s.waiting.message}`;
  return line;
}

export function describeStatus(s: JobStatus): string {
  const secs = (((s.endTime ?? Date.now()) - s.startTime) / 1000).toFixed(2);
  let line = `Job "${s.name}" (${s.jobId}) ${s.state}`;
  // The counts add up over every attempt (a restart replays records from the last checkpoint: they count again).
  if (s.endTime !== null) line += ` after ${secs} s; ${s.recordsIn} records read by sources, ${s.recordsOut} records into sinks${s.restarts > 0 ? ` over ${s.restarts + 1} attempts` : ""}`;
  if (s.restarts > 0) line += `; ${s.restarts} restart(s)`;
  if (s.checkpoints?.completed > 0) line += `; ${s.checkpoints.completed} checkpoint(s)`;
  return line;
}

export function describeFailure(s: JobStatus): string {
  if (!s.error) return "";
  let text = `Caused by: ${s.error.message}`;
  if (s.error.task) text = `Task ${s.error.task} failed.\n${text}`;
  if (s.error.stack) text += `\n${s.error.stack.split("\n").slice(1).join("\n")}`;
  return text;
}
