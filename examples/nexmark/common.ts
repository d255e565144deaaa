// What the Nexmark query jobs share: their arguments, the source and the sink.
//   args: [events] [seed] [out] [ratePerSecond]
//   events: number of events (default 1,000,000); seed: generator seed (default 0);
//   out: "-" (default) prints, "discard" drops the output (benchmarks), anything else is a directory for the
//        exactly-once FileSink; ratePerSecond: events per second of event time (default 100,000).
import { FileSink, NexmarkSource, WatermarkStrategy, type DataStream, type NexmarkEvent, type StreamExecutionEnvironment } from "../../src/api/index.ts";

export interface QueryArgs {
  events: number;
  seed: number;
  out: string;
  ratePerSecond: number;
}

export function queryArgs(args: string[]): QueryArgs {
  const num = (i: number, dflt: number) => (args[i] === undefined || args[i] === "" ? dflt : Number(args[i]));
  return { events: num(0, 1_000_000), seed: num(1, 0), out: args[2] || "-", ratePerSecond: num(3, 100_000) };
}

/** Timestamps from the events' dateTime; watermarks 4 s behind, as the Nexmark queries' WATERMARK definition. */
export const WATERMARKS = WatermarkStrategy.forBoundedOutOfOrderness<NexmarkEvent>(4000).withTimestampAssigner((e) => NexmarkSource.eventTime(e));

/** The Nexmark event stream, with event time (timestamps and watermarks) when the query needs it. */
export function nexmark(env: StreamExecutionEnvironment, a: QueryArgs, eventTime: boolean): DataStream<NexmarkEvent> {
  return env.fromSource(NexmarkSource.events({ events: a.events, seed: a.seed, ratePerSecond: a.ratePerSecond }), eventTime ? WATERMARKS : null);
}

export function sink<T>(stream: DataStream<T>, a: QueryArgs): void {
  if (a.out === "-") stream.print();
  else if (a.out === "discard") stream.addSink(() => {});
  else stream.sinkTo(FileSink.forRowFormat(a.out).build());
}
