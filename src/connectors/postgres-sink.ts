// PostgreSQL sink: exactly-once through prepared transactions (two-phase commit on checkpoints, as Flink's JDBC
// XA sink), or at-least-once with batches (typically an upsert: INSERT ... ON CONFLICT ... DO UPDATE).
//
// Exactly-once, per subtask: the rows between two barriers go into one transaction on the subtask's data
// connection; at the barrier of checkpoint n it is prepared (PREPARE TRANSACTION 'gid', gid naming job, sink,
// attempt, subtask and n) and the checkpoint is acknowledged only once the server confirmed that; when checkpoint n
// completes, every prepared transaction <= n of this subtask is committed (COMMIT PREPARED, on a second connection,
// since the data connection is already inside the next transaction). A restore settles the transactions older
// attempts left prepared: those the restored checkpoint covers are committed (their completion notice may have
// been lost), later ones rolled back (the job replays them). End of input prepares the last rows as the final
// transaction, committed once the JobManager confirms the attempt (SinkWriter.finalCommit). Connection loss fails the
// task: the restart restores the checkpoint and settles what was prepared.
import type postgres from "postgres";
import type { ConnectorSink, SinkWriter, SinkWriterContext } from "../api/connector.ts";
import { errorText, positiveIntOption, stringOption } from "./options.ts";
import { connectOrExplain, createClient, quoteIdent, quoteLiteral, resolveConnection, type PostgresConnectionOptions, type ResolvedConnection } from "./postgres-common.ts";

export interface PostgresSinkOptions<T> extends PostgresConnectionOptions {
  /** The statement run once per record, with $1, $2, ... bound to rowMapper(record). */
  statement: string;
  /** A record to the statement's parameters. */
  rowMapper: (record: T) => unknown[];
  /** Rows per batch sent to the server (default 1000). */
  batchSize?: number;
  /** A partly filled batch goes out after this many ms (default 200). */
  batchIntervalMs?: number;
}

/** The transaction id of the final transaction (end of input). */
const FINAL = Number.MAX_SAFE_INTEGER;
/** Batches in flight on the data connection before the task waits. */
const MAX_IN_FLIGHT = 4;

/** The prepared transaction id of a sink's subtask at a checkpoint: tm-<job>-<sink>-<attempt>-<subtask>-<checkpoint>. */
export function preparedId(jobId: string, sinkId: string, attempt: number, subtask: number, checkpointId: number): string {
  return `tm-${jobId}-${sinkId}-${attempt}-${subtask}-${checkpointId}`;
}

function parsePreparedId(gid: string, jobId: string, sinkId: string): { attempt: number; subtask: number; checkpointId: number } | null {
  const prefix = `tm-${jobId}-${sinkId}-`;
  if (!gid.startsWith(prefix)) return null;
  const m = /^(\d+)-(\d+)-(\d+)$/.exec(gid.slice(prefix.length));
  if (!m) return null;
  return { attempt: Number(m[1]), subtask: Number(m[2]), checkpointId: Number(m[3]) };
}

class PostgresSinkSpec<T> implements ConnectorSink {
  readonly connector = "postgres";
  readonly name: string;
  constructor(
    readonly opts: PostgresSinkOptions<T>,
    readonly exactlyOnce: boolean,
  ) {
    this.name = `PostgreSQL Sink (${exactlyOnce ? "exactly-once" : "at-least-once"})`;
  }
  createWriter(ctx: SinkWriterContext, sinkId: string): SinkWriter {
    return new PostgresSinkWriter(this.opts, this.exactlyOnce, ctx, sinkId);
  }
}

function checkOptions<T>(what: string, o: PostgresSinkOptions<T>): void {
  if (typeof o !== "object" || o === null) throw new Error(`${what}: expected options { url, statement, rowMapper, ... }`);
  stringOption(what, "statement", o.statement, true);
  if (typeof o.rowMapper !== "function") throw new Error(`${what}: option rowMapper must be a function (record) => [parameters of the statement]`);
  positiveIntOption(what, "batchSize", o.batchSize, 1000);
  positiveIntOption(what, "batchIntervalMs", o.batchIntervalMs, 200);
  resolveConnection(what, o);
}

export const PostgresSink = {
  /**
   * Exactly-once (needs checkpointing for output before the end of input, and the server setting
   * max_prepared_transactions > 0): rows become visible when the checkpoint after them completes.
   */
  exactlyOnceSink<T>(options: PostgresSinkOptions<T>): { kind: "connectorSink"; connector: ConnectorSink } {
    checkOptions("PostgresSink.exactlyOnceSink", options);
    return { kind: "connectorSink", connector: new PostgresSinkSpec(options, true) };
  },
  /** At-least-once: batches committed as they go (and at every checkpoint); make the statement idempotent (upsert). */
  sink<T>(options: PostgresSinkOptions<T>): { kind: "connectorSink"; connector: ConnectorSink } {
    checkOptions("PostgresSink.sink", options);
    return { kind: "connectorSink", connector: new PostgresSinkSpec(options, false) };
  },
  /** INSERT INTO table (columns) VALUES ($1..) ON CONFLICT (keyColumns) DO UPDATE SET the other columns. */
  upsertStatement(table: string, columns: string[], keyColumns: string[]): string {
    if (!Array.isArray(columns) || columns.length === 0 || !Array.isArray(keyColumns) || keyColumns.length === 0) {
      throw new Error("PostgresSink.upsertStatement: expected a table, its columns and the key columns");
    }
    for (const k of keyColumns) if (!columns.includes(k)) throw new Error(`PostgresSink.upsertStatement: key column ${JSON.stringify(k)} is not among the columns`);
    const rest = columns.filter((c) => !keyColumns.includes(c));
    const set = rest.length > 0 ? `DO UPDATE SET ${rest.map((c) => `${quoteIdent(c)} = EXCLUDED.${quoteIdent(c)}`).join(", ")}` : "DO NOTHING";
    return `INSERT INTO ${quoteIdent(table)} (${columns.map(quoteIdent).join(", ")}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(", ")}) ON CONFLICT (${keyColumns.map(quoteIdent).join(", ")}) ${set}`;
  },
};

class PostgresSinkWriter<T> implements SinkWriter {
  private readonly what: string;
  private readonly conn: ResolvedConnection;
  private readonly batchSize: number;
  private readonly batchIntervalMs: number;
  private sql: postgres.Sql | null = null;
  private data: postgres.ReservedSql | null = null;
  /** Work on the data connection, in order; rejected once something failed. */
  private chain: Promise<void> = Promise.resolve();
  private inFlight = 0;
  private error: unknown = null;
  private rows: unknown[][] = [];
  /** A transaction is open on the data connection (exactly-once), since the last prepare. */
  private txnOpen = false;
  /** Prepared transactions of this attempt not yet committed: checkpoint id, gid, and the prepare itself. */
  private prepared: { checkpointId: number; gid: string; done: Promise<void> }[] = [];
  private timer: ReturnType<typeof setInterval> | null = null;
  private ended = false;
  /** The statement as one INSERT per batch over unnest(arrays), when it has the plain shape (else per-row). */
  private plan: BatchPlan | null = null;

  constructor(
    private readonly opts: PostgresSinkOptions<T>,
    private readonly exactlyOnce: boolean,
    private readonly ctx: SinkWriterContext,
    private readonly sinkId: string,
  ) {
    this.what = `PostgresSink (subtask ${ctx.subtaskIndex + 1}/${ctx.parallelism})`;
    this.conn = resolveConnection(this.what, opts);
    this.batchSize = positiveIntOption(this.what, "batchSize", opts.batchSize, 1000);
    this.batchIntervalMs = positiveIntOption(this.what, "batchIntervalMs", opts.batchIntervalMs, 200);
    if (!/^[\w.]+$/.test(sinkId)) throw new Error(`${this.what}: the operator's uid ${JSON.stringify(sinkId)} must be letters, digits, '_' or '.' (it names prepared transactions)`);
  }

  async open(): Promise<void> {
    const sql = (this.sql = createClient(this.conn, 2));
    const [row] = await connectOrExplain(this.what, this.conn, () => sql`SELECT current_setting('max_prepared_transactions')::int AS m, current_database() AS db`);
    if (this.exactlyOnce) {
      if (!(row!.m > 0)) {
        throw new Error(
          `${this.what}: exactly-once needs prepared transactions, but the server at ${this.conn.host}:${this.conn.port} has max_prepared_transactions = ${row!.m}; set max_prepared_transactions (> 0, at least the sink's parallelism) in postgresql.conf and restart it, or use PostgresSink.sink() (at-least-once)`,
        );
      }
      await this.recover();
    }
    this.plan = await planBatch(sql, this.opts.statement);
    this.data = await sql.reserve();
    // A partly filled batch goes out after batchIntervalMs (errors surface at the next waitReady or checkpoint).
    this.timer = setInterval(() => {
      if (this.rows.length > 0 && this.inFlight === 0) this.flushRows();
    }, this.batchIntervalMs);
  }

  /**
   * Settles the prepared transactions of older attempts of this job and sink whose old subtask maps to this one
   * (old % parallelism === subtask): committed when the restored checkpoint covers them, rolled back otherwise.
   */
  private async recover(): Promise<void> {
    const sql = this.sql!;
    const { jobId, attempt, parallelism, subtaskIndex, restoredCheckpointId } = this.ctx;
    const rows = await sql`SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE ${`tm-${jobId}-${this.sinkId}-%`}`;
    for (const { gid } of rows) {
      const p = parsePreparedId(gid, jobId, this.sinkId);
      if (!p || p.attempt >= attempt || p.subtask % parallelism !== subtaskIndex) continue;
      const commit = p.checkpointId <= restoredCheckpointId;
      try {
        await sql.unsafe(`${commit ? "COMMIT" : "ROLLBACK"} PREPARED ${quoteLiteral(gid)}`);
      } catch (err) {
        // Another subtask's recovery cannot own it (the mapping is a partition), so it vanished: settled already.
        if ((err as { code?: string }).code !== "42704") throw new Error(`${this.what}: cannot ${commit ? "commit" : "roll back"} prepared transaction ${gid}: ${errorText(err)}`, { cause: err });
      }
    }
  }

  process(record: unknown): void {
    const params = this.opts.rowMapper(record as T);
    if (!Array.isArray(params)) throw new Error(`${this.what}: rowMapper returned ${params === null ? "null" : typeof params}, expected an array of statement parameters`);
    this.rows.push(params);
    if (this.rows.length >= this.batchSize) this.flushRows();
  }

  waitReady(): Promise<void> | null {
    if (this.error !== null) return Promise.reject(this.failure());
    return this.inFlight >= MAX_IN_FLIGHT ? this.chain : null;
  }

  private failure(): Error {
    return new Error(`${this.what}: writing to PostgreSQL at ${this.conn.host}:${this.conn.port} failed: ${errorText(this.error)}`, { cause: this.error });
  }

  /** Queues work on the data connection after what is queued already. */
  private enqueue(work: (data: postgres.ReservedSql) => Promise<unknown>): Promise<void> {
    this.inFlight++;
    const next = this.chain.then(async () => {
      try {
        await work(this.data!);
      } finally {
        this.inFlight--;
      }
    });
    next.catch((err) => {
      this.error ??= err;
    });
    this.chain = next;
    return next;
  }

  /** Sends the buffered rows: into the open transaction (exactly-once) or as one committed batch. */
  private flushRows(): void {
    if (this.rows.length === 0) return;
    const rows = this.rows;
    this.rows = [];
    const statement = this.opts.statement;
    const begin = this.exactlyOnce ? !this.txnOpen : true;
    this.txnOpen = this.exactlyOnce;
    const commit = !this.exactlyOnce;
    this.enqueue(async (data) => {
      // Pipelined: every statement goes out before the first reply is awaited.
      const all: Promise<unknown>[] = [];
      if (begin) all.push(data.unsafe("BEGIN"));
      const plan = this.plan;
      if (plan) for (const group of batchGroups(plan, rows)) all.push(data.unsafe(plan.sql, group as postgres.ParameterOrJSON<never>[], { prepare: true }));
      else for (const params of rows) all.push(data.unsafe(statement, params as postgres.ParameterOrJSON<never>[], { prepare: true }));
      if (commit) all.push(data.unsafe("COMMIT"));
      const results = await Promise.allSettled(all);
      const bad = results.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
      if (bad) throw bad.reason;
    });
  }

  /** The barrier of checkpoint n: exactly-once prepares the open transaction; the acknowledgement waits for it. */
  snapshotState(checkpointId: number): Promise<void> {
    if (this.error !== null) return Promise.reject(this.failure());
    this.flushRows();
    if (this.exactlyOnce && this.txnOpen) this.prepare(checkpointId);
    return this.chain;
  }

  private prepare(checkpointId: number): void {
    const { jobId, attempt, subtaskIndex } = this.ctx;
    const gid = preparedId(jobId, this.sinkId, attempt, subtaskIndex, checkpointId);
    this.txnOpen = false;
    const done = this.enqueue((data) => data.unsafe(`PREPARE TRANSACTION ${quoteLiteral(gid)}`));
    this.prepared.push({ checkpointId, gid, done });
  }

  /** Checkpoint n completed: commits the prepared transactions <= n (on the second connection). */
  async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    if (!this.exactlyOnce) return;
    await this.commitUpTo(checkpointId);
  }

  private async commitUpTo(checkpointId: number): Promise<void> {
    const due = this.prepared.filter((p) => p.checkpointId <= checkpointId);
    if (due.length === 0) return;
    this.prepared = this.prepared.filter((p) => p.checkpointId > checkpointId);
    for (const p of due) {
      await p.done;
      try {
        await this.sql!.unsafe(`COMMIT PREPARED ${quoteLiteral(p.gid)}`);
      } catch (err) {
        throw new Error(`${this.what}: cannot commit prepared transaction ${p.gid}: ${errorText(err)}`, { cause: err });
      }
    }
  }

  /** End of input: the rest is prepared as the final transaction, or (FLIP-147) by the final checkpoint's barrier. */
  async endInput(): Promise<void> {
    this.ended = true;
    this.flushRows();
    if (this.exactlyOnce && this.txnOpen && this.ctx.finalCheckpoint !== true) this.prepare(FINAL);
    await this.chain.catch(() => {});
    if (this.error !== null) throw this.failure();
  }

  /** Anything left uncommitted after end of input (without a final checkpoint that committed it). */
  hasFinalCommit(): boolean {
    return this.exactlyOnce && this.ended && (this.prepared.length > 0 || this.txnOpen);
  }

  async finalCommit(): Promise<void> {
    // A final checkpoint that never completed: what is still open is the final transaction.
    if (this.txnOpen) this.prepare(FINAL);
    await this.commitUpTo(FINAL);
  }

  dispose(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const sql = this.sql;
    this.sql = null;
    this.data?.release();
    this.data = null;
    // An open (not prepared) transaction is rolled back by the server when the connection closes.
    void sql?.end({ timeout: 1 }).catch(() => {});
  }
}

// ---------------------------------------------------------------- batching

/**
 * A statement `INSERT INTO t (c1, ..., cn) VALUES ($1, ..., $n) [ON CONFLICT (keys) DO ...]` runs as one
 * `INSERT INTO t (c1, ..., cn) SELECT * FROM unnest($1::type1[], ..., $n::typen[]) [ON CONFLICT ...]` per batch
 * (about 8x the rows/s of one statement per row). Rows with the same conflict key go into successive statements,
 * in order, since one statement may not update a row twice; anything else keeps one statement per row.
 */
interface BatchPlan {
  sql: string;
  columns: number;
  /** Positions of the conflict target's columns (null: no ON CONFLICT). */
  keys: number[] | null;
}

const INSERT_RE = /^\s*INSERT\s+INTO\s+((?:"(?:[^"]|"")+"|[\w$]+)(?:\.(?:"(?:[^"]|"")+"|[\w$]+))?)\s*\(([^()]*)\)\s*VALUES\s*\(([^()]*)\)\s*(.*?)\s*;?\s*$/is;

function unquoteName(n: string): string {
  const t = n.trim();
  return t.startsWith('"') ? t.slice(1, -1).replace(/""/g, '"') : t.toLowerCase();
}

export async function planBatch(sql: postgres.Sql, statement: string): Promise<BatchPlan | null> {
  const m = INSERT_RE.exec(statement);
  if (!m) return null;
  const [, table, colList, valueList, rest] = m as unknown as [string, string, string, string, string];
  const columns = colList.split(",").map(unquoteName);
  const values = valueList.split(",").map((v) => v.trim());
  if (values.length !== columns.length || !values.every((v, i) => v === `$${i + 1}`)) return null;
  let keys: number[] | null = null;
  if (rest.length > 0) {
    const c = /^ON\s+CONFLICT\s*\(([^()]*)\)\s*DO\s/is.exec(rest);
    if (!c) return null;
    keys = c[1]!.split(",").map(unquoteName).map((k) => columns.indexOf(k));
    if (keys.some((k) => k < 0)) return null;
  }
  const types = await sql`
    SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a
    WHERE a.attrelid = to_regclass(${table}) AND a.attnum > 0 AND NOT a.attisdropped`.catch(() => []);
  const typeOf = new Map(types.map((r) => [r.name as string, r.type as string]));
  if (!columns.every((c) => typeOf.has(c))) return null;
  const arrays = columns.map((c, i) => `$${i + 1}::${typeOf.get(c)}[]`).join(", ");
  return { sql: `INSERT INTO ${table} (${colList}) SELECT * FROM unnest(${arrays}) ${rest}`, columns: columns.length, keys };
}

/** The rows as column arrays, split where a conflict key repeats (and at 10,000 rows). */
function batchGroups(plan: BatchPlan, rows: unknown[][]): unknown[][][] {
  const out: unknown[][][] = [];
  let cols: unknown[][] = [];
  let seen = new Set<string>();
  let n = 0;
  const flush = () => {
    if (n > 0) out.push(cols);
    cols = Array.from({ length: plan.columns }, () => []);
    seen = new Set();
    n = 0;
  };
  flush();
  for (const row of rows) {
    if (row.length !== plan.columns) throw new Error(`rowMapper returned ${row.length} parameters, the statement takes ${plan.columns}`);
    if (plan.keys) {
      const key = JSON.stringify(plan.keys.map((k) => row[k]));
      if (seen.has(key) || n >= 10_000) flush();
      seen.add(key);
    } else if (n >= 10_000) flush();
    for (let c = 0; c < plan.columns; c++) cols[c]!.push(row[c]);
    n++;
  }
  flush();
  return out;
}
