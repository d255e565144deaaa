// Barrier handling between a real InputGate and a task (CheckpointBarrierHandler): aligned barriers hold channels
// back and a cancel marker or the coordinator's abort releases them at once; unaligned barriers overtake queued
// buffers, the snapshot is taken before them, and exactly the in-flight records become channel state; channel state
// files round-trip, are split by key group on rescale, and a truncated or missing file is refused by path.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { InputGate, RecordedChannelState, type GateItem } from "../src/network/input-gate.ts";
import { RecordWriter, type ChannelEvent, type OvertakenOutput } from "../src/network/record-writer.ts";
import { RecordSerializer } from "../src/network/serialization.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { receiveFromRing, RingSender, PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES } from "../src/network/channel-ends.ts";
import { createRing, RingReader } from "../src/network/shared-ring.ts";
import { createBarrierHandler, type Barrier, type BarrierHandlerHost } from "../src/runtime/checkpoint-barrier-handler.ts";
import { channelStateFor, channelStateProblem, readChannelState, splitChannelState, writeChannelState } from "../src/runtime/channel-state.ts";
import { Packr } from "msgpackr";
import { channelId } from "../src/network/wire.ts";
import { keyGroupOf, operatorIndexForKeyGroup } from "../src/state/key-groups.ts";
import { removeTempDirs, rng, tempDir, waitFor } from "./helpers.ts";

afterAll(removeTempDirs);

const A = channelId("job", 0, 0, 0);
const B = channelId("job", 0, 1, 0);

/** A channel's producer: each call is one buffer holding one chunk of the given records. */
function producer() {
  const s = new RecordSerializer();
  return (records: unknown[]): Uint8Array => {
    const body = s.serialize(records);
    const out = new Uint8Array(body.length + 4);
    new DataView(out.buffer).setUint32(0, body.length);
    out.set(body, 4);
    return out;
  };
}

function setup(kind: "aligned" | "unaligned" | "at-least-once") {
  const gate = new InputGate([A, B]);
  const log: string[] = [];
  const taken: { id: number; state: Promise<Map<string, unknown[]>> | null; readSoFar: unknown[]; unaligned: boolean }[] = [];
  const read: unknown[] = [];
  const host: BarrierHandlerHost = {
    takeCheckpoint: (b, state) => {
      log.push(`checkpoint ${b.checkpointId}`);
      taken.push({ id: b.checkpointId, state, readSoFar: [...read], unaligned: b.unaligned === true });
    },
    abortCheckpoint: (id, reason, decline) => log.push(`abort ${id}${decline ? " (declined)" : ""}: ${reason}`),
  };
  const handler = createBarrierHandler(kind, gate, [A, B], host);
  /** What the task loop does: read everything readable now, handing events to the handler. */
  const drain = (): GateItem[] => {
    const items: GateItem[] = [];
    for (let it = gate.poll(); it !== null; it = gate.poll()) {
      items.push(it);
      if ("records" in it) read.push(...it.records);
      else if (it.event.type === "barrier") handler.onBarrier(it.channel, it.event);
      else if (it.event.type === "cancelBarrier") handler.onCancelMarker(it.event.checkpointId);
      else if (it.event.type === "end") handler.onEndOfPartition(it.channel);
    }
    return items;
  };
  const released: string[] = [];
  const send = (ch: string, bytes: Uint8Array) => gate.onBytes(ch, bytes, () => released.push(ch));
  const event = (ch: string, ev: ChannelEvent) => gate.onEvent(ch, ev, () => released.push(`${ch}:${ev.type}`));
  return { gate, handler, log, taken, read, drain, send, event, released };
}

const barrier = (id: number, extra: Partial<Barrier> = {}): Barrier => ({ type: "barrier", checkpointId: id, timestamp: Date.now(), dir: "/nowhere", ...extra });

describe("aligned barriers and the abort path", () => {
  test("a channel that delivered barrier n is held back until every channel did", () => {
    const t = setup("aligned");
    const pa = producer(), pb = producer();
    t.event(A, barrier(1));
    t.send(A, pa(["a-after-1"]));
    t.send(B, pb(["b-before-1"]));
    t.drain();
    expect(t.read).toEqual(["b-before-1"]); // A's record after its barrier waits
    t.event(B, barrier(1));
    t.drain();
    expect(t.log).toEqual(["checkpoint 1"]);
    expect(t.taken[0]!.readSoFar).toEqual(["b-before-1"]);
    expect(t.read).toEqual(["b-before-1", "a-after-1"]);
  });

  test("a cancel marker releases the alignment at once, overtaking queued buffers; the late barrier is ignored", () => {
    const t = setup("aligned");
    const pa = producer(), pb = producer();
    t.event(A, barrier(1));
    t.send(A, pa(["a1"]));
    t.send(B, pb(["b1"]));
    t.send(B, pb(["b2"]));
    t.drain();
    expect(t.read).toEqual(["b1", "b2"]);
    t.send(B, pb(["b3"]));
    // B's producer declined checkpoint 1: its marker jumps ahead of b3 and A is released at once.
    t.event(B, { type: "cancelBarrier", checkpointId: 1 });
    const items = t.drain();
    expect("event" in items[0]! && items[0].event.type).toBe("cancelBarrier");
    expect(t.read).toEqual(["b1", "b2", "a1", "b3"]);
    expect(t.log).toEqual(["abort 1: checkpoint 1 was canceled upstream"]);
    // The barrier of checkpoint 1 arriving late on B does not block anything again.
    t.event(B, barrier(1));
    t.send(A, pa(["a2"]));
    t.drain();
    expect(t.read.at(-1)).toBe("a2");
    expect(t.log.length).toBe(1);
    // Ring slots are released in each channel's order, the marker's included.
    expect(t.released).toEqual([`${A}:barrier`, B, B, A, B, `${B}:cancelBarrier`, `${B}:barrier`, A]);
  });

  test("the coordinator's abort releases the alignment; without it the channel stays blocked", () => {
    const t = setup("aligned");
    const pa = producer();
    t.event(A, barrier(2));
    t.send(A, pa(["held"]));
    t.drain();
    expect(t.read).toEqual([]);
    t.drain();
    expect(t.read).toEqual([]); // still held: only a barrier on B or an abort lets it go
    t.handler.onCheckpointAborted(2);
    t.drain();
    expect(t.read).toEqual(["held"]);
    expect(t.log).toEqual(["abort 2: checkpoint 2 was aborted by the coordinator"]);
  });

  test("an abort for a checkpoint whose barriers have not arrived yet: its barriers are ignored when they come", () => {
    const t = setup("aligned");
    const pa = producer();
    t.handler.onCheckpointAborted(3);
    t.event(A, barrier(3));
    t.send(A, pa(["x"]));
    t.drain();
    expect(t.read).toEqual(["x"]);
    expect(t.taken).toEqual([]);
  });

  test("at-least-once only counts barriers", () => {
    const t = setup("at-least-once");
    const pa = producer();
    t.event(A, barrier(1));
    t.send(A, pa(["a"]));
    t.drain();
    expect(t.read).toEqual(["a"]);
    t.event(B, barrier(1));
    t.drain();
    expect(t.log).toEqual(["checkpoint 1"]);
  });
});

describe("unaligned checkpoints", () => {
  test("the first barrier overtakes the queue; the snapshot comes before the queued records, which become channel state exactly", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    t.send(A, pa(["a1", "a2"]));
    t.send(B, pb(["b1"]));
    t.send(A, pa(["a3"]));
    // A's producer held one more buffer when it forwarded barrier 5 (it overtook it there): that buffer comes after.
    const overtaken = pa(["a4", "a5"]);
    t.event(A, barrier(5, { unaligned: true, overtakenBytes: overtaken.length }));
    t.send(A, overtaken);
    t.send(A, pa(["a6-after"]));
    t.send(B, pb(["b2"]));
    /** Reads one item the way the task loop does. */
    const step = () => {
      const it = t.gate.poll()!;
      if ("records" in it) t.read.push(...it.records);
      else if (it.event.type === "barrier") t.handler.onBarrier(it.channel, it.event);
    };
    step(); // the barrier came first, ahead of four queued buffers
    expect(t.taken.map((x) => [x.id, x.readSoFar])).toEqual([[5, []]]);
    t.event(B, barrier(5, { unaligned: true, overtakenBytes: 0 }));
    t.send(B, pb(["b3-after"]));
    step(); // B's barrier, also ahead of the queue
    // The channel state is complete once the barriers and the overtaken bytes are in, before the backlog is read.
    const state = await t.taken[0]!.state!;
    expect(t.read).toEqual([]);
    expect(Object.fromEntries(state)).toEqual({ [A]: ["a1", "a2", "a3", "a4", "a5"], [B]: ["b1", "b2"] });
    t.drain();
    expect(t.read).toEqual(["a1", "a2", "b1", "a3", "a4", "a5", "a6-after", "b2", "b3-after"]);
    expect(t.released.filter((r) => r === A).length).toBe(4); // every buffer's slot released once
  });

  test("a second unaligned checkpoint's channel state holds the buffers the first one decoded and the task has not read yet", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    const step = () => {
      const it = t.gate.poll()!;
      if ("records" in it) t.read.push(...it.records);
      else if (it.event.type === "barrier") t.handler.onBarrier(it.channel, it.event);
    };
    t.send(A, pa(["a1"]));
    t.send(A, pa(["a2"]));
    t.send(B, pb(["b1"]));
    t.event(A, barrier(1, { unaligned: true, overtakenBytes: 0 }));
    t.event(B, barrier(1, { unaligned: true, overtakenBytes: 0 }));
    step();
    step();
    expect(Object.fromEntries(await t.taken[0]!.state!)).toEqual({ [A]: ["a1", "a2"], [B]: ["b1"] });
    step(); // the task reads one of the three decoded buffers before barrier 2 overtakes the rest
    expect(t.read).toEqual(["a1"]);
    t.send(A, pa(["a3"]));
    t.event(A, barrier(2, { unaligned: true, overtakenBytes: 0 }));
    t.event(B, barrier(2, { unaligned: true, overtakenBytes: 0 }));
    step();
    step();
    // a2 and b1 were decoded for checkpoint 1 and are still unread: they are in flight for checkpoint 2 as well.
    expect(Object.fromEntries(await t.taken[1]!.state!)).toEqual({ [A]: ["a2", "a3"], [B]: ["b1"] });
    t.drain();
    expect(t.read).toEqual(["a1", "a2", "b1", "a3"]);
  });

  test("a barrier taken in the middle of a buffer: the records the task did not process yet are in the channel state, then read first", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    t.send(A, pa(["a1", "a2", "a3", "a4"]));
    t.send(A, pa(["a5"]));
    t.send(B, pb(["b1"]));
    const it = t.gate.poll()!;
    expect("records" in it && it.records).toEqual(["a1", "a2", "a3", "a4"]);
    t.read.push("a1", "a2"); // the task processed two of them when it let its event loop in
    expect(t.gate.priorityWaiting).toBe(false);
    t.event(A, barrier(3, { unaligned: true, overtakenBytes: 0 }));
    t.event(B, barrier(3, { unaligned: true, overtakenBytes: 0 }));
    expect(t.gate.priorityWaiting).toBe(true);
    t.gate.unread(A, ["a3", "a4"]);
    t.drain();
    expect(t.taken.map((x) => [x.id, x.readSoFar])).toEqual([[3, ["a1", "a2"]]]);
    expect(Object.fromEntries(await t.taken[0]!.state!)).toEqual({ [A]: ["a3", "a4", "a5"], [B]: ["b1"] });
    expect(t.read).toEqual(["a1", "a2", "a3", "a4", "a5", "b1"]);
    expect(t.released.filter((r) => r === A).length).toBe(2); // each buffer's slot released once
  });

  test("an aborted unaligned checkpoint drops its recording; a savepoint's barrier (not unaligned) is aligned", async () => {
    const t = setup("unaligned");
    const pa = producer();
    t.send(A, pa(["a1"]));
    t.event(A, barrier(1, { unaligned: true, overtakenBytes: 0 }));
    t.drain();
    const state = t.taken[0]!.state!;
    t.handler.onCheckpointAborted(1);
    await expect(state).rejects.toThrow(/checkpoint 1 was aborted while its channel state was recorded/);
    expect(t.gate.recordingCheckpoint).toBeNull();
    t.event(A, barrier(2));
    t.send(A, pa(["held"]));
    t.drain();
    expect(t.read).toEqual(["a1"]);
    t.event(B, barrier(2));
    t.drain();
    expect(t.taken.map((x) => [x.id, x.state])).toEqual([[1, state], [2, null]]);
    expect(t.read).toEqual(["a1", "held"]);
  });
});

describe("aligned-checkpoint-timeout: aligned first, unaligned when alignment takes too long", () => {
  test("alignment still going on past the time-out: the snapshot is taken at once as unaligned, the blocked channel is released, and the other channel's records before its barrier become channel state", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    t.send(A, pa(["a1"]));
    t.event(A, barrier(1, { alignedTimeoutMs: 150 }));
    t.send(A, pa(["a-after-1"]));
    t.send(B, pb(["b1"]));
    t.drain();
    // Aligned so far: A is held back after its barrier, nothing is taken.
    expect(t.read).toEqual(["a1", "b1"]);
    expect(t.log).toEqual([]);
    t.send(B, pb(["b2"])); // in the gate, unread, when the time-out strikes
    await waitFor("the switch to unaligned", () => t.log.length > 0, 5000, 5);
    expect(t.log).toEqual(["checkpoint 1"]);
    expect(t.taken[0]).toMatchObject({ id: 1, unaligned: true, readSoFar: ["a1", "b1"] });
    // B's barrier is still to come: what arrives on B before it is in flight too.
    t.send(B, pb(["b3"]));
    t.event(B, barrier(1, { alignedTimeoutMs: 150 }));
    t.send(B, pb(["b-after-1"]));
    expect(Object.fromEntries(await t.taken[0]!.state!)).toEqual({ [B]: ["b2", "b3"] });
    t.drain();
    expect(t.read).toEqual(["a1", "b1", "a-after-1", "b2", "b3", "b-after-1"]);
    expect(t.handler.current).toBeNull();
    expect(t.log).toEqual(["checkpoint 1"]);
  });

  test("the time-out counts from the trigger: a barrier that arrives behind unread buffers after it switches at once, before the task reads anything", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    const late = { alignedTimeoutMs: 100, timestamp: Date.now() - 1000 };
    t.send(A, pa(["a1"]));
    t.send(A, pa(["a2"]));
    t.event(A, barrier(1, late));
    t.send(A, pa(["a-after-1"]));
    t.send(B, pb(["b1"]));
    await waitFor("the switch to unaligned", () => t.log.length > 0, 5000, 5);
    expect(t.taken[0]).toMatchObject({ id: 1, unaligned: true, readSoFar: [] });
    t.send(B, pb(["b2"]));
    t.event(B, barrier(1, late));
    expect(Object.fromEntries(await t.taken[0]!.state!)).toEqual({ [A]: ["a1", "a2"], [B]: ["b1", "b2"] });
    t.drain();
    expect(t.read).toEqual(["a1", "a2", "a-after-1", "b1", "b2"]);
    expect(t.log).toEqual(["checkpoint 1"]);
  });

  test("an unaligned barrier of a checkpoint being aligned (upstream switched) switches it here too", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    t.event(A, barrier(1, { alignedTimeoutMs: 60_000 }));
    t.send(A, pa(["a-after-1"]));
    t.drain();
    expect(t.log).toEqual([]);
    t.send(B, pb(["b1"]));
    t.event(B, barrier(1, { alignedTimeoutMs: 60_000, unaligned: true, overtakenBytes: 0 }));
    t.drain();
    expect(t.taken[0]).toMatchObject({ id: 1, unaligned: true, readSoFar: [] });
    expect(Object.fromEntries(await t.taken[0]!.state!)).toEqual({ [B]: ["b1"] });
    expect(t.read).toEqual(["a-after-1", "b1"]);
  });

  test("an alignment that completes within the time-out stays aligned, and an aborted one does not switch later", async () => {
    const t = setup("unaligned");
    const pa = producer(), pb = producer();
    t.event(A, barrier(1, { alignedTimeoutMs: 100 }));
    t.send(A, pa(["a-after-1"]));
    t.event(B, barrier(1, { alignedTimeoutMs: 100 }));
    t.drain();
    expect(t.taken.map((x) => [x.id, x.unaligned, x.state])).toEqual([[1, false, null]]);
    t.event(A, barrier(2, { alignedTimeoutMs: 100 }));
    t.drain();
    t.handler.onCheckpointAborted(2);
    t.send(A, pa(["a-after-2"]));
    // Well past both time-outs: nothing more is taken, nothing is held back.
    await Bun.sleep(300);
    t.drain();
    expect(t.taken.map((x) => x.id)).toEqual([1]);
    expect(t.read).toEqual(["a-after-1", "a-after-2"]);
  });
});

describe("output channel state: what an unaligned barrier overtakes is recorded at the producer", () => {
  const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

  /**
   * A real RecordWriter -> RingSender -> ring -> InputGate channel, the consumer driven by the test. Random records
   * (chunks span buffers), a random number of them read before the barrier; returns what each side recorded.
   */
  async function overtake(seed: number, infer = false, numbers = false) {
    const next = rng(seed);
    const segment = 1024;
    const ring = createRing(4, segment);
    const pool = new LocalBufferPool(8, segment, 0);
    // infer: typed chunks (an inferred layout) mixed with msgpack ones, whose shapes change all along.
    const writer = new RecordWriter([A], () => 0, pool, false, 8, { infer });
    writer.keepInFlight = true;
    const errors: unknown[] = [];
    writer.connect(A, new RingSender(ring, (buf) => writer.recycle(buf, A), (e) => errors.push(e)));
    const gate = new InputGate([A]);
    // Seeds 2, 3 (mod 4) as a task does it: the input channel state recorded as bytes, through a file (version 2).
    const rawInput = seed % 4 >= 2;
    gate.rawChannelState = rawInput;
    const reader = new RingReader(ring);
    const release = () => reader.release();
    /** The consumer's ring reader (receiveFromRing), stopping after a barrier when asked. */
    const pull = (stopAtBarrier: boolean) => {
      for (let it = reader.take(); it !== null; it = reader.take()) {
        if (it.kind === "buffer") gate.onBytes(A, it.bytes, release);
        else {
          gate.onEvent(A, it.event, release);
          if (stopAtBarrier && it.event.type === "barrier") return;
        }
      }
    };
    const read: unknown[] = [];
    const snap: { taken: { readSoFar: unknown[]; state: Promise<Map<string, unknown[]>>; partial: boolean } | null } = { taken: null };
    const handler = createBarrierHandler("unaligned", gate, [A], {
      takeCheckpoint: (_b, state) => {
        // Whether the consumer holds part of a chunk that continues in the overtaken buffers.
        const partial = (gate as unknown as { deserializers: Map<string, { hasPartialRecord: boolean }> }).deserializers.get(A)!.hasPartialRecord;
        snap.taken = { readSoFar: [...read], state: state!, partial };
      },
      abortCheckpoint: (id, reason) => errors.push(new Error(`abort ${id}: ${reason}`)),
    });
    /** The task loop reading one item (a buffer's records, or an event). */
    const step = (): boolean => {
      const it = gate.poll();
      if (it === null) return false;
      if ("records" in it) read.push(...it.records);
      else if (it.event.type === "barrier") handler.onBarrier(it.channel, it.event);
      return true;
    };
    const emitted: unknown[] = [];
    const emit = (n: number) => {
      for (let i = 0; i < n; i++) {
        // Mostly small records, now and then one of up to 1.5 buffers: chunks that span buffers. Now and then a key of
        // 90 names: new record shapes all along, more than msgpackr's 64 ids, so shape ids are reused (the producer
        // decodes what the barrier overtook with the shapes its serializer had there).
        // numbers: int tuples (fixed-size typed records, written straight into the buffer), now and then a double in
        // one (the layout widens) or an object with a string (a msgpack chunk, which may span buffers).
        let r: unknown;
        if (numbers) {
          const k = next();
          const v = Math.floor(next() * 1000);
          r = k < 0.005 ? { i: emitted.length, s: "x".repeat(Math.floor(next() * 1500)) } : [emitted.length, k < 0.008 ? 0.5 : v, v + 1, v + 2];
        } else {
          const o: Record<string, unknown> = { i: emitted.length, s: "x".repeat(Math.floor(next() * (next() < 0.15 ? 1500 : 120))) };
          if (next() < (infer ? 0.03 : 0.3)) o[`k${Math.floor(next() * 90)}`] = emitted.length;
          r = o;
        }
        emitted.push(r);
        writer.emit(r);
      }
    };
    // Before the barrier: records written, now and then some read by the consumer.
    // (Four times the records for numbers: smaller records, as many bytes in flight.)
    const scale = numbers ? 4 : 1;
    const before = (100 + Math.floor(next() * 400)) * scale;
    while (emitted.length < before) {
      emit((1 + Math.floor(next() * 40)) * scale);
      await tick();
      pull(false);
      for (let k = Math.floor(next() * 6); k > 0 && step(); k--);
    }
    // Odd seeds as a task does it: the overtaken chunks kept as bytes, through a channel state file (version 2).
    const viaFile = seed % 2 === 1;
    const outputState = new Map<string, unknown[]>();
    const outputBytes = new Map<string, OvertakenOutput>();
    writer.broadcastPriorityEvent(barrier(1, { unaligned: true }), viaFile ? undefined : outputState, viaFile ? outputBytes : undefined);
    const chunkBytes = outputBytes.get(A)?.bytes?.length ?? 0;
    if (viaFile) {
      const h = await writeChannelState(tempDir("tm-overtake-"), 0, new Map(), outputBytes);
      for (const ch of h ? readChannelState(h) : []) outputState.set(channelId("job", ch.edgeId, ch.producer, ch.consumer), ch.records);
    }
    const beforeBarrier = [...emitted];
    emit(30); // after the barrier: in no state of checkpoint 1
    writer.flush();
    // The consumer reads its backlog up to the barrier (its ring is full: a read frees the slot the barrier needs).
    for (let rounds = 0; snap.taken === null; rounds++) {
      if (rounds > 10_000) throw new Error(`seed ${seed}: the barrier never arrived`);
      // A slow consumer: its ring reader gets in several times per buffer it reads.
      for (let k = 0; k < 4; k++) {
        await tick();
        pull(true);
      }
      step();
    }
    const t = snap.taken;
    // Complete at once: nothing that arrives after the barrier is the consumer's to record.
    let input = await Promise.race([t.state, Bun.sleep(2000).then(() => null)]);
    expect(input).not.toBeNull();
    let rawRuns = 0;
    if (rawInput) {
      expect(input).toBeInstanceOf(RecordedChannelState);
      const parts = (input as RecordedChannelState).parts;
      rawRuns = (parts.get(A) ?? []).filter((p) => "bytes" in p).length;
      const h = await writeChannelState(tempDir("tm-overtake-in-"), 0, new Map(), undefined, parts);
      input = new Map();
      for (const ch of h ? readChannelState(h) : []) input.set(A, [...(input.get(A) ?? []), ...ch.records]);
    }
    // Each record written before the barrier is exactly once in: read before the snapshot, the consumer's input
    // channel state, or the producer's output channel state, in this order.
    expect([...t.readSoFar, ...(input!.get(A) ?? []), ...(outputState.get(A) ?? [])]).toEqual(beforeBarrier);
    // The overtaken buffers still reach the consumer and are read after the snapshot, in order.
    for (let rounds = 0; read.length < emitted.length; rounds++) {
      if (rounds > 100_000) throw new Error(`seed ${seed}: ${read.length} of ${emitted.length} records read`);
      writer.flush(); // the buffer time-out's part
      await tick();
      pull(false);
      while (step());
    }
    expect(read).toEqual(emitted);
    expect(errors).toEqual([]);
    const serializer = (writer as unknown as { subs: { serializer: RecordSerializer }[] }).subs[0]!.serializer;
    return { partial: t.partial, input: input!.get(A)?.length ?? 0, output: outputState.get(A)?.length ?? 0, typed: serializer.typedChunks, msgpack: serializer.msgpackChunks, direct: writer.directChunks, chunkBytes, rawRuns };
  }

  test("every record written before the barrier is exactly once in what was read, the input or the output channel state, a chunk spanning the overtake point included", async () => {
    const runs = [];
    for (let seed = 1; seed <= 40; seed++) runs.push(await overtake(seed));
    // The cases this covers all occurred: overtaken records, records in the consumer's backlog, and a chunk that
    // began in a buffer the consumer has and ends in one the barrier overtook.
    expect(runs.filter((r) => r.output > 0).length).toBeGreaterThan(10);
    expect(runs.filter((r) => r.input > 0).length).toBeGreaterThan(10);
    expect(runs.filter((r) => r.partial && r.output > 0).length).toBeGreaterThan(3);
    // Half of the seeds kept the overtaken chunks as bytes in a version 2 file, decoded when read; half recorded the
    // input channel state as bytes (runs from where the consumer's stream stood, a chunk begun earlier included).
    expect(runs.filter((r) => r.chunkBytes > 0).length).toBeGreaterThan(5);
    expect(runs.filter((r) => r.rawRuns > 0 && r.input > 0).length).toBeGreaterThan(5);
    expect(runs.filter((r) => r.rawRuns > 0 && r.partial).length).toBeGreaterThan(1);
  }, 60_000);

  test("the same with typed chunks (an inferred layout) mixed with msgpack ones: the overtaken typed chunks decode from their chunk boundary", async () => {
    const runs = [];
    for (let seed = 1; seed <= 40; seed++) runs.push(await overtake(seed, true));
    expect(runs.filter((r) => r.output > 0).length).toBeGreaterThan(10);
    expect(runs.filter((r) => r.partial && r.output > 0).length).toBeGreaterThan(3);
    expect(runs.every((r) => r.typed > 0 && r.msgpack > 0)).toBe(true);
    expect(runs.filter((r) => r.chunkBytes > 0).length).toBeGreaterThan(5);
    expect(runs.filter((r) => r.rawRuns > 0 && r.input > 0).length).toBeGreaterThan(5);
    expect(runs.reduce((a, r) => a + r.typed, 0)).toBeGreaterThan(runs.reduce((a, r) => a + r.msgpack, 0));
  }, 60_000);

  test("the same with fixed-size typed records written straight into the buffers, between msgpack chunks", async () => {
    const runs = [];
    for (let seed = 1; seed <= 40; seed++) runs.push(await overtake(seed, true, true));
    expect(runs.every((r) => r.direct > 0 && r.msgpack > 0)).toBe(true);
    expect(runs.filter((r) => r.output > 0).length).toBeGreaterThan(10);
    expect(runs.filter((r) => r.input > 0).length).toBeGreaterThan(10);
    expect(runs.filter((r) => r.chunkBytes > 0).length).toBeGreaterThan(5);
    expect(runs.filter((r) => r.rawRuns > 0 && r.input > 0).length).toBeGreaterThan(5);
  }, 60_000);

  test("a barrier that finds the data ring full reaches the consumer through the priority ring at once, in its place in the channel", async () => {
    const segment = 512;
    const ring = createRing(2, segment);
    const priority = createRing(PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES);
    const pool = new LocalBufferPool(8, segment, 0);
    const writer = new RecordWriter([A], () => 0, pool, false, 8);
    writer.keepInFlight = true;
    const errors: unknown[] = [];
    writer.connect(A, new RingSender(ring, (buf) => writer.recycle(buf, A), (e) => errors.push(e), priority));
    const gate = new InputGate([A]);
    const receiver = receiveFromRing(ring, A, gate, (e) => errors.push(e), priority);
    const emitted = Array.from({ length: 200 }, (_, i) => ({ i, s: "r".repeat(i % 37) }));
    // Chunks of 5 records, each buffer finished after them (the buffer time-out's part): whole chunks per buffer.
    emitted.forEach((r, i) => {
      writer.emit(r);
      if (i % 5 === 4) writer.flush();
    });
    const outputState = new Map<string, unknown[]>();
    writer.broadcastPriorityEvent(barrier(7, { unaligned: true }), outputState);
    receiver.poll(); // what the task's timer does: nothing has been read, so the data ring is still full
    let taken: Promise<Map<string, unknown[]>> | null = null;
    const handler = createBarrierHandler("unaligned", gate, [A], {
      takeCheckpoint: (_b, state) => (taken = state),
      abortCheckpoint: (id, reason) => errors.push(new Error(`abort ${id}: ${reason}`)),
    });
    const first = gate.poll();
    expect(first !== null && "event" in first && first.event.type).toBe("barrier"); // ahead of the two buffers
    handler.onBarrier(A, (first as { event: Barrier }).event);
    const input = await taken!;
    // The two buffers in the ring are the consumer's; everything after them the producer's.
    expect(input.get(A)!.length).toBeGreaterThan(0);
    expect(outputState.get(A)!.length).toBeGreaterThan(0);
    expect([...input.get(A)!, ...outputState.get(A)!]).toEqual(emitted);
    expect(errors).toEqual([]);
  });

  test("a writer that keeps its in-flight records drops those whose bytes are in the ring (memory stays bounded)", () => {
    const pool = new LocalBufferPool(4, 1024, 0);
    const writer = new RecordWriter([A], () => 0, pool, false, 4);
    writer.keepInFlight = true;
    // A consumer that keeps up: every buffer is in the ring (and recycled) at once.
    writer.connect(A, { buffer: (ch, buf) => writer.recycle(buf, ch), event() {}, priorityEvent() {}, waitingBytes: () => 0 });
    for (let i = 0; i < 100_000; i++) writer.emit({ i });
    // 1 KiB buffers: many chunks cross a buffer boundary and are kept by reference until their bytes are in the ring.
    const sp = (writer as unknown as { subs: { spanning: unknown[]; shapes: unknown[] }[] }).subs[0]!;
    expect(sp.spanning.length).toBeLessThanOrEqual(32);
    expect(sp.shapes.length).toBeLessThanOrEqual(32);
    // Nothing is in flight: a barrier now has no output channel state.
    writer.flush();
    const out = new Map<string, unknown[]>();
    writer.broadcastPriorityEvent(barrier(1, { unaligned: true }), out);
    expect(out.size).toBe(0);
  });

  test("restore: the output channel state goes to old subtask i % parallelism; a task's files hold input and output channels apart", async () => {
    const dir = tempDir("tm-outstate-");
    const IN = 2, OUT = 3;
    // Old subtask 1 of a vertex with an input edge 2 and an output edge 3 (to consumers 0 and 1).
    const h = (await writeChannelState(dir, 1, new Map<string, unknown[]>([
      [channelId("job", IN, 0, 1), ["in-a", "in-b"]],
      [channelId("job", OUT, 1, 0), ["out-0a", "out-0b"]],
      [channelId("job", OUT, 1, 1), ["out-1a"]],
    ])))!;
    const inputEdges = new Map([[IN, { owner: (_r: unknown, oldConsumer: number) => oldConsumer % 2 }]]);
    // Same parallelism: subtask 1 gets all of it back, subtask 0 nothing.
    expect(splitChannelState([h], inputEdges, new Set([OUT]), 1, 2)).toEqual({
      input: ["in-a", "in-b"],
      output: [{ edgeId: OUT, consumer: 0, records: ["out-0a", "out-0b"] }, { edgeId: OUT, consumer: 1, records: ["out-1a"] }],
    });
    expect(splitChannelState([h], inputEdges, new Set([OUT]), 0, 2)).toEqual({ input: [], output: [] });
    // Down to parallelism 1: subtask 0 gets the output channel state of old subtask 1.
    expect(splitChannelState([h], new Map([[IN, { owner: () => 0 }]]), new Set([OUT]), 0, 1).output.map((o) => o.records)).toEqual([["out-0a", "out-0b"], ["out-1a"]]);
    // The input-only reader leaves the output channels out.
    expect(channelStateFor([h], inputEdges, 1)).toEqual(["in-a", "in-b"]);
  });
});

describe("channel state files", () => {
  test("round trip; split by key group at another parallelism; truncated or missing files are refused by path", async () => {
    const dir = tempDir("tm-chstate-");
    const state = new Map<string, unknown[]>([
      [channelId("job", 3, 0, 0), Array.from({ length: 200 }, (_, i) => ({ key: `k${i % 17}`, n: i }))],
      [channelId("job", 3, 1, 0), [{ key: "k1", n: 1000 }, { key: "k2", n: 1001 }]],
    ]);
    const h = (await writeChannelState(dir, 0, state))!;
    expect(h.records).toBe(202);
    expect(readChannelState(h).map((c) => [c.edgeId, c.producer, c.consumer, c.records.length])).toEqual([[3, 0, 0, 200], [3, 1, 0, 2]]);
    const maxP = 128;
    const owner = (p: number) => new Map([[3, { owner: (r: unknown) => operatorIndexForKeyGroup(keyGroupOf((r as { key: string }).key, maxP), p, maxP) }]]);
    const parts = [0, 1, 2].map((i) => channelStateFor([h], owner(3), i));
    expect(parts.flat().length).toBe(202);
    for (let i = 0; i < 3; i++) for (const r of parts[i]! as { key: string }[]) expect(operatorIndexForKeyGroup(keyGroupOf(r.key, maxP), 3, maxP)).toBe(i);
    // Order within a key is kept (a channel's records replay in order).
    const k1 = parts.flat().filter((r) => (r as { key: string }).key === "k1").map((r) => (r as { n: number }).n);
    expect(k1).toEqual([...k1].sort((a, b) => a - b));

    expect(await writeChannelState(dir, 1, new Map())).toBeNull();
    fs.truncateSync(h.file, h.sizeBytes - 10);
    expect(() => readChannelState(h)).toThrow(new RegExp(`channel state ${h.file} is truncated or damaged`));
    fs.rmSync(h.file);
    expect(() => readChannelState(h)).toThrow(new RegExp(`channel state ${h.file} cannot be read`));
    expect(path.dirname(h.file)).toBe(dir);
  });

  test("version 2: output and input chunks kept as bytes decode on read; a truncated file, damaged chunks or a wrong count are refused by path; version 1 files still read", async () => {
    const dir = tempDir("tm-chstate2-");
    const OUT = 4;
    // The producer's overtaken part as its writer holds it: a spanning chunk's records, then whole chunks as bytes.
    const ser = new RecordSerializer();
    const recs = Array.from({ length: 300 }, (_, i) => ({ id: i, name: `n${i % 7}`, ...(i % 50 === 0 ? { extra: i } : {}) }));
    const frames: Uint8Array[] = [];
    for (let i = 0; i < recs.length; i += 64) {
      const body = ser.serialize(recs.slice(i, i + 64));
      const f = new Uint8Array(4 + body.length);
      new DataView(f.buffer).setUint32(0, body.length);
      f.set(body, 4);
      frames.push(f);
    }
    const bytes = new Uint8Array(frames.reduce((a, f) => a + f.length, 0));
    let at = 0;
    for (const f of frames) (bytes.set(f, at), (at += f.length));
    const output = new Map<string, OvertakenOutput>([[channelId("job", OUT, 0, 1), { records: ["spanning-a", "spanning-b"], bytes, shapes: [] }]]);
    const input = new Map<string, unknown[]>([[channelId("job", 2, 1, 0), ["in-a"]]]);
    const h = (await writeChannelState(dir, 0, input, output))!;
    expect(h.records).toBe(3); // records kept as records; the chunks' are counted when decoded
    expect(readChannelState(h)).toEqual([
      { edgeId: 2, producer: 1, consumer: 0, records: ["in-a"] },
      { edgeId: OUT, producer: 0, consumer: 1, records: ["spanning-a", "spanning-b", ...recs] },
    ]);
    expect(splitChannelState([h], new Map(), new Set([OUT]), 0, 1).output).toEqual([{ edgeId: OUT, consumer: 1, records: ["spanning-a", "spanning-b", ...recs] }]);
    // A damaged chunk (its length prefix made larger than what follows), the file's size unchanged.
    const good = fs.readFileSync(h.file);
    const damaged = Buffer.from(good);
    const lenAt = damaged.indexOf(Buffer.from(bytes.subarray(0, 8)));
    expect(lenAt).toBeGreaterThan(0);
    damaged[lenAt] = 0x7f;
    fs.writeFileSync(h.file, damaged);
    expect(() => readChannelState(h)).toThrow(new RegExp(`channel state ${h.file} is damaged: the channel ${OUT}/0->1`));
    fs.writeFileSync(h.file, good.subarray(0, good.length - 100));
    expect(() => readChannelState(h)).toThrow(new RegExp(`channel state ${h.file} is truncated or damaged`));
    expect(channelStateProblem(h)).toMatch(new RegExp(`channel state ${h.file} has ${good.length - 100} bytes`));
    // Input channel state recorded as bytes (a run with the number of records it holds, checked when decoded).
    const IN = 2;
    const inParts = (count: number) => new Map([[channelId("job", IN, 1, 0), [{ records: ["first"] }, { bytes, shapes: [], count }]]]);
    fs.mkdirSync(path.join(dir, "in"));
    const hi = (await writeChannelState(path.join(dir, "in"), 0, new Map(), undefined, inParts(recs.length)))!;
    expect(hi.records).toBe(1 + recs.length);
    expect(readChannelState(hi).flatMap((c) => c.records)).toEqual(["first", ...recs]);
    expect(splitChannelState([hi], new Map([[IN, { owner: () => 0 }]]), new Set(), 0, 1).input).toEqual(["first", ...recs]);
    const hw = (await writeChannelState(path.join(dir, "in"), 1, new Map(), undefined, inParts(recs.length - 1)))!;
    expect(() => readChannelState(hw)).toThrow(new RegExp(`channel state ${hw.file} is damaged: the channel ${IN}/1->0: ${recs.length} records in its chunks, ${recs.length - 1} recorded`));
    // A version 1 file (records only) as earlier versions wrote it is still read; an unknown version is refused.
    const packr = () => new Packr({ sequential: true, useRecords: true } as ConstructorParameters<typeof Packr>[0]);
    const v1 = packr().pack({ magic: "tm-channel-state", version: 1, count: 2, channels: [{ edgeId: OUT, producer: 0, consumer: 1, records: ["x", "y"] }] });
    const f1 = path.join(dir, "channel-state-v1");
    fs.writeFileSync(f1, v1);
    const h1 = { type: "channel" as const, file: f1, sizeBytes: v1.length, records: 2, subtaskIndex: 0 };
    expect(readChannelState(h1)).toEqual([{ edgeId: OUT, producer: 0, consumer: 1, records: ["x", "y"] }]);
    const v3 = packr().pack({ magic: "tm-channel-state", version: 3, count: 0, channels: [] });
    fs.writeFileSync(f1, v3);
    expect(() => readChannelState({ ...h1, sizeBytes: v3.length })).toThrow(new RegExp(`${f1} is not channel state of version 1 or 2 \\(its version is 3\\)`));
  });
});
