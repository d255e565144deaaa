// PostgreSQL change-data-capture source: a consistent snapshot of the chosen tables, then their changes streamed
// from a logical replication slot (plugin pgoutput, decoded here), exactly once across failures.
//
// How it stays exact (without snapshotSplitSize: one split, read by one subtask at parallelism 1):
// - First start (no checkpoint): the publication is created (if missing) and the slot is created
//   (pg_create_logical_replication_slot) BEFORE the snapshot is taken, so every transaction the snapshot does not
//   see commits after the slot's consistent point and is decoded from the slot.
// - The snapshot is a REPEATABLE READ transaction on a normal connection; its MVCC snapshot (pg_current_snapshot():
//   xmin, xmax, in-progress xids) is kept in the split. The tables are read in primary-key order in chunks
//   (keyset pagination); the split's position is (table, last key read).
// - Streaming: a replication connection (START_REPLICATION ... LOGICAL, proto_version 1) delivers whole committed
//   transactions in commit order. A change is emitted unless its transaction is visible in the snapshot that
//   read its row (PostgreSQL's own visibility rule on the transaction id): the hand-off has neither gap nor
//   overlap, without any timing assumption. Once the stream passes the WAL position the snapshot was taken at,
//   every later transaction is invisible to it and the filter is dropped from the split.
// - The split's stream position is the end LSN of the last transaction emitted; it goes into each checkpoint.
//   The slot is confirmed (standby status update, flush = that LSN) only when the checkpoint completes, so the
//   server keeps everything after the last completed checkpoint. A restore starts the stream at the restored LSN
//   and skips every transaction ending at or below it: each change is emitted exactly once per restored history.
// - A failure in the middle of the snapshot: the exported-snapshot transaction is gone, so the restore takes a new
//   snapshot for the rest (keys after the restored position, and the later tables) and records it as a second
//   segment; the stream filters each change by the snapshot of the segment its key belongs to (keys compared in
//   the order the snapshot read them: integers numerically, text in byte order (COLLATE "C"), uuid and date as text).
//
// Parallel snapshot (option snapshotSplitSize, as Flink CDC's incremental snapshot): the source runs at the job's
// parallelism. Subtask 0 creates the slot, then cuts every table into primary-key ranges of about that many rows
// (range splits, ids 1..m) and publishes the plan in a coordination table (tm_cdc_splits); split 0 is the stream.
// Range splits go to subtasks by id % parallelism; each is read in its own REPEATABLE READ transaction whose MVCC
// snapshot is recorded in tm_cdc_segments (a split resumed after a restore records a new one for its rest; the
// newest segment of a split whose start is below a key is the one that read it). A range split done in a
// checkpoint that completed is marked so in tm_cdc_splits. The stream split (subtask 0) waits until every range
// split is marked, so that no restore can bring back an unfinished range once the stream has emitted anything;
// it then loads the segments and filters each change by the snapshot of the range (and segment) its key is in.
// These tables live in the schema of option coordinationSchema (default public) and need CREATE there.
import type postgres from "postgres";
import type { Source } from "../api/environment.ts";
import type { ConnectorSource, ConnectorSourceReader, ConnectorSplit, SourceReaderContext } from "../api/connector.ts";
import { delay, errorText, positiveIntOption, stringOption, waitForData } from "./options.ts";
import { connectOrExplain, createClient, quoteIdent, quoteLiteral, resolveConnection, type PostgresConnectionOptions, type ResolvedConnection } from "./postgres-common.ts";

const CONNECTOR = "postgres-cdc";

export interface PostgresCdcSourceOptions extends PostgresConnectionOptions {
  /** Tables to capture ("name" or "schema.name"); each needs a primary key. */
  tables: string[];
  /** The replication slot (created by the source; [a-z0-9_]). A job started without a checkpoint drops a leftover slot of this name. */
  slot: string;
  /** The publication (created for the tables when missing; default: the slot's name). */
  publication?: string;
  /**
   * true (default): the tables are set to REPLICA IDENTITY FULL, so updates and deletes carry every old value in
   * `before`; false: the table's replica identity is left alone (DEFAULT: deletes carry the key columns only,
   * updates a `before` only when the key changed).
   */
  fullBeforeValues?: boolean;
  /** Rows per snapshot query (default 5000). */
  snapshotChunkSize?: number;
  /**
   * Set: parallel snapshot. Each table is cut into primary-key ranges of about this many rows, read by the
   * source's subtasks in parallel (the source runs at the job's parallelism; the stream starts once a completed
   * checkpoint holds every range done, so checkpointing must be enabled). Unset: one subtask reads everything.
   */
  snapshotSplitSize?: number;
  /** Schema of the coordination tables tm_cdc_splits and tm_cdc_segments (parallel snapshot only; default public). */
  coordinationSchema?: string;
}

/** A row: column name to value (int2/int4/float4/float8/oid as numbers, int8/numeric as strings, bool, json parsed, others as PostgreSQL's text). */
export type PostgresRow = Record<string, unknown>;

/**
 * One change. Snapshot rows are op "read" (after only); "insert" has after; "update" has after and, with
 * REPLICA IDENTITY FULL, before; "delete" has before (all columns with FULL, the key columns otherwise);
 * "truncate" has neither. lsn is the commit LSN of the transaction ("X/Y", null for snapshot rows), commitTime
 * its commit time in ms since the epoch (null for snapshot rows).
 */
export interface PostgresCdcRecord {
  op: "read" | "insert" | "update" | "delete" | "truncate";
  table: string;
  before: PostgresRow | null;
  after: PostgresRow | null;
  lsn: string | null;
  commitTime: number | null;
}

/** The MVCC snapshot a part of the tables was read with (xids as 32-bit, as the WAL has them). */
interface Segment {
  /** Where it starts: rows of tables after `table`, and of `table` with key > after (null: the whole table). */
  table: number;
  after: string[] | null;
  xmin: number;
  xmax: number;
  xip: number[];
  /** The WAL insert position when it was taken: transactions committing at or after it are not visible to it. */
  until: string;
}

type CdcSplit = ConnectorSplit & {
  slot: string;
  tables: string[];
  /** "wait": parallel snapshot, the stream split waiting for every range split to be done in a completed checkpoint. */
  phase: "snapshot" | "stream" | "wait";
  /** Parallel snapshot: the plan's name in the coordination tables, the number of range splits, and whether the stream still filters by their snapshots. */
  epoch?: string;
  ranges?: number;
  filtering?: boolean;
  /** Snapshot: the table being read and the last key read in it (text values). */
  table: number;
  after: string[] | null;
  segments: Segment[];
  /** Stream: the end LSN of the last transaction emitted (null: none yet, the slot's own start). */
  lsn: string | null;
};

/** Parallel snapshot: the rows of table `table` with lo < key <= hi (null: unbounded), read up to `after`. */
type RangeSplit = ConnectorSplit & {
  kind: "range";
  slot: string;
  epoch: string;
  table: number;
  lo: string[] | null;
  hi: string[] | null;
  after: string[] | null;
  done: boolean;
};

/** A range's MVCC snapshot (from tm_cdc_segments): it read the keys after `start` (null: from the range's start). */
interface RangeSegment {
  start: string[] | null;
  xmin: number;
  xmax: number;
  xip: number[];
}
interface RangeFilter {
  lo: string[] | null;
  hi: string[] | null;
  /** Newest first. */
  segments: RangeSegment[];
}

interface Column {
  name: string;
  type: number;
  sqlType: string;
}
interface TableInfo {
  qualified: string;
  columns: Column[];
  keys: Column[];
  replident: string;
}

// ---------------------------------------------------------------- values and LSNs

export function parseLsn(s: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(s);
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(s)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(v: bigint): string {
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

function parseValue(type: number, text: string): unknown {
  switch (type) {
    case 21: // int2
    case 23: // int4
    case 26: // oid
    case 700: // float4
    case 701: // float8
      return Number(text);
    case 16:
      return text === "t";
    case 114:
    case 3802:
      return JSON.parse(text);
    default:
      return text;
  }
}

const INT_TYPES = new Set([20, 21, 23, 26]);
const TEXT_TYPES = new Set([25, 1043, 1042, 19]);
const PLAIN_TYPES = new Set([2950, 1082]); // uuid, date: their text sorts as the values do
const utf8 = new TextEncoder();

function compareKey(keys: Column[], a: string[], b: string[]): number {
  for (let i = 0; i < keys.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    let c: number;
    if (INT_TYPES.has(keys[i]!.type)) {
      const bx = BigInt(x);
      const by = BigInt(y);
      c = bx < by ? -1 : bx > by ? 1 : 0;
    } else if (TEXT_TYPES.has(keys[i]!.type)) c = Buffer.compare(utf8.encode(x), utf8.encode(y));
    else c = x < y ? -1 : x > y ? 1 : 0;
    if (c !== 0) return c;
  }
  return 0;
}

/** a precedes b in the circular 32-bit xid space (TransactionIdPrecedes). */
function xidPrecedes(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

function visibleIn(s: { xmin: number; xmax: number; xip: number[] }, xid: number): boolean {
  if (xidPrecedes(xid, s.xmin)) return true;
  return xidPrecedes(xid, s.xmax) && !s.xip.includes(xid);
}

// ---------------------------------------------------------------- pgoutput

interface Relation {
  table: number; // index in the source's tables, -1 for a table not captured
  qualified: string;
  columns: { name: string; type: number }[];
}
interface Tuple {
  text: (string | null | undefined)[]; // undefined: an unchanged TOASTed value
}
interface Change {
  rel: Relation;
  op: "insert" | "update" | "delete" | "truncate";
  old: Tuple | null;
  oldIsKeyOnly: boolean;
  new: Tuple | null;
}
interface Txn {
  xid: number;
  finalLsn: bigint;
  endLsn: bigint;
  commitTime: number;
  changes: Change[];
}

const decoder = new TextDecoder();
/** Microseconds between the Unix epoch and PostgreSQL's (2000-01-01). */
const PG_EPOCH_US = 946_684_800_000_000n;

class Cursor {
  pos: number;
  constructor(
    readonly b: Buffer,
    start: number,
  ) {
    this.pos = start;
  }
  u8(): number {
    return this.b[this.pos++]!;
  }
  i16(): number {
    const v = this.b.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  i32(): number {
    const v = this.b.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u32(): number {
    const v = this.b.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.b.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  str(): string {
    const end = this.b.indexOf(0, this.pos);
    const s = decoder.decode(this.b.subarray(this.pos, end));
    this.pos = end + 1;
    return s;
  }
  tuple(): Tuple {
    const n = this.i16();
    const text: (string | null | undefined)[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const kind = this.u8();
      if (kind === 0x6e) text[i] = null; // 'n'
      else if (kind === 0x75) text[i] = undefined; // 'u'
      else if (kind === 0x74 || kind === 0x62) {
        const len = this.i32();
        text[i] = decoder.decode(this.b.subarray(this.pos, this.pos + len));
        this.pos += len;
      } else throw new Error(`unknown tuple data kind ${kind}`);
    }
    return { text };
  }
}

// ---------------------------------------------------------------- the source

class PostgresCdcSourceImpl implements ConnectorSource {
  readonly connector = CONNECTOR;
  constructor(readonly opts: PostgresCdcSourceOptions) {}
  createReader(ctx: SourceReaderContext): ConnectorSourceReader {
    return new CdcReader(this.opts, ctx);
  }
}

const NAME_RE = /^[a-z0-9_]{1,63}$/;

export const PostgresCdcSource = {
  /** The tables' snapshot, then their changes: env.fromSource(PostgresCdcSource.source({ url, tables, slot })). Runs at parallelism 1. */
  source(options: PostgresCdcSourceOptions): Source<PostgresCdcRecord> {
    const what = "PostgresCdcSource.source";
    if (typeof options !== "object" || options === null) throw new Error(`${what}: expected options { url, tables, slot, ... }`);
    if (!Array.isArray(options.tables) || options.tables.length === 0 || !options.tables.every((t) => typeof t === "string" && t.length > 0)) {
      throw new Error(`${what}: option tables must be a non-empty list of table names, got ${JSON.stringify(options.tables)}`);
    }
    stringOption(what, "slot", options.slot, true);
    if (!NAME_RE.test(options.slot)) throw new Error(`${what}: option slot must be lower-case letters, digits and '_' (at most 63), got ${JSON.stringify(options.slot)}`);
    if (options.publication !== undefined && (typeof options.publication !== "string" || !NAME_RE.test(options.publication))) {
      throw new Error(`${what}: option publication must be lower-case letters, digits and '_' (at most 63), got ${JSON.stringify(options.publication)}`);
    }
    if (options.fullBeforeValues !== undefined && typeof options.fullBeforeValues !== "boolean") throw new Error(`${what}: option fullBeforeValues must be true or false`);
    positiveIntOption(what, "snapshotChunkSize", options.snapshotChunkSize, 5000);
    if (options.snapshotSplitSize !== undefined) positiveIntOption(what, "snapshotSplitSize", options.snapshotSplitSize, 1);
    if (options.coordinationSchema !== undefined) stringOption(what, "coordinationSchema", options.coordinationSchema, true);
    resolveConnection(what, options);
    // Without range splits one subtask reads everything (the slot is one stream).
    const parallel = options.snapshotSplitSize !== undefined;
    return { kind: "source", spec: { type: "connector", connector: new PostgresCdcSourceImpl(options) }, name: `PostgreSQL CDC Source (${options.slot})`, nonParallel: !parallel };
  },
};

/** Records per chunk from the stream (whole transactions; one large transaction may exceed it). */
const CHUNK = 2048;
/** Decoded changes buffered before the replication stream is paused. */
const QUEUE_HIGH = 65_536;
const POLL_WAIT_MS = 100;
const STATUS_INTERVAL_MS = 5000;
const SLOT_BUSY_WAIT_MS = 15_000;
const SLOT_CREATE_TIMEOUT_MS = 30_000;
/** How long a subtask waits for subtask 0 to publish the parallel snapshot's plan. */
const PLAN_WAIT_MS = 90_000;
/** How often the stream split looks whether every range split is done. */
const RANGES_CHECK_MS = 200;

class CdcReader implements ConnectorSourceReader {
  private readonly what: string;
  private readonly conn: ResolvedConnection;
  private readonly publication: string;
  private readonly chunkSize: number;
  private sql: postgres.Sql | null = null;
  private snap: postgres.ReservedSql | null = null;
  private repl: postgres.Sql | null = null;
  private stream: import("node:stream").Duplex | null = null;
  private tables: TableInfo[] = [];
  private byName = new Map<string, number>();
  private split!: CdcSplit;
  private relations = new Map<number, Relation>();
  private cur: Txn | null = null;
  private ready: Txn[] = [];
  private readyChanges = 0;
  private paused = false;
  private wake: (() => void) | null = null;
  private error: Error | null = null;
  private closing = false;
  private statusTimer: ReturnType<typeof setInterval> | null = null;
  /** The position each checkpoint covers, until it completes. */
  private checkpoints = new Map<number, string | null>();
  /** The LSN confirmed to the slot (completed checkpoints only). */
  private confirmed = 0n;
  /** The stream position as a number (the split's lsn). */
  private position = 0n;
  private maxUntil = 0n;
  /** The WAL end of a keepalive that came when nothing received was left untaken. */
  private idleLsn = 0n;
  /** Parallel snapshot: this subtask's range splits, the one being read and its transaction. */
  private ranges: RangeSplit[] = [];
  private rangeTx: { split: RangeSplit; sql: postgres.ReservedSql } | null = null;
  /** Range splits done at each checkpoint, until it completes and they are marked in tm_cdc_splits. */
  private rangesDoneAt = new Map<number, number[]>();
  private rangesMarked = new Set<number>();
  /** The stream split's filter per table (ranges in key order with their segments) while it filters. */
  private rangeFilters: Map<number, RangeFilter[]> | null = null;
  private nextRangesCheck = 0;
  private readonly coord: { splits: string; segments: string };
  /** false on a subtask that has range splits only (parallel snapshot, subtask > 0). */
  private hasStream = true;
  lastSplitId = 0;

  constructor(
    private readonly opts: PostgresCdcSourceOptions,
    private readonly ctx: SourceReaderContext,
  ) {
    this.what = `PostgresCdcSource (slot ${opts.slot})`;
    this.conn = resolveConnection(this.what, opts);
    this.publication = opts.publication ?? opts.slot;
    this.chunkSize = positiveIntOption(this.what, "snapshotChunkSize", opts.snapshotChunkSize, 5000);
    const schema = quoteIdent(opts.coordinationSchema ?? "public");
    this.coord = { splits: `${schema}.tm_cdc_splits`, segments: `${schema}.tm_cdc_segments` };
    if (ctx.parallelism > 1) this.what = `PostgresCdcSource (slot ${opts.slot}, subtask ${ctx.subtaskIndex + 1}/${ctx.parallelism})`;
  }

  async open(): Promise<void> {
    const sql = (this.sql = createClient(this.conn, 2));
    const [row] = await connectOrExplain(this.what, this.conn, () => sql`SELECT current_setting('wal_level') AS wal`);
    if (row!.wal !== "logical") {
      throw new Error(`${this.what}: change-data-capture needs wal_level = logical, but the server at ${this.conn.host}:${this.conn.port} has wal_level = ${row!.wal}; set it in postgresql.conf and restart the server`);
    }
    for (const t of this.opts.tables) await this.describeTable(t);
    const restored = this.ctx.restoredSplits;
    const isRange = (s: ConnectorSplit) => (s as RangeSplit).kind === "range";
    if (restored !== null && (restored.some(isRange) || (restored.length === 0 && this.opts.snapshotSplitSize !== undefined) || restored.some((s) => (s as CdcSplit).epoch !== undefined))) {
      await this.openRestoredRanges(restored);
    } else if (restored === null && this.opts.snapshotSplitSize !== undefined) {
      await this.openNewRanges();
    } else if (restored !== null) {
      if (restored.length === 0) throw new Error(`${this.what}: the restored checkpoint has no split for this source`);
      const s = restored[0] as CdcSplit;
      if (s.slot !== this.opts.slot) throw new Error(`${this.what}: the restored checkpoint reads slot ${JSON.stringify(s.slot)}, not ${JSON.stringify(this.opts.slot)} (option slot)`);
      if (JSON.stringify(s.tables) !== JSON.stringify(this.tables.map((t) => t.qualified))) {
        throw new Error(`${this.what}: the restored checkpoint captures tables ${s.tables.join(", ")}, the job now ${this.tables.map((t) => t.qualified).join(", ")} (option tables)`);
      }
      this.split = { ...s, segments: s.segments.map((g) => ({ ...g })) };
      await this.slotInfo(true);
      if (this.split.lsn !== null) this.confirmed = this.position = parseLsn(this.split.lsn);
      if (this.split.phase === "snapshot") await this.beginSnapshot();
    } else {
      await this.createSlot();
      this.split = { type: "connector", connector: CONNECTOR, id: 0, slot: this.opts.slot, tables: this.tables.map((t) => t.qualified), phase: "snapshot", table: 0, after: null, segments: [], lsn: null };
      await this.beginSnapshot();
    }
    if (!this.hasStream) return;
    this.updateMaxUntil();
    if (this.split.phase === "stream" && this.split.filtering) await this.loadRangeFilters();
    if (this.split.phase === "stream") await this.startStreaming();
  }

  // ---------------------------------------------------------------- parallel snapshot (range splits)

  /** First start with range splits: subtask 0 makes the slot and the plan, the others wait for the plan. */
  private async openNewRanges(): Promise<void> {
    const epoch = `${this.ctx.jobId}/${this.ctx.attempt}`;
    let plan: RangeSplit[];
    if (this.ctx.subtaskIndex === 0) {
      await this.createSlot();
      plan = await this.makePlan(epoch);
      this.split = { type: "connector", connector: CONNECTOR, id: 0, slot: this.opts.slot, tables: this.tables.map((t) => t.qualified), phase: "wait", table: 0, after: null, segments: [], lsn: null, epoch, ranges: plan.length, filtering: true };
    } else {
      plan = await this.waitForPlan(epoch);
      this.hasStream = false;
    }
    this.ranges = plan.filter((r) => r.id % this.ctx.parallelism === this.ctx.subtaskIndex);
  }

  private async openRestoredRanges(restored: ConnectorSplit[]): Promise<void> {
    for (const s of restored) {
      if ((s as { slot?: string }).slot !== this.opts.slot) throw new Error(`${this.what}: the restored checkpoint reads slot ${JSON.stringify((s as { slot?: string }).slot)}, not ${JSON.stringify(this.opts.slot)} (option slot)`);
    }
    this.ranges = restored.filter((s) => (s as RangeSplit).kind === "range").map((s) => ({ ...(s as RangeSplit) }));
    const stream = restored.find((s) => (s as RangeSplit).kind !== "range") as CdcSplit | undefined;
    // Only the stream's reader uses the slot: the others need it to exist, not to be free.
    await this.slotInfo(true, stream !== undefined);
    if (stream) {
      if (JSON.stringify(stream.tables) !== JSON.stringify(this.tables.map((t) => t.qualified))) {
        throw new Error(`${this.what}: the restored checkpoint captures tables ${stream.tables.join(", ")}, the job now ${this.tables.map((t) => t.qualified).join(", ")} (option tables)`);
      }
      this.split = { ...stream, segments: [] };
      if (this.split.lsn !== null) this.confirmed = this.position = parseLsn(this.split.lsn);
    } else this.hasStream = false;
    // Ranges done in the restored checkpoint (it completed; its notification may never have come).
    const done = this.ranges.filter((r) => r.done).map((r) => r.id);
    if (done.length > 0) await this.markRangesDone(done, this.ctx.restoredCheckpointId);
  }

  /** Key boundaries at every snapshotSplitSize-th row of each table; the ranges between them cover all keys. */
  private async makePlan(epoch: string): Promise<RangeSplit[]> {
    const sql = this.sql!;
    const size = this.opts.snapshotSplitSize!;
    await sql.unsafe(`CREATE TABLE IF NOT EXISTS ${this.coord.splits} (slot text NOT NULL, epoch text NOT NULL, split int NOT NULL, tbl int NOT NULL, lo text[], hi text[], done_checkpoint bigint, PRIMARY KEY (epoch, split))`);
    await sql.unsafe(`CREATE TABLE IF NOT EXISTS ${this.coord.segments} (id bigserial PRIMARY KEY, slot text NOT NULL, epoch text NOT NULL, split int NOT NULL, subtask int NOT NULL, start text[], snap_xmin bigint NOT NULL, snap_xmax bigint NOT NULL, snap_xip bigint[] NOT NULL, until pg_lsn NOT NULL)`);
    const plan: RangeSplit[] = [];
    for (let t = 0; t < this.tables.length; t++) {
      const info = this.tables[t]!;
      const order = info.keys.map((c) => (TEXT_TYPES.has(c.type) ? `${quoteIdent(c.name)} COLLATE "C"` : quoteIdent(c.name))).join(", ");
      const cols = info.keys.map((c, i) => `${quoteIdent(c.name)}::text AS k${i}`).join(", ");
      const rows = (await sql
        .unsafe(`SELECT ${info.keys.map((_, i) => `k${i}`).join(", ")} FROM (SELECT ${cols}, row_number() OVER (ORDER BY ${order}) AS rn FROM ${quoteIdent(info.qualified)}) x WHERE rn % ${size} = 0 ORDER BY rn`)
        .values()) as string[][];
      let lo: string[] | null = null;
      for (const hi of [...rows, null]) {
        plan.push({ type: "connector", connector: CONNECTOR, id: plan.length + 1, kind: "range", slot: this.opts.slot, epoch, table: t, lo, hi, after: lo, done: false });
        lo = hi;
      }
    }
    await sql.begin(async (tx) => {
      await tx.unsafe(`DELETE FROM ${this.coord.splits} WHERE slot = $1`, [this.opts.slot]);
      await tx.unsafe(`DELETE FROM ${this.coord.segments} WHERE slot = $1`, [this.opts.slot]);
      for (const r of plan) await tx.unsafe(`INSERT INTO ${this.coord.splits} (slot, epoch, split, tbl, lo, hi) VALUES ($1, $2, $3, $4, $5, $6)`, [r.slot, epoch, r.id, r.table, r.lo, r.hi]);
    });
    return plan;
  }

  private async waitForPlan(epoch: string): Promise<RangeSplit[]> {
    const deadline = performance.now() + PLAN_WAIT_MS;
    for (;;) {
      const rows = await this.sql!.unsafe(`SELECT split, tbl, lo, hi FROM ${this.coord.splits} WHERE epoch = $1 ORDER BY split`, [epoch]).catch((err) => {
        if ((err as { code?: string }).code === "42P01") return []; // not created yet
        throw err;
      });
      if (rows.length > 0) {
        return rows.map((r) => ({ type: "connector", connector: CONNECTOR, id: r.split as number, kind: "range", slot: this.opts.slot, epoch, table: r.tbl as number, lo: r.lo as string[] | null, hi: r.hi as string[] | null, after: r.lo as string[] | null, done: false }));
      }
      if (performance.now() > deadline) throw new Error(`${this.what}: subtask 1 did not publish the snapshot plan (${this.coord.splits}, epoch ${epoch}) within ${PLAN_WAIT_MS / 1000} s`);
      await delay(100);
    }
  }

  private async markRangesDone(ids: number[], checkpointId: number): Promise<void> {
    const todo = ids.filter((id) => !this.rangesMarked.has(id));
    if (todo.length === 0) return;
    const epoch = this.ranges.find((r) => r.id === todo[0])!.epoch;
    await this.sql!.unsafe(`UPDATE ${this.coord.splits} SET done_checkpoint = $1 WHERE epoch = $2 AND split = ANY($3::int[]) AND done_checkpoint IS NULL`, [checkpointId, epoch, todo]);
    for (const id of todo) this.rangesMarked.add(id);
  }

  /** The next chunk of a range split (its transaction begun, and its snapshot recorded, on the first). */
  private async rangeChunk(r: RangeSplit): Promise<unknown[]> {
    if (this.rangeTx?.split !== r) {
      const tx = await this.sql!.reserve();
      this.rangeTx = { split: r, sql: tx };
      await tx.unsafe("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
      const [row] = await tx.unsafe("SELECT pg_current_snapshot()::text AS s, pg_current_wal_insert_lsn()::text AS l");
      const [xmin, xmax, xip] = (row!.s as string).split(":");
      const x32 = (v: string) => Number(BigInt(v) & 0xffffffffn);
      await this.sql!.unsafe(`INSERT INTO ${this.coord.segments} (slot, epoch, split, subtask, start, snap_xmin, snap_xmax, snap_xip, until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, [
        this.opts.slot,
        r.epoch,
        r.id,
        this.ctx.subtaskIndex,
        r.after,
        x32(xmin!),
        x32(xmax!),
        xip ? xip.split(",").map(x32) : [],
        row!.l as string,
      ]);
    }
    const tx = this.rangeTx.sql;
    const t = this.tables[r.table]!;
    const key = (c: Column) => (TEXT_TYPES.has(c.type) ? `src.${quoteIdent(c.name)} COLLATE "C"` : `src.${quoteIdent(c.name)}`);
    const order = t.keys.map(key).join(", ");
    const param = (i: number) => t.keys.map((c, j) => (TEXT_TYPES.has(c.type) ? `$${i + j}::text COLLATE "C"` : `$${i + j}::${c.sqlType}`)).join(", ");
    const conds: string[] = [];
    const params: string[] = [];
    if (r.after !== null) {
      conds.push(`(${order}) > (${param(1)})`);
      params.push(...r.after);
    }
    if (r.hi !== null) {
      conds.push(`(${order}) <= (${param(params.length + 1)})`);
      params.push(...r.hi);
    }
    const q = `SELECT ${t.keys.map((c) => `${quoteIdent(c.name)}::text`).join(", ")}, ${t.columns.map((c) => `${quoteIdent(c.name)}::text`).join(", ")} FROM ${quoteIdent(t.qualified)} AS src ${conds.length > 0 ? `WHERE ${conds.join(" AND ")}` : ""} ORDER BY ${order} LIMIT ${this.chunkSize}`;
    const rows = (await tx.unsafe(q, params).values()) as (string | null)[][];
    const out = this.snapshotRecords(t, rows);
    if (rows.length < this.chunkSize) {
      r.done = true;
      this.rangeTx = null;
      await tx.unsafe("COMMIT");
      tx.release();
    } else r.after = rows[rows.length - 1]!.slice(0, t.keys.length) as string[];
    this.lastSplitId = r.id;
    return out;
  }

  /** Whether every range split is done in a completed checkpoint (then no restore brings one back). */
  private async rangesAllDone(): Promise<boolean> {
    const [row] = await this.sql!.unsafe(`SELECT count(*)::int AS n, count(done_checkpoint)::int AS done FROM ${this.coord.splits} WHERE epoch = $1`, [this.split.epoch!]);
    if (row!.n !== this.split.ranges) throw new Error(`${this.what}: the snapshot plan ${this.split.epoch} in ${this.coord.splits} has ${row!.n} range splits, the stream split expects ${this.split.ranges} (rows deleted under the job?)`);
    return row!.done === row!.n;
  }

  /** The ranges and their segments (newest first), for the stream's filter; maxUntil from the segments. */
  private async loadRangeFilters(): Promise<void> {
    const epoch = this.split.epoch!;
    const splits = await this.sql!.unsafe(`SELECT split, tbl, lo, hi FROM ${this.coord.splits} WHERE epoch = $1 ORDER BY split`, [epoch]);
    const segs = await this.sql!.unsafe(`SELECT split, start, snap_xmin::float8 AS xmin, snap_xmax::float8 AS xmax, snap_xip::float8[] AS xip, until::text AS until FROM ${this.coord.segments} WHERE epoch = $1 ORDER BY id DESC`, [epoch]);
    const bySplit = new Map<number, RangeFilter>();
    const filters = new Map<number, RangeFilter[]>();
    for (const s of splits) {
      const f: RangeFilter = { lo: s.lo, hi: s.hi, segments: [] };
      bySplit.set(s.split, f);
      const list = filters.get(s.tbl) ?? [];
      list.push(f);
      filters.set(s.tbl, list);
    }
    let max = 0n;
    for (const g of segs) {
      bySplit.get(g.split)?.segments.push({ start: g.start, xmin: g.xmin, xmax: g.xmax, xip: g.xip });
      const u = parseLsn(g.until);
      if (u > max) max = u;
    }
    this.rangeFilters = filters;
    this.maxUntil = max;
  }

  private rangeSegmentOf(table: number, key: string[]): RangeSegment | null {
    const keys = this.tables[table]!.keys;
    for (const f of this.rangeFilters!.get(table) ?? []) {
      if ((f.lo !== null && compareKey(keys, key, f.lo) <= 0) || (f.hi !== null && compareKey(keys, key, f.hi) > 0)) continue;
      for (const g of f.segments) if (g.start === null || compareKey(keys, key, g.start) > 0) return g;
      return null;
    }
    return null;
  }

  private async pollRanges(): Promise<unknown[]> {
    const r = this.ranges.find((x) => !x.done);
    if (r) return this.rangeChunk(r);
    if (!this.hasStream) {
      await delay(POLL_WAIT_MS);
      return [];
    }
    // The stream split waits until every range is done in a completed checkpoint.
    if (performance.now() < this.nextRangesCheck) {
      await delay(Math.min(POLL_WAIT_MS, this.nextRangesCheck - performance.now()));
      return [];
    }
    this.nextRangesCheck = performance.now() + RANGES_CHECK_MS;
    if (!(await this.rangesAllDone())) return [];
    await this.loadRangeFilters();
    this.split.phase = "stream";
    await this.startStreaming();
    return [];
  }

  private async describeTable(name: string): Promise<void> {
    const sql = this.sql!;
    const [rel] = await sql`SELECT n.nspname AS schema, c.relname AS name, c.relreplident AS replident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(${name})`;
    if (!rel) throw new Error(`${this.what}: table ${JSON.stringify(name)} does not exist (option tables)`);
    const cols = await sql`
      SELECT a.attname AS name, a.atttypid::int AS type, format_type(a.atttypid, a.atttypmod) AS sqltype,
             array_position(i.indkey::int2[], a.attnum) AS keypos
      FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
      WHERE a.attrelid = to_regclass(${name}) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`;
    const columns: Column[] = cols.map((c) => ({ name: c.name, type: c.type, sqlType: c.sqltype }));
    const keys = cols.filter((c) => c.keypos !== null).sort((a, b) => a.keypos - b.keypos).map((c) => ({ name: c.name, type: c.type, sqlType: c.sqltype }) as Column);
    const qualified = `${rel.schema}.${rel.name}`;
    if (keys.length === 0) throw new Error(`${this.what}: table ${qualified} has no primary key (option tables): the snapshot reads it in key order and changes are matched by key`);
    for (const k of keys) {
      if (!INT_TYPES.has(k.type) && !TEXT_TYPES.has(k.type) && !PLAIN_TYPES.has(k.type)) {
        throw new Error(`${this.what}: table ${qualified}: primary key column ${k.name} has type ${k.sqlType}; supported key types are integers, text/varchar, uuid and date`);
      }
    }
    if (this.byName.has(qualified)) throw new Error(`${this.what}: table ${qualified} is listed twice (option tables)`);
    this.byName.set(qualified, this.tables.length);
    this.tables.push({ qualified, columns, keys, replident: rel.replident });
  }

  /** The slot's row, waiting (bounded) until no other connection uses it; null when it does not exist. */
  private async slotInfo(mustExist: boolean, waitIdle = true): Promise<{ plugin: string; database: string } | null> {
    const deadline = performance.now() + SLOT_BUSY_WAIT_MS;
    for (;;) {
      const [s] = await this.sql!`SELECT plugin, database, active_pid FROM pg_replication_slots WHERE slot_name = ${this.opts.slot}`;
      if (!s) {
        if (mustExist) {
          throw new Error(`${this.what}: replication slot ${JSON.stringify(this.opts.slot)} does not exist on ${this.conn.host}:${this.conn.port} (dropped under the job?); the changes since the last checkpoint are lost with it: restart the job without its checkpoint to take a new snapshot`);
        }
        return null;
      }
      if (s.plugin !== "pgoutput" || s.database !== this.conn.database) {
        throw new Error(`${this.what}: replication slot ${JSON.stringify(this.opts.slot)} exists with plugin ${s.plugin} on database ${s.database}, not pgoutput on ${this.conn.database} (option slot)`);
      }
      // A killed reader's walsender may take a moment to notice; a live one belongs to someone else.
      if (s.active_pid === null || !waitIdle) return s as { plugin: string; database: string };
      if (performance.now() > deadline) throw new Error(`${this.what}: replication slot ${JSON.stringify(this.opts.slot)} is in use by server process ${s.active_pid} (another job with the same option slot?)`);
      await delay(100);
    }
  }

  /** First start: replica identity, publication, and a fresh slot (a leftover one is dropped). */
  private async createSlot(): Promise<void> {
    const sql = this.sql!;
    if (this.opts.fullBeforeValues !== false) {
      for (const t of this.tables) if (t.replident !== "f") await sql.unsafe(`ALTER TABLE ${quoteIdent(t.qualified)} REPLICA IDENTITY FULL`);
    }
    const [pub] = await sql`SELECT 1 FROM pg_publication WHERE pubname = ${this.publication}`;
    if (!pub) {
      await sql.unsafe(`CREATE PUBLICATION ${quoteIdent(this.publication)} FOR TABLE ${this.tables.map((t) => quoteIdent(t.qualified)).join(", ")}`);
    } else {
      const inPub = new Set((await sql`SELECT schemaname || '.' || tablename AS t FROM pg_publication_tables WHERE pubname = ${this.publication}`).map((r) => r.t as string));
      const missing = this.tables.filter((t) => !inPub.has(t.qualified)).map((t) => t.qualified);
      if (missing.length > 0) throw new Error(`${this.what}: publication ${this.publication} exists but does not publish ${missing.join(", ")} (option publication; ALTER PUBLICATION ... ADD TABLE)`);
    }
    if (await this.slotInfo(false)) await sql`SELECT pg_drop_replication_slot(${this.opts.slot})`;
    try {
      // Creating the slot waits for every transaction running on the server to end, prepared ones included:
      // bounded, so that a forgotten prepared transaction gives an error instead of a hang.
      await sql.begin(async (tx) => {
        await tx.unsafe(`SET LOCAL statement_timeout = ${SLOT_CREATE_TIMEOUT_MS}`);
        await tx`SELECT pg_create_logical_replication_slot(${this.opts.slot}, 'pgoutput')`;
      });
    } catch (err) {
      if ((err as { code?: string }).code === "57014") {
        const prepared = (await sql`SELECT gid FROM pg_prepared_xacts`.catch(() => [])).map((r) => r.gid as string);
        throw new Error(
          `${this.what}: creating replication slot ${JSON.stringify(this.opts.slot)} did not finish within ${SLOT_CREATE_TIMEOUT_MS / 1000} s: it waits for every transaction running on the server to end${prepared.length > 0 ? `; prepared transactions (pg_prepared_xacts): ${prepared.join(", ")}` : ""}`,
          { cause: err },
        );
      }
      throw new Error(`${this.what}: cannot create replication slot ${JSON.stringify(this.opts.slot)}: ${errorText(err)} (server setting max_replication_slots?)`, { cause: err });
    }
  }

  /** Opens the snapshot transaction and records its MVCC snapshot as the segment for what is left to read. */
  private async beginSnapshot(): Promise<void> {
    const snap = (this.snap = await this.sql!.reserve());
    await snap.unsafe("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    const [r] = await snap.unsafe("SELECT pg_current_snapshot()::text AS s, pg_current_wal_insert_lsn()::text AS l");
    const [xmin, xmax, xip] = (r!.s as string).split(":");
    const x32 = (v: string) => Number(BigInt(v) & 0xffffffffn);
    this.split.segments.push({
      table: this.split.table,
      after: this.split.after,
      xmin: x32(xmin!),
      xmax: x32(xmax!),
      xip: xip ? xip.split(",").map(x32) : [],
      until: r!.l as string,
    });
  }

  private updateMaxUntil(): void {
    this.maxUntil = this.split.segments.reduce((m, g) => (parseLsn(g.until) > m ? parseLsn(g.until) : m), 0n);
  }

  /** The next chunk of the snapshot, moving to the next table and then to the stream at the end. */
  private async snapshotChunk(): Promise<unknown[]> {
    const s = this.split;
    if (s.table >= this.tables.length) {
      await this.snap!.unsafe("COMMIT");
      this.snap!.release();
      this.snap = null;
      s.phase = "stream";
      await this.startStreaming();
      return [];
    }
    const t = this.tables[s.table]!;
    // Qualified: ORDER BY a bare name would sort by the output column (its text).
    const key = (c: Column) => (TEXT_TYPES.has(c.type) ? `src.${quoteIdent(c.name)} COLLATE "C"` : `src.${quoteIdent(c.name)}`);
    const order = t.keys.map(key).join(", ");
    const where = s.after === null ? "" : `WHERE (${order}) > (${t.keys.map((c, i) => (TEXT_TYPES.has(c.type) ? `$${i + 1}::text COLLATE "C"` : `$${i + 1}::${c.sqlType}`)).join(", ")})`;
    const q = `SELECT ${t.keys.map((c) => `${quoteIdent(c.name)}::text`).join(", ")}, ${t.columns.map((c) => `${quoteIdent(c.name)}::text`).join(", ")} FROM ${quoteIdent(t.qualified)} AS src ${where} ORDER BY ${order} LIMIT ${this.chunkSize}`;
    const rows = (await this.snap!.unsafe(q, s.after ?? []).values()) as (string | null)[][];
    const nk = t.keys.length;
    const out = this.snapshotRecords(t, rows);
    if (rows.length < this.chunkSize) {
      s.table++;
      s.after = null;
    } else s.after = rows[rows.length - 1]!.slice(0, nk) as string[];
    return out;
  }

  /** Snapshot rows (key columns as text, then every column as text) as "read" records. */
  private snapshotRecords(t: TableInfo, rows: (string | null)[][]): PostgresCdcRecord[] {
    const nk = t.keys.length;
    const out: PostgresCdcRecord[] = new Array(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      const after: PostgresRow = {};
      for (let c = 0; c < t.columns.length; c++) {
        const v = r[nk + c]!;
        after[t.columns[c]!.name] = v === null ? null : parseValue(t.columns[c]!.type, v);
      }
      out[i] = { op: "read", table: t.qualified, before: null, after, lsn: null, commitTime: null };
    }
    return out;
  }

  // ---------------------------------------------------------------- streaming

  private async startStreaming(): Promise<void> {
    await this.slotInfo(true);
    const repl = (this.repl = createClient(this.conn, 1, {
      connection: { replication: "database" },
      fetch_types: false,
      onclose: () => this.fail(new Error(`${this.what}: the replication connection for slot ${JSON.stringify(this.opts.slot)} was closed (slot dropped, backend terminated or server stopped?)`)),
    }));
    const start = this.split.lsn ?? "0/0";
    let stream: import("node:stream").Duplex;
    try {
      stream = (await repl
        .unsafe(`START_REPLICATION SLOT ${quoteIdent(this.opts.slot)} LOGICAL ${start} (proto_version '1', publication_names ${quoteLiteral(this.publication)})`)
        .writable()) as unknown as import("node:stream").Duplex;
    } catch (err) {
      if ((err as { code?: string }).code === "42704") await this.slotInfo(true);
      throw new Error(`${this.what}: cannot stream from replication slot ${JSON.stringify(this.opts.slot)}: ${errorText(err)}`, { cause: err });
    }
    this.stream = stream;
    stream.on("data", (b: Buffer) => {
      try {
        this.onData(b);
      } catch (err) {
        this.fail(new Error(`${this.what}: cannot decode the replication stream: ${errorText(err)}`, { cause: err }));
      }
    });
    stream.on("error", (err) => this.fail(new Error(`${this.what}: the replication connection for slot ${JSON.stringify(this.opts.slot)} failed: ${errorText(err)}`, { cause: err })));
    stream.on("close", () => this.fail(new Error(`${this.what}: the replication connection for slot ${JSON.stringify(this.opts.slot)} was closed by the server (slot dropped or server stopped?)`)));
    this.statusTimer = setInterval(() => this.sendStatus(false), STATUS_INTERVAL_MS);
    this.sendStatus(false);
  }

  private fail(err: Error): void {
    if (this.closing) return;
    this.error ??= err;
    this.wake?.();
  }

  /** A standby status update: flush = the LSN the last completed checkpoint covers (the slot advances to it). */
  private sendStatus(reply: boolean): void {
    const s = this.stream;
    if (!s || s.destroyed) return;
    const b = Buffer.alloc(34);
    b[0] = 0x72; // 'r'
    b.writeBigUInt64BE(this.confirmed, 1);
    b.writeBigUInt64BE(this.confirmed, 9);
    b.writeBigUInt64BE(this.confirmed, 17);
    b.writeBigInt64BE(BigInt(Date.now()) * 1000n - PG_EPOCH_US, 25);
    b[33] = reply ? 1 : 0;
    s.write(b);
  }

  private onData(b: Buffer): void {
    if (b[0] === 0x6b) {
      // Keepalive: its WAL end is a position once everything received before it has been taken (changes only to
      // other tables still move the slot on). Answer when asked (confirming only what checkpoints completed).
      const walEnd = b.readBigUInt64BE(1);
      if (this.cur === null && this.ready.length === 0 && walEnd > this.idleLsn) this.idleLsn = walEnd;
      if (b[17]) this.sendStatus(false);
      return;
    }
    if (b[0] !== 0x77) return;
    const c = new Cursor(b, 25);
    const tag = c.u8();
    switch (tag) {
      case 0x42: {
        // Begin
        const finalLsn = c.u64();
        const ts = c.u64();
        const xid = c.u32();
        this.cur = { xid, finalLsn, endLsn: 0n, commitTime: Number((BigInt.asIntN(64, ts) + PG_EPOCH_US) / 1000n), changes: [] };
        return;
      }
      case 0x43: {
        // Commit
        c.u8();
        c.u64();
        const txn = this.cur!;
        txn.endLsn = c.u64();
        this.cur = null;
        if (txn.changes.length === 0) return;
        this.ready.push(txn);
        this.readyChanges += txn.changes.length;
        if (this.readyChanges >= QUEUE_HIGH && !this.paused) {
          this.paused = true;
          this.stream!.pause();
        }
        this.wake?.();
        return;
      }
      case 0x52: {
        // Relation
        const oid = c.u32();
        const ns = c.str();
        const name = c.str();
        c.u8();
        const n = c.i16();
        const columns: { name: string; type: number }[] = [];
        for (let i = 0; i < n; i++) {
          c.u8();
          const cname = c.str();
          const type = c.u32();
          c.i32();
          columns.push({ name: cname, type });
        }
        const qualified = `${ns}.${name}`;
        this.relations.set(oid, { table: this.byName.get(qualified) ?? -1, qualified, columns });
        return;
      }
      case 0x49: {
        // Insert
        const rel = this.relation(c.u32());
        c.u8(); // 'N'
        this.cur!.changes.push({ rel, op: "insert", old: null, oldIsKeyOnly: false, new: c.tuple() });
        return;
      }
      case 0x55: {
        // Update
        const rel = this.relation(c.u32());
        let kind = c.u8();
        let old: Tuple | null = null;
        const keyOnly = kind === 0x4b;
        if (kind === 0x4b || kind === 0x4f) {
          old = c.tuple();
          kind = c.u8();
        }
        this.cur!.changes.push({ rel, op: "update", old, oldIsKeyOnly: keyOnly, new: c.tuple() });
        return;
      }
      case 0x44: {
        // Delete
        const rel = this.relation(c.u32());
        const kind = c.u8();
        this.cur!.changes.push({ rel, op: "delete", old: c.tuple(), oldIsKeyOnly: kind === 0x4b, new: null });
        return;
      }
      case 0x54: {
        // Truncate
        const n = c.i32();
        c.u8();
        for (let i = 0; i < n; i++) this.cur!.changes.push({ rel: this.relation(c.u32()), op: "truncate", old: null, oldIsKeyOnly: false, new: null });
        return;
      }
      default:
        // Origin, Type, logical messages: nothing to emit.
        return;
    }
  }

  private relation(oid: number): Relation {
    const r = this.relations.get(oid);
    if (!r) throw new Error(`a change for relation ${oid} came before its Relation message`);
    return r;
  }

  async poll(): Promise<unknown[] | null> {
    if (this.error) throw this.error;
    if (!this.hasStream || this.split.phase === "wait" || this.ranges.some((r) => !r.done)) return this.pollRanges();
    if (this.split.phase === "snapshot") return this.snapshotChunk();
    this.lastSplitId = 0;
    // Messages already received may still be on their way through the stream: one turn of the event loop
    // lets them in, so that small transactions go out in chunks rather than one by one.
    if (this.readyChanges < CHUNK) await new Promise<void>((resolve) => setImmediate(resolve));
    if (this.ready.length === 0) {
      await waitForData(POLL_WAIT_MS, (w) => (this.wake = w));
      if (this.error) throw this.error;
    }
    return this.take();
  }

  /** Whole transactions from the queue (about CHUNK records), filtered and turned into records; moves the position. */
  private take(): unknown[] {
    const out: PostgresCdcRecord[] = [];
    while (this.ready.length > 0 && out.length < CHUNK) {
      const txn = this.ready.shift()!;
      this.readyChanges -= txn.changes.length;
      // At or below the restored position: the restored checkpoint covers it already.
      if (txn.endLsn <= this.position) continue;
      const lsn = formatLsn(txn.finalLsn);
      const filter = this.split.segments.length > 0 || this.rangeFilters !== null;
      for (const ch of txn.changes) {
        const t = ch.rel.table;
        if (t < 0) continue;
        const rec = this.toRecord(ch, lsn, txn.commitTime, filter ? txn.xid : -1);
        if (rec) out.push(rec);
      }
      this.position = txn.endLsn;
      this.split.lsn = formatLsn(txn.endLsn);
      // Past every snapshot's WAL position: later transactions are invisible to all of them.
      if (filter && txn.finalLsn >= this.maxUntil) {
        this.split.segments = [];
        this.rangeFilters = null;
        if (this.split.filtering) this.split.filtering = false;
      }
    }
    // Every transaction committed before idleLsn was delivered and taken: later ones end after it.
    if (this.idleLsn > this.position) {
      this.position = this.idleLsn;
      this.split.lsn = formatLsn(this.idleLsn);
    }
    if (this.paused && this.readyChanges < QUEUE_HIGH / 2) {
      this.paused = false;
      this.stream?.resume();
    }
    return out;
  }

  /** The segment (snapshot) that read the row with this key. */
  private segmentOf(table: number, key: string[]): Segment | null {
    const segs = this.split.segments;
    const keys = this.tables[table]!.keys;
    for (let i = segs.length - 1; i >= 0; i--) {
      const g = segs[i]!;
      if (g.table < table || (g.table === table && (g.after === null || compareKey(keys, key, g.after) > 0))) return g;
    }
    return null;
  }

  /** Whether the snapshot that read this key already saw the transaction (then the change is not emitted). */
  private seen(table: number, tuple: Tuple, rel: Relation, xid: number): boolean {
    if (xid < 0) return false;
    const info = this.tables[table]!;
    const key = info.keys.map((k) => {
      const i = rel.columns.findIndex((c) => c.name === k.name);
      return i < 0 ? "" : (tuple.text[i] ?? "");
    });
    const g = this.rangeFilters !== null ? this.rangeSegmentOf(table, key) : this.segmentOf(table, key);
    return g !== null && visibleIn(g, xid);
  }

  private toRecord(ch: Change, lsn: string, commitTime: number, xid: number): PostgresCdcRecord | null {
    const rel = ch.rel;
    const table = rel.qualified;
    if (ch.op === "truncate") return { op: "truncate", table, before: null, after: null, lsn, commitTime };
    const row = (tuple: Tuple, keyOnly: boolean, fill: Tuple | null): PostgresRow => {
      const r: PostgresRow = {};
      const keyNames = keyOnly ? new Set(this.tables[rel.table]!.keys.map((k) => k.name)) : null;
      rel.columns.forEach((c, i) => {
        if (keyNames && !keyNames.has(c.name)) return;
        let v = tuple.text[i];
        // An unchanged TOASTed value: the old row has it when the replica identity is FULL.
        if (v === undefined && fill) v = fill.text[i];
        if (v !== undefined) r[c.name] = v === null ? null : parseValue(c.type, v);
      });
      return r;
    };
    if (ch.op === "insert") {
      if (this.seen(rel.table, ch.new!, rel, xid)) return null;
      return { op: "insert", table, before: null, after: row(ch.new!, false, null), lsn, commitTime };
    }
    if (ch.op === "delete") {
      if (this.seen(rel.table, ch.old!, rel, xid)) return null;
      return { op: "delete", table, before: row(ch.old!, ch.oldIsKeyOnly, null), after: null, lsn, commitTime };
    }
    // An update whose key moved between parts of the snapshot read with different snapshots: each side counts
    // for its own part (an insert or a delete when only one side is new to its snapshot).
    const oldSeen = this.seen(rel.table, ch.old ?? ch.new!, rel, xid);
    const newSeen = this.seen(rel.table, ch.new!, rel, xid);
    const before = ch.old ? row(ch.old, ch.oldIsKeyOnly, null) : null;
    const after = row(ch.new!, false, ch.old && !ch.oldIsKeyOnly ? ch.old : null);
    if (oldSeen && newSeen) return null;
    if (oldSeen) return { op: "insert", table, before: null, after, lsn, commitTime };
    if (newSeen) return { op: "delete", table, before: before ?? after, after: null, lsn, commitTime };
    return { op: "update", table, before, after, lsn, commitTime };
  }

  positions(): ConnectorSplit[] {
    const out: ConnectorSplit[] = this.ranges.map((r) => ({ ...r }));
    if (!this.hasStream) return out;
    const s = this.split;
    return [{ ...s, after: s.after ? [...s.after] : null, segments: s.segments.map((g) => ({ ...g })) }, ...out];
  }

  activeSplitIds(): number[] {
    const r = this.ranges.find((x) => !x.done);
    if (r) return [r.id];
    return this.hasStream && this.split.phase !== "wait" ? [0] : [];
  }

  snapshotState(checkpointId: number): void {
    if (this.ranges.length > 0) this.rangesDoneAt.set(checkpointId, this.ranges.filter((r) => r.done).map((r) => r.id));
    if (this.hasStream) this.checkpoints.set(checkpointId, this.split.phase === "stream" ? this.split.lsn : null);
  }

  async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    for (const [id, done] of this.rangesDoneAt) {
      if (id > checkpointId) continue;
      this.rangesDoneAt.delete(id);
      if (done.length > 0) await this.markRangesDone(done, checkpointId);
    }
    if (!this.hasStream) return;
    let lsn: string | null = null;
    for (const [id, l] of this.checkpoints) {
      if (id > checkpointId) continue;
      if (l !== null) lsn = l;
      this.checkpoints.delete(id);
    }
    if (lsn === null) return;
    const v = parseLsn(lsn);
    if (v > this.confirmed) {
      this.confirmed = v;
      this.sendStatus(false);
    }
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.statusTimer) clearInterval(this.statusTimer);
    this.stream?.destroy();
    this.snap?.release();
    this.rangeTx?.sql.release();
    await this.repl?.end({ timeout: 1 }).catch(() => {});
    await this.sql?.end({ timeout: 1 }).catch(() => {});
  }
}
