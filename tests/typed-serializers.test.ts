// Typed serializers (issue 19, item 1): each fixed layout round-trips every value of its type (property tests with
// NaN, -0, +-Infinity, int32 bounds, empty, non-BMP, lone-surrogate and > 64 KiB strings), through a real
// RecordWriter into small buffers and back through the RecordDeserializer; typed and msgpack chunks mix in one
// stream; decodeChunksFrom reads from any chunk boundary; a record that does not match its declared type fails the
// task naming the operator and the field; and a keyed job gives the same output declared, inferred and msgpack-only.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { RecordDeserializer, RecordSerializer, TYPED_CHUNK, decodeChunksFrom, type SerializerOptions } from "../src/network/serialization.ts";
import { RecordWriter, type BufferSender } from "../src/network/record-writer.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { Types, type TypeInformation } from "../src/api/types.ts";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { buildJobGraph } from "../src/api/job-graph.ts";
import { describePlan } from "../src/api/plan.ts";
import { inferChunkSignature, inferSignature, parseSignature } from "../src/network/typed-serialization.ts";
import { defaultConfig } from "../src/config/index.ts";
import { setLogLevel } from "../src/util/log.ts";
import { clusterForTests } from "./cluster-helpers.ts";
import { removeTempDirs, rng, runJob, tempDir, writeJob } from "./helpers.ts";

setLogLevel("warn");
afterAll(removeTempDirs);

/** Equal as values, Object.is on primitives (NaN equals NaN, -0 differs from 0), objects' keys in the same order. */
function same(a: unknown, b: unknown): boolean {
  if (typeof a !== "object" || a === null || typeof b !== "object" || b === null) return Object.is(a, b);
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length || ka.some((k, i) => k !== kb[i])) return false;
  return ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

function expectSame(got: unknown[], want: unknown[], what: string): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!same(got[i], want[i])) throw new Error(`${what}: record ${i} came back as ${show(got[i])}, sent ${show(want[i])}`);
  }
}
const show = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === "number" && !Number.isFinite(x) ? String(x) : Object.is(x, -0) ? "-0" : typeof x === "string" && x.length > 60 ? `${x.slice(0, 60)}...(${x.length})` : x));

/** Random values of each type: edge cases often, random ones otherwise. */
function generators(next: () => number) {
  const pick = <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)]!;
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const char = (): string => {
    const k = next();
    if (k < 0.5) return String.fromCharCode(int(0x20, 0x7e));
    if (k < 0.6) return String.fromCharCode(int(0, 0x1f));
    if (k < 0.7) return String.fromCharCode(int(0x80, 0x7ff)); // 2 bytes
    if (k < 0.8) return String.fromCharCode(pick([int(0x800, 0xd7ff), int(0xe000, 0xfffd)])); // 3 bytes
    if (k < 0.95) return String.fromCodePoint(int(0x10000, 0x10ffff)); // a surrogate pair, 4 bytes
    return String.fromCharCode(int(0xd800, 0xdfff)); // a lone surrogate
  };
  const str = (): string => {
    const k = next();
    if (k < 0.05) return "";
    if (k < 0.1) return pick(["😀", "a😀b", "\uD83D", "\uDE00x", "x\uD83D", "\u0000", "Zürich", "日本語"]);
    // Lengths around the encoder's short-string limit (64), and rarely over 64 KiB (crossing buffers).
    const n = k < 0.12 ? int(66_000, 90_000) : k < 0.3 ? int(60, 70) : int(1, 40);
    let s = "";
    if (n > 1000) {
      const piece = Array.from({ length: 50 }, char).join("");
      while (s.length < n) s += piece;
      return next() < 0.5 ? s : s + "\uD800"; // long, with or without a lone surrogate
    }
    while (s.length < n) s += char();
    return s;
  };
  const double = (): number =>
    next() < 0.3 ? pick([NaN, -0, 0, Infinity, -Infinity, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53, -(2 ** 53), 0.1, 2 ** 31, -(2 ** 31) - 1]) : (next() - 0.5) * 10 ** int(-300, 300);
  const int32 = (): number => (next() < 0.3 ? pick([0, 1, -1, 2147483647, -2147483648, 2147483646, -2147483647]) : int(-2147483648, 2147483647));
  const long = (): number => (next() < 0.3 ? pick([0, -(2 ** 53), 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 2 ** 64, 1e300, -0]) : Math.round((next() - 0.5) * 2 ** int(0, 60)));
  const bool = () => next() < 0.5;
  return { str, double, int32, long, bool, int, pick };
}

/** The records through a real RecordWriter into buffers of `segment` bytes, then back through a RecordDeserializer fed buffer by buffer. */
function throughWriter(records: unknown[], options: SerializerOptions, segment: number, flushEvery = 0): { out: unknown[]; bytes: Uint8Array[]; writer: RecordWriter } {
  const pool = new LocalBufferPool(100_000, segment, 0);
  const writer = new RecordWriter(["c"], () => 0, pool, false, Infinity, options);
  const bytes: Uint8Array[] = [];
  const sender: BufferSender = {
    buffer: (_c, buf, size) => {
      bytes.push(new Uint8Array(buf, 0, size).slice());
      writer.recycle(buf, "c");
    },
    event: () => {},
  };
  writer.connect("c", sender);
  records.forEach((r, i) => {
    writer.emit(r);
    if (flushEvery > 0 && i % flushEvery === flushEvery - 1) writer.flush();
  });
  writer.flush();
  const d = new RecordDeserializer();
  const out: unknown[] = [];
  for (const b of bytes) d.read(b, out);
  expect(d.hasPartialRecord).toBe(false);
  return { out, bytes, writer };
}

const chunkCounts = (w: RecordWriter) => {
  const s = (w as unknown as { subs: { serializer: RecordSerializer }[] }).subs[0]!.serializer;
  return { typed: s.typedChunks, msgpack: s.msgpackChunks };
};

describe("each typed serializer round-trips every value of its type", () => {
  const cases: [string, TypeInformation<any>, (g: ReturnType<typeof generators>) => unknown][] = [
    ["STRING", Types.STRING, (g) => g.str()],
    ["INT", Types.INT, (g) => g.int32()],
    ["LONG", Types.LONG, (g) => g.long()],
    ["DOUBLE", Types.DOUBLE, (g) => g.double()],
    ["BOOLEAN", Types.BOOLEAN, (g) => g.bool()],
    ["TUPLE(STRING, INT)", Types.TUPLE(Types.STRING, Types.INT), (g) => [g.str(), g.int32()]],
    ["TUPLE(DOUBLE, BOOLEAN, LONG, STRING)", Types.TUPLE(Types.DOUBLE, Types.BOOLEAN, Types.LONG, Types.STRING), (g) => [g.double(), g.bool(), g.long(), g.str()]],
    ["ROW({name, n, ok, x})", Types.ROW({ name: Types.STRING, n: Types.INT, ok: Types.BOOLEAN, "odd key": Types.DOUBLE }), (g) => ({ name: g.str(), n: g.int32(), ok: g.bool(), "odd key": g.double() })],
    ["nested TUPLE(ROW, TUPLE)", Types.TUPLE(Types.ROW({ a: Types.STRING }), Types.TUPLE(Types.DOUBLE, Types.STRING)), (g) => [{ a: g.str() }, [g.double(), g.str()]]],
  ];
  for (const [name, type, gen] of cases) {
    test(`${name}: random values through buffers of 61, 1024 and 32768 bytes, with and without event-time timestamps`, () => {
      for (const seed of [1, 2, 3]) {
        const g = generators(rng(seed * 7919 + name.length));
        const values = Array.from({ length: 600 }, () => gen(g));
        for (const segment of [61, 1024, 32768]) {
          const { out, writer } = throughWriter(values, { declared: { type, operator: "Test" } }, segment, 1 + (seed % 50));
          expectSame(out, values, `${name}, segment ${segment}`);
          expect(chunkCounts(writer).msgpack).toBe(0);
          // Event time: records travel as [timestamp | null, record].
          const timed = values.map((v, i) => [i % 5 === 0 ? null : g.double(), v]);
          const t = throughWriter(timed, { declared: { type, operator: "Test" }, eventTime: true }, segment);
          expectSame(t.out, timed, `${name} with timestamps, segment ${segment}`);
          expect(chunkCounts(t.writer).msgpack).toBe(0);
        }
      }
    });
  }

  test("a string over 64 KiB crosses buffers whole, and lone surrogates come back as they were (msgpack would give U+FFFD)", () => {
    const long = "😀é日a".repeat(20_000) + "\uDC00";
    const values = ["", long, "\uD800", "x\uDBFF\uDBFFy", long.slice(0, 70_000)];
    const { out, bytes } = throughWriter(values, { declared: { type: Types.STRING, operator: "T" } }, 4096);
    expect(bytes.length).toBeGreaterThan(40);
    expectSame(out, values, "strings");
  });
});

describe("the chunk format", () => {
  const frame = (body: Uint8Array): Uint8Array => {
    const f = new Uint8Array(body.length + 4);
    new DataView(f.buffer).setUint32(0, body.length);
    f.set(body, 4);
    return f;
  };

  test("a typed chunk begins with 0xc1 (never a msgpack array header) and its layout's signature", () => {
    const s = new RecordSerializer({ declared: { type: Types.TUPLE(Types.STRING, Types.INT), operator: "T" } });
    const body = s.serialize([["ab", 7]]);
    expect(s.lastTyped).toBe(true);
    expect([...body]).toEqual([TYPED_CHUNK, 0, 4, ..."(si)"].map((x) => (typeof x === "string" ? x.charCodeAt(0) : x)).concat([2, 0, 0, 0, 97, 98, 7, 0, 0, 0]));
    const m = new RecordSerializer();
    expect(m.serialize([["ab", 7]])[0]! & 0xf0).toBe(0x90);
    expect(m.lastTyped).toBe(false);
  });

  test("an inferred stream mixes typed and msgpack chunks across buffer boundaries; records that do not fit go as msgpack", () => {
    const next = rng(42);
    const g = generators(next);
    const records: unknown[] = [];
    for (let i = 0; i < 5000; i++) {
      const k = next();
      // Mostly [string, number] tuples, now and then something else (another arity, an object, a null field).
      if (k < 0.97) records.push([g.str().replace(/[\uD800-\uDFFF]/g, "?"), next() < 0.5 ? g.int32() : g.double() || 1.5]);
      else records.push(g.pick([[1, 2, 3], { a: 1 }, ["x", null], "plain", 5, ["y", [1]]]));
    }
    for (const segment of [97, 4096]) {
      const { out, writer, bytes } = throughWriter(records, { infer: true }, segment, 37);
      expectSame(out, records, `mixed, segment ${segment}`);
      const c = chunkCounts(writer);
      expect(c.typed).toBeGreaterThan(20);
      expect(c.msgpack).toBeGreaterThan(20);
      if (segment === 97) expect(bytes.length).toBeGreaterThan(500);
    }
  });

  test("inference: primitives, flat tuples and plain objects of primitives; other records are not typed", () => {
    expect(inferSignature("x", false)).toBe("s");
    expect(inferSignature(["a", 1, true], false)).toBe("(sdb)");
    expect(inferSignature({ b: 1, a: "x" }, false)).toBe('{"b"d"a"s}');
    expect(inferSignature([5, ["a", 1]], true)).toBe("@(sd)");
    expect(inferSignature([null, 3], true)).toBe("@d");
    for (const r of [null, undefined, [], {}, [1, [2]], { a: { b: 1 } }, new Map(), new Date(0), [1, null], 5n]) expect(inferSignature(r, false)).toBeNull();
    expect(() => parseSignature("(s")).toThrow(/bad typed layout/);
    expect(() => parseSignature('{"__proto__"s}')).toThrow(/bad typed layout/);
  });

  test("inference over a chunk: a number field is int32 where every record of the first one's shape has an int32 there", () => {
    expect(inferChunkSignature([[1, 1], [2, 1], [-2147483648, 2147483647]], false)).toEqual({ shape: "(dd)", sig: "(ii)" });
    expect(inferChunkSignature([[1, 1], [2, 1.5]], false)!.sig).toBe("(id)");
    expect(inferChunkSignature([[1, 1], [-0, 1]], false)!.sig).toBe("(di)");
    expect(inferChunkSignature([[1, 1], [2 ** 31, 1], [NaN, 1]], false)!.sig).toBe("(di)");
    // Records of another shape do not count (the encoder sends their chunk as msgpack).
    expect(inferChunkSignature([[1, 1], ["x", 1.5], [1, 2, 3.5]], false)!.sig).toBe("(ii)");
    // Field names with the letters i and d are not field types.
    expect(inferChunkSignature([{ i: 1, d: 2, s: "x" }, { i: 1.5, d: 2, s: "y" }], false)).toEqual({ shape: '{"i"d"d"d"s"s}', sig: '{"i"d"d"i"s"s}' });
    expect(inferChunkSignature([[5, [1, "a"]], [null, [2, "b"]]], true)!.sig).toBe("@(is)");
    // Widening keeps what was float64 before float64.
    expect(inferChunkSignature([[1, 1]], false, { shape: "(dd)", sig: "(id)" })!.sig).toBe("(id)");
    expect(inferChunkSignature([[1.5, 1]], false, { shape: "(dd)", sig: "(id)" })!.sig).toBe("(dd)");
    expect(inferChunkSignature([null], false)).toBeNull();
  });

  test("an inferred int32 field widens to float64 at its first other number, for good, and every record comes back as sent", () => {
    const s = new RecordSerializer({ infer: true });
    const d = new RecordDeserializer();
    const sigOf = (body: Uint8Array) => (body[0] === TYPED_CHUNK ? new TextDecoder().decode(body.subarray(3, 3 + ((body[1]! << 8) | body[2]!))) : "msgpack");
    const chunks: unknown[][] = [
      Array.from({ length: 64 }, (_, i) => [i, 1]),
      Array.from({ length: 64 }, (_, i) => [i, 1]),
      [...Array.from({ length: 63 }, (_, i) => [i, 1]), [2 ** 31, 1]], // the key field's first number outside int32
      Array.from({ length: 64 }, (_, i) => [i, 1]), // int32 again: the layout stays wide
      [[1, 1], [-0, 1], [NaN, -1], [1.5, 0.5]], // the key field wide already; a fraction in the other
      [[1, 1], [2, 3]],
    ];
    const sigs: string[] = [];
    const out: unknown[] = [];
    for (const c of chunks) {
      const body = s.serialize(c);
      sigs.push(sigOf(body));
      d.read(frame(body.slice()), out);
    }
    expect(sigs).toEqual(["(ii)", "(ii)", "(di)", "(di)", "(dd)", "(dd)"]);
    expect(s.msgpackChunks).toBe(0);
    expectSame(out, chunks.flat(), "widened stream");
    // Decoded int32 fields are numbers like any other.
    expect(out[0]).toEqual([0, 1]);
  });

  test("an inferred object layout keeps key order: the same keys in another order go as msgpack, and come back in their order", () => {
    const records = [...Array.from({ length: 64 }, (_, i) => ({ a: i, b: "x" })), ...Array.from({ length: 64 }, (_, i) => ({ b: "y", a: i }))];
    const s = new RecordSerializer({ infer: true });
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    d.read(frame(s.serialize(records.slice(0, 64)).slice()), out);
    expect(s.lastTyped).toBe(true);
    d.read(frame(s.serialize(records.slice(64)).slice()), out);
    expect(s.lastTyped).toBe(false);
    expectSame(out, records, "key order");
  });

  test("decodeChunksFrom decodes a mixed stream from every chunk boundary, given the shape table there", () => {
    const next = rng(9);
    const s = new RecordSerializer({ infer: true });
    const chunks: { bytes: Uint8Array; records: unknown[]; table: string[][] }[] = [];
    for (let c = 0; c < 80; c++) {
      const table = s.shapeTable(); // the table that decodes the stream from this chunk on
      const n = 1 + Math.floor(next() * 20);
      const records = Array.from({ length: n }, (_, i) =>
        next() < 0.93 ? ["k" + Math.floor(next() * 100), i] : { [`f${Math.floor(next() * 80)}`]: i, g: "z" }, // new msgpack shapes now and then
      );
      chunks.push({ bytes: frame(s.serialize(records).slice()), records, table });
      s.shapesChanged();
    }
    expect(s.typedChunks).toBeGreaterThan(10);
    expect(s.msgpackChunks).toBeGreaterThan(10);
    for (let from = 0; from < chunks.length; from++) {
      const rest = chunks.slice(from);
      const all = new Uint8Array(rest.reduce((a, c) => a + c.bytes.length, 0));
      let at = 0;
      for (const c of rest) {
        all.set(c.bytes, at);
        at += c.bytes.length;
      }
      const out: unknown[] = [];
      decodeChunksFrom(all, chunks[from]!.table, out);
      expectSame(out, rest.flatMap((c) => c.records), `from chunk ${from}`);
    }
  });

  test("corrupt typed chunks are errors, not garbage", () => {
    const s = new RecordSerializer({ declared: { type: Types.TUPLE(Types.STRING, Types.INT), operator: "T" } });
    const body = s.serialize([["abc", 1]]).slice();
    expect(() => new RecordDeserializer().read(frame(body.subarray(0, body.length - 2)), [])).toThrow(/corrupt record stream: a typed chunk \(layout \(si\)\) ends in the middle of a record/);
    expect(() => new RecordDeserializer().read(frame(body.subarray(0, body.length - 5)), [])).toThrow(/corrupt record stream: a string of 3 bytes runs past its chunk/);
    expect(() => new RecordDeserializer().read(frame(new Uint8Array([TYPED_CHUNK, 0, 2, 40, 115])), [])).toThrow(/bad typed layout/);
    expect(() => new RecordDeserializer().read(frame(new Uint8Array([TYPED_CHUNK, 0])), [])).toThrow(/without its layout/);
  });

  test("records handed one by one to a handler as they are decoded: the same records; what the handler throws passes through as it is", () => {
    const s = new RecordSerializer({ infer: true });
    const records = Array.from({ length: 300 }, (_, i) => [i, i * 2]);
    const typed = frame(s.serialize(records).slice());
    const mixed = [{ a: 1 }, "x", [1, 2, 3]];
    const msgpack = frame(new RecordSerializer().serialize(mixed).slice());
    const got: unknown[] = [];
    const out: unknown[] = [];
    const d = new RecordDeserializer();
    d.read(typed, out, (r) => got.push(r));
    d.read(msgpack, out, (r) => got.push(r));
    expect(out).toEqual([]); // nothing collected
    expectSame(got, [...records, ...mixed], "handed over");
    // A RangeError of the handler's own (user code, e.g. new Array(-1)) is not a corrupt stream, in either kind of chunk.
    for (const chunk of [typed, msgpack]) {
      let n = 0;
      const fail = () => {
        if (++n === 3) throw new RangeError("Invalid array length (from the operator)");
      };
      expect(() => new RecordDeserializer().read(chunk, [], fail)).toThrow("Invalid array length (from the operator)");
    }
    // A truncated typed chunk still is one, with a handler too.
    const body = s.serialize(records).slice();
    expect(() => new RecordDeserializer().read(frame(body.subarray(0, body.length - 2)), [], () => {})).toThrow(/corrupt record stream: a typed chunk \(layout \(ii\)\) ends in the middle of a record/);
  });
});

describe("fixed-size records written straight into the network buffer", () => {
  /** Each buffer decoded on its own: a direct chunk never spans buffers (null when one does not decode alone). */
  const alone = (bytes: Uint8Array[]): unknown[] | null => {
    const out: unknown[] = [];
    for (const b of bytes) {
      const d = new RecordDeserializer();
      d.read(b, out);
      if (d.hasPartialRecord) return null;
    }
    return out;
  };

  test("inferred int tuples: after the first chunk every record goes straight in, chunks end with their buffer, the bytes count", () => {
    const values = Array.from({ length: 5000 }, (_, i) => [i % 977, i]);
    for (const segment of [40, 256, 32768]) {
      const { out, bytes, writer } = throughWriter(values, { infer: true }, segment);
      expectSame(out, values, `segment ${segment}`);
      expect(writer.directChunks).toBeGreaterThan(0);
      expect(chunkCounts(writer).msgpack).toBe(0);
      // Only the first chunk (64 records) went through the serializer: the rest are direct chunks, one per buffer
      // at most, so each buffer after the first ones decodes alone.
      expect(chunkCounts(writer).typed - writer.directChunks).toBe(1);
      expect(writer.bytesOut).toBe(bytes.reduce((a, b) => a + b.length, 0));
      // The first chunk (4 + 3 + 4 + 64 * 8 bytes) went through the serializer and may span buffers.
      if (segment >= 256) expect(alone(bytes.slice(Math.ceil(523 / segment)))).not.toBeNull();
    }
  });

  test("a record that does not fit the layout goes through the serializer (widened, or msgpack) in its place, and direct writing resumes", () => {
    const next = rng(11);
    const values: unknown[] = [];
    for (let i = 0; i < 20_000; i++) {
      const k = next();
      // int tuples mostly; now and then a double where an int was (widens the layout for good), a string record, an
      // object, or a tuple of another length (msgpack chunks between typed ones).
      values.push(k < 0.002 ? [i, 0.5] : k < 0.004 ? `s${i}` : k < 0.006 ? { i } : k < 0.007 ? [i] : [i, i % 7]);
    }
    const { out, writer } = throughWriter(values, { infer: true }, 1024);
    expectSame(out, values, "mixed");
    expect(writer.directChunks).toBeGreaterThan(10);
    expect(chunkCounts(writer).msgpack).toBeGreaterThan(0);
  });

  test("event time: [timestamp | null, record] records go straight in too", () => {
    const values = Array.from({ length: 3000 }, (_, i) => [i % 3 === 0 ? null : i * 1.5, [i, -i]]);
    const { out, writer } = throughWriter(values, { infer: true, eventTime: true }, 512);
    expectSame(out, values, "event time");
    expect(writer.directChunks).toBeGreaterThan(0);
  });

  test("a declared type: a record that does not match fails naming the operator and the field; what went out decodes to the records before it", () => {
    const pool = new LocalBufferPool(1000, 256, 0);
    const writer = new RecordWriter(["c"], () => 0, pool, false, Infinity, { declared: { type: Types.TUPLE(Types.INT, Types.INT), operator: "Pairs" } });
    const bytes: Uint8Array[] = [];
    writer.connect("c", { buffer: (_c, buf, size) => (bytes.push(new Uint8Array(buf, 0, size).slice()), writer.recycle(buf, "c")), event: () => {} });
    const good = Array.from({ length: 500 }, (_, i) => [i, 2 * i]);
    for (const r of good) writer.emit(r);
    expect(writer.directChunks).toBeGreaterThan(0);
    writer.emit([1, "two"]);
    expect(() => writer.flush()).toThrow('operator "Pairs" declared Types.TUPLE(INT, INT): field 1 is "two", expected INT');
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    for (const b of bytes) d.read(b, out);
    // The task fails here (and restarts from its last checkpoint): the buffers sent hold whole records, in order.
    expect(d.hasPartialRecord).toBe(false);
    expect(out.length).toBeGreaterThan(400);
    expectSame(out, good.slice(0, out.length), "before the bad record");
  });

  test("buffers cut smaller than one record's chunk (debloating) and a pool of two buffers: every record arrives in order", async () => {
    const values = Array.from({ length: 4000 }, (_, i) => [i, i % 5]);
    const pool = new LocalBufferPool(2, 256, 0);
    const writer = new RecordWriter(["c"], () => 0, pool, false, Infinity, { infer: true });
    const bytes: Uint8Array[] = [];
    let cut = 0;
    const held: ArrayBuffer[] = [];
    writer.connect("c", {
      buffer: (_c, buf, size) => {
        bytes.push(new Uint8Array(buf, 0, size).slice());
        held.push(buf);
      },
      event: () => {},
      bufferSize: () => cut,
    });
    for (let i = 0; i < values.length; i++) {
      // Now and then the consumer announces a size below a chunk of one record (4 + 3 + 4 + 8 bytes), then none.
      if (i % 700 === 0) cut = cut === 0 ? 12 : 0;
      writer.emit(values[i]);
      // A slow consumer: buffers come back only every few records.
      if (i % 9 === 0) while (held.length > 0) writer.recycle(held.shift()!, "c");
    }
    writer.flush();
    for (let rounds = 0; held.length > 0 || writer.backpressured; rounds++) {
      if (rounds > 100_000) throw new Error("the writer did not drain");
      while (held.length > 0) writer.recycle(held.shift()!, "c");
      writer.flush();
    }
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    for (const b of bytes) d.read(b, out);
    expectSame(out, values, "small buffers");
    expect(writer.directChunks).toBeGreaterThan(0);
  });
});

describe("declared types", () => {
  const declared = (type: TypeInformation<any>, eventTime = false) => new RecordSerializer({ declared: { type, operator: "Map" }, eventTime });

  test("a record that does not match fails naming the operator and the field", () => {
    const T = Types.TUPLE(Types.STRING, Types.INT);
    const cases: [TypeInformation<any>, unknown, string][] = [
      [T, ["a", "x"], 'operator "Map" declared Types.TUPLE(STRING, INT): field 1 is "x", expected INT'],
      [T, ["a", 1.5], "field 1 is 1.5, expected INT"],
      [T, ["a", 2 ** 31], "field 1 is 2147483648, expected INT"],
      [T, ["a", -0], "field 1 is -0, expected INT"],
      [T, [1, 1], "field 0 is 1, expected STRING"],
      [T, ["a", 1, 2], "the record has 3 fields, expected 2 (TUPLE(STRING, INT))"],
      [T, "ab", 'the record is "ab", expected TUPLE(STRING, INT)'],
      [Types.ROW({ name: Types.STRING, n: Types.LONG }), { name: "a", n: 0.5 }, "field n is 0.5, expected LONG"],
      [Types.ROW({ name: Types.STRING, n: Types.LONG }), { name: "a" }, "field n is missing, expected LONG"],
      [Types.ROW({ name: Types.STRING, n: Types.LONG }), { name: "a", n: 1, extra: 2 }, "the record has a field extra that the type does not declare"],
      [Types.TUPLE(Types.ROW({ a: Types.BOOLEAN })), [{ a: 1 }], "field 0.a is 1, expected BOOLEAN"],
      [Types.DOUBLE, null, "the record is null, expected DOUBLE"],
    ];
    for (const [type, bad, message] of cases) {
      const s = declared(type);
      const good = type === T ? ["ok", 1] : undefined;
      expect(() => s.serialize(good ? [good, bad] : [bad])).toThrow(message);
    }
    // Event time: the field is the record's, not the timestamp wrapper's.
    expect(() => declared(T, true).serialize([[5, ["a", "x"]]])).toThrow('operator "Map" declared Types.TUPLE(STRING, INT): field 1 is "x", expected INT');
  });

  test("Types and returns() refuse what is not a type, and returns() is not for keyBy", () => {
    expect(() => Types.ROW({ a: 5 as never })).toThrow(/Types.ROW: .*field "a" is not a type/);
    expect(() => Types.TUPLE()).toThrow(/1 to 1024 fields/);
    expect(() => Types.ROW({ __proto__: Types.STRING } as never)).toThrow();
    const env = new StreamExecutionEnvironment();
    expect(() => env.fromSequence(1, 2).returns("LONG" as never)).toThrow(/returns: the type is not a type from Types/);
    expect(() => env.fromSequence(1, 2).keyBy((x) => x).returns(Types.LONG)).toThrow(/not on a keyBy/);
  });

  test("the job graph carries the declared type on the edges it applies to; filter and reduce keep their input's", () => {
    const env = new StreamExecutionEnvironment();
    const T = Types.TUPLE(Types.STRING, Types.INT);
    env.setParallelism(2);
    const m = env.fromSequence(1, 10).map((x) => ["k", x] as [string, number]).returns(T);
    m.filter(() => true).setParallelism(1).keyBy((t) => t[0]).sum(1).rebalance().print();
    env.fromSequence(1, 10).rebalance().print();
    const g = buildJobGraph(describePlan(env.getPlan()), env.getPlan().settings, 1, "j");
    const typed = g.edges.filter((e) => e.recordType !== undefined).map((e) => [g.vertices[e.source]!.name, e.recordType!.operator, e.recordType!.declaredBy ?? null]);
    expect(typed).toEqual([
      ["Sequence Source -> Map", "Map", null],
      ["Filter", "Filter", "Map"],
      ["Keyed Sum (1)", "Keyed Sum (1)", "Map"],
    ]);
    expect(g.edges.filter((e) => e.recordType === undefined).length).toBe(1);
  });
});

describe("typed serializers on a cluster", () => {
  let dir = "";
  beforeAll(() => void (dir = tempDir("tm-typed-")));
  const config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "restart-strategy.type": "none" as const, "log.level": "warn" as const };
  const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config }));
  const API = JSON.stringify(path.resolve("src/api/index.ts"));

  test("a record that does not match its declared type fails the task, naming the operator and the field", async () => {
    const job = writeJob(dir, "mismatch.ts", `
      import { Types } from ${API};
      export default (env) => {
        env.fromSequence(1, 1000).map((x) => ["k" + (x % 7), x === 500 ? "x" : x]).returns(Types.TUPLE(Types.STRING, Types.INT))
          .keyBy((t) => t[0]).sum(1).addSink(() => {});
      };`);
    const status = await runJob(t.client, job, [], 2);
    expect(status.state).toBe("FAILED");
    expect(status.error!.message).toStartWith('RecordTypeError: operator "Map" declared Types.TUPLE(STRING, INT): field 1 is "x", expected INT');
    // The bad record in the last, partly filled chunk of a source that then waits: it is serialized by the buffer
    // time-out's flush, outside the task loop, and fails the task just the same.
    const late = writeJob(dir, "mismatch-late.ts", `
      import { NexmarkSource, Types } from ${API};
      export default (env) => {
        env.setBufferTimeout(20);
        // 20 events a second: the source waits between them, and the 5th is not a tuple.
        env.fromSource(NexmarkSource.events({ events: 200, ratePerSecond: 20, throttle: true })).map((e) => (e.bid?.auction ?? 0) === -1 || seen++ !== 4 ? ["e", seen] : { name: "c" })
          .returns(Types.TUPLE(Types.STRING, Types.INT)).keyBy((t) => String(t[0])).addSink(() => {}).disableChaining(); // a network edge: declared types are checked where records are serialized
      };
      let seen = 0;`);
    const lateStatus = await runJob(t.client, late, [], 1);
    expect(lateStatus.state).toBe("FAILED");
    expect(lateStatus.error!.message).toStartWith('RecordTypeError: operator "Map" declared Types.TUPLE(STRING, INT): the record is an object, expected TUPLE(STRING, INT)');
  }, 60_000);

  test("a keyed job gives the same output with the type declared, inferred and without typed serializers, with and without event time", async () => {
    const job = writeJob(dir, "keyed.ts", `
      import { Types, WatermarkStrategy, TumblingEventTimeWindows } from ${API};
      export default (env, args) => {
        const [mode, time, out] = args;
        if (mode === "off") env.setTypeInference(false);
        // One producer, so each key's records reach its reducer in one order (the rolling sums are deterministic).
        let s = env.fromSequence(1, 30000).setParallelism(1).map((x) => ({ key: "k" + (x % 97) + (x % 3 === 0 ? "😀" : ""), v: (x * 7919) % 1000, ts: x, even: x % 2 === 0 })).setParallelism(1);
        if (mode === "declared") s = s.returns(Types.ROW({ key: Types.STRING, v: Types.INT, ts: Types.LONG, even: Types.BOOLEAN }));
        if (time === "event") {
          s.assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((r) => r.ts))
            .keyBy((r) => r.key).window(TumblingEventTimeWindows.of(5000)).reduce((a, b) => ({ ...a, v: a.v + b.v, even: a.even && b.even }))
            .map((r) => [r.key, r.v, r.even]).returns(Types.TUPLE(Types.STRING, Types.LONG, Types.BOOLEAN)).rebalance().writeAsText(out);
        } else {
          s.keyBy((r) => r.key).reduce((a, b) => ({ ...a, v: a.v + b.v })).map((r) => [r.key, r.v]).rebalance().writeAsText(out);
        }
      };`);
    for (const time of ["processing", "event"]) {
      const outputs: Record<string, string[]> = {};
      for (const mode of ["declared", "inferred", "off"]) {
        const out = path.join(dir, `out-${time}-${mode}`);
        const status = await runJob(t.client, job, [mode, time, out], 2);
        if (status.state !== "FINISHED") throw new Error(`${mode}/${time}: ${status.state} ${status.error?.message}`);
        const files = fs.statSync(out).isDirectory() ? fs.readdirSync(out).map((f) => path.join(out, f)) : [out];
        outputs[mode] = files.flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0).sort();
      }
      expect(outputs.declared!.length).toBeGreaterThan(time === "event" ? 97 : 29_000);
      expect(outputs.inferred).toEqual(outputs.declared!);
      expect(outputs.off).toEqual(outputs.declared!);
    }
  }, 120_000);
});
