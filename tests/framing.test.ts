import { describe, expect, test } from "bun:test";
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameError, encodeBufferFrame, encodeFrame, NO_FRAME } from "../src/rpc/framing.ts";
import { DATA_FRAME } from "../src/network/wire.ts";
import { rng } from "./helpers.ts";

/** Bodies of varied msgpack types and sizes (all survive a msgpack round trip unchanged). */
const BODIES: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  127,
  128,
  -33,
  65_535,
  2 ** 31 - 1,
  -(2 ** 31),
  2 ** 40 + 7,
  3.25,
  -1e-9,
  "",
  "hello",
  "ünïcödé 中文 😀",
  "x".repeat(70_000),
  [],
  [1, "two", [3, [4, null]], { five: 5 }],
  {},
  { type: "register", id: "tm-1", slots: 4, nested: { list: [1, 2, 3], flag: false, s: "é" } },
  { big: Array.from({ length: 5000 }, (_, i) => ({ i, name: `item-${i}`, even: i % 2 === 0 })) },
];


/** The frame header as specified: u32 big-endian body length. */
function header(length: number): Uint8Array {
  const h = new Uint8Array(4);
  new DataView(h.buffer).setUint32(0, length, false);
  return h;
}

function frameWithRawBody(body: number[]): Uint8Array {
  const out = new Uint8Array(4 + body.length);
  out.set(header(body.length), 0);
  out.set(body, 4);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

function errorOf(fn: () => unknown): FrameError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FrameError);
    expect((err as Error).name).toBe("FrameError");
    return err as FrameError;
  }
  throw new Error("expected a FrameError, nothing was thrown");
}

describe("encodeFrame", () => {
  test("a frame is a 4-byte big-endian body length followed by the body", () => {
    for (const body of BODIES) {
      const frame = encodeFrame(body);
      const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
      expect(view.getUint32(0, false)).toBe(frame.length - 4);
      expect(frame.length).toBeGreaterThan(4);
    }
  });

  test("every body round-trips through a decoder", () => {
    for (const body of BODIES) {
      const d = new FrameDecoder();
      expect(d.push(encodeFrame(body))).toEqual([body]);
      expect(d.pendingBytes).toBe(0);
    }
  });

  test("two encodings are independent buffers (the encoder's scratch space is not shared)", () => {
    const a = encodeFrame({ a: "first", n: 1 });
    const copyOfA = Uint8Array.from(a);
    encodeFrame({ b: "second, and longer than the first", n: 2 });
    expect(Uint8Array.from(a)).toEqual(copyOfA);
    expect(new FrameDecoder().push(a)).toEqual([{ a: "first", n: 1 }]);
  });
});

describe("FrameDecoder", () => {
  test("several frames in one chunk are all returned, in order", () => {
    const d = new FrameDecoder();
    const stream = concat(BODIES.map((b) => encodeFrame(b)));
    expect(d.push(stream)).toEqual(BODIES);
    expect(d.pendingBytes).toBe(0);
  });

  test("a stream fed in 1-byte chunks yields the same frames, each exactly when its last byte arrives", () => {
    const small = BODIES.filter((b) => JSON.stringify(b).length < 1000);
    const frames = small.map((b) => encodeFrame(b));
    const stream = concat(frames);
    // Offsets at which each frame completes.
    const ends: number[] = [];
    let pos = 0;
    for (const f of frames) ends.push((pos += f.length));

    const d = new FrameDecoder();
    const got: unknown[] = [];
    for (let i = 0; i < stream.length; i++) {
      const out = d.push(stream.subarray(i, i + 1));
      const completes = ends.filter((e) => e === i + 1).length;
      expect(out.length).toBe(completes);
      got.push(...out);
      const lastEnd = ends.filter((e) => e <= i + 1).at(-1) ?? 0;
      expect(d.pendingBytes).toBe(i + 1 - lastEnd);
    }
    expect(got).toEqual(small);
    expect(d.pendingBytes).toBe(0);
  });

  test("a stream split in two at every possible byte boundary decodes to the same frames", () => {
    const bodies = [{ a: 1 }, "two", [3, 3, 3], null, { nested: { deep: ["x", 1.5] } }, "é中😀"];
    const stream = concat(bodies.map((b) => encodeFrame(b)));
    for (let cut = 0; cut <= stream.length; cut++) {
      const d = new FrameDecoder();
      const got = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
      expect(got).toEqual(bodies);
      expect(d.pendingBytes).toBe(0);
    }
  });

  test("random chunking of a large stream (including non-Buffer views with offsets) decodes the same frames", () => {
    const next = rng(42);
    const stream = concat(BODIES.map((b) => encodeFrame(b)));
    for (let round = 0; round < 5; round++) {
      const d = new FrameDecoder();
      const got: unknown[] = [];
      let pos = 0;
      while (pos < stream.length) {
        const n = 1 + Math.floor(next() * (round === 0 ? 7 : 20_000));
        // Copy into a bigger Uint8Array and hand over a view with a non-zero byteOffset.
        const backing = new Uint8Array(n + 16);
        backing.set(stream.subarray(pos, pos + n), 8);
        const len = Math.min(n, stream.length - pos);
        got.push(...d.push(backing.subarray(8, 8 + len)));
        pos += len;
      }
      expect(got).toEqual(BODIES);
      expect(d.pendingBytes).toBe(0);
    }
  });

  test("network buffer frames mixed with msgpack frames survive random chunking; a payload read at once is intact", () => {
    const next = rng(7);
    const expected: unknown[] = [];
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 300; i++) {
      if (next() < 0.3) {
        const body = { i, text: "x".repeat(Math.floor(next() * 100)) };
        expected.push(body);
        frames.push(encodeFrame(body));
      } else {
        const payload = new Uint8Array(1 + Math.floor(next() * 40_000)).map((_, j) => (i * 31 + j) & 0xff);
        const channel = `job|${i % 3}|0|1`;
        expected.push([DATA_FRAME.DATA, channel, Array.from(payload.subarray(0, 8)), payload.length, i % 5]);
        frames.push(encodeBufferFrame(channel, i % 5, payload));
      }
    }
    const stream = concat(frames);
    const d = new FrameDecoder();
    const got: unknown[] = [];
    // Consume each frame before the next is decoded, as the data connection does: a buffer frame's payload may
    // be the decoder's scratch memory, reused by the next call.
    const take = (f: unknown) => {
      if (Array.isArray(f) && f[0] === DATA_FRAME.DATA) {
        const p = f[2] as Uint8Array;
        const i = got.length;
        for (let j = 0; j < p.length; j += 997) expect(p[j]).toBe((i * 31 + j) & 0xff);
        got.push([f[0], f[1], Array.from(p.subarray(0, 8)), p.length, f[3]]);
      } else got.push(f);
    };
    let pos = 0;
    while (pos < stream.length) {
      const n = Math.min(1 + Math.floor(next() * 70_000), stream.length - pos);
      d.append(stream.subarray(pos, pos + n));
      pos += n;
      for (let f = d.next(); f !== NO_FRAME; f = d.next()) take(f);
    }
    expect(got).toEqual(expected);
    expect(d.pendingBytes).toBe(0);
  });

  test("pendingBytes counts the bytes of an incomplete frame, including its header", () => {
    const d = new FrameDecoder();
    expect(d.pendingBytes).toBe(0);
    const f1 = encodeFrame({ hello: "world" });
    const f2 = encodeFrame([1, 2, 3, "four"]);
    expect(d.push(f1.subarray(0, 2))).toEqual([]);
    expect(d.pendingBytes).toBe(2);
    expect(d.push(f1.subarray(2, 6))).toEqual([]);
    expect(d.pendingBytes).toBe(6);
    // Rest of f1 plus 3 bytes of f2's header.
    expect(d.push(concat([f1.subarray(6), f2.subarray(0, 3)]))).toEqual([{ hello: "world" }]);
    expect(d.pendingBytes).toBe(3);
    expect(d.push(f2.subarray(3, f2.length - 1))).toEqual([]);
    expect(d.pendingBytes).toBe(f2.length - 1);
    expect(d.push(f2.subarray(f2.length - 1))).toEqual([[1, 2, 3, "four"]]);
    expect(d.pendingBytes).toBe(0);
  });

  test("an empty chunk is harmless", () => {
    const d = new FrameDecoder();
    expect(d.push(new Uint8Array(0))).toEqual([]);
    expect(d.pendingBytes).toBe(0);
    const f = encodeFrame("x");
    expect(d.push(f.subarray(0, 1))).toEqual([]);
    expect(d.push(new Uint8Array(0))).toEqual([]);
    expect(d.pendingBytes).toBe(1);
    expect(d.push(f.subarray(1))).toEqual(["x"]);
  });

  test("the default limit is 64 MiB", () => {
    expect(DEFAULT_MAX_FRAME_BYTES).toBe(64 * 1024 * 1024);
    const err = errorOf(() => new FrameDecoder().push(header(64 * 1024 * 1024 + 1)));
    expect(err.message).toContain(String(64 * 1024 * 1024 + 1));
  });

  test("a length above the limit throws a FrameError naming the size, as soon as the header is complete", () => {
    const d = new FrameDecoder(100);
    // Three header bytes: not yet known.
    const h = header(12_345);
    expect(d.push(h.subarray(0, 3))).toEqual([]);
    const err = errorOf(() => d.push(h.subarray(3)));
    expect(err.message).toContain("12345");
    expect(err.message).toContain("100");
  });

  test("a huge declared length is rejected without waiting for its body", () => {
    const err = errorOf(() => new FrameDecoder(1024).push(header(0xffffffff)));
    expect(err.message).toContain(String(0xffffffff));
  });

  test("a frame exactly at the limit is accepted; one byte more is rejected", () => {
    // A msgpack str8 of n chars is 2 + n bytes; choose the string so the body is exactly 200 bytes.
    const body = "a".repeat(198);
    const frame = encodeFrame(body);
    expect(frame.length - 4).toBe(200);
    expect(new FrameDecoder(200).push(frame)).toEqual([body]);
    const err = errorOf(() => new FrameDecoder(199).push(frame));
    expect(err.message).toContain("200");
  });

  test("frames before an oversized one in the same chunk are not silently accepted as a valid stream", () => {
    const d = new FrameDecoder(50);
    const stream = concat([encodeFrame("ok"), encodeFrame("y".repeat(100))]);
    errorOf(() => d.push(stream));
  });

  test("an undecodable body throws a FrameError", () => {
    // A whole value (1) followed by stray bytes: the body is not exactly one msgpack value.
    errorOf(() => new FrameDecoder().push(frameWithRawBody([0x01, 0x02])));
    // A fixarray of 3 elements holding only 1: truncated body.
    const truncated = errorOf(() => new FrameDecoder().push(frameWithRawBody([0x93, 0x01])));
    expect(truncated.message).toContain("2 bytes");
    // A str8 claiming 10 bytes but holding 2.
    errorOf(() => new FrameDecoder().push(frameWithRawBody([0xd9, 10, 0x61, 0x62])));
  });

  test("an undecodable body fed byte by byte throws when its last byte arrives", () => {
    const d = new FrameDecoder();
    const frame = frameWithRawBody([0x92, 0x01]); // array of 2, one element present
    for (let i = 0; i < frame.length - 1; i++) expect(d.push(frame.subarray(i, i + 1))).toEqual([]);
    errorOf(() => d.push(frame.subarray(frame.length - 1)));
  });

  test("a zero-length body is not a valid msgpack value", () => {
    errorOf(() => new FrameDecoder().push(header(0)));
  });
});
