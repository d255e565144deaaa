import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SOURCE_CHUNK, readSource, textFileLines } from "../src/runtime/sources.ts";
import { expectedLines, rng } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "tm-sources-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MiB = 1 << 20;
const PARALLELISMS = [1, 2, 3, 4, 5, 6, 7];


let fileCount = 0;
function writeTemp(content: string | Uint8Array): string {
  const path = join(dir, `input-${++fileCount}.txt`);
  writeFileSync(path, content);
  return path;
}


/** Every subtask's lines, each list in the order read. */
function readAll(path: string, parallelism: number): string[][] {
  const out: string[][] = [];
  for (let s = 0; s < parallelism; s++) {
    const lines: string[] = [];
    for (const chunk of textFileLines(path, s, parallelism)) {
      expect(Array.isArray(chunk)).toBe(true);
      for (const l of chunk) lines.push(l);
    }
    out.push(lines);
  }
  return out;
}

/** Compares without dumping megabytes of text into the failure message. */
function expectSameLines(got: string[], want: string[], what: string): void {
  if (got.length === want.length && got.every((l, i) => l === want[i])) return;
  let i = 0;
  while (i < got.length && i < want.length && got[i] === want[i]) i++;
  const clip = (s: string | undefined) => (s === undefined ? "<none>" : s.length > 60 ? `${s.slice(0, 60)}...(${s.length} chars)` : s);
  expect(`${what}: ${got.length} lines, first difference at line ${i}: ${clip(got[i])}`).toBe(
    `${what}: ${want.length} lines, first difference at line ${i}: ${clip(want[i])}`,
  );
}

function checkFile(text: string, parallelisms = PARALLELISMS): void {
  const path = writeTemp(text);
  const want = expectedLines(text);
  for (const p of parallelisms) {
    const parts = readAll(path, p);
    expect(parts.length).toBe(p);
    expectSameLines(parts.flat(), want, `parallelism ${p}`);
  }
}

function randomLine(next: () => number, maxLen: number): string {
  const pieces = ["a", "b", "z", "0", " ", "-", "é", "ß", "中", "文", "😀", "\t", "\r"];
  const len = next() < 0.1 ? 0 : Math.floor(next() * maxLen);
  let s = "";
  for (let i = 0; i < len; i++) s += pieces[Math.floor(next() * pieces.length)]!;
  // A "\r" at the very end would be indistinguishable from a CRLF ending.
  return s.endsWith("\r") ? s + "x" : s;
}

describe("textFileLines", () => {
  test("random lines (empty lines, multi-byte UTF-8): every line read exactly once, in order, for p = 1..7", () => {
    const next = rng(2024);
    const lines = Array.from({ length: 4000 }, () => randomLine(next, 120));
    checkFile(lines.join("\n") + "\n");
  });

  test("file without a trailing newline", () => {
    const next = rng(7);
    const lines = Array.from({ length: 500 }, () => randomLine(next, 40));
    lines.push("last line, no newline 中文");
    checkFile(lines.join("\n"));
  });

  test("CRLF line endings", () => {
    const next = rng(8);
    const lines = Array.from({ length: 800 }, () => randomLine(next, 50).replaceAll("\r", ""));
    const text = lines.join("\r\n") + "\r\n";
    checkFile(text);
    // The CR is not part of any line.
    const path = writeTemp("one\r\ntwo\r\n\r\nfour");
    expect(readAll(path, 1).flat()).toEqual(["one", "two", "", "four"]);
  });

  test("long lines (> 1 MiB) mixed with short ones, including multi-byte characters across read boundaries", () => {
    const long1 = "L".repeat(MiB + 123);
    const long2 = "中".repeat(Math.ceil((2.5 * MiB) / 3)); // 3 bytes each, ~2.5 MiB
    const long3 = "😀a".repeat(300_000); // 5 bytes per repetition, ~1.4 MiB
    const lines = ["first", long1, "", "short", long2, "x", long3, "", "", "tail"];
    checkFile(lines.join("\n") + "\n");
    checkFile(lines.join("\n"), [1, 3, 7]);
  });

  test("newlines right at the 1 MiB read boundary", () => {
    for (const firstLen of [MiB - 2, MiB - 1, MiB, MiB + 1]) {
      const lines = ["y".repeat(firstLen), "after", "z".repeat(MiB - 1), "end"];
      checkFile(lines.join("\n") + "\n", [1, 2, 3]);
    }
  });

  test("tiny file with more subtasks than lines", () => {
    checkFile("a\nb\n");
    checkFile("a\nb");
    checkFile("only\n");
    checkFile("x");
    const parts = readAll(writeTemp("a\nb\n"), 7);
    expect(parts.flat()).toEqual(["a", "b"]);
    expect(parts.filter((p) => p.length > 0).length).toBeLessThanOrEqual(2);
  });

  test("small file read at every parallelism up to more than its size (split points at every kind of byte)", () => {
    const text = "ab\n\nc中d\r\n😀\n\nlonger line here\nz";
    const size = new TextEncoder().encode(text).length;
    checkFile(text, Array.from({ length: size + 3 }, (_, i) => i + 1));
    checkFile(text + "\n", Array.from({ length: size + 3 }, (_, i) => i + 1));
  });

  test("empty lines only, and an empty file", () => {
    checkFile("\n");
    checkFile("\n\n\n\n\n\n\n\n\n\n\n\n");
    checkFile("\r\n\r\n\r\n");
    checkFile("");
    expect(readAll(writeTemp(""), 3).flat()).toEqual([]);
    expect(readAll(writeTemp("\n\n\n"), 2).flat()).toEqual(["", "", ""]);
  });

  test("each subtask reads a contiguous run of lines (ranges split at line boundaries)", () => {
    const lines = Array.from({ length: 1000 }, (_, i) => `line-${i}`);
    const path = writeTemp(lines.join("\n") + "\n");
    for (const p of [2, 3, 5, 7]) {
      const parts = readAll(path, p);
      let pos = 0;
      for (const part of parts) {
        expect(part).toEqual(lines.slice(pos, pos + part.length));
        pos += part.length;
      }
      expect(pos).toBe(lines.length);
      // With many equal-length lines every subtask gets some of them.
      for (const part of parts) expect(part.length).toBeGreaterThan(0);
    }
  });

  test("a missing file gives an error naming the path", () => {
    const path = join(dir, "does-not-exist", "input.txt");
    expect(() => [...textFileLines(path, 0, 1)]).toThrow(path);
    expect(() => [...readSource({ type: "textFile", path }, 1, 2)]).toThrow(path);
  });

  test("readSource({ type: 'textFile' }) reads the same lines", () => {
    const text = "alpha\nbeta\r\ngamma\n\ndelta";
    const path = writeTemp(text);
    for (const p of [1, 2, 4]) {
      const all: unknown[] = [];
      for (let s = 0; s < p; s++) for (const chunk of readSource({ type: "textFile", path }, s, p)) all.push(...chunk);
      expect(all).toEqual(expectedLines(text));
    }
  });
});

describe("sequence source", () => {
  const CASES: [number, number][] = [
    [1, 1],
    [0, 9],
    [1, 100],
    [-50, 50],
    [5, 7],
    [0, 2 * SOURCE_CHUNK + 17],
    [1_000_000_000_000, 1_000_000_000_010],
  ];

  test("subtasks split from..to without gaps or overlaps, each a contiguous ascending run", () => {
    for (const [from, to] of CASES) {
      for (const p of [1, 2, 3, 4, 7, 16]) {
        const all: number[] = [];
        const sizes: number[] = [];
        for (let s = 0; s < p; s++) {
          const mine: number[] = [];
          for (const chunk of readSource({ type: "sequence", from, to }, s, p)) {
            expect(chunk.length).toBeGreaterThan(0);
            expect(chunk.length).toBeLessThanOrEqual(SOURCE_CHUNK);
            mine.push(...(chunk as number[]));
          }
          for (let i = 1; i < mine.length; i++) expect(mine[i]).toBe(mine[i - 1]! + 1);
          sizes.push(mine.length);
          all.push(...mine);
        }
        const count = to - from + 1;
        expect(all.length).toBe(count);
        expect(all[0]).toBe(from);
        for (let i = 1; i < all.length; i++) if (all[i] !== all[i - 1]! + 1) expect({ from, to, p, i, v: all[i] }).toEqual({ from, to, p, i, v: all[i - 1]! + 1 });
        // Even split: sizes differ by at most one.
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }
    }
  });
});

describe("collection source", () => {
  test("yields the items in chunks of SOURCE_CHUNK, in order", () => {
    for (const n of [0, 1, SOURCE_CHUNK - 1, SOURCE_CHUNK, SOURCE_CHUNK + 1, 3 * SOURCE_CHUNK + 5]) {
      const items = Array.from({ length: n }, (_, i) => ({ i, s: `item ${i}` }));
      const chunks = [...readSource({ type: "collection", items }, 0, 1)];
      expect(chunks.length).toBe(Math.ceil(n / SOURCE_CHUNK));
      chunks.forEach((c, i) => {
        expect(c.length).toBe(i < chunks.length - 1 ? SOURCE_CHUNK : n - SOURCE_CHUNK * (chunks.length - 1));
      });
      expect(chunks.flat()).toEqual(items);
    }
  });

  test("chunks are copies: the spec's items array is left intact", () => {
    const items = [1, 2, 3];
    const [chunk] = [...readSource({ type: "collection", items }, 0, 1)];
    (chunk as unknown[]).push(4);
    expect(items).toEqual([1, 2, 3]);
  });
});
