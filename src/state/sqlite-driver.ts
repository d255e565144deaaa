// A small synchronous SQLite interface with two implementations: bun:sqlite under Bun, node:sqlite
// (DatabaseSync) under Deno (and Node). The state backend's hot path and the Kysely dialect both run on it.
import type { Database as BunDatabase, Statement as BunStatement } from "bun:sqlite";
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { loadedSqliteModule, loadSqliteModule } from "../runtime-env/sqlite.ts";

export type SqlValue = number | bigint | string | Uint8Array | null;
export type SqlRow = Record<string, unknown>;

export interface SqliteStatement {
  run(params?: readonly SqlValue[]): { changes: number | bigint; lastInsertRowid: number | bigint };
  /** The first row, or undefined. */
  get(params?: readonly SqlValue[]): SqlRow | undefined;
  all(params?: readonly SqlValue[]): SqlRow[];
}

export interface SqliteDriver {
  readonly path: string;
  readonly implementation: "bun:sqlite" | "node:sqlite";
  exec(sql: string): void;
  /** A prepared statement; the same SQL gives the same (cached) statement. */
  prepare(sql: string): SqliteStatement;
  close(): void;
}

const NO_PARAMS: readonly SqlValue[] = [];

class BunStatementAdapter implements SqliteStatement {
  constructor(private readonly s: BunStatement) {}
  run(p: readonly SqlValue[] = NO_PARAMS) {
    return this.s.run(...(p as SqlValue[]));
  }
  get(p: readonly SqlValue[] = NO_PARAMS): SqlRow | undefined {
    return (this.s.get(...(p as SqlValue[])) as SqlRow | null) ?? undefined;
  }
  all(p: readonly SqlValue[] = NO_PARAMS): SqlRow[] {
    return this.s.all(...(p as SqlValue[])) as SqlRow[];
  }
}

class BunDriver implements SqliteDriver {
  readonly implementation = "bun:sqlite" as const;
  private readonly stmts = new Map<string, SqliteStatement>();
  constructor(readonly path: string, private readonly db: BunDatabase) {}
  exec(sql: string): void {
    this.db.exec(sql);
  }
  prepare(sql: string): SqliteStatement {
    let s = this.stmts.get(sql);
    if (s === undefined) this.stmts.set(sql, (s = new BunStatementAdapter(this.db.query(sql))));
    return s;
  }
  close(): void {
    this.stmts.clear();
    this.db.close(false);
  }
}

class NodeStatementAdapter implements SqliteStatement {
  constructor(private readonly s: StatementSync) {}
  run(p: readonly SqlValue[] = NO_PARAMS) {
    return this.s.run(...(p as SqlValue[]));
  }
  get(p: readonly SqlValue[] = NO_PARAMS): SqlRow | undefined {
    return this.s.get(...(p as SqlValue[])) as SqlRow | undefined;
  }
  all(p: readonly SqlValue[] = NO_PARAMS): SqlRow[] {
    return this.s.all(...(p as SqlValue[])) as SqlRow[];
  }
}

class NodeDriver implements SqliteDriver {
  readonly implementation = "node:sqlite" as const;
  private readonly stmts = new Map<string, SqliteStatement>();
  constructor(readonly path: string, private readonly db: DatabaseSync) {}
  exec(sql: string): void {
    this.db.exec(sql);
  }
  prepare(sql: string): SqliteStatement {
    let s = this.stmts.get(sql);
    if (s === undefined) this.stmts.set(sql, (s = new NodeStatementAdapter(this.db.prepare(sql))));
    return s;
  }
  close(): void {
    this.stmts.clear();
    this.db.close();
  }
}

/** Loads the SQLite module of this runtime (bun:sqlite under Bun, node:sqlite elsewhere: src/runtime-env/sqlite.ts). */
export async function loadSqlite(): Promise<void> {
  await loadSqliteModule();
}

/** Opens (creating unless `readonly`) a database file with bun:sqlite under Bun, node:sqlite elsewhere. */
export async function openSqliteDriver(path: string, opts: { readonly?: boolean } = {}): Promise<SqliteDriver> {
  await loadSqlite();
  return openSqliteDriverSync(path, opts);
}

/** openSqliteDriver, synchronously, once loadSqlite() has completed. */
export function openSqliteDriverSync(path: string, opts: { readonly?: boolean } = {}): SqliteDriver {
  const sqlite = loadedSqliteModule();
  if (sqlite?.kind === "bun:sqlite") {
    const { Database } = sqlite.module;
    const db = opts.readonly ? new Database(path, { readonly: true }) : new Database(path, { create: true, readwrite: true });
    return new BunDriver(path, db);
  }
  if (sqlite?.kind === "node:sqlite") return new NodeDriver(path, new sqlite.module.DatabaseSync(path, { readOnly: opts.readonly ?? false }));
  throw new Error("internal: loadSqlite() has not completed");
}
