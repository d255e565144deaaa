// Leveled logging, one line per event, on stderr (stdout belongs to job output such as print sinks).
// Text by default; `log.format = "json"` writes one JSON object per line (ts, level, component, msg, fields).
export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold: number = ORDER.info;
let format: LogFormat = "text";

export function setLogLevel(level: LogLevel): void {
  threshold = ORDER[level];
}

export function setLogFormat(f: LogFormat): void {
  format = f;
}

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/** One log line (without the newline) in the current format. */
export function formatLine(level: LogLevel, component: string, msg: string, fields?: Record<string, unknown>, now = new Date()): string {
  if (format === "json") {
    const obj: Record<string, unknown> = { ts: now.toISOString(), level, component, msg };
    if (fields) for (const [k, v] of Object.entries(fields)) if (!(k in obj)) obj[k] = v instanceof Error ? v.message : v;
    try {
      return JSON.stringify(obj);
    } catch {
      return JSON.stringify({ ts: obj.ts, level, component, msg, fields: String(fields) });
    }
  }
  let line = `${now.toISOString()} ${level.toUpperCase().padEnd(5)} [${component}] ${msg}`;
  if (fields) for (const [k, v] of Object.entries(fields)) line += ` ${k}=${typeof v === "string" ? v : JSON.stringify(v)}`;
  return line;
}

// The most recent lines this process wrote, for the REST API (/jobmanager/logs, /taskmanagers/<id>/logs): bounded
// in lines and in characters per line, so a flood of log lines costs at most RING_LINES * RING_LINE_CHARS.
const RING_LINES = 500;
const RING_LINE_CHARS = 2000;
const ring: string[] = [];
let ringNext = 0;

function remember(line: string): void {
  const l = line.length > RING_LINE_CHARS ? line.slice(0, RING_LINE_CHARS) + "…" : line;
  if (ring.length < RING_LINES) ring.push(l);
  else ring[ringNext] = l;
  ringNext = (ringNext + 1) % RING_LINES;
}

/** The last lines written by this process's loggers (at most 500), oldest first; `max` keeps the newest max. */
export function recentLogLines(max = RING_LINES): string[] {
  const ordered = ring.length < RING_LINES ? ring.slice() : [...ring.slice(ringNext), ...ring.slice(0, ringNext)];
  return ordered.slice(Math.max(0, ordered.length - max));
}

export function createLogger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    const line = formatLine(level, component, msg, fields);
    remember(line);
    process.stderr.write(line + "\n");
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}
