// The TaskManager main thread's part of the network stack:
// - accounts every task's network buffers against the TaskManager's fixed pool (NetworkBufferPool);
// - wires local channels: one ring in shared memory per channel, so buffers move Worker to Worker (its slots
//   are the consumer's input buffers, reserved from the pool);
// - remote output channels: the producer Worker writes its buffers into a ring shared with this thread (and
//   gets them back at once); they wait there until the consumer grants credit, then go out on the peer's TCP
//   connection straight from the ring;
// - remote input channels: exclusive buffers per channel plus floating buffers per gate, lent to channels
//   that report a backlog; every free buffer is announced to the producer as credit (as Flink since 1.5). An
//   arriving buffer goes straight into the consumer Worker's input ring when it has room, and its network buffer
//   is credit again at once; otherwise it waits in that buffer until the ring has room.
// The Workers are thus off the credit loop while their rings have room: credit goes back as fast as this thread
// reads the socket, and a sender reads the next buffer from the ring as soon as credit arrives.
import type { FramedConnection } from "../rpc/framed-connection.ts";
import type { ChannelTarget, TaskDeployment } from "../rpc/messages.ts";
import { DATA_FRAME, channelId, channelJob, parseChannelId, type ChannelRing, type ConnectChannels, type NetworkGrant } from "./wire.ts";
import { createLogger } from "../util/log.ts";
import { DataTransport } from "./data-transport.ts";
import { createRing, RingReader, RingWriter } from "./shared-ring.ts";
import type { ChannelEvent } from "./record-writer.ts";

const log = createLogger("shuffle");

export interface NetworkOptions {
  segmentSize: number;
  totalBuffers: number;
  buffersPerChannel: number;
  floatingBuffersPerGate: number;
  maxOverdraftBuffers: number;
  maxBuffersPerChannel: number;
}

/** A running task as the network sees it. */
export interface TaskEndpoint {
  readonly deployment: TaskDeployment;
  /** Hands the task its channels' rings (the Worker's "connect" message). */
  post(msg: ConnectChannels): void;
  fail(err: Error): void;
}

export class InsufficientBuffersError extends Error {
  override name = "InsufficientBuffersError";
}

/** Rings that nobody writes any more are waited on with this time-out, so that a wait never pins a ring. */
const RING_WAIT_MS = 1000;

interface RemoteOutput {
  task: TaskEndpoint | null; // null once the producer finished: the channel drains on its own
  conn: FramedConnection | null;
  credit: number;
  /** The producer's ring of finished buffers and events. */
  ring: RingReader;
  /** A buffer taken from the ring that waits for credit (unreleased). */
  held: Uint8Array | null;
  /** A wait for the producer to publish is pending. */
  waiting: boolean;
}

interface InputGatePool {
  floating: number; // floating buffers not lent to a channel
  spare: ArrayBuffer[]; // allocated floating buffers not in use
  channels: RemoteInput[];
}

interface RemoteInput {
  id: string;
  task: TaskEndpoint;
  producer: ChannelTarget;
  gate: InputGatePool;
  free: ArrayBuffer[];
  floatingHeld: number;
  backlog: number;
  ended: boolean;
  /** Credit granted but not yet sent to the producer. */
  unannounced: number;
  /** The consumer Worker's input ring for this channel. */
  ring: RingWriter;
  /** Arrivals waiting for room in the ring, in order (a buffer holds one of the channel's network buffers). */
  pending: ({ buf: ArrayBuffer; size: number } | { event: ChannelEvent })[];
  /** A wait for room in the ring is pending. */
  waiting: boolean;
}

export class ShuffleEnvironment {
  readonly transport: DataTransport;
  private buffersFree: number;
  private readonly reserved = new Map<TaskEndpoint, number>();
  private readonly localProducers = new Map<string, TaskEndpoint>();
  private readonly localConsumers = new Map<string, TaskEndpoint>();
  private readonly remoteOut = new Map<string, RemoteOutput>();
  private readonly remoteIn = new Map<string, RemoteInput>();
  /** Credit (partition requests) that arrived before the producer task was deployed here. */
  private readonly earlyCredit = new Map<string, { conn: FramedConnection; n: number }>();
  /** Channels of tasks that ended: late frames for them are dropped, not treated as a bad peer. */
  private readonly closedChannels = new Set<string>();
  private readonly releasedJobs = new Set<string>();
  /** Connections with a resume-on-drain callback registered. */
  private readonly drainWaits = new WeakSet<FramedConnection>();
  /** Remote input channels with credit to announce at the end of this turn. */
  private creditDue: RemoteInput[] = [];

  constructor(
    private readonly resourceId: string,
    readonly options: NetworkOptions,
  ) {
    this.buffersFree = options.totalBuffers;
    this.transport = new DataTransport(
      resourceId,
      {
        onFrame: (conn, frame) => this.onRemoteFrame(conn, frame),
        onConnectionClosed: (peer, conn, err) => this.onConnectionClosed(peer, conn, err),
      },
      options.segmentSize * 2 + 64 * 1024,
    );
  }

  /** Network buffers of the TaskManager not reserved by a task. */
  get availableBuffers(): number {
    return this.buffersFree;
  }

  /** Reserves the task's buffers; throws InsufficientBuffersError when the pool cannot give them. */
  reserve(task: TaskEndpoint): NetworkGrant {
    const d = task.deployment;
    const o = this.options;
    const outputBuffers = d.outputs.map((out) => out.targets.length * o.buffersPerChannel + o.floatingBuffersPerGate);
    // Every input channel has a ring in the consumer Worker; a remote one also has its network buffers here,
    // and a remote output channel has a ring of its own between the producer Worker and this thread.
    const gates = d.inputs.map((input) => {
      const remote = input.producers.filter((p) => p.resourceId !== this.resourceId).length;
      return (remote === 0 ? 0 : remote * o.buffersPerChannel + o.floatingBuffersPerGate) + input.producers.length * this.ringSlots;
    });
    const remoteTargets = d.outputs.reduce((n, out) => n + out.targets.filter((t) => t.resourceId !== this.resourceId).length, 0);
    const need = outputBuffers.reduce((a, b) => a + b, 0) + gates.reduce((a, b) => a + b, 0) + remoteTargets * this.ringSlots;
    if (need > this.buffersFree) {
      throw new InsufficientBuffersError(
        `insufficient network buffers: the task needs ${need}, this TaskManager has ${this.buffersFree} free of ${o.totalBuffers} (raise taskmanager.network.numberOfBuffers)`,
      );
    }
    this.buffersFree -= need;
    this.reserved.set(task, need);
    return { segmentSize: o.segmentSize, outputBuffers, maxOverdraft: o.maxOverdraftBuffers, maxBuffersPerChannel: o.maxBuffersPerChannel };
  }

  /** Wires the task's channels. Its Worker must already have been sent its init message. */
  wire(task: TaskEndpoint): void {
    const d = task.deployment;
    const o = this.options;
    this.releasedJobs.delete(d.jobId);

    // One ring per channel, handed to the Workers that use it in one connect message per task: a local channel's
    // once both of its tasks are here, a remote channel's at once (this thread is its other end).
    const connects = new Map<TaskEndpoint, { produce: ChannelRing[]; consume: ChannelRing[] }>();
    const connect = (t: TaskEndpoint) => {
      let c = connects.get(t);
      if (!c) connects.set(t, (c = { produce: [], consume: [] }));
      return c;
    };
    const link = (ch: string, producer: TaskEndpoint, consumer: TaskEndpoint) => {
      const ring = createRing(this.ringSlots, o.segmentSize);
      connect(producer).produce.push({ channel: ch, ring });
      connect(consumer).consume.push({ channel: ch, ring });
    };
    for (const out of d.outputs) {
      for (const t of out.targets) {
        const ch = channelId(channelJob(d), out.edgeId, d.subtaskIndex, t.subtask);
        if (t.resourceId === this.resourceId) {
          this.localProducers.set(ch, task);
          const consumer = this.localConsumers.get(ch);
          if (consumer) link(ch, task, consumer);
        } else {
          const ring = createRing(this.ringSlots, o.segmentSize);
          connect(task).produce.push({ channel: ch, ring });
          const ro: RemoteOutput = { task, conn: null, credit: 0, ring: new RingReader(ring), held: null, waiting: false };
          this.remoteOut.set(ch, ro);
          const early = this.earlyCredit.get(ch);
          if (early) {
            // The consumer asked before this producer was here: start sending (from the ring) as soon as it writes.
            this.earlyCredit.delete(ch);
            ro.conn = early.conn;
            ro.credit = early.n;
            this.trySend(ch, ro);
          }
        }
      }
    }
    d.inputs.forEach((input) => {
      const remote = input.producers.some((p) => p.resourceId !== this.resourceId);
      const gate: InputGatePool = { floating: remote ? o.floatingBuffersPerGate : 0, spare: [], channels: [] };
      for (const p of input.producers) {
        const ch = channelId(channelJob(d), input.edgeId, p.subtask, d.subtaskIndex);
        if (p.resourceId === this.resourceId) {
          this.localConsumers.set(ch, task);
          const producer = this.localProducers.get(ch);
          if (producer) link(ch, producer, task);
          continue;
        }
        const free = Array.from({ length: o.buffersPerChannel }, () => new ArrayBuffer(o.segmentSize));
        const ring = createRing(this.ringSlots, o.segmentSize);
        connect(task).consume.push({ channel: ch, ring });
        const ri: RemoteInput = { id: ch, task, producer: p, gate, free, floatingHeld: 0, backlog: 0, ended: false, unannounced: 0, ring: new RingWriter(ring), pending: [], waiting: false };
        gate.channels.push(ri);
        this.remoteIn.set(ch, ri);
        // The first credit also asks the producer's TaskManager for the partition.
        this.transport.send(p, [DATA_FRAME.CREDIT, ch, free.length]);
      }
    });
    for (const [t, c] of connects) t.post({ type: "connect", produce: c.produce, consume: c.consume });
  }

  /** Slots of a channel's ring: as many buffers as a remote input channel can hold (exclusive + floating). */
  get ringSlots(): number {
    return this.options.buffersPerChannel + this.options.floatingBuffersPerGate;
  }

  /**
   * The task ended. A finished producer's remote channels keep draining (their end-of-partition may still
   * wait for a connection); those of a failed or canceled task are dropped.
   */
  unregisterTask(task: TaskEndpoint, finished: boolean): void {
    const d = task.deployment;
    this.buffersFree += this.reserved.get(task) ?? 0;
    this.reserved.delete(task);
    for (const input of d.inputs) {
      for (const p of input.producers) {
        const ch = channelId(channelJob(d), input.edgeId, p.subtask, d.subtaskIndex);
        if (this.localConsumers.get(ch) === task) this.localConsumers.delete(ch);
        if (this.remoteIn.get(ch)?.task === task) this.remoteIn.delete(ch);
        this.closedChannels.add(ch);
      }
    }
    for (const out of d.outputs) {
      for (const t of out.targets) {
        const ch = channelId(channelJob(d), out.edgeId, d.subtaskIndex, t.subtask);
        if (this.localProducers.get(ch) === task) this.localProducers.delete(ch);
        const ro = this.remoteOut.get(ch);
        if (ro?.task !== task) continue;
        if (finished && (ro.held !== null || ro.ring.available > 0)) ro.task = null;
        else {
          this.remoteOut.delete(ch);
          this.closedChannels.add(ch);
        }
      }
    }
  }

  /** Drops what is left of a finished, failed or canceled job. */
  releaseJob(jobId: string): void {
    // Channels of every attempt of the job: "<job>|..." and "<job>.<attempt>|...".
    const ofJob = (ch: string) => ch.startsWith(`${jobId}|`) || ch.startsWith(`${jobId}.`);
    for (const set of [this.closedChannels]) for (const ch of set) if (ofJob(ch)) set.delete(ch);
    for (const map of [this.earlyCredit, this.remoteOut, this.remoteIn] as Map<string, unknown>[]) {
      for (const ch of map.keys()) if (ofJob(ch)) map.delete(ch);
    }
    this.releasedJobs.add(jobId);
    if (this.releasedJobs.size > 1000) this.releasedJobs.delete(this.releasedJobs.values().next().value!);
  }

  /** Sends what the producer's ring holds, buffers as far as credit goes, events at once (in order). */
  private trySend(ch: string, ro: RemoteOutput): void {
    const conn = ro.conn;
    if (conn === null || conn.closed) return;
    if (!conn.writable) {
      this.resumeOnDrain(conn);
      return;
    }
    for (;;) {
      let bytes = ro.held;
      if (bytes === null) {
        const item = ro.ring.take();
        if (item === null) {
          this.whenPublished(ch, ro);
          return;
        }
        if (item.kind === "event") {
          ro.ring.release();
          conn.send([DATA_FRAME.EVENT, ch, item.event]);
          if (item.event.type === "end") {
            this.remoteOut.delete(ch);
            this.closedChannels.add(ch);
            return;
          }
          continue;
        }
        bytes = item.bytes;
      }
      if (ro.credit === 0) {
        ro.held = bytes;
        return;
      }
      ro.credit--;
      ro.held = null;
      // The backlog is what the ring holds behind this buffer (events included: close enough for lending).
      const flowing = conn.sendBuffer(ch, ro.ring.available, bytes);
      ro.ring.release(); // copied into the connection's staging buffer: the producer may reuse the slot
      if (!flowing) {
        this.resumeOnDrain(conn);
        return;
      }
    }
  }

  /**
   * Stops writing into a full socket (it would only buffer and copy) and resumes every channel of the
   * connection on drain. Registered whenever a sender finds the socket full: the write that filled it happens
   * at the end of the turn, after sendBuffer has already said "flowing".
   */
  private resumeOnDrain(conn: FramedConnection): void {
    if (this.drainWaits.has(conn)) return;
    this.drainWaits.add(conn);
    conn.whenWritable(() => {
      this.drainWaits.delete(conn);
      for (const [id, other] of this.remoteOut) if (other.conn === conn) this.trySend(id, other);
    });
  }

  /** Tries again when the producer publishes (or after RING_WAIT_MS, while the channel is still here). */
  private whenPublished(ch: string, ro: RemoteOutput): void {
    if (ro.waiting) return;
    ro.waiting = true;
    void ro.ring.whenPublished(RING_WAIT_MS).then(() => {
      ro.waiting = false;
      if (this.remoteOut.get(ch) !== ro) return;
      try {
        this.trySend(ch, ro);
      } catch (err) {
        // Only a corrupt ring gets here (a frame handler would close the connection instead).
        this.remoteOut.delete(ch);
        ro.task?.fail(new Error(`remote output channel ${ch}: ${(err as Error).message}`));
      }
    });
  }

  private recycleInput(ri: RemoteInput, buf: ArrayBuffer): void {
    if (ri.ended) return;
    if (ri.floatingHeld > 0 && ri.free.length >= ri.backlog) {
      // Not needed here any more: back to the gate, lent to a channel whose backlog is larger than its credit.
      ri.floatingHeld--;
      const needy = ri.gate.channels.find((c) => !c.ended && c.backlog > c.free.length);
      if (needy) {
        needy.floatingHeld++;
        this.grant(needy, [buf]);
      } else {
        ri.gate.floating++;
        ri.gate.spare.push(buf);
      }
      return;
    }
    this.grant(ri, [buf]);
  }

  /**
   * Free buffers become credit for the producer. Credit is announced once per turn for all the buffers freed in
   * it (as Flink's unannounced credit): on loopback a tiny write costs about as much as a 32 KiB one.
   */
  private grant(ri: RemoteInput, bufs: ArrayBuffer[]): void {
    for (const b of bufs) ri.free.push(b);
    if (ri.unannounced === 0) this.creditDue.push(ri);
    ri.unannounced += bufs.length;
    if (this.creditDue.length === 1) queueMicrotask(() => this.announceCredit());
  }

  private announceCredit(): void {
    for (const ri of this.creditDue.splice(0)) {
      const n = ri.unannounced;
      ri.unannounced = 0;
      if (n > 0 && this.remoteIn.get(ri.id) === ri) this.transport.send(ri.producer, [DATA_FRAME.CREDIT, ri.id, n]);
    }
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
          const ro = this.remoteOut.get(ch);
          if (ro) {
            ro.conn = conn;
            ro.credit += n as number;
            this.trySend(ch, ro);
          } else if (!stale) {
            if (this.earlyCredit.size >= 100_000) throw new Error("too many partition requests for channels not deployed here");
            const early = this.earlyCredit.get(ch);
            this.earlyCredit.set(ch, { conn, n: (early?.n ?? 0) + (n as number) });
          }
          break;
        }
        case DATA_FRAME.DATA: {
          const ri = this.remoteIn.get(ch);
          if (!ri) {
            if (stale) break;
            throw new Error(`data for unknown channel ${ch}`);
          }
          const bytes = frame[2];
          const backlog = frame[3];
          if (!(bytes instanceof Uint8Array)) throw new Error(`data frame for ${ch} carries no bytes`);
          if (bytes.length > this.options.segmentSize) throw new Error(`data frame for ${ch} is larger than a buffer (${bytes.length} bytes)`);
          if (!Number.isInteger(backlog) || (backlog as number) < 0) throw new Error(`data frame for ${ch} has a bad backlog`);
          if (bytes.length === 0) throw new Error(`data frame for ${ch} is empty`);
          const buf = ri.free.pop();
          if (!buf) throw new Error(`channel ${ch} sent a buffer without credit`);
          ri.backlog = backlog as number;
          if (ri.pending.length === 0 && ri.ring.tryPush(bytes)) {
            this.recycleInput(ri, buf); // straight into the consumer's ring: the network buffer is free again
          } else {
            new Uint8Array(buf).set(bytes);
            ri.pending.push({ buf, size: bytes.length });
            this.whenRingFree(ri);
          }
          this.lendFloating(ri);
          break;
        }
        case DATA_FRAME.EVENT: {
          const ri = this.remoteIn.get(ch);
          if (!ri) {
            if (stale) break;
            throw new Error(`event for unknown channel ${ch}`);
          }
          const event = frame[2] as ChannelEvent;
          if (typeof event !== "object" || event === null || !["end", "endOfData", "barrier", "cancelBarrier", "watermark"].includes(event.type)) throw new Error(`bad event on ${ch}`);
          if (event.type === "end") {
            ri.ended = true;
            ri.gate.floating += ri.floatingHeld;
            ri.floatingHeld = 0;
          }
          if (ri.pending.length > 0 || !ri.ring.tryPushEvent(event)) {
            ri.pending.push({ event });
            this.whenRingFree(ri);
          }
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

  /** Moves waiting arrivals into the consumer's ring when it has room (or checks again after RING_WAIT_MS). */
  private whenRingFree(ri: RemoteInput): void {
    if (ri.waiting) return;
    ri.waiting = true;
    void ri.ring.whenFree(RING_WAIT_MS).then(() => {
      ri.waiting = false;
      if (this.remoteIn.get(ri.id) !== ri) return;
      try {
        while (ri.pending.length > 0) {
          const head = ri.pending[0]!;
          if ("event" in head ? !ri.ring.tryPushEvent(head.event) : !ri.ring.tryPush(new Uint8Array(head.buf, 0, head.size))) break;
          ri.pending.shift();
          if ("buf" in head) this.recycleInput(ri, head.buf);
        }
      } catch (err) {
        // An event too large for a slot (a frame handler would close the connection instead).
        this.remoteIn.delete(ri.id);
        ri.task.fail(new Error(`remote input channel ${ri.id}: ${(err as Error).message}`));
        return;
      }
      if (ri.pending.length > 0) this.whenRingFree(ri);
    });
  }

  /** Lends floating buffers of the gate to a channel whose backlog exceeds its free buffers. */
  private lendFloating(ri: RemoteInput): void {
    const want = Math.min(ri.backlog - ri.free.length, ri.gate.floating);
    if (want <= 0) return;
    ri.gate.floating -= want;
    ri.floatingHeld += want;
    const bufs = Array.from({ length: want }, () => ri.gate.spare.pop() ?? new ArrayBuffer(this.options.segmentSize));
    this.grant(ri, bufs);
  }

  private onConnectionClosed(peer: string, conn: FramedConnection | null, err: Error): void {
    const failed = new Set<TaskEndpoint>();
    const fail = (task: TaskEndpoint | null, what: string) => {
      if (!task || failed.has(task)) return;
      failed.add(task);
      task.fail(new Error(`${what} (TaskManager ${peer}): ${err.message}`));
    };
    for (const ri of this.remoteIn.values()) {
      if (!ri.ended && ri.producer.resourceId === peer) fail(ri.task, "lost the data connection to a producer");
    }
    for (const [ch, ro] of this.remoteOut) {
      if (ro.conn !== null && ro.conn === conn) {
        fail(ro.task, "lost the data connection to a consumer");
        if (!ro.task) this.remoteOut.delete(ch);
      }
    }
  }
}
