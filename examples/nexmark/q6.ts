// Nexmark q6, average selling price by seller: each time one of a seller's auctions closes with a winning bid
// (winning-bids.ts), the average closing price of the seller's last 10 closed auctions (an integer, as SQL's AVG of
// a BIGINT), as (seller, average). Flink SQL cannot run this query (an OVER window over an updating join); here the
// closed auctions are keyed by seller and taken in order of closing time (then auction id) by an event-time timer at
// each closing time, so the result does not depend on how parallel inputs interleave.
//   bun main.ts local examples/nexmark/q6.ts [events] [seed] [out] [ratePerSecond]
import {
  ListStateDescriptor,
  ValueStateDescriptor,
  type Collector,
  type KeyedContext,
  type KeyedProcessFunction,
  type ListState,
  type OnTimerContext,
  type RuntimeContext,
  type StreamExecutionEnvironment,
  type ValueState,
} from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";
import { winningBids } from "./winning-bids.ts";

const LAST = 10;
type Closed = [seller: number, expires: number, auction: number, price: number];

class AveragePerSeller implements KeyedProcessFunction<number, Closed, [number, number]> {
  private pending!: ListState<Closed>;
  private last!: ValueState<number[]>;

  open(ctx: RuntimeContext): void {
    this.pending = ctx.getListState(new ListStateDescriptor<Closed>("pending"));
    this.last = ctx.getState(new ValueStateDescriptor<number[]>("last"));
  }

  processElement(c: Closed, ctx: KeyedContext<number>): void {
    this.pending.add(c);
    ctx.timerService().registerEventTimeTimer(c[1]);
  }

  onTimer(timestamp: number, ctx: OnTimerContext<number>, out: Collector<[number, number]>): void {
    const all = this.pending.get();
    const due = all.filter((c) => c[1] <= timestamp).sort((x, y) => x[1] - y[1] || x[2] - y[2]);
    this.pending.update(all.filter((c) => c[1] > timestamp));
    const last = this.last.value() ?? [];
    for (const c of due) {
      last.push(c[3]);
      if (last.length > LAST) last.shift();
      out.collect([ctx.getCurrentKey(), Math.floor(last.reduce((s, p) => s + p, 0) / last.length)]);
    }
    this.last.update(last);
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q6");
  const out = winningBids(nexmark(env, a, true))
    .map(({ auction: x, bid: b }): Closed => [x.seller, x.expires, x.id, b.price])
    .keyBy((c) => c[0])
    .process(new AveragePerSeller())
    .name("Average Price per Seller");
  sink(out, a);
}
