// Winning bids (q6, q9): per auction, the bid with the highest price placed within the auction's lifetime
// [dateTime, expires] (equal prices: the earlier bid, then the lower bidder), emitted when the watermark passes the
// auction's expiry. Auctions and bids are keyed by auction id; a bid seen before its auction is kept until the
// auction arrives or the watermark passes the bid's time (no auction arriving later can contain it then), as in q4.
import {
  ListStateDescriptor,
  ValueStateDescriptor,
  type Auction,
  type Bid,
  type Collector,
  type DataStream,
  type KeyedContext,
  type KeyedProcessFunction,
  type ListState,
  type NexmarkEvent,
  type OnTimerContext,
  type RuntimeContext,
  type ValueState,
} from "../../src/api/index.ts";

export interface Winner {
  auction: Auction;
  bid: Bid;
}

/** Negative when bid a beats bid b. */
export const beats = (a: Bid, b: Bid) => b.price - a.price || a.dateTime - b.dateTime || a.bidder - b.bidder;

const within = (b: Bid, a: Auction) => b.dateTime >= a.dateTime && b.dateTime <= a.expires;

class WinningBid implements KeyedProcessFunction<number, NexmarkEvent, Winner> {
  private auction!: ValueState<Auction>;
  private best!: ValueState<Bid>;
  private early!: ListState<Bid>;

  open(ctx: RuntimeContext): void {
    this.auction = ctx.getState(new ValueStateDescriptor<Auction>("auction"));
    this.best = ctx.getState(new ValueStateDescriptor<Bid>("best"));
    this.early = ctx.getListState(new ListStateDescriptor<Bid>("early"));
  }

  private offer(b: Bid, a: Auction): void {
    if (!within(b, a)) return;
    const best = this.best.value();
    if (best === undefined || beats(b, best) < 0) this.best.update(b);
  }

  processElement(e: NexmarkEvent, ctx: KeyedContext<number>): void {
    if (e.type === "auction") {
      const a = e.auction;
      this.auction.update(a);
      for (const b of this.early.get()) this.offer(b, a);
      this.early.clear();
      ctx.timerService().registerEventTimeTimer(a.expires);
    } else if (e.type === "bid") {
      const a = this.auction.value();
      if (a !== undefined) this.offer(e.bid, a);
      else if (e.bid.dateTime > ctx.timerService().currentWatermark()) {
        this.early.add(e.bid);
        ctx.timerService().registerEventTimeTimer(e.bid.dateTime);
      }
    }
  }

  onTimer(timestamp: number, _ctx: OnTimerContext<number>, out: Collector<Winner>): void {
    const a = this.auction.value();
    if (a === undefined) {
      this.early.update(this.early.get().filter((b) => b.dateTime > timestamp));
    } else if (timestamp >= a.expires) {
      const best = this.best.value();
      if (best !== undefined) out.collect({ auction: a, bid: best });
      this.auction.clear();
      this.best.clear();
    }
  }
}

/** The winning bid of every auction that got one, from an event-time Nexmark stream. */
export function winningBids(events: DataStream<NexmarkEvent>): DataStream<Winner> {
  return events
    .filter((e) => e.type !== "person")
    .keyBy((e) => (e.type === "auction" ? e.auction.id : e.type === "bid" ? e.bid.auction : -1))
    .process(new WinningBid())
    .name("Winning Bids");
}
