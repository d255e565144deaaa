// A small JSON/text HTTP server on node:http (runs under Bun and Deno alike), shared by the JobManager's REST API
// and the TaskManager's metrics endpoint; HTTPS (node:https) with security.ssl.enabled.
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { BindError } from "../util/errors.ts";

export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  /** A request header (lower-case name). */
  header(name: string): string | undefined;
  /** Whether the request has a body (a Content-Length above 0, or a chunked one). */
  readonly hasBody: boolean;
  /** The body, read on demand; more than the server's body limit rejects with a 413 HttpError as soon as it is seen. */
  text(): Promise<string>;
}

export interface HttpResponse {
  status: number;
  body: string | Uint8Array;
  contentType?: string;
  headers?: Record<string, string>;
}

export type HttpHandler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

export function json(body: unknown, status = 200): HttpResponse {
  return { status, body: JSON.stringify(body), contentType: "application/json; charset=utf-8" };
}

export function text(body: string, status = 200, contentType = "text/plain; charset=utf-8"): HttpResponse {
  return { status, body, contentType };
}

/** An error whose message is sent to the client as {"errors": [message]} with this status (Flink's error shape). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Extra response headers (e.g. WWW-Authenticate with a 401). */
    readonly headers?: Record<string, string>,
  ) {
    super(message);
  }
}

/** Request body limit of a server that sets none (the REST API's bodies are small JSON objects). */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/** After an answer to a request whose body was not read, the rest of the body is discarded for at most this long. */
const LINGER_MS = 1000;

export interface RunningHttpServer {
  port: number;
  stop(): Promise<void>;
}

/** Certificate and key of an HTTPS server (security.ssl.cert-file / key-file). */
export interface HttpTls {
  cert: Buffer;
  key: Buffer;
}

/**
 * Listens on host:port (0 = a free port), with TLS when `tls` is given. `what` names the config key in the error
 * when the port cannot be bound.
 */
export function startHttpServer(
  host: string,
  port: number,
  what: string,
  handler: HttpHandler,
  onError: (err: Error) => void,
  tls: HttpTls | null = null,
  maxBodyBytes = DEFAULT_MAX_BODY_BYTES,
): Promise<RunningHttpServer> {
  const tooLarge = () => new HttpError(413, `the request body exceeds ${maxBodyBytes} bytes`);
  const serve = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const declared = req.headers["content-length"] === undefined ? null : Number(req.headers["content-length"]);
    let body: Promise<string> | null = null;
    let tooBig = declared !== null && declared > maxBodyBytes;
    const request: HttpRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query: url.searchParams,
      header: (name) => {
        const v = req.headers[name.toLowerCase()];
        return Array.isArray(v) ? v.join(", ") : v;
      },
      hasBody: (declared !== null && declared > 0) || req.headers["transfer-encoding"] !== undefined,
      text: () =>
        (body ??= new Promise<string>((resolve, reject) => {
          // A declared length over the limit is refused before a byte of it is read; a chunked body as soon as the
          // bytes read pass the limit: never after reading the whole of a huge body.
          if (declared !== null && declared > maxBodyBytes) return reject(tooLarge());
          const chunks: Buffer[] = [];
          let size = 0;
          const onData = (c: Buffer) => {
            size += c.length;
            if (size <= maxBodyBytes) return void chunks.push(c);
            req.off("data", onData);
            req.pause();
            tooBig = true;
            reject(tooLarge());
          };
          req.on("data", onData);
          req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
          req.on("error", reject);
        })),
    };
    Promise.resolve()
      .then(() => {
        // Refused up front whatever the handler: it might not read the body, and then the body would be drained.
        if (declared !== null && declared > maxBodyBytes) throw tooLarge();
        return handler(request);
      })
      .catch((err: unknown) => {
        if (err instanceof HttpError) return { ...json({ errors: [err.message] }, err.status), headers: err.headers };
        onError(err as Error);
        return json({ errors: [(err as Error)?.message ?? String(err)] }, 500);
      })
      .then((r) => {
        // A body left unread: one over the limit is not waited for: after the answer the server half-closes,
        // discards what still comes for a moment so that the client reads the answer (a close with unread data
        // resets the connection, and the client may lose the answer), then closes. ("Connection: close" would make
        // the runtime close at once.) A small one the handler did not need (a refused call) is discarded, and the
        // connection stays usable for the client's next request.
        const unread = !req.complete;
        res.writeHead(r.status, { "content-type": r.contentType ?? "text/plain; charset=utf-8", "cache-control": "no-store", ...r.headers });
        res.end(r.body, () => {
          if (!unread) return;
          const socket = req.socket;
          if (tooBig || r.status === 413) {
            socket.end();
            req.resume();
            setTimeout(() => socket.destroy(), LINGER_MS).unref?.();
            return;
          }
          let discarded = 0;
          req.on("data", (c: Buffer) => {
            if ((discarded += c.length) > maxBodyBytes) socket.destroy();
          });
          req.resume();
        });
      });
  };
  // Mutual TLS stays on the RPC and data ports: browsers and scrapers present no client certificate here.
  const server: http.Server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, serve) : http.createServer(serve);
  if (tls) server.on("tlsClientError", () => {}); // a plain-HTTP or failed TLS client: its socket is closed
  server.keepAliveTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      const why = err.code === "EADDRINUSE" ? "is already in use" : err.code === "EACCES" ? "is not permitted" : `cannot be bound: ${err.message}`;
      reject(new BindError(`${what}: address ${host}:${port} ${why} (choose another port, or 0 for a free one)`));
    });
    server.listen(port, host, () => {
      const sockets = new Set<import("node:net").Socket>();
      server.on("connection", (s: import("node:net").Socket) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
      });
      resolve({
        port: (server.address() as AddressInfo).port,
        stop: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            for (const s of sockets) s.destroy();
          }),
      });
    });
  });
}
