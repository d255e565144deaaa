// A framed TCP connection with the version handshake (FramedConnection), and request/response RPC on top
// of it (RpcConnection). Both the RPC port and the data port use FramedConnection.
import * as net from "node:net";
import * as tls from "node:tls";
import { bufferFrameLength, encodeFrame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES, NO_FRAME, writeBufferFrame } from "./framing.ts";
import { PROTOCOL_VERSION, REQUEST_TYPES, type Hello, type HelloReply, type RequestType, type RpcRequests } from "./messages.ts";
import {
  AUTH_FAILED,
  HANDSHAKE_MAX_FRAME_BYTES,
  NO_SECURITY,
  authProof,
  checkBindAllowed,
  isNonce,
  newNonce,
  proofMatches,
  type TransportSecurity,
} from "./security.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { BindError } from "../util/errors.ts";

const log = createLogger("rpc");

/** Size of a connection's staging buffers for outgoing frames, and how many it keeps for reuse. */
const STAGE_BYTES = 256 * 1024;
const MAX_SPARE_STAGES = 4;

/** A frame kept for later: a network buffer frame's payload may be decoder scratch memory, so it is copied. */
function ownBytes(body: unknown): unknown {
  if (Array.isArray(body) && body[2] instanceof Uint8Array) body[2] = Buffer.from(body[2]);
  return body;
}

export class RpcError extends Error {
  override name = "RpcError";
}

export interface FramedOptions {
  maxFrameBytes?: number;
  handshakeTimeoutMs?: number;
  /** Shared secret (HMAC challenge-response in the handshake) and TLS; default: neither. */
  security?: TransportSecurity;
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
  private readonly maxFrameBytes: number;
  private readonly secret: Buffer | null;
  /** This side's nonce, and the state of the challenge-response (only with a secret). */
  private nonce: Buffer | null = null;
  private auth: "none" | "challenge-expected" | "accept-expected" | "proof-expected" = "none";
  /** Server side: the Hello of a peer that still has to prove it knows the secret. */
  private pendingHello: Hello | null = null;
  private sentHello: Hello | null = null;
  /** When the last frame arrived (idle time-out). */
  lastReceived = Date.now();
  private idleTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly socket: net.Socket,
    private readonly hs: HandshakeSide,
    opts: FramedOptions = {},
  ) {
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.secret = opts.security?.secret ?? null;
    // Until the handshake is done only small frames are taken: a stranger cannot make us buffer 64 MiB.
    this.decoder = new FrameDecoder(Math.min(this.maxFrameBytes, HANDSHAKE_MAX_FRAME_BYTES));
    this.remote = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort}` : "unknown address";
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // observed through close handlers too
    socket.setNoDelay(true);
    const timer = setTimeout(() => this.close(new RpcError("handshake timed out")), opts.handshakeTimeoutMs ?? 10_000);
    this.ready.finally(() => clearTimeout(timer)).catch(() => {});
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.close(err));
    socket.on("close", () => this.close(new RpcError("connection closed by peer")));
    if (hs.side === "client") {
      let hello = hs.hello;
      if (this.secret) {
        this.nonce = newNonce();
        this.auth = "challenge-expected";
        hello = { ...hello, nonce: this.nonce };
      }
      this.sentHello = hs.hello;
      this.write(hello);
    }
  }

  /**
   * Closes the connection when no frame has arrived for `ms` while `busy()` is false (e.g. no request of the
   * peer is being served). 0 = never.
   */
  setIdleTimeout(ms: number, busy: () => boolean = () => false): void {
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = null;
    if (ms <= 0 || this.closed) return;
    this.lastReceived = Date.now();
    this.idleTimer = setInterval(() => {
      if (busy()) this.lastReceived = Date.now();
      else if (Date.now() - this.lastReceived >= ms) this.close(new RpcError(`idle for ${ms} ms: closed`));
    }, Math.max(10, Math.min(1000, Math.floor(ms / 4))));
    this.idleTimer.unref?.();
  }

  /** The peer's address, taken when the connection opened (a closed socket no longer knows it). */
  private readonly remote: string;

  get remoteAddress(): string {
    return this.remote;
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

  /** Sends a network buffer as a data frame (see writeBufferFrame); the payload is copied before this returns. */
  sendBuffer(channel: string, backlog: number, payload: Uint8Array): boolean {
    if (this.closed) throw new RpcError("connection is closed");
    const off = this.reserve(bufferFrameLength(channel, payload.length));
    writeBufferFrame(this.stage!, off, channel, backlog, payload);
    return !this.congested;
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
    if (this.idleTimer) clearInterval(this.idleTimer);
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

  // Frames written in one turn of the event loop are copied into one staging buffer and go out in one socket
  // write: one syscall, not one each, and no allocation per frame. node:net keeps what it is given until it is
  // written, so a staging buffer is reused only after its write's callback.
  private stage: Buffer | null = null;
  private stagePos = 0;
  private readonly spareStages: Buffer[] = [];
  private flushScheduled = false;
  private congested = false;
  private drainWaiters: (() => void)[] = [];

  private enqueue(frame: Uint8Array): boolean {
    if (frame.length > STAGE_BYTES / 4) {
      this.flushOut(); // keeps the order: what was staged goes first
      this.writeOut(frame, null);
    } else {
      const off = this.reserve(frame.length);
      this.stage!.set(frame, off);
    }
    return !this.congested;
  }

  /** Room for len bytes in the staging buffer; returns where they go. */
  private reserve(len: number): number {
    if (this.stage !== null && this.stage.length - this.stagePos < len) this.flushOut();
    if (this.stage === null) {
      this.stage = len > STAGE_BYTES ? Buffer.allocUnsafeSlow(len) : (this.spareStages.pop() ?? Buffer.allocUnsafeSlow(STAGE_BYTES));
      this.stagePos = 0;
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(() => {
          this.flushScheduled = false;
          this.flushOut();
        });
      }
    }
    const off = this.stagePos;
    this.stagePos += len;
    return off;
  }

  private flushOut(): void {
    const stage = this.stage;
    if (stage === null) return;
    const used = this.stagePos;
    this.stage = null;
    this.stagePos = 0;
    if (used > 0) this.writeOut(stage.subarray(0, used), stage);
  }

  private writeOut(bytes: Uint8Array, stage: Buffer | null): void {
    if (this.socket.destroyed) return;
    const ok = this.socket.write(bytes, () => {
      if (stage !== null && stage.length === STAGE_BYTES && this.spareStages.length < MAX_SPARE_STAGES) this.spareStages.push(stage);
    });
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
    this.lastReceived = Date.now();
    if (this.head !== null && this.peerSpeaksTls(chunk)) return;
    this.decoder.append(chunk);
    // One frame at a time: the handshake decides the limit that applies to the frames after it.
    for (;;) {
      let body: unknown;
      try {
        body = this.decoder.next();
      } catch (err) {
        this.close(err as Error);
        return;
      }
      if (body === NO_FRAME) return;
      try {
        if (this.peer === null) this.onHandshake(body);
        else if (this.frameHandler) this.frameHandler(body);
        else this.early.push(ownBytes(body));
      } catch (err) {
        // A handler that throws on a hostile frame costs that connection, never the process.
        this.close(new RpcError(`bad frame: ${(err as Error)?.message ?? String(err)}`));
        return;
      }
      if (this.closed) return;
    }
  }

  /** The first bytes received, until there are 3 (then null): enough to tell a TLS record from a frame. */
  private head: Buffer | null = Buffer.alloc(0);

  /**
   * A TLS record header (content type 0x14..0x17, then major version 3) as the first bytes: the peer speaks TLS and
   * this side does not. As a length prefix it would be a frame of over 335 MB, far over the 64 KiB allowed before
   * the handshake, so no valid frame starts like this. Closes the connection with an error that says so.
   */
  private peerSpeaksTls(chunk: Buffer): boolean {
    this.head = Buffer.concat([this.head!, chunk.subarray(0, 3 - this.head!.length)]);
    if (this.head.length < 3) return false;
    const [type, major, minor] = this.head as unknown as [number, number, number];
    this.head = null;
    if (type < 0x14 || type > 0x17 || major !== 3 || minor > 4) return false;
    this.close(
      new RpcError(
        this.hs.side === "client"
          ? `the peer speaks TLS (${type === 0x15 ? "a TLS alert" : "a TLS record"} instead of a handshake frame): set security.ssl.enabled = true (with security.ssl.cert-file, key-file and ca-file) to connect to it`
          : `the peer speaks TLS (a TLS ${type === 0x16 ? "ClientHello" : "record"} on a plain port): security.ssl.enabled is set there but not here`,
      ),
    );
    return true;
  }

  private onHandshake(body: unknown): void {
    if (this.hs.side === "server" && this.auth === "proof-expected") {
      this.onProof(body);
      return;
    }
    const b = body as Partial<Hello & HelloReply> & { nonce?: unknown; challenge?: unknown; proof?: unknown; error?: unknown } | null;
    if (typeof b !== "object" || b === null || typeof b.version !== "number") {
      this.rejectHandshake("malformed handshake");
      return;
    }
    if (b.version !== PROTOCOL_VERSION) {
      this.rejectHandshake(`protocol version mismatch: peer speaks ${b.version}, this process speaks ${PROTOCOL_VERSION}`);
      return;
    }
    if (this.hs.side === "client") {
      this.onClientHandshake(b);
      return;
    }
    if (typeof b.id !== "string") {
      this.rejectHandshake("malformed handshake");
      return;
    }
    if (this.secret) {
      // Challenge-response: the connector's nonce, ours, and a proof that we know the secret.
      if (!isNonce(b.nonce)) {
        this.rejectHandshake(AUTH_FAILED, "the peer sent no nonce (no shared secret configured there?)");
        return;
      }
      const hello = { version: b.version, role: b.role, id: b.id } as Hello;
      this.nonce = newNonce();
      this.pendingHello = hello;
      this.auth = "proof-expected";
      this.write({ version: PROTOCOL_VERSION, challenge: this.nonce, proof: authProof(this.secret, "server", hello, b.nonce, this.nonce) });
      this.peerNonce = b.nonce;
      return;
    }
    this.acceptHello({ version: b.version, role: b.role, id: b.id } as Hello);
  }

  private peerNonce: Uint8Array | null = null;

  private onProof(body: unknown): void {
    const hello = this.pendingHello!;
    const proof = typeof body === "object" && body !== null ? (body as { proof?: unknown }).proof : undefined;
    if (!proofMatches(proof, authProof(this.secret!, "client", hello, this.peerNonce!, this.nonce!))) {
      this.rejectHandshake(AUTH_FAILED, "wrong proof (the peer does not know the shared secret)");
      return;
    }
    this.auth = "none";
    this.acceptHello(hello);
  }

  /** Server side, after authentication (if any): role and accept hook, then HelloReply. */
  private acceptHello(hello: Hello): void {
    if (this.hs.side !== "server") return;
    if (hello.role !== "taskmanager" && hello.role !== "client" && hello.role !== "data") {
      this.rejectHandshake(`unknown peer role ${JSON.stringify(hello.role)}`);
      return;
    }
    const refusal = this.hs.accept?.(hello) ?? null;
    if (refusal !== null) {
      this.rejectHandshake(refusal);
      return;
    }
    this.write({ version: PROTOCOL_VERSION, id: this.hs.id } satisfies HelloReply);
    this.handshakeDone(hello);
  }

  private onClientHandshake(b: Partial<HelloReply> & { challenge?: unknown; proof?: unknown; error?: unknown }): void {
    if (this.auth === "challenge-expected") {
      if (typeof b.error === "string") {
        this.close(new RpcError(`handshake refused by peer: ${b.error}`));
        return;
      }
      if (!isNonce(b.challenge)) {
        this.close(new RpcError(`${AUTH_FAILED}: the peer did not authenticate itself (is the shared secret configured there?)`));
        return;
      }
      if (!proofMatches(b.proof, authProof(this.secret!, "server", this.sentHello!, this.nonce!, b.challenge))) {
        this.close(new RpcError(`${AUTH_FAILED}: the peer does not know the shared secret`));
        return;
      }
      this.auth = "accept-expected";
      this.write({ proof: authProof(this.secret!, "client", this.sentHello!, this.nonce!, b.challenge) });
      return;
    }
    if (typeof b.error === "string") {
      this.close(new RpcError(`handshake refused by peer: ${b.error}`));
      return;
    }
    if (typeof b.id !== "string") {
      this.rejectHandshake("malformed handshake");
      return;
    }
    this.auth = "none";
    this.handshakeDone({ version: b.version!, id: b.id });
  }

  private handshakeDone(peer: Hello | HelloReply): void {
    this.decoder.maxFrameBytes = this.maxFrameBytes;
    this.peer = peer;
    this.settleReady.resolve(peer);
  }

  /** `reason` goes to the peer; `detail` (if any) only into this side's close error (and so its log). */
  private rejectHandshake(reason: string, detail?: string): void {
    // With a secret, a refusal does not even tell the peer our id.
    if (this.hs.side === "server") this.write({ version: PROTOCOL_VERSION, id: this.secret ? "" : this.hs.id, error: reason });
    // close() writes the refusal out before it ends the socket.
    this.close(new RpcError(`handshake failed: ${reason}${detail ? ` (${detail})` : ""}`));
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

/**
 * Refused connections are summed up per peer address and reason, so that a flood of them (a scanner, a
 * misconfigured client in a loop, an attack) costs a few log lines, not one each: the first refusal is logged in
 * full, the ones that follow within REFUSAL_SUMMARY_INTERVAL_MS as one line with their count at the end of that
 * interval, and so on while they keep coming. 10 s: short enough that an operator watching the log sees a flood
 * while it happens, long enough that a flood of thousands a second costs one line per 10 s.
 */
export const REFUSAL_SUMMARY_INTERVAL_MS = 10_000;

export class RefusalLog {
  private readonly windows = new Map<string, { count: number; timer: ReturnType<typeof setTimeout>; msg: string; address: string; fields: Record<string, unknown> }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = REFUSAL_SUMMARY_INTERVAL_MS,
  ) {}

  refused(msg: string, socket: net.Socket | undefined, fields: Record<string, unknown>): void {
    const address = socket?.remoteAddress ?? "?";
    // Numbers in a reason (frame sizes, ports) do not make another reason: a peer cannot dodge the sum by varying them.
    const key = `${address}\0${msg}\0${String(fields.error ?? "").replace(/\d+/g, "#")}`;
    const w = this.windows.get(key);
    if (w) {
      w.count++;
      return;
    }
    this.log.warn(msg, { peer: `${address}:${socket?.remotePort}`, ...fields });
    this.open(key, msg, address, fields);
  }

  /** Logs the counts not yet logged (the listener closes). */
  flush(): void {
    for (const key of [...this.windows.keys()]) this.report(key, false);
  }

  private open(key: string, msg: string, address: string, fields: Record<string, unknown>): void {
    const timer = setTimeout(() => this.report(key, true), this.intervalMs);
    (timer as { unref?: () => void }).unref?.();
    this.windows.set(key, { count: 0, timer, msg, address, fields });
  }

  private report(key: string, reopen: boolean): void {
    const w = this.windows.get(key);
    if (!w) return;
    clearTimeout(w.timer);
    this.windows.delete(key);
    if (w.count === 0) return; // quiet for a whole interval: the next refusal is logged in full again
    this.log.warn(`${w.msg} (${w.count} more in the last ${Math.round(this.intervalMs / 1000)} s)`, { peer: w.address, ...w.fields, count: w.count });
    if (reopen) this.open(key, w.msg, w.address, w.fields);
  }
}

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

export async function connectRpc(host: string, port: number, hello: Hello, handler: RequestHandler, opts: FramedOptions = {}): Promise<RpcConnection> {
  const framed = await connectFramed(host, port, hello, opts);
  return new RpcConnection(framed, handler);
}

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
