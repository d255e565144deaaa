// Channel state of unaligned checkpoints (as Flink's ChannelStateWriter / SequentialChannelStateReader): the records
// that were in flight on a task's channels when it took checkpoint n. Input channel state: what arrived before the
// barrier on each input channel and was not read yet (InputGate.startRecording). Output channel state: the records
// of the chunks the barrier overtook in the task's own output (RecordWriter.broadcastPriorityEvent). One file per
// task holds both, as records (not buffers: the wire encoding shares record shapes along a channel's stream and
// cannot be decoded from the middle), told apart by the edge (an input or an output edge of the task's vertex). On
// restore each new subtask reads every old subtask's file of its vertex: of the input channel state it keeps the
// records that are its own under the edge's partitioner at the new parallelism (key groups for keyBy) and replays
// them before any new input; the output channel state of old subtask i goes to new subtask i % parallelism, which
// emits it again through its writer (its partitioner picks the consumer) before anything else.
import * as fs from "node:fs";
import * as path from "node:path";
import { Packr, Unpackr } from "msgpackr";
import type { ChannelStateHandle } from "../rpc/messages.ts";
import { parseChannelId } from "../network/wire.ts";

const MAGIC = "tm-channel-state";
const VERSION = 1;

interface ChannelStateFile {
  magic: string;
  version: number;
  /** Record count, checked on read (with the handle's size, a truncated file is refused). */
  count: number;
  channels: { edgeId: number; producer: number; consumer: number; records: unknown[] }[];
}

/** Writes the channel state (input and output) of one task; null when nothing was in flight. */
export async function writeChannelState(dir: string, subtaskIndex: number, state: Map<string, unknown[]>): Promise<ChannelStateHandle | null> {
  const channels: ChannelStateFile["channels"] = [];
  let count = 0;
  for (const [ch, records] of state) {
    const id = parseChannelId(ch);
    if (!id) throw new Error(`channel state of an unparsable channel id ${ch}`);
    channels.push({ edgeId: id.edgeId, producer: id.producer, consumer: id.consumer, records });
    count += records.length;
  }
  if (count === 0) return null;
  // A fresh sequential Packr: record shapes are written inline, so the file decodes on its own.
  const bytes = new Packr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Packr>[0]).pack({ magic: MAGIC, version: VERSION, count, channels } satisfies ChannelStateFile);
  const file = path.join(dir, `channel-state-${subtaskIndex}`);
  const tmp = `${file}.tmp`;
  await fs.promises.writeFile(tmp, bytes);
  await fs.promises.rename(tmp, file);
  return { type: "channel", file, sizeBytes: bytes.length, records: count, subtaskIndex };
}

/** Reads one task's channel state; throws naming the file when it is missing, truncated or not channel state. */
export function readChannelState(h: ChannelStateHandle): ChannelStateFile["channels"] {
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
  if (f?.magic !== MAGIC || f.version !== VERSION || !Array.isArray(f.channels)) throw new Error(`${h.file} is not channel state of version ${VERSION}`);
  const count = f.channels.reduce((a, c) => a + (Array.isArray(c.records) ? c.records.length : NaN), 0);
  if (count !== f.count || count !== h.records) throw new Error(`channel state ${h.file} is damaged: ${count} records, the checkpoint recorded ${h.records}`);
  return f.channels;
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
