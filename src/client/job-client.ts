// Client side of job submission: hands a prepared job to a JobManager and follows it to its end.
import { defaultConfig, type Config } from "../config/index.ts";
import { connectRpc, type FramedOptions, type RpcConnection } from "../rpc/connection.ts";
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

export async function submitJob(rpc: RpcConnection, job: PreparedJob & { fromSavepoint?: string }): Promise<string> {
  const payload = { artifact: job.artifact, jobArgs: job.jobArgs, graph: job.graph, ...(job.fromSavepoint ? { fromSavepoint: job.fromSavepoint } : {}) };
  const { jobId } = await rpc.request("submitJob", payload, 120_000);
  return jobId;
}

/** Polls the job's status until it is terminal, calling onChange whenever its state changes. */
export async function waitForJob(rpc: RpcConnection, jobId: string, onChange: (s: JobStatus) => void, pollMs = 200): Promise<JobStatus> {
  let last = "";
  for (;;) {
    const status = await rpc.request("jobStatus", { jobId });
    if (status.state !== last) {
      last = status.state;
      onChange(status);
    }
    if (TERMINAL_JOB_STATES.has(status.state)) return status;
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

export function describeStatus(s: JobStatus): string {
  const secs = (((s.endTime ?? Date.now()) - s.startTime) / 1000).toFixed(2);
  let line = `Job "${s.name}" (${s.jobId}) ${s.state}`;
  if (s.endTime !== null) line += ` after ${secs} s; ${s.recordsIn} records read by sources, ${s.recordsOut} records into sinks`;
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
