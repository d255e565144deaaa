// Operator-facing behaviour of the processes, with real `bun main.ts` children and sockets on 127.0.0.1: ports that
// cannot be bound name their key, a JobManager SIGTERM is logged and told to waiting clients, a TaskManager tries
// once more at its registration deadline, a missing job file is a usage error.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) s.close();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/** A port held by a listener of this test (so binding it fails with EADDRINUSE). */
async function busyPort(onConnection: (s: net.Socket) => void = (s) => s.destroy()): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer(onConnection);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function startJobManager(args: string[] = []): Promise<{ jm: Child; port: number }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", ...args]);
  return { jm, port: Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]) };
}

describe("ports that cannot be bound", () => {
  test("the JobManager's RPC port and the TaskManager's data port name their key and exit 3", async () => {
    const { port } = await busyPort();
    const jm = new Child([BUN, "main.ts", "jobmanager", "-D", `jobmanager.rpc.port=${port}`, "-D", "rest.port=0"]);
    expect(await jm.exited(15_000)).toBe(3);
    expect(jm.stderr.trim().split("\n").at(-1)).toBe(`error: jobmanager.rpc.port: address 127.0.0.1:${port} is already in use (choose another port, or 0 for a free one)`);
    const tm = new Child([BUN, "main.ts", "taskmanager", "-D", `taskmanager.data.port=${port}`, "-D", "jobmanager.rpc.port=1"]);
    expect(await tm.exited(15_000)).toBe(3);
    expect(tm.stderr.trim().split("\n").at(-1)).toBe(`error: taskmanager.data.port: address 127.0.0.1:${port} is already in use (choose another port, or 0 for a free one)`);
  }, 40_000);
});

describe("JobManager SIGTERM", () => {
  test("is logged, a client waiting for its job is told the JobManager is shutting down, and a second SIGTERM after the drain exits 0", async () => {
    const dir = tempDir("tm-jm-term-");
    // A long handshake time-out and a silent socket in its handshake keep the RPC port from closing after the drain.
    const { jm, port } = await startJobManager(["-D", "rpc.handshake-timeout=60s"]);
    const tm = new Child([BUN, "main.ts", "taskmanager", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=1", "-D", "taskmanager.registration.timeout=0"]);
    await tm.waitForOutput(/registered at the JobManager/);
    const job = writeJob(dir, "slow.ts", `export default (env) => { const s = new Int32Array(new SharedArrayBuffer(4)); env.fromSequence(1, 1e12).addSink(() => Atomics.wait(s, 0, 0, 1)); };`);
    const client = new Child([BUN, "main.ts", "submit", "-m", `127.0.0.1:${port}`, job]);
    await client.waitForOutput(/RUNNING/, 30_000);
    // The silent socket must be accepted by the JobManager (not only queued by the kernel, where closing the port
    // would drop it): its accept shows as one more open file of the process.
    const fds = () => fs.readdirSync(`/proc/${jm.pid}/fd`).length;
    const before = fds();
    const silent = net.connect(port, "127.0.0.1");
    silent.on("error", () => {});
    await new Promise((r) => silent.once("connect", r));
    await waitFor("the JobManager to accept the silent socket", () => fds() > before, 15_000);

    jm.kill("SIGTERM");
    expect(await client.exited(15_000)).toBe(1);
    expect(client.stderr.trim().split("\n").at(-1)).toBe("error: jobStatus: the JobManager is shutting down (SIGTERM)");
    await jm.waitForOutput(/INFO .*SIGTERM: shutting down/);
    // The TaskManager learns the reason as well.
    await tm.waitForOutput(/lost the JobManager; canceling its tasks and reconnecting reason=the JobManager is shutting down \(SIGTERM\)/);
    // Drained, but the port waits for the silent socket: a second SIGTERM ends it, with 0.
    await Bun.sleep(200);
    expect(jm.proc.exitCode).toBeNull();
    jm.kill("SIGTERM");
    expect(await jm.exited(10_000)).toBe(0);
    expect(jm.stderr).toMatch(/SIGTERM again: exiting at once drained=true/);
    silent.destroy();
  }, 60_000);
});

describe("TaskManager registration deadline", () => {
  test("one last attempt at taskmanager.registration.timeout registers at a JobManager that is back by then", async () => {
    const { port: jmPort } = await startJobManager();
    // A stand-in at the configured address: it drops the first two connections (the JobManager is "away"), then
    // forwards to the real JobManager. With a 2 s initial backoff the second attempt fails at about 2 s, and the
    // next one is due at 6 s (backoff 4 s), after the 3 s deadline.
    let connections = 0;
    const { port } = await busyPort((s) => {
      if (++connections <= 2) return s.destroy();
      const up = net.connect(jmPort, "127.0.0.1");
      s.pipe(up).pipe(s);
      s.on("error", () => up.destroy());
      up.on("error", () => s.destroy());
    });
    const t0 = Date.now();
    const tm = new Child([BUN, "main.ts", "taskmanager", "-D", `jobmanager.rpc.port=${port}`,
      "-D", "taskmanager.registration.timeout=3s", "-D", "taskmanager.registration.initial-backoff=2s", "-D", "taskmanager.registration.max-backoff=10s"]);
    await tm.waitForOutput(/registered at the JobManager/, 15_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_900);
    expect(connections).toBe(3);
    expect(tm.stderr).not.toMatch(/giving up/);
    await Bun.sleep(300);
    expect(tm.proc.exitCode).toBeNull();
  }, 40_000);
});

describe("usage errors", () => {
  test("a missing job file for submit and local exits 2 naming it", async () => {
    const missing = path.join(tempDir("tm-missing-"), "nope.ts");
    for (const cmd of [["submit", "-m", "127.0.0.1:1"], ["local"]]) {
      const p = new Child([BUN, "main.ts", ...cmd, missing]);
      expect(await p.exited(20_000)).toBe(2);
      expect(p.stderr.trim()).toBe(`error: job file ${missing} not found (or not a file)`);
    }
  }, 40_000);
});
