import { describe, expect, test } from "bun:test";
import { Packr, Unpackr } from "msgpackr";
import { InputGate } from "../src/network/input-gate.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { RecordWriter, type BufferSender, type ChannelEvent } from "../src/network/record-writer.ts";
import { CHUNK_RECORDS, RecordDeserializer, RecordSerializer } from "../src/network/serialization.ts";

// ---------------------------------------------------------------------------------------------------------
// Test data

const MULTI = "héllo wörld ✓ 日本語 😀 𝄞 ü";
/** MULTI's code points (slicing the string itself could cut a surrogate pair, which UTF-8 cannot carry). */
const MULTI_CHARS = Array.from(MULTI);

/** ~2.3 MiB of UTF-8 (1-, 3- and 4-byte characters). */
const HUGE = "x€😀".repeat(300_000);

function bytesOf(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed + i * 31) & 0xff;
  return b;
}

/** A mixed, deterministic stream of records: the expectation is the array itself. */
function mixedRecords(n = 1200): unknown[] {
  const recs: unknown[] = [];
  for (let i = 0; i < n; i++) {
    switch (i % 12) {
      case 0:
        recs.push(i * 7919 - 3000);
        break;
      case 1:
        recs.push(i / 7);
        break;
      case 2:
        recs.push(`s${i}:${MULTI_CHARS.slice(0, i % MULTI_CHARS.length).join("")}`);
        break;
      case 3: // a repeated shape, nested
        recs.push({ id: i, name: `n${i}`, tags: ["a", MULTI], nested: { ok: i % 2 === 0, score: i * 1.5, deeper: { x: i } } });
        break;
      case 4:
        recs.push([i, `v${i}`, null, true, [i, [i + 1, []]], {}]);
        break;
      case 5: // same shape as case 3, other values
        recs.push({ id: -i, name: "", tags: [], nested: { ok: false, score: 0.25, deeper: { x: -i } } });
        break;
      case 6:
        recs.push(bytesOf(i % 300, i));
        break;
      case 7: // many distinct shapes (more than msgpackr's record ids), each seen several times
        recs.push({ [`dyn${i % 97}`]: i, common: "c", [`k${i % 5}`]: [i] });
        break;
      case 8:
        recs.push(i % 3 === 0 ? null : i % 3 === 1 ? false : "");
        break;
      case 9:
        recs.push({ big: 2 ** 40 + i, neg: -(2 ** 33) - i, max: Number.MAX_SAFE_INTEGER, min: -Number.MAX_SAFE_INTEGER, f: -1.5e300 });
        break;
      case 10:
        recs.push({ list: [{ a: i, b: "x" }, { a: i + 1, b: "y" }], bin: bytesOf(5, i), s: MULTI });
        break;
      case 11:
        recs.push("");
        break;
    }
  }
  recs.splice(501, 0, HUGE);
  recs.splice(700, 0, bytesOf(100_000, 7));
  recs.splice(701, 0, { text: HUGE.slice(0, 70_001), n: 1 });
  return recs;
}

/** Asserts deep equality; Uint8Array records are also checked to be Uint8Arrays with the same bytes. */
function expectSameRecords(actual: unknown[], expected: unknown[]): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i];
    if (e instanceof Uint8Array) {
      expect(actual[i]).toBeInstanceOf(Uint8Array);
      expect(Buffer.from(actual[i] as Uint8Array).equals(Buffer.from(e))).toBe(true);
    }
  }
  expect(actual).toEqual(expected);
}

/** A u32 big-endian length prefix and the bytes: the wire format of one chunk, built independently. */
function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.length + 4);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Cuts bytes into pieces, each a copy in its own ArrayBuffer. */
function cut(bytes: Uint8Array, sizes: () => number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let p = 0; p < bytes.length; ) {
    const n = Math.max(1, Math.min(sizes(), bytes.length - p));
    out.push(bytes.slice(p, p + n));
    p += n;
  }
  return out;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

type ParsedChunk = { records: unknown[]; framed: number; startBuf: number; startOffset: number; endBuf: number };

/** Parses a channel's buffers independently: u32 big-endian length, msgpack array; notes where each chunk lies. */
function parseChunks(buffers: Uint8Array[]): ParsedChunk[] {
  const stream = concat(buffers);
  const starts: number[] = [];
  let o = 0;
  for (const b of buffers) {
    starts.push(o);
    o += b.length;
  }
  const locate = (pos: number) => {
    let k = 0;
    while (k + 1 < starts.length && starts[k + 1]! <= pos) k++;
    return k;
  };
  const unpackr = new Unpackr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Unpackr>[0]);
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const out: ParsedChunk[] = [];
  for (let p = 0; p < stream.length; ) {
    const len = view.getUint32(p, false);
    expect(len).toBeGreaterThan(0);
    expect(p + 4 + len).toBeLessThanOrEqual(stream.length);
    const chunk = unpackr.unpack(stream.subarray(p + 4, p + 4 + len));
    expect(Array.isArray(chunk)).toBe(true);
    const startBuf = locate(p);
    out.push({ records: chunk as unknown[], framed: len + 4, startBuf, startOffset: p - starts[startBuf]!, endBuf: locate(p + 4 + len - 1) });
    p += 4 + len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Writer -> gate loopback

interface Loop {
  writer: RecordWriter;
  gate: InputGate;
  pool: LocalBufferPool;
  /** Per channel: records and events, in the order polled. */
  got: Map<string, unknown[]>;
  events: Map<string, ChannelEvent[]>;
  /** Stream bytes per channel, in order (copies taken when sent). */
  wire: Map<string, Uint8Array[]>;
  sent: number;
  recycled: number;
  /** Polls everything that has arrived. */
  pump(): void;
  /** Polls until every channel ended, waiting for arrivals. */
  consumeToEnd(): Promise<void>;
}

function loopback(channels: string[], partitioner: (r: unknown) => number, poolSize: number, segmentSize: number, overdraft = 0): Loop {
  const pool = new LocalBufferPool(poolSize, segmentSize, overdraft);
  const writer = new RecordWriter(channels, partitioner, pool, false);
  const gate = new InputGate(channels);
  const recycledBufs = new Set<ArrayBuffer>();
  const loop: Loop = {
    writer,
    gate,
    pool,
    got: new Map(channels.map((c) => [c, []])),
    events: new Map(channels.map((c) => [c, []])),
    wire: new Map(channels.map((c) => [c, []])),
    sent: 0,
    recycled: 0,
    pump() {
      for (let item = gate.poll(); item !== null; item = gate.poll()) {
        if ("event" in item) loop.events.get(item.channel)!.push(item.event);
        else {
          expect(loop.events.get(item.channel)!.some((e) => e.type === "end")).toBe(false);
          for (const r of item.records) loop.got.get(item.channel)!.push(r);
        }
      }
    },
    async consumeToEnd() {
      while (!gate.finished) {
        loop.pump();
        if (!gate.finished) await gate.waitNext();
      }
      loop.pump();
    },
  };
  const sender: BufferSender = {
    buffer(channel, buf, size) {
      expect(buf.byteLength).toBe(segmentSize);
      expect(size).toBeGreaterThan(0);
      expect(size).toBeLessThanOrEqual(segmentSize);
      loop.sent++;
      loop.wire.get(channel)!.push(new Uint8Array(buf, 0, size).slice());
      recycledBufs.delete(buf);
      gate.onBuffer(channel, buf, size, (b) => {
        expect(b).toBe(buf);
        expect(recycledBufs.has(b)).toBe(false); // recycled once per trip
        recycledBufs.add(b);
        // The consumer is done with it: scribble over it before the producer gets it back.
        new Uint8Array(b).fill(0xee);
        loop.recycled++;
        writer.recycle(b, channel);
      });
    },
    event(channel, event) {
      gate.onEvent(channel, event);
    },
  };
  for (const c of channels) writer.connect(c, sender);
  return loop;
}

const toFirst = () => 0;

// ---------------------------------------------------------------------------------------------------------

describe("records through RecordWriter -> buffers -> InputGate", () => {
  for (const segmentSize of [4096, 64, 13]) {
    test(`mixed records round-trip in order (segment ${segmentSize} bytes, consumer keeps up)`, async () => {
      const records = mixedRecords();
      const loop = loopback(["c"], toFirst, 3, segmentSize);
      records.forEach((r, i) => {
        loop.writer.emit(r);
        if (i % 17 === 0) loop.pump();
      });
      await Promise.all([loop.writer.finish(), loop.consumeToEnd()]);
      expectSameRecords(loop.got.get("c")!, records);
      expect(loop.events.get("c")).toEqual([{ type: "end" }]);
      expect(loop.recycled).toBe(loop.sent);
      expect(loop.pool.inUse).toBe(0);
      // Every byte counted went over the wire.
      expect(loop.wire.get("c")!.reduce((a, b) => a + b.length, 0)).toBe(loop.writer.bytesOut);
      expect(loop.writer.buffersOut).toBe(loop.sent);
      expect(loop.writer.recordsOut).toBe(records.length);
    }, 60_000);
  }

  test("mixed records round-trip when everything is emitted before the consumer reads anything (overflow)", async () => {
    const records = mixedRecords(400);
    const loop = loopback(["c"], toFirst, 2, 64);
    for (const r of records) loop.writer.emit(r);
    expect(loop.writer.backpressured).toBe(true);
    await Promise.all([loop.writer.finish(), loop.consumeToEnd()]);
    expectSameRecords(loop.got.get("c")!, records);
    expect(loop.recycled).toBe(loop.sent);
    expect(loop.pool.inUse).toBe(0);
  }, 60_000);

  test("three channels: each channel's records in order, none lost, with small buffers", async () => {
    const records = mixedRecords(900);
    const ids = ["a", "b", "c"];
    // Independent of record content: route by position.
    let n = 0;
    const route = new Map<unknown, number>();
    const loop = loopback(ids, (r) => route.get(r)!, 4, 64);
    const expected = new Map<string, unknown[]>(ids.map((id) => [id, []]));
    for (const r of records) {
      const wrapped = { r };
      const ch = (n * 7 + (n >> 3)) % 3;
      n++;
      route.set(wrapped, ch);
      expected.get(ids[ch]!)!.push(wrapped);
      loop.writer.emit(wrapped);
      if (n % 50 === 0) loop.pump();
    }
    await Promise.all([loop.writer.finish(), loop.consumeToEnd()]);
    for (const id of ids) expectSameRecords(loop.got.get(id)!, expected.get(id)!);
    for (const id of ids) expect(loop.events.get(id)).toEqual([{ type: "end" }]);
  }, 60_000);

  test("with small records and large buffers, the stream is u32 big-endian length-prefixed msgpack arrays of CHUNK_RECORDS records", async () => {
    const records = Array.from({ length: CHUNK_RECORDS * 3 + 5 }, (_, i) => ({ i, s: `r${i}` }));
    const loop = loopback(["c"], toFirst, 2, 32768);
    for (const r of records) loop.writer.emit(r);
    await Promise.all([loop.writer.finish(), loop.consumeToEnd()]);
    const chunks = parseChunks(loop.wire.get("c")!);
    expect(chunks.map((c) => c.records.length)).toEqual([CHUNK_RECORDS, CHUNK_RECORDS, CHUNK_RECORDS, 5]);
    expect(chunks.flatMap((c) => c.records)).toEqual(records);
    expect(loop.wire.get("c")!.reduce((a, b) => a + b.length, 0)).toBe(loop.writer.bytesOut);
  });

  test("with small buffers: chunks of 1..CHUNK_RECORDS records; a chunk that fits a buffer spans two only if it began in the first half", async () => {
    const segment = 256;
    const records = Array.from({ length: 3000 }, (_, i) => ({ i, s: "q".repeat((i * 13) % 90) }));
    const loop = loopback(["c"], toFirst, 3, segment);
    records.forEach((r, i) => {
      loop.writer.emit(r);
      if (i % 10 === 0) loop.pump();
    });
    await Promise.all([loop.writer.finish(), loop.consumeToEnd()]);
    const chunks = parseChunks(loop.wire.get("c")!);
    expect(chunks.flatMap((c) => c.records)).toEqual(records);
    for (const c of chunks) {
      expect(c.records.length).toBeGreaterThan(0);
      expect(c.records.length).toBeLessThanOrEqual(CHUNK_RECORDS);
      if (c.framed <= segment && c.endBuf !== c.startBuf) expect(c.startOffset).toBeLessThanOrEqual(segment / 2);
    }
    expect(chunks.some((c) => c.endBuf !== c.startBuf)).toBe(true);
  });

  test("chunks shrink for large records and grow back for small ones", async () => {
    const segment = 4096;
    const big = Array.from({ length: 200 }, (_, i) => ({ i, blob: "B".repeat(3000) }));
    const small = Array.from({ length: 2000 }, (_, i) => i);
    const loop = loopback(["c"], toFirst, 4, segment);
    [...big, ...small].forEach((r, i) => {
      loop.writer.emit(r);
      if (i % 10 === 0) loop.pump();
    });
    await Promise.all([loop.writer.finish(), loop.consumeToEnd()]);
    const chunks = parseChunks(loop.wire.get("c")!);
    expect(chunks.flatMap((c) => c.records)).toEqual([...big, ...small]);
    const bigChunks = chunks.filter((c) => c.records.some((r) => typeof r === "object"));
    const smallChunks = chunks.filter((c) => c.records.every((r) => typeof r === "number"));
    // Big records (each more than half a buffer) end up one per chunk.
    expect(bigChunks.at(-1)!.records.length).toBe(1);
    expect(bigChunks.slice(-10).every((c) => c.records.length === 1)).toBe(true);
    // Small records: back to CHUNK_RECORDS per chunk.
    expect(smallChunks.slice(-10, -1).every((c) => c.records.length === CHUNK_RECORDS)).toBe(true);
    expect(smallChunks.every((c) => c.records.length <= CHUNK_RECORDS)).toBe(true);
  });

  test("decoded binary records are copies: reusing the buffer afterwards does not change them", () => {
    const pool = new LocalBufferPool(1, 4096, 0);
    const gate = new InputGate(["c"]);
    const held: ArrayBuffer[] = [];
    const writer = new RecordWriter(["c"], toFirst, pool, true);
    writer.connect("c", {
      buffer: (ch, buf, size) => gate.onBuffer(ch, buf, size, (b) => held.push(b)),
      event: (ch, e) => gate.onEvent(ch, e),
    });
    const bin = bytesOf(1000, 3);
    writer.emit({ bin, s: "abc" });
    const item = gate.poll()!;
    expect(held.length).toBe(1);
    new Uint8Array(held[0]!).fill(0);
    expect(item).toEqual({ channel: "c", records: [{ bin: bytesOf(1000, 3), s: "abc" }] });
  });
});

describe("RecordDeserializer", () => {
  /** Chunks of the records as the serializer frames them (the framing done here). */
  function encode(records: unknown[], perChunk: number): Uint8Array {
    const s = new RecordSerializer();
    const parts: Uint8Array[] = [];
    for (let i = 0; i < records.length; i += perChunk) parts.push(frame(s.serialize(records.slice(i, i + perChunk)).slice()));
    return concat(parts);
  }

  test("fed one byte per buffer, decodes every record, in order", () => {
    const records = mixedRecords(600).filter((r) => r !== HUGE);
    const stream = encode(records, 13);
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    for (let p = 0; p < stream.length; p++) {
      const before = out.length;
      d.read(stream.slice(p, p + 1), out);
      // A record appears only with the last byte of its chunk: after it nothing is partial.
      if (out.length > before) expect(d.hasPartialRecord).toBe(false);
      else expect(d.hasPartialRecord).toBe(true);
    }
    expect(d.hasPartialRecord).toBe(false);
    expectSameRecords(out, records);
  });

  test("fed the 2 MiB string one byte per buffer, decodes it", () => {
    const records = ["before", HUGE, { after: MULTI }];
    const stream = encode(records, 2);
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    const one = new Uint8Array(1);
    for (let p = 0; p < stream.length; p++) {
      one[0] = stream[p]!; // the same memory every time: the deserializer must copy
      d.read(one, out);
    }
    expect(out.length).toBe(3);
    expect(out[1] === HUGE).toBe(true);
    expect(out).toEqual(records);
  });

  test("decodes the same stream cut at random points, including inside length prefixes", () => {
    const records = mixedRecords(800);
    const stream = encode(records, 29);
    for (const seed of [1, 2, 3]) {
      const r = rng(seed);
      const pieces = cut(stream, () => (r() < 0.3 ? 1 + Math.floor(r() * 5) : 1 + Math.floor(r() * 3000)));
      const d = new RecordDeserializer();
      const out: unknown[] = [];
      for (const piece of pieces) d.read(piece, out);
      expect(d.hasPartialRecord).toBe(false);
      expectSameRecords(out, records);
    }
  });

  test("a length prefix split 1+3, 2+2, 3+1 and 1+1+1+1 over buffers", () => {
    const records = [{ a: 1 }, "two", [3]];
    const stream = encode(records, 1);
    for (const splits of [[1], [2], [3], [1, 2, 3], [4], [5], [4, 5, 6, 7]]) {
      const d = new RecordDeserializer();
      const out: unknown[] = [];
      let prev = 0;
      for (const at of splits) {
        d.read(stream.slice(prev, at), out);
        expect(d.hasPartialRecord).toBe(true);
        prev = at;
      }
      d.read(stream.slice(prev), out);
      expect(d.hasPartialRecord).toBe(false);
      expect(out).toEqual(records);
    }
  });

  test("shapes are described once per stream: a later chunk with a known shape is smaller, and still decodes", () => {
    const s = new RecordSerializer();
    const rec = { alpha: 1, beta: "two", gamma: [3] };
    const first = s.serialize([rec]).slice();
    const second = s.serialize([rec]).slice();
    expect(second.length).toBeLessThan(first.length);
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    d.read(concat([frame(first), frame(second)]), out);
    expect(out).toEqual([rec, rec]);
  });

  test("two streams with their own shape numbering decode with one deserializer each, interleaved", () => {
    const sa = new RecordSerializer();
    const sb = new RecordSerializer();
    const A = (i: number) => ({ x: i, y: `a${i}` });
    const B = (i: number) => ({ name: `b${i}`, v: [i] });
    const da = new RecordDeserializer();
    const db = new RecordDeserializer();
    const outA: unknown[] = [];
    const outB: unknown[] = [];
    for (let i = 0; i < 5; i++) {
      // Stream a defines A first, stream b defines B first: the ids differ between the streams.
      const ca = frame(sa.serialize(i % 2 === 0 ? [A(i), B(i)] : [B(i), A(i)]).slice());
      const cb = frame(sb.serialize(i % 2 === 0 ? [B(i), A(i)] : [A(i), B(i)]).slice());
      db.read(cb, outB);
      da.read(ca, outA);
    }
    expect(outA).toEqual([0, 1, 2, 3, 4].flatMap((i) => (i % 2 === 0 ? [A(i), B(i)] : [B(i), A(i)])));
    expect(outB).toEqual([0, 1, 2, 3, 4].flatMap((i) => (i % 2 === 0 ? [B(i), A(i)] : [A(i), B(i)])));
  });

  test("a chunk of length 0 is an error (length prefix whole)", () => {
    const d = new RecordDeserializer();
    expect(() => d.read(new Uint8Array([0, 0, 0, 0, 0x91, 0x01]), [])).toThrow();
  });

  test("a chunk of length 0 is an error (the prefix alone in the buffer)", () => {
    expect(() => new RecordDeserializer().read(new Uint8Array([0, 0, 0, 0]), [])).toThrow();
  });

  test("a chunk of length 0 is an error (length prefix spanning buffers)", () => {
    const d = new RecordDeserializer();
    d.read(new Uint8Array([0, 0]), []);
    expect(d.hasPartialRecord).toBe(true);
    expect(() => d.read(new Uint8Array([0, 0, 0x91, 0x01]), [])).toThrow(/length 0/);
  });

  test("a chunk of length 0 after a valid chunk is an error", () => {
    const valid = frame(new RecordSerializer().serialize([1, 2]).slice());
    const d = new RecordDeserializer();
    expect(() => d.read(concat([valid, new Uint8Array([0, 0, 0, 0, 0x91, 0x01])]), [])).toThrow();
  });

  test("a chunk that is not a msgpack array is an error", () => {
    const notArray = new Packr().pack({ a: 1 });
    expect(() => new RecordDeserializer().read(frame(notArray), [])).toThrow(/not an array/);
  });
});
