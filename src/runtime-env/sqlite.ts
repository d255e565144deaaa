// The synchronous SQLite module of this runtime: bun:sqlite under Bun, node:sqlite (DatabaseSync) under Deno and
// node. src/state/sqlite-driver.ts wraps either in one interface.
import { bun } from "./index.ts";

export type SqliteModule = { kind: "bun:sqlite"; module: typeof import("bun:sqlite") } | { kind: "node:sqlite"; module: typeof import("node:sqlite") };

let loaded: SqliteModule | undefined;

/** Loads (once) and returns this runtime's SQLite module. */
export async function loadSqliteModule(): Promise<SqliteModule> {
  loaded ??= bun !== undefined ? { kind: "bun:sqlite", module: await import("bun:sqlite") } : { kind: "node:sqlite", module: await import("node:sqlite") };
  return loaded;
}

/** The module loadSqliteModule() returned, or undefined before it has completed. */
export function loadedSqliteModule(): SqliteModule | undefined {
  return loaded;
}
