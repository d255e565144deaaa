import { describe, expect, test } from "bun:test";
import { InputGate, type GateItem } from "../src/network/input-gate.ts";
import type { ChannelEvent } from "../src/network/record-writer.ts";
import { RecordSerializer } from "../src/network/serialization.ts";

/** One buffer as a producer would send it: an ArrayBuffer of segment size, the first `size` bytes valid. */
type Buf = { buf: ArrayBuffer; size: number };

const GARBAGE = 0xc1; // never used by msgpack: decoding garbage past `size` would fail

/**
 * The records of one channel as buffers: chunks of `perChunk` records, each a u32 big-endian length and
 * the serializer's bytes (the framing is done here), cut into buffers of `segment` bytes.
 */
function channelBuffers(records: unknown[], perChunk: number, segment: number): Buf[] {
  const s = new RecordSerializer();
  const parts: number[] = [];
  for (let i = 0; i < records.length; i += perChunk) {
    const body = s.serialize(records.slice(i, i + perChunk));
    const len = body.length;
    parts.push(len >>> 24, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff, ...body);
  }
  const out: Buf[] = [];
  for (let p = 0; p < parts.length; p += segment) {
    const piece = parts.slice(p, p + segment);
    const buf = new ArrayBuffer(segment);
    const view = new Uint8Array(buf);
    view.fill(GARBAGE);
    view.set(piece);
    out.push({ buf, size: piece.length });
  }
  return out;
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** Counts recycles per buffer. */
class Recycler {
  readonly count = new Map<ArrayBuffer, number>();
  readonly order: ArrayBuffer[] = [];
  readonly fn = (buf: ArrayBuffer) => {
    this.count.set(buf, (this.count.get(buf) ?? 0) + 1);
    this.order.push(buf);
  };
  times(buf: ArrayBuffer): number {
    return this.count.get(buf) ?? 0;
  }
}

function pollAll(gate: InputGate): GateItem[] {
  const items: GateItem[] = [];
  for (let it = gate.poll(); it !== null; it = gate.poll()) items.push(it);
  return items;
}

async function settle(rounds = 4): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

function tracked(p: Promise<void>): { done: boolean } {
  const state = { done: false };
  p.then(() => (state.done = true));
  return state;
}

const END: ChannelEvent = { type: "end" };

describe("InputGate", () => {
  test("interleaved channels: arrival order kept, each channel's records in order, finished after every END", () => {
    const ids = ["p0", "p1", "p2"];
    // Each channel has its own shapes (and shapes in a different order), so the streams' record ids differ.
    const recordsOf = new Map<string, unknown[]>([
      ["p0", Array.from({ length: 300 }, (_, i) => ({ a: i, b: `x${i}` }))],
      ["p1", Array.from({ length: 250 }, (_, i) => (i % 2 ? { b: `y${i}`, a: -i } : { a: i, b: "z", c: [i] }))],
      ["p2", Array.from({ length: 200 }, (_, i) => (i % 3 ? `s${i}·ü` : { c: [i, i], a: 0.5 + i, b: null }))],
    ]);
    const pending = new Map(ids.map((id, k) => [id, channelBuffers(recordsOf.get(id)!, 7 + k * 5, 50)]));
    const gate = new InputGate(ids);
    const recycler = new Recycler();
    const r = rng(42);
    const arrival: string[] = [];
    const allBufs: ArrayBuffer[] = [];
    // Random interleaving that keeps each channel's order; END after a channel's last buffer.
    const ended = new Set<string>();
    while (ended.size < ids.length) {
      const open = ids.filter((id) => !ended.has(id));
      const id = open[Math.floor(r() * open.length)]!;
      const q = pending.get(id)!;
      const b = q.shift();
      if (b) {
        gate.onBuffer(id, b.buf, b.size, recycler.fn);
        allBufs.push(b.buf);
        arrival.push(id);
      } else {
        gate.onEvent(id, END);
        ended.add(id);
        arrival.push(`${id}:end`);
      }
    }
    expect(gate.queuedBuffers).toBe(allBufs.length);
    expect(gate.finished).toBe(false);

    const got = new Map<string, unknown[]>(ids.map((id) => [id, []]));
    const seen: string[] = [];
    for (let it = gate.poll(); it !== null; it = gate.poll()) {
      if ("event" in it) {
        expect(it.event).toEqual(END);
        seen.push(`${it.channel}:end`);
      } else {
        seen.push(it.channel);
        got.get(it.channel)!.push(...it.records);
      }
      // Finished exactly when the last END has been polled.
      expect(gate.finished).toBe(seen.length === arrival.length);
    }
    expect(seen).toEqual(arrival);
    for (const id of ids) expect(got.get(id)).toEqual(recordsOf.get(id)!);
    for (const b of allBufs) expect(recycler.times(b)).toBe(1);
    expect(gate.poll()).toBeNull();
    expect(gate.queuedBuffers).toBe(0);
  });

  test("finished only when every channel's END has been polled; other events do not count", () => {
    const gate = new InputGate(["a", "b"]);
    expect(gate.finished).toBe(false);
    gate.onEvent("a", { type: "barrier", checkpointId: 1, timestamp: 0, dir: "" });
    gate.onEvent("a", END);
    expect(pollAll(gate)).toEqual([
      { channel: "a", event: { type: "barrier", checkpointId: 1, timestamp: 0, dir: "" } },
      { channel: "a", event: END },
    ]);
    expect(gate.finished).toBe(false);
    gate.onEvent("b", { type: "watermark", timestamp: 3 });
    expect(gate.poll()).toEqual({ channel: "b", event: { type: "watermark", timestamp: 3 } });
    expect(gate.finished).toBe(false);
    gate.onEvent("b", END);
    // Arrived but not read yet: data queued before it must still be read.
    expect(gate.finished).toBe(false);
    expect(gate.poll()).toEqual({ channel: "b", event: END });
    expect(gate.finished).toBe(true);
  });

  test("a gate with no channels is finished at once", () => {
    expect(new InputGate([]).finished).toBe(true);
  });

  test("a second END on one channel does not finish the gate while another channel is open", () => {
    const gate = new InputGate(["a", "b"]);
    gate.onEvent("a", END);
    let threw = false;
    try {
      gate.onEvent("a", END);
      pollAll(gate);
    } catch {
      threw = true;
    }
    // Either the duplicate is rejected, or it is not counted: b has not ended.
    if (!threw) expect(gate.finished).toBe(false);
  });

  test("END in the middle of a chunk that spans buffers is an error", () => {
    const records = Array.from({ length: 20 }, (_, i) => ({ i, s: "x".repeat(i) }));
    const bufs = channelBuffers(records, 20, 64);
    expect(bufs.length).toBeGreaterThan(2);
    const gate = new InputGate(["c"]);
    const recycler = new Recycler();
    gate.onBuffer("c", bufs[0]!.buf, bufs[0]!.size, recycler.fn);
    gate.onBuffer("c", bufs[1]!.buf, bufs[1]!.size, recycler.fn);
    gate.onEvent("c", END);
    expect(gate.poll()).toEqual({ channel: "c", records: [] });
    expect(gate.poll()).toEqual({ channel: "c", records: [] });
    expect(() => gate.poll()).toThrow(/middle of a record/);
    expect(gate.finished).toBe(false);
    expect(recycler.times(bufs[0]!.buf)).toBe(1);
    expect(recycler.times(bufs[1]!.buf)).toBe(1);
  });

  test("END after only part of a length prefix is an error", () => {
    const bufs = channelBuffers([1, 2, 3], 3, 2); // the first buffer holds 2 of the 4 length bytes
    const gate = new InputGate(["c"]);
    gate.onBuffer("c", bufs[0]!.buf, bufs[0]!.size, () => {});
    gate.onEvent("c", END);
    expect(gate.poll()).toEqual({ channel: "c", records: [] });
    expect(() => gate.poll()).toThrow(/middle of a record/);
  });

  test("END right after a chunk completes is fine", () => {
    const bufs = channelBuffers([1, 2, 3, "four"], 2, 5);
    const gate = new InputGate(["c"]);
    for (const b of bufs) gate.onBuffer("c", b.buf, b.size, () => {});
    gate.onEvent("c", END);
    const items = pollAll(gate);
    expect(items.flatMap((it) => ("records" in it ? it.records : []))).toEqual([1, 2, 3, "four"]);
    expect(items.at(-1)).toEqual({ channel: "c", event: END });
    expect(gate.finished).toBe(true);
  });

  test("data or events for an unknown channel are an error and leave the gate unchanged", () => {
    const gate = new InputGate(["a"]);
    const recycler = new Recycler();
    const [b] = channelBuffers([1], 1, 64);
    expect(gate.hasChannel("a")).toBe(true);
    expect(gate.hasChannel("nope")).toBe(false);
    expect(() => gate.onBuffer("nope", b!.buf, b!.size, recycler.fn)).toThrow(/unknown input channel/);
    expect(() => gate.onEvent("nope", END)).toThrow(/unknown input channel/);
    expect(gate.poll()).toBeNull();
    expect(gate.queuedBuffers).toBe(0);
    gate.onEvent("a", END);
    gate.poll();
    expect(gate.finished).toBe(true);
  });

  test("poll() returns null when empty; waitNext resolves when a buffer or an event arrives", async () => {
    const gate = new InputGate(["a", "b"]);
    expect(gate.poll()).toBeNull();
    const w1 = tracked(gate.waitNext());
    await settle();
    expect(w1.done).toBe(false);
    const [b] = channelBuffers(["r"], 1, 64);
    gate.onBuffer("b", b!.buf, b!.size, () => {});
    await settle();
    expect(w1.done).toBe(true);

    // Something is queued: resolves at once.
    const w2 = tracked(gate.waitNext());
    await settle();
    expect(w2.done).toBe(true);
    expect(gate.poll()).toEqual({ channel: "b", records: ["r"] });
    expect(gate.poll()).toBeNull();

    const w3 = tracked(gate.waitNext());
    await settle();
    expect(w3.done).toBe(false);
    gate.onEvent("a", { type: "barrier", checkpointId: 2, timestamp: 0, dir: "" });
    await settle();
    expect(w3.done).toBe(true);
    expect(gate.poll()).toEqual({ channel: "a", event: { type: "barrier", checkpointId: 2, timestamp: 0, dir: "" } });
    expect(gate.poll()).toBeNull();
  });

  test("dense arrivals: waitNext polls after a short sleep instead of asking for a wake-up, and waits again once a poll finds nothing", async () => {
    const gate = new InputGate(["a"]);
    const bufs = ["r0", "r1", "r2", "r3"].map((r) => channelBuffers([r], 1, 64)[0]!);
    let arms = 0;
    /** Buffers the next poll() hands to the gate: what a ring holds when its reader looks. */
    const ring: Buf[] = [];
    const deliver = (b: Buf) => gate.onBuffer("a", b.buf, b.size, () => {});
    gate.addSource({ poll: () => ring.splice(0).forEach(deliver), armWake: () => arms++ });

    // Idle: a wake-up is asked for. The buffer comes within the dense gap (set long here, so that a descheduled test
    // thread cannot make the gap look long).
    gate.denseGapMs = 60_000;
    const w1 = gate.waitNext();
    expect(arms).toBe(1);
    deliver(bufs[0]!);
    await w1;
    expect(gate.poll()).toEqual({ channel: "a", records: ["r0"] });

    // Dense: nothing there yet, so the gate sleeps and looks again, without asking for a wake-up; the buffer is
    // found by that look.
    let looks = 0;
    gate.addSource({ poll: () => void (looks++ === 1 && deliver(bufs[1]!)), armWake: () => {} });
    const polls = gate.polls;
    await gate.waitNext();
    expect(gate.polls).toBe(polls + 1);
    expect(arms).toBe(1);
    expect(gate.poll()).toEqual({ channel: "a", records: ["r1"] });

    // Still dense, but the look after the sleep finds nothing: the gate asks for a wake-up again.
    const w3 = tracked(gate.waitNext());
    expect(gate.polls).toBe(polls + 2);
    expect(arms).toBe(2);
    await settle();
    expect(w3.done).toBe(false);
    // A slow arrival (well over the dense gap, now short) ...
    gate.denseGapMs = 5;
    await new Promise((resolve) => setTimeout(resolve, 50));
    deliver(bufs[2]!);
    await settle();
    expect(w3.done).toBe(true);
    expect(gate.poll()).toEqual({ channel: "a", records: ["r2"] });
    // ... ends the polling: the next wait asks for a wake-up at once, without a sleep.
    const w4 = tracked(gate.waitNext());
    expect(gate.polls).toBe(polls + 2);
    expect(arms).toBe(3);
    deliver(bufs[3]!);
    await settle();
    expect(w4.done).toBe(true);
  });

  test("recycle is called once per buffer, with that buffer, when the buffer is polled (not when it arrives)", () => {
    const gate = new InputGate(["c"]);
    const recycler = new Recycler();
    const bufs = channelBuffers(Array.from({ length: 50 }, (_, i) => i * 1000), 10, 16);
    for (const b of bufs) gate.onBuffer("c", b.buf, b.size, recycler.fn);
    expect(recycler.order).toEqual([]);
    for (let k = 0; k < bufs.length; k++) {
      gate.poll();
      expect(recycler.order).toEqual(bufs.slice(0, k + 1).map((b) => b.buf));
    }
    gate.poll();
    for (const b of bufs) expect(recycler.times(b.buf)).toBe(1);
  });

  test("a buffer whose decoding fails is recycled once all the same", () => {
    const gate = new InputGate(["c"]);
    const recycler = new Recycler();
    const buf = new ArrayBuffer(16);
    new Uint8Array(buf).set([0, 0, 0, 0, 0x91, 0x01]); // a chunk of length 0
    gate.onBuffer("c", buf, 6, recycler.fn);
    expect(() => gate.poll()).toThrow();
    expect(recycler.times(buf)).toBe(1);
  });

  test("only the first `size` bytes of a buffer are read", () => {
    const gate = new InputGate(["c"]);
    const bufs = channelBuffers([{ a: 1 }, { a: 2 }], 1, 1000);
    expect(bufs.length).toBe(1);
    expect(bufs[0]!.size).toBeLessThan(1000); // the rest is GARBAGE
    gate.onBuffer("c", bufs[0]!.buf, bufs[0]!.size, () => {});
    expect(gate.poll()).toEqual({ channel: "c", records: [{ a: 1 }, { a: 2 }] });
  });

  test("decoded records do not share memory with the recycled buffer", () => {
    const gate = new InputGate(["c"]);
    const bin = Uint8Array.from({ length: 200 }, (_, i) => i);
    const bufs = channelBuffers([{ bin, s: "ßtring" }], 1, 4096);
    gate.onBuffer("c", bufs[0]!.buf, bufs[0]!.size, (b) => new Uint8Array(b).fill(0)); // reused right away
    const it = gate.poll()!;
    expect(it).toEqual({ channel: "c", records: [{ bin: Uint8Array.from({ length: 200 }, (_, i) => i), s: "ßtring" }] });
  });

  test("thousands of items with reads and arrivals interleaved stay in order", () => {
    const ids = ["a", "b"];
    const gate = new InputGate(ids);
    const expected: string[] = [];
    const got: string[] = [];
    const enc = new Map(ids.map((id) => [id, new RecordSerializer()]));
    let n = 0;
    const push = (count: number) => {
      for (let k = 0; k < count; k++, n++) {
        const id = ids[n % 3 === 0 ? 1 : 0]!;
        const body = enc.get(id)!.serialize([`${id}-${n}`]);
        const buf = new ArrayBuffer(body.length + 4);
        new DataView(buf).setUint32(0, body.length);
        new Uint8Array(buf).set(body, 4);
        gate.onBuffer(id, buf, buf.byteLength, () => {});
        expected.push(`${id}-${n}`);
      }
    };
    const pull = (count: number) => {
      for (let k = 0; k < count; k++) {
        const it = gate.poll();
        expect(it).not.toBeNull();
        got.push(...((it as { records: string[] }).records));
      }
    };
    push(3000);
    pull(1500);
    push(2000);
    pull(2100);
    push(1200);
    expect(gate.queuedBuffers).toBe(2600);
    pull(2600);
    expect(gate.poll()).toBeNull();
    expect(got).toEqual(expected);
  });

  test("buffersIn, bytesIn and queuedBuffers", () => {
    const gate = new InputGate(["a", "b"]);
    const ba = channelBuffers(Array.from({ length: 30 }, (_, i) => i), 4, 20);
    const bb = channelBuffers(["x", "y"], 2, 100);
    for (const b of ba) gate.onBuffer("a", b.buf, b.size, () => {});
    gate.onEvent("a", END);
    for (const b of bb) gate.onBuffer("b", b.buf, b.size, () => {});
    expect(gate.queuedBuffers).toBe(ba.length + bb.length);
    expect([gate.buffersIn, gate.bytesIn]).toEqual([0, 0]);
    gate.poll();
    expect(gate.queuedBuffers).toBe(ba.length + bb.length - 1);
    pollAll(gate);
    expect(gate.queuedBuffers).toBe(0);
    expect(gate.buffersIn).toBe(ba.length + bb.length);
    expect(gate.bytesIn).toBe([...ba, ...bb].reduce((a, b) => a + b.size, 0));
  });
});
