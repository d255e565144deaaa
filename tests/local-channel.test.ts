// A local channel end to end in one thread: RecordWriter -> RingSender -> ring -> receiveFromRing -> InputGate.
// The consumer is driven by the test (reads when told), so a full ring, a consumer that stops reading (as in
// barrier alignment) and the producer's waiting buffers are all exercised for real.
import { describe, expect, test } from "bun:test";
import { InputGate, type GateItem } from "../src/network/input-gate.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { receiveFromRing, RingSender } from "../src/network/channel-ends.ts";
import { COALESCE_BYTES, RecordWriter, type ChannelEvent } from "../src/network/record-writer.ts";
import { createRing, ringWakeUps } from "../src/network/shared-ring.ts";
import { rng } from "./helpers.ts";

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

function channel(opts: { slots: number; segment: number; pool: number; flushEveryRecord?: boolean }) {
  const ring = createRing(opts.slots, opts.segment);
  const pool = new LocalBufferPool(opts.pool, opts.segment, 0);
  const writer = new RecordWriter(["c"], () => 0, pool, opts.flushEveryRecord ?? false, 10);
  const errors: unknown[] = [];
  writer.connect("c", new RingSender(ring, (buf) => writer.recycle(buf, "c"), (e) => errors.push(e)));
  const gate = new InputGate(["c"]);
  receiveFromRing(ring, "c", gate, (e) => errors.push(e));
  const got: (unknown | { ev: ChannelEvent })[] = [];
  /** Reads everything that has arrived; returns how many items were read. */
  const read = (): number => {
    let n = 0;
    for (let item: GateItem | null = gate.poll(); item !== null; item = gate.poll()) {
      n++;
      if ("event" in item) got.push({ ev: item.event });
      else got.push(...item.records);
    }
    return n;
  };
  return { ring, pool, writer, gate, got, read, errors };
}

describe("local channel over a ring", () => {
  test("records of every size and events arrive in order through a ring much smaller than the data", async () => {
    const next = rng(11);
    const c = channel({ slots: 2, segment: 4096, pool: 6 });
    const sent: unknown[] = [];
    const producer = (async () => {
      for (let i = 0; i < 3000; i++) {
        // Mostly small records, now and then one that spans many buffers (and many ring slots).
        const r = next() < 0.02 ? { i, big: "x".repeat(Math.floor(next() * 40_000)) } : { i, s: "r" + i };
        c.writer.emit(r);
        sent.push(r);
        if (i % 500 === 499) {
          const wm: ChannelEvent = { type: "watermark", timestamp: i };
          c.writer.broadcastEvent(wm);
          sent.push({ ev: wm });
        }
        while (c.writer.backpressured) await c.writer.waitAvailable();
      }
      await c.writer.finish();
    })();
    let done = false;
    void producer.then(() => (done = true));
    for (let rounds = 0; !done || !c.gate.finished; rounds++) {
      if (rounds > 200_000) throw new Error("the channel did not drain");
      c.read();
      await tick();
    }
    c.read();
    sent.push({ ev: { type: "end" } });
    expect(c.got).toEqual(sent);
    expect(c.errors).toEqual([]);
    expect(c.pool.inUse).toBe(0);
  });

  test("a consumer that stops reading fills the ring; the producer is backpressured, loses nothing and resumes", async () => {
    const c = channel({ slots: 3, segment: 4096, pool: 5, flushEveryRecord: true });
    // Produce as a source does: until the writer says stop, letting microtasks (recycles) run in between.
    let i = 0;
    for (let turns = 0; turns < 20; turns++) {
      while (!c.writer.backpressured) c.writer.emit(i++);
      await tick();
    }
    // The consumer has read nothing: 3 buffers fill the ring and the whole pool (5) waits in the sender. The first
    // holds one record (the ring was empty), the other 7 about COALESCE_BYTES each (the records held while the
    // consumer is busy share a chunk; a record here takes at least a byte): little in flight for a consumer that
    // does not read, where whole buffers would hold thousands of these records.
    expect(c.writer.backpressured).toBe(true);
    expect(c.pool.inUse).toBe(5);
    expect(i).toBeGreaterThan(8);
    expect(i).toBeLessThanOrEqual(1 + 7 * (COALESCE_BYTES + 64));
    const end = i + 200;
    expect(c.read()).toBe(3); // the gate sees exactly what is in the ring
    expect(c.read()).toBe(0);
    const producer = (async () => {
      for (; i < end; i++) {
        while (c.writer.backpressured) await c.writer.waitAvailable();
        c.writer.emit(i);
      }
      await c.writer.finish();
    })();
    for (let rounds = 0; !c.gate.finished; rounds++) {
      if (rounds > 100_000) throw new Error("the channel did not drain");
      c.read();
      await tick();
    }
    await producer;
    expect(c.got.filter((x) => typeof x === "number")).toEqual(Array.from({ length: end }, (_, i) => i));
    expect(c.got.at(-1)).toEqual({ ev: { type: "end" } });
  });

  test("the gate drains its channels whenever the task reads, and waits on them only when the task waits: a busy consumer is never woken", async () => {
    const c = channel({ slots: 4, segment: 4096, pool: 8, flushEveryRecord: true });
    const before = ringWakeUps.count;
    for (let i = 0; i < 3; i++) {
      c.writer.emit(i);
      expect(c.read()).toBe(1); // at once: no turn of the event loop needed
    }
    expect(ringWakeUps.count).toBe(before); // nobody waited, nobody was woken
    const woke = c.gate.waitNext();
    c.writer.emit(3);
    expect(ringWakeUps.count).toBe(before + 1);
    await woke;
    expect(c.read()).toBe(1);
    c.writer.emit(4); // the task is reading again: no wake-up
    expect(ringWakeUps.count).toBe(before + 1);
    expect(c.read()).toBe(1);
    expect(c.got).toEqual([0, 1, 2, 3, 4]);
    expect(c.errors).toEqual([]);
  });

  test("a task that waits before its channels are connected is woken by their data (tasks start before wiring)", async () => {
    const gate = new InputGate(["a", "b"]);
    let woke = false;
    const waiting = gate.waitNext().then(() => (woke = true));
    const rings = { a: createRing(2, 256), b: createRing(2, 256) };
    const errors: unknown[] = [];
    for (const ch of ["a", "b"] as const) receiveFromRing(rings[ch], ch, gate, (e) => errors.push(e));
    const pool = new LocalBufferPool(4, 256, 0);
    const writer = new RecordWriter(["b"], () => 0, pool, true, 4);
    writer.connect("b", new RingSender(rings.b, (buf) => writer.recycle(buf, "b"), (e) => errors.push(e)));
    await Promise.resolve();
    expect(woke).toBe(false);
    writer.emit("x"); // into channel b, connected after the task began to wait
    await Promise.race([waiting, new Promise((r) => setTimeout(r, 5000))]);
    expect(woke).toBe(true);
    const item = gate.poll();
    expect(item !== null && "records" in item && item.records).toEqual(["x"]);
    expect(errors).toEqual([]);
  });

  test("finish() resolves only once the end event is in the ring, even when the ring was full", async () => {
    const c = channel({ slots: 1, segment: 4096, pool: 4, flushEveryRecord: true });
    for (let i = 0; i < 3; i++) c.writer.emit(i);
    let finished = false;
    const fin = c.writer.finish().then(() => (finished = true));
    for (let i = 0; i < 5; i++) await tick();
    expect(finished).toBe(false);
    for (let rounds = 0; !c.gate.finished; rounds++) {
      if (rounds > 10_000) throw new Error("the channel did not drain");
      c.read();
      await tick();
    }
    await fin;
    expect(c.got).toEqual([0, 1, 2, { ev: { type: "end" } }]);
  });

  test("records spanning many buffers through rings and pools of several sizes, the consumer reading at random moments", async () => {
    // (The race where the sender's pump ended a microtask after a refilled buffer was queued, which hung a job
    // with 2 MiB records, is caught with real Workers by tests/network.test.ts "records of 2 MiB ...".)
    const next = rng(5);
    for (const [slots, pool] of [[1, 2], [2, 3], [3, 4], [10, 12]] as const) {
      const c = channel({ slots, segment: 4096, pool });
      const records = Array.from({ length: 60 }, (_, i) => ({ i, pad: "p".repeat(Math.floor(next() * 30_000)) }));
      const producer = (async () => {
        for (const r of records) {
          while (c.writer.backpressured) await c.writer.waitAvailable();
          c.writer.emit(r);
          c.writer.flush();
        }
        await c.writer.finish();
      })();
      for (let rounds = 0; !c.gate.finished; rounds++) {
        if (rounds > 100_000) throw new Error(`the channel stalled (ring of ${slots}, pool of ${pool})`);
        if (next() < 0.7) c.read();
        await tick();
      }
      await producer;
      expect(c.got.filter((x) => !(typeof x === "object" && x !== null && "ev" in x))).toEqual(records);
    }
  });

  test("an event too large for a slot fails the producer with a message naming the sizes", async () => {
    const c = channel({ slots: 2, segment: 128, pool: 4 });
    expect(() => c.writer.broadcastEvent({ type: "barrier", checkpointId: 1, timestamp: 0, dir: "/d".repeat(200) })).toThrow(/exceeds the slot size 128/);
  });
});
