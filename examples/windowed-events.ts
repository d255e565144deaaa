// Events per user per 10 s tumbling event-time window. The events are generated (deterministically) with
// timestamps up to 4 s out of order; the watermark lags the highest timestamp by 5 s, so no event is late.
//   bun main.ts local examples/windowed-events.ts [events]
// Output lines: (user,windowStart,windowEnd,count).
import { TumblingEventTimeWindows, WatermarkStrategy, type StreamExecutionEnvironment } from "../src/api/index.ts";

interface Event {
  user: string;
  ts: number;
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const n = Number(args[0] ?? 20_000);
  env
    .fromSequence(0, n - 1)
    .map((i): Event => {
      // 10 events per second of event time, each shifted back by up to 4 s (a fixed pseudo-random amount).
      const jitter = ((i * 2654435761) >>> 0) % 4000;
      return { user: `user${i % 5}`, ts: 1_700_000_000_000 + i * 100 - jitter };
    })
    .assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness<Event>(5000).withTimestampAssigner((e) => e.ts))
    .keyBy((e) => e.user)
    .window(TumblingEventTimeWindows.of(10_000))
    .aggregate(
      { createAccumulator: () => 0, add: (_e: Event, acc: number) => acc + 1, getResult: (acc: number) => acc, merge: (a: number, b: number) => a + b },
      (user: string, ctx, counts: number[], out) => out.collect([user, ctx.window.start, ctx.window.end, counts[0]]),
    )
    .print();
}
