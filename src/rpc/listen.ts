// The listening side: a TCP or TLS server whose connections complete the server side of the handshake, with
// the bind check, a per-address connection limit, the handshake deadline over TLS, and a summed refusal log.
import * as net from "node:net";
import * as tls from "node:tls";
import type { Hello } from "./messages.ts";
import { checkBindAllowed, NO_SECURITY } from "./security.ts";
import { FramedConnection, type FramedOptions } from "./framed-connection.ts";
import { RefusalLog } from "./refusal-log.ts";
import { createLogger } from "../util/log.ts";
import { BindError } from "../util/errors.ts";

const log = createLogger("rpc");

export interface ListenOptions extends FramedOptions {
  /** Refuses a peer after its handshake (returns the refusal text) or lets it in (null). */
  accept?: (hello: Hello) => string | null;
  /** Open connections (including ones still in their handshake) allowed from one IP address; 0 = no limit. */
  maxConnectionsPerAddress?: number;
  /** What the port is, for messages ("RPC", "data"). */
  name?: string;
  /** The config key of the port, named when it cannot be bound (e.g. "jobmanager.rpc.port"). */
  portKey?: string;
}

/**
 * Listens on host:port; each connection that completes the handshake is passed to onConnection. Refuses to
 * listen on a non-loopback address without a shared secret unless security.insecure is set.
 */
export function listenFramed(host: string, requestedPort: number, id: string, onConnection: (conn: FramedConnection) => void, opts: ListenOptions = {}): Promise<net.Server> {
  const security = opts.security ?? NO_SECURITY;
  const what = opts.name ?? "port";
  try {
    checkBindAllowed(host, requestedPort, security, what);
  } catch (err) {
    return Promise.reject(err);
  }
  const perAddress = new Map<string, number>();
  const limit = opts.maxConnectionsPerAddress ?? 0;
  const handshakeMs = opts.handshakeTimeoutMs ?? 10_000;
  const refusals = new RefusalLog(log);
  return new Promise((resolve, reject) => {
    let port = requestedPort; // the bound port once listening (for log lines)
    const t = security.tls;
    // Counted per address from accept (before TLS and the handshake): a flood from one host is cut off early.
    const admit = (socket: net.Socket): boolean => {
      const address = socket.remoteAddress ?? "?";
      const n = (perAddress.get(address) ?? 0) + 1;
      if (limit > 0 && n > limit) {
        refusals.refused("refused a connection: too many connections from its address", socket, { port, limit });
        socket.destroy();
        return false;
      }
      perAddress.set(address, n);
      socket.once("close", () => {
        const left = (perAddress.get(address) ?? 1) - 1;
        if (left <= 0) perAddress.delete(address);
        else perAddress.set(address, left);
      });
      return true;
    };
    // TLS: the runtime's own handshakeTimeout only reports (Bun emits tlsClientError and leaves the socket open),
    // so the deadline of rpc.handshake-timeout is kept here, from accept, over the TLS handshake and ours.
    // Keyed by the peer's address:port, which is unique among this listener's open sockets, because the socket
    // given to "connection" and the one given to the secure-connection callback need not be the same object.
    const tlsPending = new Map<string, { acceptedAt: number; timer: ReturnType<typeof setTimeout> }>();
    const peerKey = (socket: net.Socket) => `${socket.remoteAddress}:${socket.remotePort}`;
    const onTlsAccept = (socket: net.Socket) => {
      if (!admit(socket)) return;
      const key = peerKey(socket);
      const timer = setTimeout(() => {
        tlsPending.delete(key);
        refusals.refused("refused a connection: TLS handshake failed", socket, { port, error: `TLS handshake not completed within ${handshakeMs} ms` });
        socket.destroy();
      }, handshakeMs);
      tlsPending.set(key, { acceptedAt: Date.now(), timer });
      socket.once("close", () => {
        const p = tlsPending.get(key);
        if (p?.timer === timer) {
          clearTimeout(timer);
          tlsPending.delete(key);
        }
      });
    };
    const onSocket = (socket: net.Socket) => {
      let timeoutMs = handshakeMs;
      if (t) {
        const p = tlsPending.get(peerKey(socket));
        if (p) {
          clearTimeout(p.timer);
          tlsPending.delete(peerKey(socket));
          timeoutMs = Math.max(1, handshakeMs - (Date.now() - p.acceptedAt)); // what is left of the deadline
        }
      } else if (!admit(socket)) return;
      const conn = new FramedConnection(socket, { side: "server", id, accept: opts.accept }, { ...opts, handshakeTimeoutMs: timeoutMs });
      conn.ready.then(
        () => onConnection(conn),
        (err: Error) => refusals.refused("refused a connection", socket, { port, error: err.message }),
      );
    };
    const server: net.Server = t
      ? tls.createServer(
          {
            cert: t.cert,
            key: t.key,
            ...(t.ca ? { ca: t.ca } : {}),
            requestCert: t.clientAuth,
            rejectUnauthorized: t.clientAuth,
            handshakeTimeout: handshakeMs,
          },
          onSocket,
        )
      : net.createServer(onSocket);
    if (t) {
      server.on("connection", onTlsAccept);
      server.on("tlsClientError", (err: Error, socket: net.Socket) => {
        // Bun reports its own handshake time-out here without closing the socket: ours (above) closes it and logs.
        if (/handshake timeout/i.test(err.message)) return;
        refusals.refused("refused a connection: TLS handshake failed", socket, { port, error: err.message });
        socket?.destroy();
      });
    }
    server.once("close", () => {
      refusals.flush();
      for (const p of tlsPending.values()) clearTimeout(p.timer);
    });
    server.once("error", (err: NodeJS.ErrnoException) => {
      // Worded as rest.port's (src/metrics/http-server.ts), naming the key: main.ts exits 3.
      const why = err.code === "EADDRINUSE" ? "is already in use" : err.code === "EACCES" ? "is not permitted" : `cannot be bound: ${err.message}`;
      reject(new BindError(`${opts.portKey ?? what}: address ${host}:${port} ${why} (choose another port, or 0 for a free one)`));
    });
    server.listen(requestedPort, host, () => {
      port = boundPort(server);
      resolve(server);
    });
  });
}

export function boundPort(server: net.Server): number {
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("server is not listening on TCP");
  return addr.port;
}
