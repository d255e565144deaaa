// Nexmark q4, average closing price per category: an auction's closing price is its highest bid placed within the
// auction's lifetime [dateTime, expires]; the query keeps, per category, the average closing price of the auctions
// that got such a bid (an integer, as SQL's AVG of a BIGINT), and emits (category, average) each time it changes.
//
// Stage 1 is the winning bid of each auction (winning-bids.ts, shared with q6 and q9: auctions and bids keyed by
// auction id, the highest bid within the lifetime emitted at the auction's expiry); stage 2 averages per category.
//   bun main.ts local examples/nexmark/q4.ts [events] [seed] [out] [ratePerSecond]
import { ValueStateDescriptor, type Collector, type KeyedContext, type KeyedProcessFunction, type RuntimeContext, type StreamExecutionEnvironment, type ValueState } from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";
import { winningBids } from "./winning-bids.ts";

type Closed = [auction: number, category: number, price: number];

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
  const averages = winningBids(nexmark(env, a, true))
    .map(({ auction: x, bid: b }): Closed => [x.id, x.category, b.price])
    .keyBy((c) => c[1])
    .process(new AveragePerCategory())
    .name("Average per Category");
  sink(averages, a);
}
