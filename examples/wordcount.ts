// Word count: the classic. Run it with `bun main.ts local examples/wordcount.ts` (bundled input) or
// `... examples/wordcount.ts --input FILE [--output PATH]`.
import { parseArgs } from "node:util";
import type { StreamExecutionEnvironment } from "../src/api/index.ts";

export default function wordCount(env: StreamExecutionEnvironment, args: string[]) {
  const { values } = parseArgs({ args, options: { input: { type: "string" }, output: { type: "string" } } });
  // Relative paths are read from the working directory of each TaskManager.
  const input = values.input ?? "examples/data/hamlet.txt";
  // Bounded input: emit each word's final count once, at the end, as Flink does in BATCH mode.
  env.setRuntimeMode("batch");
  const counts = env
    .readTextFile(input)
    .flatMap((line) => line.toLowerCase().split(/[^\p{L}\p{N}']+/u))
    .filter((word) => word.length > 0)
    .map((word): [string, number] => [word, 1])
    .keyBy((pair) => pair[0])
    .sum(1);
  if (values.output) counts.writeAsText(values.output);
  else counts.print();
}
