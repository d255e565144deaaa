// Source readers: each yields chunks of records for one parallel subtask.
import * as fs from "node:fs";
import type { SourceSpec } from "../api/plan.ts";

export const SOURCE_CHUNK = 1024;
const READ_BYTES = 1 << 20;

export function readSource(spec: SourceSpec, subtask: number, parallelism: number): Iterable<unknown[]> {
  switch (spec.type) {
    case "collection":
      return chunked(spec.items);
    case "sequence": {
      const total = spec.to - spec.from + 1;
      const first = spec.from + Math.floor((subtask * total) / parallelism);
      const last = spec.from + Math.floor(((subtask + 1) * total) / parallelism) - 1;
      return sequence(first, last);
    }
    case "textFile":
      return textFileLines(spec.path, subtask, parallelism);
  }
}

function* chunked(items: unknown[]): Iterable<unknown[]> {
  for (let i = 0; i < items.length; i += SOURCE_CHUNK) yield items.slice(i, i + SOURCE_CHUNK);
}

function* sequence(first: number, last: number): Iterable<unknown[]> {
  for (let i = first; i <= last; ) {
    const n = Math.min(SOURCE_CHUNK, last - i + 1);
    const chunk = new Array<number>(n);
    for (let j = 0; j < n; j++) chunk[j] = i + j;
    i += n;
    yield chunk;
  }
}

/**
 * Lines whose first byte lies in this subtask's byte range [begin, end) of the file, so that parallel
 * readers split a file without overlap or loss (a line is read whole even when it runs past end).
 */
export function* textFileLines(path: string, subtask: number, parallelism: number): Iterable<string[]> {
  let fd: number;
  try {
    fd = fs.openSync(path, "r");
  } catch (err) {
    throw new Error(`text file source: cannot open ${path}: ${(err as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const begin = Math.floor((subtask * size) / parallelism);
    const end = Math.floor(((subtask + 1) * size) / parallelism);
    if (begin >= end) return;
    // Position of the first line start >= begin: 0, or just after a newline at begin-1 or later.
    let readPos = begin === 0 ? 0 : begin - 1;
    let pending: Buffer = Buffer.alloc(0); // bytes of the current, unfinished line
    let lineStart = -1; // absolute offset of pending[0] once a line start is found
    if (begin === 0) lineStart = 0;
    const buf = Buffer.allocUnsafe(READ_BYTES);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, READ_BYTES, readPos);
      const chunkPos = readPos;
      readPos += n;
      if (n === 0) break;
      let data = buf.subarray(0, n);
      let dataPos = chunkPos;
      if (lineStart < 0) {
        const nl = data.indexOf(10);
        if (nl < 0) continue;
        lineStart = dataPos + nl + 1;
        data = data.subarray(nl + 1);
        dataPos = lineStart;
      }
      if (pending.length > 0) {
        data = Buffer.concat([pending, data]);
        dataPos = lineStart;
      }
      const lines: string[] = [];
      let from = 0;
      for (;;) {
        if (dataPos + from >= end) {
          if (lines.length) yield lines;
          return;
        }
        const nl = data.indexOf(10, from);
        if (nl < 0) break;
        lines.push(stripCr(data.toString("utf8", from, nl)));
        from = nl + 1;
      }
      lineStart = dataPos + from;
      pending = Buffer.from(data.subarray(from)); // copy: buf is reused by the next read
      if (lines.length) yield lines;
    }
    if (pending.length > 0 && lineStart < end) yield [stripCr(pending.toString("utf8"))];
  } finally {
    fs.closeSync(fd);
  }
}

function stripCr(line: string): string {
  return line.endsWith("\r") ? line.slice(0, -1) : line;
}
