// Bad peers on the data port, and a peer TaskManager that dies mid-job: the bad connection is closed with a
// logged error naming the peer, the TaskManager keeps serving, affected tasks fail and nothing hangs.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { encodeFrame } from "../src/rpc/framing.ts";
import { DATA_FRAME } from "../src/network/wire.ts";
import { PROTOCOL_VERSION } from "../src/rpc/messages.ts";
import { BUN, Child, rawPeer, removeTempDirs, tempDir, waitFor } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=2s"];
let dir: string;
let rpc: RpcConnection;
let tmA: Child;
let tmB: Child;
let dataPortA: number;

beforeAll(async () => {
  dir = tempDir("tm-faults-");
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...FAST]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const start = (id: string) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...FAST]);
  tmA = start("tm-a");
  tmB = start("tm-b");
  dataPortA = Number((await tmA.waitForOutput(/TaskManager started id=tm-a dataPort=(\d+)/))[1]);
  await Promise.all([tmA, tmB].map((tm) => tm.waitForOutput(/registered at the JobManager/)));
  rpc = await connectClient("127.0.0.1", port);
});

afterAll(async () => {
  rpc?.close();
  await Child.stopAll();
  removeTempDirs();
});

/** Opens a raw TCP connection to tm-a's data port, optionally completes the handshake, writes bytes, waits for the close. */
async function badPeer(handshake: boolean, payload: Uint8Array): Promise<void> {
  const hello = handshake ? encodeFrame({ version: PROTOCOL_VERSION, role: "data", id: "intruder" }) : new Uint8Array(0);
  await rawPeer(dataPortA, Buffer.concat([hello, payload]), { what: () => "the TaskManager did not close the bad connection:\n" + tmA.stderr.slice(-1500) });
}

async function runJob(name: string, source: string) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, source);
  return submitJob(rpc, await prepareJob(file, [], 2));
}

describe("bad peers and lost peers", () => {
  test("garbage, an oversized frame and a frame for an unknown channel are refused; a job beside them runs to the end", async () => {
    const out = path.join(dir, "beside");
    const jobId = await runJob("beside.ts", `
      export default (env) => {
        env.fromSequence(1, 3_000_000).keyBy((x) => x % 17).sum(0).writeAsText(${JSON.stringify(out)});
      };`);
    await badPeer(false, new Uint8Array(Array.from({ length: 256 }, (_, i) => (i * 37) & 0xff)));
    await tmA.waitForOutput(/refused a connection peer=127\.0\.0\.1:\d+ port=\d+ error=frame of \d+ bytes exceeds the limit/);
    const huge = new Uint8Array(8);
    new DataView(huge.buffer).setUint32(0, 0xfffffff0);
    await badPeer(true, huge);
    await tmA.waitForOutput(/data connection failed peer=intruder .*exceeds the limit/);
    await badPeer(true, encodeFrame([DATA_FRAME.DATA, "nojob|0|0|0", new Uint8Array(10), 0]));
    await tmA.waitForOutput(/closing a data connection after a bad frame peer=intruder .*data for unknown channel nojob\|0\|0\|0/);
    const status = await waitForJob(rpc, jobId, () => {});
    expect(status.state).toBe("FINISHED");
    expect(status.recordsIn).toBe(3_000_000);
    expect(tmA.proc.exitCode).toBeNull();
  }, 60_000);

  test("a TaskManager killed mid-job fails the job instead of hanging it; the survivor frees its slots", async () => {
    const jobId = await runJob("endless.ts", `export default (env) => { env.fromSequence(0, 1e15).keyBy((x) => x % 5).addSink(() => {}); };`);
    await waitFor("all tasks running", async () => (await rpc.request("jobStatus", { jobId })).tasks.RUNNING === 4);
    tmB.kill("SIGKILL");
    const status = await waitForJob(rpc, jobId, () => {});
    expect(status.state).toBe("FAILED");
    expect(status.error?.message).toMatch(/tm-b/);
    await waitFor("tm-a's slots free", async () => (await rpc.request("clusterOverview", {})).slotsAvailable === 2, 10_000);
    expect(tmA.proc.exitCode).toBeNull();
  }, 60_000);
});
