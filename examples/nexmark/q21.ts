// Nexmark q21, add channel id: a bid's channel id is 0, 1, 2, 3 for the channels apple, google, facebook, baidu (any
// case), else the channel_id parameter of its url; bids without one are dropped. Emits (auction, bidder, price,
// channel, channelId).
//   bun main.ts local examples/nexmark/q21.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

const KNOWN: Record<string, string> = { apple: "0", google: "1", facebook: "2", baidu: "3" };
// REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)
const CHANNEL_ID = /(&|^)channel_id=([^&]*)/;

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q21");
  const out = bids(env, a, false)
    .flatMap((b) => {
      const id = KNOWN[b.channel.toLowerCase()] ?? CHANNEL_ID.exec(b.url)?.[2];
      return id === undefined ? [] : [[b.auction, b.bidder, b.price, b.channel, id]];
    })
    .name("Channel Id");
  sink(out, a);
}
