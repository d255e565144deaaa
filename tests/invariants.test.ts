// Budgets are asserted, not clamped (issue 20): each test breaks one invariant on purpose and checks that it
// fails loudly with "internal:" and the numbers, and that the same component used correctly never trips it.
import { describe, expect, test } from "bun:test";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { createPartitioner } from "../src/network/partitioners.ts";
import { RecordWriter, type BufferSender } from "../src/network/record-writer.ts";
import { createRing, RingReader, RingWriter } from "../src/network/shared-ring.ts";
import { keyGroupRange, operatorIndexForKeyGroup } from "../src/state/key-groups.ts";
import { InternalError } from "../src/util/assert.ts";

/** The InternalError fn throws (fails the test if it throws nothing or something else). */
function internal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InternalError);
    expect((err as Error).message).toStartWith("internal: ");
    return (err as Error).message;
  }
  throw new Error("expected an internal error, nothing was thrown");
}

describe("LocalBufferPool", () => {
  test("a buffer recycled twice fails with the pool's numbers; the first recycle is fine", () => {
    const pool = new LocalBufferPool(2, 64, 0);
    const a = pool.request()!;
    pool.request();
    pool.recycle(a);
    expect(internal(() => pool.recycle(a))).toBe(
      "internal: buffer pool: recycled a buffer that is not out (recycled twice, or not from this pool); 1 out, 1 free, 2 of 2 created, 0 of 0 overdraft",
    );
    expect(pool.inUse).toBe(1); // the books are unchanged by the refused recycle
  });

  test("a dropped overdraft buffer recycled again is caught too", () => {
    const pool = new LocalBufferPool(1, 64, 1);
    const a = pool.request()!;
    const b = pool.request()!; // overdraft
    pool.recycle(b); // drops an overdraft buffer
    expect(internal(() => pool.recycle(b))).toMatch(/recycled a buffer that is not out .*1 out, 0 free, 1 of 1 created, 0 of 1 overdraft/);
    pool.recycle(a);
    expect(pool.inUse).toBe(0);
  });

  test("a buffer of another size, or one the pool never handed out, is refused", () => {
    const pool = new LocalBufferPool(2, 64, 0);
    pool.request();
    expect(internal(() => pool.recycle(new ArrayBuffer(32)))).toBe("internal: buffer pool: recycled a buffer of 32 bytes, its segments are 64 bytes");
    expect(internal(() => pool.recycle(new ArrayBuffer(64)))).toMatch(/not out .*1 out, 0 free, 1 of 2 created/);
  });
});

describe("RecordWriter", () => {
  function writer() {
    const pool = new LocalBufferPool(8, 64, 0);
    const held: { buf: ArrayBuffer; channel: string }[] = [];
    const sender: BufferSender = { buffer: (channel, buf) => held.push({ buf, channel }), event: () => {} };
    const w = new RecordWriter(["a", "b"], createPartitioner("forward", 0, 2, 128), pool, true);
    w.connect("a", sender);
    w.connect("b", sender);
    return { w, pool, held };
  }

  test("a buffer recycled for a channel that holds none fails with the counts (it was clamped before)", () => {
    const { w, held } = writer();
    w.emit("x"); // forward: channel "a", flushed at once
    expect(held.map((h) => h.channel)).toEqual(["a"]);
    expect(internal(() => w.recycle(held[0]!.buf, "b"))).toBe("internal: record writer: a buffer recycled for b, which holds 0 buffers (pool: 1 of 8 in use)");
    w.recycle(held[0]!.buf, "a"); // the right channel: fine
    expect(internal(() => w.recycle(held[0]!.buf, "a"))).toMatch(/recycled for a, which holds 0 buffers/);
  });

  test("a buffer recycled for a channel the writer does not have fails naming it", () => {
    const { w, held } = writer();
    w.emit("x");
    expect(internal(() => w.recycle(held[0]!.buf, "zz"))).toBe("internal: record writer: a buffer recycled for zz, which is not an output channel of this writer");
  });
});

describe("shared ring", () => {
  /** The ring's header as Int32s: [0] published, [1] released. */
  const header = (sab: SharedArrayBuffer) => new Int32Array(sab, 0, 8);

  test("a published counter more than `slots` ahead of released fails both ends with the counters", () => {
    const sab = createRing(4, 16);
    const w = new RingWriter(sab);
    const r = new RingReader(sab);
    expect(w.tryPush(new Uint8Array([1]))).toBe(true);
    expect(r.take()?.kind).toBe("buffer");
    r.release();
    Atomics.store(header(sab), 0, 7); // published 7, released 1: 6 in a ring of 4
    expect(internal(() => r.take())).toMatch(/^internal: ring: 6 published ahead of released of 4 slots, 0 taken \(published 7, released 1, modulo \d+\)$/);
    Atomics.store(header(sab), 1, 1000); // released far beyond what the writer published
    expect(internal(() => w.free)).toMatch(/^internal: ring: \d+ slots in use of 4 \(published 1, released 1000, modulo \d+\)$/);
  });

  test("a corrupt slot header fails naming the slot, its kind and length", () => {
    const sab = createRing(2, 16);
    const w = new RingWriter(sab);
    const r = new RingReader(sab);
    expect(w.tryPush(new Uint8Array([1, 2, 3]))).toBe(true);
    new Int32Array(sab)[(32 >> 2) + 1] = 99; // slot 0's length
    expect(internal(() => r.take())).toBe("internal: corrupt ring slot 0: kind 1, length 99 (slots hold 1..16 bytes)");
  });

  test("release() without a taken item fails with the counters", () => {
    const sab = createRing(2, 16);
    const w = new RingWriter(sab);
    const r = new RingReader(sab);
    w.tryPush(new Uint8Array([1]));
    expect(internal(() => r.release())).toBe("internal: ring: release() with no item taken and unreleased (released 0, 1 published and not taken)");
  });
});

describe("key groups", () => {
  test("a key group outside 0..maxParallelism-1 or a parallelism above maxParallelism fails with the numbers", () => {
    expect(internal(() => operatorIndexForKeyGroup(128, 2, 128))).toBe(
      "internal: key group 128 of max parallelism 128, parallelism 2: need 0 <= key group < max parallelism and 1 <= parallelism <= max parallelism",
    );
    expect(internal(() => operatorIndexForKeyGroup(-1, 2, 128))).toMatch(/key group -1 of max parallelism 128/);
    expect(internal(() => operatorIndexForKeyGroup(3, 200, 128))).toMatch(/parallelism 200/);
    expect(operatorIndexForKeyGroup(127, 2, 128)).toBe(1);
  });

  test("a key group range for a subtask outside its parallelism fails with the numbers", () => {
    expect(internal(() => keyGroupRange(2, 2, 128))).toBe(
      "internal: key group range of subtask 2 of parallelism 2, max parallelism 128: need 0 <= subtask < parallelism <= max parallelism",
    );
    expect(internal(() => keyGroupRange(0, 300, 128))).toMatch(/parallelism 300, max parallelism 128/);
    expect(keyGroupRange(1, 2, 128)).toEqual({ start: 64, end: 127 });
  });
});

describe("RemoteReceiver credit", () => {
  const producer = { resourceId: "tm-p", dataHost: "127.0.0.1", dataPort: 1 };
  const task = { deployment: {} as never, post() {}, fail() {} };

  test("arrivals spend credit and come back as credit; a network buffer returned twice breaks the channel's books", async () => {
    const { RemoteReceiver } = await import("../src/network/remote-receiver.ts");
    const sent: unknown[][] = [];
    const r = new RemoteReceiver(64, (_to, frame) => sent.push(frame));
    const gate = r.newGate(0);
    r.add("j|0|0|0", task, producer, gate, 2, createRing(4, 64));
    expect(sent).toEqual([[2, "j|0|0|0", 2]]); // the partition request: 2 credits
    r.onData("j|0|0|0", new Uint8Array([1, 2, 3]), 0); // straight into the ring: credit again at once
    await Promise.resolve();
    expect(sent[1]).toEqual([2, "j|0|0|0", 1]);
    // The same network buffer granted again (a double recycle) makes 3 credits out of 2 buffers.
    const ri = (r as unknown as { inputs: Map<string, { free: ArrayBuffer[] }> }).inputs.get("j|0|0|0")!;
    const grant = (r as unknown as { grant(ri: unknown, bufs: ArrayBuffer[]): void }).grant.bind(r);
    expect(internal(() => grant(ri, [ri.free[0]!]))).toBe("internal: remote input j|0|0|0: 3 credit + 0 waiting != 2 exclusive + 0 floating buffers");
  });
});
