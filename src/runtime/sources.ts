// Sources as splits (Flink FLIP-27 style): a source's work is cut into splits, each carrying the reader's
// position in it. A checkpoint stores the splits' positions (plain JSON data); on restore, possibly at another
// parallelism, the splits are reassigned to subtasks and reading continues right where it stopped.
import * as fs from "node:fs";
import type { SourceSpec } from "../api/plan.ts";
import { eventAt } from "../nexmark/generator.ts";
import type { ConnectorSplit } from "../api/connector.ts";
import { sleepSync } from "../util/sleep-sync.ts";

export const SOURCE_CHUNK = 1024;
/** The smallest chunk a back-pressured source reads (see SourceReader.outputFullAfter). */
const MIN_SOURCE_CHUNK = 8;
/** A throttled Nexmark chunk spans at least this long of its schedule (nextNexmark). */
const THROTTLE_CHUNK_MS = 0.1;
const READ_BYTES = 1 << 20;
const NEWLINE = 10;

/** A unit of a source's work with the reader's position in it: what a checkpoint stores (plain JSON-able data). */
export type SourceSplit =
  /** Values next..last (inclusive) remain. */
  | { type: "sequence"; id: number; next: number; last: number }
  /** Indices next..end-1 of spec.items remain. */
  | { type: "collection"; id: number; next: number; end: number }
  /**
   * The split owns the lines whose first byte lies in [start, end). aligned=false: offset is the split's raw
   * start (the reader skips to the first line start >= offset); aligned=true: offset is exactly the start of
   * the next unread line.
   */
  | { type: "textFile"; id: number; path: string; offset: number; end: number; aligned: boolean }
  /**
   * Nexmark event numbers next, next+stride, ... up to last (inclusive). Strided rather than contiguous, so that
   * parallel subtasks (and the halves of a split) advance through event time together, as Nexmark's generators do.
   */
  | { type: "nexmark"; id: number; next: number; last: number; stride: number }
  /** A connector's split (src/connectors/): read by the connector's own reader; never halved on rescaling. */
  | ConnectorSplit;

/**
 * The splits subtask `subtask` of `parallelism` starts with when there is nothing to restore: one split with
 * id = subtask. A sequence and a text file (by bytes) are split evenly; a collection source is non-parallel,
 * so subtask 0 gets one split of all items (and any other subtask none, so nothing is read twice).
 */
export function initialSplits(spec: SourceSpec, subtask: number, parallelism: number): SourceSplit[] {
  if (!(Number.isInteger(parallelism) && parallelism >= 1 && Number.isInteger(subtask) && subtask >= 0 && subtask < parallelism)) {
    throw new Error(`source: invalid subtask ${subtask} of parallelism ${parallelism}`);
  }
  switch (spec.type) {
    case "collection":
      return subtask === 0 ? [{ type: "collection", id: 0, next: 0, end: spec.items.length }] : [];
    case "sequence": {
      const total = spec.to - spec.from + 1;
      if (total <= 0) return [{ type: "sequence", id: subtask, next: spec.from, last: spec.from - 1 }];
      const first = spec.from + Math.floor((subtask * total) / parallelism);
      const last = spec.from + Math.floor(((subtask + 1) * total) / parallelism) - 1;
      return [{ type: "sequence", id: subtask, next: first, last }];
    }
    case "textFile": {
      let size: number;
      try {
        size = fs.statSync(spec.path).size;
      } catch (err) {
        throw new Error(`text file source: cannot open ${spec.path}: ${(err as Error).message}`);
      }
      const begin = Math.floor((subtask * size) / parallelism);
      const end = Math.floor(((subtask + 1) * size) / parallelism);
      return [{ type: "textFile", id: subtask, path: spec.path, offset: begin, end, aligned: begin === 0 }];
    }
    case "nexmark":
      // Subtask i of p generates event numbers i, i+p, i+2p, ...: disjoint, together all of them.
      return [{ type: "nexmark", id: subtask, next: subtask, last: spec.events - 1, stride: parallelism }];
    case "connector":
      throw new Error("source: a connector source makes its own initial splits");
  }
}

/**
 * The share of restored splits (from all old subtasks, any old parallelism) that subtask `subtask` of
 * `parallelism` reads: those with id % parallelism === subtask (copies).
 */
export function assignSplits(all: readonly SourceSplit[], subtask: number, parallelism: number): SourceSplit[] {
  const out: SourceSplit[] = [];
  for (const s of all) if (s.id % parallelism === subtask) out.push({ ...s });
  return out;
}

/** How much of a split is left (records for sequences and collections, bytes for text files). */
function remaining(s: SourceSplit): number {
  if (s.type === "sequence") return s.last - s.next + 1;
  if (s.type === "collection") return s.end - s.next;
  if (s.type === "nexmark") return s.next > s.last ? 0 : Math.floor((s.last - s.next) / s.stride) + 1;
  if (s.type === "connector") return 1;
  return s.end - s.offset;
}

/**
 * Restored splits made at least `parallelism` in number, so that scaling a source up gives every new subtask work
 * (a subtask without splits would finish at once, and a job with finished tasks takes no more checkpoints). The
 * largest split is halved until there are enough or none can be halved; every subtask computes the same result
 * from the same list. The second half of a text split starts unaligned: its reader skips to the next line start,
 * and the first half reads that line to its end, as with initial splits.
 */
export function splitForParallelism(all: readonly SourceSplit[], parallelism: number): SourceSplit[] {
  const out = all.map((s) => ({ ...s })).filter((s) => remaining(s) > 0);
  let nextId = out.reduce((m, s) => Math.max(m, s.id), -1) + 1;
  while (out.length < parallelism) {
    let big = -1;
    for (let i = 0; i < out.length; i++) {
      const r = remaining(out[i]!);
      if (r >= 2 && (big < 0 || r > remaining(out[big]!) || (r === remaining(out[big]!) && out[i]!.id < out[big]!.id))) big = i;
    }
    if (big < 0) break;
    const s = out[big]!;
    const half = Math.floor(remaining(s) / 2);
    if (s.type === "sequence") {
      out.push({ type: "sequence", id: nextId++, next: s.next + half, last: s.last });
      s.last = s.next + half - 1;
    } else if (s.type === "collection") {
      out.push({ type: "collection", id: nextId++, next: s.next + half, end: s.end });
      s.end = s.next + half;
    } else if (s.type === "nexmark") {
      // Interleaved halves (every other event number each), so both keep pace in event time.
      out.push({ type: "nexmark", id: nextId++, next: s.next + s.stride, last: s.last, stride: s.stride * 2 });
      s.stride *= 2;
    } else if (s.type === "textFile") {
      out.push({ type: "textFile", id: nextId++, path: s.path, offset: s.offset + half, end: s.end, aligned: false });
      s.end = s.offset + half;
    }
  }
  return out;
}

/** Reading state of the text split being read: bytes of the current, unfinished line are kept between reads. */
interface TextState {
  /** File offset of the next read. */
  readPos: number;
  /** Absolute offset of the next unread line's first byte, or -1 while still skipping to the first line start. */
  lineStart: number;
  /** Bytes of that line read so far (copies), concatenated only once its newline is found. */
  parts: Buffer[];
}

/**
 * Reads a subtask's splits in chunks and tells its position after each chunk: one split after another, or (for
 * event time, so that each split's watermark advances with the others) one chunk of each split in turn.
 */
export class SourceReader {
  private readonly splits: SourceSplit[];
  /** Sequential: index of the split being read; those before it are exhausted. Interleaved: the next turn. */
  private cur = 0;
  /** Reading state of text splits that have started, by split index. */
  private readonly texts = new Map<number, TextState>();
  private readonly exhausted: boolean[];
  private buf: Buffer | null = null;
  /** Throttled Nexmark sources: when the reader started and the event number it started with. */
  private throttleStart: { at: number; first: number } | null = null;
  /** Id of the split the last chunk came from (-1 before the first). */
  lastSplitId = -1;
  /**
   * The most records a sequence, collection or Nexmark chunk holds (at most SOURCE_CHUNK). Aligned barriers go in
   * between chunks, so a back-pressured source lowers it to what its output takes at once (outputFullAfter): a trigger
   * then waits for a few records, not for a whole chunk to drain through a slow consumer.
   */
  private maxChunk = SOURCE_CHUNK;

  /** The task's output filled up after `emitted` records of the last chunk: later chunks hold at most that many (at least halved, down to MIN_SOURCE_CHUNK). */
  outputFullAfter(emitted: number): void {
    this.maxChunk = Math.max(MIN_SOURCE_CHUNK, Math.min(emitted, this.maxChunk >> 1));
  }

  /** The last chunk went out without waiting: chunks grow back (the per-chunk work is paid per SOURCE_CHUNK records). */
  chunkWentOut(): void {
    if (this.maxChunk < SOURCE_CHUNK) this.maxChunk = Math.min(SOURCE_CHUNK, this.maxChunk * 2);
  }

  constructor(
    private readonly spec: SourceSpec,
    splits: SourceSplit[],
    private readonly interleave = false,
  ) {
    this.splits = splits.map((s) => {
      if (s.type !== spec.type) throw new Error(`source: a ${s.type} split cannot be read by a ${spec.type} source`);
      return { ...s };
    });
    this.exhausted = this.splits.map(() => false);
  }

  /**
   * The next chunk of records (at most maxChunk for sequence/collection/Nexmark; for a text file the lines
   * completed by one read), never empty, or null when every split is exhausted.
   */
  next(): unknown[] | null {
    if (this.interleave) return this.nextInterleaved();
    while (this.cur < this.splits.length) {
      const chunk = this.readFrom(this.cur);
      if (chunk !== null) return chunk;
      this.exhausted[this.cur] = true;
      this.texts.delete(this.cur);
      this.cur++;
    }
    this.buf = null;
    return null;
  }

  /** Ids of the splits not exhausted yet (as far as the reader knows). */
  activeSplitIds(): number[] {
    const ids: number[] = [];
    for (let i = 0; i < this.splits.length; i++) if (!this.exhausted[i]) ids.push(this.splits[i]!.id);
    return ids;
  }

  private nextInterleaved(): unknown[] | null {
    const n = this.splits.length;
    for (let k = 0; k < n; k++) {
      const i = (this.cur + k) % n;
      if (this.exhausted[i]) continue;
      const chunk = this.readFrom(i);
      if (chunk === null) {
        this.exhausted[i] = true;
        this.texts.delete(i);
        continue;
      }
      this.cur = (i + 1) % n;
      return chunk;
    }
    this.buf = null;
    return null;
  }

  private readFrom(i: number): unknown[] | null {
    const split = this.splits[i]!;
    let chunk: unknown[] | null;
    switch (split.type) {
      case "sequence":
        chunk = this.nextSequence(split);
        break;
      case "collection":
        chunk = this.nextCollection(split);
        break;
      case "textFile":
        chunk = this.nextText(split, i);
        break;
      case "nexmark":
        chunk = this.nextNexmark(split);
        break;
      default:
        throw new Error(`source: a ${split.type} split is read by its connector's reader`);
    }
    if (chunk !== null) this.lastSplitId = split.id;
    return chunk;
  }

  /**
   * Copies of the splits not yet exhausted, with the position right after the last chunk returned by next():
   * a reader built from them reads exactly the records not returned yet.
   */
  positions(): SourceSplit[] {
    const out: SourceSplit[] = [];
    for (let i = 0; i < this.splits.length; i++) {
      if (this.exhausted[i]) continue;
      const s = this.splits[i]!;
      switch (s.type) {
        case "sequence":
          if (s.next <= s.last) out.push({ ...s });
          break;
        case "collection":
          if (s.next < this.collectionEnd(s)) out.push({ ...s });
          break;
        case "nexmark":
          if (s.next <= s.last) out.push({ ...s });
          break;
        case "textFile":
          const text = this.texts.get(i);
          if (text !== undefined && text.lineStart >= 0) {
            if (text.lineStart < s.end) out.push({ ...s, offset: text.lineStart, aligned: true });
          } else if (s.offset < s.end) {
            out.push({ ...s });
          }
          break;
      }
    }
    return out;
  }

  private nextSequence(s: Extract<SourceSplit, { type: "sequence" }>): number[] | null {
    if (s.next > s.last) return null;
    const n = Math.min(this.maxChunk, s.last - s.next + 1);
    const chunk = new Array<number>(n);
    for (let j = 0; j < n; j++) chunk[j] = s.next + j;
    s.next += n;
    return chunk;
  }

  /**
   * The next events of a Nexmark split. Throttled: event number n is due (n - first) / ratePerSecond seconds after
   * the reader's first read (first: the lowest event number the reader started with), and the reader sleeps until
   * the chunk's first event is due and returns only the events due by then, so all subtasks together emit about
   * ratePerSecond events per second.
   */
  private nextNexmark(s: Extract<SourceSplit, { type: "nexmark" }>): unknown[] | null {
    if (s.next > s.last) return null;
    const spec = this.spec;
    if (spec.type !== "nexmark") return null;
    let n = Math.min(this.maxChunk, Math.floor((s.last - s.next) / s.stride) + 1);
    if (spec.throttle) {
      const msPerEvent = 1000 / spec.ratePerSecond;
      if (this.throttleStart === null) {
        let first = s.next;
        for (const x of this.splits) if (x.type === "nexmark" && x.next < first) first = x.next;
        this.throttleStart = { at: performance.now(), first };
      }
      const due = (k: number) => this.throttleStart!.at + (k - this.throttleStart!.first) * msPerEvent;
      // A chunk waits until THROTTLE_CHUNK_MS of events are due (at high rates; at most n): each chunk costs the task
      // a turn of its loop (flushes, a yield to the event loop, a sleep), about 15 us, and with a chunk per event or
      // two that overhead alone kept the source thread busy at any rate over about 100 K events/s, so any time slice
      // it lost became lateness.
      const batch = Math.min(n, Math.max(1, Math.floor(THROTTLE_CHUNK_MS / (msPerEvent * s.stride))));
      const wait = due(s.next + (batch - 1) * s.stride) - performance.now();
      if (wait > 0) sleepSync(wait);
      const now = performance.now();
      let k = 1;
      while (k < n && due(s.next + k * s.stride) <= now) k++;
      n = k;
    }
    const chunk = new Array<unknown>(n);
    for (let j = 0; j < n; j++) {
      chunk[j] = eventAt(s.next, spec);
      s.next += s.stride;
    }
    return chunk;
  }

  private collectionEnd(s: Extract<SourceSplit, { type: "collection" }>): number {
    return this.spec.type === "collection" ? Math.min(s.end, this.spec.items.length) : 0;
  }

  private nextCollection(s: Extract<SourceSplit, { type: "collection" }>): unknown[] | null {
    const end = this.collectionEnd(s);
    if (s.next >= end || this.spec.type !== "collection") return null;
    const stop = Math.min(end, s.next + this.maxChunk);
    const chunk = this.spec.items.slice(s.next, stop);
    s.next = stop;
    return chunk;
  }

  /**
   * The lines completed by the next read(s) of this split (reads go on while a line is unfinished), or null
   * when the split has no more lines. The file is opened for the call only, so an abandoned reader holds no fd.
   */
  private nextText(s: Extract<SourceSplit, { type: "textFile" }>, index: number): string[] | null {
    const end = s.end;
    let st = this.texts.get(index);
    if (st === undefined) {
      if (s.offset >= end) return null;
      // Unaligned: the first line start >= offset is 0, or just after a newline at offset-1 or later.
      const aligned = s.aligned || s.offset === 0;
      st = { readPos: aligned ? s.offset : s.offset - 1, lineStart: aligned ? s.offset : -1, parts: [] };
      this.texts.set(index, st);
    }
    if (st.lineStart >= end) return null;
    let fd: number;
    try {
      fd = fs.openSync(s.path, "r");
    } catch (err) {
      throw new Error(`text file source: cannot open ${s.path}: ${(err as Error).message}`);
    }
    try {
      const buf = (this.buf ??= Buffer.allocUnsafe(READ_BYTES));
      for (;;) {
        let n: number;
        try {
          n = fs.readSync(fd, buf, 0, READ_BYTES, st.readPos);
        } catch (err) {
          throw new Error(`text file source: cannot read ${s.path}: ${(err as Error).message}`);
        }
        if (n === 0) {
          // End of file: a last line without a newline is still a line.
          if (st.lineStart >= 0 && st.parts.length > 0 && st.lineStart < end) {
            const line = stripCr(Buffer.concat(st.parts).toString("utf8"));
            st.lineStart = st.readPos;
            st.parts = [];
            return [line];
          }
          st.lineStart = Math.max(st.lineStart, end);
          return null;
        }
        let data = buf.subarray(0, n);
        let dataPos = st.readPos;
        st.readPos += n;
        if (st.lineStart < 0) {
          const nl = data.indexOf(NEWLINE);
          if (nl < 0) continue;
          st.lineStart = dataPos + nl + 1;
          data = data.subarray(nl + 1);
          dataPos = st.lineStart;
        }
        const lines: string[] = [];
        let from = 0;
        for (;;) {
          if (st.lineStart >= end) return lines.length > 0 ? lines : null;
          const nl = data.indexOf(NEWLINE, from);
          if (nl < 0) break;
          let line: string;
          if (st.parts.length > 0) {
            st.parts.push(data.subarray(from, nl));
            line = Buffer.concat(st.parts).toString("utf8");
            st.parts = [];
          } else {
            line = data.toString("utf8", from, nl);
          }
          lines.push(stripCr(line));
          from = nl + 1;
          st.lineStart = dataPos + from;
        }
        if (from < data.length) st.parts.push(Buffer.from(data.subarray(from))); // a copy: buf is reused
        if (lines.length > 0) return lines;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** The records of subtask `subtask` of `parallelism`, read from its initial splits. */
export function* readSource(spec: SourceSpec, subtask: number, parallelism: number): Iterable<unknown[]> {
  const reader = new SourceReader(spec, initialSplits(spec, subtask, parallelism));
  for (let chunk = reader.next(); chunk !== null; chunk = reader.next()) yield chunk;
}

/**
 * Lines whose first byte lies in this subtask's byte range of the file, so that parallel readers split a
 * file without overlap or loss (a line is read whole even when it runs past the range's end).
 */
export function* textFileLines(path: string, subtask: number, parallelism: number): Iterable<string[]> {
  yield* readSource({ type: "textFile", path }, subtask, parallelism) as Iterable<string[]>;
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
