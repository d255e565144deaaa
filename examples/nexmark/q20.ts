// Nexmark q20, expand bid with auction: every bid joined with its auction when the auction's category is 10 (an
// inner join on bid.auction = auction.id, no time bound), as (auction, bidder, price, channel, url, bidDateTime,
// itemName, description, initialBid, reserve, dateTime, expires, seller, category). Keyed by auction id: a bid that
// comes before its auction waits for it; an auction of another category is remembered (its id only) so that its
// bids are dropped at once.
//   bun main.ts local examples/nexmark/q20.ts [events] [seed] [out] [ratePerSecond]
import {
  ListStateDescriptor,
  ValueStateDescriptor,
  type Auction,
  type Bid,
  type Collector,
  type KeyedContext,
  type KeyedProcessFunction,
  type ListState,
  type NexmarkEvent,
  type RuntimeContext,
  type StreamExecutionEnvironment,
  type ValueState,
} from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";

const CATEGORY = 10;
type Row = (string | number)[];

const joined = (b: Bid, a: Auction): Row => [b.auction, b.bidder, b.price, b.channel, b.url, b.dateTime, a.itemName, a.description, a.initialBid, a.reserve, a.dateTime, a.expires, a.seller, a.category];

class JoinBidWithAuction implements KeyedProcessFunction<number, NexmarkEvent, Row> {
  /** The auction when its category is 10; 0 when it is another one (null would clear the state). */
  private auction!: ValueState<Auction | 0>;
  private early!: ListState<Bid>;

  open(ctx: RuntimeContext): void {
    this.auction = ctx.getState(new ValueStateDescriptor<Auction | 0>("auction"));
    this.early = ctx.getListState(new ListStateDescriptor<Bid>("early"));
  }

  processElement(e: NexmarkEvent, _ctx: KeyedContext<number>, out: Collector<Row>): void {
    if (e.type === "auction") {
      const a = e.auction;
      const mine = a.category === CATEGORY;
      this.auction.update(mine ? a : 0);
      if (mine) for (const b of this.early.get()) out.collect(joined(b, a));
      this.early.clear();
    } else if (e.type === "bid") {
      const a = this.auction.value();
      if (a === undefined) this.early.add(e.bid);
      else if (a !== 0) out.collect(joined(e.bid, a));
    }
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q20");
  const out = nexmark(env, a, false)
    .filter((e) => e.type !== "person")
    .keyBy((e) => (e.type === "auction" ? e.auction.id : e.type === "bid" ? e.bid.auction : -1))
    .process(new JoinBidWithAuction())
    .name("Join Bids with Auctions of Category 10");
  sink(out, a);
}
