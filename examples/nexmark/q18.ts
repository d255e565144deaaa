// Nexmark q18, find last bid: per (bidder, auction) the bid with the latest dateTime (ROW_NUMBER() OVER (PARTITION
// BY bidder, auction ORDER BY dateTime DESC) = 1): a deduplication that emits (auction, bidder, price, channel,
// url, dateTime) each time a later bid replaces the kept one; the last line per (bidder, auction) is the result.
// Bids with the same dateTime are ordered by price, then channel and url, so that parallel runs agree.
//   bun main.ts local examples/nexmark/q18.ts [events] [seed] [out] [ratePerSecond]
import { ValueStateDescriptor, type Bid, type Collector, type KeyedContext, type KeyedProcessFunction, type RuntimeContext, type StreamExecutionEnvironment, type ValueState } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

type Row = [auction: number, bidder: number, price: number, channel: string, url: string, dateTime: number];

/** Orders bids of one key: later dateTime wins, ties by price, channel, url. */
const later = (a: Row, b: Row) => a[5] !== b[5] ? a[5] > b[5] : a[2] !== b[2] ? a[2] > b[2] : a[3] !== b[3] ? a[3] > b[3] : a[4] > b[4];

class LastBid implements KeyedProcessFunction<string, Bid, Row> {
  private last!: ValueState<Row>;

  open(ctx: RuntimeContext): void {
    this.last = ctx.getState(new ValueStateDescriptor<Row>("last"));
  }

  processElement(b: Bid, _ctx: KeyedContext<string>, out: Collector<Row>): void {
    const row: Row = [b.auction, b.bidder, b.price, b.channel, b.url, b.dateTime];
    const kept = this.last.value();
    if (kept !== undefined && !later(row, kept)) return;
    this.last.update(row);
    out.collect(row);
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q18");
  const out = bids(env, a, false)
    .keyBy((b) => `${b.bidder}|${b.auction}`)
    .process(new LastBid())
    .name("Last Bid per Bidder and Auction");
  sink(out, a);
}
