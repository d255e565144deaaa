// A minimal Kysely dialect over the synchronous SqliteDriver, for Kysely's own async uses (the Migrator,
// introspection). The backend's hot path does not go through it: it compiles queries once and runs them on
// the driver directly.
import {
  CompiledQuery,
  SelectQueryNode,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
} from "kysely";
import type { SqliteDriver, SqlValue } from "./sqlite-driver.ts";

const READER = /^\s*(select|pragma|with|values|explain)\b/i;
const RETURNING = /\breturning\b/i;

class SyncSqliteConnection implements DatabaseConnection {
  constructor(private readonly driver: SqliteDriver) {}

  executeQuery<R>(q: CompiledQuery): Promise<QueryResult<R>> {
    try {
      const stmt = this.driver.prepare(q.sql);
      const params = q.parameters as readonly SqlValue[];
      if (SelectQueryNode.is(q.query) || READER.test(q.sql) || RETURNING.test(q.sql)) {
        return Promise.resolve({ rows: stmt.all(params) as R[] });
      }
      const { changes, lastInsertRowid } = stmt.run(params);
      return Promise.resolve({ rows: [], numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid) });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async *streamQuery<R>(q: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const { rows } = await this.executeQuery<R>(q);
    for (const row of rows) yield { rows: [row] };
  }
}

class SyncSqliteKyselyDriver implements Driver {
  private readonly connection: SyncSqliteConnection;
  private lock: Promise<void> = Promise.resolve();
  private release: (() => void) | undefined;

  constructor(driver: SqliteDriver) {
    this.connection = new SyncSqliteConnection(driver);
  }
  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    // One connection: callers queue until the previous one released it.
    const prev = this.lock;
    let release!: () => void;
    this.lock = new Promise<void>((r) => (release = r));
    await prev;
    this.release = release;
    return this.connection;
  }
  async beginTransaction(c: DatabaseConnection): Promise<void> {
    await c.executeQuery(CompiledQuery.raw("begin"));
  }
  async commitTransaction(c: DatabaseConnection): Promise<void> {
    await c.executeQuery(CompiledQuery.raw("commit"));
  }
  async rollbackTransaction(c: DatabaseConnection): Promise<void> {
    await c.executeQuery(CompiledQuery.raw("rollback"));
  }
  async releaseConnection(): Promise<void> {
    const r = this.release;
    this.release = undefined;
    r?.();
  }
  /** The SqliteDriver belongs to the caller, who closes it. */
  async destroy(): Promise<void> {}
}

export class SyncSqliteDialect implements Dialect {
  constructor(private readonly driver: SqliteDriver) {}
  createAdapter(): DialectAdapter {
    return new SqliteAdapter();
  }
  createDriver(): Driver {
    return new SyncSqliteKyselyDriver(this.driver);
  }
  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}
