// Request/response RPC with correlation ids on top of a FramedConnection (docs/protocol.md section 3).
import { REQUEST_TYPES, type Hello, type RequestType, type RpcRequests } from "./messages.ts";
import type { FramedConnection, FramedOptions } from "./framed-connection.ts";
import { connectFramed } from "./connect.ts";
import { RpcError } from "./rpc-error.ts";

/**
 * Requests of the peer being served at once on one connection. Our own peers stay far below (a JobManager sends a
 * TaskManager one request per task and checkpoint; a client waits for each answer); beyond it a request is answered
 * with an error at once, so a peer that pipelines without waiting cannot make this side hold unbounded work.
 */
export const MAX_REQUESTS_SERVED = 1024;
/**
 * Our requests waiting for the peer's answer on one connection (each also has its time-out). A JobManager with many
 * tasks on one TaskManager sends one per task at a checkpoint; far more means the peer stopped answering, and a new
 * request fails at once instead of queueing behind the ones that wait.
 */
export const MAX_PENDING_REQUESTS = 8192;

export type RequestHandler = (type: RequestType, payload: any, conn: RpcConnection) => unknown | Promise<unknown>;

interface Pending {
  resolve: (v: any) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
  type: string;
}

/** Request/response with correlation ids over a FramedConnection; both sides may send requests. */
export class RpcConnection {
  private nextId = 1;
  private pending = new Map<number, Pending>();
  /** Requests of the peer being handled now. */
  serving = 0;

  constructor(
    readonly framed: FramedConnection,
    private handler: RequestHandler,
    private readonly defaultTimeoutMs = 30_000,
  ) {
    framed.setFrameHandler((body) => this.onFrame(body));
    framed.onClose((err) => {
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new RpcError(`${p.type}: ${err?.message ?? "connection closed"}`));
      }
      this.pending.clear();
    });
  }

  get closed(): boolean {
    return this.framed.closed;
  }

  /** Why the peer closed the connection, when it said so with a close notice (see closeWithNotice). */
  private closeNotice: string | null = null;

  /**
   * Tells the peer why the connection ends (a `{t: "close", reason}` frame, docs/protocol.md section 3), then closes
   * it: the peer's pending and later requests fail with that reason instead of "connection is closed".
   */
  closeWithNotice(reason: string): void {
    if (this.closed) return;
    this.closeNotice = reason;
    this.framed.send({ t: "close", reason });
    this.framed.close(new RpcError(reason));
  }

  setHandler(handler: RequestHandler): void {
    this.handler = handler;
  }

  request<T extends RequestType>(type: T, payload: RpcRequests[T][0], timeoutMs = this.defaultTimeoutMs): Promise<RpcRequests[T][1]> {
    if (this.closed) return Promise.reject(new RpcError(`${type}: ${this.closeNotice ?? "connection is closed"}`));
    if (this.pending.size >= MAX_PENDING_REQUESTS) {
      return Promise.reject(new RpcError(`${type}: ${this.pending.size} requests already wait for an answer from ${this.framed.remoteAddress} (limit ${MAX_PENDING_REQUESTS})`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcError(`${type}: no response within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, type });
      this.framed.send({ t: type, id, p: payload });
    });
  }

  close(err?: Error): void {
    this.framed.close(err);
  }

  onClose(handler: (err?: Error) => void): void {
    this.framed.onClose(handler);
  }

  private onFrame(body: unknown): void {
    const msg = body as { t?: unknown; id?: unknown; re?: unknown; p?: unknown; e?: { message?: string } };
    if (typeof msg !== "object" || msg === null || typeof msg.t !== "string") {
      this.framed.close(new RpcError("malformed frame: expected an object with a string field t"));
      return;
    }
    if (msg.t === "close") {
      // The peer's close notice; the reason is the peer's text, so it is bounded before it goes into errors and logs.
      const reason = typeof (msg as { reason?: unknown }).reason === "string" ? (msg as { reason: string }).reason.slice(0, 500) : "";
      this.closeNotice = reason || "the peer closed the connection";
      this.framed.close(new RpcError(this.closeNotice));
      return;
    }
    if (msg.t === "response") {
      const p = typeof msg.re === "number" ? this.pending.get(msg.re) : undefined;
      if (!p) return; // late response after a timeout
      this.pending.delete(msg.re as number);
      clearTimeout(p.timer);
      if (msg.e) {
        // Named once: a peer's error that already starts with the request type (a schema's, say) is not prefixed again.
        const text = String(msg.e.message ?? "remote error");
        p.reject(new RpcError(text.startsWith(`${p.type}: `) ? text : `${p.type}: ${text}`));
      }
      else p.resolve(msg.p ?? {});
      return;
    }
    if (typeof msg.id !== "number") {
      this.framed.close(new RpcError(`malformed request ${JSON.stringify(msg.t)}: missing correlation id`));
      return;
    }
    const id = msg.id;
    if (!REQUEST_TYPES.has(msg.t)) {
      this.framed.send({ t: "response", re: id, e: { message: `unknown message type ${JSON.stringify(msg.t)}` } });
      this.framed.close(new RpcError(`peer sent unknown message type ${JSON.stringify(msg.t)}`));
      return;
    }
    if (this.serving >= MAX_REQUESTS_SERVED) {
      this.framed.send({ t: "response", re: id, e: { message: `${msg.t}: busy: ${this.serving} requests of this connection are being served (limit ${MAX_REQUESTS_SERVED}); wait for answers before sending more` } });
      return;
    }
    this.serving++;
    Promise.resolve()
      .then(() => this.handler(msg.t as RequestType, msg.p ?? {}, this))
      .finally(() => this.serving--)
      .then(
        (reply) => !this.closed && this.framed.send({ t: "response", re: id, p: reply ?? {} }),
        (err: Error) => !this.closed && this.framed.send({ t: "response", re: id, e: { message: err?.message ?? String(err) } }),
      );
  }
}

export async function connectRpc(host: string, port: number, hello: Hello, handler: RequestHandler, opts: FramedOptions = {}): Promise<RpcConnection> {
  const framed = await connectFramed(host, port, hello, opts);
  return new RpcConnection(framed, handler);
}
