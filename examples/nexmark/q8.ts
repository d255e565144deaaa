// Nexmark q8, monitor new users: the people who registered and opened an auction in the same 10 s tumbling
// window of event time, as (id, name, windowStart). A window join: people and auctions keyed by person id =
// seller go through one keyed tumbling window whose aggregate notes the person and whether an auction came.
//   bun main.ts local examples/nexmark/q8.ts [events] [seed] [out] [ratePerSecond]
import { TumblingEventTimeWindows, type NexmarkEvent, type StreamExecutionEnvironment } from "../../src/api/index.ts";
import { nexmark, queryArgs, sink } from "./common.ts";

interface Acc {
  name: string | null;
  auctions: boolean;
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q8");
  const newUsers = nexmark(env, a, true)
    .filter((e) => e.type === "person" || e.type === "auction")
    .keyBy((e) => (e.type === "person" ? e.person.id : e.type === "auction" ? e.auction.seller : -1))
    .window(TumblingEventTimeWindows.of(10_000))
    .aggregate(
      {
        createAccumulator: (): Acc => ({ name: null, auctions: false }),
        add: (e: NexmarkEvent, acc: Acc): Acc => (e.type === "person" ? { name: e.person.name, auctions: acc.auctions } : { name: acc.name, auctions: true }),
        getResult: (acc: Acc) => acc,
      },
      (id: number, ctx, accs: Acc[], out) => {
        const acc = accs[0]!;
        if (acc.name !== null && acc.auctions) out.collect([id, acc.name, ctx.window.start]);
      },
    )
    .name("Window Join People and Auctions");
  sink(newUsers, a);
}
