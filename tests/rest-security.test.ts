// The REST API against other web pages an operator has open (a real JobManager and TaskManager, a running job):
// a foreign Origin cannot cancel, a text/plain or form body cannot write a savepoint, a foreign Host header is
// refused (DNS rebinding), an oversized body is answered 413 at once, a relative savepoint directory is refused
// without state.savepoints.dir; the dashboard's own calls and allowed origins still work.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as path from "node:path";
import { waitForJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, ROOT, removeTempDirs, tempDir, waitFor } from "./helpers.ts";
import { startOpsCluster } from "./ops-job.ts";

const MAIN = path.join(ROOT, "main.ts");
const ALLOWED_ORIGIN = "http://ops.example:9000";
let dir: string;
/** The JobManager's working directory: where a relative savepoint directory used to end up. */
let jmCwd: string;
let rpcPort: number;
let restPort: number;
let rest: string;
let rpc: RpcConnection;
let jobId: string;

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: any;
}

/** One HTTP request with exactly these headers (fetch would not send a Host or Origin of our choosing). */
function request(method: string, p: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port: restPort, method, path: p, headers, agent: false, timeout: 10_000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON (the dashboard, /metrics)
        }
        resolve({ status: res.statusCode!, headers: res.headers, body: parsed });
      });
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`${method} ${p}: no answer in 10 s`)));
    req.end(body);
  });
}

const own = () => `127.0.0.1:${restPort}`;
const jobState = async () => (await rpc.request("jobStatus", { jobId })).state as string;

beforeAll(async () => {
  dir = tempDir("tm-rest-security-");
  jmCwd = path.join(dir, "jm-cwd");
  fs.mkdirSync(jmCwd);
  ({ rpcPort, restPort, rpc, jobId } = await startOpsCluster({
    dir,
    jobName: "ops-security",
    parallelism: 2,
    jmArgs: ["-D", "rest.allowed-hosts=jm.example", "-D", `rest.allowed-origins=${ALLOWED_ORIGIN}`],
    jmCwd,
  }));
  rest = `http://127.0.0.1:${restPort}`;
}, 40_000);

afterAll(async () => {
  rpc?.close();
  await Child.stopAll();
  removeTempDirs();
});

describe("cross-site requests", () => {
  test("a foreign Origin cannot cancel the job: 403 naming the origin, and the job keeps running", async () => {
    const evil = { host: own(), origin: "http://evil.example" };
    const patch = await request("PATCH", `/jobs/${jobId}?mode=cancel`, evil);
    const post = await request("POST", `/jobs/${jobId}/cancel`, { ...evil, "content-type": "application/x-www-form-urlencoded" }, "a=1");
    // A browser that sends no Origin still says the request comes from another site.
    const noOrigin = await request("POST", `/jobs/${jobId}/cancel`, { host: own(), "sec-fetch-site": "cross-site" });
    const nullOrigin = await request("PATCH", `/jobs/${jobId}?mode=cancel`, { host: own(), origin: "null" });
    for (const r of [patch, post]) {
      expect(r.status).toBe(403);
      expect(r.body.errors[0]).toContain('Origin "http://evil.example" refused');
    }
    expect(noOrigin.status).toBe(403);
    expect(noOrigin.body.errors[0]).toContain("Sec-Fetch-Site: cross-site");
    expect(nullOrigin.status).toBe(403);
    expect(await jobState()).toBe("RUNNING");
    // Still running: records keep flowing after the refused calls.
    const before = (await rpc.request("jobStatus", { jobId })).recordsIn;
    await waitFor("records to keep flowing", async () => (await rpc.request("jobStatus", { jobId })).recordsIn > before, 10_000);
    expect(await jobState()).toBe("RUNNING");
  }, 20_000);

  test("a savepoint with a text/plain or form body is refused with 415 and creates no directory", async () => {
    const target = path.join(dir, "forged-savepoint");
    const body = JSON.stringify({ "target-directory": target });
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]) {
      const r = await request("POST", `/jobs/${jobId}/savepoints`, { host: own(), "content-type": type }, body);
      expect(r.status).toBe(415);
      expect(r.body.errors[0]).toContain('"Content-Type: application/json"');
      expect(r.body.errors[0]).toContain(JSON.stringify(type));
    }
    // A body without any Content-Type is refused as well.
    const untyped = await request("POST", `/jobs/${jobId}/savepoints`, { host: own(), "content-length": String(Buffer.byteLength(body)) }, body);
    expect(untyped.status).toBe(415);
    expect(fs.existsSync(target)).toBe(false);
    expect((await rpc.request("jobStatus", { jobId })).checkpoints.history.some((h: { savepoint: boolean }) => h.savepoint)).toBe(false);
  });

  test("a Host header that is not this server's is refused on every path (DNS rebinding); its own names are served", async () => {
    for (const p of ["/", "/jobs", "/metrics", `/jobs/${jobId}`]) {
      const r = await request("GET", p, { host: `evil.example:${restPort}` });
      expect(r.status).toBe(403);
      expect(r.body.errors[0]).toContain('Host "evil.example:' + restPort + '" is not an address of this REST API');
      expect(r.body.errors[0]).toContain("rest.allowed-hosts");
    }
    const cancel = await request("PATCH", `/jobs/${jobId}?mode=cancel`, { host: "evil.example", origin: "http://evil.example" });
    expect(cancel.status).toBe(403);
    expect(await jobState()).toBe("RUNNING");
    // The bound address, loopback names for a loopback bind, and rest.allowed-hosts.
    for (const host of [own(), `localhost:${restPort}`, `[::1]:${restPort}`, `jm.example:${restPort}`, "JM.example."]) {
      const r = await request("GET", "/jobs", { host });
      expect({ host, status: r.status }).toEqual({ host, status: 200 });
    }
  });

  test("an oversized body is answered 413 at once: a declared 20 MB before any of it is sent, a chunked one as it passes the limit", async () => {
    // Content-Length 20 MB, no byte of the body sent: the answer must not wait for it.
    const declared = await rawExchange(`POST /jobs/${jobId}/savepoints HTTP/1.1\r\nHost: ${own()}\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n`, null);
    expect(declared.response).toStartWith("HTTP/1.1 413 ");
    expect(declared.response).toContain("the request body exceeds");
    expect(declared.ms).toBeLessThan(5_000);
    // A chunked body that never ends: the answer comes once the limit is passed, long before 20 MB are sent.
    const chunked = await rawExchange(`POST /jobs/${jobId}/savepoints HTTP/1.1\r\nHost: ${own()}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`, 20_000_000);
    expect(chunked.response).toStartWith("HTTP/1.1 413 ");
    expect(chunked.sent).toBeLessThan(10_000_000);
    expect(await jobState()).toBe("RUNNING");
  }, 30_000);

  test("a relative savepoint directory without state.savepoints.dir is refused (REST 400, CLI), never put in a working directory", async () => {
    const r = await request("POST", `/jobs/${jobId}/savepoints`, { host: own(), "content-type": "application/json" }, JSON.stringify({ "target-directory": "relative-sp" }));
    expect(r.status).toBe(400);
    expect(r.body.errors[0]).toBe('target-directory: the savepoint directory "relative-sp" is relative and state.savepoints.dir is not set: give an absolute path');
    const cliCwd = path.join(dir, "cli-cwd");
    fs.mkdirSync(cliCwd);
    const cli = new Child([BUN, MAIN, "savepoint", jobId, "relative-cli-sp", "-m", `127.0.0.1:${rpcPort}`], {}, cliCwd);
    expect(await cli.exited(30_000)).toBe(1);
    expect(cli.stderr).toContain('the savepoint directory "relative-cli-sp" is relative and state.savepoints.dir is not set');
    expect(fs.readdirSync(jmCwd)).toEqual([]);
    expect(fs.readdirSync(cliCwd)).toEqual([]);
    expect(await jobState()).toBe("RUNNING");
  }, 40_000);

  test("an allowed origin gets CORS headers (also on the preflight); a foreign one gets none", async () => {
    const pre = await request("OPTIONS", `/jobs/${jobId}/savepoints`, { host: own(), origin: ALLOWED_ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "content-type" });
    expect(pre.status).toBe(204);
    expect(pre.headers["access-control-allow-origin"]).toBe(ALLOWED_ORIGIN);
    expect(pre.headers["access-control-allow-headers"]).toContain("content-type");
    const evil = await request("OPTIONS", `/jobs/${jobId}/savepoints`, { host: own(), origin: "http://evil.example", "access-control-request-method": "POST" });
    expect(evil.headers["access-control-allow-origin"]).toBeUndefined();
    const read = await request("GET", "/overview", { host: own(), origin: ALLOWED_ORIGIN });
    expect(read.status).toBe(200);
    expect(read.headers["access-control-allow-origin"]).toBe(ALLOWED_ORIGIN);
  });

  test("the legitimate calls still work: a JSON savepoint from an allowed origin, then the dashboard's same-origin cancel", async () => {
    const target = path.join(dir, "savepoints");
    const sp = await request("POST", `/jobs/${jobId}/savepoints`, { host: own(), origin: ALLOWED_ORIGIN, "content-type": "application/json; charset=utf-8" }, JSON.stringify({ "target-directory": target }));
    expect(sp.status).toBe(202);
    const done = await waitFor("the savepoint", async () => {
      const s = await (await fetch(`${rest}/jobs/${jobId}/savepoints/${sp.body["request-id"]}`)).json();
      return s.status.id === "COMPLETED" && s;
    }, 20_000);
    expect(fs.existsSync(path.join(done.operation.location, "_metadata"))).toBe(true);
    expect(done.operation.location.startsWith(target + path.sep)).toBe(true);
    // What the dashboard sends: PATCH without a body, with the page's own Origin.
    const cancel = await request("PATCH", `/jobs/${jobId}?mode=cancel`, { host: own(), origin: `http://${own()}`, "sec-fetch-site": "same-origin" });
    expect(cancel.status).toBe(202);
    expect((await waitForJob(rpc, jobId, () => {}, 100)).state).toBe("CANCELED");
  }, 40_000);
});

/**
 * Sends `head` on a raw socket, then (with `bodyBytes`) a chunked body of up to that many bytes, 64 KiB per chunk,
 * until an answer arrives; returns the answer, the time it took and the body bytes sent by then.
 */
async function rawExchange(head: string, bodyBytes: number | null): Promise<{ response: string; ms: number; sent: number }> {
  const socket = net.connect(restPort, "127.0.0.1");
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const started = Date.now();
  let response = "";
  let sent = 0;
  socket.on("data", (d) => (response += d.toString("latin1")));
  socket.on("error", () => {}); // a reset after the answer is fine: the answer is what counts
  socket.write(head);
  const chunk = Buffer.alloc(65536, "x");
  // Each chunk handed to the kernel before the next (whose buffers still take a few MB), so `sent` is close to what
  // reached the server when the answer came.
  while (bodyBytes !== null && response === "" && sent < bodyBytes && !socket.destroyed) {
    await new Promise<void>((resolve) => socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n")]), () => resolve()));
    sent += chunk.length;
    await Bun.sleep(1);
  }
  try {
    await waitFor("an answer", () => /\r\n\r\n/.test(response), 10_000, 10);
  } finally {
    socket.destroy();
  }
  return { response, ms: Date.now() - started, sent };
}
