// The TaskManager main thread's switchboard for record exchange: routes batches, end-of-partition events
// and credits between local task Workers (postMessage with transfer) and remote TaskManagers (DataTransport).
import type { FramedConnection } from "../rpc/connection.ts";
import { DATA_FRAME, type ChannelTarget, type TaskDeployment } from "../rpc/messages.ts";
import { channelId, INITIAL_CREDIT, parseChannelId, type ToWorker } from "../runtime/worker-protocol.ts";
import { createLogger } from "../util/log.ts";
import { DataTransport } from "./data-transport.ts";

const log = createLogger("shuffle");

/** A running task as the switchboard sees it. */
export interface TaskEndpoint {
  post(msg: ToWorker, transfer?: Transferable[]): void;
  fail(err: Error): void;
}

type Inbound = Extract<ToWorker, { type: "data" | "end" }>;

export class ShuffleEnvironment {
  readonly transport: DataTransport;
  private readonly consumers = new Map<string, TaskEndpoint>();
  private readonly producers = new Map<string, { task: TaskEndpoint; target: ChannelTarget }>();
  /** Remote channels: the connection their data came in on, where credit goes back. */
  private readonly creditRoutes = new Map<string, FramedConnection>();
  /** Data for consumers not deployed yet; bounded by the credit a producer starts with. */
  private readonly pending = new Map<string, Inbound[]>();
  private readonly releasedJobs = new Set<string>();

  constructor(private readonly resourceId: string) {
    this.transport = new DataTransport(resourceId, {
      onFrame: (conn, frame) => this.onRemoteFrame(conn, frame),
      onPeerFailed: (peer, err) => this.onPeerFailed(peer, err),
      onInboundClosed: (conn, err) => this.onInboundClosed(conn, err),
    });
  }

  registerTask(d: TaskDeployment, task: TaskEndpoint): void {
    this.releasedJobs.delete(d.jobId);
    for (const input of d.inputs) {
      for (const p of input.producers) {
        const ch = channelId(d.jobId, input.edgeId, p, d.subtaskIndex);
        this.consumers.set(ch, task);
        const waiting = this.pending.get(ch);
        if (waiting) {
          this.pending.delete(ch);
          for (const m of waiting) task.post(m, m.type === "data" ? [m.bytes.buffer as ArrayBuffer] : []);
        }
      }
    }
    for (const o of d.outputs) {
      for (const target of o.targets) this.producers.set(channelId(d.jobId, o.edgeId, d.subtaskIndex, target.subtask), { task, target });
    }
  }

  unregisterTask(d: TaskDeployment, task: TaskEndpoint): void {
    for (const input of d.inputs) {
      for (const p of input.producers) {
        const ch = channelId(d.jobId, input.edgeId, p, d.subtaskIndex);
        if (this.consumers.get(ch) === task) this.consumers.delete(ch);
        this.creditRoutes.delete(ch);
      }
    }
    for (const o of d.outputs) {
      for (const target of o.targets) {
        const ch = channelId(d.jobId, o.edgeId, d.subtaskIndex, target.subtask);
        if (this.producers.get(ch)?.task === task) this.producers.delete(ch);
      }
    }
  }

  /** Drops what is left of a finished, failed or canceled job (pending data, routes). */
  releaseJob(jobId: string): void {
    const prefix = `${jobId}|`;
    for (const map of [this.pending, this.creditRoutes, this.consumers, this.producers] as Map<string, unknown>[]) {
      for (const ch of map.keys()) if (ch.startsWith(prefix)) map.delete(ch);
    }
    this.releasedJobs.add(jobId);
    if (this.releasedJobs.size > 1000) this.releasedJobs.delete(this.releasedJobs.values().next().value!);
  }

  /** A producer Worker sent a batch or end-of-partition; a consumer Worker handed back credit. */
  fromWorker(msg: { type: "data"; channel: string; bytes: Uint8Array } | { type: "end"; channel: string } | { type: "credit"; channel: string; n: number }): void {
    if (msg.type === "credit") {
      const local = this.producers.get(msg.channel);
      if (local && local.target.resourceId === this.resourceId) local.task.post(msg);
      else this.creditRoutes.get(msg.channel)?.send([DATA_FRAME.CREDIT, msg.channel, msg.n]);
      return;
    }
    const route = this.producers.get(msg.channel);
    if (!route) return; // the job was released meanwhile
    if (route.target.resourceId === this.resourceId) this.deliver(msg);
    else if (msg.type === "data") this.transport.send(route.target, [DATA_FRAME.DATA, msg.channel, msg.bytes]);
    else this.transport.send(route.target, [DATA_FRAME.END, msg.channel]);
  }

  private deliver(msg: Inbound): void {
    const consumer = this.consumers.get(msg.channel);
    if (consumer) {
      consumer.post(msg, msg.type === "data" ? [msg.bytes.buffer as ArrayBuffer] : []);
      return;
    }
    if (this.releasedJobs.has(parseChannelId(msg.channel)?.jobId ?? "")) return;
    const waiting = this.pending.get(msg.channel) ?? [];
    if (waiting.length > INITIAL_CREDIT) throw new Error(`channel ${msg.channel} sent more batches than its credit allows`);
    waiting.push(msg);
    this.pending.set(msg.channel, waiting);
  }

  private onRemoteFrame(conn: FramedConnection, frame: unknown): void {
    try {
      if (!Array.isArray(frame) || typeof frame[1] !== "string" || parseChannelId(frame[1]) === null) {
        throw new Error("malformed data frame: expected [kind, channelId, ...]");
      }
      const ch = frame[1] as string;
      switch (frame[0]) {
        case DATA_FRAME.DATA: {
          if (!(frame[2] instanceof Uint8Array)) throw new Error(`data frame for ${ch} carries no bytes`);
          this.creditRoutes.set(ch, conn);
          // Copy into a buffer of its own so it can be transferred to the Worker.
          this.deliver({ type: "data", channel: ch, bytes: new Uint8Array(frame[2]) });
          break;
        }
        case DATA_FRAME.END:
          this.deliver({ type: "end", channel: ch });
          break;
        case DATA_FRAME.CREDIT: {
          const n = frame[2];
          if (!Number.isInteger(n) || (n as number) < 1) throw new Error(`credit frame for ${ch} has a bad count ${JSON.stringify(n)}`);
          this.producers.get(ch)?.task.post({ type: "credit", channel: ch, n: n as number });
          break;
        }
        default:
          throw new Error(`unknown data frame kind ${JSON.stringify(frame[0])}`);
      }
    } catch (err) {
      log.error("closing data connection after a bad frame", { peer: conn.remoteAddress, error: (err as Error).message });
      conn.close(err as Error);
    }
  }

  private onInboundClosed(conn: FramedConnection, err: Error): void {
    const failed = new Set<TaskEndpoint>();
    for (const [ch, route] of this.creditRoutes) {
      if (route !== conn) continue;
      this.creditRoutes.delete(ch);
      const consumer = this.consumers.get(ch);
      if (consumer && !failed.has(consumer)) {
        failed.add(consumer);
        consumer.fail(new Error(`the data connection from ${conn.remoteAddress} closed while channel ${ch} was open: ${err.message}`));
      }
    }
  }

  private onPeerFailed(peer: string, err: Error): void {
    log.warn("data connection to a peer TaskManager failed", { peer, error: err.message });
    const failed = new Set<TaskEndpoint>();
    for (const [, p] of this.producers) {
      if (`${p.target.dataHost}:${p.target.dataPort}` === peer && !failed.has(p.task)) {
        failed.add(p.task);
        p.task.fail(new Error(`lost the data connection to TaskManager ${p.target.resourceId} at ${peer}: ${err.message}`));
      }
    }
  }
}
