// Nexmark q19, auction top-N: per auction its 10 highest bids (ROW_NUMBER() OVER (PARTITION BY auction ORDER BY
// price DESC) <= 10; equal prices by earlier dateTime, then lower bidder). The ranking is emitted when it changed,
// at most once per second of event time and at the end (common.ts scheduleUpdate), as one line per rank:
// (auction, version, rank, price, bidder, dateTime); the lines of an auction's highest version are its result.
//   bun main.ts local examples/nexmark/q19.ts [events] [seed] [out] [ratePerSecond]
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
import { bids, queryArgs, scheduleUpdate, sink } from "./common.ts";

const N = 10;
type Entry = [price: number, bidder: number, dateTime: number];
type Row = [auction: number, version: number, rank: number, price: number, bidder: number, dateTime: number];

/** Negative when a ranks above b. */
const order = (a: Entry, b: Entry) => b[0] - a[0] || a[2] - b[2] || a[1] - b[1];

class TopBids implements KeyedProcessFunction<number, Bid, Row> {
  private top!: ValueState<Entry[]>;
  private version!: ValueState<number>;
  private pending!: ValueState<boolean>;

  open(ctx: RuntimeContext): void {
    this.top = ctx.getState(new ValueStateDescriptor<Entry[]>("top"));
    this.version = ctx.getState(new ValueStateDescriptor("version", { default: 0 }));
    this.pending = ctx.getState(new ValueStateDescriptor("pending", { default: false }));
  }

  processElement(b: Bid, ctx: KeyedContext<number>): void {
    const top = this.top.value() ?? [];
    const e: Entry = [b.price, b.bidder, b.dateTime];
    if (top.length === N && order(e, top[N - 1]!) >= 0) return; // not in the top N: no change
    top.push(e);
    top.sort(order);
    if (top.length > N) top.pop();
    this.top.update(top);
    scheduleUpdate(ctx, this.pending);
  }

  onTimer(_ts: number, ctx: OnTimerContext<number>, out: Collector<Row>): void {
    this.pending.update(false);
    const version = this.version.value()! + 1;
    this.version.update(version);
    const auction = ctx.getCurrentKey();
    (this.top.value() ?? []).forEach((e, i) => out.collect([auction, version, i + 1, e[0], e[1], e[2]]));
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q19");
  const out = bids(env, a, true)
    .keyBy((b) => b.auction)
    .process(new TopBids())
    .name("Top 10 Bids per Auction");
  sink(out, a);
}
