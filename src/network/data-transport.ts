// TCP between TaskManagers for record exchange: one server (the data port) and at most one connection per
// peer TaskManager in use at a time (an incoming one is reused for sending), carrying the DATA / EVENT /
// CREDIT frames of every channel between the two (see DATA_FRAME in rpc/messages.ts).
import type * as net from "node:net";
import { boundPort, connectFramed, listenFramed, type FramedConnection } from "../rpc/connection.ts";
import type { TransportSecurity } from "../rpc/security.ts";
import { PROTOCOL_VERSION, type ChannelTarget, type Hello } from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";

const log = createLogger("data");

export interface DataFrameHandler {
  onFrame(conn: FramedConnection, frame: unknown): void;
  /** A connection to or from the peer closed or failed: frames in flight on it may be lost. */
  onConnectionClosed(peer: string, conn: FramedConnection | null, err: Error): void;
}

interface Peer {
  conn: FramedConnection | null;
  queue: unknown[];
}

export interface DataTransportSettings {
  security?: TransportSecurity;
  handshakeTimeoutMs?: number;
  maxConnectionsPerAddress?: number;
}

export class DataTransport {
  private server: net.Server | null = null;
  private readonly peers = new Map<string, Peer>();
  private readonly all = new Set<FramedConnection>();
  private stopping = false;
  private settings: DataTransportSettings = {};
  port = 0;

  constructor(
    private readonly resourceId: string,
    private readonly handler: DataFrameHandler,
    private readonly maxFrameBytes: number,
  ) {}

  /** Secret, TLS and limits of the data port and of outgoing data connections; before start(). */
  configure(settings: DataTransportSettings): void {
    this.settings = settings;
  }

  async start(host: string, port: number): Promise<number> {
    this.server = await listenFramed(
      host,
      port,
      this.resourceId,
      (conn) => {
        const peerId = (conn.peer as Hello).id;
        if (!this.peers.get(peerId)?.conn) this.peers.set(peerId, { conn, queue: [] });
        this.adopt(peerId, conn);
      },
      {
        ...this.settings,
        name: "data",
        portKey: "taskmanager.data.port",
        maxFrameBytes: this.maxFrameBytes,
        accept: (hello) => (hello.role === "data" ? null : "the data port only takes data connections"),
      },
    );
    this.port = boundPort(this.server);
    return this.port;
  }

  /** Sends a frame to a peer TaskManager, connecting on first use; frames keep their order per peer. */
  send(target: ChannelTarget, frame: unknown): void {
    let peer = this.peers.get(target.resourceId);
    if (!peer) {
      peer = { conn: null, queue: [] };
      this.peers.set(target.resourceId, peer);
      this.connect(target, peer);
    }
    if (peer.conn) peer.conn.send(frame);
    else peer.queue.push(frame);
  }

  private connect(target: ChannelTarget, peer: Peer): void {
    const hello = { version: PROTOCOL_VERSION, role: "data" as const, id: this.resourceId };
    const { security, handshakeTimeoutMs } = this.settings;
    connectFramed(target.dataHost, target.dataPort, hello, { security, handshakeTimeoutMs, maxFrameBytes: this.maxFrameBytes }).then(
      (conn) => {
        if (this.stopping) return conn.close();
        peer.conn = conn;
        this.adopt(target.resourceId, conn);
        for (const f of peer.queue.splice(0)) conn.send(f);
      },
      (err: Error) => {
        if (this.peers.get(target.resourceId) === peer) this.peers.delete(target.resourceId);
        if (!this.stopping) this.handler.onConnectionClosed(target.resourceId, null, err);
      },
    );
  }

  private adopt(peerId: string, conn: FramedConnection): void {
    this.all.add(conn);
    conn.setFrameHandler((f) => this.handler.onFrame(conn, f));
    conn.onClose((err) => {
      this.all.delete(conn);
      const peer = this.peers.get(peerId);
      if (peer?.conn === conn) this.peers.delete(peerId);
      if (this.stopping) return;
      if (err && !/closed by peer/.test(err.message)) log.warn("data connection failed", { peer: peerId, address: conn.remoteAddress, error: err.message });
      this.handler.onConnectionClosed(peerId, conn, err ?? new Error("connection closed"));
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const c of this.all) c.close();
    this.peers.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
