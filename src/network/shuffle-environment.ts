// The TaskManager main thread's part of the network stack: the TaskManager's network buffers
// (BufferBudget, buffer-budget.ts: every task gets its required minimum and a share of the rest), and wiring:
// - local channels: one ring in shared memory per channel, so buffers move Worker to Worker (its slots are the
//   consumer's input buffers);
// - remote channels: a ring between the task's Worker and this thread at each end, the sending end in
//   remote-sender.ts (buffers go out from the ring against credit), the receiving end in remote-receiver.ts
//   (exclusive and floating buffers, credit), the TCP connections in data-transport.ts.
import type { FramedConnection } from "../rpc/framed-connection.ts";
import { DATA_FRAME, channelId, channelJob, parseChannelId, type ChannelRing, type DebloatOptions, type NetworkGrant, type TaskEndpoint } from "./wire.ts";
import { createLogger } from "../util/log.ts";
import { DataTransport } from "./data-transport.ts";
import { createRing } from "./shared-ring.ts";
import { PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES } from "./channel-ends.ts";
import { isPriorityEvent, type ChannelEvent } from "./record-writer.ts";
import { BufferBudget, InsufficientBuffersError, type BudgetReport, type TaskBufferReport, type TaskBuffers } from "./buffer-budget.ts";
import { RemoteSender } from "./remote-sender.ts";
import { RemoteReceiver, type FloatingPool } from "./remote-receiver.ts";

export { InsufficientBuffersError };
export type { TaskEndpoint };

const log = createLogger("shuffle");

export interface NetworkOptions {
  segmentSize: number;
  totalBuffers: number;
  buffersPerChannel: number;
  floatingBuffersPerGate: number;
  maxOverdraftBuffers: number;
  maxBuffersPerChannel: number;
  /** Buffer debloating (FLIP-183), when enabled. */
  debloat?: DebloatOptions;
  /** Task slots of the TaskManager (sizing rings, see buffer-budget.ts); default 1. */
  slots?: number;
  /** The configuration key(s) a deployment that cannot get its minimum should raise. */
  raiseHint?: string;
}

/** What a task holds of the network buffers, for the TaskManager page and the metrics. */
export interface NetworkReport extends BudgetReport {
  segmentSize: number;
  tasks: ({ executionId: string; name: string } & TaskBufferReport)[];
}

export class ShuffleEnvironment {
  readonly transport: DataTransport;
  private readonly budget: BufferBudget<TaskEndpoint>;
  private readonly sender: RemoteSender;

  /** Whether a consumer's partition request for channel ch arrived before its producer was deployed here. */
  hasEarlyCredit(ch: string): boolean {
    return this.sender.hasEarlyCredit(ch);
  }
  private readonly receiver: RemoteReceiver;
  private readonly localProducers = new Map<string, TaskEndpoint>();
  private readonly localConsumers = new Map<string, TaskEndpoint>();
  /** The floating buffers of each task's remote input gates (in deployment.inputs order, null when all local). */
  private readonly gates = new Map<TaskEndpoint, (FloatingPool | null)[]>();
  /** Channels of tasks that ended: late frames for them are dropped, not treated as a bad peer. */
  private readonly closedChannels = new Set<string>();
  private readonly releasedJobs = new Set<string>();
  /** Tasks resized by the budget since this was last reset (for the log). */
  private resized = 0;

  constructor(
    private readonly resourceId: string,
    readonly options: NetworkOptions,
  ) {
    this.transport = new DataTransport(
      resourceId,
      {
        onFrame: (conn, frame) => this.onRemoteFrame(conn, frame),
        onConnectionClosed: (peer, conn, err) => this.onConnectionClosed(peer, conn, err),
      },
      options.segmentSize * 2 + 64 * 1024,
    );
    this.budget = new BufferBudget<TaskEndpoint>(
      {
        totalBuffers: options.totalBuffers,
        buffersPerChannel: options.buffersPerChannel,
        floatingBuffersPerGate: options.floatingBuffersPerGate,
        slots: options.slots ?? 1,
        raiseHint: options.raiseHint ?? "taskmanager.network.numberOfBuffers",
      },
      (task, b) => this.onResize(task, b),
    );
    this.sender = new RemoteSender((ch) => this.closedChannels.add(ch));
    // A priority event overtakes at most the producer's remote ring (buffers-per-channel + floating-buffers-per-gate
    // slots at most, the cluster's configuration).
    this.receiver = new RemoteReceiver(options.segmentSize, (to, frame) => this.transport.send(to, frame), options.buffersPerChannel + options.floatingBuffersPerGate);
  }

  /** Network buffers of the TaskManager that no task holds. */
  get availableBuffers(): number {
    return this.budget.free;
  }

  /** How the pool is split: required and optional buffers in use, and each task's share against its configuration. */
  report(): NetworkReport {
    const tasks: NetworkReport["tasks"] = [];
    for (const t of this.gates.keys()) {
      const r = this.budget.taskReport(t);
      if (r) tasks.push({ executionId: t.deployment.executionId, name: `${t.deployment.vertexName} (${t.deployment.subtaskIndex + 1}/${t.deployment.parallelism})`, ...r });
    }
    return { ...this.budget.report(), segmentSize: this.options.segmentSize, tasks };
  }

  /** The task's buffers now (required, held, configured), or undefined when it holds none. */
  taskBuffers(task: TaskEndpoint): TaskBufferReport | undefined {
    return this.budget.taskReport(task);
  }

  /**
   * Reserves the task's buffers: at least its required minimum (else InsufficientBuffersError with the numbers),
   * plus what the pool can spare of the rest.
   */
  reserve(task: TaskEndpoint): NetworkGrant {
    const o = this.options;
    const b = this.budget.register(task, task.deployment, this.resourceId);
    this.gates.set(task, []);
    const r = this.budget.report();
    const mine = this.budget.taskReport(task)!;
    log.info("network buffers reserved", {
      task: `${task.deployment.vertexName} (${task.deployment.subtaskIndex + 1}/${task.deployment.parallelism})`,
      required: mine.required,
      held: mine.held,
      configured: mine.configured,
      belowConfigured: mine.configured - mine.held,
      pool: `${r.requiredInUse} required + ${r.optionalInUse} optional in use, ${r.free} free of ${r.total}`,
    });
    return { segmentSize: o.segmentSize, outputBuffers: [...b.outputBuffers], maxOverdraft: o.maxOverdraftBuffers, maxBuffersPerChannel: o.maxBuffersPerChannel, ...(o.debloat ? { debloat: o.debloat } : {}) };
  }

  /** Wires the task's channels. Its Worker must already have been sent its init message. */
  wire(task: TaskEndpoint): void {
    const d = task.deployment;
    const o = this.options;
    const b = this.budget.buffersOf(task);
    if (!b) throw new Error(`task ${d.executionId} is wired before its network buffers were reserved`);
    this.releasedJobs.delete(d.jobId);

    // One ring per channel, handed to the Workers that use it in one connect message per task: a local channel's
    // once both of its tasks are here, a remote channel's at once (this thread is its other end). A local ring
    // is sized by its consumer, which reserved its slots.
    const connects = new Map<TaskEndpoint, { produce: ChannelRing[]; consume: ChannelRing[] }>();
    const connect = (t: TaskEndpoint) => {
      let c = connects.get(t);
      if (!c) connects.set(t, (c = { produce: [], consume: [] }));
      return c;
    };
    const link = (ch: string, producer: TaskEndpoint, consumer: TaskEndpoint) => {
      const ring = createRing(this.budget.buffersOf(consumer)?.ringSlots ?? 1, o.segmentSize);
      // Unaligned checkpoints: a barrier must not wait for a slot of a ring full of data (channel-ends.ts).
      const priority = consumer.deployment.unalignedCheckpoints ? createRing(PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES) : undefined;
      connect(producer).produce.push({ channel: ch, ring, ...(priority ? { priority } : {}) });
      connect(consumer).consume.push({ channel: ch, ring, ...(priority ? { priority } : {}) });
    };
    for (const out of d.outputs) {
      for (const t of out.targets) {
        const ch = channelId(channelJob(d), out.edgeId, d.subtaskIndex, t.subtask);
        if (t.resourceId === this.resourceId) {
          this.localProducers.set(ch, task);
          const consumer = this.localConsumers.get(ch);
          if (consumer) link(ch, task, consumer);
        } else {
          const ring = createRing(b.ringSlots, o.segmentSize);
          // Unaligned checkpoints: the producer's priority events reach this thread beside the data (remote-sender.ts).
          const priority = d.unalignedCheckpoints ? createRing(PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES) : undefined;
          connect(task).produce.push({ channel: ch, ring, remote: true, ...(priority ? { priority } : {}) });
          this.sender.add(ch, task, ring, priority);
        }
      }
    }
    const gates = this.gates.get(task)!;
    d.inputs.forEach((input, i) => {
      const remote = input.producers.some((p) => p.resourceId !== this.resourceId);
      const gate = remote ? this.receiver.newGate(b.floating[i]!) : null;
      gates.push(gate);
      for (const p of input.producers) {
        const ch = channelId(channelJob(d), input.edgeId, p.subtask, d.subtaskIndex);
        if (p.resourceId === this.resourceId) {
          this.localConsumers.set(ch, task);
          const producer = this.localProducers.get(ch);
          if (producer) link(ch, producer, task);
          continue;
        }
        const ring = createRing(b.ringSlots, o.segmentSize);
        // Unaligned checkpoints: priority events go to the consumer ahead of the data in its ring (remote-receiver.ts).
        const priority = d.unalignedCheckpoints ? createRing(PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES) : undefined;
        connect(task).consume.push({ channel: ch, ring, remote: true, ...(priority ? { priority } : {}) });
        this.receiver.add(ch, task, p, gate!, b.exclusive, ring, priority);
      }
    });
    for (const [t, c] of connects) t.post({ type: "connect", produce: c.produce, consume: c.consume });
  }

  /** The budget moved buffers between tasks: new output pool sizes to the Worker, floating buffers here. */
  private onResize(task: TaskEndpoint, b: TaskBuffers): void {
    this.resized++;
    task.post({ type: "resizeOutputPools", outputBuffers: [...b.outputBuffers] });
    const gates = this.gates.get(task);
    gates?.forEach((g, i) => g && this.receiver.resizeGate(g, b.floating[i]!));
  }

  /**
   * The task ended: its buffers go back to the pool (and to the tasks below their configuration). A finished
   * producer's remote channels keep draining (their end-of-partition may still wait for a connection); those of
   * a failed or canceled task are dropped.
   */
  unregisterTask(task: TaskEndpoint, finished: boolean): void {
    const d = task.deployment;
    this.gates.delete(task);
    this.resized = 0;
    this.budget.unregister(task);
    if (this.resized > 0) {
      // The ended task's buffers went to the tasks below their configuration: say how far below they still are.
      const r = this.report();
      const below = r.tasks.filter((t) => t.held < t.configured);
      log.info("network buffers redistributed", {
        grown: this.resized,
        belowConfigured: below.length,
        missing: below.reduce((n, t) => n + t.configured - t.held, 0),
        pool: `${r.requiredInUse} required + ${r.optionalInUse} optional in use, ${r.free} free of ${r.total}`,
      });
    }
    for (const input of d.inputs) {
      for (const p of input.producers) {
        const ch = channelId(channelJob(d), input.edgeId, p.subtask, d.subtaskIndex);
        if (this.localConsumers.get(ch) === task) this.localConsumers.delete(ch);
        this.receiver.remove(ch, task);
        this.closedChannels.add(ch);
      }
    }
    for (const out of d.outputs) {
      for (const t of out.targets) {
        const ch = channelId(channelJob(d), out.edgeId, d.subtaskIndex, t.subtask);
        if (this.localProducers.get(ch) === task) this.localProducers.delete(ch);
        if (!this.sender.producerEnded(ch, task, finished)) this.closedChannels.add(ch);
      }
    }
  }

  /** Drops what is left of a finished, failed or canceled job. */
  releaseJob(jobId: string): void {
    // Channels of every attempt of the job: "<job>|..." and "<job>.<attempt>|...".
    const ofJob = (ch: string) => ch.startsWith(`${jobId}|`) || ch.startsWith(`${jobId}.`);
    for (const ch of this.closedChannels) if (ofJob(ch)) this.closedChannels.delete(ch);
    this.sender.releaseJob(ofJob);
    this.receiver.releaseJob(ofJob);
    this.releasedJobs.add(jobId);
    if (this.releasedJobs.size > 1000) this.releasedJobs.delete(this.releasedJobs.values().next().value!);
  }

  private onRemoteFrame(conn: FramedConnection, frame: unknown): void {
    try {
      if (!Array.isArray(frame) || typeof frame[1] !== "string") throw new Error("malformed data frame: expected [kind, channelId, ...]");
      const ch = frame[1] as string;
      const parsed = parseChannelId(ch);
      if (parsed === null) throw new Error(`malformed channel id ${JSON.stringify(ch)}`);
      const stale = this.closedChannels.has(ch) || this.releasedJobs.has(parsed.jobId.split(".")[0]!);
      switch (frame[0]) {
        case DATA_FRAME.CREDIT: {
          const n = frame[2];
          if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > 1 << 20) throw new Error(`credit frame for ${ch} has a bad count ${JSON.stringify(n)}`);
          const size = frame[3];
          if (size !== undefined && (!Number.isInteger(size) || (size as number) < 1 || (size as number) > 0x7fffffff)) throw new Error(`credit frame for ${ch} has a bad buffer size ${JSON.stringify(size)}`);
          this.sender.onCredit(conn, ch, n as number, stale, size as number | undefined);
          break;
        }
        case DATA_FRAME.DATA: {
          if (!this.receiver.has(ch)) {
            if (stale) break;
            throw new Error(`data for unknown channel ${ch}`);
          }
          const bytes = frame[2];
          const backlog = frame[3];
          if (!(bytes instanceof Uint8Array)) throw new Error(`data frame for ${ch} carries no bytes`);
          if (bytes.length > this.options.segmentSize) throw new Error(`data frame for ${ch} is larger than a buffer (${bytes.length} bytes)`);
          if (!Number.isInteger(backlog) || (backlog as number) < 0) throw new Error(`data frame for ${ch} has a bad backlog`);
          if (bytes.length === 0) throw new Error(`data frame for ${ch} is empty`);
          this.receiver.onData(ch, bytes, backlog as number);
          break;
        }
        case DATA_FRAME.EVENT: {
          if (!this.receiver.has(ch)) {
            if (stale) break;
            throw new Error(`event for unknown channel ${ch}`);
          }
          const event = frame[2] as ChannelEvent;
          if (!isChannelEvent(event)) throw new Error(`bad event on ${ch}`);
          const overtaken = frame[3];
          if (overtaken !== undefined && (!Number.isInteger(overtaken) || (overtaken as number) < 1 || !isPriorityEvent(event))) {
            throw new Error(`event frame for ${ch} has a bad count of overtaken buffers ${JSON.stringify(overtaken)} (only a priority event overtakes, at least 1 buffer)`);
          }
          this.receiver.onEvent(ch, event, (overtaken as number | undefined) ?? 0);
          break;
        }
        case DATA_FRAME.OVERTAKEN: {
          if (!this.receiver.has(ch)) {
            if (stale) break;
            throw new Error(`overtaken buffer for unknown channel ${ch}`);
          }
          const bytes = frame[2];
          if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new Error(`overtaken buffer frame for ${ch} carries no bytes`);
          if (bytes.length > this.options.segmentSize) throw new Error(`overtaken buffer frame for ${ch} is larger than a buffer (${bytes.length} bytes)`);
          this.receiver.onOvertaken(ch, bytes);
          break;
        }
        default:
          throw new Error(`unknown data frame kind ${JSON.stringify(frame[0])}`);
      }
    } catch (err) {
      const peer = (conn.peer as { id?: string } | null)?.id ?? "?";
      log.error("closing a data connection after a bad frame", { peer, address: conn.remoteAddress, error: (err as Error).message });
      conn.close(err as Error);
    }
  }

  private onConnectionClosed(peer: string, conn: FramedConnection | null, err: Error): void {
    const failed = new Set<TaskEndpoint>();
    const fail = (task: TaskEndpoint | null, what: string) => {
      if (!task || failed.has(task)) return;
      failed.add(task);
      task.fail(new Error(`${what} (TaskManager ${peer}): ${err.message}`));
    };
    this.receiver.onConnectionClosed(peer, (task) => fail(task, "lost the data connection to a producer"));
    this.sender.onConnectionClosed(conn, (task) => fail(task, "lost the data connection to a consumer"));
  }
}

const EVENT_TYPES = new Set(["end", "endOfData", "barrier", "cancelBarrier", "watermark", "latencyMarker"]);

/** An event from a peer: a known type, and a latency marker's fields numbers (they feed metrics). */
function isChannelEvent(e: unknown): e is ChannelEvent {
  if (typeof e !== "object" || e === null || !EVENT_TYPES.has((e as ChannelEvent).type)) return false;
  if ((e as ChannelEvent).type !== "latencyMarker") return true;
  const m = e as Extract<ChannelEvent, { type: "latencyMarker" }>;
  return Number.isFinite(m.markedTime) && Number.isInteger(m.sourceVertexId) && m.sourceVertexId >= 0 && Number.isInteger(m.sourceSubtask) && m.sourceSubtask >= 0;
}
