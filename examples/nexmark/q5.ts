// Nexmark q5, hot items: for every sliding window of 10 s every 2 s, the auction(s) with the most bids in it, as
// (auction, bids, windowStart). Stage 1 counts bids per auction and window (a sliding event-time window keyed by
// auction); stage 2, keyed by window, keeps the auctions with the highest count and emits them when the watermark
// passes the window's end (an event-time timer).
//   bun main.ts local examples/nexmark/q5.ts [events] [seed] [out] [ratePerSecond]
import {
  ListStateDescriptor,
  SlidingEventTimeWindows,
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

const SIZE = 10_000;
const SLIDE = 2_000;
type Count = [windowStart: number, auction: number, bids: number];
type Hot = [auction: number, bids: number, windowStart: number];

class HottestPerWindow implements KeyedProcessFunction<number, Count, Hot> {
  private max!: ValueState<number>;
  private hot!: ListState<number>;

  open(ctx: RuntimeContext): void {
    this.max = ctx.getState(new ValueStateDescriptor("max", { default: 0 }));
    this.hot = ctx.getListState(new ListStateDescriptor<number>("hot"));
  }

  processElement(c: Count, ctx: KeyedContext<number>): void {
    const max = this.max.value()!;
    if (c[2] > max) {
      this.max.update(c[2]);
      this.hot.update([c[1]]);
      ctx.timerService().registerEventTimeTimer(c[0] + SIZE - 1);
    } else if (c[2] === max) {
      this.hot.add(c[1]);
    }
  }

  onTimer(_ts: number, ctx: OnTimerContext<number>, out: Collector<Hot>): void {
    const n = this.max.value()!;
    for (const auction of this.hot.get()) out.collect([auction, n, ctx.getCurrentKey()]);
    this.hot.clear();
    this.max.clear();
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q5");
  const hot = nexmark(env, a, true)
    .flatMap((e) => (e.type === "bid" ? [e.bid.auction] : []))
    .keyBy((auction) => auction)
    .window(SlidingEventTimeWindows.of(SIZE, SLIDE))
    .aggregate(
      { createAccumulator: () => 0, add: (_b: number, n: number) => n + 1, getResult: (n: number) => n },
      (auction: number, ctx, counts: number[], out) => out.collect([ctx.window.start, auction, counts[0]!] as Count),
    )
    .name("Bids per Auction and Window")
    .keyBy((c: Count) => c[0])
    .process(new HottestPerWindow())
    .name("Hottest Auctions per Window");
  sink(hot, a);
}
