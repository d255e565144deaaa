// Public API for job authors: `import { type StreamExecutionEnvironment } from "tm"` (or this path).
export { StreamExecutionEnvironment, DataStream, KeyedStream, DataSink, FileSink, FileSinkSpec, type JobBuilder } from "./environment.ts";
export type { CheckpointingMode, Collector, FilterFunction, FlatMapFunction, KeyedContext, KeyedProcessFunction, MapFunction, RichFunction, RuntimeContext, SinkFunction } from "./plan.ts";
// State descriptors (as Flink's): create them in open(ctx) and get state with ctx.getState(descriptor) etc.
export {
  AggregatingStateDescriptor,
  ListStateDescriptor,
  MapStateDescriptor,
  ReducingStateDescriptor,
  ValueStateDescriptor,
  type AggregatingState,
  type ListState,
  type MapState,
  type ReducingState,
  type StateTtlConfig,
  type ValueState,
} from "../state/api.ts";
