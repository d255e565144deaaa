// Nexmark q7, highest bid: for every 10 s tumbling window of event time, the bids with the highest price in it,
// as (windowStart, auction, price, bidder, dateTime). Stage 1 finds, per auction and window, its highest bids
// (an event-time window aggregate keyed by auction, so the work is spread); stage 2, keyed by window, keeps the
// highest of those and emits them when the watermark passes the window's end (an event-time timer).
//   bun main.ts local examples/nexmark/q7.ts [events] [seed] [out] [ratePerSecond]
import {
  ListStateDescriptor,
  TumblingEventTimeWindows,
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

const WINDOW = 10_000;
type B = [auction: number, price: number, bidder: number, dateTime: number];
type Top = [windowStart: number, auction: number, price: number, bidder: number, dateTime: number];

class HighestPerWindow implements KeyedProcessFunction<number, Top, Top> {
  private max!: ValueState<number>;
  private top!: ListState<Top>;

  open(ctx: RuntimeContext): void {
    this.max = ctx.getState(new ValueStateDescriptor("max", { default: -1 }));
    this.top = ctx.getListState(new ListStateDescriptor<Top>("top"));
  }

  processElement(t: Top, ctx: KeyedContext<number>): void {
    const max = this.max.value()!;
    if (t[2] > max) {
      this.max.update(t[2]);
      this.top.update([t]);
      ctx.timerService().registerEventTimeTimer(t[0] + WINDOW - 1);
    } else if (t[2] === max) {
      this.top.add(t);
    }
  }

  onTimer(_ts: number, _ctx: OnTimerContext<number>, out: Collector<Top>): void {
    for (const t of this.top.get()) out.collect(t);
    this.top.clear();
    this.max.clear();
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q7");
  const highest = nexmark(env, a, true)
    .flatMap((e): B[] => (e.type === "bid" ? [[e.bid.auction, e.bid.price, e.bid.bidder, e.bid.dateTime]] : []))
    .keyBy((b) => b[0])
    .window(TumblingEventTimeWindows.of(WINDOW))
    .aggregate(
      {
        createAccumulator: (): B[] => [],
        add: (b: B, acc: B[]) => (acc.length === 0 || b[1] > acc[0]![1] ? [b] : b[1] === acc[0]![1] ? [...acc, b] : acc),
        getResult: (acc: B[]) => acc,
      },
      (_auction: number, ctx, results: B[][], out) => {
        for (const b of results[0]!) out.collect([ctx.window.start, b[0], b[1], b[2], b[3]] as Top);
      },
    )
    .name("Highest Bids per Auction and Window")
    .keyBy((t: Top) => t[0])
    .process(new HighestPerWindow())
    .name("Highest Bids per Window");
  sink(highest, a);
}
