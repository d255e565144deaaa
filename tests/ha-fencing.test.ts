// Epoch fencing on the TaskManager side, against a hand-driven JobManager (real TCP on 127.0.0.1, a real
// TaskManager process): once a TaskManager follows epoch 5, requests of epoch 4 (deploy, cancel, trigger, notify,
// release) are refused naming both epochs, those of epoch 5 pass the fence, and a JobManager that registers it
// with an older epoch is refused (a deposed leader cannot take it back).
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { boundPort, listenFramed } from "../src/rpc/listen.ts";
import { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { TaskDeployment } from "../src/rpc/messages.ts";
import { BUN, Child, removeTempDirs, waitFor } from "./helpers.ts";

const closers: (() => void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await Child.stopAll();
});
afterAll(removeTempDirs);

function deployment(epoch: number): TaskDeployment {
  return {
    jobId: "a".repeat(32), jobName: "j", executionId: `${"a".repeat(32)}-0-0-0`, vertexId: 0, vertexName: "Source", subtaskIndex: 0,
    parallelism: 1, maxParallelism: 128, slot: 0, artifactHash: "0".repeat(64), jobArgs: [], operatorIds: [0], inputs: [], outputs: [],
    runtimeMode: "streaming", bufferTimeoutMs: 100, planFingerprint: "", stateBackend: null, attempt: 0,
    checkpointingMode: "EXACTLY_ONCE", restore: null, epoch,
  };
}

describe("epoch fencing (TaskManager side)", () => {
  test("requests of an older epoch are refused; a registration answered with an older epoch is refused", async () => {
    let registrations = 0;
    let offers = 0;
    const epochs = [5, 3]; // the second JobManager the TaskManager meets is a deposed one
    let conn: RpcConnection | null = null;
    const server = await listenFramed("127.0.0.1", 0, "fake-jm", (framed) => {
      const c = new RpcConnection(framed, (type) => {
        if (type === "registerTaskManager") {
          const epoch = epochs[registrations++] ?? 3;
          return { jobManagerId: `fake-${epoch}`, heartbeatIntervalMs: 200, heartbeatTimeoutMs: 60_000, cancel: [], epoch, jobManagerLossGracePeriodMs: 0 };
        }
        if (type === "offerSlots") {
          offers++;
          conn = c;
          return { accepted: [0] };
        }
        return {};
      });
    });
    closers.push(() => server.close());
    const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${boundPort(server)}`, "-D", "taskmanager.resource-id=tm-fenced", "-D", "taskmanager.registration.max-backoff=200ms"]);
    await tm.waitForOutput(/registered at the JobManager .*jobManagerId=fake-5/, 30_000);
    const rpc = conn! as RpcConnection;

    const refused = async (p: Promise<unknown>) => (await p.then(() => "accepted", (e: Error) => e.message));
    const fenced = /fenced: \w+ from a JobManager of epoch 4; this TaskManager follows epoch 5/;
    expect(await refused(rpc.request("submitTask", deployment(4)))).toMatch(fenced);
    expect(await refused(rpc.request("cancelTask", { executionId: "x", epoch: 4 }))).toMatch(fenced);
    expect(await refused(rpc.request("triggerCheckpoint", { executionId: "x", checkpointId: 1, timestamp: 0, dir: "/nonexistent", epoch: 4 }))).toMatch(fenced);
    expect(await refused(rpc.request("notifyCheckpointComplete", { executionId: "x", checkpointId: 1, epoch: 4 }))).toMatch(fenced);
    expect(await refused(rpc.request("releaseJob", { jobId: "a".repeat(32), epoch: 4 }))).toMatch(fenced);
    // Epoch 5 passes the fence (and gets the ordinary answer).
    expect(await refused(rpc.request("cancelTask", { executionId: "x", epoch: 5 }))).toMatch(/no task x on tm-fenced/);
    expect(tm.stderr).not.toMatch(/deploying task/);

    // The connection goes; the next JobManager answers with epoch 3: refused, no slots offered to it.
    rpc.close();
    await tm.waitForOutput(/the JobManager answered with epoch 3, older than epoch 5 this TaskManager follows/, 30_000);
    await waitFor("a retried registration", () => registrations >= 3, 10_000);
    expect(offers).toBe(1);
  }, 60_000);
});
