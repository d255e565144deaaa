// Nexmark q1, currency conversion: every bid with its price in euros, (auction, bidder, 0.908 * price, dateTime).
//   bun main.ts local examples/nexmark/q1.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q1");
  const bids = nexmark(env, a, false).flatMap((e) => (e.type === "bid" ? [[e.bid.auction, e.bid.bidder, 0.908 * e.bid.price, e.bid.dateTime]] : []));
  sink(bids, a);
}
