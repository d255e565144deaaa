// The data plane's contracts, shared by the TaskManager's main thread (ShuffleEnvironment, DataTransport) and the
// task Workers (StreamTask): channel ids, what the data connections' frames mean, the network buffers granted to a
// task and how its channels' rings reach it. The byte framing of those frames is the connection's
// (src/rpc/framing.ts: msgpack bodies and the 0xC1 buffer frame).

import { BUFFER_FRAME_KIND } from "../rpc/framing.ts";
import type { TaskDeployment } from "../rpc/messages.ts";

// ---- data connections (TaskManager <-> TaskManager, role "data") ----
// Frames are arrays, not requests:
//   [DATA, channelId, bytes, backlog]   a buffer, sent only against credit; backlog = buffers queued behind it
//   [EVENT, channelId, event, n?]       an in-band event (end of partition, barriers, watermarks); n (priority events
//                                       only): the OVERTAKEN frames just before it, which it overtook (below)
//   [OVERTAKEN, channelId, bytes]       a buffer that the channel's next priority event (an unaligned barrier, a
//                                       cancel marker) overtook on the producer's TaskManager, sent without credit
//                                       right before it; the buffer itself follows later as DATA, against credit
//   [CREDIT, channelId, n, size?]       the consumer has n more free buffers; the first one requests the partition;
//                                       size: its debloated buffer size in bytes (buffer debloating, FLIP-183)
//   [KEEPALIVE]                         sent every taskmanager.network.tcp-connection.keepalive.interval by both
//                                       ends; a connection that hears nothing for the keepalive time-out is closed
export const DATA_FRAME = { DATA: BUFFER_FRAME_KIND, EVENT: 1, CREDIT: 2, KEEPALIVE: 3, OVERTAKEN: 4 } as const;

export interface NetworkGrant {
  segmentSize: number;
  /** Buffers of each output edge's pool, in deployment.outputs order. */
  outputBuffers: number[];
  maxOverdraft: number;
  /** taskmanager.network.memory.max-buffers-per-channel: buffers of an output pool one subpartition may hold. */
  maxBuffersPerChannel: number;
  /** Buffer debloating (FLIP-183), when taskmanager.network.memory.buffer-debloat.enabled. */
  debloat?: DebloatOptions;
}

export interface DebloatOptions {
  /** taskmanager.network.memory.buffer-debloat.target: the time of data in flight to keep per input gate. */
  targetMs: number;
  /** ...buffer-debloat.period: how often the throughput is measured and the size recomputed. */
  periodMs: number;
  /** taskmanager.memory.min-segment-size: the smallest buffer size announced. */
  minBufferSize: number;
}

/** The Worker's output pools get new sizes (network buffers redistributed as tasks come and go), in
 * deployment.outputs order. A pool that shrinks drops buffers as they come back to it. */
export interface ResizeOutputPools {
  type: "resizeOutputPools";
  outputBuffers: number[];
}

/** A running task as the network (ShuffleEnvironment) sees it. */
export interface TaskEndpoint {
  readonly deployment: TaskDeployment;
  /** Control messages to the task's Worker: its channels' rings, new output pool sizes. */
  post(msg: ConnectChannels | ResizeOutputPools | OvertakenBuffers): void;
  fail(err: Error): void;
}

/** The task's channels: each a ring in shared memory (see shared-ring.ts), shared with the peer task's Worker for a
 * local channel and with the main thread for a remote one. Sent to the Worker once both ends are wired. */
export interface ConnectChannels {
  type: "connect";
  produce: ChannelRing[];
  consume: ChannelRing[];
}

/** A channel (local or remote): its id and the ring that carries its buffers and events. */
export interface ChannelRing {
  channel: string;
  ring: SharedArrayBuffer;
  /** Jobs with unaligned checkpoints: a small ring for priority events (a local channel's when `ring` is full). */
  priority?: SharedArrayBuffer;
  /**
   * A remote channel (the main thread is the ring's other end): a priority event goes into the priority ring even
   * when `ring` has room, so that the main thread can send it ahead of what waits there for credit.
   */
  remote?: true;
}

/**
 * To a consumer Worker: the buffers a priority event of a remote channel overtook on the way (those still on the
 * TaskManagers' main threads: waiting for room in the Worker's ring, or for credit at the producer's), in channel
 * order. The event, in the channel's priority ring, names them by id; they come again through the ring after it.
 */
export interface OvertakenBuffers {
  type: "overtaken";
  channel: string;
  id: number;
  buffers: Uint8Array[];
}

/** The job as channel ids name it: each attempt (restart) of a job has channels of its own. */
export function channelJob(d: { jobId: string; attempt: number }): string {
  return d.attempt > 0 ? `${d.jobId}.${d.attempt}` : d.jobId;
}

/** Channel ids are unique per TaskManager pair: job (and attempt), edge, producer subtask, consumer subtask. */
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
