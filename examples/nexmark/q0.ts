// Nexmark q0, pass-through: every bid as (auction, bidder, price, dateTime). Measures the source, serialization
// and the sink.   bun main.ts local examples/nexmark/q0.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q0");
  const bids = nexmark(env, a, false).flatMap((e) => (e.type === "bid" ? [[e.bid.auction, e.bid.bidder, e.bid.price, e.bid.dateTime]] : []));
  sink(bids, a);
}
