// The NATS JetStream source and sink against a real nats-server (tests/servers.ts): a windowed count from one
// stream into another, exactly once with a TaskManager SIGKILLed mid-job (real processes), the output read back
// and compared with the counts computed from the input; a message the deserializer rejects and a stream deleted
// under the job fail it with errors naming what went wrong.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import * as path from "node:path";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { JetStreamSink, JetStreamSource } from "../src/api/index.ts";
import { OperatorStateStore } from "../src/state/operator-state.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { startCluster, startNats, type NatsServer } from "./servers.ts";

const API = JSON.stringify(path.resolve("src/api/index.ts"));
let nats: NatsServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
const enc = new TextEncoder();
const dec = new TextDecoder();

beforeAll(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url });
  jsm = await jetstreamManager(nc);
}, 60_000);
const rpcs: { close(): void }[] = [];
afterEach(async () => {
  for (const r of rpcs.splice(0)) r.close();
  await Child.stopAll();
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
  removeTempDirs();
});

/** Every message of a stream, in order. */
async function readStream(stream: string): Promise<{ subject: string; seq: number; data: string; msgId: string | undefined }[]> {
  const info = await jsm.streams.info(stream);
  const out: { subject: string; seq: number; data: string; msgId: string | undefined }[] = [];
  if (info.state.messages === 0) return out;
  const c = await jetstream(nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All });
  const msgs = await c.consume();
  for await (const m of msgs) {
    out.push({ subject: m.subject, seq: m.seq, data: dec.decode(m.data), msgId: m.headers?.get("Nats-Msg-Id") });
    if (m.seq >= info.state.last_seq) break;
  }
  await msgs.close();
  return out;
}

describe("NATS JetStream (real server)", () => {
  test("JetStream -> windowed count -> JetStream exactly-once with a TaskManager SIGKILLed: each result once, equal to the counts of the input", async () => {
    await jsm.streams.add({ name: "IN", subjects: ["in.>"] });
    await jsm.streams.add({ name: "OUT", subjects: ["out"] });
    const js = jetstream(nc);
    const N = 20_000;
    const base = 1_700_000_000_000;
    const expected = new Map<string, number>();
    const acks: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      const ev = { key: i % 7, ts: base + i * 10 };
      acks.push(js.publish(i % 3 === 0 ? "in.a" : "in.b", enc.encode(JSON.stringify(ev))));
      if (acks.length >= 500) await Promise.all(acks.splice(0));
      const w = `${ev.key}@${Math.floor((ev.ts - base) / 2000)}`;
      expected.set(w, (expected.get(w) ?? 0) + 1);
    }
    await Promise.all(acks);
    const dir = tempDir("tm-nats-");
    const { rpc, jm, tms, startTm } = await startCluster(dir, 3);
    rpcs.push(rpc);
    const job = writeJob(dir, "job.ts", `
      import { JetStreamSink, JetStreamSource, TumblingEventTimeWindows, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env) => {
        env.enableCheckpointing(200);
        env.fromSource(JetStreamSource.source({ servers: ${JSON.stringify(nats.url)}, stream: "IN", subjects: ["in.a", "in.b"], bounded: true }),
            WatermarkStrategy.forBoundedOutOfOrderness(0).withTimestampAssigner((r) => r.value.ts))
          .map((r) => { if (r.seq % 2 === 0) Atomics.wait(pause, 0, 0, 1); return r.value; })
          .keyBy((e) => e.key)
          .window(TumblingEventTimeWindows.of(2000))
          .aggregate({ createAccumulator: () => 0, add: (_e, a) => a + 1, getResult: (a) => a, merge: (a, b) => a + b },
            (key, ctx, counts, out) => out.collect({ w: key + "@" + (ctx.window.start - ${base}) / 2000, n: counts[0] }))
          .sinkTo(JetStreamSink.sink({ servers: ${JSON.stringify(nats.url)}, subject: "out" }));
      };`);
    const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
    await waitFor("a running job with a completed checkpoint", async () => {
      const s = await rpc.request("jobStatus", { jobId });
      if (s.state === "FAILED" || s.state === "FINISHED") throw new Error(`job ended early: ${s.state} ${s.error?.message ?? ""}\n${jm.stderr.slice(-2000)}`);
      return s.checkpoints.completed >= 2 && s;
    }, 60_000);
    // Output goes out as checkpoints complete: some is in the stream before the kill.
    await waitFor("output before the kill", async () => (await jsm.streams.info("OUT")).state.messages > 0, 30_000);
    const s = await rpc.request("jobStatus", { jobId });
    const victim = [...new Set(s.vertices.flatMap((v) => v.subtasks.map((t) => t.taskManager)))][0]!;
    const i = Number(victim.replace("tm-", ""));
    tms[i]!.kill("SIGKILL");
    startTm("tm-r0");
    const final = await waitForJob(rpc, jobId, () => {}, 100);
    expect(final.error?.message).toBeUndefined();
    expect(final.state).toBe("FINISHED");
    expect(final.restarts).toBeGreaterThanOrEqual(1);
    const out = await readStream("OUT");
    const seen = new Map<string, number>();
    const dups: string[] = [];
    for (const m of out) {
      const r = JSON.parse(m.data) as { w: string; n: number };
      if (seen.has(r.w)) dups.push(r.w);
      seen.set(r.w, r.n);
      expect(m.msgId).toMatch(new RegExp(`^${jobId}-`));
    }
    expect(dups).toEqual([]);
    expect([...seen.entries()].sort()).toEqual([...expected.entries()].sort());
  }, 120_000);

  test("FLIP-147: the sink's last messages go out with the final checkpoint's notify; the approved final commit is the fallback", async () => {
    await jsm.streams.add({ name: "F147", subjects: ["f147.>"] });
    const sink = JetStreamSink.sink({ servers: nats.url, subject: "f147.out" });
    const ctx = (attempt: number) => ({ subtaskIndex: 0, parallelism: 1, jobId: "f147", attempt, restoredCheckpointId: 0, operatorState: new OperatorStateStore(), finalCheckpoint: true });
    // The default serializer writes JSON.
    const published = async () => (await readStream("F147")).map((m) => JSON.parse(m.data) as string);
    const w = sink.connector.createWriter(ctx(0), "s");
    await w.open!();
    try {
      w.process("a");
      await w.snapshotState!(1);
      await w.notifyCheckpointComplete!(1);
      w.process("b");
      await w.endInput!();
      expect(await published()).toEqual(["a"]); // "b" waits for the final checkpoint
      expect(w.hasFinalCommit!()).toBe(true);
      await w.snapshotState!(2);
      await w.notifyCheckpointComplete!(2);
      expect(await published()).toEqual(["a", "b"]);
      expect(w.hasFinalCommit!()).toBe(false);
    } finally {
      w.dispose!();
    }
    const w2 = sink.connector.createWriter(ctx(1), "s");
    await w2.open!();
    try {
      w2.process("c");
      await w2.endInput!();
      expect(w2.hasFinalCommit!()).toBe(true);
      await w2.finalCommit!();
      expect(await published()).toEqual(["a", "b", "c"]);
    } finally {
      w2.dispose!();
    }
  }, 30_000);

  test("a message the deserializer rejects fails the job naming subject and sequence; a deleted stream is named", async () => {
    await jsm.streams.add({ name: "BAD", subjects: ["bad.>"] });
    const js = jetstream(nc);
    await js.publish("bad.x", enc.encode(JSON.stringify({ ok: 1 })));
    const badSeq = (await js.publish("bad.y", enc.encode("{not json"))).seq;
    const dir = tempDir("tm-nats-bad-");
    const run = (job: string) => Bun.spawnSync([BUN, "main.ts", "local", "-D", "restart-strategy.type=none", writeJob(dir, `j${Math.random()}.ts`, job)], { cwd: path.resolve("."), stdout: "pipe", stderr: "pipe" });
    const r1 = run(`
      import { JetStreamSource } from ${API};
      export default (env) => { env.fromSource(JetStreamSource.source({ servers: ${JSON.stringify(nats.url)}, stream: "BAD", bounded: true })).print(); };`);
    expect(r1.exitCode).not.toBe(0);
    expect(r1.stderr.toString() + r1.stdout.toString()).toContain(`the deserializer rejected the message on subject bad.y at stream sequence ${badSeq}`);
    // A stream deleted under a running (unbounded) job.
    await jsm.streams.add({ name: "GONE", subjects: ["gone.>"] });
    const child = new Child([BUN, "main.ts", "local", "-D", "restart-strategy.type=none", writeJob(dir, "gone.ts", `
      import { JetStreamSource } from ${API};
      export default (env) => { env.fromSource(JetStreamSource.source({ servers: ${JSON.stringify(nats.url)}, stream: "GONE" })).map((r) => { console.log("got", r.seq); return r; }).print(); };`)]);
    await js.publish("gone.a", enc.encode("1"));
    await child.waitForOutput(/got 1/, 30_000);
    await jsm.streams.delete("GONE");
    expect(await child.exited(30_000)).not.toBe(0);
    expect(child.stdout + child.stderr).toContain('stream "GONE" does not exist');
    // Bad options are named before anything runs.
    expect(() => JetStreamSource.source({ servers: "", stream: "X" })).toThrow(/option servers must be a URL/);
    expect(() => JetStreamSource.source({ servers: nats.url, stream: "X", subjects: [] })).toThrow(/option subjects must be a non-empty list/);
  }, 90_000);
});
