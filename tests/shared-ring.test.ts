import { describe, expect, test } from "bun:test";
import type { ChannelEvent } from "../src/network/record-writer.ts";
import { BACKSTOP_MS, createRing, RingReader, ringWakeUps, RingWriter, SLOT_HEADER_BYTES, type RingItem } from "../src/network/shared-ring.ts";
import { checksumStep, eventsAfter, payloadFor, type ConsumerReport, type ProducerReport, type RingJob } from "./fixtures/shared-ring-worker.ts";

const WORKER = new URL("./fixtures/shared-ring-worker.ts", import.meta.url).href;

function ring(slots: number, slotBytes: number): { sab: SharedArrayBuffer; w: RingWriter; r: RingReader } {
  const sab = createRing(slots, slotBytes);
  return { sab, w: new RingWriter(sab), r: new RingReader(sab) };
}

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

function buffer(item: RingItem | null): Uint8Array {
  expect(item?.kind).toBe("buffer");
  return (item as { kind: "buffer"; bytes: Uint8Array }).bytes;
}

/** Rejects after ms: every wait in these tests is bounded. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function tracked(p: Promise<void>): { done: boolean } {
  const state = { done: false };
  p.then(() => (state.done = true));
  return state;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("shared ring, one thread", () => {
  test("items come out in order with their contents; buffers are views into the ring", () => {
    const { sab, w, r } = ring(4, 8);
    expect(w.slots).toBe(4);
    expect(w.slotBytes).toBe(8);
    expect(r.take()).toBeNull();
    expect(w.tryPush(bytes(1, 2, 3))).toBe(true);
    expect(w.tryPush(bytes(9))).toBe(true);
    expect(w.tryPush(bytes(8, 7, 6, 5, 4, 3, 2, 1))).toBe(true);
    const a = buffer(r.take());
    expect([...a]).toEqual([1, 2, 3]);
    expect(a.buffer).toBe(sab);
    r.release();
    expect([...buffer(r.take())]).toEqual([9]);
    r.release();
    expect([...buffer(r.take())]).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    r.release();
    expect(r.take()).toBeNull();
  });

  test("the pushed bytes are copied: changing the source afterwards changes nothing", () => {
    const { w, r } = ring(2, 4);
    const src = bytes(1, 2, 3, 4);
    w.tryPush(src);
    src.fill(0);
    expect([...buffer(r.take())]).toEqual([1, 2, 3, 4]);
  });

  test("a full ring refuses pushes and writes nothing; release frees exactly one slot", () => {
    const { w, r } = ring(3, 16);
    expect(w.free).toBe(3);
    for (let i = 0; i < 3; i++) expect(w.tryPush(bytes(i))).toBe(true);
    expect(w.free).toBe(0);
    expect(w.tryPush(bytes(99))).toBe(false);
    expect(w.tryPushEvent({ type: "end" })).toBe(false);
    // Taking does not free a slot; only release does, one at a time.
    expect([...buffer(r.take())]).toEqual([0]);
    expect([...buffer(r.take())]).toEqual([1]);
    expect(w.free).toBe(0);
    expect(w.tryPush(bytes(99))).toBe(false);
    r.release();
    expect(w.free).toBe(1);
    expect(w.tryPush(bytes(3))).toBe(true);
    expect(w.tryPush(bytes(98))).toBe(false);
    r.release();
    expect(w.free).toBe(1);
    expect([...buffer(r.take())]).toEqual([2]);
    expect([...buffer(r.take())]).toEqual([3]);
    expect(r.take()).toBeNull(); // the refused pushes left no trace
  });

  test("events of all kinds round-trip, in order between buffers", () => {
    const { w, r } = ring(8, 256);
    const watermark = { type: "watermark" as const, timestamp: 1_700_000_000_123 };
    const idle = { type: "watermark" as const, timestamp: -5, idle: true };
    const barrier: ChannelEvent = { type: "barrier", checkpointId: 42, timestamp: 1_700_000_000_456, dir: "/var/tmp/chk/job-ü 1/chk-42" };
    expect(w.tryPushEvent(watermark)).toBe(true);
    expect(w.tryPush(bytes(7))).toBe(true);
    expect(w.tryPushEvent(idle)).toBe(true);
    expect(w.tryPushEvent(barrier)).toBe(true);
    expect(w.tryPushEvent({ type: "end" })).toBe(true);
    expect(r.take()).toEqual({ kind: "event", event: watermark });
    expect([...buffer(r.take())]).toEqual([7]);
    expect(r.take()).toEqual({ kind: "event", event: idle });
    expect(r.take()).toEqual({ kind: "event", event: barrier });
    expect(r.take()).toEqual({ kind: "event", event: { type: "end" } });
    expect(r.take()).toBeNull();
  });

  test("a barrier's dir may fill the slot up to about 64 bytes of overhead; longer throws and writes nothing", () => {
    const { w, r } = ring(2, 128);
    const barrier = (len: number): ChannelEvent => ({ type: "barrier", checkpointId: 123456, timestamp: 1_700_000_000_000, dir: "/".padEnd(len, "d") });
    let longest = 0;
    for (let len = 1; len <= 128; len++) {
      try {
        expect(w.tryPushEvent(barrier(len))).toBe(true);
      } catch {
        break;
      }
      longest = len;
      r.take();
      r.release();
    }
    expect(longest).toBeGreaterThanOrEqual(128 - 64);
    expect(longest).toBeLessThan(128);
    expect(() => w.tryPushEvent(barrier(longest + 1))).toThrow();
    expect(() => w.tryPushEvent(barrier(200))).toThrow();
    expect(w.free).toBe(2);
    expect(r.take()).toBeNull();
    expect(w.tryPushEvent(barrier(longest))).toBe(true);
    expect(r.take()).toEqual({ kind: "event", event: barrier(longest) });
  });

  test("too-long and empty bytes throw, even when the ring is full", () => {
    const { w, r } = ring(1, 4);
    expect(() => w.tryPush(new Uint8Array(5))).toThrow();
    expect(() => w.tryPush(new Uint8Array(0))).toThrow();
    expect(w.tryPush(new Uint8Array(4).fill(4))).toBe(true);
    expect(() => w.tryPush(new Uint8Array(5))).toThrow();
    expect(() => w.tryPush(new Uint8Array(0))).toThrow();
    expect([...buffer(r.take())]).toEqual([4, 4, 4, 4]);
    expect(r.take()).toBeNull();
  });

  test("release with nothing taken and unreleased throws", () => {
    const { w, r } = ring(2, 4);
    expect(() => r.release()).toThrow();
    w.tryPush(bytes(1));
    expect(() => r.release()).toThrow(); // published but not taken
    expect(w.free).toBe(1);
    r.take();
    r.release();
    expect(() => r.release()).toThrow();
    expect(w.free).toBe(2);
  });

  test("several items taken before any release stay intact, and are released in order", () => {
    const { w, r } = ring(4, 4);
    for (let i = 1; i <= 4; i++) w.tryPush(bytes(i, i, i));
    const held = [r.take(), r.take(), r.take()].map(buffer);
    expect(r.unreleased).toBe(3);
    r.release(); // frees item 1's slot
    expect(w.tryPush(bytes(5, 5, 5))).toBe(true);
    expect(w.tryPush(bytes(6))).toBe(false);
    // Items 2 and 3 are still held and unchanged; item 1's slot was reused for item 5.
    expect([...held[1]!]).toEqual([2, 2, 2]);
    expect([...held[2]!]).toEqual([3, 3, 3]);
    expect([...buffer(r.take())]).toEqual([4, 4, 4]);
    expect([...buffer(r.take())]).toEqual([5, 5, 5]);
    expect(r.take()).toBeNull();
    expect(r.unreleased).toBe(4);
    expect(w.free).toBe(0);
    for (let i = 0; i < 4; i++) r.release();
    expect(w.free).toBe(4);
    expect(() => r.release()).toThrow();
  });

  test("counters wrap around: order, contents and free slots stay right across the wrap", () => {
    const slots = 3;
    const sab = createRing(slots, 4);
    // Both counters count modulo slots * floor(2^30 / slots) (see the header comment): start just below it.
    const mod = slots * Math.floor(2 ** 30 / slots);
    const h = new Int32Array(sab, 0, 2);
    h[0] = mod - 2;
    h[1] = mod - 2;
    const w = new RingWriter(sab);
    const r = new RingReader(sab);
    let sent = 0;
    let received = 0;
    for (let round = 0; round < 10; round++) {
      expect(w.free).toBe(slots);
      while (w.tryPush(bytes(sent & 0xff, (sent >> 8) & 0xff))) sent++;
      expect(w.free).toBe(0);
      for (let item = r.take(); item; item = r.take()) {
        expect([...buffer(item)]).toEqual([received & 0xff, (received >> 8) & 0xff]);
        received++;
      }
      while (r.unreleased > 0) r.release();
    }
    expect(sent).toBe(30);
    expect(received).toBe(30);
    expect(Atomics.load(h, 0)).toBe(28); // wrapped: (mod - 2 + 30) mod mod
    expect(Atomics.load(h, 1)).toBe(28);
  });

  test("a reader or writer attached later starts where the ring is", () => {
    const sab = createRing(2, 4);
    const w = new RingWriter(sab);
    const r1 = new RingReader(sab);
    w.tryPush(bytes(1));
    r1.take();
    r1.release();
    w.tryPush(bytes(2));
    const r2 = new RingReader(sab);
    expect([...buffer(r2.take())]).toEqual([2]);
    const w2 = new RingWriter(sab);
    expect(w2.free).toBe(1);
  });

  test("rejects bad sizes and memory that is not a ring", () => {
    expect(() => createRing(0, 4)).toThrow();
    expect(() => createRing(2, 0)).toThrow();
    expect(() => createRing(1.5, 4)).toThrow();
    expect(() => new RingReader(new SharedArrayBuffer(64))).toThrow();
    const sab = createRing(2, 10);
    expect(sab.byteLength).toBe(32 + 2 * (SLOT_HEADER_BYTES + 16));
  });
});

describe("shared ring, waiting", () => {
  test("whenPublished resolves at once when an untaken item is there", async () => {
    const { w, r } = ring(2, 4);
    w.tryPush(bytes(1));
    await within(r.whenPublished(), 200, "whenPublished with an item there");
    await within(r.whenPublished(), 200, "whenPublished again, item still untaken");
  });

  test("whenPublished waits for the writer's next push, not for items already taken", async () => {
    const { w, r } = ring(2, 16);
    w.tryPush(bytes(1));
    r.take(); // taken, not released: does not count as published-and-not-taken
    const p = r.whenPublished();
    const s = tracked(p);
    await sleep(30);
    expect(s.done).toBe(false);
    w.tryPushEvent({ type: "end" });
    await within(p, 1000, "whenPublished after a push");
    expect(r.take()).toEqual({ kind: "event", event: { type: "end" } });
  });

  test("whenFree resolves at once when a slot is free, and otherwise on the reader's release", async () => {
    const { w, r } = ring(2, 4);
    await within(w.whenFree(), 200, "whenFree on an empty ring");
    w.tryPush(bytes(1));
    await within(w.whenFree(), 200, "whenFree with one slot left");
    w.tryPush(bytes(2));
    const p = w.whenFree();
    const s = tracked(p);
    await sleep(30);
    expect(s.done).toBe(false);
    r.take();
    r.take();
    await sleep(30);
    expect(s.done).toBe(false); // taking frees nothing
    r.release();
    await within(p, 1000, "whenFree after a release");
    expect(w.free).toBe(1);
  });

  test("a side wakes the other only for a pending wait: pushes and releases with nobody waiting notify no one", async () => {
    const { w, r } = ring(4, 4);
    const before = ringWakeUps.count;
    w.tryPush(bytes(1));
    r.take();
    r.release();
    expect(ringWakeUps.count).toBe(before);
    const p = r.whenPublished(); // nothing untaken: it waits
    w.tryPush(bytes(2));
    expect(ringWakeUps.count).toBe(before + 1);
    await within(p, 1000, "whenPublished after a push");
    w.tryPush(bytes(3)); // the wait is over
    expect(ringWakeUps.count).toBe(before + 1);
    expect(buffer(r.take())).toEqual(bytes(2));
  });

  test("a waiting reader is woken once, however many items come before it runs; waiting again, it is woken again", async () => {
    const { w, r } = ring(8, 4);
    const before = ringWakeUps.count;
    const p = r.whenPublished();
    // Until the reader's turn comes its wait is over but it has not run: notifying it again would be wasted.
    for (let i = 1; i <= 5; i++) expect(w.tryPush(bytes(i))).toBe(true);
    expect(ringWakeUps.count).toBe(before + 1);
    await within(p, 1000, "whenPublished after five pushes");
    for (let i = 1; i <= 5; i++) {
      expect(buffer(r.take())).toEqual(bytes(i));
      r.release();
    }
    // A new wait raises the flag again: the next push wakes it.
    const q = r.whenPublished();
    w.tryPush(bytes(6));
    expect(ringWakeUps.count).toBe(before + 2);
    await within(q, 1000, "the second wait");
    expect(buffer(r.take())).toEqual(bytes(6));
  });

  test("a writer that finds the ring full is woken once, when half of the ring is free", async () => {
    const { w, r } = ring(4, 4);
    for (let i = 0; i < 4; i++) expect(w.tryPush(bytes(i + 1))).toBe(true);
    const before = ringWakeUps.count;
    const p = w.whenFree();
    const s = tracked(p);
    r.take();
    r.release();
    await sleep(30);
    expect(s.done).toBe(false);
    expect(ringWakeUps.count).toBe(before);
    r.take();
    r.release();
    await within(p, 1000, "whenFree after half the ring was released");
    expect(ringWakeUps.count).toBe(before + 1);
    r.take();
    r.release();
    expect(ringWakeUps.count).toBe(before + 1);
    expect(w.free).toBe(3);
  });

  test("a waiter started before several changes still resolves, and later waiters too", async () => {
    const { w, r } = ring(1, 4);
    const waits = [r.whenPublished(), r.whenPublished()];
    w.tryPush(bytes(1));
    await within(Promise.all(waits), 1000, "two whenPublished");
    r.take();
    const free = w.whenFree();
    r.release();
    await within(free, 1000, "whenFree after release");
  });
});

describe("shared ring, a wake-up that never comes", () => {
  // The header's waiter words (see shared-ring.ts): cleared here before the other side acts, so that it sees nobody
  // waiting and does not notify, as if the runtime had lost its notify.
  const PUBLISHED_WAITERS = 6;
  const WAKE_WRITER_AT = 7;

  test("a reader whose wake-up is lost still sees the pushed item within the backstop", async () => {
    const { sab, w, r } = ring(4, 4);
    const h = new Int32Array(sab, 0, 8);
    const p = r.whenPublished();
    const s = tracked(p);
    await sleep(10);
    expect(Atomics.load(h, PUBLISHED_WAITERS)).toBe(1);
    Atomics.store(h, PUBLISHED_WAITERS, 0);
    const before = ringWakeUps.count;
    const at = performance.now();
    w.tryPush(bytes(7));
    expect(ringWakeUps.count).toBe(before); // no notify went out
    expect(s.done).toBe(false);
    await within(p, 5000, "whenPublished after a lost wake-up");
    expect(performance.now() - at).toBeLessThan(BACKSTOP_MS * 10); // a tick or two, with room for a loaded machine
    expect(buffer(r.take())).toEqual(bytes(7));
  });

  test("a writer whose wake-up is lost still finds the freed slots within the backstop", async () => {
    const { sab, w, r } = ring(2, 4);
    const h = new Int32Array(sab, 0, 8);
    w.tryPush(bytes(1));
    w.tryPush(bytes(2));
    const p = w.whenFree();
    await sleep(10);
    expect(Atomics.load(h, WAKE_WRITER_AT)).not.toBe(0);
    Atomics.store(h, WAKE_WRITER_AT, 0);
    const before = ringWakeUps.count;
    r.take();
    r.release();
    r.take();
    r.release();
    expect(ringWakeUps.count).toBe(before);
    await within(p, 5000, "whenFree after a lost wake-up");
    expect(w.free).toBe(2);
  });

  test("an idle wait shares one runtime wait across backstop ticks, and a push still ends it", async () => {
    const { sab, w, r } = ring(4, 4);
    const h = new Int32Array(sab, 0, 8);
    const p = r.whenPublished();
    const s = tracked(p);
    await sleep(BACKSTOP_MS * 3.5); // several ticks: the reader looked again and went on waiting each time
    expect(s.done).toBe(false);
    // One waiter on the published count, not one per tick (index 0; a notify without a publish: the reader looks,
    // finds nothing and waits again).
    expect(Atomics.notify(h, 0)).toBe(1);
    await sleep(10);
    expect(s.done).toBe(false);
    w.tryPush(bytes(3));
    await within(p, 1000, "whenPublished after the push");
    expect(buffer(r.take())).toEqual(bytes(3));
  });
});

/** Starts a job in a Worker; resolves with its report. */
function run<T>(worker: Worker, job: RingJob): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent) => (e.data.error ? reject(new Error(`${job.role}: ${e.data.error}`)) : resolve(e.data as T));
    worker.onerror = (e) => reject(new Error(`${job.role} worker error: ${e.message}`));
    worker.postMessage(job);
  });
}

/** What the consumer must see for n buffers of a seed: counts and the checksum, computed here. */
function expected(n: number, seed: number, slotBytes: number): { buffers: number; bytes: number; events: number; checksum: number } {
  let bytesTotal = 0;
  let events = 1; // end
  let checksum = 0x811c9dc5;
  for (let i = 0; i < n; i++) {
    const b = payloadFor(seed, i, slotBytes);
    bytesTotal += b.length;
    checksum = checksumStep(checksum, b);
    events += eventsAfter(i).length;
  }
  return { buffers: n, bytes: bytesTotal, events, checksum };
}

async function twoWorkers(job: Omit<RingJob, "role">, timeoutMs: number): Promise<{ producer: ProducerReport; consumer: ConsumerReport }> {
  const producer = new Worker(WORKER);
  const consumer = new Worker(WORKER);
  try {
    // Consumer first, so it waits in whenPublished before anything is there.
    const c = run<ConsumerReport>(consumer, { ...job, role: "consumer" });
    await sleep(20);
    const p = run<ProducerReport>(producer, { ...job, role: "producer" });
    const [pr, cr] = await within(Promise.all([p, c]), timeoutMs, "producer and consumer workers");
    return { producer: pr, consumer: cr };
  } finally {
    producer.terminate();
    consumer.terminate();
  }
}

describe("shared ring between two Workers", () => {
  test("20,000 buffers of 1..slotBytes bytes and events through 4 slots arrive intact and in order", async () => {
    const slots = 4;
    const slotBytes = 300;
    const n = 20_000;
    const seed = 12345;
    const sab = createRing(slots, slotBytes);
    const { producer, consumer } = await twoWorkers({ sab, n, seed }, 15_000);
    const want = expected(n, seed, slotBytes);
    expect(consumer.firstMismatch).toBeNull();
    expect(consumer.mismatches).toBe(0);
    expect(consumer.buffers).toBe(want.buffers);
    expect(consumer.bytes).toBe(want.bytes);
    expect(consumer.events).toBe(want.events);
    expect(want.events).toBe(1 + 207 + 20); // watermarks, barriers, end: the schedule is not vacuous
    expect(consumer.checksum).toBe(want.checksum);
    expect(consumer.endLast).toBe(true);
    expect(consumer.maxHeld).toBeLessThanOrEqual(slots);
    expect(producer.pushed).toBe(want.buffers + want.events);
    // Everything was released: a new writer sees the ring empty.
    expect(new RingWriter(sab).free).toBe(slots);
    expect(new RingReader(sab).take()).toBeNull();
  }, 20_000);

  test("a slow consumer holds the producer to at most `slots` items outstanding", async () => {
    const slots = 4;
    const slotBytes = 64;
    const n = 150;
    const seed = 777;
    const sab = createRing(slots, slotBytes);
    const side = new SharedArrayBuffer(4);
    const { producer, consumer } = await twoWorkers({ sab, n, seed, side, sleepMs: 2 }, 15_000);
    const want = expected(n, seed, slotBytes);
    expect(consumer.firstMismatch).toBeNull(); // includes: held buffers unchanged while the consumer slept
    expect(consumer.checksum).toBe(want.checksum);
    expect(consumer.endLast).toBe(true);
    expect(producer.pushed).toBe(want.buffers + want.events);
    // Per the consumer's own release count, never more than `slots` pushed and unreleased; and the ring did fill.
    expect(producer.maxOutstanding).toBeLessThanOrEqual(slots);
    expect(producer.maxOutstanding).toBe(slots);
    expect(consumer.maxHeld).toBe(slots);
    expect(producer.refused).toBeGreaterThan(10); // it really was held back, waiting in whenFree
    expect(consumer.batches).toBeLessThan(producer.pushed); // the consumer took several items at once
  }, 20_000);
});
