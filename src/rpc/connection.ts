// A framed TCP connection with the version handshake (FramedConnection), and request/response RPC on top
// of it (RpcConnection). Both the RPC port and the data port use FramedConnection.
import * as net from "node:net";
import { encodeFrame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES } from "./framing.ts";
import { PROTOCOL_VERSION, REQUEST_TYPES, type Hello, type HelloReply, type RequestType, type RpcRequests } from "./messages.ts";
import { createLogger } from "../util/log.ts";

const log = createLogger("rpc");

export class RpcError extends Error {
  override name = "RpcError";
}

export interface FramedOptions {
  maxFrameBytes?: number;
  handshakeTimeoutMs?: number;
}

type HandshakeSide =
  | { side: "client"; hello: Hello }
  | { side: "server"; id: string; accept?: (hello: Hello) => string | null /* error text or null */ };

/** Length-prefixed msgpack frames over a socket, opened by a handshake that checks the protocol version. */
export class FramedConnection {
  readonly ready: Promise<Hello | HelloReply>;
  /** The peer's handshake: its Hello (server side) or HelloReply (client side). */
  peer: Hello | HelloReply | null = null;
  private frameHandler: ((body: unknown) => void) | null = null;
  /** Frames that arrived after the handshake but before a handler was set (same TCP chunk). */
  private early: unknown[] = [];
  private closeHandlers: ((err?: Error) => void)[] = [];
  private decoder: FrameDecoder;
  private closedWith: Error | null | undefined = undefined;
  private settleReady!: { resolve: (h: Hello | HelloReply) => void; reject: (e: Error) => void };

  constructor(
    readonly socket: net.Socket,
    private readonly hs: HandshakeSide,
    opts: FramedOptions = {},
  ) {
    this.decoder = new FrameDecoder(opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES);
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // observed through close handlers too
    socket.setNoDelay(true);
    const timer = setTimeout(() => this.close(new RpcError("handshake timed out")), opts.handshakeTimeoutMs ?? 10_000);
    this.ready.finally(() => clearTimeout(timer)).catch(() => {});
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.close(err));
    socket.on("close", () => this.close(new RpcError("connection closed by peer")));
    if (hs.side === "client") this.write(hs.hello);
  }

  get remoteAddress(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Sends one frame; returns false when the socket's write buffer is full (wait for "drain"). */
  send(body: unknown): boolean {
    if (this.closed) throw new RpcError("connection is closed");
    return this.write(body);
  }

  /** Sets who receives frames after the handshake; frames that arrived before are handed over first. */
  setFrameHandler(handler: (body: unknown) => void): void {
    this.frameHandler = handler;
    for (const body of this.early.splice(0)) if (!this.closed) handler(body);
  }

  /** Sends an already encoded frame (see encodeBufferFrame). */
  sendEncoded(frame: Uint8Array): boolean {
    if (this.closed) throw new RpcError("connection is closed");
    return this.enqueue(frame);
  }

  /** False while the socket's send buffer is full; whenWritable() tells when it has drained. */
  get writable(): boolean {
    return !this.congested;
  }

  whenWritable(callback: () => void): void {
    if (!this.congested) callback();
    else this.drainWaiters.push(callback);
  }

  onClose(handler: (err?: Error) => void): void {
    if (this.closed) handler(this.closedWith ?? undefined);
    else this.closeHandlers.push(handler);
  }

  close(err?: Error): void {
    if (this.closed) return;
    this.closedWith = err ?? null;
    this.settleReady.reject(err ?? new RpcError("connection closed"));
    // end() lets a last error reply reach the peer; destroy() follows for a peer that never reads.
    this.flushOut();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref?.();
    for (const h of this.closeHandlers.splice(0)) h(err);
  }

  private write(body: unknown): boolean {
    return this.enqueue(encodeFrame(body));
  }

  // Frames written in one turn of the event loop go out in one socket write: one syscall, not one each.
  private outQueue: Uint8Array[] = [];
  private outBytes = 0;
  private congested = false;
  private drainWaiters: (() => void)[] = [];

  private enqueue(frame: Uint8Array): boolean {
    this.outQueue.push(frame);
    this.outBytes += frame.length;
    if (this.outQueue.length === 1) queueMicrotask(() => this.flushOut());
    return !this.congested;
  }

  private flushOut(): void {
    const frames = this.outQueue;
    const bytes = this.outBytes;
    this.outQueue = [];
    this.outBytes = 0;
    if (frames.length === 0 || this.socket.destroyed) return;
    const ok = this.socket.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames, bytes));
    if (!ok && !this.congested) {
      this.congested = true;
      this.socket.once("drain", () => {
        this.congested = false;
        for (const w of this.drainWaiters.splice(0)) w();
      });
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let frames: unknown[];
    let bad: Error | null = null;
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // Frames before the bad one are handled first: the error is then reported in the right context.
      frames = err instanceof FrameError ? err.frames : [];
      bad = err as Error;
    }
    for (const body of frames) {
      if (this.closed) return;
      if (this.peer === null) this.onHandshake(body);
      else if (this.frameHandler) this.frameHandler(body);
      else this.early.push(body);
    }
    if (bad) this.close(bad);
  }

  private onHandshake(body: unknown): void {
    const b = body as Partial<Hello & HelloReply> | null;
    if (typeof b !== "object" || b === null || typeof b.version !== "number" || typeof b.id !== "string") {
      this.rejectHandshake("malformed handshake");
      return;
    }
    if (b.version !== PROTOCOL_VERSION) {
      this.rejectHandshake(`protocol version mismatch: peer speaks ${b.version}, this process speaks ${PROTOCOL_VERSION}`);
      return;
    }
    if (this.hs.side === "server") {
      if (b.role !== "taskmanager" && b.role !== "client" && b.role !== "data") {
        this.rejectHandshake(`unknown peer role ${JSON.stringify(b.role)}`);
        return;
      }
      const refusal = this.hs.accept?.(b as Hello) ?? null;
      if (refusal !== null) {
        this.rejectHandshake(refusal);
        return;
      }
      this.write({ version: PROTOCOL_VERSION, id: this.hs.id } satisfies HelloReply);
    } else if (typeof (b as { error?: unknown }).error === "string") {
      this.close(new RpcError(`handshake refused by peer: ${(b as { error: string }).error}`));
      return;
    }
    this.peer = b as Hello | HelloReply;
    this.settleReady.resolve(this.peer);
  }

  private rejectHandshake(reason: string): void {
    if (this.hs.side === "server") this.write({ version: PROTOCOL_VERSION, id: this.hs.id, error: reason });
    this.socket.end();
    this.close(new RpcError(`handshake failed: ${reason}`));
  }
}

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

  setHandler(handler: RequestHandler): void {
    this.handler = handler;
  }

  request<T extends RequestType>(type: T, payload: RpcRequests[T][0], timeoutMs = this.defaultTimeoutMs): Promise<RpcRequests[T][1]> {
    if (this.closed) return Promise.reject(new RpcError(`${type}: connection is closed`));
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
    if (msg.t === "response") {
      const p = typeof msg.re === "number" ? this.pending.get(msg.re) : undefined;
      if (!p) return; // late response after a timeout
      this.pending.delete(msg.re as number);
      clearTimeout(p.timer);
      if (msg.e) p.reject(new RpcError(`${p.type}: ${msg.e.message ?? "remote error"}`));
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
    Promise.resolve()
      .then(() => this.handler(msg.t as RequestType, msg.p ?? {}, this))
      .then(
        (reply) => !this.closed && this.framed.send({ t: "response", re: id, p: reply ?? {} }),
        (err: Error) => !this.closed && this.framed.send({ t: "response", re: id, e: { message: err?.message ?? String(err) } }),
      );
  }
}

/** Opens a TCP connection and completes the client side of the handshake. */
export function connectFramed(host: string, port: number, hello: Hello, opts: FramedOptions & { connectTimeoutMs?: number } = {}): Promise<FramedConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new RpcError(`connecting to ${host}:${port} timed out`));
    }, opts.connectTimeoutMs ?? 10_000);
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(new RpcError(`cannot connect to ${host}:${port}: ${err.message}`));
    });
    socket.once("connect", () => {
      clearTimeout(timer);
      const conn = new FramedConnection(socket, { side: "client", hello }, opts);
      conn.ready.then(() => resolve(conn), reject);
    });
  });
}

export async function connectRpc(host: string, port: number, hello: Hello, handler: RequestHandler, opts: FramedOptions = {}): Promise<RpcConnection> {
  const framed = await connectFramed(host, port, hello, opts);
  return new RpcConnection(framed, handler);
}

/** Listens on host:port; each connection that completes the handshake is passed to onConnection. */
export function listenFramed(
  host: string,
  port: number,
  id: string,
  onConnection: (conn: FramedConnection) => void,
  opts: FramedOptions & { accept?: (hello: Hello) => string | null } = {},
): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      const conn = new FramedConnection(socket, { side: "server", id, accept: opts.accept }, opts);
      conn.ready.then(
        () => onConnection(conn),
        (err: Error) => log.warn("refused a connection", { peer: `${socket.remoteAddress}:${socket.remotePort}`, port, error: err.message }),
      );
    });
    server.once("error", (err: NodeJS.ErrnoException) => {
      reject(new RpcError(err.code === "EADDRINUSE" ? `address ${host}:${port} is already in use` : `cannot listen on ${host}:${port}: ${err.message}`));
    });
    server.listen(port, host, () => resolve(server));
  });
}

export function boundPort(server: net.Server): number {
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("server is not listening on TCP");
  return addr.port;
}
