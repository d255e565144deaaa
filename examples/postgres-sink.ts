// Word counts into PostgreSQL, exactly once: each checkpoint's rows are a prepared transaction, committed when the
// checkpoint completes. Needs a table and max_prepared_transactions > 0 on the server:
//   CREATE TABLE word_counts (word text PRIMARY KEY, n bigint NOT NULL);
//   bun main.ts local examples/postgres-sink.ts postgres://postgres:pw@127.0.0.1:5432/postgres [input.txt]
import { PostgresSink, type StreamExecutionEnvironment } from "../src/api/index.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const url = args[0];
  if (!url) throw new Error("usage: examples/postgres-sink.ts <postgres://url> [input.txt]");
  env.enableCheckpointing(1000);
  env
    .readTextFile(args[1] ?? "examples/data/hamlet.txt")
    .flatMap((line) => line.toLowerCase().split(/[^\p{L}\p{N}']+/u).filter((w) => w.length > 0).map((w): [string, number] => [w, 1]))
    .keyBy((t) => t[0])
    .sum(1)
    // Running counts per word: the upsert keeps the latest, and the transaction makes each checkpoint's rows atomic.
    .sinkTo(PostgresSink.exactlyOnceSink({ url, statement: PostgresSink.upsertStatement("word_counts", ["word", "n"], ["word"]), rowMapper: (t: [string, number]) => t }));
}
