// The SQLite state database: schema (created and migrated by Kysely's Migrator), opening checks, and the
// queries of the hot path, built with Kysely's query builder and compiled once.
import { Kysely, Migrator, sql, type CompiledQuery, type Generated, type Migration, type MigrationProvider } from "kysely";
import { StateFileError } from "./api.ts";
import { SyncSqliteDialect } from "./kysely-dialect.ts";
import type { SqliteDriver } from "./sqlite-driver.ts";

/** The tables. `kv` rows are keyed by (key group, state id, key bytes, user-key bytes), so a key group (and a
 *  key-group range) is one range scan; non-map states use an empty user key. */
export interface StateDatabase {
  tm_meta: { key: string; value: string };
  tm_state: { id: Generated<number>; name: string; kind: string; ttl_ms: number | null };
  kv: { kg: number; state: number; k: Uint8Array; uk: Uint8Array; v: Uint8Array };
  /** Write-back batches put new rows here first (newest version of a row; v null: deleted; updates of rows read
   *  from kv go to kv in place), merged into kv in key order once the delta is a fraction of the file: a batch of
   *  rows scattered over the key space then rewrites the delta's pages, not most of kv's leaves (docs/architecture.md 5.2). */
  kv_delta: { kg: number; state: number; k: Uint8Array; uk: Uint8Array; v: Uint8Array | null };
  /** Incremental checkpoints: the rows changed (written or deleted) since the last completed checkpoint, each
   *  with the epoch (snapshot sequence) of its last change. Only written when incremental checkpoints are on. */
  chg: { kg: number; state: number; k: Uint8Array; uk: Uint8Array; ep: number };
}

/** "TMST": marks the file as a tm state database. */
export const APPLICATION_ID = 0x544d5354;

/** In-code migrations, applied in name order. Each one sets tm_meta.schema_version to its number. */
export const MIGRATIONS: Record<string, Migration> = {
  "0001_initial": {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable("tm_meta")
        .addColumn("key", "text", (c) => c.primaryKey())
        .addColumn("value", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("tm_state")
        .addColumn("id", "integer", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("ttl_ms", "integer")
        .execute();
      await db.schema
        .createTable("kv")
        .addColumn("kg", "integer", (c) => c.notNull())
        .addColumn("state", "integer", (c) => c.notNull())
        .addColumn("k", "blob", (c) => c.notNull())
        .addColumn("uk", "blob", (c) => c.notNull())
        .addColumn("v", "blob", (c) => c.notNull())
        .addPrimaryKeyConstraint("kv_pk", ["kg", "state", "k", "uk"])
        .modifyEnd(sql`without rowid`)
        .execute();
      await db.insertInto("tm_meta").values({ key: "schema_version", value: "1" }).execute();
    },
  },
  "0002_change_log": {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable("chg")
        .addColumn("kg", "integer", (c) => c.notNull())
        .addColumn("state", "integer", (c) => c.notNull())
        .addColumn("k", "blob", (c) => c.notNull())
        .addColumn("uk", "blob", (c) => c.notNull())
        .addColumn("ep", "integer", (c) => c.notNull())
        .addPrimaryKeyConstraint("chg_pk", ["kg", "state", "k", "uk"])
        .modifyEnd(sql`without rowid`)
        .execute();
      await db.updateTable("tm_meta").set({ value: "2" }).where("key", "=", "schema_version").execute();
    },
  },
  "0003_write_delta": {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable("kv_delta")
        .addColumn("kg", "integer", (c) => c.notNull())
        .addColumn("state", "integer", (c) => c.notNull())
        .addColumn("k", "blob", (c) => c.notNull())
        .addColumn("uk", "blob", (c) => c.notNull())
        .addColumn("v", "blob")
        .addPrimaryKeyConstraint("kv_delta_pk", ["kg", "state", "k", "uk"])
        .modifyEnd(sql`without rowid`)
        .execute();
      await db.updateTable("tm_meta").set({ value: "3" }).where("key", "=", "schema_version").execute();
    },
  },
};
export const SCHEMA_VERSION = Object.keys(MIGRATIONS).length;

const provider: MigrationProvider = { getMigrations: async () => MIGRATIONS };

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** SQLite's own memory: its page cache and how much of the file it maps. */
export interface SqliteMemory {
  pageCacheBytes: number;
  mmapBytes: number;
}

/**
 * Prepares an opened database file: WAL and synchronous=OFF (the working copy's durability comes from
 * checkpoints: after a crash the task restores from one and never reopens this file), refuses files that are not SQLite databases,
 * belong to something else or come from a newer schema (never resetting them), then migrates to the latest
 * schema with Kysely's Migrator and records/checks maxParallelism.
 */
export async function prepareDatabase(driver: SqliteDriver, opts: { maxParallelism: number } & SqliteMemory): Promise<Kysely<StateDatabase>> {
  const file = driver.path;
  let mode: unknown;
  try {
    driver.exec("PRAGMA journal_mode = WAL");
    mode = driver.prepare("PRAGMA journal_mode").get()?.journal_mode;
  } catch (e) {
    throw new StateFileError(file, `not a usable SQLite database (${errorText(e)}); it was left untouched`, { cause: e });
  }
  if (String(mode).toLowerCase() !== "wal") throw new StateFileError(file, `could not switch the database to WAL mode (journal_mode is ${mode})`);
  driver.exec(
    `PRAGMA synchronous = OFF; PRAGMA temp_store = MEMORY; PRAGMA cache_size = ${-Math.max(256, Math.floor(opts.pageCacheBytes / 1024))}; ` +
      `PRAGMA mmap_size = ${Math.max(0, Math.floor(opts.mmapBytes))}; PRAGMA wal_autocheckpoint = 4096`,
  );

  const appId = Number(driver.prepare("PRAGMA application_id").get()?.application_id ?? 0);
  const tables = new Set(driver.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all().map((r) => String(r.name)));
  if (appId !== 0 && appId !== APPLICATION_ID) {
    throw new StateFileError(file, `is a SQLite database of another application (application_id 0x${appId.toString(16)}), not a tm state database`);
  }
  if (appId === 0 && tables.size > 0) {
    throw new StateFileError(file, `is a SQLite database but not a tm state database (it has tables ${[...tables].slice(0, 5).join(", ")})`);
  }
  if (tables.has("kysely_migration")) {
    const names = driver.prepare("SELECT name FROM kysely_migration ORDER BY name").all().map((r) => String(r.name));
    const unknown = names.filter((n) => !(n in MIGRATIONS));
    if (unknown.length > 0) {
      throw new StateFileError(
        file,
        `the state database has schema migration(s) ${unknown.join(", ")} unknown to this build, which supports schema version ${SCHEMA_VERSION} ` +
          `(up to ${Object.keys(MIGRATIONS).at(-1)}): it was written by a newer version; refusing to open it`,
      );
    }
  }
  if (tables.has("tm_meta")) {
    const v = Number(driver.prepare("SELECT value FROM tm_meta WHERE key = 'schema_version'").get()?.value ?? 0);
    if (v > SCHEMA_VERSION) {
      throw new StateFileError(file, `the state database has schema version ${v}, newer than this build's ${SCHEMA_VERSION}; refusing to open it`);
    }
  }

  const db = new Kysely<StateDatabase>({ dialect: new SyncSqliteDialect(driver) });
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName;
    throw new StateFileError(file, `schema migration${failed ? ` ${failed}` : ""} failed: ${errorText(error)}`, { cause: error });
  }
  if (appId === 0) driver.exec(`PRAGMA application_id = ${APPLICATION_ID}`);

  const mp = await db.selectFrom("tm_meta").select("value").where("key", "=", "max_parallelism").executeTakeFirst();
  if (mp === undefined) {
    await db.insertInto("tm_meta").values({ key: "max_parallelism", value: String(opts.maxParallelism) }).execute();
  } else if (Number(mp.value) !== opts.maxParallelism) {
    throw new StateFileError(file, `the state database holds state for maxParallelism ${mp.value}, not ${opts.maxParallelism} (key groups cannot be remapped)`);
  }
  return db;
}

/** A query compiled once, with its parameters in a known order. */
export interface Compiled {
  sql: string;
  params: readonly string[];
}

const P = (name: string) => `$${name}` as any;

function compiled(q: { compile(): CompiledQuery }, expected: readonly string[]): Compiled {
  const c = q.compile();
  const got = c.parameters.map(String);
  if (got.length !== expected.length || got.some((p, i) => p !== `$${expected[i]}`)) {
    throw new Error(`internal: compiled query has parameters ${got.join(", ")}, expected ${expected.map((e) => `$${e}`).join(", ")}: ${c.sql}`);
  }
  return { sql: c.sql, params: expected };
}

/** Every statement the backend runs after opening. */
export function compileQueries(db: Kysely<StateDatabase>) {
  const KEY = ["kg", "state", "k", "uk"] as const;
  const byKey = <Q extends { where: any }>(q: Q): Q =>
    q.where("kg", "=", P("kg")).where("state", "=", P("state")).where("k", "=", P("k")).where("uk", "=", P("uk"));
  const recordKeyChangesOf = (table: "kv" | "kv_delta") =>
    compiled(
      db
        .insertInto("chg")
        .columns(["kg", "state", "k", "uk", "ep"])
        .expression(
          db
            .selectFrom(table)
            .select((eb) => ["kg", "state", "k", "uk", eb.val(P("ep")).as("ep")])
            .where("kg", "=", P("kg"))
            .where("state", "=", P("state"))
            .where("k", "=", P("k")),
        )
        .onConflict((oc) => oc.columns(["kg", "state", "k", "uk"]).doUpdateSet((eb) => ({ ep: eb.ref("excluded.ep") }))),
      ["ep", "kg", "state", "k"],
    );
  return {
    get: compiled(byKey(db.selectFrom("kv").select("v")), KEY),
    upsert: compiled(
      db
        .insertInto("kv")
        .values({ kg: P("kg"), state: P("state"), k: P("k"), uk: P("uk"), v: P("v") })
        .onConflict((oc) => oc.columns(["kg", "state", "k", "uk"]).doUpdateSet((eb) => ({ v: eb.ref("excluded.v") }))),
      [...KEY, "v"],
    ),
    delete: compiled(byKey(db.deleteFrom("kv")), KEY),
    update: compiled(byKey(db.updateTable("kv").set({ v: P("v") })), ["v", ...KEY]),
    /** A map state's entries for one key. */
    scanKey: compiled(
      db.selectFrom("kv").select(["uk", "v"]).where("kg", "=", P("kg")).where("state", "=", P("state")).where("k", "=", P("k")).orderBy("uk"),
      ["kg", "state", "k"],
    ),
    deleteKey: compiled(db.deleteFrom("kv").where("kg", "=", P("kg")).where("state", "=", P("state")).where("k", "=", P("k")), ["kg", "state", "k"]),
    /** One key group, in primary-key order (snapshots). */
    scanGroup: compiled(db.selectFrom("kv").select(["state", "k", "uk", "v"]).where("kg", "=", P("kg")).orderBy("state").orderBy("k").orderBy("uk"), ["kg"]),
    deleteAll: compiled(db.deleteFrom("kv"), []),
    /** The next rows after a primary-key position within a key-group range (incremental TTL cleanup). */
    scanAfter: compiled(
      db
        .selectFrom("kv")
        .select(["kg", "state", "k", "uk", "v"])
        .where((eb) => eb(eb.refTuple("kg", "state", "k", "uk"), ">", eb.tuple(P("kg"), P("state"), P("k"), P("uk"))))
        .where("kg", ">=", P("kgStart"))
        .where("kg", "<=", P("kgEnd"))
        .orderBy("kg").orderBy("state").orderBy("k").orderBy("uk")
        .limit(P("limit")),
      [...KEY, "kgStart", "kgEnd", "limit"],
    ),
    // ---- The write delta (kv_delta): reads look there first ----
    deltaGet: compiled(byKey(db.selectFrom("kv_delta").select("v")), KEY),
    /** A row's newest version, or (v null) its deletion. */
    deltaPut: compiled(
      db
        .insertInto("kv_delta")
        .values({ kg: P("kg"), state: P("state"), k: P("k"), uk: P("uk"), v: P("v") })
        .onConflict((oc) => oc.columns(["kg", "state", "k", "uk"]).doUpdateSet((eb) => ({ v: eb.ref("excluded.v") }))),
      [...KEY, "v"],
    ),
    deltaScanKey: compiled(
      db.selectFrom("kv_delta").select(["uk", "v"]).where("kg", "=", P("kg")).where("state", "=", P("state")).where("k", "=", P("k")),
      ["kg", "state", "k"],
    ),
    deltaDeleteKey: compiled(db.deleteFrom("kv_delta").where("kg", "=", P("kg")).where("state", "=", P("state")).where("k", "=", P("k")), ["kg", "state", "k"]),
    deltaScanGroup: compiled(
      db.selectFrom("kv_delta").select(["state", "k", "uk", "v"]).where("kg", "=", P("kg")).orderBy("state").orderBy("k").orderBy("uk"),
      ["kg"],
    ),
    /** The merge, in key order so that each leaf of kv is written once: new versions, then deletions, then empty. */
    mergeDeltaRows: compiled(
      db
        .insertInto("kv")
        .columns(["kg", "state", "k", "uk", "v"])
        .expression(db.selectFrom("kv_delta").select(["kg", "state", "k", "uk", "v"]).where("v", "is not", null).orderBy("kg").orderBy("state").orderBy("k").orderBy("uk"))
        .onConflict((oc) => oc.columns(["kg", "state", "k", "uk"]).doUpdateSet((eb) => ({ v: eb.ref("excluded.v") }))),
      [],
    ),
    mergeDeltaDeletions: compiled(
      db
        .deleteFrom("kv")
        .where((eb) => eb(eb.refTuple("kg", "state", "k", "uk"), "in", eb.selectFrom("kv_delta").select(["kg", "state", "k", "uk"]).where("v", "is", null) as any)),
      [],
    ),
    clearDelta: compiled(db.deleteFrom("kv_delta"), []),
    // ---- The change log of incremental checkpoints ----
    recordChange: compiled(
      db
        .insertInto("chg")
        .values({ kg: P("kg"), state: P("state"), k: P("k"), uk: P("uk"), ep: P("ep") })
        .onConflict((oc) => oc.columns(["kg", "state", "k", "uk"]).doUpdateSet((eb) => ({ ep: eb.ref("excluded.ep") }))),
      [...KEY, "ep"],
    ),
    /** Records every stored user key of one key as changed (before a map state's clear deletes them). */
    recordKeyChanges: recordKeyChangesOf("kv"),
    /** The same for the key's rows in kv_delta. */
    recordKeyDeltaChanges: recordKeyChangesOf("kv_delta"),
    /** The rows of one key group changed after epoch `ep`, with their current value (null: deleted): kv_delta's
     *  version where it has one. */
    changesOfGroup: compiled(
      db
        .selectFrom("chg as c")
        .leftJoin("kv_delta as d", (j) => j.onRef("d.kg", "=", "c.kg").onRef("d.state", "=", "c.state").onRef("d.k", "=", "c.k").onRef("d.uk", "=", "c.uk"))
        .leftJoin("kv", (j) => j.onRef("kv.kg", "=", "c.kg").onRef("kv.state", "=", "c.state").onRef("kv.k", "=", "c.k").onRef("kv.uk", "=", "c.uk"))
        .select(["c.state as state", "c.k as k", "c.uk as uk", sql<Uint8Array | null>`CASE WHEN d.kg IS NULL THEN kv.v ELSE d.v END`.as("v")])
        .where("c.kg", "=", P("kg"))
        .where("c.ep", ">", P("ep"))
        .orderBy("c.state").orderBy("c.k").orderBy("c.uk"),
      ["kg", "ep"],
    ),
    /** Forgets the changes that a completed checkpoint covers. */
    forgetChanges: compiled(db.deleteFrom("chg").where("ep", "<=", P("ep")), ["ep"]),
    clearChanges: compiled(db.deleteFrom("chg"), []),
    maxEpoch: compiled(db.selectFrom("chg").select((eb) => eb.fn.max("ep").as("ep")), []),
    states: compiled(db.selectFrom("tm_state").select(["id", "name", "kind", "ttl_ms"]).orderBy("id"), []),
    insertState: compiled(db.insertInto("tm_state").values({ name: P("name"), kind: P("kind"), ttl_ms: P("ttl") }), ["name", "kind", "ttl"]),
    updateStateTtl: compiled(db.updateTable("tm_state").set({ ttl_ms: P("ttl") }).where("id", "=", P("id")), ["ttl", "id"]),
    begin: { sql: "BEGIN", params: [] } as Compiled,
    commit: { sql: "COMMIT", params: [] } as Compiled,
    rollback: { sql: "ROLLBACK", params: [] } as Compiled,
  };
}
export type Queries = ReturnType<typeof compileQueries>;
