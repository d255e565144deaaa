// The keyed sum as a job file for `bun main.ts local`, for A/B runs of two trees (scripts/bench-compare-trees.ts):
// args: records, buffer timeout in ms. fromSequence -> map to [key, 1] (10,000 keys) -> keyBy -> sum -> discarding sink.
import type { StreamExecutionEnvironment } from "../../src/api/index.ts";

export default function keyedSum(env: StreamExecutionEnvironment, args: string[]) {
  const records = Number(args[0] ?? 1_000_000);
  const bufferTimeout = Number(args[1] ?? 100);
  if (!Number.isInteger(records) || records < 1 || !Number.isFinite(bufferTimeout) || bufferTimeout < 0) throw new Error(`usage: keyed-sum-job.ts RECORDS BUFFER_TIMEOUT_MS, got ${args.join(" ")}`);
  env.setBufferTimeout(bufferTimeout);
  env
    .fromSequence(1, records)
    .map((x: number): [number, number] => [x % 10_000, 1])
    .keyBy((t) => t[0])
    .sum(1)
    .addSink({ invoke() {} });
}
