import { describe, expect, test } from "bun:test";
import { Unpackr } from "msgpackr";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { createPartitioner, type Partitioner } from "../src/network/partitioners.ts";
import { COALESCE_BYTES, HOLD_CHECK_MS, MAX_COALESCE_BYTES, RecordWriter, type BufferSender, type ChannelEvent } from "../src/network/record-writer.ts";
import { waitFor } from "./helpers.ts";
import { CHUNK_RECORDS, RecordDeserializer } from "../src/network/serialization.ts";
import { assignKeyToOperator } from "../src/state/key-groups.ts";

type Call =
  | { kind: "buffer"; channel: string; buf: ArrayBuffer; size: number; backlog: number; bytes: Uint8Array }
  | { kind: "event"; channel: string; event: ChannelEvent };

/** An event in a decoded channel stream. */
type Ev = { ev: ChannelEvent };

/**
 * A BufferSender that logs every call in order and keeps the buffers it was given until the test recycles
 * them (manual), or recycles each one on a later macrotask (auto), as a consumer in another Worker would.
 */
class RecordingSender implements BufferSender {
  readonly log: Call[] = [];
  readonly held: { buf: ArrayBuffer; channel: string }[] = [];
  writer: RecordWriter | null = null;

  constructor(private readonly mode: "manual" | "auto" = "manual") {}

  buffer(channel: string, buf: ArrayBuffer, size: number, backlog: number): void {
    // Copy now: the buffer is reused once recycled.
    this.log.push({ kind: "buffer", channel, buf, size, backlog, bytes: new Uint8Array(buf, 0, size).slice() });
    if (this.mode === "auto") setTimeout(() => this.writer!.recycle(buf, channel), 0);
    else this.held.push({ buf, channel });
  }

  event(channel: string, event: ChannelEvent): void {
    this.log.push({ kind: "event", channel, event });
  }

  buffers(channel?: string): Extract<Call, { kind: "buffer" }>[] {
    return this.log.filter((c): c is Extract<Call, { kind: "buffer" }> => c.kind === "buffer" && (channel === undefined || c.channel === channel));
  }

  events(channel?: string): ChannelEvent[] {
    return this.log.filter((c): c is Extract<Call, { kind: "event" }> => c.kind === "event" && (channel === undefined || c.channel === channel)).map((c) => c.event);
  }

  /** Gives back the oldest held buffer; false when none is held. */
  recycleOne(): boolean {
    const b = this.held.shift();
    if (b === undefined) return false;
    this.writer!.recycle(b.buf, b.channel);
    return true;
  }

  /** Gives back held buffers (and those sent meanwhile) until none is held. */
  recycleAll(): void {
    while (this.recycleOne());
  }

  /** Recycles and flushes until nothing is held back any more (the end of a slow consumer's backlog). */
  drainAll(): void {
    for (let i = 0; i < 10_000; i++) {
      this.recycleAll();
      this.writer!.flush();
      if (this.held.length === 0) return;
    }
    throw new Error("drainAll did not converge");
  }

  /** The channel's records and events in the order sent, decoded with a fresh deserializer. */
  stream(channel: string): (unknown | Ev)[] {
    const d = new RecordDeserializer();
    const out: unknown[] = [];
    for (const c of this.log) {
      if (c.channel !== channel) continue;
      if (c.kind === "buffer") d.read(c.bytes, out);
      else {
        expect(d.hasPartialRecord).toBe(false); // events never cut a record
        out.push({ ev: c.event });
      }
    }
    return out;
  }

  records(channel: string): unknown[] {
    return this.stream(channel).filter((x) => !isEv(x));
  }
}

function isEv(x: unknown): x is Ev {
  return typeof x === "object" && x !== null && "ev" in x && Object.keys(x).length === 1;
}

function setup(
  ids: string[],
  partitioner: Partitioner,
  opts: { poolSize?: number; segmentSize?: number; overdraft?: number; flushEveryRecord?: boolean; mode?: "manual" | "auto"; connect?: boolean; maxPerChannel?: number } = {},
) {
  const pool = new LocalBufferPool(opts.poolSize ?? 10_000, opts.segmentSize ?? 256, opts.overdraft ?? 0);
  const w = new RecordWriter(ids, partitioner, pool, opts.flushEveryRecord ?? false, opts.maxPerChannel);
  const sender = new RecordingSender(opts.mode ?? "manual");
  sender.writer = w;
  if (opts.connect ?? true) for (const id of ids) w.connect(id, sender);
  return { w, pool, sender };
}

async function settle(rounds = 6): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function tracked(p: Promise<void>): { done: boolean; error: unknown } {
  const state = { done: false, error: undefined as unknown };
  p.then(
    () => (state.done = true),
    (e) => (state.error = e),
  );
  return state;
}

/** Resolves "done" or "timeout": a hang becomes a failed expectation instead of a test timeout. */
function within(p: Promise<void>, ms: number): Promise<"done" | "timeout"> {
  return Promise.race([p.then(() => "done" as const), sleep(ms).then(() => "timeout" as const)]);
}

/** Records of a known, varied size; about 30-60 bytes serialized each. */
const rec = (i: number) => ({ i, s: `record-${i}-${"x".repeat(i % 23)}` });
const range = (n: number, from = 0) => Array.from({ length: n }, (_, k) => from + k);

describe("RecordWriter: partitioning", () => {
  test("each record goes only to the channel the partitioner picks, in order", () => {
    const ids = ["a", "b", "c", "d"];
    const { w, sender } = setup(ids, (r) => (r as { to: number }).to, { segmentSize: 128 });
    const records = range(500).map((i) => ({ to: (i * i + 3 * i) % 3, i })); // channel d gets nothing
    for (const r of records) w.emit(r);
    w.flush();
    ids.forEach((id, c) => expect(sender.records(id)).toEqual(records.filter((r) => r.to === c)));
    expect(sender.buffers("d")).toEqual([]);
    expect(w.recordsOut).toBe(500);
  });

  test("hash: every key's records go to the key group's subtask, and a key to one channel only", () => {
    const ids = ["k0", "k1", "k2", "k3"];
    const { w, sender } = setup(ids, createPartitioner("hash", 0, 4, 128, (r: { word: string }) => r.word));
    const records = range(2000).map((i) => ({ word: `w${(i * 7) % 101}`, n: i }));
    for (const r of records) w.emit(r);
    w.flush();
    const seen = new Map<string, Set<string>>();
    for (const id of ids) {
      const got = sender.records(id) as { word: string; n: number }[];
      expect(got).toEqual(records.filter((r) => ids[assignKeyToOperator(r.word, 4, 128)] === id));
      for (const r of got) (seen.get(r.word) ?? seen.set(r.word, new Set()).get(r.word)!).add(id);
    }
    expect(seen.size).toBe(101);
    for (const chans of seen.values()) expect(chans.size).toBe(1);
    // The keys spread: more than one channel is used.
    expect(ids.filter((id) => sender.buffers(id).length > 0).length).toBeGreaterThan(1);
  });

  test("rebalance: round robin starting at the producer's index", () => {
    const ids = ["a", "b", "c"];
    const { w, sender } = setup(ids, createPartitioner("rebalance", 1, 3, 128));
    for (let i = 0; i < 100; i++) w.emit(i);
    w.flush();
    ids.forEach((id, c) => expect(sender.records(id)).toEqual(range(100).filter((i) => (1 + i) % 3 === c)));
  });

  test("broadcast: every record to every channel; recordsOut counts each emitted record once", () => {
    const ids = ["a", "b", "c"];
    const { w, sender } = setup(ids, createPartitioner("broadcast", 0, 3, 128), { segmentSize: 64 });
    const records = range(CHUNK_RECORDS + 10).map((i) => [i, `v${i}`]);
    for (const r of records) w.emit(r);
    w.flush();
    for (const id of ids) expect(sender.records(id)).toEqual(records);
    expect(w.recordsOut).toBe(records.length);
  });

  test("forward: everything to the first channel", () => {
    const { w, sender } = setup(["only", "other"], createPartitioner("forward", 3, 2, 128));
    for (let i = 0; i < 70; i++) w.emit(rec(i));
    w.flush();
    expect(sender.records("only")).toEqual(range(70).map(rec));
    expect(sender.log.filter((c) => c.channel === "other")).toEqual([]);
  });
});

describe("RecordWriter: connect", () => {
  test("nothing is sent before connect(); then everything queued is sent in order", () => {
    const ids = ["a", "b"];
    const { w, pool, sender } = setup(ids, (r) => (r as number) % 2, { segmentSize: 64, connect: false });
    for (let i = 0; i < 200; i++) w.emit(i);
    w.broadcastEvent({ type: "barrier", checkpointId: 1, timestamp: 0, dir: "" });
    for (let i = 200; i < 210; i++) w.emit(i);
    w.flush();
    expect(sender.log).toEqual([]);
    expect(w.buffersOut).toBe(0);
    expect(pool.inUse).toBeGreaterThan(0); // the queued buffers are out of the pool

    w.connect("a", sender);
    expect(sender.log.every((c) => c.channel === "a")).toBe(true);
    const evens = range(210).filter((i) => i % 2 === 0);
    expect(sender.stream("a")).toEqual([...evens.filter((i) => i < 200), { ev: { type: "barrier", checkpointId: 1, timestamp: 0, dir: "" } }, ...evens.filter((i) => i >= 200)]);
    const before = sender.log.length;

    // Once connected, new data goes out as soon as a buffer is finished.
    for (let i = 210; i < 214; i++) w.emit(i);
    w.flush();
    expect(sender.log.length).toBe(before + 1);
    expect(sender.log.slice(before).every((c) => c.channel === "a")).toBe(true);

    w.connect("b", sender);
    const odds = range(214).filter((i) => i % 2 === 1);
    expect(sender.stream("b")).toEqual([...odds.filter((i) => i < 200), { ev: { type: "barrier", checkpointId: 1, timestamp: 0, dir: "" } }, ...odds.filter((i) => i >= 200)]);
    expect(sender.stream("a")).toEqual([
      ...evens.filter((i) => i < 200),
      { ev: { type: "barrier", checkpointId: 1, timestamp: 0, dir: "" } },
      ...evens.filter((i) => i >= 200),
      ...[210, 212],
    ]);
  });

  test("connect() to an unknown channel throws; hasChannel", () => {
    const { w, sender } = setup(["a"], () => 0, { connect: false });
    expect(() => w.connect("zz", sender)).toThrow();
    expect(w.hasChannel("a")).toBe(true);
    expect(w.hasChannel("zz")).toBe(false);
  });
});

describe("RecordWriter: buffers and flush", () => {
  test("a partly filled buffer is sent only on flush(); a flush with nothing pending sends nothing", () => {
    const { w, sender } = setup(["c"], () => 0, { segmentSize: 4096 });
    for (let i = 0; i < 3; i++) w.emit(rec(i));
    expect(sender.log).toEqual([]);
    w.flush();
    expect(sender.buffers().length).toBe(1);
    expect(sender.buffers()[0]!.size).toBeLessThan(4096);
    expect(sender.records("c")).toEqual([rec(0), rec(1), rec(2)]);
    w.flush();
    w.flush();
    expect(sender.buffers().length).toBe(1);

    // A whole chunk that fits in the buffer is serialized but not sent until flushed.
    for (let i = 3; i < 3 + CHUNK_RECORDS; i++) w.emit(rec(i));
    expect(sender.buffers().length).toBe(1);
    w.flush();
    expect(sender.buffers().length).toBe(2);
    expect(sender.records("c")).toEqual(range(3 + CHUNK_RECORDS).map(rec));
  });

  test("buffers are sent without flush once (nearly) full: never less than half a buffer", () => {
    const { w, sender } = setup(["c"], () => 0, { segmentSize: 64 });
    const n = CHUNK_RECORDS * 4;
    for (let i = 0; i < n; i++) w.emit(rec(i));
    const sent = sender.buffers();
    expect(sent.length).toBeGreaterThan(10);
    for (const b of sent) {
      expect(b.buf.byteLength).toBe(64);
      expect(b.size).toBeGreaterThan(32);
      expect(b.size).toBeLessThanOrEqual(64);
    }
    w.flush();
    expect(sender.records("c")).toEqual(range(n).map(rec));
  });

  test("flushEveryRecord sends every record in a buffer of its own right away", () => {
    const { w, sender } = setup(["c"], () => 0, { flushEveryRecord: true, segmentSize: 4096 });
    for (let i = 0; i < 5; i++) {
      w.emit(rec(i));
      expect(sender.buffers().length).toBe(i + 1);
    }
    const d = new RecordDeserializer();
    expect(
      sender.buffers().map((b) => {
        const out: unknown[] = [];
        d.read(b.bytes, out);
        return out;
      }),
    ).toEqual(range(5).map((i) => [rec(i)]));
  });

  test("flushEveryRecord with a busy consumer: the coalesce bound follows how fast the consumer drains", async () => {
    // A consumer that stays busy but releases buffers fast (it is behind, catching up) gets larger buffers, up to
    // MAX_COALESCE_BYTES; one that releases nothing (stalled, back-pressured) keeps COALESCE_BYTES.
    for (const draining of [true, false]) {
      const { w, sender } = setup(["c"], () => 0, { flushEveryRecord: true, segmentSize: 32 * 1024 });
      let released = 0;
      const s = sender as BufferSender;
      s.consumerBusy = () => true;
      s.consumerReleased = () => (draining ? (released += 50) : released); // 50 buffers released between looks
      // The draining case until its first maximal buffer (the rate is taken over windows of a few ms, so a loaded
      // machine may need longer); the stalled one for 40 ms, where the bound would have grown many times over.
      const largestSoFar = () => Math.max(0, ...sender.buffers().map((b) => b.size));
      const deadline = performance.now() + (draining ? 5000 : 40);
      let i = 0;
      while (performance.now() < deadline && !(draining && i % 1000 === 0 && largestSoFar() >= MAX_COALESCE_BYTES)) w.emit(rec(i++));
      const sizes = sender.buffers().map((b) => b.size);
      expect(sizes.length).toBeGreaterThan(5);
      const largest = Math.max(...sizes);
      if (draining) {
        expect(largest).toBeGreaterThanOrEqual(MAX_COALESCE_BYTES);
        expect(largest).toBeLessThan(MAX_COALESCE_BYTES + 64);
      } else expect(largest).toBeLessThan(COALESCE_BYTES + 64);
    }
  });

  test("flushEveryRecord with the consumer busy on the last buffer: records share a buffer across batches, handed over once the consumer is done or at COALESCE_BYTES", async () => {
    const { w, sender } = setup(["c"], () => 0, { flushEveryRecord: true, segmentSize: 4096 });
    let busy = true;
    (sender as BufferSender).consumerBusy = () => busy;
    // One decoder for the channel's stream, buffer by buffer in order (a record shape is described once per stream).
    const d = new RecordDeserializer();
    const decoded: unknown[][] = [];
    const decode = (b: { bytes: Uint8Array }) => {
      const at = sender.buffers().indexOf(b as never);
      while (decoded.length <= at) {
        const out: unknown[] = [];
        d.read(sender.buffers()[decoded.length]!.bytes, out);
        decoded.push(out);
      }
      return decoded[at];
    };
    for (let i = 0; i < 3; i++) w.emit(rec(i));
    expect(sender.buffers().length).toBe(0); // held while the consumer cannot read them anyway
    await Promise.resolve(); // the end of the batch (a microtask): the consumer is still busy, so they stay
    expect(sender.buffers().length).toBe(0);
    // The next batches join them (a paced source's batch is a record or two).
    w.emit(rec(3));
    await Bun.sleep(3 * HOLD_CHECK_MS);
    w.emit(rec(4));
    await Bun.sleep(3 * HOLD_CHECK_MS);
    expect(sender.buffers().length).toBe(0);
    // The consumer done: a look every HOLD_CHECK_MS hands them over, one buffer and one chunk.
    busy = false;
    await waitFor("the held records handed over", () => sender.buffers().length === 1, 2000, 1);
    expect(sender.buffers().map(decode)).toEqual([range(5).map(rec)]);
    busy = true;
    // A long batch: a buffer goes as soon as it holds COALESCE_BYTES, not later.
    let i = 5;
    while (sender.buffers().length === 1) w.emit(rec(i++));
    const second = sender.buffers()[1]!;
    expect(second.size).toBeGreaterThanOrEqual(COALESCE_BYTES);
    expect(second.size).toBeLessThan(COALESCE_BYTES + 64); // one record more at most
    expect(decode(second)).toEqual(range(i - 5, 5).map(rec));
    // The consumer done: the next record goes at once, with the ones held before it.
    w.emit(rec(i++));
    busy = false;
    w.emit(rec(i++));
    expect(sender.buffers().length).toBe(3);
    expect(decode(sender.buffers()[2]!)).toEqual([rec(i - 2), rec(i - 1)]);
    await Promise.resolve();
    expect(sender.buffers().length).toBe(3); // nothing was left held
  });

  test("flushEveryRecord: a record that waited for a buffer is sent as soon as buffers come back, without flush()", async () => {
    const { w, sender } = setup(["c"], () => 0, { flushEveryRecord: true, segmentSize: 64, poolSize: 1, mode: "auto" });
    const big = { text: "y".repeat(300) }; // ~5 buffers
    w.emit(big);
    expect(w.backpressured).toBe(true);
    const waited = await within(w.waitAvailable(), 1000);
    // The consumer has given every buffer back; the whole record must have been sent by now.
    expect(sender.records("c")).toEqual([big]);
    expect(waited).toBe("done");
  });
});

describe("RecordWriter: backpressure", () => {
  test("a tiny pool and a sender that holds its buffers: backpressured, waitAvailable waits for recycles, nothing lost or reordered", async () => {
    const { w, pool, sender } = setup(["c"], () => 0, { poolSize: 2, segmentSize: 64 });
    expect(w.backpressured).toBe(false);
    let next = 0;
    for (; next < 150; next++) w.emit(rec(next));
    expect(w.backpressured).toBe(true);
    expect(sender.buffers().length).toBe(2);
    expect(pool.inUse).toBe(2);
    expect(pool.request()).toBeNull();

    const avail = tracked(w.waitAvailable());
    await settle();
    expect(avail.done).toBe(false);

    // Records emitted while backpressured queue up behind the others.
    for (; next < 200; next++) w.emit(rec(next));
    let rounds = 0;
    while (sender.held.length > 0) {
      rounds++;
      sender.recycleOne();
      // A recycled buffer is refilled from the overflow at once and sent.
      await settle();
      if (w.backpressured) expect(avail.done).toBe(false);
      if (rounds % 7 === 0 && next < 260) for (let k = 0; k < 10; k++, next++) w.emit(rec(next));
    }
    expect(rounds).toBeGreaterThan(10);
    w.flush();
    sender.recycleAll();
    expect(w.backpressured).toBe(false);
    await settle();
    expect(avail.done).toBe(true);
    expect(sender.records("c")).toEqual(range(next).map(rec));
    expect(pool.inUse).toBe(0);
  });

  test("with overdraft: up to size + overdraft buffers go out; backpressured as soon as overdraft is used", async () => {
    const { w, sender } = setup(["c"], () => 0, { poolSize: 1, overdraft: 2, segmentSize: 64 });
    let next = 0;
    // One buffer's worth: the first buffer fills (and is sent) when the next starts, so stop before.
    while (sender.buffers().length === 0) w.emit(rec(next++));
    expect(w.backpressured).toBe(true); // the next bytes already sit in an overdraft buffer
    for (let k = 0; k < 100; k++) w.emit(rec(next++));
    expect(sender.buffers().length).toBe(3);
    const avail = tracked(w.waitAvailable());
    sender.recycleOne();
    await settle();
    expect(avail.done).toBe(false);
    while (sender.recycleOne()) {
      expect(sender.held.length).toBeLessThanOrEqual(3);
      await settle();
    }
    sender.drainAll();
    await settle();
    expect(avail.done).toBe(true);
    expect(sender.records("c")).toEqual(range(next).map(rec));
  });

  test("waitAvailable resolves at once when nothing is held back", async () => {
    const { w } = setup(["c"], () => 0);
    w.emit(1);
    expect(w.backpressured).toBe(false);
    const avail = tracked(w.waitAvailable());
    await settle();
    expect(avail.done).toBe(true);
  });

  test("one channel's overflow drains in order while another channel keeps going", async () => {
    const ids = ["a", "b"];
    const { w, sender } = setup(ids, (r) => ((r as { i: number }).i % 5 === 0 ? 1 : 0), { poolSize: 3, segmentSize: 64 });
    const records = range(400).map(rec);
    for (const r of records) {
      w.emit(r);
      if (r.i % 40 === 0) sender.recycleOne();
    }
    while (sender.recycleOne()) await settle();
    sender.drainAll();
    expect(sender.records("a")).toEqual(records.filter((r) => r.i % 5 !== 0));
    expect(sender.records("b")).toEqual(records.filter((r) => r.i % 5 === 0));
  });
});

describe("RecordWriter: events", () => {
  test("broadcastEvent goes out on every channel after all data emitted before it and before all data after it", () => {
    const ids = ["a", "b", "c"];
    const { w, sender } = setup(ids, (r) => (r as number) % 3, { segmentSize: 64 });
    for (let i = 0; i < 100; i++) w.emit(i);
    w.broadcastEvent({ type: "barrier", checkpointId: 5, timestamp: 0, dir: "" });
    for (let i = 100; i < 130; i++) w.emit(i);
    w.broadcastEvent({ type: "watermark", timestamp: 42 });
    w.flush();
    ids.forEach((id, c) => {
      const mine = (from: number, to: number) => range(to - from, from).filter((i) => i % 3 === c);
      expect(sender.stream(id)).toEqual([
        ...mine(0, 100),
        { ev: { type: "barrier", checkpointId: 5, timestamp: 0, dir: "" } },
        ...mine(100, 130),
        { ev: { type: "watermark", timestamp: 42 } },
      ]);
    });
  });

  test("an event on a channel with overflow waits behind that data; a channel without overflow gets it at once", async () => {
    const ids = ["a", "b"];
    const { w, sender } = setup(ids, (r) => (r as { to: number }).to, { poolSize: 3, segmentSize: 64 });
    w.emit({ to: 1, n: -1 });
    w.flush(); // b: one buffer, held by the consumer
    for (let i = 0; i < 100; i++) w.emit({ to: 0, n: i }); // a: two buffers and overflow
    expect(w.backpressured).toBe(true);
    w.broadcastEvent({ type: "barrier", checkpointId: 9, timestamp: 0, dir: "" });
    expect(sender.events("b")).toEqual([{ type: "barrier", checkpointId: 9, timestamp: 0, dir: "" }]);
    expect(sender.events("a")).toEqual([]);
    for (let i = 100; i < 120; i++) w.emit({ to: i % 2, n: i });
    while (sender.recycleOne()) await settle();
    sender.drainAll();
    const ev = { ev: { type: "barrier", checkpointId: 9, timestamp: 0, dir: "" } };
    expect(sender.stream("a")).toEqual([...range(100).map((n) => ({ to: 0, n })), ev, ...range(10).map((k) => ({ to: 0, n: 100 + 2 * k }))]);
    expect(sender.stream("b")).toEqual([{ to: 1, n: -1 }, ev, ...range(10).map((k) => ({ to: 1, n: 101 + 2 * k }))]);
  });
});

describe("RecordWriter: finish", () => {
  test("finish sends END once per channel after its last data, and resolves only when every buffer is back", async () => {
    const ids = ["a", "b", "c"];
    const { w, pool, sender } = setup(ids, (r) => (r as number) % 3, { segmentSize: 64, poolSize: 64 });
    for (let i = 0; i < 300; i++) w.emit(i);
    const fin = tracked(w.finish());
    await settle();
    for (const id of ids) {
      expect(sender.events(id)).toEqual([{ type: "end" }]);
      const mine = sender.log.filter((c) => c.channel === id);
      expect(mine.at(-1)).toEqual({ kind: "event", channel: id, event: { type: "end" } });
      expect(sender.records(id)).toEqual(range(300).filter((i) => i % 3 === ids.indexOf(id)));
    }
    expect(sender.held.length).toBeGreaterThan(3);
    while (sender.held.length > 1) {
      sender.recycleOne();
      await settle();
      expect(fin.done).toBe(false);
    }
    sender.recycleOne();
    await settle();
    expect(fin.done).toBe(true);
    expect(fin.error).toBeUndefined();
    expect(pool.inUse).toBe(0);
  });

  test("finish on channels that got nothing sends only END", async () => {
    const { w, sender } = setup(["a", "b"], () => 0);
    expect(await within(w.finish(), 1000)).toBe("done");
    expect(sender.log).toEqual([
      { kind: "event", channel: "a", event: { type: "end" } },
      { kind: "event", channel: "b", event: { type: "end" } },
    ]);
  });

  test("finish with overflow: END after all data, with a consumer that recycles asynchronously", async () => {
    const ids = ["a", "b"];
    const { w, pool, sender } = setup(ids, (r) => ((r as { i: number }).i % 3 === 0 ? 1 : 0), { poolSize: 4, segmentSize: 64, mode: "auto" });
    const records = range(600).map(rec);
    for (const r of records) w.emit(r);
    expect(w.backpressured).toBe(true);
    expect(await within(w.finish(), 5000)).toBe("done");
    expect(sender.stream("a")).toEqual([...records.filter((r) => r.i % 3 !== 0), { ev: { type: "end" } }]);
    expect(sender.stream("b")).toEqual([...records.filter((r) => r.i % 3 === 0), { ev: { type: "end" } }]);
    expect(pool.inUse).toBe(0);
  });

  test("finish waits for a channel that is not connected yet, then sends its data and END", async () => {
    const ids = ["a", "b"];
    const { w, sender } = setup(ids, (r) => (r as number) % 2, { connect: false, mode: "auto" });
    w.connect("a", sender);
    for (let i = 0; i < 20; i++) w.emit(i);
    const fin = tracked(w.finish());
    await sleep(30);
    expect(fin.done).toBe(false);
    expect(sender.stream("a")).toEqual([...range(10).map((k) => 2 * k), { ev: { type: "end" } }]);
    expect(sender.log.filter((c) => c.channel === "b")).toEqual([]);
    w.connect("b", sender);
    for (let t = 0; t < 100 && !fin.done; t++) await sleep(5);
    expect(fin.done).toBe(true);
    expect(sender.stream("b")).toEqual([...range(10).map((k) => 2 * k + 1), { ev: { type: "end" } }]);
  });

  test("finish completes with a one-buffer pool when records still wait for a buffer", async () => {
    const { w, pool, sender } = setup(["c"], () => 0, { poolSize: 1, segmentSize: 64, mode: "auto" });
    const records = range(40).map(rec);
    for (const r of records) w.emit(r);
    w.flush(); // the first buffer goes out, the rest overflows
    expect(w.backpressured).toBe(true);
    expect(await within(w.finish(), 2000)).toBe("done");
    expect(sender.stream("c")).toEqual([...records, { ev: { type: "end" } }]);
    expect(pool.inUse).toBe(0);
  });

  test("finish completes when the pool has one buffer per channel and records wait for buffers", async () => {
    const ids = ["a", "b"];
    const { w, sender } = setup(ids, (r) => (r as { i: number }).i % 2, { poolSize: 2, segmentSize: 64, mode: "auto" });
    const records = range(80).map(rec);
    for (const r of records) w.emit(r);
    w.flush();
    expect(await within(w.finish(), 2000)).toBe("done");
    ids.forEach((id, c) => expect(sender.stream(id)).toEqual([...records.filter((r) => r.i % 2 === c), { ev: { type: "end" } }]));
  });
});

describe("RecordWriter: backlog and counters", () => {
  test("backlog = buffers queued behind the one sent", () => {
    const { w, sender } = setup(["c"], () => 0, { segmentSize: 64, connect: false });
    // Exactly 3 full buffers and a partial one, queued before connect.
    for (let i = 0; i < 100; i++) w.emit(rec(i));
    w.flush();
    w.connect("c", sender);
    const n = sender.buffers().length;
    expect(n).toBeGreaterThan(3);
    expect(sender.buffers().map((b) => b.backlog)).toEqual(range(n).map((k) => n - 1 - k));
    // Connected: every buffer goes out as it is finished, with nothing behind it.
    for (let i = 100; i < 300; i++) w.emit(rec(i));
    w.flush();
    expect(sender.buffers().slice(n).length).toBeGreaterThan(3);
    for (const b of sender.buffers().slice(n)) expect(b.backlog).toBe(0);
  });

  test("backlog counts only buffers, not events queued behind", () => {
    const { w, sender } = setup(["c"], () => 0, { segmentSize: 4096, connect: false });
    w.emit(1);
    w.flush(); // buffer 1
    w.emit(2);
    w.flush(); // buffer 2
    w.broadcastEvent({ type: "barrier", checkpointId: 1, timestamp: 0, dir: "" });
    w.emit(3);
    w.flush(); // buffer 3
    w.broadcastEvent({ type: "watermark", timestamp: 7 });
    w.connect("c", sender);
    expect(sender.stream("c")).toEqual([1, 2, { ev: { type: "barrier", checkpointId: 1, timestamp: 0, dir: "" } }, 3, { ev: { type: "watermark", timestamp: 7 } }]);
    // Behind buffer 1: buffers 2 and 3; behind buffer 2: buffer 3; behind buffer 3: none.
    expect(sender.buffers().map((b) => b.backlog)).toEqual([2, 1, 0]);
  });

  test("bytesOut, buffersOut and recordsOut", () => {
    const ids = ["a", "b"];
    const { w, sender } = setup(ids, createPartitioner("broadcast", 0, 2, 128), { segmentSize: 64, connect: false, poolSize: 1000 });
    expect([w.recordsOut, w.bytesOut, w.buffersOut]).toEqual([0, 0, 0]);
    for (let i = 0; i < 150; i++) w.emit(rec(i));
    w.flush();
    expect(w.recordsOut).toBe(150);
    expect(w.buffersOut).toBe(0); // queued, not sent
    w.connect("a", sender);
    expect(w.buffersOut).toBe(sender.buffers().length);
    w.connect("b", sender);
    const sent = sender.buffers();
    expect(w.buffersOut).toBe(sent.length);
    expect(w.bytesOut).toBe(sent.reduce((a, b) => a + b.size, 0));
    // Independently: each channel's stream is whole length-prefixed chunks, 150 records in all.
    for (const id of ids) {
      const bytes = Buffer.concat(sender.buffers(id).map((b) => b.bytes));
      const unpackr = new Unpackr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Unpackr>[0]);
      let records = 0;
      let p = 0;
      while (p < bytes.length) {
        const len = bytes.readUInt32BE(p);
        const chunk = unpackr.unpack(bytes.subarray(p + 4, p + 4 + len)) as unknown[];
        expect(chunk.length).toBeGreaterThan(0);
        expect(chunk.length).toBeLessThanOrEqual(CHUNK_RECORDS);
        records += chunk.length;
        p += 4 + len;
      }
      expect(p).toBe(bytes.length);
      expect(records).toBe(150);
    }
  });
});

describe("max buffers per channel", () => {
  /**
   * Channels a and b (even and odd records, a buffer each): a's consumer reads nothing, as a task blocked for
   * barrier alignment; b's consumer gives every buffer back at once. Then a barrier goes to both.
   */
  function stallA(maxPerChannel?: number) {
    const { w, sender } = setup(["a", "b"], (r) => ((r as number) % 2 === 0 ? 0 : 1), { poolSize: 12, segmentSize: 64, flushEveryRecord: true, maxPerChannel });
    const recycleB = () => {
      for (const h of sender.held.filter((x) => x.channel === "b")) {
        sender.held.splice(sender.held.indexOf(h), 1);
        w.recycle(h.buf, "b");
      }
    };
    for (let i = 0; i < 40; i++) {
      w.emit(i);
      recycleB();
    }
    w.broadcastEvent({ type: "barrier", checkpointId: 1, timestamp: 0, dir: "/x" });
    recycleB();
    return sender;
  }

  test("a consumer that reads nothing holds at most the cap; the other channel still gets buffers, and its barrier passes", () => {
    // Pool 12 (2 channels x 2 + 8), cap 10.
    const sender = stallA(10);
    expect(sender.held.filter((h) => h.channel === "a").length).toBe(10);
    expect(sender.buffers("a").length).toBe(10);
    // b kept flowing past a's stall, and its barrier arrived after all of b's records.
    expect(sender.records("b")).toEqual(Array.from({ length: 20 }, (_, i) => 2 * i + 1));
    expect(sender.events("b")).toEqual([{ type: "barrier", checkpointId: 1, timestamp: 0, dir: "/x" }]);
    expect(sender.events("a")).toEqual([]);
    // Once a's consumer reads again, a's records and then its barrier follow, in order.
    sender.drainAll();
    expect(sender.records("a")).toEqual(Array.from({ length: 20 }, (_, i) => 2 * i));
    expect(sender.events("a")).toEqual([{ type: "barrier", checkpointId: 1, timestamp: 0, dir: "/x" }]);
  });

  test("without the cap the stalled channel takes the whole pool and the other channel's barrier cannot leave", () => {
    const sender = stallA();
    expect(sender.held.filter((h) => h.channel === "a").length).toBe(12);
    expect(sender.events("b")).toEqual([]);
  });
});

describe("an unaligned barrier while the channel overflows", () => {
  test("the buffers after the barrier start with exactly the bytes it overtook: no later byte shares a buffer with them", async () => {
    const sent: { size: number; afterBarrier: boolean }[] = [];
    const held: ArrayBuffer[] = [];
    let overtaken = -1;
    const sender: BufferSender = {
      buffer: (_ch, buf, size) => {
        sent.push({ size, afterBarrier: overtaken >= 0 });
        held.push(buf);
      },
      event: () => {},
      priorityEvent: (_ch, ev) => {
        if (ev.type === "barrier") overtaken = ev.overtakenBytes ?? 0;
      },
      waitingBytes: () => 0,
    };
    const writer = new RecordWriter(["c"], () => 0, new LocalBufferPool(4, 4096, 0), false);
    writer.connect("c", sender);
    const rec = (i: number) => ({ i, pad: "z".repeat(150) });
    for (let i = 0; i < 200; i++) writer.emit(rec(i)); // about 32 KB into a pool of 4 x 4 KB: most of it overflows
    writer.flush();
    expect(writer.backpressured).toBe(true);
    writer.broadcastPriorityEvent({ type: "barrier", checkpointId: 1, timestamp: 0, dir: "/x", unaligned: true });
    expect(overtaken).toBeGreaterThan(4096);
    for (let i = 200; i < 260; i++) writer.emit(rec(i)); // after the barrier
    for (let n = 0; n < 1000 && (held.length > 0 || writer.backpressured); n++) {
      const b = held.shift();
      if (b) writer.recycle(b, "c");
      writer.flush();
    }
    const after = sent.filter((s) => s.afterBarrier).map((s) => s.size);
    const prefix: number[] = [];
    after.reduce((a, s) => (prefix.push(a + s), a + s), 0);
    expect(prefix).toContain(overtaken);
  });
});

describe("RecordWriter: latency markers", () => {
  test("a marker goes to one random channel, behind every record emitted before it there, also through overflow", () => {
    const ids = ["a", "b", "c"];
    let next = 0;
    // A small pool in manual mode: buffers run out, so later records and markers wait in the overflow queue.
    const { w, sender } = setup(ids, () => next++ % 3, { poolSize: 6, segmentSize: 128 });
    const ROUNDS = 60;
    for (let k = 0; k < ROUNDS; k++) {
      for (let i = 0; i < 10; i++) w.emit(rec(k * 10 + i));
      w.randomEvent({ type: "latencyMarker", markedTime: k, sourceVertexId: 0, sourceSubtask: 0 });
    }
    sender.drainAll();
    let markers = 0;
    const channelsWithMarkers = new Set<string>();
    for (const id of ids) {
      const stream = sender.stream(id);
      stream.forEach((x, at) => {
        if (!isEv(x)) return;
        expect(x.ev.type).toBe("latencyMarker");
        markers++;
        channelsWithMarkers.add(id);
        const k = (x.ev as { markedTime: number }).markedTime;
        // Before it: exactly this channel's records of rounds 0..k; after it: only later rounds.
        const before = stream.slice(0, at).filter((y) => !isEv(y)) as { i: number }[];
        const after = stream.slice(at + 1).filter((y) => !isEv(y)) as { i: number }[];
        expect(before.length).toBe(range((k + 1) * 10).filter((i) => i % 3 === ids.indexOf(id)).length);
        expect(after.every((r) => r.i >= (k + 1) * 10)).toBe(true);
      });
      expect(sender.records(id).length).toBe(range(ROUNDS * 10).filter((i) => i % 3 === ids.indexOf(id)).length);
    }
    expect(markers).toBe(ROUNDS);
    expect(channelsWithMarkers.size).toBeGreaterThan(1); // random, not always the first channel
    expect(w.recordsOut).toBe(ROUNDS * 10);
  });
});
