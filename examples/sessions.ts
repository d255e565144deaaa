// User sessions: clicks of a user belong to one session while they come less than 30 s apart (event-time
// session windows, which merge). The clicks are generated deterministically, a little out of order; the
// watermark lags the highest timestamp by 10 s. Clicks later than that go to a side output and are printed as
// "late ...".
//   bun main.ts local examples/sessions.ts [clicks]
// Output lines: (user,sessionStart,sessionEnd,clicks,pages).
import { EventTimeSessionWindows, OutputTag, WatermarkStrategy, type StreamExecutionEnvironment } from "../src/api/index.ts";

interface Click {
  user: string;
  page: string;
  ts: number;
}

export default function (env: StreamExecutionEnvironment, args: string[]) {
  const n = Number(args[0] ?? 5_000);
  const late = new OutputTag<Click>("late-clicks");
  const sessions = env
    .fromSequence(0, n - 1)
    .map((i): Click => {
      const h = (i * 2654435761) >>> 0;
      const user = `user${h % 7}`;
      // Bursts of activity: every 200 clicks a pause of 2 min; 1% of clicks arrive 20 s late.
      const ts = 1_700_000_000_000 + i * 1_000 + Math.floor(i / 200) * 120_000 - (h % 100 === 0 ? 20_000 : h % 3_000);
      return { user, page: `/page/${h % 13}`, ts };
    })
    .assignTimestampsAndWatermarks(WatermarkStrategy.forBoundedOutOfOrderness<Click>(10_000).withTimestampAssigner((c) => c.ts))
    .keyBy((c) => c.user)
    .window(EventTimeSessionWindows.withGap(30_000))
    .sideOutputLateData(late)
    .process((user: string, ctx, clicks: Click[], out) => {
      const pages = new Set(clicks.map((c) => c.page)).size;
      out.collect([user, ctx.window.start, ctx.window.end, clicks.length, pages]);
    });
  sessions.print();
  sessions.getSideOutput(late).map((c) => `late ${c.user} ${c.ts}`).print();
}
