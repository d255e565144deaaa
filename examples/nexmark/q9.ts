// Nexmark q9, winning bids: every auction with its winning bid (the highest bid within its lifetime; equal prices:
// the earlier one), as (id, itemName, description, initialBid, reserve, dateTime, expires, seller, category,
// auction, bidder, price, bidDateTime), emitted when the auction closes (winning-bids.ts).
//   bun main.ts local examples/nexmark/q9.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";
import { winningBids } from "./winning-bids.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q9");
  const out = winningBids(nexmark(env, a, true)).map(({ auction: x, bid: b }) => [
    x.id, x.itemName, x.description, x.initialBid, x.reserve, x.dateTime, x.expires, x.seller, x.category, b.auction, b.bidder, b.price, b.dateTime,
  ]);
  sink(out, a);
}
