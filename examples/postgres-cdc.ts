// Change data capture: order counts and totals per customer, kept exact in a second table while orders are
// inserted, updated and deleted. The source reads a snapshot of `orders`, then its changes from a replication slot
// it creates; the sink writes exactly once through prepared transactions. Needs wal_level = logical and
// max_prepared_transactions > 0 on the server, and two tables:
//   CREATE TABLE orders (id bigint PRIMARY KEY, customer text NOT NULL, amount int NOT NULL);
//   CREATE TABLE customer_totals (customer text PRIMARY KEY, orders bigint NOT NULL, amount bigint NOT NULL);
//   bun main.ts local examples/postgres-cdc.ts postgres://postgres:pw@127.0.0.1:5432/postgres
// It runs until stopped; a restart from its checkpoint resumes from the checkpointed WAL position.
import { PostgresCdcSource, PostgresSink, type PostgresCdcRecord, type StreamExecutionEnvironment } from "../src/api/index.ts";

type Delta = [customer: string, orders: number, amount: number];

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const url = args[0];
  if (!url) throw new Error("usage: examples/postgres-cdc.ts <postgres://url>");
  env.enableCheckpointing(1000);
  env
    .fromSource(PostgresCdcSource.source({ url, tables: ["orders"], slot: "orders_cdc" }))
    // An update retracts the old row (before, complete thanks to REPLICA IDENTITY FULL) and adds the new one.
    .flatMap((r: PostgresCdcRecord) => {
      const out: Delta[] = [];
      if (r.before) out.push([r.before.customer as string, -1, -(r.before.amount as number)]);
      if (r.after) out.push([r.after.customer as string, 1, r.after.amount as number]);
      return out;
    })
    .keyBy((d) => d[0])
    .reduce((a, b): Delta => [a[0], a[1] + b[1], a[2] + b[2]])
    .sinkTo(PostgresSink.exactlyOnceSink({ url, statement: PostgresSink.upsertStatement("customer_totals", ["customer", "orders", "amount"], ["customer"]), rowMapper: (d: Delta) => d }));
}
