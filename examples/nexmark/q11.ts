// Nexmark q11, user sessions: per bidder, the number of bids in each session of activity, sessions ending after 10 s
// without a bid (event-time session windows, which merge), as (bidder, bidCount, sessionStart, sessionEnd); the end
// is the last bid's time plus the gap, as Flink's SESSION_END.
//   bun main.ts local examples/nexmark/q11.ts [events] [seed] [out] [ratePerSecond]
import { EventTimeSessionWindows, type StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

const GAP = 10_000;

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q11");
  const out = bids(env, a, true)
    .keyBy((b) => b.bidder)
    .window(EventTimeSessionWindows.withGap(GAP))
    .aggregate(
      { createAccumulator: () => 0, add: (_b: unknown, n: number) => n + 1, getResult: (n: number) => n, merge: (x: number, y: number) => x + y },
      (bidder: number, ctx, counts: number[], out) => out.collect([bidder, counts[0]!, ctx.window.start, ctx.window.end]),
    )
    .name("Bids per Bidder Session");
  sink(out, a);
}
