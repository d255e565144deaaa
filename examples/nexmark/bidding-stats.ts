// The bidding statistics of q15 (per day) and q16 (per channel and day): bids, distinct bidders and distinct
// auctions, each in total and per price rank (common.ts priceRank), as Flink SQL's count(*) FILTER and
// count(DISTINCT ...) FILTER. Distinct counts keep, per bidder and per auction, the ranks already seen (a bit set in
// MapState), so a count goes up exactly when a bidder or auction is seen in a rank for the first time. Rows are
// emitted as continuous updates (common.ts scheduleUpdate). The counts, q16's latest minute and the pending-update
// flag are one accumulator in one value state, as Flink SQL's group aggregation keeps one accumulator row per group
// beside its distinct views: one state read and written per record instead of three.
import {
  MapStateDescriptor,
  ValueStateDescriptor,
  type Bid,
  type Collector,
  type KeyedContext,
  type KeyedProcessFunction,
  type MapState,
  type OnTimerContext,
  type RuntimeContext,
  type ValueState,
} from "../../src/api/index.ts";
import { minute, priceRank, registerUpdateTimer } from "./common.ts";

interface Accumulator {
  /** [bids, rank1, rank2, rank3, bidders, rank1, rank2, rank3, auctions, rank1, rank2, rank3] */
  c: number[];
  /** q16: the latest minute ('HH:mm') of the key's bids. */
  m: string;
  /** An update of the key's row is scheduled (common.ts scheduleUpdate). */
  p: boolean;
}

export class BiddingStats implements KeyedProcessFunction<string, Bid, (string | number)[]> {
  private acc!: ValueState<Accumulator>;
  private bidders!: MapState<number, number>;
  private auctions!: MapState<number, number>;

  /** key(ctx key) gives the row's leading columns; withMinute adds q16's max(minute) column. */
  constructor(private readonly columns: (key: string) => (string | number)[], private readonly withMinute: boolean) {}

  open(ctx: RuntimeContext): void {
    this.acc = ctx.getState(new ValueStateDescriptor<Accumulator>("accumulator"));
    this.bidders = ctx.getMapState(new MapStateDescriptor<number, number>("bidders"));
    this.auctions = ctx.getMapState(new MapStateDescriptor<number, number>("auctions"));
  }

  processElement(b: Bid, ctx: KeyedContext<string>): void {
    const a = this.acc.value() ?? { c: new Array<number>(12).fill(0), m: "", p: false };
    const c = a.c;
    const rank = priceRank(b.price);
    c[0]!++;
    c[rank]!++;
    this.distinct(this.bidders, b.bidder, rank, c, 4);
    this.distinct(this.auctions, b.auction, rank, c, 8);
    if (this.withMinute) {
      const m = minute(b.dateTime);
      if (m > a.m) a.m = m;
    }
    if (!a.p) {
      registerUpdateTimer(ctx);
      a.p = true;
    }
    this.acc.update(a);
  }

  /** Counts id in total (column at) and in its rank (at + rank) the first time it is seen there. */
  private distinct(seen: MapState<number, number>, id: number, rank: number, c: number[], at: number): void {
    const bits = seen.get(id);
    if (bits === undefined) c[at]!++;
    const bit = 1 << rank;
    if (((bits ?? 0) & bit) === 0) {
      c[at + rank]!++;
      seen.put(id, (bits ?? 0) | bit);
    }
  }

  onTimer(_ts: number, ctx: OnTimerContext<string>, out: Collector<(string | number)[]>): void {
    const a = this.acc.value()!;
    a.p = false;
    this.acc.update(a);
    out.collect([...this.columns(ctx.getCurrentKey()), ...(this.withMinute ? [a.m] : []), ...a.c]);
  }
}
