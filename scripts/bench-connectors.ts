// Connectors against their clients alone (issue 17), side by side in one run: each case runs A (the connector,
// driven directly as the runtime drives it: a sink writer with its checkpoints, a source reader polled) and B (the
// same npm client in a plain loop), alternating A, B, A, B, ...; median of the runs with min and max, this
// process's CPU time beside wall time (the servers' CPU is not in it).
//  - PostgreSQL sink, exactly-once (prepared transaction per 10,000 rows) and upsert (at-least-once), vs a loop
//    of INSERT ... SELECT FROM unnest() batches of 1,000 rows on one connection;
//  - PostgreSQL CDC: the changes of --updates row updates read from a slot by the CDC source (decoded to records)
//    vs the client reading the same changes from a slot of its own (counting pgoutput Update messages);
//  - NATS JetStream source (bounded read of a stream, payload parsed as JSON) vs an ordered consumer doing the
//    same; JetStream sink (exactly-once and at-least-once) vs publishes with 256 acknowledgements in flight.
// Servers: a real PostgreSQL and nats-server in temp dirs (tests/servers.ts).
// Run: bun scripts/bench-connectors.ts [--runs 3] [--rows 200000] [--updates 1000000] [--messages 200000]
import * as os from "node:os";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { JetStreamSink, JetStreamSource, PostgresCdcSource, PostgresSink } from "../src/api/index.ts";
import type { ConnectorSourceReader, ConnectorSplit, SinkWriter } from "../src/api/connector.ts";
import { OperatorStateStore } from "../src/state/operator-state.ts";
import { startNats, startPostgres, stopPostgres } from "../tests/servers.ts";
import { removeTempDirs } from "../tests/helpers.ts";
import { median } from "./bench-helpers/stats.ts";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    rows: { type: "string", default: "200000" },
    updates: { type: "string", default: "1000000" },
    messages: { type: "string", default: "200000" },
    only: { type: "string", default: "" },
  },
});
const RUNS = Number(values.runs);
const ROWS = Number(values.rows);
const UPDATES = Number(values.updates);
const MESSAGES = Number(values.messages);
const log = (s: string) => console.error(`[bench-connectors] ${s}`);

interface Side {
  label: string;
  /** Untimed set-up before each run; returns the timed part, which returns how many items it moved. */
  prepare(run: number): Promise<() => Promise<number>>;
}
interface Case {
  name: string;
  a: Side;
  b: Side;
}

const writerCtx = (jobId: string) => ({ subtaskIndex: 0, parallelism: 1, jobId, attempt: 0, restoredCheckpointId: 0, operatorState: new OperatorStateStore() });

/** Drives a sink writer as the runtime does: waitReady after each 1,000 records, a checkpoint every `every`. */
async function driveWriter(w: SinkWriter, n: number, record: (i: number) => unknown, every: number): Promise<number> {
  let ckpt = 1;
  for (let i = 0; i < n; i++) {
    w.process(record(i));
    if (i % 1000 === 999) {
      const p = w.waitReady?.();
      if (p) await p;
    }
    if ((i + 1) % every === 0 || i === n - 1) {
      await w.snapshotState?.(ckpt);
      await w.notifyCheckpointComplete?.(ckpt);
      ckpt++;
    }
  }
  return n;
}

const pg = await startPostgres();
const nats = await startNats();
const sql = postgres(pg.url, { max: 2, onnotice: () => {}, idle_timeout: 0 });
const cases: Case[] = [];

// ---------------------------------------------------------------- PostgreSQL sink
await sql`CREATE TABLE b_rows (k int NOT NULL, v bigint NOT NULL)`;
await sql`CREATE TABLE b_up (k int PRIMARY KEY, v bigint NOT NULL)`;
/** The plain loop: batches of 1,000 rows as INSERT ... SELECT FROM unnest() on one connection, each committed. */
function plainLoop(statement: string, key: (i: number) => number): Side {
  return {
    label: "client loop, unnest batches of 1000",
    async prepare() {
      await sql`TRUNCATE b_rows, b_up`;
      const one = postgres(pg.url, { max: 1, onnotice: () => {}, idle_timeout: 0 });
      await one`SELECT 1`;
      return async () => {
        for (let i = 0; i < ROWS; i += 1000) {
          const ks: number[] = [];
          const vs: number[] = [];
          for (let j = i; j < Math.min(ROWS, i + 1000); j++) ks.push(key(j)), vs.push(j);
          await one.unsafe(statement, [ks, vs] as never[], { prepare: true });
        }
        await one.end();
        return ROWS;
      };
    },
  };
}
cases.push({
  name: `PostgreSQL sink exactly-once, ${ROWS} rows (rows/s)`,
  a: {
    label: "PostgresSink.exactlyOnceSink, checkpoint every 10000 rows",
    async prepare(run) {
      await sql`TRUNCATE b_rows, b_up`;
      const w = PostgresSink.exactlyOnceSink({ url: pg.url, statement: "INSERT INTO b_rows (k, v) VALUES ($1, $2)", rowMapper: (r: number[]) => r }).connector.createWriter(writerCtx(`eo${run}`), "1");
      await w.open!();
      return async () => {
        const n = await driveWriter(w, ROWS, (i) => [i, i], 10_000);
        w.dispose!();
        return n;
      };
    },
  },
  b: plainLoop("INSERT INTO b_rows (k, v) SELECT * FROM unnest($1::int[], $2::bigint[])", (i) => i),
});
cases.push({
  name: `PostgreSQL sink upsert (at-least-once), ${ROWS} rows on 50000 keys (rows/s)`,
  a: {
    label: "PostgresSink.sink(upsertStatement)",
    async prepare(run) {
      await sql`TRUNCATE b_rows, b_up`;
      const w = PostgresSink.sink({ url: pg.url, statement: PostgresSink.upsertStatement("b_up", ["k", "v"], ["k"]), rowMapper: (r: number[]) => r }).connector.createWriter(writerCtx(`up${run}`), "1");
      await w.open!();
      return async () => {
        const n = await driveWriter(w, ROWS, (i) => [i % 50_000, i], 10_000);
        w.dispose!();
        return n;
      };
    },
  },
  b: plainLoop("INSERT INTO b_up (k, v) SELECT * FROM unnest($1::int[], $2::bigint[]) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", (i) => i % 50_000),
});

// ---------------------------------------------------------------- PostgreSQL CDC
let generateSeconds = 0;
if (!values.only || values.only === "cdc") {
  const TABLE_ROWS = 10_000;
  await sql`CREATE TABLE cdc_bench (id int PRIMARY KEY, v int NOT NULL, note text NOT NULL)`;
  await sql`ALTER TABLE cdc_bench REPLICA IDENTITY FULL`;
  await sql`INSERT INTO cdc_bench SELECT x, 0, 'row ' || x FROM generate_series(1, ${TABLE_ROWS}) x`;
  await sql`CREATE PUBLICATION bench_pub FOR TABLE cdc_bench`;
  // One slot per run and side, all created before the updates: each reads the same changes.
  for (let r = 0; r < RUNS; r++) for (const side of ["a", "b"]) await sql`SELECT pg_create_logical_replication_slot(${`bench_${side}_${r}`}, 'pgoutput')`;
  const t0 = performance.now();
  for (let done = 0; done < UPDATES; ) {
    const n = Math.min(TABLE_ROWS, UPDATES - done);
    await sql`UPDATE cdc_bench SET v = v + 1 WHERE id <= ${n}`;
    done += n;
  }
  generateSeconds = (performance.now() - t0) / 1000;
  log(`${UPDATES} updates generated in ${generateSeconds.toFixed(1)} s`);
  cases.push({
    name: `PostgreSQL CDC, ${UPDATES} row updates in transactions of ${TABLE_ROWS} (rows/s)`,
    a: {
      label: "PostgresCdcSource reader (records with before/after)",
      async prepare(run) {
        const split = { type: "connector", connector: "postgres-cdc", id: 0, slot: `bench_a_${run}`, tables: ["public.cdc_bench"], phase: "stream", table: 0, after: null, segments: [], lsn: null } as ConnectorSplit;
        const src = PostgresCdcSource.source({ url: pg.url, tables: ["cdc_bench"], slot: `bench_a_${run}`, publication: "bench_pub" });
        const reader = (src.spec as unknown as { connector: { createReader(c: object): ConnectorSourceReader } }).connector.createReader({ subtaskIndex: 0, parallelism: 1, jobId: "b", attempt: 1, restoredCheckpointId: 1, restoredSplits: [split] });
        return async () => {
          await reader.open();
          let n = 0;
          while (n < UPDATES) for (const r of (await reader.poll())!) if ((r as { op: string }).op === "update") n++;
          await reader.close();
          return n;
        };
      },
    },
    b: {
      label: "client: START_REPLICATION, counting Update messages",
      async prepare(run) {
        return async () => {
          const repl = postgres(pg.url, { max: 1, onnotice: () => {}, fetch_types: false, connection: { replication: "database" } } as postgres.Options<{}>);
          const stream = (await repl.unsafe(`START_REPLICATION SLOT bench_b_${run} LOGICAL 0/0 (proto_version '1', publication_names 'bench_pub')`).writable()) as unknown as import("node:stream").Duplex;
          let n = 0;
          await new Promise<void>((resolve) => {
            stream.on("data", (b: Buffer) => {
              if (b[0] === 0x77 && b[25] === 0x55 && ++n === UPDATES) resolve();
            });
          });
          stream.destroy();
          await repl.end({ timeout: 1 }).catch(() => {});
          return n;
        };
      },
    },
  });
}

// ---------------------------------------------------------------- NATS JetStream
const nc = await connect({ servers: nats.url });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);
const enc = new TextEncoder();
const dec = new TextDecoder();
await jsm.streams.add({ name: "BENCH", subjects: ["bench.>"] });
await jsm.streams.add({ name: "BOUT", subjects: ["bout"] });
{
  const acks: Promise<unknown>[] = [];
  for (let i = 0; i < MESSAGES; i++) {
    acks.push(js.publish(`bench.${i % 4}`, enc.encode(JSON.stringify({ i, k: i % 100 }))));
    if (acks.length >= 1000) await Promise.all(acks.splice(0));
  }
  await Promise.all(acks);
}
cases.push({
  name: `JetStream source, ${MESSAGES} messages (msgs/s)`,
  a: {
    label: "JetStreamSource reader (bounded)",
    async prepare() {
      const src = JetStreamSource.source({ servers: nats.url, stream: "BENCH", bounded: true });
      const reader = (src.spec as unknown as { connector: { createReader(c: object): ConnectorSourceReader } }).connector.createReader({ subtaskIndex: 0, parallelism: 1, jobId: "b", attempt: 0, restoredCheckpointId: 0, restoredSplits: null });
      return async () => {
        await reader.open();
        let n = 0;
        for (;;) {
          const chunk = await reader.poll();
          if (chunk === null) break;
          n += chunk.length;
        }
        await reader.close();
        return n;
      };
    },
  },
  b: {
    label: "client: ordered consumer, JSON.parse of each payload",
    async prepare() {
      return async () => {
        const last = (await jsm.streams.info("BENCH")).state.last_seq;
        const c = await js.consumers.get("BENCH", { deliver_policy: DeliverPolicy.All });
        const msgs = await c.consume({ max_messages: 1024 });
        let n = 0;
        for await (const m of msgs) {
          JSON.parse(dec.decode(m.data));
          n++;
          if (m.seq >= last) break;
        }
        await msgs.close();
        return n;
      };
    },
  },
});
const clientPublish: Side = {
  label: "client: js.publish, 256 acks in flight",
  async prepare() {
    await jsm.streams.purge("BOUT");
    return async () => {
      const inFlight = new Set<Promise<unknown>>();
      for (let i = 0; i < MESSAGES; i++) {
        const p = js.publish("bout", enc.encode(JSON.stringify({ i, k: i % 100 })));
        inFlight.add(p);
        void p.then(() => inFlight.delete(p));
        if (inFlight.size >= 256) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
      return MESSAGES;
    };
  },
};
for (const guarantee of ["exactly-once", "at-least-once"] as const) {
  cases.push({
    name: `JetStream sink ${guarantee}, ${MESSAGES} messages (msgs/s)`,
    a: {
      label: `JetStreamSink ${guarantee}, checkpoint every 10000`,
      async prepare(run) {
        await jsm.streams.purge("BOUT");
        const w = JetStreamSink.sink({ servers: nats.url, subject: "bout", deliveryGuarantee: guarantee }).connector.createWriter(writerCtx(`js${guarantee[0]}${run}`), "1");
        await w.open!();
        return async () => {
          const n = await driveWriter(w, MESSAGES, (i) => ({ i, k: i % 100 }), 10_000);
          w.dispose?.();
          return n;
        };
      },
    },
    b: clientPublish,
  });
}

// ---------------------------------------------------------------- run
interface Sample {
  wall: number;
  cpu: number;
  perSecond: number;
}
const results = new Map<string, { a: Sample[]; b: Sample[] }>();
const loads: number[] = [];
try {
  for (let run = 0; run < RUNS; run++) {
    for (const c of cases) {
      if (values.only && !c.name.toLowerCase().includes(values.only)) continue;
      const r = results.get(c.name) ?? { a: [], b: [] };
      results.set(c.name, r);
      for (const [key, side] of [["a", c.a], ["b", c.b]] as const) {
        const timed = await side.prepare(run);
        loads.push(os.loadavg()[0]!);
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        const n = await timed();
        const wall = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        const s = { wall, cpu: (cpu.user + cpu.system) / 1e6, perSecond: n / wall };
        r[key].push(s);
        log(`run ${run + 1} ${c.name} ${key.toUpperCase()}: ${n} in ${wall.toFixed(2)} s (${Math.round(s.perSecond)}/s, CPU ${s.cpu.toFixed(2)} s)`);
      }
    }
  }
} finally {
  await nc.close().catch(() => {});
  await sql.end({ timeout: 1 }).catch(() => {});
  await stopPostgres(pg);
  await nats.stop();
  removeTempDirs();
}

const fmt = (x: number) => (x >= 100 ? Math.round(x).toLocaleString("en-US") : x.toFixed(2));
console.log(`| case | side | per second, median (min-max) | wall s | CPU s (this process) | A / B of medians | A / B per round, median (min-max) |`);
console.log(`|---|---|---|---|---|---|---|`);
for (const c of cases) {
  const r = results.get(c.name);
  if (!r) continue;
  for (const key of ["a", "b"] as const) {
    const xs = r[key];
    const ps = xs.map((s) => s.perSecond);
    const ratio = key === "a" ? (median(r.a.map((s) => s.perSecond)) / median(r.b.map((s) => s.perSecond))).toFixed(2) + "x" : "";
    // A and B of the same round ran back to back: their ratio is less exposed to the load of the shared machine.
    const paired = r.a.map((s, i) => s.perSecond / r.b[i]!.perSecond);
    const pairedText = key === "a" ? `${median(paired).toFixed(2)}x (${Math.min(...paired).toFixed(2)}-${Math.max(...paired).toFixed(2)})` : "";
    console.log(`| ${key === "a" ? c.name : ""} | ${key.toUpperCase()}: ${(key === "a" ? c.a : c.b).label} | ${fmt(median(ps))} (${fmt(Math.min(...ps))}-${fmt(Math.max(...ps))}) | ${median(xs.map((s) => s.wall)).toFixed(2)} | ${median(xs.map((s) => s.cpu)).toFixed(2)} | ${ratio} | ${pairedText} |`);
  }
}
console.log(`\nload average (1 min) during the runs: ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}; CDC updates generated in ${generateSeconds.toFixed(1)} s`);
