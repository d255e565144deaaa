// What a failed or closed connection says (issue 21): a refusal only where it is certain, "cannot reach" where the
// runtime cannot tell a refusal from an unreachable host, and the peer's address still known after the close.
import { expect, test } from "bun:test";
import * as net from "node:net";
import { connectErrorText, connectFramed } from "../src/rpc/connect.ts";
import type { FramedConnection } from "../src/rpc/framed-connection.ts";
import { boundPort, listenFramed } from "../src/rpc/listen.ts";
import { PROTOCOL_VERSION } from "../src/rpc/messages.ts";
import { waitFor } from "./helpers.ts";

const hello = { version: PROTOCOL_VERSION, role: "data" as const, id: "tm-test" };

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test("a refused connection to a loopback port says so, naming the address", async () => {
  const port = await closedPort();
  const err = await connectFramed("127.0.0.1", port, hello, { connectTimeoutMs: 5_000 }).then(() => null, (e: Error) => e);
  expect(err?.message).toBe(`cannot connect to 127.0.0.1:${port}: connection refused (nothing listens there; ECONNREFUSED)`);
});

test("elsewhere ECONNREFUSED is 'cannot reach' (Bun reports an unreachable host so too); unreachable codes are named", () => {
  const e = (code: string) => Object.assign(new Error(`connect ${code}`), { code });
  expect(connectErrorText("10.231.7.12", 6124, e("ECONNREFUSED"))).toBe("cannot reach 10.231.7.12:6124: refused or unreachable (the runtime reports both as ECONNREFUSED)");
  expect(connectErrorText("10.231.7.12", 6124, e("EHOSTUNREACH"))).toBe("cannot reach 10.231.7.12:6124 (EHOSTUNREACH)");
  expect(connectErrorText("db.example", 6124, e("ETIMEDOUT"))).toBe("cannot reach db.example:6124 (ETIMEDOUT)");
  expect(connectErrorText("db.example", 6124, e("EPIPE"))).toBe("cannot connect to db.example:6124: connect EPIPE");
});

test("an incoming connection still names its peer's address after it closed (no 'undefined:undefined')", async () => {
  let accepted: FramedConnection | null = null;
  const server = await listenFramed("127.0.0.1", 0, "tm-server", (c) => (accepted = c), { accept: () => null });
  try {
    const client = await connectFramed("127.0.0.1", boundPort(server), hello, { connectTimeoutMs: 5_000 });
    const conn = await waitFor("the accepted connection", () => accepted, 5_000);
    const closed = new Promise<void>((r) => conn.onClose(() => r()));
    client.close();
    await closed;
    expect(conn.closed).toBe(true);
    expect(conn.remoteAddress).toMatch(/^127\.0\.0\.1:\d+$/);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}, 20_000);
