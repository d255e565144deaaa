// TCP between TaskManagers for record exchange: one server (the data port) and at most one connection per
// peer TaskManager in use at a time (an incoming one is reused for sending), carrying the DATA / EVENT /
// CREDIT frames of every channel between the two (see DATA_FRAME in rpc/messages.ts).
import type * as net from "node:net";
import { boundPort, listenFramed } from "../rpc/listen.ts";
import { connectFramed } from "../rpc/connect.ts";
import type { FramedConnection } from "../rpc/framed-connection.ts";
import type { TransportSecurity } from "../rpc/security.ts";
import { PROTOCOL_VERSION, type ChannelTarget, type Hello } from "../rpc/messages.ts";
import { DATA_FRAME } from "./wire.ts";
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
  /** taskmanager.network.tcp-connection.keepalive.interval / .timeout */
  keepaliveIntervalMs?: number;
  keepaliveTimeoutMs?: number;
  /** taskmanager.network.request-backoff.initial / .max */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
}

/** A keepalive frame: [KEEPALIVE]. Any frame is a sign of life; this one carries nothing else. */
const KEEPALIVE_FRAME = [DATA_FRAME.KEEPALIVE];

/** A delay with +-50% random jitter, so that TaskManagers restarting together do not retry in lockstep. */
function jittered(ms: number): number {
  return Math.max(1, Math.round(ms * (0.5 + Math.random())));
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

  /** Secret, TLS, limits and liveness of the data port and of outgoing data connections; before start(). */
  configure(settings: DataTransportSettings): void {
    this.settings = settings;
  }

  private get keepaliveIntervalMs(): number {
    return this.settings.keepaliveIntervalMs ?? 2000;
  }
  private get keepaliveTimeoutMs(): number {
    return this.settings.keepaliveTimeoutMs ?? 10_000;
  }
  /**
   * A connection silent for longer than this is not reused for new channels: a healthy one hears a keepalive
   * every interval, so silence means the peer is gone or cut off, and a new attempt must not build on it.
   */
  private get reuseSilenceMs(): number {
    return Math.max(2 * this.keepaliveIntervalMs, Math.floor(this.keepaliveTimeoutMs / 2));
  }

  async start(host: string, port: number): Promise<number> {
    this.server = await listenFramed(
      host,
      port,
      this.resourceId,
      (conn) => {
        const peerId = (conn.peer as Hello).id;
        const peer = this.peers.get(peerId);
        if (peer !== undefined && peer.conn === null) {
          // Our own dial to this peer is still under way (both dialed at once): what waits for it goes out on this
          // connection now, and so does everything after it. Replacing the entry instead would send later frames
          // here and the queued ones on the dialed connection: two TCP streams, so a peer could get them out of order.
          peer.conn = conn;
          for (const f of peer.queue.splice(0)) conn.send(f);
        } else if (!this.usable(peer?.conn ?? null)) this.peers.set(peerId, { conn, queue: [] });
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

  /**
   * Sends a frame to a peer TaskManager, connecting on first use; frames keep their order per peer: all go on one
   * connection (ours or the peer's, whichever was up first) until it closes.
   */
  send(target: ChannelTarget, frame: unknown): void {
    let peer = this.peers.get(target.resourceId);
    if (peer?.conn && !this.usable(peer.conn)) {
      // Silent for too long: the tasks still on it fail (it is as good as dead), and new channels get a new one.
      const silent = Date.now() - peer.conn.lastReceived;
      peer.conn.close(new Error(`data connection to TaskManager ${target.resourceId} (${peer.conn.remoteAddress}) was silent for ${silent} ms; not reused`));
      peer = this.peers.get(target.resourceId);
    }
    if (!peer) {
      peer = { conn: null, queue: [] };
      this.peers.set(target.resourceId, peer);
      this.connect(target, peer, Date.now(), this.settings.backoffInitialMs ?? 100, 1);
    }
    if (peer.conn) peer.conn.send(frame);
    else peer.queue.push(frame);
  }

  private usable(conn: FramedConnection | null): boolean {
    return conn !== null && !conn.closed && Date.now() - conn.lastReceived <= this.reuseSilenceMs;
  }

  /**
   * Connects, retrying with jittered exponential backoff until the keepalive time-out has passed since the
   * first try (a peer being restarted, or a link that flaps); then the consumers waiting for it fail.
   */
  private connect(target: ChannelTarget, peer: Peer, since: number, delayMs: number, tries: number): void {
    const hello = { version: PROTOCOL_VERSION, role: "data" as const, id: this.resourceId };
    const { security, handshakeTimeoutMs } = this.settings;
    const left = since + this.keepaliveTimeoutMs - Date.now();
    connectFramed(target.dataHost, target.dataPort, hello, { security, handshakeTimeoutMs, maxFrameBytes: this.maxFrameBytes, connectTimeoutMs: Math.max(1000, left) }).then(
      (conn) => {
        if (this.stopping) return conn.close();
        this.adopt(target.resourceId, conn);
        // The peer's own connection came first (both dialed at once) and carries our frames already: this one only
        // receives, so that every frame to the peer keeps one TCP stream and its order.
        if (peer.conn !== null) return;
        peer.conn = conn;
        for (const f of peer.queue.splice(0)) conn.send(f);
      },
      (err: Error) => {
        // The peer's own connection came meanwhile: it took this dial's queue and carries what follows.
        if (this.stopping || peer.conn !== null) return;
        const wait = jittered(delayMs);
        if (Date.now() + wait - since < this.keepaliveTimeoutMs) {
          if (tries === 1) log.warn("cannot connect to a peer TaskManager; retrying with backoff", { peer: target.resourceId, address: `${target.dataHost}:${target.dataPort}`, error: err.message });
          setTimeout(() => this.connect(target, peer, since, Math.min(delayMs * 2, this.settings.backoffMaxMs ?? 2000), tries + 1), wait);
          return;
        }
        if (this.peers.get(target.resourceId) === peer) this.peers.delete(target.resourceId);
        this.handler.onConnectionClosed(target.resourceId, null, new Error(`${err.message} (${tries} attempt(s) in ${Date.now() - since} ms)`));
      },
    );
  }

  private adopt(peerId: string, conn: FramedConnection): void {
    this.all.add(conn);
    conn.setFrameHandler((f) => {
      if (Array.isArray(f) && f.length === 1 && f[0] === DATA_FRAME.KEEPALIVE) return;
      this.handler.onFrame(conn, f);
    });
    // Liveness: a keepalive every interval, and a connection that heard nothing for the time-out is closed, which
    // fails the tasks on it naming the peer (TCP alone would wait for its retransmissions, minutes on a cut link).
    const interval = this.keepaliveIntervalMs;
    const timeout = this.keepaliveTimeoutMs;
    const timer = setInterval(() => {
      const silent = Date.now() - conn.lastReceived;
      if (silent >= timeout) {
        conn.close(new Error(`nothing arrived from TaskManager ${peerId} (${conn.remoteAddress}) for ${silent} ms (taskmanager.network.tcp-connection.keepalive.timeout = ${timeout} ms): the peer is unreachable or dead`));
        return;
      }
      if (!conn.closed) conn.send(KEEPALIVE_FRAME);
    }, Math.min(interval, Math.max(10, Math.floor(timeout / 4))));
    timer.unref?.();
    conn.onClose((err) => {
      clearInterval(timer);
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
