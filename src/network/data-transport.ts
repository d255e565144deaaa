// TCP between TaskManagers for record exchange: one server (the data port) and one outgoing connection per
// peer, both carrying DATA / END / CREDIT frames of many channels (see DATA_FRAME in rpc/messages.ts).
import type * as net from "node:net";
import { boundPort, connectFramed, listenFramed, type FramedConnection } from "../rpc/connection.ts";
import { PROTOCOL_VERSION, type ChannelTarget } from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";

const log = createLogger("data");

export interface DataFrameHandler {
  onFrame(conn: FramedConnection, frame: unknown): void;
  /** An outgoing connection failed or closed: frames sent on it may be lost. */
  onPeerFailed(peer: string, err: Error): void;
  /** An incoming connection closed: data still due on it will not come. */
  onInboundClosed(conn: FramedConnection, err: Error): void;
}

export class DataTransport {
  private server: net.Server | null = null;
  private readonly peers = new Map<string, { conn: FramedConnection | null; queue: unknown[] }>();
  private readonly inbound = new Set<FramedConnection>();
  private stopping = false;
  port = 0;

  constructor(
    private readonly resourceId: string,
    private readonly handler: DataFrameHandler,
  ) {}

  async start(host: string, port: number): Promise<number> {
    this.server = await listenFramed(host, port, this.resourceId, (conn) => {
      if ((conn.peer as { role?: string }).role !== "data") {
        conn.close(new Error("the data port only takes data connections"));
        return;
      }
      this.inbound.add(conn);
      conn.setFrameHandler((f) => this.handler.onFrame(conn, f));
      conn.onClose((err) => {
        this.inbound.delete(conn);
        if (this.stopping) return;
        if (err && !/closed by peer/.test(err.message)) log.warn("inbound data connection failed", { peer: conn.remoteAddress, error: err.message });
        this.handler.onInboundClosed(conn, err ?? new Error("connection closed"));
      });
    });
    this.port = boundPort(this.server);
    return this.port;
  }

  /** Sends a frame to a peer TaskManager, connecting on first use; frames keep their order per peer. */
  send(target: ChannelTarget, frame: unknown): void {
    const key = `${target.dataHost}:${target.dataPort}`;
    let peer = this.peers.get(key);
    if (!peer) {
      peer = { conn: null, queue: [] };
      this.peers.set(key, peer);
      this.connect(key, target, peer);
    }
    if (peer.conn) peer.conn.send(frame);
    else peer.queue.push(frame);
  }

  private connect(key: string, target: ChannelTarget, peer: { conn: FramedConnection | null; queue: unknown[] }): void {
    connectFramed(target.dataHost, target.dataPort, { version: PROTOCOL_VERSION, role: "data", id: this.resourceId }).then(
      (conn) => {
        peer.conn = conn;
        conn.setFrameHandler((f) => this.handler.onFrame(conn, f));
        conn.onClose((err) => {
          if (this.peers.get(key) === peer) this.peers.delete(key);
          // Even an orderly close may drop frames in flight: the producers still sending there must fail.
          if (!this.stopping) this.handler.onPeerFailed(key, err ?? new Error("connection closed"));
        });
        for (const f of peer.queue.splice(0)) conn.send(f);
      },
      (err: Error) => {
        this.peers.delete(key);
        this.handler.onPeerFailed(key, err);
      },
    );
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const p of this.peers.values()) p.conn?.close();
    for (const c of this.inbound) c.close();
    this.peers.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
