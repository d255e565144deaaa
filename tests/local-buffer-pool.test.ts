import { describe, expect, test } from "bun:test";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";

/** Lets pending promise callbacks (and setImmediate continuations) run. */
async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

function tracked(p: Promise<void>): { done: boolean } {
  const state = { done: false };
  p.then(() => (state.done = true));
  return state;
}

function take(pool: LocalBufferPool, n: number): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (let i = 0; i < n; i++) {
    const b = pool.request();
    expect(b).not.toBeNull();
    out.push(b!);
  }
  return out;
}

describe("LocalBufferPool", () => {
  test("creates buffers lazily, up to its size, each of the segment size and distinct", () => {
    const pool = new LocalBufferPool(3, 128, 0);
    expect(pool.inUse).toBe(0);
    expect(pool.available).toBe(true);
    const a = pool.request()!;
    expect(a).toBeInstanceOf(ArrayBuffer);
    expect(a.byteLength).toBe(128);
    expect(pool.inUse).toBe(1);
    const [b, c] = take(pool, 2);
    expect(new Set([a, b, c]).size).toBe(3);
    for (const x of [b!, c!]) expect(x.byteLength).toBe(128);
    expect(pool.inUse).toBe(3);
    expect(pool.available).toBe(false);
    expect(pool.request()).toBeNull();
    expect(pool.request()).toBeNull();
    expect(pool.inUse).toBe(3);
  });

  test("a recycled buffer is handed out again instead of creating one", () => {
    const pool = new LocalBufferPool(2, 64, 0);
    const a = pool.request()!;
    pool.recycle(a);
    expect(pool.inUse).toBe(0);
    expect(pool.request()).toBe(a);
    const b = pool.request()!;
    expect(b).not.toBe(a);
    expect(pool.request()).toBeNull();
    pool.recycle(b);
    pool.recycle(a);
    // Only these two buffers ever exist without overdraft.
    const again = take(pool, 2);
    expect(new Set(again)).toEqual(new Set([a, b]));
    expect(pool.request()).toBeNull();
  });

  test("request returns null only after size + overdraft buffers are out", () => {
    const pool = new LocalBufferPool(2, 32, 3);
    const got = take(pool, 5);
    expect(new Set(got).size).toBe(5);
    for (const b of got) expect(b.byteLength).toBe(32);
    expect(pool.inUse).toBe(5);
    expect(pool.request()).toBeNull();
    expect(pool.inUse).toBe(5);
  });

  test("recycles pay back the overdraft first (those buffers are dropped); available only when no overdraft is out and a buffer is free", () => {
    const pool = new LocalBufferPool(2, 32, 2);
    const [b1, b2, o1, o2] = take(pool, 4);
    expect(pool.available).toBe(false);
    expect(pool.inUse).toBe(4);

    // The first recycles pay back the overdraft: the buffers are dropped, nothing becomes free.
    pool.recycle(b1!);
    expect(pool.inUse).toBe(3);
    expect(pool.available).toBe(false);
    pool.recycle(b2!);
    expect(pool.inUse).toBe(2);
    expect(pool.available).toBe(false);
    // With the overdraft paid back and the pool still empty, a request takes overdraft again.
    const o3 = pool.request()!;
    expect(o3).not.toBeNull();
    expect(pool.inUse).toBe(3);
    pool.recycle(o3);
    expect(pool.inUse).toBe(2);
    expect(pool.available).toBe(false);

    pool.recycle(o1!);
    expect(pool.inUse).toBe(1);
    expect(pool.available).toBe(true);
    // The free buffer is the one just recycled: b1 and b2 were dropped.
    expect(pool.request()).toBe(o1!);
    expect(pool.available).toBe(false);
    pool.recycle(o1!);
    pool.recycle(o2!);
    expect(pool.inUse).toBe(0);
    expect(pool.available).toBe(true);
    const back = take(pool, 2);
    expect(new Set(back)).toEqual(new Set([o1!, o2!]));
    // Two regular buffers exist: the next ones are overdraft again (new buffers, not the dropped ones).
    const more = take(pool, 2);
    for (const m of more) expect([b1, b2, o1, o2, o3]).not.toContain(m);
    expect(pool.request()).toBeNull();
  });

  test("inUse counts buffers out of the pool across request/recycle sequences", () => {
    const pool = new LocalBufferPool(4, 16, 1);
    const out: ArrayBuffer[] = [];
    let expected = 0;
    // A deterministic mix of requests and recycles; the model: at most size + overdraft out at once.
    let s = 12345;
    const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 500; i++) {
      if (rand() < 0.55) {
        const b = pool.request();
        if (expected < 5) {
          expect(b).not.toBeNull();
          out.push(b!);
          expected++;
        } else expect(b).toBeNull();
      } else if (out.length > 0) {
        const idx = Math.floor(rand() * out.length);
        pool.recycle(out.splice(idx, 1)[0]!);
        expected--;
      }
      expect(pool.inUse).toBe(expected);
    }
  });

  test("waitAvailable resolves at once when a buffer can be had", async () => {
    const pool = new LocalBufferPool(1, 16, 0);
    const w = tracked(pool.waitAvailable());
    await settle();
    expect(w.done).toBe(true);
  });

  test("waitAvailable resolves only after a recycle makes a buffer available", async () => {
    const pool = new LocalBufferPool(2, 16, 1);
    const [a, b, o] = take(pool, 3);
    const w1 = tracked(pool.waitAvailable());
    const w2 = tracked(pool.waitAvailable());
    await settle();
    expect([w1.done, w2.done]).toEqual([false, false]);
    // Paying back the overdraft does not make a buffer available.
    pool.recycle(o!);
    await settle();
    expect([w1.done, w2.done]).toEqual([false, false]);
    pool.recycle(a!);
    await settle();
    expect([w1.done, w2.done]).toEqual([true, true]);
    // Taken again: a new waiter waits again.
    expect(pool.request()).toBe(a!);
    const w3 = tracked(pool.waitAvailable());
    await settle();
    expect(w3.done).toBe(false);
    pool.recycle(b!);
    await settle();
    expect(w3.done).toBe(true);
  });

  test("allRecycled resolves only when every buffer, overdraft included, is back", async () => {
    const pool = new LocalBufferPool(2, 16, 2);
    const done0 = tracked(pool.allRecycled());
    await settle();
    expect(done0.done).toBe(true);

    const bufs = take(pool, 4);
    const all = tracked(pool.allRecycled());
    for (let i = 0; i < bufs.length; i++) {
      await settle();
      expect(all.done).toBe(false);
      pool.recycle(bufs[i]!);
    }
    await settle();
    expect(all.done).toBe(true);
    expect(pool.inUse).toBe(0);
  });

  test("allRecycled keeps waiting while a buffer taken after the call is out", async () => {
    const pool = new LocalBufferPool(2, 16, 0);
    const a = pool.request()!;
    const all = tracked(pool.allRecycled());
    const b = pool.request()!;
    pool.recycle(a);
    await settle();
    expect(all.done).toBe(false);
    pool.recycle(b);
    await settle();
    expect(all.done).toBe(true);
  });
});
