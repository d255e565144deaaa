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
import { PostgresCdcSource, type PostgresCdcRecord } from "../src/api/index.ts";
import type { ConnectorSourceReader, ConnectorSplit } from "../src/api/connector.ts";
import { parseLsn } from "../src/connectors/postgres-cdc.ts";
import { BUN, Child, removeTempDirs, rng, tempDir, waitFor, writeJob } from "./helpers.ts";
import { freePort, runningTaskManagers, runningWithNewCheckpoint, startCluster, startPostgres, stopPostgres, type PgServer } from "./servers.ts";

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
  // A killed job's prepared transactions would make the next slot creation wait for them.
  for (const { gid } of await pg.sql`SELECT gid FROM pg_prepared_xacts`) await pg.sql.unsafe(`ROLLBACK PREPARED '${gid}'`).catch(() => {});
}, 30_000);
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

/**
 * The job of the cluster tests: CDC of `table` -> per group, the number of rows and the sum of v from the changes'
 * before (retracted) and after (added) values -> the exactly-once PostgresSink upserting into `target`. A change
 * lost or applied twice leaves a wrong count or sum behind for good.
 */
function aggregationJob(dir: string, o: { table: string; slot: string; target: string; source: string; slowSnapshot?: boolean }): string {
  return writeJob(dir, "job.ts", `
      import { PostgresCdcSource, PostgresSink, ValueStateDescriptor } from ${API};
      export default (env) => {
        env.enableCheckpointing(200);
        env.fromSource(PostgresCdcSource.source({ url: ${JSON.stringify(pg.url)}, tables: [${JSON.stringify(o.table)}], slot: ${JSON.stringify(o.slot)}, ${o.source} }))
          ${o.slowSnapshot ? `.map((r) => { if (r.op === "read") { const t = performance.now(); while (performance.now() - t < 0.1); } return r; })` : ""}
          .flatMap((r) => [...(r.before ? [[r.before.grp, -1, -r.before.v]] : []), ...(r.after ? [[r.after.grp, 1, r.after.v]] : [])])
          .keyBy((d) => d[0])
          .process({
            open(ctx) { this.acc = ctx.getState(new ValueStateDescriptor("acc", { default: [0, 0] })); },
            processElement(d, ctx, out) {
              const [n, s] = this.acc.value();
              const next = [n + d[1], s + d[2]];
              this.acc.update(next);
              out.collect([d[0], next[0], next[1]]);
            },
          })
          .sinkTo(PostgresSink.exactlyOnceSink({ url: ${JSON.stringify(pg.url)}, statement: PostgresSink.upsertStatement(${JSON.stringify(o.target)}, ["grp", "n", "s"], ["grp"]), rowMapper: (r) => r, batchSize: 500 }));
      };`);
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
    // Changes to other tables only: the position still moves on (from the server's keepalives), so the slot
    // would not hold their WAL forever.
    const lsnOf = () => parseLsn((r.positions()[0] as unknown as { lsn: string }).lsn);
    const last = lsnOf();
    await pg.sql`CREATE TABLE other_direct AS SELECT x FROM generate_series(1, 1000) x`;
    await waitFor("the position to move past other tables' changes", async () => {
      expect(await r.poll()).toEqual([]);
      return lsnOf() > last;
    }, 20_000, 0);
    await r.close();
    await pg.sql`SELECT pg_drop_replication_slot('cdc_direct')`;
  }, 60_000);

  test("CDC -> keyed aggregation -> exactly-once PostgreSQL sink while rows change, two TaskManagers SIGKILLed: the target equals the SQL oracle", async () => {
    await pg.sql`CREATE TABLE items_job (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)`;
    await pg.sql`INSERT INTO items_job SELECT x, x % 7, x % 1000 FROM generate_series(1, 20000) x`;
    await pg.sql`CREATE TABLE agg (grp int PRIMARY KEY, n bigint NOT NULL, s bigint NOT NULL)`;
    const dir = tempDir("tm-pgcdc-");
    const { rpc, jm, tms, startTm } = await startCluster(dir, 3);
    clients.push(rpc);
    const job = aggregationJob(dir, { table: "items_job", slot: "cdc_job", target: "agg", source: "snapshotChunkSize: 1000" });
    const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
    const wsql = postgres(pg.url, { max: 1, onnotice: () => {} });
    const writer = startWriter(wsql, "items_job", 11, 25_000);
    writers.push(writer);
    const random = rng(23);
    const byId = new Map(tms.map((tm, i) => [`tm-${i}`, tm]));
    let s = await runningWithNewCheckpoint(rpc, jobId, 0, jm);
    for (let kill = 0; kill < 2; kill++) {
      s = await runningWithNewCheckpoint(rpc, jobId, s.checkpoints.completed, jm);
      await Bun.sleep(100 + Math.floor(random() * 400));
      const victims = runningTaskManagers(await rpc.request("jobStatus", { jobId }));
      const victim = victims[Math.floor(random() * victims.length)]!;
      byId.get(victim)!.kill("SIGKILL");
      byId.delete(victim);
      byId.set(`tm-r${kill}`, startTm(`tm-r${kill}`));
      // The JobManager noticed (else the next kill could fall into the same restart).
      const restarts = s.restarts;
      await waitFor("the restart after the kill", async () => (await rpc.request("jobStatus", { jobId })).restarts > restarts, 30_000, 50);
    }
    s = await runningWithNewCheckpoint(rpc, jobId, s.checkpoints.completed, jm);
    const changes = await writer.stop();
    await wsql.end();
    writers.length = 0;
    expect(changes).toBeGreaterThan(200);
    const oracle = (await pg.sql`SELECT grp, count(*)::int AS n, sum(v)::int AS s FROM items_job GROUP BY grp ORDER BY grp`).map((r) => [r.grp, r.n, r.s]);
    let got: unknown[] = [];
    await waitFor("the target to equal the oracle", async () => {
      const st = await rpc.request("jobStatus", { jobId });
      if (st.state === "FAILED") throw new Error(`job failed: ${st.error?.message}`);
      got = (await pg.sql`SELECT grp, n::int AS n, s::int AS s FROM agg WHERE n <> 0 ORDER BY grp`).map((r) => [r.grp, r.n, r.s]);
      return JSON.stringify(got) === JSON.stringify(oracle);
    }, 40_000, 200).catch((err) => {
      throw new Error(`${err.message}: target ${JSON.stringify(got)}, oracle ${JSON.stringify(oracle)}`);
    });
    const final = await rpc.request("jobStatus", { jobId });
    expect(final.restarts).toBeGreaterThanOrEqual(2);
    // The slot was confirmed as checkpoints completed: the server keeps no more than the last interval.
    const [slot] = await pg.sql`SELECT confirmed_flush_lsn > '0/0' AS moved, active FROM pg_replication_slots WHERE slot_name = 'cdc_job'`;
    expect(slot).toMatchObject({ moved: true, active: true });
    await rpc.request("cancelJob", { jobId });
  }, 120_000);

  test("parallel snapshot, readers driven directly: range splits checkpointed by 3 subtasks mid-snapshot and restored at parallelism 2 under a concurrent writer; the replica equals the table", async () => {
    const table = "items_rescale";
    await pg.sql.unsafe(`CREATE TABLE ${table} (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)`);
    await pg.sql.unsafe(`INSERT INTO ${table} SELECT x, x % 7, x FROM generate_series(1, 6000) x`);
    const replica = new Replica();
    const wsql = postgres(pg.url, { max: 1, onnotice: () => {} });
    const writer = startWriter(wsql, table, 41, 8000);
    writers.push(writer);
    const src = PostgresCdcSource.source({ url: pg.url, tables: [table], slot: "cdc_rescale", snapshotChunkSize: 200, snapshotSplitSize: 1000 });
    const make = (subtaskIndex: number, parallelism: number, restored: ConnectorSplit[] | null, attempt: number) =>
      (src.spec as unknown as { connector: { createReader(c: object): ConnectorSourceReader } }).connector.createReader({ subtaskIndex, parallelism, jobId: "jr", attempt, restoredCheckpointId: restored ? 1 : 0, restoredSplits: restored });
    // Parallelism 3: subtask 0 plans (it must open first), the others take the plan.
    let rs = [make(0, 3, null, 0)];
    await rs[0]!.open();
    rs.push(make(1, 3, null, 0), make(2, 3, null, 0));
    await Promise.all(rs.slice(1).map((r) => r.open()));
    for (let i = 0; i < 4; i++) for (const r of rs) for (const rec of (await r.poll())!) replica.apply(rec as PostgresCdcRecord);
    const saved = rs.flatMap((r) => r.positions());
    const ranges = saved.filter((x) => (x as { kind?: string }).kind === "range").length;
    expect(ranges).toBeGreaterThanOrEqual(6); // about 6,000 rows at 1,000 per range
    expect(saved.some((x) => (x as { kind?: string; done?: boolean }).kind === "range" && !(x as { done?: boolean }).done)).toBe(true);
    for (const r of rs) await r.close();
    await Bun.sleep(200);
    // Restored at parallelism 2: splits by id % 2, as the runtime assigns them.
    rs = [0, 1].map((i) => make(i, 2, saved.filter((x) => x.id % 2 === i), 1));
    for (const r of rs) await r.open();
    let ckpt = 1;
    const n = await (async () => {
      // Checkpoints complete as the runtime would tell them; the stream starts once every range is done in one.
      await waitFor("the stream to start", async () => {
        for (const r of rs) for (const rec of (await r.poll())!) replica.apply(rec as PostgresCdcRecord);
        ckpt++;
        for (const r of rs) r.snapshotState!(ckpt);
        for (const r of rs) await r.notifyCheckpointComplete!(ckpt);
        return (await pg.sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'cdc_rescale' AND active`).length > 0;
      }, 30_000, 0);
      return writer.stop();
    })();
    await wsql.end();
    writers.length = 0;
    expect(n).toBeGreaterThan(50);
    const expected = await tableRows(table);
    await waitFor("the replica to equal the table", async () => {
      for (const r of rs) for (const rec of (await r.poll())!) replica.apply(rec as PostgresCdcRecord);
      return JSON.stringify(replica.table()) === JSON.stringify(expected);
    }, 30_000, 0).catch((err) => {
      const got = replica.table();
      const diff = expected.filter((e, i) => JSON.stringify(e) !== JSON.stringify(got[i])).slice(0, 5);
      throw new Error(`${err.message}: ${got.length} rows vs ${expected.length}; first differences ${JSON.stringify(diff)}`);
    });
    // Segments from both runs: the ranges cut mid-read were resumed with snapshots of their own.
    const [seg] = await pg.sql`SELECT count(*)::int AS n FROM tm_cdc_segments WHERE slot = 'cdc_rescale'`;
    expect(seg!.n).toBeGreaterThan(ranges);
    for (const r of rs) await r.close();
    await pg.sql`SELECT pg_drop_replication_slot('cdc_rescale')`;
  }, 60_000);

  test("parallel snapshot: 50 K rows cut into key ranges read by 3 subtasks while rows change, TaskManagers SIGKILLed mid-snapshot and mid-stream: the target equals the SQL oracle", async () => {
    await pg.sql`CREATE TABLE items_par (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)`;
    await pg.sql`INSERT INTO items_par SELECT x, x % 7, x % 1000 FROM generate_series(1, 50000) x`;
    await pg.sql`CREATE TABLE agg_par (grp int PRIMARY KEY, n bigint NOT NULL, s bigint NOT NULL)`;
    const dir = tempDir("tm-pgcdc-par-");
    const { rpc, jm, tms, startTm } = await startCluster(dir, 3);
    clients.push(rpc);
    // Snapshot rows cost a little CPU each (0.1 ms), so that the kill can fall inside the snapshot.
    const job = aggregationJob(dir, { table: "items_par", slot: "cdc_par", target: "agg_par", source: "snapshotChunkSize: 100, snapshotSplitSize: 5000", slowSnapshot: true });
    const jobId = await submitJob(rpc, await prepareJob(job, [], 3));
    const wsql = postgres(pg.url, { max: 1, onnotice: () => {} });
    const writer = startWriter(wsql, "items_par", 31, 60_000);
    writers.push(writer);
    // Mid-snapshot: a checkpoint completed, some range splits read, some not begun yet.
    const progress = async () =>
      (await pg.sql`SELECT (SELECT count(*)::int FROM tm_cdc_splits WHERE slot = 'cdc_par') AS splits,
                           (SELECT count(DISTINCT split)::int FROM tm_cdc_segments WHERE slot = 'cdc_par') AS begun,
                           (SELECT count(DISTINCT subtask)::int FROM tm_cdc_segments WHERE slot = 'cdc_par') AS subtasks`.catch(() => [{ splits: 0, begun: 0, subtasks: 0 }]))[0] as { splits: number; begun: number; subtasks: number };
    let mid = { splits: 0, begun: 0, subtasks: 0 };
    await waitFor("the snapshot to be under way with a checkpoint completed", async () => {
      const st = await rpc.request("jobStatus", { jobId });
      if (st.state === "FAILED") throw new Error(`job failed: ${st.error?.message}`);
      mid = await progress();
      if (mid.splits > 0 && mid.begun >= mid.splits) throw new Error(`the snapshot got past every range before the kill: ${JSON.stringify(mid)}`);
      return st.checkpoints.completed > 0 && mid.begun >= 2 && st;
    }, 60_000, 20).catch(async (err) => {
      throw new Error(`${err.message}: ${JSON.stringify(mid)}; job status: ${JSON.stringify(await rpc.request("jobStatus", { jobId }))}\nJobManager: ${jm.stderr.slice(-3000)}\nTaskManagers: ${tms.map((t) => t.stderr.slice(-2000)).join("\n")}`);
    });
    expect(mid.splits).toBeGreaterThanOrEqual(10); // about 50,000 rows at 5,000 per range
    const byId = new Map(tms.map((tm, i) => [`tm-${i}`, tm]));
    const victim = runningTaskManagers(await rpc.request("jobStatus", { jobId }))[0]!;
    byId.get(victim)!.kill("SIGKILL");
    byId.set("tm-r0", startTm("tm-r0"));
    await waitFor("the restart after the kill", async () => (await rpc.request("jobStatus", { jobId })).restarts > 0, 30_000, 50);
    // The stream starts once a completed checkpoint has every range done.
    await waitFor("every range split done in a completed checkpoint", async () => (await pg.sql`SELECT count(*)::int AS n FROM tm_cdc_splits WHERE slot = 'cdc_par' AND done_checkpoint IS NULL`)[0]!.n === 0, 60_000, 100);
    await waitFor("the stream to be read", async () => (await pg.sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'cdc_par' AND active`).length > 0, 30_000, 100);
    let s = await runningWithNewCheckpoint(rpc, jobId, 0, jm);
    // A second kill while the stream runs: every subtask restores its (done) ranges while subtask 0 streams.
    const victim2 = runningTaskManagers(s)[0]!;
    const restarts = s.restarts;
    byId.get(victim2)!.kill("SIGKILL");
    startTm("tm-r1");
    await waitFor("the restart after the second kill", async () => (await rpc.request("jobStatus", { jobId })).restarts > restarts, 30_000, 50);
    s = await runningWithNewCheckpoint(rpc, jobId, s.checkpoints.completed, jm);
    s = await runningWithNewCheckpoint(rpc, jobId, s.checkpoints.completed, jm);
    const changes = await writer.stop();
    await wsql.end();
    writers.length = 0;
    expect(changes).toBeGreaterThan(100);
    const after = await progress();
    // Ranges were read by more than one subtask.
    expect(after.subtasks).toBeGreaterThanOrEqual(2);
    const oracle = (await pg.sql`SELECT grp, count(*)::int AS n, sum(v)::int AS s FROM items_par GROUP BY grp ORDER BY grp`).map((r) => [r.grp, r.n, r.s]);
    let got: unknown[] = [];
    await waitFor("the target to equal the oracle", async () => {
      const st = await rpc.request("jobStatus", { jobId });
      if (st.state === "FAILED") throw new Error(`job failed: ${st.error?.message}`);
      got = (await pg.sql`SELECT grp, n::int AS n, s::int AS s FROM agg_par WHERE n <> 0 ORDER BY grp`).map((r) => [r.grp, r.n, r.s]);
      return JSON.stringify(got) === JSON.stringify(oracle);
    }, 40_000, 200).catch((err) => {
      throw new Error(`${err.message}: target ${JSON.stringify(got)}, oracle ${JSON.stringify(oracle)}`);
    });
    expect((await rpc.request("jobStatus", { jobId })).restarts).toBeGreaterThanOrEqual(2);
    await rpc.request("cancelJob", { jobId });
  }, 150_000);

  test("clear errors: the slot dropped under a running job names the slot; a wrong password names the option; bad options", async () => {
    await pg.sql`CREATE TABLE items_gone (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)`;
    await pg.sql`INSERT INTO items_gone VALUES (1, 1, 1)`;
    const dir = tempDir("tm-pgcdc-gone-");
    const child = new Child([BUN, "main.ts", "local", "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=2", "-D", "restart-strategy.fixed-delay.delay=100ms", writeJob(dir, "gone.ts", `
      import { PostgresCdcSource } from ${API};
      export default (env) => {
        env.enableCheckpointing(100);
        env.fromSource(PostgresCdcSource.source({ url: ${JSON.stringify(pg.url)}, tables: ["items_gone"], slot: "cdc_gone" }))
          .map((r) => { console.log("got", r.op, r.after?.id); return r; }).print();
      };`)]);
    await child.waitForOutput(/got read 1/, 30_000);
    await pg.sql`INSERT INTO items_gone VALUES (2, 1, 1)`;
    await child.waitForOutput(/got insert 2/, 30_000);
    // The slot is dropped only after a completed checkpoint holds the insert (the slot confirms its LSN on
    // notify-complete): before that, a restart rightly starts afresh with a new slot and a new snapshot.
    const insertLsn = /"op":"insert".*?"lsn":"([0-9A-F]+\/[0-9A-F]+)"/.exec(child.stdout)![1]!;
    await waitFor("a completed checkpoint past the insert", async () => (await pg.sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'cdc_gone' AND confirmed_flush_lsn >= ${insertLsn}::pg_lsn`).length > 0, 30_000, 50);
    // An active slot cannot be dropped: its reader's server process is ended first (as an operator would).
    await waitFor("the slot to be dropped", async () => {
      await pg.sql`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'cdc_gone' AND active_pid IS NOT NULL`;
      return pg.sql`SELECT pg_drop_replication_slot('cdc_gone')`.then(() => true, () => false);
    }, 20_000, 20);
    expect(await child.exited(30_000)).not.toBe(0);
    expect(child.stdout + child.stderr).toContain('replication slot "cdc_gone" does not exist');
    // A wrong password: one line naming the option.
    const r = reader({ table: "items_gone", slot: "cdc_pw", password: "wrong" }, null);
    const err = await r.open().then(() => "opened", (e: Error) => e.message);
    await r.close();
    expect(err).toMatch(/cannot connect to PostgreSQL at 127\.0\.0\.1:\d+ .*\(option password\)/);
    // Nothing listening there: the host and port are named.
    const port = await freePort();
    const src = PostgresCdcSource.source({ host: "127.0.0.1", port, password: "x", tables: ["items_gone"], slot: "cdc_host", connectTimeoutMs: 3000 });
    const noServer = (src.spec as unknown as { connector: { createReader(c: object): ConnectorSourceReader } }).connector.createReader({ subtaskIndex: 0, parallelism: 1, jobId: "j", attempt: 0, restoredCheckpointId: 0, restoredSplits: null });
    expect(await noServer.open().then(() => "opened", (e: Error) => e.message)).toMatch(new RegExp(`cannot connect to PostgreSQL at 127\\.0\\.0\\.1:${port} .*\\(options host/port\\)`));
    await noServer.close();
    expect(() => PostgresCdcSource.source({ url: pg.url, tables: [], slot: "x" })).toThrow(/option tables must be a non-empty list/);
    expect(() => PostgresCdcSource.source({ url: pg.url, tables: ["t"], slot: "Bad-Slot" })).toThrow(/option slot must be lower-case letters/);
    const missing = reader({ table: "no_such_table", slot: "cdc_x" }, null);
    expect(await missing.open().then(() => "opened", (e: Error) => e.message)).toContain('table "no_such_table" does not exist (option tables)');
    await missing.close();
  }, 60_000);

  test("examples/postgres-cdc.ts: totals per customer follow inserts, updates and deletes of orders", async () => {
    await pg.sql`CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount int NOT NULL)`;
    await pg.sql`CREATE TABLE customer_totals (customer text PRIMARY KEY, orders bigint NOT NULL, amount bigint NOT NULL)`;
    await pg.sql`INSERT INTO orders SELECT x, 'c' || (x % 5), x FROM generate_series(1, 500) x`;
    const child = new Child([BUN, "main.ts", "local", "-p", "2", "examples/postgres-cdc.ts", pg.url]);
    await waitFor("the slot", async () => (await pg.sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'orders_cdc' AND active`).length > 0, 30_000, 100);
    await pg.sql`INSERT INTO orders SELECT x, 'c' || (x % 3), x FROM generate_series(501, 700) x`;
    await pg.sql`UPDATE orders SET amount = amount * 2, customer = 'c9' WHERE id % 7 = 0`;
    await pg.sql`DELETE FROM orders WHERE id % 11 = 0`;
    const oracle = JSON.stringify((await pg.sql`SELECT customer, count(*)::int AS n, sum(amount)::int AS a FROM orders GROUP BY 1 ORDER BY 1`).map((r) => [r.customer, r.n, r.a]));
    let got = "";
    await waitFor("the totals to equal the oracle", async () => {
      if (child.proc.exitCode !== null) throw new Error(`the example exited: ${child.stderr.slice(-2000)}`);
      got = JSON.stringify((await pg.sql`SELECT customer, orders::int AS n, amount::int AS a FROM customer_totals WHERE orders <> 0 ORDER BY 1`).map((r) => [r.customer, r.n, r.a]));
      return got === oracle;
    }, 40_000, 200).catch((err) => {
      throw new Error(`${err.message}: ${got} vs ${oracle}`);
    });
  }, 60_000);
});
