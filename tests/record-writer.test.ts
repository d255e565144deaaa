import { describe, expect, test } from "bun:test";
import { Unpackr } from "msgpackr";
import { createPartitioner, type Partitioner } from "../src/network/partitioners.ts";
import { BATCH_RECORDS, RecordWriter, type ChannelSender } from "../src/network/record-writer.ts";
import { INITIAL_CREDIT } from "../src/runtime/worker-protocol.ts";

type Sent = { type: "data"; channel: string; bytes: Uint8Array } | { type: "end"; channel: string };

/** A ChannelSender that records every call, in order. */
class FakeSender implements ChannelSender {
  readonly log: Sent[] = [];
  data(channel: string, bytes: Uint8Array): void {
    this.log.push({ type: "data", channel, bytes });
  }
  end(channel: string): void {
    this.log.push({ type: "end", channel });
  }
  batches(channel?: string): Uint8Array[] {
    return this.log.filter((s): s is Extract<Sent, { type: "data" }> => s.type === "data" && (channel === undefined || s.channel === channel)).map((s) => s.bytes);
  }
  ends(): string[] {
    return this.log.filter((s) => s.type === "end").map((s) => s.channel);
  }
}

/** Decodes each batch on its own, as a consumer that has seen nothing before it would. */
function decodeEach(batches: Uint8Array[]): unknown[][] {
  return batches.map((b) => {
    const records = new Unpackr({ useRecords: true }).unpack(b);
    expect(Array.isArray(records)).toBe(true);
    return records as unknown[];
  });
}

const toChannel0: Partitioner = () => 0;

/** Lets pending promise callbacks run. */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

function tracked(p: Promise<void>): { done: boolean } {
  const state = { done: false };
  p.then(() => (state.done = true));
  return state;
}

describe("RecordWriter", () => {
  test("a partly filled batch is not sent until it is full or flushed", () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["c0"], toChannel0, sender, false);
    for (let i = 0; i < BATCH_RECORDS - 1; i++) w.emit(i);
    expect(sender.log).toEqual([]);
    w.emit(BATCH_RECORDS - 1);
    expect(sender.batches().length).toBe(1);
    expect(decodeEach(sender.batches())).toEqual([Array.from({ length: BATCH_RECORDS }, (_, i) => i)]);
    w.emit("x");
    w.emit("y");
    expect(sender.batches().length).toBe(1);
    w.flush();
    expect(decodeEach(sender.batches())[1]).toEqual(["x", "y"]);
    // Flushing with nothing buffered sends nothing.
    w.flush();
    expect(sender.batches().length).toBe(2);
    expect(w.recordsOut).toBe(BATCH_RECORDS + 2);
  });

  test("sends at most INITIAL_CREDIT batches, then nothing until credit arrives", async () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["c0"], toChannel0, sender, false);
    const extra = 3;
    const total = (INITIAL_CREDIT + extra) * BATCH_RECORDS;
    for (let i = 0; i < total; i++) w.emit(i);
    expect(sender.batches().length).toBe(INITIAL_CREDIT);
    expect(w.backpressured).toBe(true);

    // Emitting and flushing more does not bypass the credit.
    w.emit(total);
    w.flush();
    expect(sender.batches().length).toBe(INITIAL_CREDIT);

    const avail = tracked(w.waitAvailable());
    await tick();
    expect(avail.done).toBe(false);

    // Credit for one batch at a time: exactly one more batch each time.
    for (let k = 1; k <= extra; k++) {
      w.addCredit("c0", 1);
      expect(sender.batches().length).toBe(INITIAL_CREDIT + k);
      expect(w.backpressured).toBe(true);
      await tick();
      expect(avail.done).toBe(false);
    }
    w.addCredit("c0", 1); // the flushed 1-record batch
    expect(sender.batches().length).toBe(INITIAL_CREDIT + extra + 1);
    expect(w.backpressured).toBe(false);
    await tick();
    expect(avail.done).toBe(true);

    // All records, in order, in the batches as decoded.
    expect(decodeEach(sender.batches()).flat()).toEqual(Array.from({ length: total + 1 }, (_, i) => i));
  });

  test("spare credit lets later batches go out immediately", () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["c0"], toChannel0, sender, true);
    for (let i = 0; i < INITIAL_CREDIT; i++) w.emit(i);
    expect(sender.batches().length).toBe(INITIAL_CREDIT);
    w.addCredit("c0", 3);
    expect(w.backpressured).toBe(false);
    for (let i = 0; i < 3; i++) w.emit(100 + i);
    expect(sender.batches().length).toBe(INITIAL_CREDIT + 3);
    w.emit(200);
    expect(sender.batches().length).toBe(INITIAL_CREDIT + 3);
    expect(w.backpressured).toBe(true);
  });

  test("waitAvailable resolves at once when nothing is held back", async () => {
    const w = new RecordWriter(["c0"], toChannel0, new FakeSender(), false);
    expect(w.backpressured).toBe(false);
    const avail = tracked(w.waitAvailable());
    await tick();
    expect(avail.done).toBe(true);
  });

  test("credit is per channel; waitAvailable waits for every channel", async () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["a", "b"], (r) => (r as { to: number }).to, sender, true);
    for (let i = 0; i < INITIAL_CREDIT + 1; i++) w.emit({ to: 0, i });
    for (let i = 0; i < INITIAL_CREDIT + 2; i++) w.emit({ to: 1, i });
    expect(sender.batches("a").length).toBe(INITIAL_CREDIT);
    expect(sender.batches("b").length).toBe(INITIAL_CREDIT);
    expect(w.backpressured).toBe(true);
    const avail = tracked(w.waitAvailable());

    w.addCredit("a", 5);
    expect(sender.batches("a").length).toBe(INITIAL_CREDIT + 1);
    expect(sender.batches("b").length).toBe(INITIAL_CREDIT);
    expect(w.backpressured).toBe(true);
    await tick();
    expect(avail.done).toBe(false);

    // Credit for an unknown channel is ignored.
    w.addCredit("nope", 10);
    expect(w.hasChannel("nope")).toBe(false);
    expect(w.hasChannel("a")).toBe(true);
    expect(w.backpressured).toBe(true);

    w.addCredit("b", 1);
    expect(w.backpressured).toBe(true);
    w.addCredit("b", 1);
    expect(w.backpressured).toBe(false);
    await tick();
    expect(avail.done).toBe(true);
    expect(decodeEach(sender.batches("a")).flat()).toEqual(Array.from({ length: INITIAL_CREDIT + 1 }, (_, i) => ({ to: 0, i })));
    expect(decodeEach(sender.batches("b")).flat()).toEqual(Array.from({ length: INITIAL_CREDIT + 2 }, (_, i) => ({ to: 1, i })));
  });

  test("every waiter is released", async () => {
    const w = new RecordWriter(["c0"], toChannel0, new FakeSender(), true);
    for (let i = 0; i <= INITIAL_CREDIT; i++) w.emit(i);
    const a = tracked(w.waitAvailable());
    const b = tracked(w.waitAvailable());
    w.addCredit("c0", 1);
    await tick();
    expect([a.done, b.done]).toEqual([true, true]);
  });

  test("batches decode back to the records, in order, per channel (hash partitioning, record-shaped objects)", () => {
    const sender = new FakeSender();
    const n = 4;
    const ids = Array.from({ length: n }, (_, i) => `job|0|0|${i}`);
    const part = createPartitioner("hash", 0, n, 128, (r: { word: string }) => r.word);
    const w = new RecordWriter(ids, part, sender, false);
    const records = Array.from({ length: 3000 }, (_, i) => ({ word: `w${i % 37}`, count: i, tags: i % 5 === 0 ? ["x"] : [], nested: { ok: i % 2 === 0 } }));
    const expected = new Map<string, unknown[]>(ids.map((id) => [id, []]));
    for (const r of records) {
      w.emit(r);
      expected.get(ids[part(r)]!)!.push(r);
    }
    w.flush();
    // Hand out plenty of credit so nothing is held back.
    for (const id of ids) w.addCredit(id, 100);
    expect(w.backpressured).toBe(false);
    for (const id of ids) {
      const decoded = decodeEach(sender.batches(id));
      for (const batch of decoded) expect(batch.length).toBeLessThanOrEqual(BATCH_RECORDS);
      expect(decoded.flat()).toEqual(expected.get(id)!);
    }
    expect(w.recordsOut).toBe(records.length);
  });

  test("one consumer-side Unpackr decodes interleaved batches of two independent producers", () => {
    // A consumer task reads all its input channels with one Unpackr, while each producer packs with its own Packr.
    const s1 = new FakeSender();
    const s2 = new FakeSender();
    const w1 = new RecordWriter(["p1"], toChannel0, s1, true);
    const w2 = new RecordWriter(["p2"], toChannel0, s2, true);
    const a = [{ x: 1, y: "a" }, { x: 2, y: "b" }, { name: "n", v: [1, 2] }];
    const b = [{ name: "other", v: [] }, { x: 10, y: "z" }, { q: true }];
    for (let i = 0; i < 3; i++) {
      w1.emit(a[i]);
      w2.emit(b[i]);
    }
    const unpackr = new Unpackr({ useRecords: true });
    const got: unknown[] = [];
    const b1 = s1.batches();
    const b2 = s2.batches();
    for (let i = 0; i < 3; i++) {
      got.push(...(unpackr.unpack(b1[i]!) as unknown[]));
      got.push(...(unpackr.unpack(b2[i]!) as unknown[]));
    }
    expect(got).toEqual([a[0], b[0], a[1], b[1], a[2], b[2]]);
  });

  test("sent batches are standalone copies (transferable, not overwritten by later packing)", () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["c0"], toChannel0, sender, true);
    w.emit({ first: "record", n: 1 });
    const [first] = sender.batches();
    const snapshot = Uint8Array.from(first!);
    expect(first!.byteOffset).toBe(0);
    expect(first!.byteLength).toBe(first!.buffer.byteLength);
    w.emit({ second: "a different and longer record", n: 2, more: [1, 2, 3] });
    w.emit({ first: "record", n: 3 });
    expect(Uint8Array.from(first!)).toEqual(snapshot);
    const all = sender.batches();
    expect(new Set(all.map((b) => b.buffer)).size).toBe(all.length);
    expect(decodeEach(all)).toEqual([[{ first: "record", n: 1 }], [{ second: "a different and longer record", n: 2, more: [1, 2, 3] }], [{ first: "record", n: 3 }]]);
  });

  test("broadcast sends every record to every channel", () => {
    const sender = new FakeSender();
    const ids = ["a", "b", "c"];
    const w = new RecordWriter(ids, createPartitioner("broadcast", 0, 3, 128), sender, false);
    const records = Array.from({ length: BATCH_RECORDS + 10 }, (_, i) => [i, `v${i}`]);
    for (const r of records) w.emit(r);
    w.flush();
    for (const id of ids) expect(decodeEach(sender.batches(id)).flat()).toEqual(records);
    expect(w.recordsOut).toBe(records.length);
  });

  test("rebalance spreads records round-robin over the channels", () => {
    const sender = new FakeSender();
    const ids = ["a", "b", "c"];
    const w = new RecordWriter(ids, createPartitioner("rebalance", 0, 3, 128), sender, false);
    for (let i = 0; i < 30; i++) w.emit(i);
    w.flush();
    const perChannel = ids.map((id) => decodeEach(sender.batches(id)).flat() as number[]);
    expect(perChannel.map((c) => c.length)).toEqual([10, 10, 10]);
    expect(perChannel.flat().sort((x, y) => x - y)).toEqual(Array.from({ length: 30 }, (_, i) => i));
  });

  test("flushEveryRecord seals each record in its own batch", () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["c0"], toChannel0, sender, true);
    for (let i = 0; i < INITIAL_CREDIT; i++) w.emit({ i });
    expect(decodeEach(sender.batches())).toEqual(Array.from({ length: INITIAL_CREDIT }, (_, i) => [{ i }]));
    w.emit({ i: INITIAL_CREDIT });
    expect(sender.batches().length).toBe(INITIAL_CREDIT);
    expect(w.backpressured).toBe(true);
    w.addCredit("c0", 1);
    expect(decodeEach(sender.batches()).at(-1)).toEqual([{ i: INITIAL_CREDIT }]);
  });

  test("finish flushes partial batches and sends END on every channel after all data", async () => {
    const sender = new FakeSender();
    const ids = ["a", "b", "c"];
    const w = new RecordWriter(ids, (r) => (r as number) % 3, sender, false);
    for (let i = 0; i < 10; i++) w.emit(i);
    await w.finish();
    expect(sender.ends().sort()).toEqual([...ids].sort());
    const firstEnd = sender.log.findIndex((s) => s.type === "end");
    expect(sender.log.slice(firstEnd).every((s) => s.type === "end")).toBe(true);
    ids.forEach((id, c) => {
      expect(decodeEach(sender.batches(id)).flat()).toEqual(Array.from({ length: 10 }, (_, i) => i).filter((i) => i % 3 === c));
    });
  });

  test("finish on a channel that received nothing still sends END", async () => {
    const sender = new FakeSender();
    const w = new RecordWriter(["a", "b"], toChannel0, sender, false);
    await w.finish();
    expect(sender.log).toEqual([
      { type: "end", channel: "a" },
      { type: "end", channel: "b" },
    ]);
  });

  test("finish waits for credit before END; END follows the last data batch on every channel", async () => {
    const sender = new FakeSender();
    const ids = ["a", "b"];
    const w = new RecordWriter(ids, (r) => ((r as number) < 1_000_000 ? 0 : 1), sender, false);
    const onA = (INITIAL_CREDIT + 2) * BATCH_RECORDS + 5; // 2 full batches + a partial one beyond credit
    for (let i = 0; i < onA; i++) w.emit(i);
    w.emit(1_000_000); // channel b: one partial batch, within credit
    const finished = tracked(w.finish());
    await tick();
    expect(finished.done).toBe(false);
    expect(sender.ends()).toEqual([]);
    expect(sender.batches("a").length).toBe(INITIAL_CREDIT);
    expect(sender.batches("b").length).toBe(1);

    w.addCredit("a", 2);
    await tick();
    expect(finished.done).toBe(false);
    expect(sender.ends()).toEqual([]);

    w.addCredit("a", 1);
    await tick();
    await tick();
    expect(finished.done).toBe(true);
    expect(sender.ends().sort()).toEqual(ids);
    for (const id of ids) {
      const lastData = sender.log.findLastIndex((s) => s.type === "data" && s.channel === id);
      const end = sender.log.findIndex((s) => s.type === "end" && s.channel === id);
      expect(end).toBeGreaterThan(lastData);
      expect(sender.log.filter((s) => s.type === "end" && s.channel === id).length).toBe(1);
    }
    expect(decodeEach(sender.batches("a")).flat()).toEqual(Array.from({ length: onA }, (_, i) => i));
    expect(decodeEach(sender.batches("b")).flat()).toEqual([1_000_000]);
  });
});
