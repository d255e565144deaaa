// Nexmark q17, auction statistics report: per auction and day (UTC), the number of bids in total and per price rank,
// and the minimum, maximum, average (an integer, as SQL's AVG of a BIGINT) and sum of their prices, as (auction,
// day, totalBids, rank1Bids, rank2Bids, rank3Bids, minPrice, maxPrice, avgPrice, sumPrice); continuous updates, the
// last line per auction and day is its result (common.ts scheduleUpdate).
//   bun main.ts local examples/nexmark/q17.ts [events] [seed] [out] [ratePerSecond]
import {
  ValueStateDescriptor,
  type Bid,
  type Collector,
  type KeyedContext,
  type KeyedProcessFunction,
  type OnTimerContext,
  type RuntimeContext,
  type StreamExecutionEnvironment,
  type ValueState,
} from "../../src/api/index.ts";
import { bids, day, priceRank, queryArgs, scheduleUpdate, sink } from "./common.ts";

/** [bids, rank1, rank2, rank3, min, max, sum] */
type Stats = number[];

class AuctionStats implements KeyedProcessFunction<string, Bid, (string | number)[]> {
  private stats!: ValueState<Stats>;
  private pending!: ValueState<boolean>;

  open(ctx: RuntimeContext): void {
    this.stats = ctx.getState(new ValueStateDescriptor<Stats>("stats"));
    this.pending = ctx.getState(new ValueStateDescriptor("pending", { default: false }));
  }

  processElement(b: Bid, ctx: KeyedContext<string>): void {
    const s = this.stats.value() ?? [0, 0, 0, 0, Infinity, -Infinity, 0];
    s[0]!++;
    s[priceRank(b.price)]!++;
    s[4] = Math.min(s[4]!, b.price);
    s[5] = Math.max(s[5]!, b.price);
    s[6]! += b.price;
    this.stats.update(s);
    scheduleUpdate(ctx, this.pending);
  }

  onTimer(_ts: number, ctx: OnTimerContext<string>, out: Collector<(string | number)[]>): void {
    this.pending.update(false);
    const s = this.stats.value()!;
    const [auction, d] = ctx.getCurrentKey().split("|");
    out.collect([Number(auction), d!, s[0]!, s[1]!, s[2]!, s[3]!, s[4]!, s[5]!, Math.floor(s[6]! / s[0]!), s[6]!]);
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q17");
  const out = bids(env, a, true)
    .keyBy((b) => `${b.auction}|${day(b.dateTime)}`)
    .process(new AuctionStats())
    .name("Auction Statistics per Day");
  sink(out, a);
}
