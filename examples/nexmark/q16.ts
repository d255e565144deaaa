// Nexmark q16, channel statistics report: per channel and day (UTC), the latest minute ('HH:mm') of its bids and
// q15's counts, as (channel, day, minute, totalBids, rank1Bids, ..., rank3Auctions); continuous updates, the last
// line per channel and day is its result (bidding-stats.ts).
//   bun main.ts local examples/nexmark/q16.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { BiddingStats } from "./bidding-stats.ts";
import { bids, day, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q16");
  const out = bids(env, a, true)
    .keyBy((b) => `${b.channel}|${day(b.dateTime)}`)
    .process(new BiddingStats((k) => k.split("|"), true))
    .name("Channel Statistics per Day");
  sink(out, a);
}
