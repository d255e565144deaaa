// The PostgreSQL sink against a real server (tests/servers.ts): exactly-once through prepared transactions with
// TaskManagers SIGKILLed and the database restarted mid-job (real processes), the settling of prepared
// transactions that older attempts left behind, the at-least-once upsert mode, and clear errors for a server that
// is unreachable, refuses the password or has prepared transactions disabled.
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import * as path from "node:path";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { PostgresSink } from "../src/api/index.ts";
import { planBatch, preparedId } from "../src/connectors/postgres-sink.ts";
import type { OperatorContext } from "../src/runtime/operator.ts";
import * as fs from "node:fs";
import { BUN, Child, countWords, removeTempDirs, rng, tempDir, waitFor, writeJob } from "./helpers.ts";
import { freePort, PG_PASSWORD, runningTaskManagers, runningWithNewCheckpoint, startCluster, startPostgres, stopPostgres, type PgServer } from "./servers.ts";

const KEYS = 23;
const API = JSON.stringify(path.resolve("src/api/index.ts"));

let pg: PgServer;
const clients: RpcConnection[] = [];
beforeAll(async () => {
  pg = await startPostgres();
}, 60_000);
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Child.stopAll();
});
afterAll(async () => {
  await stopPostgres(pg);
  removeTempDirs();
});

/** An OperatorContext for a sink writer driven directly by a test. */
function sinkContext(over: Partial<OperatorContext>): OperatorContext {
  return {
    subtaskIndex: 0,
    parallelism: 1,
    taskName: "test",
    runtimeMode: "streaming",
    node: () => {
      throw new Error("no nodes");
    },
    keyed: null,
    operatorState: null as never,
    jobId: "job1",
    attempt: 0,
    restoredCheckpointId: 0,
    time: { ts: null },
    ...over,
  };
}

describe("PostgreSQL sink (real server)", () => {
  test("exactly-once: a TaskManager SIGKILLed and the database restarted mid-job; every row exactly once, nothing left prepared", async () => {
    await pg.sql`CREATE TABLE counts (k int NOT NULL, c int NOT NULL)`;
    const dir = tempDir("tm-pgsink-");
    const { rpc, jm, tms, startTm } = await startCluster(dir, 3);
    clients.push(rpc);
    const N = 30_000;
    // Keyed counts [k, 1..n_k]: the set of rows does not depend on how records interleave, so an exactly-once
    // run writes exactly {(k, c) : 1 <= c <= n_k}; a plain INSERT table shows every duplicate.
    const job = writeJob(dir, "job.ts", `
      import { PostgresSink, ValueStateDescriptor } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env) => {
        env.enableCheckpointing(200);
        env.fromSequence(1, ${N})
          .map((x) => { if (x % 2 === 0) Atomics.wait(pause, 0, 0, 1); return x; })
          .keyBy((x) => x % ${KEYS})
          .process({
            open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
            processElement(x, ctx, out) { const c = this.count.value() + 1; this.count.update(c); out.collect([ctx.getCurrentKey(), c]); },
          })
          .sinkTo(PostgresSink.exactlyOnceSink({ url: ${JSON.stringify(pg.url)}, statement: "INSERT INTO counts (k, c) VALUES ($1, $2)", rowMapper: (r) => r, batchSize: 200 }));
      };`);
    const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
    const random = rng(17);
    const byId = new Map(tms.map((tm, i) => [`tm-${i}`, tm]));
    // Rows become visible only as checkpoints complete: none before the first.
    let s = await runningWithNewCheckpoint(rpc, jobId, 0, jm);
    for (let kill = 0; kill < 1; kill++) {
      s = await runningWithNewCheckpoint(rpc, jobId, s.checkpoints.completed, jm);
      await Bun.sleep(50 + Math.floor(random() * 300));
      const victims = runningTaskManagers(await rpc.request("jobStatus", { jobId }));
      if (victims.length === 0) break;
      const victim = victims[Math.floor(random() * victims.length)]!;
      byId.get(victim)!.kill("SIGKILL");
      byId.delete(victim);
      byId.set(`tm-r${kill}`, startTm(`tm-r${kill}`));
    }
    // The database goes down under the running job: its tasks fail, the job restarts and settles what was prepared.
    s = await runningWithNewCheckpoint(rpc, jobId, s.checkpoints.completed, jm);
    await pg.sql.end({ timeout: 1 });
    await pg.stop();
    await Bun.sleep(500);
    await pg.start();
    pg.sql = (await import("postgres")).default(pg.url, { max: 4, onnotice: () => {}, idle_timeout: 0 });
    const final = await waitForJob(rpc, jobId, () => {}, 100);
    expect(final.error?.message).toBeUndefined();
    expect(final.state).toBe("FINISHED");
    expect(final.restarts).toBeGreaterThanOrEqual(2); // the kill, and the database restart
    const perKey = new Array<number>(KEYS).fill(0);
    for (let x = 1; x <= N; x++) perKey[x % KEYS]!++;
    const dup = await pg.sql`SELECT k, c, count(*)::int AS n FROM counts GROUP BY k, c HAVING count(*) > 1 LIMIT 5`;
    expect(dup.map((r) => [r.k, r.c, r.n])).toEqual([]);
    const got = await pg.sql`SELECT k, count(*)::int AS n, min(c) AS lo, max(c) AS hi FROM counts GROUP BY k ORDER BY k`;
    expect(got.map((r) => [r.k, r.n, r.lo, r.hi])).toEqual(perKey.map((n, k) => [k, n, 1, n]));
    expect((await pg.sql`SELECT gid FROM pg_prepared_xacts`).length).toBe(0);
  }, 170_000);

  test("restore settles what older attempts prepared: covered by the restored checkpoint committed, later rolled back, other subtasks' left alone", async () => {
    await pg.sql`CREATE TABLE settle (v text NOT NULL)`;
    const job = "0123abcd";
    // Attempt 0 at parallelism 2 left transactions prepared: subtask 0 at checkpoints 3, 5 and 7, subtask 1 at 5.
    for (const [subtask, ckpt] of [[0, 3], [0, 5], [0, 7], [1, 5]] as const) {
      const gid = preparedId(job, "9", 0, subtask, ckpt);
      await pg.sql.begin(async (tx) => {
        await tx`INSERT INTO settle VALUES (${`s${subtask}-c${ckpt}`})`;
        await tx.unsafe(`PREPARE TRANSACTION '${gid}'`);
      });
    }
    // Another job's and another sink's prepared transactions are not this sink's business.
    await pg.sql.begin(async (tx) => {
      await tx`INSERT INTO settle VALUES ('other')`;
      await tx.unsafe(`PREPARE TRANSACTION '${preparedId("ffff", "9", 0, 0, 1)}'`);
    });
    // Attempt 1 restores checkpoint 5 at parallelism 2: its subtask 0 settles old subtask 0's transactions.
    const sink = PostgresSink.exactlyOnceSink({ url: pg.url, statement: "INSERT INTO settle VALUES ($1)", rowMapper: (r: string) => [r] });
    const w = sink.connector.createWriter(sinkContext({ jobId: job, attempt: 1, restoredCheckpointId: 5, parallelism: 2, subtaskIndex: 0 }), "9");
    await w.open!();
    try {
      const rows = (await pg.sql`SELECT v FROM settle ORDER BY v`).map((r) => r.v);
      expect(rows).toEqual(["s0-c3", "s0-c5"]);
      const left = (await pg.sql`SELECT gid FROM pg_prepared_xacts`).map((r) => r.gid).sort();
      expect(left).toEqual([preparedId("ffff", "9", 0, 0, 1), preparedId(job, "9", 0, 1, 5)].sort());
      // The writer's own rows: prepared at the barrier, visible on completion only.
      w.process("new");
      await w.snapshotState!(6);
      expect((await pg.sql`SELECT v FROM settle WHERE v = 'new'`).length).toBe(0);
      expect((await pg.sql`SELECT gid FROM pg_prepared_xacts WHERE gid = ${preparedId(job, "9", 1, 0, 6)}`).length).toBe(1);
      await w.notifyCheckpointComplete!(6);
      expect((await pg.sql`SELECT v FROM settle WHERE v = 'new'`).length).toBe(1);
    } finally {
      w.dispose!();
      for (const { gid } of await pg.sql`SELECT gid FROM pg_prepared_xacts`) await pg.sql.unsafe(`ROLLBACK PREPARED '${gid}'`);
    }
  }, 30_000);

  test("FLIP-147: end of input only stops writing; the final checkpoint prepares the rest and its notify commits it (the final commit is the fallback)", async () => {
    await pg.sql`CREATE TABLE final_ckpt (v text NOT NULL)`;
    const sink = PostgresSink.exactlyOnceSink({ url: pg.url, statement: "INSERT INTO final_ckpt VALUES ($1)", rowMapper: (r: string) => [r] });
    const prepared = async () => (await pg.sql`SELECT gid FROM pg_prepared_xacts`).map((r) => r.gid as string);
    const rows = async () => (await pg.sql`SELECT v FROM final_ckpt ORDER BY v`).map((r) => r.v as string);
    const w = sink.connector.createWriter(sinkContext({ jobId: "f147", finalCheckpoint: true }), "3");
    await w.open!();
    try {
      w.process("a");
      await w.snapshotState!(1);
      await w.notifyCheckpointComplete!(1);
      w.process("b");
      await w.endInput!();
      // Nothing prepared at end of input: the transaction of "b" is still open, for the final checkpoint.
      expect(await prepared()).toEqual([]);
      expect(w.hasFinalCommit!()).toBe(true);
      await w.snapshotState!(2);
      expect(await prepared()).toEqual([preparedId("f147", "3", 0, 0, 2)]);
      await w.notifyCheckpointComplete!(2);
      expect(await rows()).toEqual(["a", "b"]);
      expect(await prepared()).toEqual([]);
      expect(w.hasFinalCommit!()).toBe(false); // nothing left for the JobManager-approved final commit
    } finally {
      w.dispose!();
    }
    // The fallback: no final checkpoint completes, so the approved final commit prepares and commits the rest.
    const w2 = sink.connector.createWriter(sinkContext({ jobId: "f147", attempt: 1, finalCheckpoint: true }), "3");
    await w2.open!();
    try {
      w2.process("c");
      await w2.endInput!();
      expect(w2.hasFinalCommit!()).toBe(true);
      await w2.finalCommit!();
      expect(await rows()).toEqual(["a", "b", "c"]);
      expect(await prepared()).toEqual([]);
    } finally {
      w2.dispose!();
    }
  }, 30_000);

  test("at-least-once upsert mode: batched by size and time; the table equals the SQL oracle (final sum per key)", async () => {
    await pg.sql`CREATE TABLE latest (k int PRIMARY KEY, v bigint NOT NULL)`;
    const dir = tempDir("tm-pgupsert-");
    // Running sums per key, upserted: the last write per key is its total (per-key order is kept on the way).
    const out = Bun.spawnSync([BUN, "main.ts", "local", "-p", "2", writeJob(dir, "job.ts", `
      import { PostgresSink } from ${API};
      export default (env) => {
        env.fromSequence(1, 20000)
          .map((x) => [x % 100, x])
          .keyBy((r) => r[0])
          .sum(1)
          .sinkTo(PostgresSink.sink({ url: ${JSON.stringify(pg.url)}, statement: PostgresSink.upsertStatement("latest", ["k", "v"], ["k"]), rowMapper: (r) => r, batchSize: 64, batchIntervalMs: 20 }));
      };`)], { cwd: path.resolve("."), stdout: "pipe", stderr: "pipe" });
    expect(out.stderr.toString()).not.toMatch(/error/i);
    expect(out.exitCode).toBe(0);
    const expected = await pg.sql`SELECT (x % 100)::int AS k, sum(x)::text AS v FROM generate_series(1, 20000) x GROUP BY 1 ORDER BY 1`;
    const got = await pg.sql`SELECT k, v::text AS v FROM latest ORDER BY k`;
    expect(got.map((r) => [r.k, r.v])).toEqual(expected.map((r) => [r.k, r.v]));
  }, 60_000);

  test("batches: a plain INSERT or upsert runs as one unnest() statement per batch; repeated keys keep per-row semantics", async () => {
    await pg.sql`CREATE TABLE acc ("K" int PRIMARY KEY, v bigint NOT NULL, note text)`;
    const stmt = `INSERT INTO acc ("K", v, note) VALUES ($1, $2, $3) ON CONFLICT ("K") DO UPDATE SET v = acc.v + EXCLUDED.v, note = EXCLUDED.note`;
    expect((await planBatch(pg.sql, stmt))?.sql).toContain('SELECT * FROM unnest($1::integer[], $2::bigint[], $3::text[]) ON CONFLICT ("K")');
    expect(await planBatch(pg.sql, "INSERT INTO acc (v) VALUES ($1 + 1)")).toBeNull();
    expect(await planBatch(pg.sql, "UPDATE acc SET v = $1")).toBeNull();
    // An accumulating upsert with keys repeated inside one batch: every row counts, in order (the last note wins).
    const w = PostgresSink.sink({ url: pg.url, statement: stmt, rowMapper: (r: [number, number, string]) => r, batchSize: 1000 }).connector.createWriter(sinkContext({}), "1");
    await w.open!();
    try {
      for (let i = 0; i < 3000; i++) w.process([i % 13, i, `n${i}`]);
      await w.snapshotState!(1);
    } finally {
      w.dispose!();
    }
    const got = (await pg.sql`SELECT "K" AS k, v::int AS v, note FROM acc ORDER BY 1`).map((r) => [r.k, r.v, r.note]);
    const expected = Array.from({ length: 13 }, (_, k) => {
      let v = 0;
      let last = -1;
      for (let i = k; i < 3000; i += 13) (v += i), (last = i);
      return [k, v, `n${last}`];
    });
    expect(got).toEqual(expected);
  }, 30_000);

  test("examples/postgres-sink.ts: the word counts of its input, exactly once through prepared transactions", async () => {
    await pg.sql`CREATE TABLE word_counts (word text PRIMARY KEY, n bigint NOT NULL)`;
    const r = Bun.spawnSync([BUN, "main.ts", "local", "-p", "2", "examples/postgres-sink.ts", pg.url], { cwd: path.resolve("."), stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).not.toMatch(/error/i);
    expect(r.exitCode).toBe(0);
    const expected = countWords(fs.readFileSync("examples/data/hamlet.txt", "utf8").toLowerCase());
    const got = new Map((await pg.sql`SELECT word, n::int AS n FROM word_counts`).map((row) => [row.word as string, row.n as number]));
    expect(got.size).toBe(expected.size);
    for (const [w, n] of expected) expect([w, got.get(w)]).toEqual([w, n]);
    expect((await pg.sql`SELECT gid FROM pg_prepared_xacts`).length).toBe(0);
  }, 60_000);

  test("clear errors: unreachable host, wrong password, unknown database, prepared transactions disabled", async () => {
    const port = await freePort();
    const open = async (opts: object, exactlyOnce = false) => {
      const full = { statement: "SELECT $1", rowMapper: (r: unknown) => [r], connectTimeoutMs: 3000, ...opts };
      const spec = exactlyOnce ? PostgresSink.exactlyOnceSink(full) : PostgresSink.sink(full);
      const w = spec.connector.createWriter(sinkContext({}), "1");
      try {
        await w.open!();
        return "opened";
      } catch (err) {
        return (err as Error).message;
      } finally {
        w.dispose!();
      }
    };
    expect(await open({ host: "127.0.0.1", port, password: PG_PASSWORD })).toMatch(new RegExp(`cannot connect to PostgreSQL at 127\\.0\\.0\\.1:${port} .*\\(options host/port\\)`));
    expect(await open({ url: pg.url, password: "wrong" })).toMatch(/\(option password\): .*password authentication failed/);
    expect(await open({ url: pg.url, database: "nope" })).toMatch(/\(option database\): .*"nope"/);
    expect(() => PostgresSink.sink({ url: pg.url, statement: "", rowMapper: (r: unknown) => [r] })).toThrow(/option statement must be a non-empty string/);
    expect(() => PostgresSink.sink({ url: "http://x", statement: "x", rowMapper: (r: unknown) => [r] })).toThrow(/option url must start with postgres:\/\//);
    // A second server with max_prepared_transactions = 0 (PostgreSQL's default).
    const off = await startPostgres(["max_prepared_transactions = 0"]);
    try {
      expect(await open({ url: off.url }, true)).toMatch(/exactly-once needs prepared transactions, but the server at 127\.0\.0\.1:\d+ has max_prepared_transactions = 0/);
      expect(await open({ url: off.url }, false)).toBe("opened");
    } finally {
      await stopPostgres(off);
    }
  }, 60_000);
});
