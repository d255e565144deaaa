// The Nexmark generator as a source: env.fromSource(NexmarkSource.events({ events, seed }), strategy).
// It is a replayable split source (src/runtime/sources.ts, split type "nexmark"): subtask i of p generates event
// numbers i, i+p, ...; positions are checkpointed and reassigned on restore like any other source's.
import type { Source } from "../api/environment.ts";
import { eventTime, nexmarkConfig, type NexmarkEvent } from "./generator.ts";

export interface NexmarkSourceOptions {
  /** Number of events (event numbers 0..events-1). */
  events: number;
  /** Seed of the generator (default 0): the same seed gives the same events. */
  seed?: number;
  /** Events per second of event time (default 100,000, i.e. 10 µs between events). */
  ratePerSecond?: number;
  /** Event time of the first event in ms (default 1,700,000,000,000: 2023-11-14T22:13:20Z). */
  firstEventTime?: number;
  /** Also emit at ratePerSecond in wall-clock time (all subtasks together), instead of as fast as possible. */
  throttle?: boolean;
}

export const NexmarkSource = {
  /** The stream of Nexmark events: persons, auctions and bids, 1 : 3 : 46. */
  events(options: NexmarkSourceOptions): Source<NexmarkEvent> {
    if (typeof options !== "object" || options === null) throw new Error("NexmarkSource.events: expected options { events, seed?, ratePerSecond?, firstEventTime?, throttle? }");
    const c = nexmarkConfig(options);
    return { kind: "source", spec: { type: "nexmark", ...c, throttle: options.throttle === true }, name: "Nexmark Source" };
  },
  /** An event's time (the dateTime of its person, auction or bid): the timestamp assigner of Nexmark queries. */
  eventTime,
};
