// The keyed sum as a job file for `bun main.ts local`, for A/B runs (scripts/bench-compare-trees.ts, -commands.ts):
// args: records, buffer timeout in ms, mode. fromSequence -> map to [key, 1] (10,000 keys) -> keyBy -> sum ->
// discarding sink ("keyed", two tasks and an exchange); "chained": the same sums in a Map in the source's chain
// (one task, no exchange, no keyed state): what chaining a keyed sum with its source would save at best;
// "int-keys": the keyed sum with the keys written `(x % 10_000) | 0`.
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";

export default function keyedSum(env: StreamExecutionEnvironment, args: string[]) {
  const records = Number(args[0] ?? 1_000_000);
  const bufferTimeout = Number(args[1] ?? 100);
  if (!Number.isInteger(records) || records < 1 || !Number.isFinite(bufferTimeout) || bufferTimeout < 0) throw new Error(`usage: keyed-sum-job.ts RECORDS BUFFER_TIMEOUT_MS, got ${args.join(" ")}`);
  env.setBufferTimeout(bufferTimeout);
  // "int-keys": the same keys made int32 with `| 0`, which ran at the faster of the default job's two speeds until each
  // chain link got a hand-off of its own (docs/benchmarks.md, "The keyed sum's two speeds: one hand-off shared by the
  // chain's links"); kept as a check that the two stay alike.
  const pairs = args[2] === "int-keys"
    ? env.fromSequence(1, records).map((x: number): [number, number] => [(x % 10_000) | 0, 1])
    : env.fromSequence(1, records).map((x: number): [number, number] => [x % 10_000, 1]);
  if (args[2] === "chained") {
    const sums = new Map<number, number>();
    pairs.map((t): [number, number] => {
      const s = (sums.get(t[0]) ?? 0) + t[1];
      sums.set(t[0], s);
      return [t[0], s];
    }).addSink({ invoke() {} });
  } else pairs.keyBy((t) => t[0]).sum(1).addSink({ invoke() {} });
}
