// FLIP-147 at the end of a bounded input, with a real StreamTask in this thread (its channels' consumer ends played
// by the test through InputGates): a source past its final checkpoint, whose end of partition is on its channels,
// must not take a newer checkpoint. Its barrier would follow the end; a consumer that had read the end never gets it
// (the ring reader stops at the end, a remote channel is closed after it), and the coordinator does not trigger that
// consumer either (the source still runs), so the checkpoint hung at its other acknowledgements (issue 15: the hang
// of tests/unaligned-sigkill.test.ts with final checkpoints). The task acknowledges it as finished instead.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { prepareJob } from "../src/client/prepare-job.ts";
import { consumersOf, operatorsOf } from "../src/graph/job-graph.ts";
import { PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES, receiveFromRing } from "../src/network/channel-ends.ts";
import { InputGate, type GateItem } from "../src/network/input-gate.ts";
import { createRing } from "../src/network/shared-ring.ts";
import { channelId } from "../src/network/wire.ts";
import type { TaskDeployment } from "../src/rpc/messages.ts";
import { StreamTask } from "../src/runtime/stream-task.ts";
import type { FromWorker } from "../src/runtime/worker-protocol.ts";
import { removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

afterAll(removeTempDirs);

const SEG = 4096;

/** Reads a gate until `until` says stop (after handing it the item); returns what was read, events by name. */
async function readUntil(gate: InputGate, until: (item: GateItem) => boolean, timeoutMs = 30_000): Promise<string[]> {
  const seen: string[] = [];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const item = gate.poll();
    if (item === null) {
      if (Date.now() > deadline) throw new Error(`gate: nothing more after ${seen.slice(-5).join(", ")}`);
      await Promise.race([gate.waitNext(), new Promise((r) => setTimeout(r, 50))]);
      continue;
    }
    if ("event" in item) seen.push(item.event.type === "barrier" || item.event.type === "cancelBarrier" ? `${item.event.type} ${item.event.checkpointId}` : item.event.type);
    if (until(item)) return seen;
  }
}

test("a source past its final checkpoint answers a later trigger as finished, with no barrier after its end of partition", async () => {
  const dir = tempDir("tm-final-finishing-");
  const job = writeJob(dir, "bounded.ts", `
    export default (env) => {
      env.enableCheckpointing(1000);
      env.fromSequence(1, 2000).keyBy((x) => x % 7).process({ processElement() {} });
    };`);
  const g = (await prepareJob(job, [], 2)).graph;
  const v = g.vertices.find((x) => x.isSource)!;
  const edge = g.edges.find((e) => e.source === v.id)!;
  const consumers = consumersOf(edge.partitioner, 0, v.parallelism, g.vertices[edge.target]!.parallelism);
  expect(consumers).toEqual([0, 1]);
  const d: TaskDeployment = {
    jobId: "job1", jobName: g.name, executionId: "job1-0-0-0", vertexId: v.id, vertexName: v.name, subtaskIndex: 0, parallelism: v.parallelism,
    maxParallelism: g.maxParallelism, slot: 0, artifactHash: "", jobArgs: [], operatorIds: v.operatorIds, operators: operatorsOf(v), inputs: [],
    outputs: [{ edgeId: edge.id, partitioner: edge.partitioner, ...(edge.keyNodeId !== undefined ? { keyNodeId: edge.keyNodeId } : {}), targets: consumers.map((s) => ({ resourceId: "tm", dataHost: "127.0.0.1", dataPort: 0, subtask: s })) }],
    runtimeMode: g.runtimeMode, bufferTimeoutMs: g.bufferTimeoutMs, planFingerprint: g.planFingerprint, stateBackend: null, attempt: 0,
    checkpointingMode: "EXACTLY_ONCE", unalignedCheckpoints: true, finalCheckpoint: true, restore: null,
  };
  const posted: FromWorker[] = [];
  const stateDir = path.join(dir, "state");
  fs.mkdirSync(stateDir);
  const task = new StreamTask(d, { segmentSize: SEG, outputBuffers: [8], maxOverdraft: 0, maxBuffersPerChannel: 10 }, { backend: "heap", dir: stateDir, cacheBytes: 1 << 20 }, (m) => void posted.push(m));
  await task.init(job);
  const failures: unknown[] = [];
  const gates = consumers.map((s) => {
    const channel = channelId("job1", edge.id, 0, s);
    const ring = createRing(4, SEG);
    const priority = createRing(PRIORITY_RING_SLOTS, PRIORITY_RING_SLOT_BYTES);
    const gate = new InputGate([channel]);
    receiveFromRing(ring, channel, gate, (e) => failures.push(e), priority);
    return { channel, ring, priority, gate };
  });
  task.onMessage({ type: "connect", consume: [], produce: gates.map(({ channel, ring, priority }) => ({ channel, ring, priority })) });
  const running = task.run();
  const trigger = (id: number) => {
    const chk = path.join(dir, "checkpoints", `chk-${id}`);
    fs.mkdirSync(chk, { recursive: true });
    task.onMessage({ type: "checkpoint", checkpointId: id, timestamp: Date.now(), dir: chk, unaligned: true });
  };
  const answer = (id: number) => posted.find((m) => (m.type === "checkpointAck" || m.type === "checkpointDecline") && m.checkpointId === id);

  // Both consumers read all records and the end of data; the source waits for its final checkpoint.
  const a = gates[0]!, b = gates[1]!;
  const seenA = await readUntil(a.gate, (i) => "event" in i && i.event.type === "endOfData");
  const seenB = await readUntil(b.gate, (i) => "event" in i && i.event.type === "endOfData");
  // Checkpoint 1 is its final one: taken with state, its barrier on both channels.
  trigger(1);
  const ack1 = await waitFor("checkpoint 1 answered", () => answer(1));
  expect(ack1.type).toBe("checkpointAck");
  expect(ack1.type === "checkpointAck" && ack1.snapshot.finished).toBeFalsy();
  expect(ack1.type === "checkpointAck" && ack1.snapshot.operators.length).toBeGreaterThan(0);
  // It completes: the source sends end of partition. Consumer A reads it; consumer B has not yet (a slow consumer).
  task.onMessage({ type: "checkpointComplete", checkpointId: 1 });
  seenA.push(...(await readUntil(a.gate, (i) => "event" in i && i.event.type === "end")));
  expect(seenA.filter((e) => e !== "watermark")).toEqual(["endOfData", "barrier 1", "end"]);
  // Checkpoint 2 was triggered at the source alone (it was still running): answered as finished, no barrier.
  trigger(2);
  const ack2 = await waitFor("checkpoint 2 answered", () => answer(2));
  expect(ack2).toEqual({ type: "checkpointAck", checkpointId: 2, snapshot: { operators: [], finished: true } });
  // Consumer B sees the same as A: nothing of checkpoint 2, before or after the end.
  seenB.push(...(await readUntil(b.gate, (i) => "event" in i && i.event.type === "end")));
  expect(seenB.filter((e) => e !== "watermark")).toEqual(["endOfData", "barrier 1", "end"]);
  await running;
  // A trigger after the task ended is answered the same way.
  trigger(3);
  expect(await waitFor("checkpoint 3 answered", () => answer(3))).toEqual({ type: "checkpointAck", checkpointId: 3, snapshot: { operators: [], finished: true } });
  expect(fs.readdirSync(path.join(dir, "checkpoints", "chk-2"))).toEqual([]);
  expect(failures).toEqual([]);
}, 60_000);
