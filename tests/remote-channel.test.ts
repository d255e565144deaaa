// A remote channel between two ShuffleEnvironments (two TaskManagers' network stacks) over real TCP on
// 127.0.0.1, with the tasks' ends played by the test: the producer writes with a RecordWriter into the ring the
// environment hands it, the consumer reads its ring through an InputGate when the test says so. Covers the order
// in which tasks are wired (the consumer's credit arriving before the producer exists), credit and backpressure
// when the consumer does not read, and order of records and events across the whole path.
import { afterEach, describe, expect, test } from "bun:test";
import { InputGate, type GateItem } from "../src/network/input-gate.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { OvertakenInbox, PRIORITY_RING_SLOT_BYTES, PRIORITY_RING_SLOTS, receiveFromRing, RingSender } from "../src/network/channel-ends.ts";
import { RemoteReceiver } from "../src/network/remote-receiver.ts";
import { createRing, RingReader } from "../src/network/shared-ring.ts";
import { RecordWriter, type ChannelEvent } from "../src/network/record-writer.ts";
import { ShuffleEnvironment, type TaskEndpoint } from "../src/network/shuffle-environment.ts";
import type { TaskDeployment } from "../src/rpc/messages.ts";
import { channelId, DATA_FRAME, type ConnectChannels } from "../src/network/wire.ts";
import { waitFor } from "./helpers.ts";

const SEG = 4096;
const OPTIONS = { segmentSize: SEG, totalBuffers: 256, buffersPerChannel: 2, floatingBuffersPerGate: 8, maxOverdraftBuffers: 0, maxBuffersPerChannel: 10 };
const envs: ShuffleEnvironment[] = [];

afterEach(async () => {
  for (const e of envs.splice(0)) await e.transport.stop();
});

async function environment(id: string): Promise<{ env: ShuffleEnvironment; target: { resourceId: string; dataHost: string; dataPort: number } }> {
  const env = new ShuffleEnvironment(id, OPTIONS);
  envs.push(env);
  const port = await env.transport.start("127.0.0.1", 0);
  return { env, target: { resourceId: id, dataHost: "127.0.0.1", dataPort: port } };
}

function deployment(subtaskIndex: number, io: Pick<TaskDeployment, "inputs" | "outputs">): TaskDeployment {
  return {
    jobId: "job1", jobName: "t", executionId: `e${subtaskIndex}-${io.inputs.length}`, vertexId: io.inputs.length, vertexName: "v", subtaskIndex,
    parallelism: 1, maxParallelism: 128, slot: 0, artifactHash: "", jobArgs: [], operatorIds: [], runtimeMode: "streaming",
    bufferTimeoutMs: 0, planFingerprint: "", stateBackend: null, attempt: 0, checkpointingMode: "EXACTLY_ONCE", restore: null, ...io,
  };
}

/** A task whose Worker side is the test: it keeps the connect messages and any failure, and the overtaken buffers (as StreamTask). */
function endpoint(d: TaskDeployment) {
  const connects: ConnectChannels[] = [];
  const failures: Error[] = [];
  const inbox = new OvertakenInbox();
  const onOvertaken: (() => void)[] = [];
  /** Per priority event with overtaken buffers: how many. */
  const overtakenPosts: number[] = [];
  const task: TaskEndpoint = {
    deployment: d,
    post: (msg) => {
      if (msg.type === "connect") connects.push(msg);
      if (msg.type === "overtaken") {
        // A message to a Worker: handled in a later turn, copied.
        const copy = msg.buffers.map((b) => b.slice());
        overtakenPosts.push(copy.length);
        setTimeout(() => {
          inbox.put(msg.channel, msg.id, copy);
          for (const f of onOvertaken) f();
        }, 1);
      }
    },
    fail: (err) => failures.push(err),
  };
  return { task, connects, failures, inbox, onOvertaken, overtakenPosts };
}

const CH = channelId("job1", 0, 0, 0);

async function remoteChannel(order: "consumer-first" | "producer-first", unaligned = false) {
  const a = await environment("tm-a"); // producer side
  const b = await environment("tm-b"); // consumer side
  const u = unaligned ? { unalignedCheckpoints: true } : {};
  const producer = endpoint({ ...deployment(0, { inputs: [], outputs: [{ edgeId: 0, partitioner: "forward", targets: [{ ...b.target, subtask: 0 }] }] }), ...u });
  const consumer = endpoint({ ...deployment(0, { inputs: [{ edgeId: 0, producers: [{ ...a.target, subtask: 0 }] }], outputs: [] }), ...u });
  const wireProducer = () => {
    a.env.reserve(producer.task);
    a.env.wire(producer.task);
  };
  const wireConsumer = () => {
    b.env.reserve(consumer.task);
    b.env.wire(consumer.task);
  };
  if (order === "consumer-first") {
    wireConsumer();
    // The consumer's first credit (its partition request) reaches tm-a before the producer is there.
    await waitFor("the partition request at the producer's TaskManager", () => a.env.hasEarlyCredit(CH), 10_000);
    wireProducer();
  } else {
    wireProducer();
    wireConsumer();
  }
  const produce = producer.connects.flatMap((c) => c.produce);
  const consume = consumer.connects.flatMap((c) => c.consume);
  expect(produce.map((r) => r.channel)).toEqual([CH]);
  expect(consume.map((r) => r.channel)).toEqual([CH]);

  const pool = new LocalBufferPool(OPTIONS.buffersPerChannel + OPTIONS.floatingBuffersPerGate, SEG, 0);
  const writer = new RecordWriter([CH], () => 0, pool, false, OPTIONS.maxBuffersPerChannel);
  const errors: unknown[] = [];
  writer.keepInFlight = unaligned;
  expect(produce[0]!.priority !== undefined).toBe(unaligned);
  expect(consume[0]!.priority !== undefined).toBe(unaligned);
  writer.connect(CH, new RingSender(produce[0]!.ring, (buf) => writer.recycle(buf, CH), (e) => errors.push(e), produce[0]!.priority, produce[0]!.remote === true));
  const gate = new InputGate([CH]);
  const receiver = receiveFromRing(consume[0]!.ring, CH, gate, (e) => errors.push(e), consume[0]!.priority, consume[0]!.remote ? consumer.inbox : undefined);
  consumer.onOvertaken.push(() => receiver.poll());
  const got: unknown[] = [];
  const read = () => {
    for (let item: GateItem | null = gate.poll(); item !== null; item = gate.poll()) {
      if ("event" in item) got.push({ ev: item.event });
      else got.push(...item.records);
    }
  };
  return { writer, pool, gate, got, read, errors, producer, consumer, receiver, a, b };
}

/** Writes n records (and a watermark every 1000) as a source would: pausing while the writer is backpressured. */
async function produceRecords(writer: RecordWriter, n: number): Promise<unknown[]> {
  const sent: unknown[] = [];
  for (let i = 0; i < n; i++) {
    while (writer.backpressured) await writer.waitAvailable();
    const r = { i, pad: "x".repeat(i % 97) };
    writer.emit(r);
    sent.push(r);
    if (i % 1000 === 999) {
      const wm: ChannelEvent = { type: "watermark", timestamp: i };
      writer.broadcastEvent(wm);
      sent.push({ ev: wm });
    }
  }
  await writer.finish();
  sent.push({ ev: { type: "end" } });
  return sent;
}

describe("remote channel over TCP through rings at both ends", () => {
  for (const order of ["producer-first", "consumer-first"] as const) {
    test(`${order}: every record and event arrives once, in order`, async () => {
      const c = await remoteChannel(order);
      const sending = produceRecords(c.writer, 20_000);
      await waitFor("the channel's end", () => {
        c.read();
        return c.gate.finished;
      }, 20_000, 2);
      expect(c.got).toEqual(await sending);
      expect(c.errors).toEqual([]);
      expect(c.producer.failures).toEqual([]);
      expect(c.consumer.failures).toEqual([]);
    }, 30_000);
  }

  test("a consumer that reads nothing stops the producer (its ring, the network buffers, credit, then its pool); reading again lets everything through", async () => {
    const c = await remoteChannel("producer-first");
    const sending = produceRecords(c.writer, 5_000);
    // Nothing is read: the consumer's ring (10 slots), its network buffers (2 + 8 floating) and the producer's
    // ring (10) fill, then the producer's pool; the writer stays backpressured.
    await waitFor("the producer backpressured", () => c.writer.backpressured && c.pool.inUse === c.pool.size, 10_000);
    // Nothing may move while nobody reads: an absence, so it is watched for a while rather than waited for.
    await new Promise((r) => setTimeout(r, 300));
    expect(c.writer.backpressured).toBe(true);
    expect(c.gate.queuedBuffers).toBeLessThanOrEqual(10); // only the ring's slots ever reach the gate
    await waitFor("the channel's end", () => {
      c.read();
      return c.gate.finished;
    }, 20_000, 2);
    expect(c.got).toEqual(await sending);
  }, 30_000);
});

/** Emits records until the writer stays backpressured (nobody reads meanwhile). */
async function fill(writer: RecordWriter, sent: unknown[]): Promise<void> {
  for (;;) {
    if (writer.backpressured) {
      await new Promise((r) => setTimeout(r, 30));
      if (writer.backpressured) return;
      continue;
    }
    for (let k = 0; k < 50; k++) {
      const r = { i: sent.length, pad: "y".repeat(sent.length % 113) };
      writer.emit(r);
      sent.push(r);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

describe("remote channel with unaligned checkpoints: a priority event overtakes what waits on both TaskManagers", () => {
  const barrier = (checkpointId: number): ChannelEvent => ({ type: "barrier", checkpointId, timestamp: Date.now(), dir: "/tmp/x", unaligned: true });

  test("under full backpressure the barrier reaches the consumer's gate at once; its channel state (input + output) splits the records exactly", async () => {
    const c = await remoteChannel("producer-first", true);
    const sent: unknown[] = [];
    // Nothing is read: the consumer's ring, its network buffers, the producer's ring and its pool all fill.
    await fill(c.writer, sent);
    expect(c.pool.inUse).toBe(c.pool.size);
    const before = sent.length;
    const output = new Map<string, unknown[]>();
    c.writer.broadcastPriorityEvent(barrier(1), output);
    // The consumer reads nothing, yet the barrier arrives (the ring reader is polled as the task's timer would).
    await waitFor("the barrier at the head of the consumer's gate", () => {
      c.receiver.poll();
      return c.gate.priorityWaiting;
    }, 10_000, 5);
    const first = c.gate.poll();
    expect(first).toEqual({ channel: CH, event: expect.objectContaining({ type: "barrier", checkpointId: 1 }) });
    // The snapshot is taken here: the input channel state is complete at once, nothing having been read.
    let input: Map<string, unknown[]> | null = null;
    c.gate.startRecording(1, (s) => (input = s));
    expect(input).not.toBeNull();
    const inRecords = input!.get(CH) ?? [];
    const outRecords = output.get(CH) ?? [];
    // Everything emitted before the barrier is in flight: the consumer's part (its ring, its TaskManager's buffers and
    // what waited for credit on the producer's) then the producer's (what its Worker still held), in order.
    expect(inRecords.length).toBeGreaterThan(0);
    expect(outRecords.length).toBeGreaterThan(0);
    expect([...inRecords, ...outRecords]).toEqual(sent.slice(0, before));
    // The barrier overtook the buffers waiting on both TaskManagers: the consumer's network buffers and the producer's
    // remote ring (the Worker's ring held the rest before it).
    expect(c.consumer.overtakenPosts.length).toBe(1);
    expect(c.consumer.overtakenPosts[0]).toBeGreaterThan(5);
    expect(c.gate.queuedBuffers).toBeLessThanOrEqual(10);
    const after = produceRecords(c.writer, 2_000);
    await waitFor("the channel's end", () => {
      c.read();
      return c.gate.finished;
    }, 20_000, 2);
    // The records then arrive once each, in order, as without the barrier.
    expect(c.got).toEqual([...sent, ...(await after)]);
    expect(c.errors).toEqual([]);
    expect(c.producer.failures).toEqual([]);
    expect(c.consumer.failures).toEqual([]);
  }, 30_000);

  test("barriers in a row, the consumer reading a little between them: each one's state is the records before it not read yet", async () => {
    const c = await remoteChannel("consumer-first", true);
    const sent: unknown[] = [];
    let read = 0;
    for (let n = 1; n <= 4; n++) {
      await fill(c.writer, sent);
      const upTo = sent.length;
      const output = new Map<string, unknown[]>();
      c.writer.broadcastPriorityEvent(barrier(n), output);
      await waitFor(`barrier ${n} in the gate`, () => {
        c.receiver.poll();
        return c.gate.priorityWaiting;
      }, 10_000, 2);
      read = c.got.length;
      expect(c.gate.poll()).toEqual({ channel: CH, event: expect.objectContaining({ checkpointId: n }) });
      let input: Map<string, unknown[]> | null = null;
      c.gate.startRecording(n, (s) => (input = s));
      expect(input).not.toBeNull();
      expect([...(input!.get(CH) ?? []), ...(output.get(CH) ?? [])]).toEqual(sent.slice(read, upTo));
      // Read a part of the backlog before the next barrier.
      for (let k = 0; k < 3; k++) {
        const item = c.gate.poll();
        if (item && "records" in item) c.got.push(...item.records);
      }
    }
    const rest = produceRecords(c.writer, 500);
    await waitFor("the channel's end", () => {
      c.read();
      return c.gate.finished;
    }, 20_000, 2);
    expect(c.got).toEqual([...sent, ...(await rest)]);
    expect(c.consumer.overtakenPosts.length).toBe(4);
    expect(c.errors).toEqual([]);
  }, 30_000);
});

describe("remote channel with unaligned checkpoints: bad overtaken buffers are refused naming the channel", () => {
  const barrier: ChannelEvent = { type: "barrier", checkpointId: 1, timestamp: 1, dir: "/tmp/x", unaligned: true };
  const cases: [string, unknown[][], RegExp][] = [
    ["a buffer larger than a segment", [[DATA_FRAME.OVERTAKEN, CH, new Uint8Array(SEG + 1)]], /overtaken buffer frame for job1\|0\|0\|0 is larger than a buffer \(4097 bytes\)/],
    ["no bytes", [[DATA_FRAME.OVERTAKEN, CH, "abc"]], /overtaken buffer frame for job1\|0\|0\|0 carries no bytes/],
    // The producer's remote ring has at most buffers-per-channel + floating-buffers-per-gate = 10 slots.
    ["more than a ring holds", Array.from({ length: 11 }, () => [DATA_FRAME.OVERTAKEN, CH, new Uint8Array(8)]), /channel job1\|0\|0\|0 sent more than 10 overtaken buffers before a priority event/],
    ["a count that does not match", [[DATA_FRAME.OVERTAKEN, CH, new Uint8Array(8)], [DATA_FRAME.EVENT, CH, barrier, 3]], /channel job1\|0\|0\|0 sent a barrier that overtook 3 buffers, but 1 overtaken buffers came before it/],
    ["a count on an event that is not a priority event", [[DATA_FRAME.EVENT, CH, { type: "watermark", timestamp: 5 }, 1]], /event frame for job1\|0\|0\|0 has a bad count of overtaken buffers 1/],
  ];
  for (const [what, frames, error] of cases) {
    test(what, async () => {
      const c = await remoteChannel("producer-first", true);
      for (const frame of frames) c.a.env.transport.send(c.b.target, frame);
      await waitFor("the consumer failed", () => c.consumer.failures.length > 0, 10_000);
      expect(c.consumer.failures[0]!.message).toMatch(error);
    }, 20_000);
  }

  test("bytes that do not decode as the channel's stream fail the consumer naming the channel", async () => {
    const c = await remoteChannel("producer-first", true);
    c.a.env.transport.send(c.b.target, [DATA_FRAME.OVERTAKEN, CH, new Uint8Array([0, 0, 0, 5, 0xc1, 0xc1, 0xc1, 0xc1, 0xc1])]);
    c.a.env.transport.send(c.b.target, [DATA_FRAME.EVENT, CH, barrier, 1]);
    await waitFor("the consumer's error", () => {
      c.receiver.poll();
      return c.errors.length > 0;
    }, 10_000, 5);
    expect(String(c.errors[0])).toMatch(/input channel job1\|0\|0\|0: overtaken buffer 0 of a barrier does not decode/);
  }, 20_000);
});

describe("remote receiver: priority events that find the priority ring full", () => {
  test("wait in order, hold the data back behind their place, and post their overtaken buffers only as they go in", async () => {
    const posts: { id: number; buffers: number[] }[] = [];
    const failures: Error[] = [];
    const task: TaskEndpoint = {
      deployment: deployment(0, { inputs: [], outputs: [] }),
      post: (msg) => {
        if (msg.type === "overtaken") posts.push({ id: msg.id, buffers: msg.buffers.map((b) => b[0]!) });
      },
      fail: (e) => failures.push(e),
    };
    const receiver = new RemoteReceiver(64, () => {}, 10);
    const ring = createRing(2, 64);
    const priority = createRing(PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES);
    receiver.add(CH, task, { resourceId: "tm-a", dataHost: "127.0.0.1", dataPort: 1 }, receiver.newGate(0), 4, ring, priority);
    // Four buffers: two go into the Worker's ring, two wait in network buffers (H).
    for (let i = 1; i <= 4; i++) receiver.onData(CH, new Uint8Array([i, 0, 0]), 0);
    const barrier = (id: number): ChannelEvent => ({ type: "barrier", checkpointId: id, timestamp: 1, dir: "/d", unaligned: true });
    for (let id = 1; id <= PRIORITY_RING_SLOTS + 2; id++) receiver.onEvent(CH, barrier(id));
    // The ring's four slots took four events, each with H (buffers 3 and 4) posted right before it.
    expect(posts).toEqual([1, 2, 3, 4].map((id) => ({ id, buffers: [3, 4] })));
    const data = new RingReader(ring);
    const events = new RingReader(priority);
    const taken: unknown[] = [];
    const takeEvents = () => {
      for (let e = events.take(); e !== null; e = events.take()) {
        events.release();
        taken.push(e.kind === "event" ? e.event : e);
      }
    };
    // The Worker reads its data ring: room there, but H stays behind the events still waiting for the priority ring.
    for (let k = 0; k < 2; k++) {
      expect(data.take()).toMatchObject({ kind: "buffer" });
      data.release();
    }
    // An absence, so it is watched for a while rather than waited for.
    await new Promise((r) => setTimeout(r, 100));
    expect(data.available).toBe(0);
    takeEvents();
    let early = 0;
    await waitFor("the other two events in the priority ring", () => {
      // Nothing may enter the data ring while an event before it waits for room in the priority ring (data first:
      // the events are published before it).
      if (data.available > 0 && taken.length + events.available < PRIORITY_RING_SLOTS + 2) early++;
      takeEvents();
      return taken.length === PRIORITY_RING_SLOTS + 2;
    }, 10_000, 5);
    expect(early).toBe(0);
    expect(taken.map((e) => (e as { checkpointId: number }).checkpointId)).toEqual([1, 2, 3, 4, 5, 6]);
    // Every event is at the same place (after the two buffers the ring had) and names its posted buffers.
    expect(taken.map((e) => (e as { ringPosition: number }).ringPosition)).toEqual([2, 2, 2, 2, 2, 2]);
    expect(taken.map((e) => (e as { overtaken: number }).overtaken)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(posts.map((p) => p.id)).toEqual([1, 2, 3, 4, 5, 6]);
    // Then H goes into the data ring, after them.
    const rest: number[] = [];
    await waitFor("buffers 3 and 4 in the ring", () => {
      for (let b = data.take(); b !== null; b = data.take()) {
        if (b.kind === "buffer") rest.push(b.bytes[0]!);
        data.release();
      }
      return rest.length === 2;
    }, 10_000, 5);
    expect(rest).toEqual([3, 4]);
    expect(failures).toEqual([]);
  });
});
