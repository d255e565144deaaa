// Messages between a TaskManager's main thread and a task's Worker.
import type { ErrorInfo, TaskDeployment, TaskMetrics } from "../rpc/messages.ts";

export type ToWorker =
  | { type: "init"; deployment: TaskDeployment; artifactPath: string }
  | { type: "data"; channel: string; bytes: Uint8Array }
  | { type: "end"; channel: string }
  | { type: "credit"; channel: string; n: number };

export type FromWorker =
  | { type: "running" }
  | { type: "data"; channel: string; bytes: Uint8Array }
  | { type: "end"; channel: string }
  | { type: "credit"; channel: string; n: number }
  | { type: "metrics"; metrics: TaskMetrics }
  | { type: "finished"; metrics: TaskMetrics }
  | { type: "failed"; error: ErrorInfo };

/** Channel ids are unique per TaskManager pair: job, edge, producer subtask, consumer subtask. */
export function channelId(jobId: string, edgeId: number, producer: number, consumer: number): string {
  return `${jobId}|${edgeId}|${producer}|${consumer}`;
}

export function parseChannelId(id: string): { jobId: string; edgeId: number; producer: number; consumer: number } | null {
  const parts = id.split("|");
  if (parts.length !== 4) return null;
  const [jobId, e, p, c] = parts as [string, string, string, string];
  const edgeId = Number(e), producer = Number(p), consumer = Number(c);
  if (!jobId || !Number.isInteger(edgeId) || !Number.isInteger(producer) || !Number.isInteger(consumer)) return null;
  return { jobId, edgeId, producer, consumer };
}

/** Batches a channel may have in flight before the consumer hands credit back. */
export const INITIAL_CREDIT = 4;
