// The connecting side: a TCP or TLS connection to host:port, opened by the client side of the handshake.
import * as net from "node:net";
import * as tls from "node:tls";
import type { Hello } from "./messages.ts";
import { FramedConnection, type FramedOptions } from "./framed-connection.ts";
import { RpcError } from "./rpc-error.ts";

/** Opens a TCP (or, with security.tls, TLS) connection and completes the client side of the handshake. */
export function connectFramed(host: string, port: number, hello: Hello, opts: FramedOptions & { connectTimeoutMs?: number } = {}): Promise<FramedConnection> {
  return new Promise((resolve, reject) => {
    const t = opts.security?.tls;
    const socket = t
      ? tls.connect({ host, port, cert: t.cert, key: t.key, ...(t.ca ? { ca: t.ca } : {}), rejectUnauthorized: true, ...(net.isIP(host) ? {} : { servername: host }) })
      : net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new RpcError(`cannot reach ${host}:${port}: no answer within ${opts.connectTimeoutMs ?? 10_000} ms`));
    }, opts.connectTimeoutMs ?? 10_000);
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(new RpcError(connectErrorText(host, port, err as NodeJS.ErrnoException)));
    });
    socket.once(t ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      const conn = new FramedConnection(socket, { side: "client", hello }, opts);
      conn.ready.then(() => resolve(conn), reject);
    });
  });
}

/**
 * What a failed connect says. Bun reports an unreachable host (EHOSTUNREACH) as ECONNREFUSED too, so a refusal is
 * named as such only where it is certain (a loopback address has no route to lose); elsewhere it is "cannot reach".
 */
export function connectErrorText(host: string, port: number, err: NodeJS.ErrnoException): string {
  const code = err.code ?? "";
  const loopback = /^(127\.|::1$|localhost$)/.test(host);
  if (code === "ECONNREFUSED" && loopback) return `cannot connect to ${host}:${port}: connection refused (nothing listens there; ECONNREFUSED)`;
  if (code === "ECONNREFUSED") return `cannot reach ${host}:${port}: refused or unreachable (the runtime reports both as ECONNREFUSED)`;
  if (["EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ETIMEDOUT", "ENETDOWN"].includes(code)) return `cannot reach ${host}:${port} (${code})`;
  return `cannot connect to ${host}:${port}: ${err.message}`;
}

