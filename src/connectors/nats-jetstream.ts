// NATS JetStream source and sink (npm @nats-io/jetstream over @nats-io/transport-node).
//
// Source: a split is a subject filter of a stream (or the whole stream); its position is the next stream
// sequence to read, kept in checkpoints, so a restore re-reads from exactly there. Reading uses an ordered
// (ephemeral) consumer starting at that sequence: nothing relies on server-side acknowledgements. Bounded mode
// stops each split at the stream's last sequence when the reader opened (recorded in the split).
//
// Sink, at-least-once: messages are published as records arrive; a checkpoint waits for every acknowledgement.
// Sink, exactly-once (a write-ahead two-phase commit): the records between two barriers are held in the
// checkpoint's operator state; when checkpoint n completes they are published with Nats-Msg-Id
// <job>-<sink>-<subtask>-<n>-<index>. A restore publishes the restored batches again with the same ids, and the
// stream's duplicate window drops what was already stored, so each record is in the stream once as long as the
// restore comes within the window (JetStream's duplicate_window, 2 minutes by default).
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import type { Source } from "../api/environment.ts";
import type { ListState } from "../state/api.ts";
import type { ConnectorSink, ConnectorSource, ConnectorSourceReader, ConnectorSplit, SinkWriter, SinkWriterContext, SourceReaderContext } from "../api/connector.ts";
import { errorText, positiveIntOption, stringOption, waitForData } from "./options.ts";

const CONNECTOR = "nats-jetstream";

/** What the source's deserializer gets: one stream message. */
export interface JetStreamMessage {
  subject: string;
  /** The stream sequence. */
  seq: number;
  data: Uint8Array;
  headers: Record<string, string> | null;
  /** When the stream stored the message (ms since the epoch): an event time. */
  timestamp: number;
}

/** The default record: the message with its payload parsed as JSON. */
export interface JetStreamRecord<V = unknown> {
  subject: string;
  seq: number;
  timestamp: number;
  value: V;
}

export interface JetStreamSourceOptions<T> {
  /** nats://host:port (or a list). */
  servers: string | string[];
  stream: string;
  /** One split per subject filter (default: one split reading the whole stream). */
  subjects?: string[];
  /** The first stream sequence to read when there is no checkpoint (default 1). */
  startSequence?: number;
  /** Stop at the stream's last sequence as of when the reader opens (default false: read forever). */
  bounded?: boolean;
  /** A message to a record (default: { subject, seq, timestamp, value: JSON of the payload }); throwing fails the job naming subject and sequence. */
  deserializer?: (msg: JetStreamMessage) => T;
  /** A split without messages for this long is idle: it holds no watermark back (default 1000 ms). */
  idleTimeoutMs?: number;
}

type NatsSplit = ConnectorSplit & { stream: string; filter: string | null; next: number; end: number | null };

const decoder = new TextDecoder();
const encoder = new TextEncoder();

function defaultDeserializer(m: JetStreamMessage): JetStreamRecord {
  return { subject: m.subject, seq: m.seq, timestamp: m.timestamp, value: JSON.parse(decoder.decode(m.data)) };
}

async function connectNats(what: string, servers: string | string[]): Promise<NatsConnection> {
  try {
    // No reconnects: a lost connection fails the task, and the restart restores the checkpoint.
    return await connect({ servers, reconnect: false, timeout: 5000, name: "tm" });
  } catch (err) {
    throw new Error(`${what}: cannot connect to NATS at ${[servers].flat().join(", ")} (option servers): ${errorText(err)}`, { cause: err });
  }
}

function checkServers(what: string, s: unknown): string | string[] {
  if (typeof s === "string" && s.length > 0) return s;
  if (Array.isArray(s) && s.length > 0 && s.every((x) => typeof x === "string" && x.length > 0)) return s;
  throw new Error(`${what}: option servers must be a URL such as nats://127.0.0.1:4222 or a list of them, got ${JSON.stringify(s)}`);
}

class JetStreamSourceImpl<T> implements ConnectorSource {
  readonly connector = CONNECTOR;
  constructor(readonly opts: JetStreamSourceOptions<T>) {}
  createReader(ctx: SourceReaderContext): ConnectorSourceReader {
    return new JetStreamReader(this.opts, ctx);
  }
}

export const JetStreamSource = {
  /** A JetStream stream as a source: env.fromSource(JetStreamSource.source({ servers, stream }), strategy). */
  source<T = JetStreamRecord>(options: JetStreamSourceOptions<T>): Source<T> {
    const what = "JetStreamSource.source";
    if (typeof options !== "object" || options === null) throw new Error(`${what}: expected options { servers, stream, ... }`);
    checkServers(what, options.servers);
    stringOption(what, "stream", options.stream, true);
    if (options.subjects !== undefined && (!Array.isArray(options.subjects) || options.subjects.length === 0 || !options.subjects.every((s) => typeof s === "string" && s.length > 0))) {
      throw new Error(`${what}: option subjects must be a non-empty list of subject filters, got ${JSON.stringify(options.subjects)}`);
    }
    positiveIntOption(what, "startSequence", options.startSequence, 1);
    positiveIntOption(what, "idleTimeoutMs", options.idleTimeoutMs, 1000);
    if (options.deserializer !== undefined && typeof options.deserializer !== "function") throw new Error(`${what}: option deserializer must be a function (message) => record`);
    return { kind: "source", spec: { type: "connector", connector: new JetStreamSourceImpl(options) }, name: `JetStream Source (${options.stream})` };
  },
};

/** One split being read: its consumer's messages go into a queue that poll() drains. */
interface SplitRun {
  split: NatsSplit;
  queue: JsMsg[];
  messages: ConsumerMessages | null;
  lastData: number;
  finished: boolean;
  /** Resolves the pump when it waits for the queue to drain. */
  resume: (() => void) | null;
  error: unknown;
}

const QUEUE_HIGH = 4096;
const CHUNK = 1024;
const POLL_WAIT_MS = 100;
const STREAM_CHECK_MS = 1000;

class JetStreamReader<T> implements ConnectorSourceReader {
  private readonly what: string;
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  private jsm: JetStreamManager | null = null;
  private runs: SplitRun[] = [];
  private turn = 0;
  lastSplitId = -1;
  private wake: (() => void) | null = null;
  private lastStreamCheck = 0;
  private readonly deserialize: (m: JetStreamMessage) => unknown;
  private readonly idleMs: number;

  constructor(
    private readonly opts: JetStreamSourceOptions<T>,
    private readonly ctx: SourceReaderContext,
  ) {
    this.what = `JetStreamSource (stream ${opts.stream}, subtask ${ctx.subtaskIndex + 1}/${ctx.parallelism})`;
    this.deserialize = opts.deserializer ?? defaultDeserializer;
    this.idleMs = opts.idleTimeoutMs ?? 1000;
  }

  async open(): Promise<void> {
    const { opts, ctx } = this;
    const nc = (this.nc = await connectNats(this.what, opts.servers));
    this.jsm = await jetstreamManager(nc);
    this.js = jetstream(nc);
    const info = await this.streamInfo();
    let splits: NatsSplit[];
    if (ctx.restoredSplits !== null) splits = ctx.restoredSplits as NatsSplit[];
    else {
      const filters = opts.subjects ?? [null];
      const end = opts.bounded ? info.state.last_seq : null;
      splits = [];
      filters.forEach((filter, id) => {
        if (id % ctx.parallelism === ctx.subtaskIndex) splits.push({ type: "connector", connector: CONNECTOR, id, stream: opts.stream, filter, next: opts.startSequence ?? 1, end });
      });
    }
    for (const split of splits) {
      if (split.stream !== opts.stream) throw new Error(`${this.what}: the restored checkpoint reads stream ${JSON.stringify(split.stream)}, not ${JSON.stringify(opts.stream)}`);
      const run: SplitRun = { split: { ...split }, queue: [], messages: null, lastData: performance.now(), finished: split.end !== null && split.next > split.end, resume: null, error: null };
      this.runs.push(run);
      if (!run.finished) await this.startConsumer(run);
    }
  }

  private async streamInfo() {
    try {
      return await this.jsm!.streams.info(this.opts.stream);
    } catch (err) {
      if (/not found/i.test(errorText(err))) throw new Error(`${this.what}: stream ${JSON.stringify(this.opts.stream)} does not exist on ${[this.opts.servers].flat().join(", ")} (option stream; deleted under the job?)`, { cause: err });
      throw new Error(`${this.what}: cannot read stream ${JSON.stringify(this.opts.stream)}: ${errorText(err)}`, { cause: err });
    }
  }

  private async startConsumer(run: SplitRun): Promise<void> {
    const s = run.split;
    const consumer = await this.js!.consumers.get(s.stream, {
      // One filter as a string: servers before 2.10 know filter_subject only.
      ...(s.filter !== null ? { filter_subjects: s.filter } : {}),
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: s.next,
    });
    const messages = (run.messages = await consumer.consume({ max_messages: 1024 }));
    void (async () => {
      try {
        for await (const m of messages) {
          run.queue.push(m);
          run.lastData = performance.now();
          this.wake?.();
          if (run.queue.length >= QUEUE_HIGH) await new Promise<void>((resolve) => (run.resume = resolve));
        }
      } catch (err) {
        run.error = err;
        this.wake?.();
      }
    })();
  }

  async poll(): Promise<unknown[] | null> {
    // Messages already received wait in the consumer's iterator: one turn of the event loop lets the pumps queue
    // them, so that a chunk is not one message (each chunk costs the task a round of flushes and checks).
    if (this.runs.every((r) => r.queue.length < CHUNK)) await new Promise<void>((resolve) => setImmediate(resolve));
    for (let attempt = 0; attempt < 2; attempt++) {
      const chunk = this.take();
      if (chunk !== null) return chunk;
      if (this.runs.every((r) => r.finished) && this.opts.bounded) return null;
      if (attempt === 0) {
        await waitForData(POLL_WAIT_MS, (w) => (this.wake = w));
      }
    }
    await this.whileIdle();
    return [];
  }

  /** Nothing arrived: notice a deleted stream, and bounded splits that have nothing more to read. */
  private async whileIdle(): Promise<void> {
    for (const r of this.runs) if (r.error !== null) throw new Error(`${this.what}: reading ${r.split.filter ?? "the stream"} failed: ${errorText(r.error)}`, { cause: r.error });
    if (this.nc?.isClosed()) throw new Error(`${this.what}: the connection to NATS was closed`);
    const now = performance.now();
    if (now - this.lastStreamCheck < STREAM_CHECK_MS) return;
    this.lastStreamCheck = now;
    const info = await this.streamInfo();
    for (const r of this.runs) {
      // Bounded: every message up to `end` was there when the reader opened; once the queue is empty and the
      // consumer has nothing pending, the split has them all.
      if (r.finished || r.split.end === null || r.queue.length > 0) continue;
      if (r.split.next > r.split.end || info.state.last_seq < r.split.next) this.finish(r);
      else if (r.messages) {
        const ci = await (r.messages as unknown as { consumer?: { info(cached?: boolean): Promise<{ num_pending: number }> } }).consumer?.info(false).catch(() => null);
        if (ci && ci.num_pending === 0 && now - r.lastData > 2 * POLL_WAIT_MS) this.finish(r);
      }
    }
  }

  private finish(r: SplitRun): void {
    r.finished = true;
    r.queue = [];
    void r.messages?.close().catch(() => {});
    r.resume?.();
  }

  /** Up to CHUNK records from the next split with messages, or null. */
  private take(): unknown[] | null {
    const n = this.runs.length;
    for (let k = 0; k < n; k++) {
      const i = (this.turn + k) % n;
      const r = this.runs[i]!;
      if (r.finished || r.queue.length === 0) continue;
      this.turn = (i + 1) % n;
      const out: unknown[] = [];
      let taken = 0;
      const end = r.split.end;
      while (taken < r.queue.length && out.length < CHUNK) {
        const m = r.queue[taken++]!;
        if (end !== null && m.seq > end) {
          this.finish(r);
          break;
        }
        out.push(this.record(m));
        r.split.next = m.seq + 1;
      }
      if (!r.finished) {
        r.queue.splice(0, taken);
        if (r.queue.length < QUEUE_HIGH / 2 && r.resume) {
          const resume = r.resume;
          r.resume = null;
          resume();
        }
        if (end !== null && r.split.next > end) this.finish(r);
      }
      if (out.length === 0) continue;
      this.lastSplitId = r.split.id;
      return out;
    }
    return null;
  }

  private record(m: JsMsg): unknown {
    const msg: JetStreamMessage = {
      subject: m.subject,
      seq: m.seq,
      data: m.data,
      headers: m.headers ? Object.fromEntries([...m.headers.keys()].map((k) => [k, m.headers!.get(k)])) : null,
      timestamp: Math.floor(Number(m.info.timestampNanos) / 1e6),
    };
    try {
      return this.deserialize(msg);
    } catch (err) {
      throw new Error(`${this.what}: the deserializer rejected the message on subject ${m.subject} at stream sequence ${m.seq}: ${errorText(err)}`, { cause: err });
    }
  }

  positions(): ConnectorSplit[] {
    return this.runs.filter((r) => !r.finished).map((r) => ({ ...r.split }));
  }

  activeSplitIds(): number[] {
    const now = performance.now();
    return this.runs.filter((r) => !r.finished && (r.queue.length > 0 || now - r.lastData < this.idleMs || r.split.id === this.lastSplitId)).map((r) => r.split.id);
  }

  async close(): Promise<void> {
    for (const r of this.runs) {
      r.resume?.();
      await r.messages?.close().catch(() => {});
    }
    await this.nc?.close().catch(() => {});
  }
}

// ---------------------------------------------------------------- sink

export interface JetStreamSinkOptions<T> {
  servers: string | string[];
  /** The subject of every message, or a function of the record. */
  subject: string | ((record: T) => string);
  /** A record to the payload (default: JSON). */
  serializer?: (record: T) => string | Uint8Array;
  /** "exactly-once" (default) or "at-least-once". */
  deliveryGuarantee?: "exactly-once" | "at-least-once";
  /** Unacknowledged publishes in flight before the task waits (default 256). */
  maxInFlight?: number;
}

class JetStreamSinkSpec<T> implements ConnectorSink {
  readonly connector = CONNECTOR;
  readonly name: string;
  constructor(readonly opts: JetStreamSinkOptions<T>) {
    this.name = `JetStream Sink (${opts.deliveryGuarantee ?? "exactly-once"})`;
  }
  createWriter(ctx: SinkWriterContext, sinkId: string): SinkWriter {
    return new JetStreamWriter(this.opts, ctx, sinkId);
  }
}

export const JetStreamSink = {
  sink<T>(options: JetStreamSinkOptions<T>): { kind: "connectorSink"; connector: ConnectorSink } {
    const what = "JetStreamSink.sink";
    if (typeof options !== "object" || options === null) throw new Error(`${what}: expected options { servers, subject, ... }`);
    checkServers(what, options.servers);
    if (typeof options.subject !== "function") stringOption(what, "subject", options.subject, true);
    if (options.serializer !== undefined && typeof options.serializer !== "function") throw new Error(`${what}: option serializer must be a function (record) => string | Uint8Array`);
    const g = options.deliveryGuarantee;
    if (g !== undefined && g !== "exactly-once" && g !== "at-least-once") throw new Error(`${what}: option deliveryGuarantee must be "exactly-once" or "at-least-once", got ${JSON.stringify(g)}`);
    positiveIntOption(what, "maxInFlight", options.maxInFlight, 256);
    return { kind: "connectorSink", connector: new JetStreamSinkSpec(options) };
  },
};

/** A batch of the exactly-once sink: the messages between two barriers, published when its checkpoint completes. */
interface Batch {
  /** The subtask and checkpoint that name its message ids. */
  subtask: number;
  checkpointId: number;
  messages: [subject: string, payload: string][];
}

const FINAL = Number.MAX_SAFE_INTEGER;

class JetStreamWriter<T> implements SinkWriter {
  private readonly what: string;
  private readonly exactlyOnce: boolean;
  private readonly maxInFlight: number;
  private nc: NatsConnection | null = null;
  private js: JetStreamClient | null = null;
  /** Publishes not acknowledged yet, and who waits for their number to fall (a counter: a race over every pending publish per message cost more than the publish). */
  private inFlight = 0;
  private waiters: { below: number; resolve: () => void }[] = [];
  private error: unknown = null;
  private current: [string, string][] = [];
  private pending: Batch[] = [];
  private state: ListState<Batch> | null = null;
  private ended = false;

  constructor(
    private readonly opts: JetStreamSinkOptions<T>,
    private readonly ctx: SinkWriterContext,
    private readonly sinkId: string,
  ) {
    this.what = `JetStreamSink (subtask ${ctx.subtaskIndex + 1}/${ctx.parallelism})`;
    this.exactlyOnce = (opts.deliveryGuarantee ?? "exactly-once") === "exactly-once";
    this.maxInFlight = opts.maxInFlight ?? 256;
  }

  async open(): Promise<void> {
    this.nc = await connectNats(this.what, this.opts.servers);
    this.js = jetstream(this.nc);
    if (!this.exactlyOnce) return;
    // Batches the restored checkpoint held (of any old subtask): published again with their ids; what the stream
    // already has is dropped by its duplicate window.
    this.state = this.ctx.operatorState.getListState<Batch>(`__jetstream-sink-${this.sinkId}`);
    const restored = this.state.get();
    this.state.update([]);
    for (const b of restored) await this.publishBatch(b);
    await this.drain();
  }

  private subjectOf(r: T): string {
    const s = typeof this.opts.subject === "function" ? this.opts.subject(r) : this.opts.subject;
    if (typeof s !== "string" || s.length === 0) throw new Error(`${this.what}: the subject function returned ${JSON.stringify(s)}, expected a subject`);
    return s;
  }

  private payloadOf(r: T): string | Uint8Array {
    return this.opts.serializer ? this.opts.serializer(r) : JSON.stringify(r);
  }

  process(record: unknown): void {
    const r = record as T;
    if (this.exactlyOnce) {
      const p = this.payloadOf(r);
      this.current.push([this.subjectOf(r), typeof p === "string" ? p : decoder.decode(p)]);
    } else this.publish(this.subjectOf(r), this.payloadOf(r), null);
  }

  private publish(subject: string, payload: string | Uint8Array, msgID: string | null): void {
    const data = typeof payload === "string" ? encoder.encode(payload) : payload;
    this.inFlight++;
    this.js!.publish(subject, data, msgID !== null ? { msgID } : undefined).then(this.acked, (err) => {
      this.error ??= new Error(`${this.what}: publishing to ${subject} failed: ${errorText(err)}`, { cause: err });
      this.acked();
    });
  }

  private readonly acked = (): void => {
    this.inFlight--;
    if (this.waiters.length === 0) return;
    const still: { below: number; resolve: () => void }[] = [];
    for (const w of this.waiters) (this.inFlight < w.below || this.error !== null ? w.resolve() : still.push(w));
    this.waiters = still;
  };

  /** Resolves once fewer than `below` publishes are in flight (or one failed). */
  private inFlightBelow(below: number): Promise<void> | null {
    if (this.inFlight < below || this.error !== null) return null;
    return new Promise((resolve) => this.waiters.push({ below, resolve }));
  }

  private async publishBatch(b: Batch): Promise<void> {
    const prefix = `${this.ctx.jobId}-${this.sinkId}-${b.subtask}-${b.checkpointId}-`;
    // Refilled to maxInFlight once half of it came back: one wait per maxInFlight/2 messages.
    const low = Math.max(1, this.maxInFlight >> 1);
    for (let i = 0; i < b.messages.length; i++) {
      const [subject, payload] = b.messages[i]!;
      this.publish(subject, payload, prefix + i);
      if (this.inFlight >= this.maxInFlight) await this.inFlightBelow(low);
      if (this.error !== null) throw this.error;
    }
  }

  /** Waits for every publish in flight; throws the first failure. */
  private async drain(): Promise<void> {
    const p = this.inFlightBelow(1);
    if (p) await p;
    if (this.error !== null) throw this.error;
  }

  waitReady(): Promise<void> | null {
    if (this.error !== null) return Promise.reject(this.error);
    if (this.inFlight >= this.maxInFlight) return this.inFlightBelow(Math.max(1, this.maxInFlight >> 1));
    return null;
  }

  snapshotState(checkpointId: number): Promise<void> | void {
    if (!this.exactlyOnce) return this.drain();
    if (this.current.length > 0) this.pending.push({ subtask: this.ctx.subtaskIndex, checkpointId, messages: this.current });
    this.current = [];
    this.state!.update(this.pending);
  }

  async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    if (!this.exactlyOnce) return;
    const due = this.pending.filter((b) => b.checkpointId <= checkpointId);
    if (due.length === 0) return;
    this.pending = this.pending.filter((b) => b.checkpointId > checkpointId);
    for (const b of due) await this.publishBatch(b);
    await this.drain();
  }

  /** End of input: the rest is the final batch, or (FLIP-147) the final checkpoint's, published on its notify. */
  async endInput(): Promise<void> {
    this.ended = true;
    if (!this.exactlyOnce) return this.drain();
    if (this.ctx.finalCheckpoint !== true) this.moveCurrentToFinal();
  }

  private moveCurrentToFinal(): void {
    if (this.current.length > 0) this.pending.push({ subtask: this.ctx.subtaskIndex, checkpointId: FINAL, messages: this.current });
    this.current = [];
  }

  hasFinalCommit(): boolean {
    return this.exactlyOnce && this.ended && (this.pending.length > 0 || this.current.length > 0);
  }

  async finalCommit(): Promise<void> {
    // A final checkpoint that never completed: what is still unbatched is the final batch.
    this.moveCurrentToFinal();
    await this.notifyCheckpointComplete(FINAL);
  }

  dispose(): void {
    void this.nc?.close().catch(() => {});
    this.nc = null;
  }
}

