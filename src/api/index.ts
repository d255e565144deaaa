// Public API for job authors: `import { type StreamExecutionEnvironment } from "tm"` (or this path).
export { StreamExecutionEnvironment, DataStream, KeyedStream, DataSink, type JobBuilder } from "./environment.ts";
export type { RuntimeContext, SinkFunction } from "./plan.ts";
