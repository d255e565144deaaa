// Bounds on what a peer can make one connection hold (issue 20, TigerBeetle's rule): requests being served,
// requests waiting for an answer, frames before the owner's handler is set, and refusal summaries. Real sockets on
// 127.0.0.1, both ends in this process.
import { afterEach, expect, test } from "bun:test";
import * as net from "node:net";
import { connectFramed } from "../src/rpc/connect.ts";
import { MAX_EARLY_FRAMES, type FramedConnection } from "../src/rpc/framed-connection.ts";
import { encodeFrame } from "../src/rpc/framing.ts";
import { boundPort, listenFramed } from "../src/rpc/listen.ts";
import { PROTOCOL_VERSION } from "../src/rpc/messages.ts";
import { MAX_REFUSAL_WINDOWS, RefusalLog } from "../src/rpc/refusal-log.ts";
import { MAX_PENDING_REQUESTS, MAX_REQUESTS_SERVED, RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { Logger } from "../src/util/log.ts";
import { waitFor } from "./helpers.ts";

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

const hello = { version: PROTOCOL_VERSION, role: "client" as const, id: "limits-test" };

async function server(onConnection: (conn: FramedConnection) => void): Promise<number> {
  const srv = await listenFramed("127.0.0.1", 0, "limits-server", onConnection);
  closers.push(() => srv.close());
  return boundPort(srv);
}

test("requests beyond MAX_REQUESTS_SERVED at once are answered 'busy' at once; the connection serves on", async () => {
  const release: (() => void)[] = [];
  const port = await server((framed) => {
    // Every jobStatus is held until the test lets it go: they pile up as being served.
    const rpc = new RpcConnection(framed, () => new Promise<object>((resolve) => release.push(() => resolve({ ok: true }))));
    closers.push(() => rpc.close());
  });
  const client = new RpcConnection(await connectFramed("127.0.0.1", port, hello), () => ({}));
  closers.push(() => client.close());
  const held = Array.from({ length: MAX_REQUESTS_SERVED }, () => client.request("jobStatus", { jobId: "x" }, 60_000));
  await waitFor("every held request being served", () => release.length === MAX_REQUESTS_SERVED, 20_000);
  await expect(client.request("jobStatus", { jobId: "x" }, 10_000)).rejects.toThrow(
    `jobStatus: busy: ${MAX_REQUESTS_SERVED} requests of this connection are being served (limit ${MAX_REQUESTS_SERVED}); wait for answers before sending more`,
  );
  for (const r of release.splice(0)) r();
  expect((await Promise.all(held)).length).toBe(MAX_REQUESTS_SERVED);
  // Answered: the connection takes requests again.
  const again = client.request("jobStatus", { jobId: "y" }, 10_000);
  await waitFor("the next request was not served", () => release.length === 1, 10_000);
  release[0]!();
  expect(await again).toEqual({ ok: true } as never);
}, 60_000);

test("requests beyond MAX_PENDING_REQUESTS waiting for a silent peer fail at once naming the limit", async () => {
  const port = await server((framed) => framed.setFrameHandler(() => {})); // reads everything, answers nothing
  const client = new RpcConnection(await connectFramed("127.0.0.1", port, hello), () => ({}));
  closers.push(() => client.close());
  const waiting = Array.from({ length: MAX_PENDING_REQUESTS }, () => client.request("listJobs", {}, 60_000).catch((e: Error) => e.message));
  await expect(client.request("listJobs", {}, 60_000)).rejects.toThrow(
    new RegExp(`^listJobs: ${MAX_PENDING_REQUESTS} requests already wait for an answer from 127\\.0\\.0\\.1:\\d+ \\(limit ${MAX_PENDING_REQUESTS}\\)$`),
  );
  client.close();
  for (const m of await Promise.all(waiting)) expect(m).toMatch(/^listJobs: /); // each fails with the connection
}, 60_000);

test("a peer that sends more than MAX_EARLY_FRAMES frames before the owner set its handler loses the connection", async () => {
  let closedWith: Error | undefined;

  const port = await server((framed) => {

    framed.onClose((err) => (closedWith = err)); // no frame handler: the frames stay early
  });
  // The Hello and the frames in one write: they arrive together, before any handler could be set.
  const frames = [encodeFrame(hello), ...Array.from({ length: MAX_EARLY_FRAMES + 1 }, (_, i) => encodeFrame({ t: "listJobs", id: i + 1, p: {} }))];
  const sock = net.connect(port, "127.0.0.1", () => sock.write(Buffer.concat(frames)));
  sock.on("error", () => {});
  closers.push(() => sock.destroy());
  await waitFor("the connection closed", () => closedWith !== undefined, 20_000);
  expect(closedWith!.message).toBe(`the peer sent more than ${MAX_EARLY_FRAMES} frames before its connection was set up`);

  // Fewer are kept and handed to the handler when it is set.
  let kept: unknown[] = [];
  const port2 = await server((framed) => setTimeout(() => framed.setFrameHandler((b) => kept.push(b)), 50));
  const sock2 = net.connect(port2, "127.0.0.1", () => sock2.write(Buffer.concat(frames.slice(0, 101))));
  closers.push(() => sock2.destroy());
  await waitFor("the early frames handed over", () => kept.length === 100, 20_000);
}, 60_000);

test("refusals from more than MAX_REFUSAL_WINDOWS addresses are summed up together: one line, with their count", () => {
  const lines: [string, Record<string, unknown>][] = [];
  const logger = { warn: (msg: string, fields: Record<string, unknown> = {}) => lines.push([msg, fields]) } as unknown as Logger;
  const refusals = new RefusalLog(logger, 60_000);
  const extra = 7;
  for (let i = 0; i < MAX_REFUSAL_WINDOWS + extra; i++) {
    refusals.refused("refused a connection", { remoteAddress: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, remotePort: 1 } as net.Socket, { error: "x" });
  }
  expect(lines.length).toBe(MAX_REFUSAL_WINDOWS); // each tracked address once in full
  refusals.flush();
  expect(lines.length).toBe(MAX_REFUSAL_WINDOWS + 1);
  expect(lines.at(-1)![0]).toBe("refused connections (from more addresses and reasons than are summed up one by one) (7 more in the last 60 s)");
  expect(lines.at(-1)![1].count).toBe(extra);
});
