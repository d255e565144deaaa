// Channel state of unaligned checkpoints (as Flink's ChannelStateWriter / SequentialChannelStateReader): the records
// that were in flight on a task's channels when it took checkpoint n. Input channel state: what arrived before the
// barrier on each input channel and was not read yet (InputGate.startRecording). Output channel state: the records
// of the chunks the barrier overtook in the task's own output (RecordWriter.broadcastPriorityEvent). One file per
// task holds both, told apart by the edge (an input or an output edge of the task's vertex). Version 2 keeps bytes,
// decoded only on restore (no re-packing of records at every checkpoint): the wire encoding shares record shapes
// along a channel's stream, so a run of bytes is stored from a chunk boundary with the record-shape table there.
// Input channel state: the buffers the gate recorded, each run beginning with the part of a chunk the channel's
// decoder held (InputGate.rawChannelState; records where a buffer was decoded before), cut at its last whole chunk.
// Output channel state: the records of the chunk spanning the overtake point, then the overtaken whole chunks.
// Version 1 files (records only) are still read. On
// restore each new subtask reads every old subtask's file of its vertex: of the input channel state it keeps the
// records that are its own under the edge's partitioner at the new parallelism (key groups for keyBy) and replays
// them before any new input; the output channel state of old subtask i goes to new subtask i % parallelism, which
// emits it again through its writer (its partitioner picks the consumer) before anything else.
import * as fs from "node:fs";
import * as path from "node:path";
import { Packr, Unpackr } from "msgpackr";
import type { ChannelStateHandle } from "../rpc/messages.ts";
import { parseChannelId } from "../network/wire.ts";
import type { OvertakenOutput } from "../network/record-writer.ts";
import type { RecordedPart } from "../network/input-gate.ts";
import { decodeChunksFrom } from "../network/serialization.ts";

const MAGIC = "tm-channel-state";
/** 2: runs of a channel's chunks as bytes (`bytes`, `shapes`), input and output; 1: records only (still read). */
const VERSION = 2;
const READABLE = [1, 2];

interface StoredChannel {
  edgeId: number;
  producer: number;
  consumer: number;
  /** Records kept as records: an input channel's, or the output chunk that spanned the overtake point. */
  records: unknown[];
  /** Version 2: whole chunks (u32 length, chunk) that follow `records`, and the record-shape table where they start. */
  bytes?: Uint8Array;
  shapes?: string[][];
  /** The records in `bytes`, when known (input channels; checked on read). */
  n?: number;
}

interface ChannelStateFile {
  magic: string;
  version: number;
  /**
   * Records (kept as records, and those of input chunks kept as bytes) and (version 2) bytes of whole chunks, checked
   * on read with the handle's (its size refuses a truncated file; the chunks' framing and counts as they are decoded).
   */
  count: number;
  chunkBytes?: number;
  channels: StoredChannel[];
}

/**
 * Writes the channel state of one task: input channels (and, from tests, output channels) as records in `state`,
 * output channels as the writer held them in `output`; null when nothing was in flight.
 */
export async function writeChannelState(
  dir: string,
  subtaskIndex: number,
  state: Map<string, unknown[]>,
  output?: Map<string, OvertakenOutput>,
  /** Input channels recorded raw (InputGate.rawChannelState): records and runs of bytes, in order. */
  inputParts?: Map<string, RecordedPart[]>,
): Promise<ChannelStateHandle | null> {
  const channels: StoredChannel[] = [];
  let count = 0, chunkBytes = 0;
  const idOf = (ch: string) => {
    const id = parseChannelId(ch);
    if (!id) throw new Error(`channel state of an unparsable channel id ${ch}`);
    return id;
  };
  for (const [ch, records] of state) {
    const id = idOf(ch);
    channels.push({ edgeId: id.edgeId, producer: id.producer, consumer: id.consumer, records });
    count += records.length;
  }
  // A channel in several entries (records, then a run of bytes, ...): read back in this order.
  for (const [ch, parts] of inputParts ?? []) {
    const id = idOf(ch);
    for (const p of parts) {
      if ("records" in p) {
        channels.push({ edgeId: id.edgeId, producer: id.producer, consumer: id.consumer, records: p.records });
        count += p.records.length;
      } else if (p.bytes.length > 0) {
        channels.push({ edgeId: id.edgeId, producer: id.producer, consumer: id.consumer, records: [], bytes: p.bytes, shapes: p.shapes, n: p.count });
        chunkBytes += p.bytes.length;
        count += p.count;
      }
    }
  }
  for (const [ch, o] of output ?? []) {
    const id = idOf(ch);
    const c: StoredChannel = { edgeId: id.edgeId, producer: id.producer, consumer: id.consumer, records: o.records };
    if (o.bytes !== null && o.bytes.length > 0) {
      c.bytes = o.bytes;
      c.shapes = o.shapes;
      chunkBytes += o.bytes.length;
    }
    channels.push(c);
    count += o.records.length;
  }
  if (count === 0 && chunkBytes === 0) return null;
  // A fresh sequential Packr: record shapes are written inline, so the file decodes on its own.
  const bytes = new Packr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Packr>[0]).pack({ magic: MAGIC, version: VERSION, count, chunkBytes, channels } satisfies ChannelStateFile);
  const file = path.join(dir, `channel-state-${subtaskIndex}`);
  const tmp = `${file}.tmp`;
  await fs.promises.writeFile(tmp, bytes);
  await fs.promises.rename(tmp, file);
  return { type: "channel", file, sizeBytes: bytes.length, records: count, subtaskIndex };
}

/**
 * Reads one task's channel state, every channel's records decoded; throws naming the file when it is missing,
 * truncated or not channel state.
 */
export function readChannelState(h: ChannelStateHandle): { edgeId: number; producer: number; consumer: number; records: unknown[] }[] {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(h.file);
  } catch (err) {
    throw new Error(`channel state ${h.file} cannot be read: ${(err as Error).message}`);
  }
  if (bytes.length !== h.sizeBytes) throw new Error(`channel state ${h.file} is truncated or damaged: ${bytes.length} bytes, the checkpoint recorded ${h.sizeBytes}`);
  let f: ChannelStateFile;
  try {
    f = new Unpackr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Unpackr>[0]).unpack(bytes) as ChannelStateFile;
  } catch (err) {
    throw new Error(`channel state ${h.file} cannot be decoded: ${(err as Error).message}`);
  }
  if (f?.magic !== MAGIC || !READABLE.includes(f.version) || !Array.isArray(f.channels)) {
    throw new Error(`${h.file} is not channel state of version ${READABLE.join(" or ")}${f?.magic === MAGIC ? ` (its version is ${f.version})` : ""}`);
  }
  const count = f.channels.reduce((a, c) => a + (Array.isArray(c.records) ? c.records.length : NaN) + (c.n ?? 0), 0);
  if (count !== f.count || count !== h.records) throw new Error(`channel state ${h.file} is damaged: ${count} records, the checkpoint recorded ${h.records}`);
  const chunkBytes = f.channels.reduce((a, c) => a + (c.bytes === undefined ? 0 : c.bytes instanceof Uint8Array ? c.bytes.length : NaN), 0);
  if (chunkBytes !== (f.chunkBytes ?? 0)) throw new Error(`channel state ${h.file} is damaged: ${chunkBytes} bytes of chunks, the file recorded ${f.chunkBytes ?? 0}`);
  return f.channels.map((c) => {
    if (c.bytes === undefined) return c;
    const records = [...c.records];
    try {
      decodeChunksFrom(c.bytes, Array.isArray(c.shapes) ? c.shapes : [], records);
      if (c.n !== undefined && records.length - c.records.length !== c.n) throw new Error(`${records.length - c.records.length} records in its chunks, ${c.n} recorded`);
    } catch (err) {
      throw new Error(`channel state ${h.file} is damaged: the channel ${c.edgeId}/${c.producer}->${c.consumer}: ${(err as Error).message}`);
    }
    return { edgeId: c.edgeId, producer: c.producer, consumer: c.consumer, records };
  });
}

/** Whether a handle's file is there with its recorded size (the JobManager checks before choosing a checkpoint). */
export function channelStateProblem(h: ChannelStateHandle): string | null {
  try {
    const size = fs.statSync(h.file).size;
    return size === h.sizeBytes ? null : `channel state ${h.file} has ${size} bytes, the checkpoint recorded ${h.sizeBytes}`;
  } catch (err) {
    return `channel state ${h.file} is missing: ${(err as Error).message}`;
  }
}

/**
 * This subtask's records of the old input channel state, in old-channel order: for each input edge, `owner` says
 * which new subtask a record (or a whole old channel, for non-keyed edges) belongs to. Channels of other edges (the
 * output channel state) are left out.
 */
export function channelStateFor(
  handles: readonly ChannelStateHandle[],
  edges: ReadonlyMap<number, { owner: (record: unknown, oldConsumer: number) => number }>,
  subtaskIndex: number,
): unknown[] {
  return splitChannelState(handles, edges, new Set(), subtaskIndex, 1).input;
}

export interface OutputChannelState {
  edgeId: number;
  /** The old consumer subtask the records were on their way to. */
  consumer: number;
  records: unknown[];
}

/**
 * Reads the old subtasks' files once and splits them: the input channel state as by channelStateFor, and the
 * output channel state of `outputEdges` that is this subtask's (old producer i goes to new subtask i % parallelism),
 * in old-channel order.
 */
export function splitChannelState(
  handles: readonly ChannelStateHandle[],
  inputEdges: ReadonlyMap<number, { owner: (record: unknown, oldConsumer: number) => number }>,
  outputEdges: ReadonlySet<number>,
  subtaskIndex: number,
  parallelism: number,
): { input: unknown[]; output: OutputChannelState[] } {
  const input: unknown[] = [];
  const output: OutputChannelState[] = [];
  for (const h of [...handles].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
    for (const ch of readChannelState(h)) {
      if (outputEdges.has(ch.edgeId)) {
        if (ch.producer % parallelism === subtaskIndex) output.push({ edgeId: ch.edgeId, consumer: ch.consumer, records: ch.records });
        continue;
      }
      const edge = inputEdges.get(ch.edgeId);
      if (!edge) continue; // an edge the job no longer has
      for (const r of ch.records) if (edge.owner(r, ch.consumer) === subtaskIndex) input.push(r);
    }
  }
  return { input, output };
}
