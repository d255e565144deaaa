// Shared by the PostgreSQL connectors: connection options, the client (npm `postgres`), and connection errors
// turned into one line that names the option to fix.
import postgres from "postgres";
import { errorText } from "./options.ts";

export interface PostgresConnectionOptions {
  /** postgres://user:password@host:port/database (the other options override its parts). */
  url?: string;
  host?: string;
  port?: number;
  database?: string;
  user?: string;
  password?: string;
  /** How long a connection attempt may take (default 10 s). */
  connectTimeoutMs?: number;
}

export interface ResolvedConnection {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string | undefined;
  connectTimeoutMs: number;
}

/** The connection options checked and completed (defaults: 127.0.0.1:5432, user postgres, database = user). */
export function resolveConnection(what: string, o: PostgresConnectionOptions): ResolvedConnection {
  if (typeof o !== "object" || o === null) throw new Error(`${what}: expected connection options { url } or { host, port, database, user, password }`);
  let fromUrl: Partial<ResolvedConnection> = {};
  if (o.url !== undefined) {
    let u: URL;
    try {
      u = new URL(o.url);
    } catch {
      throw new Error(`${what}: option url is not a URL: ${JSON.stringify(redactUrl(String(o.url)))}`);
    }
    if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") throw new Error(`${what}: option url must start with postgres://, got ${u.protocol}//`);
    fromUrl = {
      host: u.hostname || undefined,
      port: u.port ? Number(u.port) : undefined,
      database: u.pathname.length > 1 ? decodeURIComponent(u.pathname.slice(1)) : undefined,
      user: u.username ? decodeURIComponent(u.username) : undefined,
      password: u.password ? decodeURIComponent(u.password) : undefined,
    };
  }
  const host = o.host ?? fromUrl.host ?? "127.0.0.1";
  const port = o.port ?? fromUrl.port ?? 5432;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${what}: option port must be 1..65535, got ${JSON.stringify(port)}`);
  const user = o.user ?? fromUrl.user ?? "postgres";
  const connectTimeoutMs = o.connectTimeoutMs ?? 10_000;
  if (!Number.isFinite(connectTimeoutMs) || connectTimeoutMs <= 0) throw new Error(`${what}: option connectTimeoutMs must be > 0, got ${connectTimeoutMs}`);
  return { host, port, user, database: o.database ?? fromUrl.database ?? user, password: o.password ?? fromUrl.password, connectTimeoutMs };
}

function redactUrl(url: string): string {
  return url.replace(/\/\/([^:/@]*):[^@]*@/, "//$1:***@");
}

/** A client with at most `max` connections; connections are opened lazily (connectOrExplain checks them). */
export function createClient(c: ResolvedConnection, max: number, extra: Record<string, unknown> = {}): postgres.Sql {
  return postgres({
    host: c.host,
    port: c.port,
    database: c.database,
    username: c.user,
    password: c.password,
    max,
    connect_timeout: Math.max(1, Math.ceil(c.connectTimeoutMs / 1000)),
    idle_timeout: 0,
    max_lifetime: null,
    onnotice: () => {},
    // Values stay as the server sends them except for what JSON handles: bigint columns come as strings.
    ...extra,
  } as postgres.Options<{}>);
}

/**
 * A connection error as one line naming the option to fix: the host/port for an unreachable server, the user or
 * password for a refused login, the database when it does not exist.
 */
export function explainConnectError(what: string, c: ResolvedConnection, err: unknown): Error {
  const e = err as { code?: string; message?: string };
  const code = e?.code ?? "";
  const where = `${c.host}:${c.port}`;
  let option: string;
  if (code === "28P01") option = "option password";
  else if (code === "28000") option = "options user/password (or the server's pg_hba.conf)";
  else if (code === "3D000") option = "option database";
  else if (["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH", "CONNECT_TIMEOUT", "ConnectionRefused", "ECONNRESET"].includes(code) || /connect|refused|timeout/i.test(e?.message ?? "")) option = "options host/port";
  else option = "connection options";
  return new Error(`${what}: cannot connect to PostgreSQL at ${where} as ${JSON.stringify(c.user)}, database ${JSON.stringify(c.database)} (${option}): ${errorText(err)}`, { cause: err });
}

/** Runs the first query of a client: a failure here is a connection problem, explained. */
export async function connectOrExplain<T>(what: string, c: ResolvedConnection, first: () => Promise<T>): Promise<T> {
  try {
    return await first();
  } catch (err) {
    const code = (err as { code?: string })?.code;
    // A SQL error after login (e.g. a missing table) is not a connection problem.
    if (code && /^[0-9A-Z]{5}$/.test(code) && !["28P01", "28000", "3D000", "57P03"].includes(code)) throw err;
    throw explainConnectError(what, c, err);
  }
}

/** A SQL identifier quoted (schema.table parts quoted separately). */
export function quoteIdent(name: string): string {
  return name
    .split(".")
    .map((p) => `"${p.replace(/"/g, '""')}"`)
    .join(".");
}

/** A SQL string literal. */
export function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}
