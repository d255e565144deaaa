// Nexmark q12, processing-time windows: the number of bids per bidder in 10 s tumbling windows of processing time
// (the wall clock of the TaskManager), as (bidder, bidCount, windowStart, windowEnd). Which window a bid falls into
// depends on when it is processed; the counts of a bidder over all windows add up to its bids.
//   bun main.ts local examples/nexmark/q12.ts [events] [seed] [out] [ratePerSecond]
import { TumblingProcessingTimeWindows, type StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q12");
  const out = bids(env, a, false)
    .keyBy((b) => b.bidder)
    .window(TumblingProcessingTimeWindows.of(10_000))
    .aggregate(
      { createAccumulator: () => 0, add: (_b: unknown, n: number) => n + 1, getResult: (n: number) => n },
      (bidder: number, ctx, counts: number[], out) => out.collect([bidder, counts[0]!, ctx.window.start, ctx.window.end]),
    )
    .name("Bids per Bidder and Processing-Time Window");
  sink(out, a);
}
