// Public API for job authors: `import { type StreamExecutionEnvironment } from "tm"` (or this path).
export { Types, type TypeInformation } from "./types.ts";
export { StreamExecutionEnvironment, ExecutionConfig, AsyncDataStream, DataStream, KeyedStream, ConnectedStreams, BroadcastStream, BroadcastConnectedStream, WindowedStream, DataSink, FileSink, FileSinkSpec, type ConnectorSinkSpec, type JobBuilder, type Source } from "./environment.ts";
// The Nexmark benchmark's generator as a source: env.fromSource(NexmarkSource.events({ events, seed }), strategy).
export { NexmarkSource, type NexmarkSourceOptions } from "../nexmark/source.ts";
export type { Auction, Bid, NexmarkEvent, Person } from "../nexmark/generator.ts";
export type { BroadcastContext, BroadcastProcessFunction, BroadcastReadOnlyContext, KeyedBroadcastProcessFunction, ReadOnlyBroadcastState } from "./plan.ts";
export type { CheckpointingMode, CoFlatMapFunction, CoMapFunction, CoOnTimerContext, CoProcessContext, CoProcessFunction, Collector, KeyedCoProcessFunction, FilterFunction, FlatMapFunction, KeyedContext, KeyedProcessFunction, MapFunction, OnTimerContext, RichFunction, RuntimeContext, SinkFunction } from "./plan.ts";
// Event time: watermark strategies, windows, side outputs, timers.
export {
  EventTimeSessionWindows,
  OutputTag,
  ProcessingTimeSessionWindows,
  SlidingEventTimeWindows,
  SlidingProcessingTimeWindows,
  Time,
  TumblingEventTimeWindows,
  TumblingProcessingTimeWindows,
  WatermarkStrategy,
  type ProcessWindowFunction,
  type TimeDomain,
  type TimerService,
  type TimestampAssigner,
  type TimeWindow,
  type WatermarkGenerator,
  type WatermarkOutput,
  type WindowAggregateFunction,
  type WindowAssigner,
  type WindowContext,
} from "./event-time.ts";
// State descriptors (as Flink's): create them in open(ctx) and get state with ctx.getState(descriptor) etc.
export {
  AggregatingStateDescriptor,
  ListStateDescriptor,
  MapStateDescriptor,
  ReducingStateDescriptor,
  ValueStateDescriptor,
  type AggregatingState,
  type BroadcastState,
  type ListState,
  type MapState,
  type ReducingState,
  type StateTtlConfig,
  type ValueState,
} from "../state/api.ts";
// Connectors to external systems (src/connectors/): env.fromSource(...) and stream.sinkTo(...).
export { PostgresSink, type PostgresSinkOptions } from "../connectors/postgres-sink.ts";
export type { PostgresConnectionOptions } from "../connectors/postgres-common.ts";
export { PostgresCdcSource, type PostgresCdcRecord, type PostgresCdcSourceOptions, type PostgresRow } from "../connectors/postgres-cdc.ts";
export type { ConnectorSink, ConnectorSource, ConnectorSourceReader, ConnectorSplit, SinkWriter, SinkWriterContext, SourceReaderContext } from "./connector.ts";
export { JetStreamSink, JetStreamSource, type JetStreamMessage, type JetStreamRecord, type JetStreamSinkOptions, type JetStreamSourceOptions } from "../connectors/nats-jetstream.ts";
export {
  ContinuousEventTimeTrigger,
  CountEvictor,
  CountTrigger,
  EventTimeTrigger,
  ProcessingTimeTrigger,
  PurgingTrigger,
  TimeEvictor,
  type Evictor,
  type TimestampedValue,
  type Trigger,
  type TriggerContext,
  type TriggerMergeContext,
  type TriggerResult,
  type TriggerState,
} from "./triggers.ts";
export { AsyncRetryStrategies, type AsyncFunction, type AsyncRetryStrategy } from "./async.ts";
export { IntervalJoin, IntervalJoined, TwoStreams, TwoStreamWindow, type CoGroupFunction, type JoinFunction, type ProcessJoinContext, type ProcessJoinFunction } from "./joins.ts";
