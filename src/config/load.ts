// Loads the configuration: defaults < TOML file < TM_* environment variables < -D key=value flags.
// Every error is a ConfigError with one message naming the source, the key, what was expected and what was found.
import { readFileSync } from "node:fs";
import { parse as parseToml, TomlError } from "smol-toml";
import { CONFIG_KEYS, type Config, type ConfigKey, type ConfigKeySpec, type ValueType } from "./schema.ts";

export class ConfigError extends Error {
  override name = "ConfigError";
  /** Process exit code for a configuration error. */
  readonly exitCode = 2;
}

export interface LoadConfigOptions {
  /** Path of a TOML file (tm.toml / jm.toml). */
  file?: string | undefined;
  /** Environment, normally process.env. */
  env?: Record<string, string | undefined> | undefined;
  /** `key=value` strings from repeated `-D key=value` flags. */
  overrides?: string[] | undefined;
}

const SPECS = new Map<string, ConfigKeySpec>(CONFIG_KEYS.map((spec) => [spec.key, spec]));

// Timers (setTimeout/setInterval) cannot wait longer than this.
const MAX_DURATION_MS = 2 ** 31 - 1;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, sec: 1000, min: 60_000, h: 3_600_000 };
const DURATION_EXPECTED = `a duration (milliseconds, or a number and a unit ms/s/sec/min/h such as "10 s")`;

export function defaultConfig(): Config {
  const config: Record<string, unknown> = {};
  for (const spec of CONFIG_KEYS) config[spec.key] = Array.isArray(spec.default) ? [...spec.default] : spec.default;
  return config as unknown as Config;
}

/**
 * Environment variables that carry secrets (never config keys). Once a config has been loaded from process.env they
 * are moved out of it into this module: job code, child processes and anything else that reads process.env later
 * do not see them. (Linux's /proc/<pid>/environ still shows the environment the process started with: README,
 * "Trust model".)
 */
export const SECRET_ENV_VARS: readonly string[] = ["TM_SECURITY_AUTH_SECRET"];
const takenSecrets: Record<string, string> = {};

function takeSecretsFromEnvironment(): void {
  for (const name of SECRET_ENV_VARS) {
    const value = process.env[name];
    if (value === undefined) continue;
    takenSecrets[name] = value;
    delete process.env[name];
  }
}

/** process.env with the secret-bearing variables that loadConfig took out of it: where the secret is read. */
export function environmentWithSecrets(): Record<string, string | undefined> {
  return { ...takenSecrets, ...process.env };
}

export function loadConfig(opts: LoadConfigOptions = {}): Config {
  if (opts.env === process.env) takeSecretsFromEnvironment();
  const config = defaultConfig() as unknown as Record<ConfigKey, string | number | boolean | string[]>;
  // Where each value came from, for the cross-key checks' messages.
  const origin = new Map<ConfigKey, string>(CONFIG_KEYS.map((spec) => [spec.key, "default"]));

  if (opts.file !== undefined) {
    for (const [key, value] of Object.entries(readTomlFile(opts.file))) {
      const spec = lookupKey(key, opts.file);
      config[spec.key] = parseValue(spec, value, false, `${opts.file}: ${spec.key}`);
      origin.set(spec.key, `from ${opts.file}`);
    }
  }

  for (const spec of CONFIG_KEYS) {
    const text = opts.env?.[spec.envVar];
    if (text === undefined) continue;
    config[spec.key] = parseValue(spec, text, true, `environment variable ${spec.envVar}: ${spec.key}`);
    origin.set(spec.key, `from ${spec.envVar}`);
  }

  for (const flag of opts.overrides ?? []) {
    const eq = flag.indexOf("=");
    const key = eq < 0 ? "" : flag.slice(0, eq).trim();
    if (key === "") throw new ConfigError(`-D flag ${JSON.stringify(flag)}: expected key=value`);
    const spec = lookupKey(key, "-D flag");
    config[spec.key] = parseValue(spec, flag.slice(eq + 1), true, `-D flag: ${spec.key}`);
    origin.set(spec.key, "from -D flag");
  }

  const interval = config["heartbeat.interval"] as number;
  const timeout = config["heartbeat.timeout"] as number;
  if (timeout <= interval) {
    throw new ConfigError(
      `heartbeat.timeout (${formatDuration(timeout)}, ${origin.get("heartbeat.timeout")}) must be greater than ` +
        `heartbeat.interval (${formatDuration(interval)}, ${origin.get("heartbeat.interval")})`,
    );
  }

  const minSegment = config["taskmanager.memory.min-segment-size"] as number;
  const segment = config["taskmanager.memory.segment-size"] as number;
  if (minSegment > segment) {
    throw new ConfigError(
      `taskmanager.memory.min-segment-size (${minSegment}, ${origin.get("taskmanager.memory.min-segment-size")}) must be at most ` +
        `taskmanager.memory.segment-size (${segment}, ${origin.get("taskmanager.memory.segment-size")})`,
    );
  }

  // An aligned-checkpoint-timeout at or past the checkpoint time-out could never switch a checkpoint before it fails.
  const alignedTimeout = config["execution.checkpointing.aligned-checkpoint-timeout"] as number;
  const checkpointTimeout = config["execution.checkpointing.timeout"] as number;
  if (alignedTimeout > 0 && alignedTimeout >= checkpointTimeout) {
    throw new ConfigError(
      `execution.checkpointing.aligned-checkpoint-timeout (${formatDuration(alignedTimeout)}, ${origin.get("execution.checkpointing.aligned-checkpoint-timeout")}) must be shorter than ` +
        `execution.checkpointing.timeout (${formatDuration(checkpointTimeout)}, ${origin.get("execution.checkpointing.timeout")})`,
    );
  }

  // (high-availability.storageDir is the JobManager's concern: checked where its HA services start.)
  const ha = config["high-availability.type"];
  if (ha === "etcd" && (config["high-availability.etcd.endpoints"] as string[]).length === 0) {
    throw new ConfigError(`high-availability.type = etcd (${origin.get("high-availability.type")}) needs high-availability.etcd.endpoints (etcd client URLs such as http://127.0.0.1:2379)`);
  }

  return config as unknown as Config;
}

/**
 * Parses a duration: a non-negative integer of milliseconds, or a string of a number and an optional unit
 * (ms, s, sec, min, h; no unit = ms), e.g. "500 ms", "10s", "1.5 min". Returns whole milliseconds.
 * `where` prefixes the error message, e.g. "tm.toml: heartbeat.interval".
 */
export function parseDuration(text: string | number, where: string): number {
  let ms: number;
  if (typeof text === "number") {
    if (!Number.isInteger(text) || text < 0) throw expected(where, DURATION_EXPECTED, describe(text));
    ms = text;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$/i.exec(text);
    const factor = m ? DURATION_UNITS[(m[2] || "ms").toLowerCase()] : undefined;
    if (!m || factor === undefined) throw expected(where, DURATION_EXPECTED, describe(text));
    ms = Math.round(Number(m[1]) * factor);
  }
  if (ms > MAX_DURATION_MS) {
    throw expected(where, `a duration of at most ${MAX_DURATION_MS} ms (about 24 days)`, describe(text));
  }
  return ms;
}

function readTomlFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new ConfigError(`config file ${path} not found`);
    throw new ConfigError(`config file ${path} cannot be read: ${(err as Error).message}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text);
  } catch (err) {
    if (!(err instanceof TomlError)) throw err;
    // smol-toml's message is "Invalid TOML document: <reason>\n\n<code block>"; keep the reason only.
    const reason = err.message.replace(/^Invalid TOML document: /, "").split("\n")[0];
    throw new ConfigError(`${path}: invalid TOML at line ${err.line}, column ${err.column}: ${reason}`);
  }
  return flatten(doc, "");
}

/** Turns nested tables into dotted keys; stops at known keys so a table given for a key is reported as a bad value. */
function flatten(table: Record<string, unknown>, prefix: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(table)) {
    const key = prefix + name;
    if (isTable(value) && !SPECS.has(key)) Object.assign(out, flatten(value, key + "."));
    else out[key] = value;
  }
  return out;
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function lookupKey(key: string, source: string): ConfigKeySpec {
  const spec = SPECS.get(key);
  if (spec) return spec;
  // The secret itself is never a config value: flags are visible to every user of the host (ps), files get copied.
  if (key === "security.auth.secret") {
    throw new ConfigError(`${source}: security.auth.secret cannot be given here; put the secret in a file named by security.auth.secret-file, or in the environment variable TM_SECURITY_AUTH_SECRET`);
  }
  const suggestion = closestKey(key);
  const hint = suggestion ? ` (did you mean ${JSON.stringify(suggestion)}?)` : "";
  throw new ConfigError(`${source}: unknown key ${JSON.stringify(key)}${hint}`);
}

/** The known key nearest to `key` by edit distance (ignoring case), if it is close enough to be a likely typo. */
function closestKey(key: string): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const spec of CONFIG_KEYS) {
    const d = editDistance(key.toLowerCase(), spec.key.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [spec.key, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 4)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/**
 * Checks and converts one value. `fromText` is true for environment variables and -D flags, whose values are
 * always strings to be parsed by the key's type; TOML values must already have the right type.
 */
function parseValue(spec: ConfigKeySpec, value: unknown, fromText: boolean, where: string): string | number | boolean | string[] {
  const type = spec.type;
  const found = describe(value);
  switch (type.kind) {
    case "string":
    case "path":
      if (typeof value !== "string") throw expected(where, "a string", found);
      return value;
    case "host":
      if (typeof value !== "string" || value === "" || /\s/.test(value)) {
        throw expected(where, "a host name or IP address (non-empty, no spaces)", found);
      }
      return value;
    case "enum":
      if (typeof value !== "string" || !type.values.includes(value)) {
        throw expected(where, `one of ${type.values.map((v) => JSON.stringify(v)).join(", ")}`, found);
      }
      return value;
    case "port":
    case "integer": {
      const [min, max] = type.kind === "port" ? [0, 65535] : [type.min, type.max];
      const n = fromText && typeof value === "string" && /^\s*[+-]?\d+\s*$/.test(value) ? Number(value) : value;
      if (typeof n !== "number" || !Number.isInteger(n) || n < min || (max !== undefined && n > max)) {
        throw expected(where, expectedInteger(type), found);
      }
      return n;
    }
    case "list": {
      // A TOML array of strings, or one string of comma-separated items (env vars, -D flags); blanks are dropped.
      const items = typeof value === "string" ? value.split(",") : Array.isArray(value) && value.every((v) => typeof v === "string") ? (value as string[]) : null;
      if (items === null) throw expected(where, 'a list of strings (a TOML array, or one comma-separated string such as "a, b")', found);
      return items.map((v) => v.trim()).filter((v) => v.length > 0);
    }
    case "boolean": {
      if (typeof value === "boolean") return value;
      if (fromText && typeof value === "string" && /^\s*(true|false)\s*$/i.test(value)) return value.trim().toLowerCase() === "true";
      throw expected(where, "true or false", found);
    }
    case "number": {
      const n = fromText && typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n) || n < type.min || n > type.max) throw expected(where, `a number >= ${type.min} and <= ${type.max}`, found);
      return n;
    }
    case "bytes": {
      const n = typeof value === "number" ? value : typeof value === "string" ? parseBytes(value) : NaN;
      if (!Number.isInteger(n) || n < type.min || (type.max !== undefined && n > type.max)) {
        throw expected(where, `a size in bytes >= ${type.min}${type.max !== undefined ? ` and <= ${type.max}` : ""} (a number of bytes, or a number and a unit k/m/g/t such as "64m")`, found);
      }
      return n;
    }
    case "duration": {
      if (typeof value !== "string" && typeof value !== "number") throw expected(where, DURATION_EXPECTED, found);
      const ms = parseDuration(value, where);
      if (type.min !== undefined && ms < type.min) {
        throw expected(where, `a duration of at least ${type.min} ms`, found);
      }
      return ms;
    }
  }
}

/** "1g", "64 mb", "512k", "1024": binary units as Flink's MemorySize; NaN when it is not a size. */
function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb|t|tb)?\s*$/i.exec(text);
  if (!m) return NaN;
  const unit = { b: 0, k: 1, m: 2, g: 3, t: 4 }[(m[2] ?? "b")[0]!.toLowerCase() as "b"]!;
  return Math.round(Number(m[1]) * 1024 ** unit);
}

function expectedInteger(type: ValueType & { kind: "port" | "integer" }): string {
  if (type.kind === "port") return "a port 0..65535";
  return type.max === undefined ? `an integer >= ${type.min}` : `an integer >= ${type.min} and <= ${type.max}`;
}

function expected(where: string, what: string, found: string): ConfigError {
  return new ConfigError(`${where}: expected ${what}, got ${found}`);
}

/** How a found value is shown in messages: numbers as they are, everything else with its type. */
function describe(value: unknown): string {
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  if (typeof value === "string") return `${JSON.stringify(value)} (string)`;
  if (typeof value === "boolean") return `${value} (boolean)`;
  if (value instanceof Date) return `${value.toISOString()} (date)`;
  if (Array.isArray(value)) return "an array";
  return "a table";
}

function formatDuration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms >= 1000 && ms % 1000 === 0) return `${ms / 1000} s`;
  return `${ms} ms`;
}
