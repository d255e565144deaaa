// A framed TCP connection opened by the version handshake (FramedConnection). Both the RPC port and the data port
// use it; RpcConnection (rpc-connection.ts) puts request/response on top.
import type * as net from "node:net";
import { bufferFrameLength, encodeFrame, FrameDecoder, DEFAULT_MAX_FRAME_BYTES, NO_FRAME, writeBufferFrame } from "./framing.ts";
import type { Hello, HelloReply } from "./messages.ts";
import { HANDSHAKE_MAX_FRAME_BYTES, type TransportSecurity } from "./security.ts";
import { Handshake, type HandshakeSide } from "./handshake.ts";
import { RpcError } from "./rpc-error.ts";
import { WriteStage } from "./write-stage.ts";

/** A frame kept for later: a network buffer frame's payload may be decoder scratch memory, so it is copied. */
function ownBytes(body: unknown): unknown {
  if (Array.isArray(body) && body[2] instanceof Uint8Array) body[2] = Buffer.from(body[2]);
  return body;
}

/**
 * Frames kept between the end of the handshake and the moment the owner sets its frame handler (a few microtasks,
 * so only what came in the same TCP chunk as the handshake). A peer that pipelines more than this before it has its
 * answer is not one of ours: its connection is closed.
 */
export const MAX_EARLY_FRAMES = 10_000;

export interface FramedOptions {
  maxFrameBytes?: number;
  handshakeTimeoutMs?: number;
  /** Shared secret (HMAC challenge-response in the handshake) and TLS; default: neither. */
  security?: TransportSecurity;
}

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
  private readonly handshake: Handshake;
  private readonly out: WriteStage;
  /** When the last frame arrived (idle time-out). */
  lastReceived = Date.now();
  private idleTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly socket: net.Socket,
    hs: HandshakeSide,
    opts: FramedOptions = {},
  ) {
    this.maxFrameBytes = opts.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    // Until the handshake is done only small frames are taken: a stranger cannot make us buffer 64 MiB.
    this.decoder = new FrameDecoder(Math.min(this.maxFrameBytes, HANDSHAKE_MAX_FRAME_BYTES));
    this.remote = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort}` : "unknown address";
    this.out = new WriteStage(socket);
    this.handshake = new Handshake(hs, opts.security?.secret ?? null, {
      write: (body) => this.write(body),
      fail: (err) => this.close(err),
      done: (peer) => this.handshakeDone(peer),
    });
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // observed through close handlers too
    socket.setNoDelay(true);
    const timer = setTimeout(() => this.close(new RpcError("handshake timed out")), opts.handshakeTimeoutMs ?? 10_000);
    this.ready.finally(() => clearTimeout(timer)).catch(() => {});
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => this.close(err));
    socket.on("close", () => this.close(new RpcError("connection closed by peer")));
    this.handshake.start();
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
    const off = this.out.reserve(bufferFrameLength(channel, payload.length));
    writeBufferFrame(this.out.stage!, off, channel, backlog, payload);
    return this.out.writable;
  }

  /** False while the socket's send buffer is full; whenWritable() tells when it has drained. */
  get writable(): boolean {
    return this.out.writable;
  }

  whenWritable(callback: () => void): void {
    this.out.whenWritable(callback);
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
    this.out.flushOut();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref?.();
    for (const h of this.closeHandlers.splice(0)) h(err);
  }

  private write(body: unknown): boolean {
    return this.out.enqueue(encodeFrame(body));
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
        if (this.peer === null) this.handshake.onFrame(body);
        else if (this.frameHandler) this.frameHandler(body);
        else if (this.early.length < MAX_EARLY_FRAMES) this.early.push(ownBytes(body));
        else {
          this.close(new RpcError(`the peer sent more than ${MAX_EARLY_FRAMES} frames before its connection was set up`));
          return;
        }
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
        this.handshake.side === "client"
          ? `the peer speaks TLS (${type === 0x15 ? "a TLS alert" : "a TLS record"} instead of a handshake frame): set security.ssl.enabled = true (with security.ssl.cert-file, key-file and ca-file) to connect to it`
          : `the peer speaks TLS (a TLS ${type === 0x16 ? "ClientHello" : "record"} on a plain port): security.ssl.enabled is set there but not here`,
      ),
    );
    return true;
  }

  private handshakeDone(peer: Hello | HelloReply): void {
    this.decoder.maxFrameBytes = this.maxFrameBytes;
    this.peer = peer;
    this.settleReady.resolve(peer);
  }
}
