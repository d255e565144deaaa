// Nexmark q10, log to file system: every bid written to files partitioned by its day and minute (UTC), as Flink's
// partitioned file system sink: (auction, bidder, price, dateTime) lines in the exactly-once FileSink under
// <out>/dt=<yyyy-MM-dd>/hm=<HH:mm>/ (a bucket per partition, committed with the checkpoints). With out "-" or
// "discard" the rows go to stdout or nowhere, as the other queries'.
//   bun main.ts local examples/nexmark/q10.ts [events] [seed] [out] [ratePerSecond]
import { FileSink, type StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, day, minute, queryArgs, sink } from "./common.ts";

type Row = [auction: number, bidder: number, price: number, dateTime: number];

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q10");
  const rows = bids(env, a, false).map((b): Row => [b.auction, b.bidder, b.price, b.dateTime]);
  if (a.out === "-" || a.out === "discard") sink(rows, a);
  else rows.sinkTo(FileSink.forRowFormat(a.out).withBucketAssigner((r: Row) => `dt=${day(r[3])}/hm=${minute(r[3])}`).build());
}
