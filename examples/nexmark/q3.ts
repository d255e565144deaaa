// Nexmark q3, local item suggestion: who sells in category 10 in Oregon, Idaho or California, as
// (name, city, state, auction) for every such auction. A join of people and auctions on person id = seller,
// keyed by person id: whichever of the two comes first waits in keyed state for the other (auctions may come
// before their seller, since sellers may be up to 10 ids ahead and parallel sources interleave).
//   bun main.ts local examples/nexmark/q3.ts [events] [seed] [out] [ratePerSecond]
import {
  ListStateDescriptor,
  ValueStateDescriptor,
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

type Seller = [name: string, city: string, state: string];
type Suggestion = [name: string, city: string, state: string, auction: number];
const STATES = new Set(["OR", "ID", "CA"]);

class JoinSellers implements KeyedProcessFunction<number, NexmarkEvent, Suggestion> {
  private person!: ValueState<Seller>;
  private waiting!: ListState<number>;

  open(ctx: RuntimeContext): void {
    this.person = ctx.getState(new ValueStateDescriptor<Seller>("person"));
    this.waiting = ctx.getListState(new ListStateDescriptor<number>("auctions"));
  }

  processElement(e: NexmarkEvent, _ctx: KeyedContext<number>, out: Collector<Suggestion>): void {
    if (e.type === "person") {
      const p: Seller = [e.person.name, e.person.city, e.person.state];
      this.person.update(p);
      for (const auction of this.waiting.get()) out.collect([p[0], p[1], p[2], auction]);
      this.waiting.clear();
    } else if (e.type === "auction") {
      const p = this.person.value();
      if (p !== undefined) out.collect([p[0], p[1], p[2], e.auction.id]);
      else this.waiting.add(e.auction.id);
    }
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q3");
  const suggestions = nexmark(env, a, false)
    .filter((e) => (e.type === "person" && STATES.has(e.person.state)) || (e.type === "auction" && e.auction.category === 10))
    .keyBy((e) => (e.type === "person" ? e.person.id : e.type === "auction" ? e.auction.seller : -1))
    .process(new JoinSellers())
    .name("Join Sellers and Auctions");
  sink(suggestions, a);
}
