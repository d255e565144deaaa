// How JavaScriptCore represents the keyed sum's numbers, for docs/benchmarks.md ("The keyed sum's two speeds,
// explained"): the job of keyed-sum-job.ts (p=1, the keyBy chained) with two pass-through probes that look at every
// 256th value with bun:jsc's describe(): the sequence numbers before the map, and the [x % 10_000, 1] records after it.
// Prints, at the end, how many of the values looked at were int32 / doubles and arrays of int32 / of doubles.
// Run: bun main.ts local scripts/bench-helpers/record-representation-job.ts [records, default 20000000] [int-keys]
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";
import * as jsc from "bun:jsc";

// describe() is in bun:jsc but not in its type declarations.
const describe = (jsc as unknown as { describe(v: unknown): string }).describe;

export default function recordRepresentation(env: StreamExecutionEnvironment, args: string[]) {
  const records = Number(args[0] ?? 20_000_000);
  const intKeys = args[1] === "int-keys";
  const kind = (v: unknown) => {
    const d = String(describe(v));
    return (/ArrayWith\w+/.exec(d) ?? /^\w+/.exec(d))?.[0] ?? "?";
  };
  const count = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const numbers = new Map<string, number>();
  const tuples = new Map<string, number>();
  let n = 0;
  let m = 0;
  env.fromSequence(1, records)
    .map((x: number) => {
      if ((n++ & 255) === 0) count(numbers, kind(x));
      return x;
    })
    .map((x: number): [number, number] => (intKeys ? [(x % 10_000) | 0, 1] : [x % 10_000, 1]))
    .keyBy((t) => {
      if ((m++ & 255) === 0) count(tuples, kind(t));
      if (m === records) console.error(`sequence numbers: ${JSON.stringify(Object.fromEntries(numbers))}; records after the map: ${JSON.stringify(Object.fromEntries(tuples))}`);
      return t[0];
    })
    .sum(1)
    .addSink({ invoke() {} });
}
