// Consumer side of a task's inputs (runs inside the task's Worker): buffers and events of all input
// channels arrive in one queue, in arrival order (each channel's own order is kept); poll() decodes one
// buffer's records (into an array, or handing each to the task as it is decoded) and then releases it (frees its
// slot in the channel's ring).
// Priority events (unaligned barriers, cancel markers) overtake the queue; for an unaligned checkpoint the gate
// records the records of the buffers that belong to its channel state (see startRecording).
import { assert } from "../util/assert.ts";
import { sleepSync } from "../util/sleep-sync.ts";
import { isPriorityEvent, type ChannelEvent } from "./record-writer.ts";
import { RecordDeserializer, wholeChunksLength } from "./serialization.ts";

/** seq: arrival order over all channels. skip: a priority event's place in its channel's order (only releases its ring slot). */
type Arrival =
  | { channel: string; seq: number; bytes: Uint8Array; release: () => void }
  /**
   * A buffer decoded early for an unaligned checkpoint's channel state. Its ring slot is released only when the task
   * reads it (release), so that early decoding does not let more in than the channel holds; null: nothing to release.
   */
  | { channel: string; seq: number; decoded: unknown[]; size: number; release: (() => void) | null }
  | { channel: string; seq: number; event: ChannelEvent; release: (() => void) | null; skip?: boolean; priority?: boolean };

/** How long waitNext sleeps between polls while arrivals are dense (the kernel adds its timer slack, 50-100 us). */
const POLL_MS = 0.1;
/** A wait that ended sooner than this after it began means dense arrivals: the next waits poll. */
const DENSE_GAP_MS = 0.5;

/**
 * An input channel's recorded state in raw mode (InputGate.rawChannelState), in order: records (decoded already), or
 * a run of the channel's bytes from a chunk boundary, whole chunks, with the record-shape table there
 * (decodeChunksFrom), and the number of records they hold.
 */
export type RecordedPart = { records: unknown[] } | { bytes: Uint8Array; shapes: string[][]; count: number };

/** What a raw-mode recording hands over: no records in the map itself; `parts` holds each channel's state. */
export class RecordedChannelState extends Map<string, unknown[]> {
  constructor(readonly parts: Map<string, RecordedPart[]>) {
    super();
  }
}

/** A run of raw bytes being recorded: the buffers (copies) and the stream state where it starts. */
type RawRun = { chunks: Uint8Array[]; shapes: string[][]; count: number };

/** One channel's part of an unaligned checkpoint's channel state, being recorded. */
interface ChannelRecording {
  records: unknown[];
  /** Raw mode: records and runs of bytes in order, and the deserializer's read count after the last run's buffer. */
  parts?: ({ records: unknown[] } | RawRun)[];
  runReads?: number;
  barrierSeq: number;
  /** Bytes the barrier overtook at the producer (they arrive after it), and how many of them arrived so far. */
  overtaken: number;
  after: number;
  done: boolean;
  /** Records of the buffers a remote channel's barrier overtook on the TaskManagers (onOvertakingEvent): the rest of the part. */
  extra?: unknown[];
}

export interface Recording {
  checkpointId: number;
  channels: Map<string, ChannelRecording>;
  onDone: (state: Map<string, unknown[]>) => void;
}

export type GateItem = { channel: string; records: unknown[] } | { channel: string; event: ChannelEvent };

export class InputGate {
  private readonly deserializers = new Map<string, RecordDeserializer>();
  private readonly queue: Arrival[] = [];
  private head = 0;
  private wake: (() => void) | null = null;
  private open: number;
  private readonly ended = new Set<string>();
  /** Barrier alignment: channels whose arrivals are held back (in order) until unblockAll(). */
  private readonly blocked = new Set<string>();
  private held: Arrival[] = [];
  private seq = 0;
  /** Unread buffers per channel (queued or held). */
  private readonly queuedOf = new Map<string, number>();
  /** The latest barrier that arrived on each channel: its id, arrival seq and overtaken bytes. */
  private readonly lastBarrier = new Map<string, { id: number; seq: number; overtaken: number; extra?: unknown[] }>();
  /**
   * Remote channels: buffers a priority event overtook on the TaskManagers' main threads, decoded when it came, that
   * have not come through the ring yet (they do, in this order, after it): their bytes (checked when they come) and
   * records (read then).
   */
  private readonly ahead = new Map<string, { bytes: Uint8Array; records: unknown[] }[]>();
  private recording: Recording | null = null;
  /**
   * Record the buffers of unaligned checkpoints' input channel state as bytes (RecordedChannelState), not as records
   * to be re-packed: the task sets it; decoded only on restore. Off: records (tests compare them directly).
   */
  rawChannelState = false;
  /**
   * Told of each aligned barrier when it arrives, before the task reads it (Flink's barrier announcement): the
   * barrier handler times an aligned-checkpoint-timeout from it.
   */
  onBarrierArrived: ((channel: string, barrier: Extract<ChannelEvent, { type: "barrier" }>) => void) | null = null;
  /** The buffer poll() returned last: its channel and arrival seq (see unread). */
  private lastRead: { channel: string; seq: number } | null = null;
  buffersIn = 0;
  bytesIn = 0;

  constructor(channels: Iterable<string>) {
    for (const ch of channels) this.deserializers.set(ch, new RecordDeserializer());
    this.open = this.deserializers.size;
  }

  hasChannel(channel: string): boolean {
    return this.deserializers.has(channel);
  }

  /** All channels delivered end-of-partition. */
  get finished(): boolean {
    return this.open === 0;
  }

  /** Buffers received and not yet read. */
  get queuedBuffers(): number {
    let n = 0;
    for (let i = this.head; i < this.queue.length; i++) if (!("event" in this.queue[i]!)) n++;
    for (const a of this.held) if (!("event" in a)) n++;
    return n;
  }

  /** Channels that have not delivered end-of-partition. */
  get openChannels(): number {
    return this.open;
  }

  isEnded(channel: string): boolean {
    return this.ended.has(channel);
  }

  /** Holds back what arrives on `channel` from now on (it delivered a barrier the others have not yet). */
  block(channel: string): void {
    this.blocked.add(channel);
  }

  /** Alignment done: held arrivals come next, each channel's still in its own order. */
  unblockAll(): void {
    this.blocked.clear();
    if (this.held.length === 0) return;
    this.queue.splice(this.head, 0, ...this.held);
    this.held = [];
    // Released outside the task loop (an abort, an aligned-checkpoint-timeout): a task waiting for input reads them.
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /**
   * Unaligned checkpoint n started at this task (its snapshot was just taken): from now on, the records of each
   * channel's buffers that arrived before that channel's barrier n, and of the bytes the barrier overtook at the
   * producer (they arrive after it), are recorded as the channel's state while they are read normally. onDone gets
   * the state once every channel's part is complete (barrier and overtaken bytes in, or the channel ended).
   */
  startRecording(checkpointId: number, onDone: Recording["onDone"]): void {
    const channels = new Map<string, ChannelRecording>();
    for (const ch of this.deserializers.keys()) {
      if (this.ended.has(ch)) continue;
      const rec: ChannelRecording = { records: [], barrierSeq: Infinity, overtaken: 0, after: 0, done: false };
      if (this.rawChannelState) rec.parts = [];
      const b = this.lastBarrier.get(ch);
      if (b && b.id >= checkpointId) {
        rec.barrierSeq = b.seq;
        rec.overtaken = b.overtaken;
        if (b.extra) rec.extra = b.extra;
      }
      channels.set(ch, rec);
    }
    // An alignment (a savepoint's) ends before an unaligned checkpoint starts, so nothing is held back now.
    assert(this.held.length === 0, () => `input gate: recording checkpoint ${checkpointId} with ${this.held.length} arrivals held back`);
    this.recording = { checkpointId, channels, onDone };
    // What is queued now is in flight: decoded at once (in each channel's order), so the channel state is complete
    // when the barriers and the bytes they overtook have arrived, not when the task has worked through the backlog.
    // Buffers an earlier recording decoded and the task has not read yet are in flight too.
    for (let i = this.head; i < this.queue.length; i++) {
      const a = this.queue[i]!;
      if ("bytes" in a) this.queue[i] = this.recordEarly(a) ?? a;
      else if ("decoded" in a) this.recordDecoded(a);
    }
    for (const rec of channels.values()) this.checkRecorded(rec);
    this.maybeRecorded();
  }

  /** Decodes a buffer for the channel state if it belongs to it (its slot is released when it is read); null when it does not. */
  private recordEarly(a: Extract<Arrival, { bytes: Uint8Array }>): Arrival | null {
    const rec = this.recording?.channels.get(a.channel);
    if (!rec || rec.done) return null;
    if (a.seq > rec.barrierSeq) {
      if (rec.after >= rec.overtaken) return null;
      rec.after += a.bytes.length;
      assert(rec.after <= rec.overtaken, () => `input channel ${a.channel}: ${rec.after} bytes after barrier ${this.recording!.checkpointId}, which overtook ${rec.overtaken}`);
    }
    const records: unknown[] = [];
    const d = this.deserializers.get(a.channel)!;
    if (rec.parts) {
      // Raw: a copy of the bytes (the ring slot is reused once read), continuing the last run if nothing else of the
      // channel was decoded since; else a new run from where the stream stands (a chunk begun earlier, the shapes).
      const last = rec.parts.at(-1);
      let run = last !== undefined && "chunks" in last && rec.runReads === d.reads ? last : null;
      if (run === null) {
        const st = d.streamState();
        run = { chunks: st.prefix.length > 0 ? [st.prefix] : [], shapes: st.shapes, count: 0 };
        rec.parts.push(run);
      }
      run.chunks.push(a.bytes.slice());
      d.read(a.bytes, records);
      run.count += records.length; // the records of the chunks this buffer completed: the run's whole chunks
      rec.runReads = d.reads;
    } else {
      d.read(a.bytes, records);
      for (let i = 0; i < records.length; i++) rec.records.push(records[i]);
    }
    const left = this.queuedOf.get(a.channel)!;
    assert(left > 0, () => `input channel ${a.channel}: a buffer decoded with ${left} counted as queued`);
    this.queuedOf.set(a.channel, left - 1);
    // Complete only past the barrier: a buffer before it may have more of the channel's in-flight buffers behind it.
    if (a.seq > rec.barrierSeq) this.checkRecorded(rec);
    return { channel: a.channel, seq: a.seq, decoded: records, size: a.bytes.length, release: a.release };
  }

  /** A buffer decoded for an earlier recording, still unread: its records belong to this one as well. */
  private recordDecoded(a: Extract<Arrival, { decoded: unknown[] }>): void {
    const rec = this.recording?.channels.get(a.channel);
    if (!rec || rec.done) return;
    if (a.seq > rec.barrierSeq) {
      if (rec.after >= rec.overtaken) return;
      rec.after += a.size;
    }
    addRecords(rec, a.decoded);
    if (a.seq > rec.barrierSeq) this.checkRecorded(rec);
  }

  private checkRecorded(rec: ChannelRecording): void {
    if (!rec.done && rec.barrierSeq !== Infinity && rec.after >= rec.overtaken) {
      rec.done = true;
      // Everything before the barrier that reached the gate is recorded by now; the overtaken rest follows it.
      if (rec.extra) addRecords(rec, rec.extra);
    }
  }

  /** Gives up the recording of checkpoint n (aborted), or any recording when checkpointId is omitted. */
  stopRecording(checkpointId?: number): void {
    if (this.recording && (checkpointId === undefined || this.recording.checkpointId <= checkpointId)) this.recording = null;
  }

  get recordingCheckpoint(): number | null {
    return this.recording?.checkpointId ?? null;
  }

  private maybeRecorded(): void {
    const r = this.recording;
    if (!r) return;
    for (const rec of r.channels.values()) if (!rec.done) return;
    this.recording = null;
    if (this.rawChannelState) {
      const parts = new Map<string, RecordedPart[]>();
      for (const [ch, rec] of r.channels) {
        const out: RecordedPart[] = [];
        for (const p of rec.parts ?? []) {
          if ("records" in p) {
            if (p.records.length > 0) out.push(p);
            continue;
          }
          // One buffer of the run's bytes, ending at its last whole chunk: a chunk the run ends in the middle of
          // continues after the barrier (the producer's output channel state has it) or in `extra` (its records).
          let size = 0;
          for (const c of p.chunks) size += c.length;
          const bytes = new Uint8Array(size);
          let at = 0;
          for (const c of p.chunks) (bytes.set(c, at), (at += c.length));
          const whole = wholeChunksLength(bytes);
          if (whole > 0) out.push({ bytes: bytes.subarray(0, whole), shapes: p.shapes, count: p.count });
        }
        if (out.length > 0) parts.set(ch, out);
      }
      r.onDone(new RecordedChannelState(parts));
      return;
    }
    const state = new Map<string, unknown[]>();
    for (const [ch, rec] of r.channels) if (rec.records.length > 0) state.set(ch, rec.records);
    r.onDone(state);
  }

  /** A buffer that arrived as an ArrayBuffer of its own (unit tests); recycle gets it back once read. */
  onBuffer(channel: string, buf: ArrayBuffer, size: number, recycle: (buf: ArrayBuffer) => void): void {
    this.onBytes(channel, new Uint8Array(buf, 0, size), () => recycle(buf));
  }

  /** A buffer's bytes (e.g. a view of a ring slot), valid until release() is called after they are read. */
  onBytes(channel: string, bytes: Uint8Array, release: () => void): void {
    this.check(channel);
    const ahead = this.ahead.get(channel);
    if (ahead !== undefined && ahead.length > 0) {
      this.onAheadBytes(channel, bytes, release, ahead);
      return;
    }
    this.queuedOf.set(channel, (this.queuedOf.get(channel) ?? 0) + 1);
    const a = { channel, seq: ++this.seq, bytes, release };
    if (this.recording) {
      const early = this.recordEarly(a);
      if (early) {
        this.push(early);
        this.maybeRecorded();
        return;
      }
    }
    this.push(a);
  }

  /** An event; release (if given) is called when it is read, in order with the channel's buffers. extra: see onOvertakingEvent. */
  onEvent(channel: string, event: ChannelEvent, release: (() => void) | null = null, extra?: unknown[]): void {
    this.check(channel);
    const seq = ++this.seq;
    if (event.type === "barrier") {
      const b = { id: event.checkpointId, seq, overtaken: event.overtakenBytes ?? 0, ...(extra ? { extra } : {}) };
      // An older barrier that a newer one overtook (it waited in order behind data) says nothing new.
      if ((this.lastBarrier.get(channel)?.id ?? -Infinity) <= b.id) this.lastBarrier.set(channel, b);
      const rec = this.recording?.channels.get(channel);
      if (rec && !rec.done && b.id >= this.recording!.checkpointId && rec.barrierSeq === Infinity) {
        rec.barrierSeq = b.seq;
        rec.overtaken = b.overtaken;
        if (extra) rec.extra = extra;
        this.checkRecorded(rec);
        this.maybeRecorded();
      }
    }
    if (isPriorityEvent(event)) {
      // Overtakes everything queued; its slot is released in the channel's order (rings release in order).
      this.queue.push({ channel, seq, event, release, skip: true });
      this.queue.splice(this.head, 0, { channel, seq, event, release: null, priority: true });
      const w = this.wake;
      this.wake = null;
      w?.();
      return;
    }
    this.push({ channel, seq, event, release });
    if (event.type === "barrier") this.onBarrierArrived?.(channel, event);
  }

  /** Where arrivals come from (the channels' ring receivers): drained on every poll, waited on by waitNext. */
  private readonly sources: { poll(): void; armWake(): void }[] = [];

  addSource(source: { poll(): void; armWake(): void }): void {
    this.sources.push(source);
    // A channel connected while the task already waits (the usual order: tasks start before their channels are
    // wired) must wake it too.
    if (this.wake !== null) {
      source.poll();
      if (this.wake !== null) source.armWake();
    }
  }

  private pollSources(): void {
    const s = this.sources;
    for (let i = 0; i < s.length; i++) s[i]!.poll();
  }

  /**
   * A priority event of a remote channel with the buffers it overtook on the TaskManagers' main threads (in channel
   * order; remote-receiver.ts): they are the channel's in-flight data that has not reached this gate, and come
   * through the ring again after the event. They are decoded now, as the continuation of the channel's stream (what
   * the gate holds of the channel is decoded first), so that an unaligned checkpoint records them at once as the end
   * of the channel's part (its state then is complete when the barrier is in, not when the backlog has crossed), and
   * the records are handed out when the buffers come. The first of them may be buffers an earlier event overtook
   * that have not come yet: those are decoded already, and must be the same bytes.
   */
  onOvertakingEvent(channel: string, event: ChannelEvent, overtaken: Uint8Array[]): void {
    this.check(channel);
    let ahead = this.ahead.get(channel);
    if (!ahead) this.ahead.set(channel, (ahead = []));
    if (overtaken.length < ahead.length) throw new Error(`input channel ${channel}: a ${event.type} overtook ${overtaken.length} buffers, fewer than the ${ahead.length} an earlier one overtook that have not come yet`);
    for (let i = 0; i < ahead.length; i++) {
      if (!sameBytes(ahead[i]!.bytes, overtaken[i]!)) throw new Error(`input channel ${channel}: overtaken buffer ${i} of a ${event.type} differs from the one an earlier event overtook`);
    }
    this.decodeQueued(channel);
    const d = this.deserializers.get(channel)!;
    for (let i = ahead.length; i < overtaken.length; i++) {
      const records: unknown[] = [];
      try {
        d.read(overtaken[i]!, records);
      } catch (err) {
        throw new Error(`input channel ${channel}: overtaken buffer ${i} of a ${event.type} does not decode: ${(err as Error).message}`);
      }
      ahead.push({ bytes: overtaken[i]!, records });
    }
    const extra: unknown[] = [];
    for (const a of ahead) for (let i = 0; i < a.records.length; i++) extra.push(a.records[i]);
    this.onEvent(channel, event, null, extra);
  }

  /** Decodes, in order, the buffers of `channel` the gate holds undecoded (queued, or held back by an alignment). */
  private decodeQueued(channel: string): void {
    const d = this.deserializers.get(channel)!;
    const decode = (list: Arrival[], from: number) => {
      for (let i = from; i < list.length; i++) {
        const a = list[i]!;
        if (a.channel !== channel || !("bytes" in a)) continue;
        const records: unknown[] = [];
        d.read(a.bytes, records);
        const left = this.queuedOf.get(channel)!;
        assert(left > 0, () => `input channel ${channel}: a buffer decoded with ${left} counted as queued`);
        this.queuedOf.set(channel, left - 1);
        list[i] = { channel, seq: a.seq, decoded: records, size: a.bytes.length, release: a.release };
      }
    };
    // Held arrivals were taken from the queue's head: they come before what is still queued.
    decode(this.held, 0);
    decode(this.queue, this.head);
  }

  /** A buffer that a priority event overtook comes through the ring: decoded already, it must be the same bytes. */
  private onAheadBytes(channel: string, bytes: Uint8Array, release: () => void, ahead: { bytes: Uint8Array; records: unknown[] }[]): void {
    const next = ahead.shift()!;
    if (!sameBytes(next.bytes, bytes)) {
      throw new Error(`input channel ${channel}: a buffer of ${bytes.length} bytes came where the ${next.bytes.length} bytes a priority event overtook were expected`);
    }
    const a = { channel, seq: ++this.seq, decoded: next.records, size: bytes.length, release };
    if (this.recording) this.recordDecoded(a);
    this.push(a);
    this.maybeRecorded();
  }

  /**
   * The next item, or null when nothing has arrived. With `into`, a buffer read now is decoded into that array
   * (emptied first) rather than a new one, which the caller may then reuse for the next poll: the task's loop does,
   * as it is done with a buffer's records before it polls again (a new array per buffer, grown record by record,
   * cost the keyed sum at p=2 about 4 % of its CPU; docs/benchmarks.md). With `each` as well, a buffer read now has
   * each record handed to `each` as it is decoded, none collected (the task processes them right there: no array of
   * a buffer's records made and kept alive, about a tenth of a keyed consumer's CPU), and comes back as `into`, empty;
   * or, when `goOn` (asked every few records: RecordDeserializer.read) said to stop, holding the records not handed over.
   * Records decoded earlier (for an unaligned checkpoint's recording, or put back) come in an array of their own.
   */
  poll(into?: unknown[], each?: (record: unknown) => void, goOn?: () => boolean): GateItem | null {
    this.pollSources();
    let a: Arrival;
    for (;;) {
      if (this.head === this.queue.length) return null;
      a = this.queue[this.head++]!;
      if (this.blocked.size > 0 && this.blocked.has(a.channel) && !("priority" in a && a.priority)) {
        this.held.push(a); // a blocked channel: kept, unread and unrecycled, which backpressures its producer
        continue;
      }
      if ("skip" in a && a.skip) {
        a.release?.();
        continue;
      }
      break;
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if ("event" in a) {
      a.release?.();
      if (a.event.type === "end") {
        const d = this.deserializers.get(a.channel)!;
        if (d.hasPartialRecord) throw new Error(`channel ${a.channel} ended in the middle of a record`);
        if (this.ended.has(a.channel)) throw new Error(`channel ${a.channel} ended twice`);
        this.ended.add(a.channel);
        this.open--;
        const rec = this.recording?.channels.get(a.channel);
        if (rec && !rec.done) {
          rec.done = true;
          this.maybeRecorded();
        }
      }
      return { channel: a.channel, event: a.event };
    }
    this.buffersIn++;
    this.lastRead = { channel: a.channel, seq: a.seq };
    if ("decoded" in a) {
      a.release?.();
      this.bytesIn += a.size;
      return { channel: a.channel, records: a.decoded };
    }
    const records = into ?? [];
    records.length = 0;
    this.bytesIn += a.bytes.length;
    const left = this.queuedOf.get(a.channel)!;
    assert(left > 0, () => `input channel ${a.channel}: a buffer read with ${left} counted as queued`);
    this.queuedOf.set(a.channel, left - 1);
    try {
      this.deserializers.get(a.channel)!.read(a.bytes, records, each, goOn);
    } finally {
      a.release();
    }
    return { channel: a.channel, records };
  }

  /** A priority event (an unaligned barrier, a cancel marker) waits at the head of the queue. */
  get priorityWaiting(): boolean {
    const a = this.queue[this.head];
    return a !== undefined && "priority" in a && a.priority === true;
  }

  /**
   * The task stopped in the middle of the buffer it read last (a priority event came in): the records it did not
   * process go back to the head of the queue, behind the priority events there and ahead of the channel's other
   * buffers, in the place of the buffer they came from (so an unaligned checkpoint records them as in flight).
   */
  unread(channel: string, records: unknown[]): void {
    const last = this.lastRead;
    assert(last !== null && last.channel === channel, () => `input gate: records of ${channel} put back, but the last buffer read was of ${last?.channel ?? "no channel"}`);
    let at = this.head;
    while (at < this.queue.length && this.priorityAt(at)) at++;
    this.queue.splice(at, 0, { channel, seq: last.seq, decoded: records, size: 0, release: null });
    this.buffersIn--; // read again: counted once
  }

  private priorityAt(i: number): boolean {
    const a = this.queue[i]!;
    return "priority" in a && a.priority === true;
  }

  /**
   * Resolves when something arrives. While arrivals are dense (the last wait ended within DENSE_GAP_MS, or the last
   * poll found data) the gate polls instead of waiting to be woken: it sleeps POLL_MS without asking any producer for
   * a wake-up, then looks again, as Linux's NAPI switches from interrupts to polling under load. A wake-up costs the
   * producer's thread about as much as its record's whole path (Atomics.notify of a pending waitAsync, 15-20 us on
   * this project's VMs, one per buffer or two at a buffer per record), while a short synchronous sleep costs only
   * this thread and delays an arrival by at most the sleep. A poll that finds nothing ends the polling.
   */
  waitNext(): Promise<void> {
    if (this.head < this.queue.length) return Promise.resolve();
    this.pollSources();
    if (this.head < this.queue.length) return Promise.resolve();
    if (this.dense) {
      sleepSync(POLL_MS);
      this.polls++;
      this.pollSources();
      if (this.head < this.queue.length) return Promise.resolve();
      this.dense = false;
    }
    for (const s of this.sources) s.armWake();
    const armed = performance.now();
    return new Promise((resolve) => {
      this.wake = () => {
        this.dense = performance.now() - armed < this.denseGapMs;
        resolve();
      };
    });
  }

  /** Arrivals come often enough that polling is cheaper than being woken (waitNext). */
  private dense = false;
  /** A wait that ended sooner than this means dense arrivals (DENSE_GAP_MS; tests set it to be independent of timing). */
  denseGapMs = DENSE_GAP_MS;
  /** Sleeps taken instead of waits (waitNext): tests look at it. */
  polls = 0;

  private push(a: Arrival): void {
    this.queue.push(a);
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private check(channel: string): void {
    if (!this.deserializers.has(channel)) throw new Error(`received data for unknown input channel ${channel}`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Appends records to a channel's recorded state (raw mode: to its last records part, or a new one after a run). */
function addRecords(rec: ChannelRecording, records: unknown[]): void {
  let target = rec.records;
  if (rec.parts) {
    const last = rec.parts.at(-1);
    if (last !== undefined && "records" in last) target = last.records;
    else rec.parts.push({ records: (target = []) });
  }
  for (let i = 0; i < records.length; i++) target.push(records[i]);
}
