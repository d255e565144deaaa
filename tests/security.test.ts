// Authentication, TLS and connection limits with real processes (`bun main.ts`) and sockets on 127.0.0.1:
// a peer without the shared secret learns only "authentication failed" and can neither submit, register,
// deploy nor read data; a TaskManager refuses a JobManager that cannot prove the secret; limits close one
// connection and leave the process serving the others.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { connectFramed } from "../src/rpc/connect.ts";
import { connectRpc, RpcConnection } from "../src/rpc/rpc-connection.ts";
import { listenFramed, boundPort } from "../src/rpc/listen.ts";
import { encodeFrame } from "../src/rpc/framing.ts";
import { PROTOCOL_VERSION, type TaskDeployment } from "../src/rpc/messages.ts";
import { NO_SECURITY, type TransportSecurity } from "../src/rpc/security.ts";
import { ArtifactCache } from "../src/taskmanager/artifact-cache.ts";
import { sha256Hex } from "../src/util/hash.ts";
import { BUN, Child, rawPeer, removeTempDirs, ROOT, tempDir, waitFor } from "./helpers.ts";

const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=2s", "-D", "taskmanager.registration.max-backoff=200ms"];
const SECRET = "s3cret-of-the-test-cluster-0123456789";
const WRONG = "not-the-secret-but-long-enough-000";
const withSecret = (secret: string, tls: TransportSecurity["tls"] = null): { security: TransportSecurity } => ({
  security: { secret: Buffer.from(secret), insecure: false, tls },
});

const closers: (() => void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await Child.stopAll();
});
afterAll(removeTempDirs);

async function startJobManager(args: string[], env: Record<string, string> = {}): Promise<{ jm: Child; port: number }> {
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...FAST, ...args], env);
  const m = await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/);
  return { jm, port: Number(m[1]) };
}

function startTaskManager(jmPort: number, id: string, args: string[], env: Record<string, string> = {}): Child {
  return new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${jmPort}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...FAST, ...args], env);
}

/** Runs a small keyed job at parallelism 4 and returns its output file's lines (a job across two TaskManagers). */
async function runSumJob(rpc: RpcConnection, dir: string): Promise<string[]> {
  const out = path.join(dir, "out");
  const file = path.join(dir, "sum.ts");
  fs.writeFileSync(file, `export default (env) => { env.fromSequence(1, 20000).keyBy((x) => x % 4).sum(0).writeAsText(${JSON.stringify(out)}); };`);
  const jobId = await submitJob(rpc, await prepareJob(file, [], 4));
  const status = await waitForJob(rpc, jobId, () => {}, 50);
  expect(status.state).toBe("FINISHED");
  return fs.readdirSync(out).flatMap((f) => fs.readFileSync(path.join(out, f), "utf8").split("\n")).filter(Boolean);
}


async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("expected a refusal, the connection was accepted");
}

describe("authentication with a shared secret", () => {
  test("a cluster with a secret (file and environment) runs a job; without the secret or with a wrong one a peer learns only 'authentication failed'", async () => {
    const dir = tempDir("tm-sec-");
    const secretFile = path.join(dir, "secret");
    fs.writeFileSync(secretFile, SECRET + "\n", { mode: 0o600 });
    const { jm, port } = await startJobManager(["-D", `security.auth.secret-file=${secretFile}`]);
    const tmA = startTaskManager(port, "tm-a", [], { TM_SECURITY_AUTH_SECRET: SECRET });
    const tmB = startTaskManager(port, "tm-b", ["-D", `security.auth.secret-file=${secretFile}`]);
    await Promise.all([tmA, tmB].map((tm) => tm.waitForOutput(/registered at the JobManager/)));

    const rpc = await connectClient("127.0.0.1", port, withSecret(SECRET));
    closers.push(() => rpc.close());
    const lines = await runSumJob(rpc, dir);
    // One running sum per record; the largest is key 0's total, 4 + 8 + ... + 20000.
    expect(lines.length).toBe(20000);
    expect(Math.max(...lines.map(Number))).toBe(50_010_000);

    // Without a secret the JobManager refuses the Hello; with a wrong one the client sees the JobManager's proof fail.
    expect(await refusal(connectClient("127.0.0.1", port, { security: NO_SECURITY }))).toBe("handshake refused by peer: authentication failed");
    expect(await refusal(connectClient("127.0.0.1", port, withSecret(WRONG)))).toBe("authentication failed: the peer does not know the shared secret");
    // A peer that skips checking the JobManager's proof and answers with a made-up one.
    expect(await forgedProof(port, "client")).toEqual({ version: PROTOCOL_VERSION, id: "", error: "authentication failed" });
    await jm.waitForOutput(/refused a connection .*authentication failed \(wrong proof/);
    await jm.waitForOutput(/refused a connection .*authentication failed \(the peer sent no nonce/);
    // The data ports want the secret too.
    const dataPort = Number((await tmA.waitForOutput(/TaskManager started id=tm-a dataPort=(\d+)/))[1]);
    const hello = { version: PROTOCOL_VERSION, role: "data" as const, id: "intruder" };
    expect(await refusal(connectFramed("127.0.0.1", dataPort, hello, withSecret(WRONG)))).toBe("authentication failed: the peer does not know the shared secret");
    expect(await forgedProof(dataPort, "data")).toEqual({ version: PROTOCOL_VERSION, id: "", error: "authentication failed" });
    expect(await refusal(connectFramed("127.0.0.1", dataPort, hello))).toBe("handshake refused by peer: authentication failed");
    // The secret is never written to a log.
    for (const p of [jm, tmA, tmB]) expect(p.stdout + p.stderr).not.toContain(SECRET);
    expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(2);
  }, 90_000);

  test("an unauthenticated peer cannot deploy code: submitJob, registerTaskManager and submitTask are refused and nothing runs", async () => {
    const dir = tempDir("tm-sec-deploy-");
    const marker = path.join(dir, "pwned");
    const env = { TM_SECURITY_AUTH_SECRET: SECRET };
    const { jm, port } = await startJobManager([], env);
    const tm = startTaskManager(port, "tm-a", [], env);
    await tm.waitForOutput(/registered at the JobManager/);

    // A job whose only effect is to create the marker file.
    const jobFile = path.join(dir, "evil.ts");
    fs.writeFileSync(jobFile, `import * as fs from "node:fs"; export default (env) => { fs.writeFileSync(${JSON.stringify(marker)}, "x"); env.fromElements(1).addSink(() => {}); };`);
    const evil = await prepareJob(jobFile, [], 1);
    fs.rmSync(marker, { force: true }); // prepareJob ran the builder once, here in the test

    // 1. To the JobManager as a client and as a TaskManager, with a wrong secret and with none: the handshake fails,
    //    so no request ever reaches it (a raw socket that skips the handshake gets no further).
    for (const opts of [withSecret(WRONG), { security: NO_SECURITY }]) {
      for (const role of ["client", "taskmanager"] as const) {
        const msg = await refusal(connectRpc("127.0.0.1", port, { version: PROTOCOL_VERSION, role, id: "tm-evil" }, () => ({}), opts));
        expect(msg).toMatch(/^(handshake refused by peer: authentication failed|authentication failed: the peer does not know the shared secret)$/);
      }
    }
    // Forged proofs, then the requests anyway in the same write: the JobManager never reads past the proof.
    for (const role of ["client", "taskmanager"] as const) {
      const reply = await forgedProof(port, role, [
        encodeFrame({ t: "submitJob", id: 1, p: { artifact: evil.artifact, jobArgs: [], graph: evil.graph } }),
        encodeFrame({ t: "registerTaskManager", id: 2, p: { resourceId: "tm-evil", dataHost: "127.0.0.1", dataPort: 1, slots: 8, resources: {}, pid: 1 } }),
      ]);
      expect(reply).toEqual({ version: PROTOCOL_VERSION, id: "", error: "authentication failed" });
    }
    const raw = await rawExchange(port, [
      encodeFrame({ version: PROTOCOL_VERSION, role: "client", id: "raw" }),
      encodeFrame({ t: "submitJob", id: 1, p: { artifact: evil.artifact, jobArgs: [], graph: evil.graph } }),
      encodeFrame({ t: "registerTaskManager", id: 2, p: { resourceId: "raw", dataHost: "127.0.0.1", dataPort: 1, slots: 8, resources: {}, pid: 1 } }),
    ]);
    expect(raw).toEqual([{ version: PROTOCOL_VERSION, id: "", error: "authentication failed" }]);

    // 2. A rogue JobManager (no secret, or a wrong one) that the TaskManager is pointed at, sending submitTask
    //    the moment its side of the handshake is done: the TaskManager closes the connection first.
    for (const [i, rogueSecurity] of [NO_SECURITY, withSecret(WRONG).security].entries()) {
      let submitted = 0;
      const rogue = await listenFramed("127.0.0.1", 0, "rogue-jm", (framed) => {
        const conn = new RpcConnection(framed, () => ({}));
        submitted++;
        conn.request("submitTask", fakeDeployment(sha256Hex(evil.artifact)), 2000).catch(() => {});
      }, { security: rogueSecurity });
      closers.push(() => rogue.close());
      const victim = startTaskManager(boundPort(rogue), `tm-victim-${i}`, [], env);
      const expected = rogueSecurity.secret ? /the peer does not know the shared secret/ : /the peer did not authenticate itself/;
      await victim.waitForOutput(new RegExp(`cannot register at the JobManager .*authentication failed: ${expected.source}`));
      await Bun.sleep(300);
      expect(victim.stdout + victim.stderr).not.toMatch(/deploying task|registered at the JobManager/);
      expect(submitted).toBeLessThanOrEqual(20); // the rogue may get as far as sending; it is never answered
      victim.kill();
    }

    // 3. Nothing ran and no stranger registered.
    const rpc = await connectClient("127.0.0.1", port, withSecret(SECRET));
    closers.push(() => rpc.close());
    expect(await rpc.request("listJobs", {})).toEqual([]);
    expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(1);
    expect(fs.existsSync(marker)).toBe(false);
    expect(jm.stdout + jm.stderr).not.toMatch(/job submitted|TaskManager registered id=(raw|tm-evil)/);
    expect(tm.stdout + tm.stderr).not.toMatch(/deploying task/);
  }, 90_000);

  test("configuration: no secret as a -D flag; no non-loopback port without a secret unless security.insecure", async () => {
    const flag = new Child([BUN, "main.ts", "jobmanager", "-D", `security.auth.secret=${SECRET}`]);
    expect(await flag.exited()).toBe(2);
    expect(flag.stderr).toContain("security.auth.secret cannot be given here");
    expect(flag.stderr).toContain("TM_SECURITY_AUTH_SECRET");
    expect(flag.stdout + flag.stderr).not.toContain(SECRET);

    const open = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.address=0.0.0.0", "-D", "jobmanager.rpc.port=0"]);
    expect(await open.exited()).toBe(2);
    expect(open.stderr).toMatch(/refusing to listen on 0\.0\.0\.0:0 \(JobManager RPC\) without authentication/);

    const tmOpen = new Child([BUN, "main.ts", "-D", "taskmanager.host=0.0.0.0", "-D", "jobmanager.rpc.port=1"]);
    expect(await tmOpen.exited()).toBe(2);
    expect(tmOpen.stderr).toMatch(/refusing to listen on 0\.0\.0\.0:0 \(data\) without authentication/);

    const short = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0"], { TM_SECURITY_AUTH_SECRET: "short" });
    expect(await short.exited()).toBe(2);
    expect(short.stderr).toContain("TM_SECURITY_AUTH_SECRET: the secret is 5 bytes; at least 16 are required");

    // With a secret, or explicitly insecure, 0.0.0.0 is allowed (the test talks to it on 127.0.0.1 only).
    for (const [args, env] of [[["-D", "security.insecure=true"], {}], [[], { TM_SECURITY_AUTH_SECRET: SECRET }]] as const) {
      const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.address=0.0.0.0", "-D", "jobmanager.rpc.port=0", ...args], env);
      const port = Number((await jm.waitForOutput(/JobManager started rpc=0\.0\.0\.0:(\d+)/))[1]);
      const rpc = await connectClient("127.0.0.1", port, env.TM_SECURITY_AUTH_SECRET ? withSecret(SECRET) : { security: NO_SECURITY });
      expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(0);
      rpc.close();
      jm.kill();
    }
  }, 60_000);
  test("the placeholder secret shipped in deploy/ and secrets under 16 bytes are refused: exit 2, one line naming the source", async () => {
    const dir = tempDir("tm-placeholder-");
    const placeholder = /^TM_SECURITY_AUTH_SECRET=(.+)$/m.exec(fs.readFileSync(path.join(ROOT, "deploy/systemd/tm.env.example"), "utf8"))![1]!;
    expect(fs.readFileSync(path.join(ROOT, "deploy/k8s/secret.yaml"), "utf8")).toContain(`TM_SECURITY_AUTH_SECRET: ${placeholder}`);
    fs.writeFileSync(path.join(dir, "placeholder"), placeholder + "\n");
    fs.writeFileSync(path.join(dir, "copied-line"), `TM_SECURITY_AUTH_SECRET=${placeholder}\n`);
    fs.writeFileSync(path.join(dir, "short"), "only-15-bytes..\n");
    const cases: [string[], Record<string, string>, string][] = [
      [["jobmanager", "-D", "jobmanager.rpc.address=0.0.0.0", "-D", "jobmanager.rpc.port=0"], { TM_SECURITY_AUTH_SECRET: placeholder },
        "error: environment variable TM_SECURITY_AUTH_SECRET: the secret is the placeholder shipped in deploy/; generate a real one"],
      [["taskmanager", "-D", "jobmanager.rpc.port=1", "-D", `security.auth.secret-file=${dir}/placeholder`], {},
        `error: security.auth.secret-file: the secret in ${dir}/placeholder is the placeholder shipped in deploy/`],
      [["list", "-m", "127.0.0.1:1", "-D", `security.auth.secret-file=${dir}/copied-line`], {},
        `error: security.auth.secret-file: the secret in ${dir}/copied-line is the placeholder shipped in deploy/`],
      [["jobmanager", "-D", "jobmanager.rpc.port=0", "-D", `security.auth.secret-file=${dir}/short`], {},
        `error: security.auth.secret-file: the secret in ${dir}/short is 15 bytes; at least 16 are required`],
      [["jobmanager", "-D", "jobmanager.rpc.port=0", "-D", `security.rest.token-file=${dir}/placeholder`], {},
        `error: security.rest.token-file: the token in ${dir}/placeholder is the placeholder shipped in deploy/`],
    ];
    for (const [args, env, msg] of cases) {
      const p = new Child([BUN, "main.ts", ...args], env);
      expect(await p.exited(15_000)).toBe(2);
      // (The REST token is read when the REST API starts, after the RPC port: there the error is the last line.)
      const lines = p.stderr.trim().split("\n");
      expect(args.some((a) => a.startsWith("security.rest.")) ? lines.slice(-1) : lines).toEqual([expect.stringContaining(msg)]);
    }
  }, 60_000);
});

describe("limits", () => {
  test("connections per address, handshake time-out, idle time-out and frame size each close one connection; the JobManager serves on", async () => {
    const { jm, port } = await startJobManager([
      "-D", "rpc.max-connections-per-address=3",
      "-D", "rpc.handshake-timeout=400ms",
      "-D", "rpc.idle-timeout=600ms",
      "-D", "rpc.max-frame-size=65536",
    ]);
    // Three silent sockets fill the quota; a fourth is closed at once.
    const silent = await Promise.all([0, 1, 2].map(() => openSocket(port)));
    const t0 = Date.now();
    const fourth = await openSocket(port);
    await closedWithin(fourth, 300);
    await jm.waitForOutput(/refused a connection: too many connections from its address peer=127\.0\.0\.1:\d+ port=\d+ limit=3/);
    // The silent ones are closed by the handshake time-out, which frees the quota.
    await Promise.all(silent.map((s) => closedWithin(s, 2000)));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    await jm.waitForOutput(/refused a connection .*error=handshake timed out/);

    // A client that stays quiet is closed after the idle time-out; one that keeps asking is not.
    const idle = await connectClient("127.0.0.1", port, { security: NO_SECURITY });
    const busy = await connectClient("127.0.0.1", port, { security: NO_SECURITY });
    closers.push(() => busy.close());
    const idleClosed = new Promise<string>((resolve) => idle.onClose((err) => resolve(err?.message ?? "")));
    const deadline = Date.now() + 1500;
    while (Date.now() < deadline) {
      await busy.request("clusterOverview", {});
      await Bun.sleep(100);
    }
    expect(idle.closed).toBe(true);
    expect(await idleClosed).toBe("connection closed by peer");
    expect(busy.closed).toBe(false);
    await jm.waitForOutput(/closed a connection peer=127\.0\.0\.1:\d+ role=client id=client-\d+ error=idle for 600 ms/);

    // A frame over rpc.max-frame-size closes that connection (logged with the peer), not the others.
    const big = await connectClient("127.0.0.1", port, { security: NO_SECURITY });
    const bigClosed = new Promise<void>((resolve) => big.onClose(() => resolve()));
    big.request("jobStatus", { jobId: "x".repeat(70_000) }).catch(() => {});
    await bigClosed;
    await jm.waitForOutput(/closed a connection peer=127\.0\.0\.1:\d+ role=client id=client-\d+ error=frame of \d+ bytes exceeds the limit of 65536 bytes/);
    // Before its handshake, a peer may not even send that much: 64 KiB is the limit until then.
    const early = await openSocket(port);
    early.write(Buffer.from([0x00, 0x01, 0x00, 0x01]));
    await closedWithin(early, 1000);
    await jm.waitForOutput(/refused a connection .*error=frame of 65537 bytes exceeds the limit of 65536 bytes/);

    expect((await busy.request("clusterOverview", {})).taskManagers).toBe(0);
    expect(jm.proc.exitCode).toBeNull();
  }, 60_000);
  test("500 refused connections from one address write a few WARN lines: the first in full, then one with the count", async () => {
    const { jm, port } = await startJobManager([]);
    // A length prefix over the 64 KiB pre-handshake limit: refused at once, with the same reason each time.
    const refuseOne = () => rawPeer(port, Buffer.from([0x7f, 0xff, 0xff, 0xff]), { timeoutMs: 10_000 });
    for (let i = 0; i < 500; i += 50) await Promise.all(Array.from({ length: 50 }, refuseOne));
    const refusedLines = () => (jm.stdout + jm.stderr).split("\n").filter((l) => /WARN .*refused a connection/.test(l));
    const counted = () => refusedLines().reduce((n, l) => n + Number(/ count=(\d+)/.exec(l)?.[1] ?? 1), 0);
    // The counts come at the end of each summary interval (10 s).
    await waitFor("every refusal counted", () => counted() === 500, 30_000, 100);
    const lines = refusedLines();
    expect(lines.length).toBeLessThanOrEqual(4);
    expect(lines[0]).toMatch(/refused a connection peer=127\.0\.0\.1:\d+ port=\d+ error=frame of 2147483647 bytes exceeds the limit of 65536 bytes$/);
    expect(lines[1]).toMatch(/refused a connection \(\d+ more in the last 10 s\) peer=127\.0\.0\.1 port=\d+ error=frame of 2147483647 bytes exceeds the limit of 65536 bytes count=\d+$/);
  }, 60_000);
});

describe("TLS", () => {
  test("a cluster with TLS, mutual TLS and a secret runs a job; plain TCP, a client without a certificate and one from another CA are refused", async () => {
    const dir = tempDir("tm-tls-");
    const certs = makeCertificates(dir);
    const tlsArgs = mutualTlsArgs(certs);
    const env = { TM_SECURITY_AUTH_SECRET: SECRET };
    const { jm, port } = await startJobManager(tlsArgs, env);
    const tms = [startTaskManager(port, "tm-a", tlsArgs, env), startTaskManager(port, "tm-b", tlsArgs, env)];
    await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/)));
    const read = (f: string) => fs.readFileSync(f);
    const good = { cert: read(certs.clientCert), key: read(certs.clientKey), ca: read(certs.ca), clientAuth: true };
    const rpc = await connectClient("127.0.0.1", port, withSecret(SECRET, good));
    closers.push(() => rpc.close());
    const lines = await runSumJob(rpc, dir);
    expect(lines.length).toBe(20000);

    // Plain TCP to a TLS port: no handshake completes.
    expect(await refusal(connectClient("127.0.0.1", port, { ...withSecret(SECRET), handshakeTimeoutMs: 1500 }))).toMatch(/^the peer speaks TLS/);
    // TLS without a client certificate, and with a certificate from another CA.
    expect(await refusal(connectClient("127.0.0.1", port, withSecret(SECRET, { ...good, cert: read(certs.rogueCert), key: read(certs.rogueKey) })))).toMatch(/./);
    expect(await refusal(connectClient("127.0.0.1", port, withSecret(SECRET, { ...good, cert: undefined as never, key: undefined as never })))).toMatch(/./);
    // A server certificate from another CA is refused by the client.
    expect(await refusal(connectClient("127.0.0.1", port, withSecret(SECRET, { ...good, ca: read(certs.rogueCert) })))).toMatch(/certificate|self.signed/i);
    await jm.waitForOutput(/TLS handshake failed/);
    expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(2);
  }, 90_000);
  test("a socket that never finishes the TLS handshake (silent, or 5 bytes of a record header) is closed after rpc.handshake-timeout on the RPC and the data port; hundreds of them do not stop a client", async () => {
    const dir = tempDir("tm-tls-stall-");
    const certs = makeCertificates(dir);
    const args = [...mutualTlsArgs(certs), "-D", "rpc.handshake-timeout=2s"];
    // 2 s, not less: the legitimate client below must finish its own TLS handshake within it while hundreds of
    // stalled sockets are open on a loaded 2-core machine.
    const env = { TM_SECURITY_AUTH_SECRET: SECRET };
    const { jm, port } = await startJobManager(args, env);
    const tm = startTaskManager(port, "tm-a", args, env);
    const dataPort = Number((await tm.waitForOutput(/TaskManager started id=tm-a dataPort=(\d+)/))[1]);
    await tm.waitForOutput(/registered at the JobManager/);
    const header = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]); // a handshake record of 512 bytes that never comes
    for (const p of [port, dataPort]) {
      const t0 = Date.now();
      const silent = await openSocket(p);
      const partial = await openSocket(p);
      partial.write(header);
      await Promise.all([closedWithin(silent, 6000), closedWithin(partial, 6000)]);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    }
    await jm.waitForOutput(/refused a connection: TLS handshake failed peer=127\.0\.0\.1:\d+ port=\d+ error=TLS handshake not completed within 2000 ms/);
    await tm.waitForOutput(/refused a connection: TLS handshake failed peer=127\.0\.0\.1:\d+ port=\d+ error=TLS handshake not completed within 2000 ms/);

    const read = (f: string) => fs.readFileSync(f);
    const good = { cert: read(certs.clientCert), key: read(certs.clientKey), ca: read(certs.ca), clientAuth: true };
    // 250 stalled sockets at once (under rpc.max-connections-per-address, 256): a client is served meanwhile, and
    // all of them are closed within the time-out, so the address's quota is free again.
    const stalled = await Promise.all(Array.from({ length: 250 }, (_, i) => openSocket(port).then((s) => (i % 2 ? s.write(header) : undefined, s))));
    const during = await connectClient("127.0.0.1", port, withSecret(SECRET, good));
    expect((await during.request("clusterOverview", {})).taskManagers).toBe(1);
    during.close();
    await Promise.all(stalled.map((s) => closedWithin(s, 8000)));
    // More than the quota in one burst: those over it are refused at once, the rest closed by the time-out.
    const burst = await Promise.all(Array.from({ length: 300 }, () => openSocket(port).catch(() => null)));
    await Promise.all(burst.map((s) => s && closedWithin(s, 8000)));
    const rpc = await connectClient("127.0.0.1", port, withSecret(SECRET, good));
    closers.push(() => rpc.close());
    expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(1);
  }, 60_000);
  test("TLS misconfiguration is named: a key that does not match its certificate (exit 2), a plain client at a TLS port, a TLS client at a plain port", async () => {
    const dir = tempDir("tm-tls-names-");
    const certs = makeCertificates(dir);
    const mismatched = mutualTlsArgs(certs).map((a) => a.replace(`key-file=${certs.nodeKey}`, `key-file=${certs.clientKey}`));
    for (const role of ["jobmanager", "taskmanager"]) {
      const p = new Child([BUN, "main.ts", role, "-D", "jobmanager.rpc.port=0", ...mismatched]);
      expect(await p.exited(15_000)).toBe(2);
      expect(p.stderr.trim().split("\n")).toEqual([
        `error: security.ssl.key-file: the key in ${certs.clientKey} does not match the certificate in security.ssl.cert-file ${certs.nodeCert}`,
      ]);
    }
    fs.writeFileSync(path.join(dir, "not-a-key"), "hello\n");
    const noKey = new Child([BUN, "main.ts", "jobmanager", ...mutualTlsArgs(certs).map((a) => a.replace(certs.nodeKey, `${dir}/not-a-key`))]);
    expect(await noKey.exited(15_000)).toBe(2);
    expect(noKey.stderr).toStartWith(`error: security.ssl.key-file: ${dir}/not-a-key holds no PEM private key`);

    // `list` without TLS against a TLS JobManager: the client says the peer speaks TLS (not a frame size).
    const env = { TM_SECURITY_AUTH_SECRET: SECRET };
    const { port } = await startJobManager(mutualTlsArgs(certs), env);
    const list = new Child([BUN, "main.ts", "list", "-m", `127.0.0.1:${port}`], env);
    expect(await list.exited(15_000)).toBe(1);
    expect(list.stderr.trim()).toMatch(/^error: the peer speaks TLS \(a TLS (alert|record) instead of a handshake frame\): set security\.ssl\.enabled = true/);
    // A TLS client at a plain JobManager: the JobManager names it in its log.
    const { jm: plain, port: plainPort } = await startJobManager([], env);
    const read = (f: string) => fs.readFileSync(f);
    await refusal(connectClient("127.0.0.1", plainPort, { ...withSecret(SECRET, { cert: read(certs.clientCert), key: read(certs.clientKey), ca: read(certs.ca), clientAuth: true }) }));
    await plain.waitForOutput(/refused a connection peer=127\.0\.0\.1:\d+ port=\d+ error=the peer speaks TLS \(a TLS ClientHello on a plain port\): security\.ssl\.enabled is set there but not here/);
  }, 60_000);
});

describe("task isolation", () => {
  test("canceling a job terminates a task stuck in an endless loop within 1 s; the TaskManager lives on", async () => {
    const dir = tempDir("tm-loop-");
    const { port } = await startJobManager([]);
    const tm = startTaskManager(port, "tm-a", []);
    await tm.waitForOutput(/registered at the JobManager/);
    const rpc = await connectClient("127.0.0.1", port, { security: NO_SECURITY });
    closers.push(() => rpc.close());
    const file = path.join(dir, "loop.ts");
    fs.writeFileSync(file, `export default (env) => { env.fromSequence(1, 10).map((x) => { for (;;) {} }).addSink(() => {}); };`);
    const jobId = await submitJob(rpc, await prepareJob(file, [], 2));
    const t = Date.now();
    while ((await rpc.request("jobStatus", { jobId })).tasks.RUNNING !== 2) {
      if (Date.now() - t > 20_000) throw new Error("the looping tasks never started");
      await Bun.sleep(20);
    }
    await Bun.sleep(300); // well inside the loop
    const t0 = Date.now();
    await rpc.request("cancelJob", { jobId });
    const status = await waitForJob(rpc, jobId, () => {}, 10);
    const ms = Date.now() - t0;
    expect(status.state).toBe("CANCELED");
    expect(ms).toBeLessThan(1000);
    expect(tm.proc.exitCode).toBeNull();
    await tm.waitForOutput(/task state changed .*state=CANCELED/);
    expect((await rpc.request("clusterOverview", {})).slotsAvailable).toBe(2);
  }, 60_000);

  test("a job artifact whose content does not match its hash is refused and not cached", async () => {
    const dir = tempDir("tm-artifacts-");
    const cache = new ArtifactCache(dir);
    const good = new TextEncoder().encode("export default () => {};");
    const hash = sha256Hex(good);
    const tampered = new TextEncoder().encode("export default () => { globalThis.pwned = true; };");
    const msg = await refusal(cache.get(hash, async () => tampered));
    expect(msg).toBe(`artifact ${hash} refused: its content hashes to ${sha256Hex(tampered)}`);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(await refusal(cache.get("../../etc/passwd", async () => good))).toMatch(/invalid artifact hash/);
    expect(await cache.get(hash, async () => good)).toBe(path.join(dir, `${hash}.ts`));
  });
});

describe("REST API and metrics endpoints", () => {
  /** A slow endless job at parallelism 1, running on `rpc`'s cluster; returns its id. */
  async function runningJob(rpc: RpcConnection, dir: string): Promise<string> {
    const file = path.join(dir, "slow.ts");
    fs.writeFileSync(file, `export default (env) => { const s = new Int32Array(new SharedArrayBuffer(4)); env.fromSequence(1, 1e12).addSink(() => Atomics.wait(s, 0, 0, 1)); };`);
    const jobId = await submitJob(rpc, await prepareJob(file, [], 1));
    for (const t = Date.now(); (await rpc.request("jobStatus", { jobId })).tasks.RUNNING !== 1; await Bun.sleep(50)) {
      if (Date.now() - t > 20_000) throw new Error("the job never started");
    }
    return jobId;
  }
  const restOf = async (jm: Child, scheme = "http") => `${scheme}://127.0.0.1:${(await jm.waitForOutput(/REST API started rest=127\.0\.0\.1:(\d+)/))[1]}`;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  /** A JobManager with the shared secret (and jmArgs), one TaskManager, a client with the secret and a running job. */
  const securedJob = async (dir: string, jmArgs: string[]) => {
    const env = { TM_SECURITY_AUTH_SECRET: SECRET };
    const { jm, port } = await startJobManager(jmArgs, env);
    const rest = await restOf(jm);
    const tm = startTaskManager(port, "tm-a", [], env);
    await tm.waitForOutput(/registered at the JobManager/);
    const rpc = await connectClient("127.0.0.1", port, withSecret(SECRET));
    closers.push(() => rpc.close());
    return { jm, tm, rest, rpc, jobId: await runningJob(rpc, dir) };
  };

  test("with a shared secret, cancel and savepoint need 'Authorization: Bearer <secret>' (401 with WWW-Authenticate otherwise); reads need nothing", async () => {
    const dir = tempDir("tm-rest-auth-");
    const { jm, tm, rest, rpc, jobId } = await securedJob(dir, ["-D", `jobmanager.storage.dir=${dir}/jm`]);

    // Reads are open (the dashboard, Prometheus).
    expect((await fetch(`${rest}/overview`)).status).toBe(200);
    expect((await fetch(`${rest}/jobs/${jobId}`)).status).toBe(200);
    expect((await fetch(`${rest}/metrics`)).status).toBe(200);

    // Every mutating call without the token, with a wrong one, or with another scheme: 401, and nothing happens.
    const calls: [string, string, string?][] = [
      ["PATCH", `/jobs/${jobId}?mode=cancel`],
      ["POST", `/jobs/${jobId}/cancel`],
      ["POST", `/jobs/${jobId}/savepoints`, JSON.stringify({ "target-directory": path.join(dir, "sp") })],
      ["PATCH", `/jobs/no-such-job?mode=cancel`], // no probing for job ids either
    ];
    for (const [method, p, body] of calls) {
      for (const headers of [{}, bearer(WRONG), bearer(SECRET.slice(0, -1)), bearer(SECRET + "x"), { authorization: `Basic ${btoa("u:" + SECRET)}` }, { authorization: SECRET }]) {
        const r = await fetch(rest + p, { method, headers, body });
        expect(r.status).toBe(401);
        expect(r.headers.get("www-authenticate")).toBe("authorization" in headers ? 'Bearer realm="tm", error="invalid_token"' : 'Bearer realm="tm"');
        expect((await r.json()).errors[0]).toMatch(/Authorization: Bearer <token>/);
      }
    }
    expect((await rpc.request("jobStatus", { jobId })).state).toBe("RUNNING");
    expect(fs.existsSync(path.join(dir, "sp"))).toBe(false);

    // With the secret as the token: a savepoint, then cancel.
    const sp = await fetch(`${rest}/jobs/${jobId}/savepoints`, { method: "POST", headers: { ...bearer(SECRET), "content-type": "application/json" }, body: JSON.stringify({ "target-directory": path.join(dir, "sp") }) });
    expect(sp.status).toBe(202);
    const { "request-id": requestId } = await sp.json();
    for (const t = Date.now(); ; await Bun.sleep(50)) {
      const s = await (await fetch(`${rest}/jobs/${jobId}/savepoints/${requestId}`)).json();
      if (s.status.id === "COMPLETED") {
        expect(s.operation).toEqual({ location: expect.stringMatching(new RegExp(`^${path.join(dir, "sp")}/savepoint-`)) });
        break;
      }
      if (Date.now() - t > 15_000) throw new Error("the savepoint never completed");
    }
    expect((await fetch(`${rest}/jobs/${jobId}?mode=cancel`, { method: "PATCH", headers: { authorization: `bearer  ${SECRET}` } })).status).toBe(202);
    expect((await waitForJob(rpc, jobId, () => {}, 50)).state).toBe("CANCELED");
    for (const p of [jm, tm]) expect(p.stdout + p.stderr).not.toContain(SECRET);
  }, 60_000);

  test("security.rest.token-file: a token of its own for REST (the shared secret is then not accepted there)", async () => {
    const dir = tempDir("tm-rest-token-");
    const TOKEN = "rest-token-for-operators-0123456789";
    fs.writeFileSync(path.join(dir, "token"), TOKEN + "\n", { mode: 0o600 });
    const { jm, rest, rpc, jobId } = await securedJob(dir, ["-D", `security.rest.token-file=${dir}/token`]);
    expect((await fetch(`${rest}/jobs/${jobId}?mode=cancel`, { method: "PATCH", headers: bearer(SECRET) })).status).toBe(401);
    expect((await fetch(`${rest}/jobs/${jobId}?mode=cancel`, { method: "PATCH" })).status).toBe(401);
    expect((await rpc.request("jobStatus", { jobId })).state).toBe("RUNNING");
    expect((await fetch(`${rest}/jobs/${jobId}?mode=cancel`, { method: "PATCH", headers: bearer(TOKEN) })).status).toBe(202);
    expect((await waitForJob(rpc, jobId, () => {}, 50)).state).toBe("CANCELED");
    expect(jm.stdout + jm.stderr).not.toContain(TOKEN);

    // A token file too short, or missing: a configuration error (exit 2) that names the key, not the token.
    fs.writeFileSync(path.join(dir, "short"), "abc");
    for (const [file, msg] of [["short", "security.rest.token-file: the token in"], ["missing", "security.rest.token-file: cannot read"]] as const) {
      const bad = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", `security.rest.token-file=${dir}/${file}`]);
      expect(await bad.exited(15_000)).toBe(2);
      expect(bad.stderr).toContain(msg);
    }
  }, 60_000);

  test("REST on a non-loopback address needs a secret, a REST token or security.insecure", async () => {
    const open = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.address=0.0.0.0"]);
    expect(await open.exited(15_000)).toBe(2);
    expect(open.stderr).toMatch(/refusing to listen on 0\.0\.0\.0:0 \(REST API\) without authentication/);
    const dir = tempDir("tm-rest-bind-");
    fs.writeFileSync(path.join(dir, "token"), "rest-token-for-operators-0123456789");
    for (const [args, env] of [
      [["-D", "security.insecure=true"], {}],
      [[], { TM_SECURITY_AUTH_SECRET: SECRET }],
      [["-D", `security.rest.token-file=${dir}/token`], {}], // RPC stays on loopback without a secret
    ] as const) {
      const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.address=0.0.0.0", ...args], env);
      const restPort = (await jm.waitForOutput(/REST API started rest=0\.0\.0\.0:(\d+)/))[1];
      expect((await fetch(`http://127.0.0.1:${restPort}/overview`)).status).toBe(200);
      const cancel = await fetch(`http://127.0.0.1:${restPort}/jobs/x?mode=cancel`, { method: "PATCH" });
      expect(cancel.status).toBe((args as readonly string[]).includes("security.insecure=true") ? 404 : 401); // insecure: no token needed
      jm.kill();
    }
  }, 60_000);

  test("the dashboard's cancel button asks for the token after a 401, keeps it in sessionStorage, and cancels", async () => {
    const dir = tempDir("tm-rest-dash-");
    const { rest, rpc, jobId } = await securedJob(dir, []);
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launchPersistentContext(path.join(dir, "profile"), {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      timeout: 30_000,
    });
    closers.push(() => void browser.close());
    const page = browser.pages()[0] ?? (await browser.newPage());
    const dialogs: string[] = [];
    // First a wrong token (the call fails, nothing is kept), then the right one.
    let answer = WRONG;
    page.on("dialog", (d) => {
      dialogs.push(d.type());
      void (d.type() === "prompt" ? d.accept(answer) : d.accept());
    });
    await page.goto(`${rest}/#/job/${jobId}`);
    await page.locator("#cancel").click({ timeout: 10_000 });
    await waitForDialogs(dialogs, 3); // confirm, prompt, alert with the error
    expect(dialogs).toEqual(["confirm", "prompt", "alert"]);
    expect(await page.evaluate(() => sessionStorage.getItem("tm-rest-token"))).toBeNull();
    expect((await rpc.request("jobStatus", { jobId })).state).toBe("RUNNING");
    answer = SECRET;
    await page.locator("#cancel").click({ timeout: 10_000 });
    await waitForJob(rpc, jobId, () => {}, 50);
    expect((await rpc.request("jobStatus", { jobId })).state).toBe("CANCELED");
    expect(dialogs).toEqual(["confirm", "prompt", "alert", "confirm", "prompt"]);
    expect(await page.evaluate(() => sessionStorage.getItem("tm-rest-token"))).toBe(SECRET);
    await browser.close();
  }, 90_000);

  test("with security.ssl.enabled the REST API and the TaskManager's metrics endpoint speak HTTPS with the node certificate", async () => {
    const dir = tempDir("tm-rest-tls-");
    const certs = makeCertificates(dir);
    const tlsArgs = mutualTlsArgs(certs); // mutual TLS on RPC and data; REST and metrics want no client certificate
    const env = { TM_SECURITY_AUTH_SECRET: SECRET };
    const { jm, port } = await startJobManager(tlsArgs, env);
    await jm.waitForOutput(/REST API started .*dashboard=https:\/\/127\.0\.0\.1:\d+\//);
    const rest = await restOf(jm, "https");
    const tm = startTaskManager(port, "tm-a", tlsArgs, env);
    const metrics = `https://127.0.0.1:${(await tm.waitForOutput(/metrics endpoint started metrics=127\.0\.0\.1:(\d+)/))[1]}`;
    await tm.waitForOutput(/registered at the JobManager/);
    const ca = fs.readFileSync(certs.ca, "utf8");
    const tls = { ca };

    const o = await fetch(`${rest}/overview`, { tls });
    expect(o.status).toBe(200);
    expect((await o.json()).taskmanagers).toBe(1);
    expect((await fetch(`${metrics}/metrics`, { tls })).status).toBe(200);
    expect(await (await fetch(`${metrics}/readyz`, { tls })).json()).toEqual({ status: "ready" });
    // A mutating call over TLS still needs the token.
    expect((await fetch(`${rest}/jobs/x?mode=cancel`, { method: "PATCH", tls })).status).toBe(401);
    expect((await fetch(`${rest}/jobs/x?mode=cancel`, { method: "PATCH", tls, headers: bearer(SECRET) })).status).toBe(404);

    // Without the CA the certificate is not trusted; plain HTTP gets no answer.
    for (const url of [rest, metrics]) {
      expect(await refusal(fetch(`${url}/healthz`))).toMatch(/certificate|self.signed|verify/i);
      expect(await refusal(fetch(`${url.replace("https:", "http:")}/healthz`, { signal: AbortSignal.timeout(3000) }))).toMatch(/./);
      // Both still serve afterwards.
      expect((await fetch(`${url}/healthz`, { tls })).status).toBe(200);
    }
  }, 60_000);
});

// ---- helpers ----

async function waitForDialogs(dialogs: string[], n: number): Promise<void> {
  for (const t = Date.now(); dialogs.length < n; await Bun.sleep(20)) {
    if (Date.now() - t > 10_000) throw new Error(`expected ${n} dialogs, saw ${JSON.stringify(dialogs)}`);
  }
}

/** Writes frames to a raw socket and collects the decoded frames the peer sends until it closes. */
function rawExchange(port: number, frames: Buffer[]): Promise<unknown[]> {
  return rawPeer(port, Buffer.concat(frames));
}

/**
 * Speaks the handshake by hand: Hello with a nonce, then a made-up proof (plus `after` frames in the same
 * write) in answer to the challenge. Returns the peer's last frame before it closed.
 */
async function forgedProof(port: number, role: "client" | "taskmanager" | "data", after: Buffer[] = []): Promise<unknown> {
  const got = await rawPeer(port, encodeFrame({ version: PROTOCOL_VERSION, role, id: "forger", nonce: new Uint8Array(32).fill(7) }), {
    onFrame: (f, sock) => {
      if ((f as { challenge?: unknown }).challenge) sock.write(Buffer.concat([encodeFrame({ proof: new Uint8Array(32).fill(9) }), ...after]));
    },
  });
  expect(got.length).toBe(2); // the challenge, then the refusal
  return got.at(-1);
}

function openSocket(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1");
    s.on("error", () => {});
    s.once("connect", () => resolve(s));
    s.once("close", () => reject(new Error("closed before connecting")));
    s.resume();
    closers.push(() => s.destroy());
  });
}

function closedWithin(s: net.Socket, ms: number): Promise<void> {
  if (s.destroyed || s.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket not closed within ${ms} ms`)), ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    s.once("close", done);
    s.once("end", done);
  });
}

function fakeDeployment(artifactHash: string): TaskDeployment {
  return {
    jobId: "e".repeat(32), jobName: "evil", executionId: `${"e".repeat(32)}-0-0-0`, vertexId: 0, vertexName: "Source", subtaskIndex: 0,
    parallelism: 1, maxParallelism: 128, slot: 0, artifactHash, jobArgs: [], operatorIds: [0], inputs: [], outputs: [],
    runtimeMode: "streaming", bufferTimeoutMs: 100, planFingerprint: "", stateBackend: null, attempt: 0,
    checkpointingMode: "EXACTLY_ONCE", restore: null,
  };
}

/** -D flags for TLS with the node certificate, trusting the test CA, and client certificates required. */
function mutualTlsArgs(certs: ReturnType<typeof makeCertificates>): string[] {
  return [
    "-D", "security.ssl.enabled=true",
    "-D", `security.ssl.cert-file=${certs.nodeCert}`,
    "-D", `security.ssl.key-file=${certs.nodeKey}`,
    "-D", `security.ssl.ca-file=${certs.ca}`,
    "-D", "security.ssl.client-auth=true",
  ];
}

/** A CA, a node and a client certificate it signs (for 127.0.0.1 and localhost), and a self-signed rogue one. */
export function makeCertificates(dir: string) {
  const f = (n: string) => path.join(dir, n);
  const run = (args: string[]) => {
    const r = spawnSync(["openssl", ...args], { cwd: dir, stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(r.stderr as Uint8Array)}`);
  };
  fs.writeFileSync(f("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n");
  run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tm-test-ca"]);
  for (const n of ["node", "client"]) {
    run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${n}.key`, "-out", `${n}.csr`, "-subj", `/CN=${n}`]);
    run(["x509", "-req", "-in", `${n}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${n}.pem`, "-days", "2", "-extfile", "ext.cnf"]);
  }
  run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue", "-addext", "subjectAltName=IP:127.0.0.1"]);
  return { ca: f("ca.pem"), nodeCert: f("node.pem"), nodeKey: f("node.key"), clientCert: f("client.pem"), clientKey: f("client.key"), rogueCert: f("rogue.pem"), rogueKey: f("rogue.key") };
}

describe("malformed requests", () => {
  test("each request type with a malformed payload is answered by an error naming the field; JobManager and TaskManager serve on", async () => {
    const { port } = await startJobManager([]);
    const client = await connectRpc("127.0.0.1", port, { version: PROTOCOL_VERSION, role: "client", id: "malformed" }, () => ({}));
    closers.push(() => client.close());
    const req = (conn: RpcConnection, type: string, p: unknown) => refusal(conn.request(type as never, p as never, 10_000));
    // Client requests to the JobManager.
    expect(await req(client, "jobStatus", { jobId: 7 })).toBe("jobStatus: jobId: expected a string, got 7");
    expect(await req(client, "cancelJob", {})).toBe("cancelJob: jobId: missing");
    expect(await req(client, "triggerSavepoint", { jobId: "j", cancel: "yes" })).toBe('triggerSavepoint: cancel: expected a boolean, got "yes"');
    expect(await req(client, "submitJob", { artifact: "not bytes", jobArgs: [], graph: {} })).toBe('submitJob: artifact: expected bytes, got "not bytes"');
    expect(await req(client, "submitJob", { artifact: new Uint8Array(1), jobArgs: ["a", 2], graph: {} })).toBe("submitJob: jobArgs.1: expected a string, got 2");
    expect(await req(client, "listJobs", "x")).toBe('listJobs: payload: expected an object, got "x"');

    // TaskManager requests to the JobManager, on a connection that says it is a TaskManager.
    const tm = await connectRpc("127.0.0.1", port, { version: PROTOCOL_VERSION, role: "taskmanager", id: "tm-fake" }, () => ({}));
    closers.push(() => tm.close());
    const registration = { resourceId: "tm-fake", dataHost: "127.0.0.1", dataPort: 1, slots: 2, resources: { cpuCores: 1, memoryBytes: 1 }, pid: 1 };
    expect(await req(tm, "registerTaskManager", { ...registration, dataPort: "x" })).toBe('registerTaskManager: dataPort: expected a number, got "x"');
    expect(await req(tm, "registerTaskManager", { ...registration, dataPort: 70000 })).toBe("registerTaskManager: dataPort: expected a port (0..65535), got 70000");
    expect(await req(tm, "registerTaskManager", { ...registration, slots: 1.5 })).toBe("registerTaskManager: slots: expected an integer, got 1.5");
    expect(await req(tm, "registerTaskManager", { ...registration, resources: { cpuCores: 1 } })).toBe("registerTaskManager: resources.memoryBytes: missing");
    expect(await req(tm, "offerSlots", { resourceId: "tm-fake", slots: [0, -1] })).toBe("offerSlots: slots.1: expected a non-negative integer, got -1");
    expect(await req(tm, "heartbeat", { from: "tm-fake", process: { heapUsed: "lots" } })).toBe('heartbeat: process.heapUsed: expected a number, got "lots"');
    expect(await req(tm, "updateTaskState", { executionId: "e", state: "SLEEPING" })).toBe('updateTaskState: state: expected one of ("DEPLOYING" | "RUNNING" | "FINISHED" | "FAILED" | "CANCELING" | "CANCELED"), got "SLEEPING"');
    expect(await req(tm, "acknowledgeCheckpoint", { executionId: "e", checkpointId: "1" })).toBe('acknowledgeCheckpoint: checkpointId: expected a number, got "1"');
    expect(await req(tm, "declineCheckpoint", { executionId: ["e"], checkpointId: 1 })).toBe("declineCheckpoint: executionId: expected a string, got Array");
    expect(await req(tm, "approveFinalCommit", {})).toBe("approveFinalCommit: executionId: missing");
    expect(await req(tm, "fetchArtifact", { hash: null })).toBe("fetchArtifact: hash: expected a string, got null");
    expect(await req(tm, "disconnectTaskManager", { resourceId: "tm-fake", reason: 5 })).toBe("disconnectTaskManager: reason: expected a string, got 5");
    // A peer's long text is quoted only in part.
    expect(await req(tm, "updateTaskState", { executionId: "e", state: "x".repeat(5000) })).toMatch(/got "x{79}\.\.\.$/);
    // Both connections still serve: a proper registration is taken.
    expect(await tm.request("registerTaskManager", registration)).toMatchObject({ heartbeatIntervalMs: expect.any(Number) });
    expect((await client.request("clusterOverview", {})).taskManagers).toBe(1);

    // JobManager requests to a real TaskManager, from a JobManager of the test's own that it registers at.
    let jmSide: RpcConnection | null = null;
    const fakeJm = await listenFramed("127.0.0.1", 0, "fake-jm", (framed) => {
      jmSide = new RpcConnection(framed, (type) => {
        if (type === "registerTaskManager") return { jobManagerId: "fake-jm", heartbeatIntervalMs: 100_000, heartbeatTimeoutMs: 1_000_000 };
        if (type === "offerSlots") return { accepted: [] };
        return {};
      });
    });
    closers.push(() => fakeJm.close());
    const victim = startTaskManager(boundPort(fakeJm), "tm-real", []);
    await victim.waitForOutput(/registered at the JobManager/, 30_000);
    const jm = jmSide! as RpcConnection;
    expect(await req(jm, "submitTask", { ...fakeDeployment("0".repeat(64)), slot: "0" })).toBe('submitTask: slot: expected a number, got "0"');
    expect(await req(jm, "submitTask", { ...fakeDeployment("0".repeat(64)), outputs: [{ edgeId: 0, partitioner: "hash", targets: [{ resourceId: "r", dataHost: "h", dataPort: -1, subtask: 0 }] }] })).toBe(
      "submitTask: outputs.0.targets.0.dataPort: expected a port (0..65535), got -1",
    );
    expect(await req(jm, "cancelTask", { executionId: 1 })).toBe("cancelTask: executionId: expected a string, got 1");
    expect(await req(jm, "releaseJob", {})).toBe("releaseJob: jobId: missing");
    expect(await req(jm, "triggerCheckpoint", { executionId: "e", checkpointId: 1, timestamp: 0 })).toBe("triggerCheckpoint: dir: missing");
    expect(await req(jm, "notifyCheckpointComplete", { executionId: "e", checkpointId: 0.5 })).toBe("notifyCheckpointComplete: checkpointId: expected an integer, got 0.5");
    expect(await req(jm, "heartbeat", { from: 1 })).toBe("heartbeat: from: expected a string, got 1");
    // The TaskManager serves on and ran nothing.
    expect((await jm.request("taskManagerInfo", {}, 10_000)).logs.length).toBeGreaterThan(0);
    expect(victim.stdout + victim.stderr).not.toMatch(/deploying task/);
  }, 90_000);
});
