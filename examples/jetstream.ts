// Events per key per 10 s tumbling window, from one JetStream stream into another, exactly once (the sink
// publishes each checkpoint's results with Nats-Msg-Id, deduplicated by the stream). Needs `nats-server -js`, a
// stream EVENTS on subjects events.> with JSON payloads { key, ts }, and a stream COUNTS on subject counts:
//   bun main.ts local examples/jetstream.ts nats://127.0.0.1:4222
import { JetStreamSink, JetStreamSource, TumblingEventTimeWindows, WatermarkStrategy, type JetStreamRecord, type StreamExecutionEnvironment } from "../src/api/index.ts";

type Event = JetStreamRecord<{ key: string; ts: number }>;

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const servers = args[0] ?? "nats://127.0.0.1:4222";
  env.enableCheckpointing(1000);
  env
    .fromSource(JetStreamSource.source<Event>({ servers, stream: "EVENTS" }), WatermarkStrategy.forBoundedOutOfOrderness<Event>(2000).withTimestampAssigner((e) => e.value.ts))
    .keyBy((e) => e.value.key)
    .window(TumblingEventTimeWindows.of(10_000))
    .aggregate(
      { createAccumulator: () => 0, add: (_e: Event, n: number) => n + 1, getResult: (n: number) => n, merge: (a: number, b: number) => a + b },
      (key: string, ctx, counts: number[], out) => out.collect({ key, start: ctx.window.start, count: counts[0] }),
    )
    .sinkTo(JetStreamSink.sink({ servers, subject: "counts" }));
}
