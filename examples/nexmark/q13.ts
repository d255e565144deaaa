// Nexmark q13, bounded side input join: every bid joined with the value of key auction % 10,000 in a side input (a
// lookup join), as (auction, bidder, price, dateTime, value); bids whose key is not in it are dropped. The side
// input is a text file of "key,value" lines given as the fifth argument, read by every subtask when it opens (a
// bounded table, as Nexmark's side_input file); without one, the keys 0..9999 map to "value-<key>".
//   bun main.ts local examples/nexmark/q13.ts [events] [seed] [out] [ratePerSecond] [sideInputFile]
import * as fs from "node:fs";
import type { Bid, StreamExecutionEnvironment } from "../../src/api/index.ts";
import { bids, queryArgs, sink } from "./common.ts";

const KEYS = 10_000;

function loadSideInput(file: string | undefined): Map<number, string> {
  const side = new Map<number, string>();
  if (file === undefined || file === "") {
    for (let k = 0; k < KEYS; k++) side.set(k, `value-${k}`);
    return side;
  }
  fs.readFileSync(file, "utf8").split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    const comma = line.indexOf(",");
    const key = Number(line.slice(0, comma));
    if (comma < 0 || !Number.isInteger(key)) throw new Error(`q13 side input ${file}, line ${i + 1}: expected "key,value", got ${JSON.stringify(line)}`);
    side.set(key, line.slice(comma + 1));
  });
  return side;
}

type Row = [auction: number, bidder: number, price: number, dateTime: number, value: string];

class SideInputJoin {
  private side = new Map<number, string>();
  constructor(private readonly file: string | undefined) {}

  open(): void {
    this.side = loadSideInput(this.file);
  }

  flatMap(b: Bid): Row[] {
    const value = this.side.get(b.auction % KEYS);
    return value === undefined ? [] : [[b.auction, b.bidder, b.price, b.dateTime, value]];
  }
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const a = queryArgs(args);
  const file = args[4];
  env.setJobName("Nexmark q13");
  const out = bids(env, a, false)
    .flatMap(new SideInputJoin(file))
    .name("Join with Side Input");
  sink(out, a);
}
