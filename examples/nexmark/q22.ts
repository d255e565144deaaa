// Nexmark q22, get URL directories: the first three path parts of each bid's url (SPLIT_INDEX(url, '/', 3..5): the
// parts after "https:", "" and the host; null where the url has fewer), as (auction, bidder, price, channel, dir1,
// dir2, dir3).
//   bun main.ts local examples/nexmark/q22.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q22");
  const out = bids(env, a, false)
    .map((b) => {
      const parts = b.url.split("/");
      return [b.auction, b.bidder, b.price, b.channel, parts[3] ?? null, parts[4] ?? null, parts[5] ?? null];
    })
    .name("URL Directories");
  sink(out, a);
}
