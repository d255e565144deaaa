// Nexmark q14, calculation: bids whose converted price (0.908 x price) lies between 1,000,000 and 50,000,000, with
// the time of day they were placed (dayTime 8-18 h, nightTime up to 6 h and from 20 h, otherTime between, UTC) and
// the number of 'c' characters of a string field (Nexmark's count_char UDF on `extra`; this generator has no
// `extra` padding field, so it counts the bid's url), as (auction, bidder, price, bidTimeType, dateTime, cCounts).
//   bun main.ts local examples/nexmark/q14.ts [events] [seed] [out] [ratePerSecond]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

const bidTimeType = (ms: number) => {
  const hour = new Date(ms).getUTCHours();
  return hour >= 8 && hour <= 18 ? "dayTime" : hour <= 6 || hour >= 20 ? "nightTime" : "otherTime";
};

const countChar = (s: string, c: string) => {
  let n = 0;
  for (let i = 0; i < s.length; i++) if (s[i] === c) n++;
  return n;
};

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  env.setJobName("Nexmark q14");
  const out = bids(env, a, false)
    .flatMap((b) => {
      const price = 0.908 * b.price;
      return price > 1_000_000 && price < 50_000_000 ? [[b.auction, b.bidder, price, bidTimeType(b.dateTime), b.dateTime, countChar(b.url, "c")]] : [];
    })
    .name("Calculation");
  sink(out, a);
}
