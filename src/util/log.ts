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

export function createLogger(component: string): Logger {
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < threshold) return;
    process.stderr.write(formatLine(level, component, msg, fields) + "\n");
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
  };
}
