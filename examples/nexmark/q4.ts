// Nexmark q4, average closing price per category: an auction's closing price is its highest bid placed within the
// auction's lifetime [dateTime, expires]; the query keeps, per category, the average closing price of the auctions
// that got such a bid (an integer, as SQL's AVG of a BIGINT), and emits (category, average) each time it changes.
//
// Stage 1 joins auctions with their bids: both are keyed by auction id (the source's events are already a tagged
// union, so the join's input is the events filtered to auctions and bids). A bid seen before its auction (bids may
// refer to auctions a few ids ahead, and parallel sources interleave) is kept until its auction arrives or the
// watermark passes its time (no auction arriving later can contain it then). An event-time timer at the auction's
// expiry emits (auction, category, closing price) and clears the key's state. Stage 2 averages per category.
//   bun main.ts local examples/nexmark/q4.ts [events] [seed] [out] [ratePerSecond]
import {
  ListStateDescriptor,
  ValueStateDescriptor,
  type Collector,
  type KeyedContext,
  type KeyedProcessFunction,
  type ListState,
  type NexmarkEvent,
  type OnTimerContext,
  type RuntimeContext,
  type StreamExecutionEnvironment,
  type ValueState,
} from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";

interface Open {
  dateTime: number;
  expires: number;
  category: number;
}
type Closed = [auction: number, category: number, price: number];

class JoinBids implements KeyedProcessFunction<number, NexmarkEvent, Closed> {
  private auction!: ValueState<Open>;
  private max!: ValueState<number>;
  /** Bids ([dateTime, price]) that came before their auction. */
  private early!: ListState<[number, number]>;

  open(ctx: RuntimeContext): void {
    this.auction = ctx.getState(new ValueStateDescriptor<Open>("auction"));
    this.max = ctx.getState(new ValueStateDescriptor<number>("max", { default: -1 }));
    this.early = ctx.getListState(new ListStateDescriptor<[number, number]>("early"));
  }

  processElement(e: NexmarkEvent, ctx: KeyedContext<number>): void {
    if (e.type === "auction") {
      const a = e.auction;
      this.auction.update({ dateTime: a.dateTime, expires: a.expires, category: a.category });
      let max = -1;
      for (const [t, price] of this.early.get()) if (t >= a.dateTime && t <= a.expires && price > max) max = price;
      this.early.clear();
      this.max.update(max);
      ctx.timerService().registerEventTimeTimer(a.expires);
    } else if (e.type === "bid") {
      const b = e.bid;
      const a = this.auction.value();
      if (a !== undefined) {
        if (b.dateTime >= a.dateTime && b.dateTime <= a.expires && b.price > this.max.value()!) this.max.update(b.price);
      } else if (b.dateTime > ctx.timerService().currentWatermark()) {
        this.early.add([b.dateTime, b.price]);
        ctx.timerService().registerEventTimeTimer(b.dateTime);
      }
    }
  }

  onTimer(timestamp: number, ctx: OnTimerContext<number>, out: Collector<Closed>): void {
    const a = this.auction.value();
    if (a === undefined) {
      // No auction by the time the watermark passed these bids: none that comes later can contain them.
      const keep = this.early.get().filter(([t]) => t > timestamp);
      this.early.update(keep);
    } else if (timestamp >= a.expires) {
      const max = this.max.value()!;
      if (max >= 0) out.collect([ctx.getCurrentKey(), a.category, max]);
      this.auction.clear();
      this.max.clear();
    }
  }
}

class AveragePerCategory implements KeyedProcessFunction<number, Closed, [number, number]> {
  private sum!: ValueState<number>;
  private count!: ValueState<number>;

  open(ctx: RuntimeContext): void {
    this.sum = ctx.getState(new ValueStateDescriptor("sum", { default: 0 }));
    this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 }));
  }

  processElement(c: Closed, ctx: KeyedContext<number>, out: Collector<[number, number]>): void {
    const sum = this.sum.value()! + c[2];
    const count = this.count.value()! + 1;
    this.sum.update(sum);
    this.count.update(count);
    out.collect([ctx.getCurrentKey(), Math.floor(sum / count)]);
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q4");
  const averages = nexmark(env, a, true)
    .filter((e) => e.type !== "person")
    .keyBy((e) => (e.type === "auction" ? e.auction.id : e.type === "bid" ? e.bid.auction : -1))
    .process(new JoinBids())
    .name("Join Auctions and Bids")
    .keyBy((c) => c[1])
    .process(new AveragePerCategory())
    .name("Average per Category");
  sink(averages, a);
}
