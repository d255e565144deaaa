// A cluster of real processes (`bun main.ts`): a JobManager and TaskManagers on 127.0.0.1, driven through
// the CLI and the client RPC. Heartbeat loss is produced by freezing a TaskManager with SIGSTOP.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { connectClient } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=1s", "-D", "taskmanager.registration.max-backoff=200ms"];
const clients: RpcConnection[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function startJobManager(port = 0): Promise<{ jm: Child; port: number }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", `jobmanager.rpc.port=${port}`, ...FAST]);
  const m = await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/);
  return { jm, port: Number(m[1]) };
}

function startTaskManager(jmPort: number, id: string, slots = 2): Child {
  return new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${jmPort}`, "-D", `taskmanager.numberOfTaskSlots=${slots}`, "-D", `taskmanager.resource-id=${id}`, ...FAST]);
}

async function client(port: number): Promise<RpcConnection> {
  const c = await connectClient("127.0.0.1", port);
  clients.push(c);
  return c;
}

describe("multi-process cluster", () => {
  test("a frozen TaskManager is declared lost after the heartbeat timeout, its job fails, and it re-registers once thawed", async () => {
    const { port } = await startJobManager();
    const a = startTaskManager(port, "tm-a");
    const b = startTaskManager(port, "tm-b");
    await Promise.all([a.waitForOutput(/registered at the JobManager/), b.waitForOutput(/registered at the JobManager/)]);
    const rpc = await client(port);
    expect((await rpc.request("clusterOverview", {})).slotsTotal).toBe(4);

    const dir = tempDir();
    const job = path.join(dir, "endless.ts");
    fs.writeFileSync(job, `export default (env) => { env.fromSequence(0, 1e15).keyBy((x) => x % 10).sum(0).addSink(() => {}); };`);
    const submit = new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, "-p", "4", job]);
    await waitFor("4 tasks running", async () => {
      const jobs = await rpc.request("listJobs", {});
      return jobs.length === 1 && jobs[0]!.tasks.RUNNING === 8;
    }, 60_000); // eight Workers starting on a loaded 2-core machine

    b.kill("SIGSTOP");
    const t0 = Date.now();
    await waitFor("tm-b declared lost", async () => (await rpc.request("clusterOverview", {})).taskManagers === 1, 5000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800); // not before the 1 s timeout (minus polling slack)
    expect(await submit.exited(10_000)).toBe(1);
    expect(submit.stderr).toMatch(/TaskManager tm-b was lost: no heartbeat for 1000 ms/);
    await waitFor("slots of tm-a freed", async () => (await rpc.request("clusterOverview", {})).slotsAvailable === 2);

    b.kill("SIGCONT");
    await waitFor("tm-b back", async () => (await rpc.request("clusterOverview", {})).taskManagers === 2, 10_000);
    // Its slots come with the offer that follows registration (as Flink's): on a loaded machine a moment later.
    await waitFor("tm-b's two slots offered and free", async () => (await rpc.request("clusterOverview", {})).slotsAvailable === 4, 10_000);
  }, 120_000);

  test("a TaskManager keeps retrying while its JobManager is gone and re-registers when it is back", async () => {
    const port = await freePort();
    const { jm } = await startJobManager(port);
    const tm = startTaskManager(port, "tm-retry");
    await tm.waitForOutput(/registered at the JobManager/);
    jm.kill("SIGKILL");
    await tm.waitForOutput(/lost the JobManager/);
    await tm.waitForOutput(/cannot register at the JobManager/);
    await Bun.sleep(500); // several backoff rounds with no JobManager
    await startJobManager(port);
    const rpc = await client(port);
    await waitFor("re-registration", async () => (await rpc.request("clusterOverview", {})).taskManagers === 1, 10_000);
    await tm.waitForOutput(/registered at the JobManager[\s\S]*registered at the JobManager/);
    expect(tm.stderr.match(/registered at the JobManager/g)?.length).toBe(2);
    expect(tm.proc.exitCode).toBeNull();
  }, 30_000);

  test("list and cancel from the command line; the canceled job's stuck tasks are terminated", async () => {
    const { port } = await startJobManager();
    const tm = startTaskManager(port, "tm-cancel");
    await tm.waitForOutput(/registered at the JobManager/);
    const dir = tempDir();
    const job = path.join(dir, "stuck.ts");
    fs.writeFileSync(job, `export default (env) => { env.fromSequence(1, 5).map((x) => { for (;;) {} }).addSink(() => {}); };`);
    const submit = new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, "-p", "2", job]);
    const rpc = await client(port);
    const jobId = await waitFor("job running", async () => {
      const jobs = await rpc.request("listJobs", {});
      return jobs[0]?.tasks.RUNNING === 2 ? jobs[0].jobId : null;
    });
    const list = new Child([BUN, "main.ts", "list", "-m", `127.0.0.1:${port}`]);
    expect(await list.exited()).toBe(0);
    expect(list.stdout).toContain(`${jobId} : stuck (RUNNING)`);
    const cancel = new Child([BUN, "main.ts", "cancel", jobId, "-m", `127.0.0.1:${port}`]);
    expect(await cancel.exited()).toBe(0);
    expect(cancel.stdout).toContain("CANCELED");
    expect(await submit.exited(10_000)).toBe(1);
    expect(submit.stderr).toContain("CANCELED");
    expect((await rpc.request("clusterOverview", {})).slotsAvailable).toBe(2);
  }, 30_000);

  test("Ctrl-C on `local` cancels the running job and exits 1", async () => {
    const dir = tempDir();
    const job = path.join(dir, "forever.ts");
    fs.writeFileSync(job, `export default (env) => { env.fromSequence(1, 5).map((x) => { for (;;) {} }).addSink(() => {}); };`);
    const local = new Child([BUN, "main.ts", "local", job]);
    await local.waitForOutput(/RUNNING/);
    local.kill("SIGINT");
    expect(await local.exited(10_000)).toBe(1);
    expect(local.stderr).toMatch(/Canceling job [0-9a-f]{32}/);
    expect(local.stderr).toMatch(/CANCELED/);
  }, 30_000);

  test("an unknown message type gets an error naming it and the connection closed; the JobManager serves on", async () => {
    const { port } = await startJobManager();
    const { encodeFrame, FrameDecoder } = await import("../src/rpc/framing.ts");
    const sock = net.connect(port, "127.0.0.1");
    const decoder = new FrameDecoder();
    const frames: any[] = [];
    sock.on("data", (d: Buffer) => frames.push(...decoder.push(d)));
    const closed = new Promise((r) => sock.on("close", r));
    await new Promise((r) => sock.on("connect", r));
    sock.write(encodeFrame({ version: 1, role: "client", id: "fuzzer" }));
    sock.write(encodeFrame({ t: "launchMissiles", id: 1, p: {} }));
    await closed;
    expect(frames[1]).toEqual({ t: "response", re: 1, e: { message: 'unknown message type "launchMissiles"' } });
    const rpc = await client(port);
    expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(0);
  });

  test("a TaskManager cannot send client requests and a client cannot register as a TaskManager", async () => {
    const { port } = await startJobManager();
    const rpc = await client(port);
    await expect(
      rpc.request("registerTaskManager", { resourceId: "x", dataHost: "127.0.0.1", dataPort: 1, slots: 1, resources: { cpuCores: 1, memoryBytes: 1 }, pid: 1 }),
    ).rejects.toThrow(/registerTaskManager is not allowed for a client connection/);
  });
});
