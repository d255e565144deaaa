// Order on the data connections between two TaskManagers. Each side dials the other on first use, so two
// TaskManagers whose tasks start together may dial each other at once and end up with two TCP connections. Frames
// to a peer must still keep their order (all on one connection), and a channel's buffers must all go on one
// connection: on two they could overtake each other (the cause of a keyBy shuffle that once saw one record out of
// order). Real DataTransports on 127.0.0.1; a TCP proxy in front of one of them holds the other's dial back.
import { afterEach, describe, expect, test } from "bun:test";
import * as net from "node:net";
import { DataTransport } from "../src/network/data-transport.ts";
import { RemoteSender } from "../src/network/remote-sender.ts";
import { createRing, RingWriter } from "../src/network/shared-ring.ts";
import type { TaskEndpoint } from "../src/network/wire.ts";
import type { FramedConnection } from "../src/rpc/framed-connection.ts";
import { waitFor } from "./helpers.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A DataTransport on a free loopback port that records the frames it gets and the connections it loses. */
async function transport(id: string, keepaliveTimeoutMs = 10_000) {
  const frames: unknown[] = [];
  const lost: string[] = [];
  const t = new DataTransport(id, {
    onFrame: (_conn, frame) => frames.push(frame),
    onConnectionClosed: (peer, _conn, err) => lost.push(`${peer}: ${err.message}`),
  }, 1 << 20);
  t.configure({ handshakeTimeoutMs: 10_000, keepaliveIntervalMs: 100, keepaliveTimeoutMs, backoffInitialMs: 50, backoffMaxMs: 100 });
  const port = await t.start("127.0.0.1", 0);
  cleanups.push(() => t.stop());
  return { t, frames, lost, target: { resourceId: id, dataHost: "127.0.0.1", dataPort: port } };
}

/** A TCP proxy to `port` that holds each connection until release() (then forwards it, or cuts it with refuse). */
async function holdingProxy(port: number) {
  const held: net.Socket[] = [];
  const all: net.Socket[] = [];
  let accepted = 0;
  const server = net.createServer((client) => {
    accepted++;
    all.push(client);
    client.pause();
    held.push(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => {
    for (const s of all) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const forward = (client: net.Socket) => {
    const up = net.connect(port, "127.0.0.1");
    all.push(up);
    client.pipe(up);
    up.pipe(client);
    client.on("error", () => up.destroy());
    up.on("error", () => client.destroy());
    client.resume();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    release: () => held.splice(0).forEach(forward),
    refuse: () => held.splice(0).forEach((c) => c.destroy()),
  };
}

describe("two TaskManagers that dial each other at once", () => {
  test("frames to the peer keep their order: those queued for our dial go first, on the peer's connection", async () => {
    const a = await transport("tm-a");
    const b = await transport("tm-b");
    const proxy = await holdingProxy(b.target.dataPort);
    const bViaProxy = { ...b.target, dataPort: proxy.port };
    a.t.send(bViaProxy, ["frame", 1]); // a dials b; the proxy holds the dial
    await waitFor("a's dial at the proxy", () => proxy.accepted === 1, 10_000);
    b.t.send(a.target, ["from-b", 1]); // b dials a directly
    await waitFor("b's connection at a", () => a.frames.length === 1, 10_000);
    a.t.send(bViaProxy, ["frame", 2]);
    a.t.send(bViaProxy, ["frame", 3]);
    // Frames 2 and 3 must not get ahead of 1. (Before: the peer's connection replaced the pending dial, 2 and 3 went
    // out on it at once, and 1 followed on the dialed connection once the proxy let it through.)
    await new Promise((r) => setTimeout(r, 100));
    proxy.release();
    await waitFor("b got a's three frames", () => b.frames.length >= 3, 10_000);
    a.t.send(bViaProxy, ["frame", 4]);
    await waitFor("b got frame 4", () => b.frames.length >= 4, 10_000);
    expect(b.frames).toEqual([["frame", 1], ["frame", 2], ["frame", 3], ["frame", 4]]);
    expect(a.lost).toEqual([]);
    expect(b.lost).toEqual([]);
  }, 30_000);

  test("a dial that fails after the peer's connection came is not retried and does not fail the peer's channels", async () => {
    const a = await transport("tm-a", 1500);
    const b = await transport("tm-b", 1500);
    const proxy = await holdingProxy(b.target.dataPort);
    const bViaProxy = { ...b.target, dataPort: proxy.port };
    a.t.send(bViaProxy, ["frame", 1]);
    await waitFor("a's dial at the proxy", () => proxy.accepted === 1, 10_000);
    b.t.send(a.target, ["from-b", 1]);
    await waitFor("b's connection at a", () => a.frames.length === 1, 10_000);
    await waitFor("frame 1 at b, on b's connection", () => b.frames.length === 1, 10_000);
    proxy.refuse(); // a's own dial fails now
    // Past the whole retry window (the keepalive time-out, 1.5 s): the dial's failure must not count, since the peer's
    // connection took over its queue; a retry loop would end by reporting tm-b lost, failing every consumer of tm-b's
    // producers although a working connection is there.
    await new Promise((r) => setTimeout(r, 2500));
    expect(a.lost).toEqual([]);
    expect(proxy.accepted).toBe(1);
    a.t.send(bViaProxy, ["frame", 2]);
    await waitFor("frame 2 at b", () => b.frames.length === 2, 10_000);
    expect(b.frames).toEqual([["frame", 1], ["frame", 2]]);
  }, 30_000);
});

/** A connection as RemoteSender uses it, recording the buffers sent on it. */
function fakeConnection(name: string, log: string[]): FramedConnection {
  return {
    closed: false,
    writable: true,
    send: () => true,
    sendBuffer: (_ch: string, _backlog: number, payload: Uint8Array) => {
      log.push(`${name}:${payload[0]}`);
      return true;
    },
    whenWritable: (cb: () => void) => cb(),
  } as unknown as FramedConnection;
}

describe("remote sender", () => {
  test("a channel's buffers all go on the connection its first credit came on, whichever carries later credit", () => {
    const sent: string[] = [];
    const x = fakeConnection("x", sent);
    const y = fakeConnection("y", sent);
    const sender = new RemoteSender(() => {});
    const task = { post: () => {}, fail: (err: Error) => { throw err; } } as unknown as TaskEndpoint;
    const ring = createRing(8, 64);
    const producer = new RingWriter(ring);
    // Credit before the producer exists (its partition request), then more on the other connection.
    sender.onCredit(x, "ch", 1, false);
    sender.onCredit(y, "ch", 1, false);
    sender.add("ch", task, ring);
    for (let i = 1; i <= 4; i++) expect(producer.tryPush(new Uint8Array([i]))).toBe(true);
    sender.onCredit(y, "ch", 2, false);
    sender.onCredit(x, "ch", 1, false);
    // A producer added before any credit binds to the first credit's connection too.
    const ring2 = createRing(8, 64);
    const producer2 = new RingWriter(ring2);
    sender.add("ch2", task, ring2);
    expect(producer2.tryPush(new Uint8Array([9]))).toBe(true);
    sender.onCredit(y, "ch2", 1, false);
    expect(producer2.tryPush(new Uint8Array([10]))).toBe(true);
    sender.onCredit(x, "ch2", 1, false);
    return waitFor("every buffer sent", () => sent.length === 6, 5_000).then(() => {
      expect(sent.filter((s) => /:[1-4]$/.test(s))).toEqual(["x:1", "x:2", "x:3", "x:4"]);
      expect(sent.filter((s) => /:(9|10)$/.test(s))).toEqual(["y:9", "y:10"]);
    });
  });
});
