// Replayable sources (FLIP-27 style splits): initial splits cover every record exactly once, positions taken
// at chunk boundaries resume exactly where reading stopped, and restored splits can be reassigned to another
// parallelism without loss or duplicates.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SourceSpec } from "../src/api/plan.ts";
import { SOURCE_CHUNK, SourceReader, type SourceSplit, assignSplits, initialSplits, readSource, splitForParallelism } from "../src/runtime/sources.ts";
import { expectedLines, rng } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tm-source-splits-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;

let fileCount = 0;
function writeTemp(content: string): string {
  const path = join(dir, `input-${++fileCount}.txt`);
  writeFileSync(path, content);
  return path;
}


/** What a checkpoint does to positions: they must survive JSON unchanged. */
function roundTrip(splits: SourceSplit[]): SourceSplit[] {
  const copy = JSON.parse(JSON.stringify(splits)) as SourceSplit[];
  expect(copy).toEqual(splits);
  return copy;
}

function keyOf(r: unknown): string {
  return typeof r === "string" ? `s:${r}` : JSON.stringify(r);
}

const clip = (s: string | undefined) => (s === undefined ? "<none>" : s.length > 80 ? `${s.slice(0, 80)}...(${s.length} chars)` : s);

/** got and want hold the same records with the same multiplicities (order ignored); compact failure message. */
function expectExactlyOnce(got: unknown[], want: unknown[], what: string): void {
  const counts = new Map<string, number>();
  for (const r of want) {
    const k = keyOf(r);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const problems: string[] = [];
  for (const r of got) {
    const k = keyOf(r);
    const c = counts.get(k) ?? 0;
    if (c === 0) problems.push(`extra or duplicate: ${clip(k)}`);
    else counts.set(k, c - 1);
    if (problems.length >= 3) break;
  }
  for (const [k, c] of counts) {
    if (problems.length >= 6) break;
    if (c > 0) problems.push(`missing ${c}x: ${clip(k)}`);
  }
  expect(`${what}: ${got.length} records; ${problems.join("; ")}`).toBe(`${what}: ${want.length} records; `);
}

/** got equals want, in order; compact failure message. */
function expectSameOrder(got: unknown[], want: unknown[], what: string): void {
  if (got.length === want.length && got.every((r, i) => keyOf(r) === keyOf(want[i]))) return;
  let i = 0;
  while (i < got.length && i < want.length && keyOf(got[i]) === keyOf(want[i])) i++;
  expect(`${what}: ${got.length} records, first difference at ${i}: ${clip(keyOf(got[i]))}`).toBe(
    `${what}: ${want.length} records, first difference at ${i}: ${clip(keyOf(want[i]))}`,
  );
}

function checkChunk(spec: SourceSpec, chunk: unknown[]): void {
  expect(Array.isArray(chunk)).toBe(true);
  expect(chunk.length).toBeGreaterThan(0);
  if (spec.type !== "textFile") expect(chunk.length).toBeLessThanOrEqual(SOURCE_CHUNK);
}

const RECORD_LIMIT = 1_000_000;
const CHUNK_LIMIT = 2_000;

interface Drained {
  records: unknown[];
  /** Positions after the last chunk read (JSON round-tripped). */
  positions: SourceSplit[];
  finished: boolean;
}

/**
 * Reads from `splits`, at most `maxChunks` chunks; after each chunk, with probability `restoreProb`, takes the
 * positions, round-trips them through JSON and continues with a brand new reader built from them.
 */
function drain(spec: SourceSpec, splits: SourceSplit[], opts: { next?: () => number; restoreProb?: number; maxChunks?: number } = {}): Drained {
  const next = opts.next ?? Math.random;
  const restoreProb = opts.restoreProb ?? 0;
  const maxChunks = opts.maxChunks ?? Infinity;
  let reader = new SourceReader(spec, splits);
  const records: unknown[] = [];
  let finished = false;
  for (let n = 0; n < maxChunks; n++) {
    const chunk = reader.next();
    if (chunk === null) {
      finished = true;
      break;
    }
    checkChunk(spec, chunk);
    for (const r of chunk) records.push(r);
    // No input here has this many records: a reader that keeps re-reading must fail, not hang.
    if (records.length > RECORD_LIMIT || n > CHUNK_LIMIT) throw new Error(`reader does not end: ${n} chunks, ${records.length} records`);
    if (restoreProb > 0 && next() < restoreProb) reader = new SourceReader(spec, roundTrip(reader.positions()));
  }
  return { records, positions: roundTrip(reader.positions()), finished };
}

/** Everything subtask `s` of `p` reads from its initial splits, straight through. */
function straight(spec: SourceSpec, s: number, p: number): unknown[] {
  return drain(spec, initialSplits(spec, s, p)).records;
}

// ---------------------------------------------------------------------------------------------------------
// Inputs

function randomLine(next: () => number, i: number, maxLen: number): string {
  const pieces = ["a", "b", "z", "0", " ", "-", "é", "ß", "中", "文", "😀", "\t", "\r"];
  const len = Math.floor(next() * maxLen);
  let s = `${i}|`;
  for (let k = 0; k < len; k++) s += pieces[Math.floor(next() * pieces.length)]!;
  // A "\r" at the very end would be indistinguishable from a CRLF ending.
  return s.endsWith("\r") ? s + "x" : s;
}

/**
 * A ~6 MiB text: numbered lines of mixed length and characters, empty lines, a few CRLF endings and two lines
 * longer than a read, and (optionally) no final newline.
 */
function bigText(seed: number, trailingNewline: boolean): string {
  const next = rng(seed);
  const parts: string[] = [];
  let bytes = 0;
  for (let i = 0; bytes < 6 * MiB; i++) {
    let line: string;
    const r = next();
    if (r < 0.05) line = "";
    else if (i === 5000 || i === 20000) line = `${i}|` + "L中😀".repeat(Math.floor((1.3 * MiB) / 8));
    else line = randomLine(next, i, 120);
    const ending = next() < 0.1 ? "\r\n" : "\n";
    parts.push(line + ending);
    bytes += Buffer.byteLength(line) + ending.length;
  }
  let text = parts.join("");
  if (!trailingNewline) text = text.replace(/\r?\n$/, "");
  return text;
}

interface Case {
  name: string;
  spec: SourceSpec;
  all: unknown[];
  /** Parallelisms the source may run at. */
  parallelisms: number[];
}

const seqFrom = -3000;
const seqTo = 20_500;
const items = Array.from({ length: 5 * SOURCE_CHUNK + 37 }, (_, i) => ({ i, s: `item ${i}` }));
const text1 = bigText(1, true);
const text2 = bigText(2, false);
const path1 = writeTemp(text1);
const path2 = writeTemp(text2);

const CASES: Case[] = [
  { name: "sequence", spec: { type: "sequence", from: seqFrom, to: seqTo }, all: Array.from({ length: seqTo - seqFrom + 1 }, (_, i) => seqFrom + i), parallelisms: [1, 2, 3, 4] },
  {
    name: "sequence of large numbers",
    spec: { type: "sequence", from: 1_000_000_000_000, to: 1_000_000_003_000 },
    all: Array.from({ length: 3001 }, (_, i) => 1_000_000_000_000 + i),
    parallelisms: [1, 2, 3, 4],
  },
  { name: "collection", spec: { type: "collection", items }, all: items, parallelisms: [1] },
  { name: "text file", spec: { type: "textFile", path: path1 }, all: expectedLines(text1), parallelisms: [1, 2, 3, 4] },
  { name: "text file without final newline", spec: { type: "textFile", path: path2 }, all: expectedLines(text2), parallelisms: [1, 2, 3, 4] },
];

// ---------------------------------------------------------------------------------------------------------

describe("initialSplits and assignSplits", () => {
  test("one split per subtask with id = subtask, JSON-able; collection: one split of all items", () => {
    expect(initialSplits({ type: "sequence", from: 1, to: 10 }, 1, 3)).toEqual([{ type: "sequence", id: 1, next: 4, last: 6 }]);
    expect(initialSplits({ type: "collection", items: [1, 2, 3] }, 0, 1)).toEqual([{ type: "collection", id: 0, next: 0, end: 3 }]);
    const path = writeTemp("0123456789");
    expect(initialSplits({ type: "textFile", path }, 0, 2)).toEqual([{ type: "textFile", id: 0, path, offset: 0, end: 5, aligned: true }]);
    expect(initialSplits({ type: "textFile", path }, 1, 2)).toEqual([{ type: "textFile", id: 1, path, offset: 5, end: 10, aligned: false }]);
    for (const c of CASES) for (const p of c.parallelisms) for (let s = 0; s < p; s++) {
      const splits = initialSplits(c.spec, s, p);
      expect(splits.length).toBe(1);
      expect(splits[0]!.id).toBe(s);
      expect(splits[0]!.type).toBe(c.spec.type);
      roundTrip(splits);
    }
  });

  test("assignSplits: every split goes to exactly one subtask, the one with id % parallelism, as a copy", () => {
    const next = rng(11);
    const all: SourceSplit[] = [];
    for (let id = 0; id < 9; id++) {
      all.push({ type: "sequence", id, next: id * 100 + Math.floor(next() * 50), last: id * 100 + 99 });
    }
    const before = JSON.stringify(all);
    for (let p = 1; p <= 12; p++) {
      const seen: number[] = [];
      for (let s = 0; s < p; s++) {
        const mine = assignSplits(all, s, p);
        for (const split of mine) {
          expect(split.id % p).toBe(s);
          expect(all).toContainEqual(split);
          seen.push(split.id);
          (split as { next: number }).next = -1; // must not write through to the input
        }
      }
      expect(seen.sort((a, b) => a - b)).toEqual(all.map((s) => s.id));
    }
    expect(JSON.stringify(all)).toBe(before);
    expect(assignSplits([], 0, 3)).toEqual([]);
  });

  test("a missing text file: initialSplits and the reader both name the path", () => {
    const missing = join(dir, "no-such-dir", "input.txt");
    expect(() => initialSplits({ type: "textFile", path: missing }, 0, 1)).toThrow(`text file source: cannot open ${missing}`);
    const path = writeTemp("a\nb\nc\n");
    const spec: SourceSpec = { type: "textFile", path };
    const splits = initialSplits(spec, 0, 1);
    unlinkSync(path);
    expect(() => new SourceReader(spec, splits).next()).toThrow(`text file source: cannot open ${path}`);
  });

  test("splits of another source type are refused", () => {
    expect(() => new SourceReader({ type: "collection", items: [1] }, [{ type: "sequence", id: 0, next: 1, last: 5 }])).toThrow();
  });
});

describe("SourceReader basics", () => {
  test("no splits, and after the end: next() is null and positions() is empty", () => {
    expect(new SourceReader({ type: "sequence", from: 1, to: 5 }, []).next()).toBeNull();
    const spec: SourceSpec = { type: "sequence", from: 1, to: 5 };
    const r = new SourceReader(spec, initialSplits(spec, 0, 1));
    expect(r.next()).toEqual([1, 2, 3, 4, 5]);
    expect(r.next()).toBeNull();
    expect(r.next()).toBeNull();
    expect(r.positions()).toEqual([]);
    const t: SourceSpec = { type: "textFile", path: writeTemp("x\ny") };
    const tr = new SourceReader(t, initialSplits(t, 0, 1));
    expect(tr.next()).toEqual(["x"]);
    expect(tr.positions()).toEqual([{ type: "textFile", id: 0, path: t.path, offset: 2, end: 3, aligned: true }]);
    expect(tr.next()).toEqual(["y"]);
    expect(tr.next()).toBeNull();
    expect(tr.positions()).toEqual([]);
  });

  test("positions() before reading are the splits given; positions are copies", () => {
    const spec: SourceSpec = { type: "sequence", from: 0, to: 3 * SOURCE_CHUNK - 1 };
    const splits = initialSplits(spec, 0, 1);
    const r = new SourceReader(spec, splits);
    expect(r.positions()).toEqual(splits);
    r.next();
    const pos = r.positions();
    expect(pos).toEqual([{ type: "sequence", id: 0, next: SOURCE_CHUNK, last: 3 * SOURCE_CHUNK - 1 }]);
    (pos[0] as { next: number }).next = 0;
    expect(splits[0]).toEqual({ type: "sequence", id: 0, next: 0, last: 3 * SOURCE_CHUNK - 1 }); // input not changed by reading
    expect(r.next()![0]).toBe(SOURCE_CHUNK); // reader not changed by the caller's edits
  });

  test("several splits are read one after another", () => {
    const spec: SourceSpec = { type: "sequence", from: 0, to: 99 };
    const splits = [0, 1, 2, 3].flatMap((s) => initialSplits(spec, s, 4));
    const got = drain(spec, [splits[2]!, splits[0]!, splits[3]!, splits[1]!]).records;
    expect(got).toEqual([...range(50, 74), ...range(0, 24), ...range(75, 99), ...range(25, 49)]);
  });

  test("collection chunks are copies of the spec's items", () => {
    const spec: SourceSpec = { type: "collection", items: [1, 2, 3] };
    const chunk = new SourceReader(spec, initialSplits(spec, 0, 1)).next()!;
    chunk.push(4);
    expect(spec.items).toEqual([1, 2, 3]);
  });
});

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}

for (const c of CASES) {
  describe(`${c.name} source`, () => {
    test("the initial splits of all subtasks yield every record exactly once, each subtask a contiguous run", () => {
      for (const p of c.parallelisms) {
        const parts: unknown[][] = [];
        for (let s = 0; s < p; s++) parts.push(straight(c.spec, s, p));
        expectSameOrder(parts.flat(), c.all, `parallelism ${p}`);
        if (p > 1) for (const part of parts) expect(part.length).toBeGreaterThan(0);
      }
    });

    test("checkpoint at random chunk boundaries, restore into a new reader: exactly the remaining records", () => {
      for (const p of c.parallelisms) {
        for (let s = 0; s < p; s++) {
          const want = straight(c.spec, s, p);
          for (const [seed, prob] of [[1, 0.3], [2, 0.6], [3, 1]] as const) {
            const got = drain(c.spec, initialSplits(c.spec, s, p), { next: rng(seed * 100 + p * 10 + s), restoreProb: prob });
            expect(got.finished).toBe(true);
            expect(got.positions).toEqual([]);
            expectSameOrder(got.records, want, `p ${p} subtask ${s} seed ${seed}`);
          }
          // Restored before anything was read (positions of a fresh reader).
          const fresh = new SourceReader(c.spec, initialSplits(c.spec, s, p)).positions();
          expectSameOrder(drain(c.spec, roundTrip(fresh)).records, want, `p ${p} subtask ${s}, restored before reading`);
        }
      }
    });

    test("stop after a few chunks, restore later: the two parts add up to the whole", () => {
      for (const p of c.parallelisms) {
        for (let s = 0; s < p; s++) {
          const want = straight(c.spec, s, p);
          for (let stopAfter = 0; stopAfter <= 6; stopAfter++) {
            const first = drain(c.spec, initialSplits(c.spec, s, p), { maxChunks: stopAfter });
            const rest = drain(c.spec, first.positions);
            expectSameOrder([...first.records, ...rest.records], want, `p ${p} subtask ${s} stop after ${stopAfter}`);
          }
        }
      }
    });

    const rescales: number[][] = c.parallelisms.includes(2)
      ? [
          [2, 3],
          [2, 1],
          [2, 3, 1],
          [4, 2, 3],
          [1, 4, 2],
          [3, 2, 4, 1],
        ]
      : [
          [1, 3],
          [1, 2, 1],
        ];
    test(`rescale mid-read (${rescales.map((r) => r.join("→")).join(", ")}): everything read exactly once`, () => {
      for (const chain of rescales) {
        for (const seed of [1, 2, 3, 4]) {
          const next = rng(seed * 7919 + chain.length);
          const got: unknown[] = [];
          let positions: SourceSplit[] | null = null;
          for (let step = 0; step < chain.length; step++) {
            const p = chain[step]!;
            const last = step === chain.length - 1;
            const newPositions: SourceSplit[] = [];
            for (let s = 0; s < p; s++) {
              const splits = positions === null ? initialSplits(c.spec, s, p) : assignSplits(positions, s, p);
              // Mid-read: each subtask gets through a random number of chunks (0..3), the last step reads to the end.
              const d = drain(c.spec, splits, { next, restoreProb: 0.3, maxChunks: last ? Infinity : Math.floor(next() * 4) });
              got.push(...d.records);
              newPositions.push(...d.positions);
            }
            positions = newPositions;
          }
          expect(positions).toEqual([]);
          expectExactlyOnce(got, c.all, `${chain.join("→")} seed ${seed}`);
        }
      }
    });
  });
}

describe("text file edge cases across checkpoints", () => {
  /** Reads the file at parallelism p, restoring at every chunk boundary (or randomly): all lines in order. */
  function checkText(text: string, parallelisms = [1, 2, 3, 4]): void {
    const path = writeTemp(text);
    const spec: SourceSpec = { type: "textFile", path };
    const want = expectedLines(text);
    for (const p of parallelisms) {
      for (const prob of [0, 0.5, 1]) {
        const got: unknown[] = [];
        for (let s = 0; s < p; s++) {
          const d = drain(spec, initialSplits(spec, s, p), { next: rng(p * 31 + s), restoreProb: prob });
          expect(d.finished).toBe(true);
          got.push(...d.records);
        }
        expectSameOrder(got, want, `p ${p}, restore probability ${prob}`);
      }
    }
  }

  test("CRLF line endings and empty lines (the CR is not part of a line)", () => {
    checkText("one\r\ntwo\r\n\r\nfour\r\n");
    checkText("\r\n\r\n\n\n\r\n");
    const next = rng(5);
    const lines = Array.from({ length: 60_000 }, (_, i) => (next() < 0.2 ? "" : randomLine(next, i, 40).replaceAll("\r", "")));
    checkText(lines.join("\r\n") + "\r\n");
    const spec: SourceSpec = { type: "textFile", path: writeTemp("a\r\n\r\nb\r\n") };
    expect(drain(spec, initialSplits(spec, 0, 1)).records).toEqual(["a", "", "b"]);
  });

  test("no trailing newline: the last line is read, also when restored just before it", () => {
    checkText("a\nb\nlast 中文");
    checkText("x");
    checkText("");
    const path = writeTemp("first\nlast");
    const spec: SourceSpec = { type: "textFile", path };
    const first = drain(spec, initialSplits(spec, 0, 1), { maxChunks: 1 });
    expect(first.records).toEqual(["first"]);
    expect(first.positions).toEqual([{ type: "textFile", id: 0, path, offset: 6, end: 10, aligned: true }]);
    expect(drain(spec, first.positions).records).toEqual(["last"]);
  });

  test("multi-byte UTF-8 characters spanning the 1 MiB read boundary", () => {
    // A 4-byte emoji over byte MiB, a 3-byte character over 2 MiB, a 2-byte one over 3 MiB (for a reader from 0).
    const a = "a".repeat(MiB - 2) + "😀" + "tail1"; // bytes MiB-2 .. MiB+1
    const bStart = Buffer.byteLength(a) + 1;
    const b = "b".repeat(2 * MiB - 1 - bStart) + "中" + "tail2"; // bytes 2MiB-1 .. 2MiB+1
    const cStart = bStart + Buffer.byteLength(b) + 1;
    const c = "c".repeat(3 * MiB - 1 - cStart) + "é" + "tail3"; // bytes 3MiB-1 .. 3MiB
    const text = [a, b, c, "😀😀😀", "end"].join("\n") + "\n";
    expect(Buffer.from(text).subarray(MiB - 2, MiB + 2).toString()).toBe("😀");
    expect(Buffer.from(text).subarray(2 * MiB - 1, 2 * MiB + 2).toString()).toBe("中");
    expect(Buffer.from(text).subarray(3 * MiB - 1, 3 * MiB + 1).toString()).toBe("é");
    checkText(text);
    // Many short lines of 4-byte characters: from any restored line start, the read boundaries fall inside
    // characters somewhere.
    const next = rng(9);
    const emoji = Array.from({ length: 120_000 }, (_, i) => `${i}` + "😀".repeat(Math.floor(next() * 12)));
    checkText(emoji.join("\n") + "\n", [1, 2, 3]);
  });

  test("small file read at every parallelism up to more than its size (split points at every kind of byte)", () => {
    const text = "ab\n\nc中d\r\n😀\n\nlonger line here\nz";
    const size = Buffer.byteLength(text);
    const all = Array.from({ length: size + 3 }, (_, i) => i + 1);
    checkText(text, all);
    checkText(text + "\n", all);
    checkText(text + "\r\n", all);
  });

  test("lines longer than the read size, next to short and empty ones", () => {
    const long1 = "L".repeat(MiB + 123);
    const long2 = "中".repeat(Math.ceil((2.5 * MiB) / 3));
    const long3 = "😀a".repeat(300_000);
    const lines = ["first", long1, "", "short", long2, "x", long3, "", "", "tail"];
    checkText(lines.join("\n") + "\n");
    checkText(lines.join("\r\n"));
    checkText(long1 + long1, [1, 2, 3]); // one line, no newline at all, longer than two reads
  });

  test("readSource reads the same records as the initial splits", () => {
    for (const c of CASES) {
      for (const p of c.parallelisms) {
        const all: unknown[] = [];
        for (let s = 0; s < p; s++) for (const chunk of readSource(c.spec, s, p)) all.push(...chunk);
        expectSameOrder(all, c.all, `${c.name} p ${p}`);
      }
    }
  });

  test("efficient reads: a file of short lines comes in about one chunk per MiB", () => {
    const lines = Array.from({ length: 500_000 }, (_, i) => `l${i}`); // ~4.2 MiB
    const text = lines.join("\n") + "\n";
    const size = Buffer.byteLength(text);
    const spec: SourceSpec = { type: "textFile", path: writeTemp(text) };
    const r = new SourceReader(spec, initialSplits(spec, 0, 1));
    let chunks = 0;
    let count = 0;
    for (let chunk = r.next(); chunk !== null; chunk = r.next()) {
      chunks++;
      count += chunk.length;
    }
    expect(count).toBe(lines.length);
    expect(chunks).toBe(Math.ceil(size / MiB));
  });
});

describe("splitForParallelism (scaling a source up)", () => {
  for (const c of CASES) {
    test(`${c.name}: read part-way at parallelism 2 (or 1), split for 5 subtasks: each gets work, all records exactly once`, () => {
      const oldP = c.parallelisms.includes(2) ? 2 : 1;
      const got: unknown[] = [];
      const positions: SourceSplit[] = [];
      for (let s = 0; s < oldP; s++) {
        const d = drain(c.spec, initialSplits(c.spec, s, oldP), { maxChunks: 1 });
        got.push(...d.records);
        positions.push(...d.positions);
      }
      const split = roundTrip(splitForParallelism(positions, 5));
      expect(new Set(split.map((s) => s.id)).size).toBe(split.length); // ids stay unique
      expect(split.length).toBeGreaterThanOrEqual(5);
      // Every subtask computes the same list, so every split is read by exactly one of them.
      for (let s = 0; s < 5; s++) {
        const mine = assignSplits(split, s, 5);
        expect(mine.length).toBeGreaterThan(0);
        got.push(...drain(c.spec, mine).records);
      }
      expectExactlyOnce(got, c.all, c.name);
    });
  }

  test("splits that cannot be halved any more are left as they are; exhausted splits are dropped", () => {
    const one: SourceSplit[] = [
      { type: "sequence", id: 0, next: 7, last: 7 },
      { type: "sequence", id: 3, next: 9, last: 8 },
    ];
    expect(splitForParallelism(one, 4)).toEqual([{ type: "sequence", id: 0, next: 7, last: 7 }]);
  });
});

describe("interleaved reading (event time: per-split watermarks)", () => {
  for (const c of CASES.filter((c) => c.parallelisms.includes(3))) {
    test(`${c.name}: three splits in one reader take turns; restores at random chunks; every record exactly once`, () => {
      const next = rng(99);
      const splits = [0, 1, 2].flatMap((s) => initialSplits(c.spec, s, 3));
      let reader = new SourceReader(c.spec, splits, true);
      const got: unknown[] = [];
      for (let n = 0; n < CHUNK_LIMIT; n++) {
        const chunk = reader.next();
        if (chunk === null) break;
        got.push(...chunk);
        if (next() < 0.2) reader = new SourceReader(c.spec, roundTrip(reader.positions()), true);
      }
      expectExactlyOnce(got, c.all, c.name);
      // Without restores: while all three splits have records left, they take turns 0, 1, 2, 0, 1, 2, ...
      const plain = new SourceReader(c.spec, splits.map((x) => ({ ...x })), true);
      const turns: number[] = [];
      while (plain.next() !== null) turns.push(plain.lastSplitId);
      const firstEnd = Math.min(...[0, 1, 2].map((id) => turns.lastIndexOf(id)));
      expect(turns.slice(0, firstEnd + 1)).toEqual(Array.from({ length: firstEnd + 1 }, (_, i) => i % 3));
    });
  }

  test("activeSplitIds drops splits as they run out", () => {
    const spec: SourceSpec = { type: "sequence", from: 1, to: 3000 };
    const r = new SourceReader(spec, [0, 1].flatMap((s) => initialSplits(spec, s, 2)), true);
    expect(r.activeSplitIds()).toEqual([0, 1]);
    while (r.next() !== null);
    expect(r.activeSplitIds()).toEqual([]);
  });
});
