// Nexmark q2, selection: the bids on auctions whose id is a multiple of 123, as (auction, price).
//   bun main.ts local examples/nexmark/q2.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q2");
  const bids = nexmark(env, a, false).flatMap((e) => (e.type === "bid" && e.bid.auction % 123 === 0 ? [[e.bid.auction, e.bid.price]] : []));
  sink(bids, a);
}
