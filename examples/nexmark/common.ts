// What the Nexmark query jobs share: their arguments, the source and the sink.
//   args: [events] [seed] [out] [ratePerSecond]
//   events: number of events (default 1,000,000); seed: generator seed (default 0);
//   out: "-" (default) prints, "discard" drops the output (benchmarks), anything else is a directory for the
//        exactly-once FileSink; ratePerSecond: events per second of event time (default 100,000).
import { FileSink, NexmarkSource, WatermarkStrategy, type Bid, type DataStream, type KeyedContext, type NexmarkEvent, type StreamExecutionEnvironment, type ValueState } from "../../src/api/index.ts";

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

/** The bids of the stream (keeping their event time). */
export function bids(env: StreamExecutionEnvironment, a: QueryArgs, eventTime: boolean): DataStream<Bid> {
  return nexmark(env, a, eventTime).flatMap((e): Bid[] => (e.type === "bid" ? [e.bid] : [])).name("Bids");
}

/** UTC calendar day and minute of a time in ms, as Flink SQL's DATE_FORMAT(dateTime, 'yyyy-MM-dd') and 'HH:mm'.
 *  Event times arrive nearly in order, so the last day's and minute's text is kept and formatted again only when a
 *  time falls outside it (formatting every bid's time was 4 % of q16's task). */
export const day = (ms: number): string => {
  if (!(ms >= dayStart && ms < dayStart + 86_400_000)) {
    dayStart = Math.floor(ms / 86_400_000) * 86_400_000;
    dayText = new Date(dayStart).toISOString().slice(0, 10);
  }
  return dayText;
};
export const minute = (ms: number): string => {
  if (!(ms >= minuteStart && ms < minuteStart + 60_000)) {
    minuteStart = Math.floor(ms / 60_000) * 60_000;
    minuteText = new Date(minuteStart).toISOString().slice(11, 16);
  }
  return minuteText;
};
let dayStart = NaN;
let dayText = "";
let minuteStart = NaN;
let minuteText = "";

/** Nexmark's price ranks of q15-q17: < 10,000, < 1,000,000, the rest. */
export const priceRank = (price: number): 1 | 2 | 3 => (price < 10_000 ? 1 : price < 1_000_000 ? 2 : 3);

/**
 * Continuous aggregates (q15-q17, q19) emit their key's current row when the watermark passes the end of the event-time
 * second of a change, and at the end of input (the last row per key is the final one): Flink SQL's update stream in
 * mini-batches of one second. Schedules the key's next emission unless one is pending.
 */
export function scheduleUpdate(ctx: KeyedContext<unknown>, pending: ValueState<boolean>): void {
  if (pending.value() === true) return;
  registerUpdateTimer(ctx);
  pending.update(true);
}

/** scheduleUpdate's timer, for a function that keeps its pending flag inside a state of its own (bidding-stats.ts' accumulator). */
export function registerUpdateTimer(ctx: KeyedContext<unknown>): void {
  const timers = ctx.timerService();
  const t = Math.max(ctx.timestamp() ?? -Infinity, timers.currentWatermark() + 1);
  timers.registerEventTimeTimer(Math.floor(t / 1000) * 1000 + 999);
}
