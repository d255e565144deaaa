// The handshake that opens every framed connection (docs/protocol.md section 2): the protocol version, the peer's
// role and id, and with a shared secret an HMAC challenge-response in both directions. A state machine fed with
// the frames that arrive before the connection is ready; it answers through the connection it belongs to.
import { PROTOCOL_VERSION, type Hello, type HelloReply } from "./messages.ts";
import { AUTH_FAILED, authProof, isNonce, newNonce, proofMatches } from "./security.ts";
import { RpcError } from "./rpc-error.ts";

export type HandshakeSide =
  | { side: "client"; hello: Hello }
  | { side: "server"; id: string; accept?: (hello: Hello) => string | null /* error text or null */ };

/** What the handshake needs from its connection. */
export interface HandshakeIo {
  /** Sends a handshake frame. */
  write(body: unknown): void;
  /** Fails the connection (what was written goes out first). */
  fail(err: Error): void;
  /** The handshake is complete: the peer's Hello (server side) or HelloReply (client side). */
  done(peer: Hello | HelloReply): void;
}

export class Handshake {
  /** This side's nonce, and the state of the challenge-response (only with a secret). */
  private nonce: Buffer | null = null;
  private auth: "none" | "challenge-expected" | "accept-expected" | "proof-expected" = "none";
  /** Server side: the Hello of a peer that still has to prove it knows the secret. */
  private pendingHello: Hello | null = null;
  private sentHello: Hello | null = null;
  private peerNonce: Uint8Array | null = null;

  constructor(
    private readonly hs: HandshakeSide,
    private readonly secret: Buffer | null,
    private readonly io: HandshakeIo,
  ) {}

  get side(): "client" | "server" {
    return this.hs.side;
  }

  /** Client side: sends the Hello. */
  start(): void {
    if (this.hs.side !== "client") return;
    let hello = this.hs.hello;
    if (this.secret) {
      this.nonce = newNonce();
      this.auth = "challenge-expected";
      hello = { ...hello, nonce: this.nonce };
    }
    this.sentHello = this.hs.hello;
    this.io.write(hello);
  }

  /** One frame received before the handshake completed. */
  onFrame(body: unknown): void {
    if (this.hs.side === "server" && this.auth === "proof-expected") {
      this.onProof(body);
      return;
    }
    const b = body as Partial<Hello & HelloReply> & { nonce?: unknown; challenge?: unknown; proof?: unknown; error?: unknown } | null;
    if (typeof b !== "object" || b === null || typeof b.version !== "number") {
      this.reject("malformed handshake");
      return;
    }
    if (b.version !== PROTOCOL_VERSION) {
      this.reject(`protocol version mismatch: peer speaks ${b.version}, this process speaks ${PROTOCOL_VERSION}`);
      return;
    }
    if (this.hs.side === "client") {
      this.onClientHandshake(b);
      return;
    }
    if (typeof b.id !== "string") {
      this.reject("malformed handshake");
      return;
    }
    if (this.secret) {
      // Challenge-response: the connector's nonce, ours, and a proof that we know the secret.
      if (!isNonce(b.nonce)) {
        this.reject(AUTH_FAILED, "the peer sent no nonce (no shared secret configured there?)");
        return;
      }
      const hello = { version: b.version, role: b.role, id: b.id } as Hello;
      this.nonce = newNonce();
      this.pendingHello = hello;
      this.auth = "proof-expected";
      this.io.write({ version: PROTOCOL_VERSION, challenge: this.nonce, proof: authProof(this.secret, "server", hello, b.nonce, this.nonce) });
      this.peerNonce = b.nonce;
      return;
    }
    this.acceptHello({ version: b.version, role: b.role, id: b.id } as Hello);
  }

  private onProof(body: unknown): void {
    const hello = this.pendingHello!;
    const proof = typeof body === "object" && body !== null ? (body as { proof?: unknown }).proof : undefined;
    if (!proofMatches(proof, authProof(this.secret!, "client", hello, this.peerNonce!, this.nonce!))) {
      this.reject(AUTH_FAILED, "wrong proof (the peer does not know the shared secret)");
      return;
    }
    this.auth = "none";
    this.acceptHello(hello);
  }

  /** Server side, after authentication (if any): role and accept hook, then HelloReply. */
  private acceptHello(hello: Hello): void {
    if (this.hs.side !== "server") return;
    if (hello.role !== "taskmanager" && hello.role !== "client" && hello.role !== "data") {
      this.reject(`unknown peer role ${JSON.stringify(hello.role)}`);
      return;
    }
    const refusal = this.hs.accept?.(hello) ?? null;
    if (refusal !== null) {
      this.reject(refusal);
      return;
    }
    this.io.write({ version: PROTOCOL_VERSION, id: this.hs.id } satisfies HelloReply);
    this.io.done(hello);
  }

  private onClientHandshake(b: Partial<HelloReply> & { challenge?: unknown; proof?: unknown; error?: unknown }): void {
    if (this.auth === "challenge-expected") {
      if (typeof b.error === "string") {
        this.io.fail(new RpcError(`handshake refused by peer: ${b.error}`));
        return;
      }
      if (!isNonce(b.challenge)) {
        this.io.fail(new RpcError(`${AUTH_FAILED}: the peer did not authenticate itself (is the shared secret configured there?)`));
        return;
      }
      if (!proofMatches(b.proof, authProof(this.secret!, "server", this.sentHello!, this.nonce!, b.challenge))) {
        this.io.fail(new RpcError(`${AUTH_FAILED}: the peer does not know the shared secret`));
        return;
      }
      this.auth = "accept-expected";
      this.io.write({ proof: authProof(this.secret!, "client", this.sentHello!, this.nonce!, b.challenge) });
      return;
    }
    if (typeof b.error === "string") {
      this.io.fail(new RpcError(`handshake refused by peer: ${b.error}`));
      return;
    }
    if (typeof b.id !== "string") {
      this.reject("malformed handshake");
      return;
    }
    this.auth = "none";
    this.io.done({ version: b.version!, id: b.id });
  }

  /** `reason` goes to the peer; `detail` (if any) only into this side's close error (and so its log). */
  private reject(reason: string, detail?: string): void {
    // With a secret, a refusal does not even tell the peer our id.
    if (this.hs.side === "server") this.io.write({ version: PROTOCOL_VERSION, id: this.secret ? "" : this.hs.id, error: reason });
    // fail() writes the refusal out before it ends the socket.
    this.io.fail(new RpcError(`handshake failed: ${reason}${detail ? ` (${detail})` : ""}`));
  }
}
