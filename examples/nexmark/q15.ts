// Nexmark q15, bidding statistics report: per day (UTC), the number of bids, of distinct bidders and of distinct
// auctions, each in total and per price rank (< 10,000, < 1,000,000, the rest), as (day, totalBids, rank1Bids,
// rank2Bids, rank3Bids, totalBidders, rank1Bidders, rank2Bidders, rank3Bidders, totalAuctions, rank1Auctions,
// rank2Auctions, rank3Auctions); continuous updates, the last line per day is its result (bidding-stats.ts).
//   bun main.ts local examples/nexmark/q15.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { BiddingStats } from "./bidding-stats.ts";
import { bids, day, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q15");
  const out = bids(env, a, true)
    .keyBy((b) => day(b.dateTime))
    .process(new BiddingStats((d) => [d], false))
    .name("Bidding Statistics per Day");
  sink(out, a);
}
