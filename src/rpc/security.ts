// Transport security of RPC and data connections: the shared secret behind the HMAC challenge-response of the
// handshake (docs/protocol.md section 2.1), TLS, and the limits that keep a hostile peer from exhausting a
// process. The secret is read from a file or from TM_SECURITY_AUTH_SECRET, never from a flag, and never logged.
import { createHash, createHmac, createPrivateKey, randomBytes, timingSafeEqual, X509Certificate } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import type { Config } from "../config/index.ts";
import { ConfigError, environmentWithSecrets } from "../config/load.ts";
import type { Hello } from "./messages.ts";

/** The environment variable holding the shared secret (used when security.auth.secret-file is empty). */
export const SECRET_ENV_VAR = "TM_SECURITY_AUTH_SECRET";
export const MIN_SECRET_BYTES = 16;
export const NONCE_BYTES = 32;
/** All that a peer that fails authentication is told. */
export const AUTH_FAILED = "authentication failed";
/** Frames before the handshake is complete may not be larger than this (a Hello is well under 1 KiB). */
export const HANDSHAKE_MAX_FRAME_BYTES = 64 * 1024;

export interface TlsSettings {
  cert: Buffer;
  key: Buffer;
  /** The CA(s) that peers' certificates must chain to; null = the system's default CAs. */
  ca: Buffer | null;
  /** Mutual TLS: the listening side requires and verifies a client certificate. */
  clientAuth: boolean;
}

export interface TransportSecurity {
  /** Shared secret of the cluster, or null (no authentication: loopback only unless insecure). */
  secret: Buffer | null;
  /** Allows listening on a non-loopback address without a secret. */
  insecure: boolean;
  tls: TlsSettings | null;
}

export const NO_SECURITY: TransportSecurity = Object.freeze({ secret: null, insecure: false, tls: null });

/**
 * Reads the secret (security.auth.secret-file, else TM_SECURITY_AUTH_SECRET) and the TLS files named in the
 * config. Throws ConfigError naming the key and file, never the secret.
 */
export function securityFromConfig(config: Config, env: Record<string, string | undefined> = environmentWithSecrets()): TransportSecurity {
  let secret: Buffer | null = null;
  const secretFile = config["security.auth.secret-file"];
  if (secretFile) {
    // A trailing newline is what editors and `echo` add: it is not part of the secret.
    secret = checkSecret(trimNewlines(readFile(secretFile, "security.auth.secret-file")), `security.auth.secret-file: the secret in ${secretFile}`);
  } else if (env[SECRET_ENV_VAR]) {
    secret = checkSecret(Buffer.from(env[SECRET_ENV_VAR]!, "utf8"), `environment variable ${SECRET_ENV_VAR}: the secret`);
  }
  let tls: TlsSettings | null = null;
  if (config["security.ssl.enabled"]) {
    for (const key of ["security.ssl.cert-file", "security.ssl.key-file"] as const) {
      if (!config[key]) throw new ConfigError(`${key}: required when security.ssl.enabled is true`);
    }
    tls = {
      cert: readFile(config["security.ssl.cert-file"], "security.ssl.cert-file"),
      key: readFile(config["security.ssl.key-file"], "security.ssl.key-file"),
      ca: config["security.ssl.ca-file"] ? readFile(config["security.ssl.ca-file"], "security.ssl.ca-file") : null,
      clientAuth: config["security.ssl.client-auth"],
    };
    checkKeyPair(tls, config["security.ssl.cert-file"], config["security.ssl.key-file"]);
  }
  return { secret, insecure: config["security.insecure"], tls };
}

/**
 * The bearer token of the REST API's mutating calls: the contents of security.rest.token-file (a trailing newline
 * is ignored, at least 16 bytes), else the cluster's shared secret, else null (no token: loopback only unless
 * security.insecure). Throws ConfigError naming the key and file, never the token.
 */
export function restTokenFromConfig(config: Config, security: TransportSecurity): Buffer | null {
  const file = config["security.rest.token-file"];
  if (!file) return security.secret;
  return checkSecret(trimNewlines(readFile(file, "security.rest.token-file")), `security.rest.token-file: the token in ${file}`);
}

/** Whether an Authorization header is "Bearer <token>", compared in constant time (hashes of equal length). */
export function bearerMatches(header: string | undefined | null, token: Buffer): boolean {
  const m = /^Bearer +(.+?)\s*$/i.exec(header ?? "");
  const given = createHash("sha256").update(m ? m[1]! : "").digest();
  const expected = createHash("sha256").update(token).digest();
  return timingSafeEqual(given, expected) && m !== null;
}

/**
 * A certificate and key that cannot be parsed, or that do not belong together, stop the start with one line naming
 * both keys (otherwise: an OpenSSL code from deep inside the listener, or a TLS failure on the first connection).
 */
function checkKeyPair(t: TlsSettings, certFile: string, keyFile: string): void {
  let cert: X509Certificate;
  let key: ReturnType<typeof createPrivateKey>;
  try {
    cert = new X509Certificate(t.cert); // the first certificate of the file: the node's own (a chain may follow)
  } catch (err) {
    throw new ConfigError(`security.ssl.cert-file: ${certFile} holds no PEM certificate (${(err as Error).message})`);
  }
  try {
    key = createPrivateKey(t.key);
  } catch (err) {
    throw new ConfigError(`security.ssl.key-file: ${keyFile} holds no PEM private key (${(err as Error).message})`);
  }
  // (A runtime without checkPrivateKey leaves the check to the TLS handshake.)
  if (typeof cert.checkPrivateKey === "function" && !cert.checkPrivateKey(key)) {
    throw new ConfigError(`security.ssl.key-file: the key in ${keyFile} does not match the certificate in security.ssl.cert-file ${certFile}`);
  }
}

/**
 * The placeholder values shipped in deploy/ (k8s/secret.yaml, systemd/tm.env.example): public, so never a secret.
 * Contained rather than equal, so that a whole copied line ("TM_SECURITY_AUTH_SECRET=replace-...") is caught too.
 */
export const PLACEHOLDER_SECRETS = ["replace-with-at-least-16-random-bytes"];

/** Refuses a secret under MIN_SECRET_BYTES or one containing a shipped placeholder; `source` names where it came from. */
function checkSecret(secret: Buffer, source: string): Buffer {
  if (secret.length < MIN_SECRET_BYTES) throw new ConfigError(`${source} is ${secret.length} bytes; at least ${MIN_SECRET_BYTES} are required`);
  if (PLACEHOLDER_SECRETS.some((p) => secret.includes(p))) {
    throw new ConfigError(`${source} is the placeholder shipped in deploy/; generate a real one, e.g. head -c 32 /dev/urandom | base64`);
  }
  return secret;
}

function trimNewlines(b: Buffer): Buffer {
  let end = b.length;
  while (end > 0 && (b[end - 1] === 0x0a || b[end - 1] === 0x0d)) end--;
  return b.subarray(0, end);
}

function readFile(file: string, key: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${key}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (net.isIPv4(host)) return host.startsWith("127.");
  if (net.isIPv6(host)) return host === "::1" || /^::ffff:127\./i.test(host);
  return false;
}

/** Throws unless listening on `host` is allowed: a secret, or loopback, or security.insecure. */
export function checkBindAllowed(host: string, port: number, security: TransportSecurity, what: string): void {
  if (security.secret || security.insecure || isLoopback(host)) return;
  throw new ConfigError(
    `refusing to listen on ${host}:${port} (${what}) without authentication: set a shared secret ` +
      `(security.auth.secret-file or ${SECRET_ENV_VAR}), bind to a loopback address, or set security.insecure = true`,
  );
}

export function newNonce(): Buffer {
  return randomBytes(NONCE_BYTES);
}

/**
 * HMAC-SHA256 over the whole handshake: who proves ("client" or "server"), the connector's Hello (version,
 * role, id) and both nonces. Distinct labels keep one side's proof from being replayed as the other's.
 */
export function authProof(secret: Buffer, label: "client" | "server", hello: Hello, clientNonce: Uint8Array, serverNonce: Uint8Array): Buffer {
  const h = createHmac("sha256", secret);
  h.update(JSON.stringify(["tm-auth-v1", label, hello.version, String(hello.role), String(hello.id)]));
  h.update(clientNonce);
  h.update(serverNonce);
  return h.digest();
}

export function isNonce(v: unknown): v is Uint8Array {
  return v instanceof Uint8Array && v.length === NONCE_BYTES;
}

/** Constant-time comparison of a received proof with the expected one. */
export function proofMatches(received: unknown, expected: Buffer): boolean {
  return received instanceof Uint8Array && received.length === expected.length && timingSafeEqual(received, expected);
}
