// Nexmark (issue 8): the generator's model (proportions, ids, skew, event time), determinism per seed, disjoint
// parallel splits and restore from checkpointed positions; then every query of examples/nexmark/ run at
// parallelism 2 on an in-process cluster (real Workers and keyBy shuffles) and compared with a plain,
// single-threaded reference implementation of the same query written here from the queries' definitions (the
// Nexmark SQL), independently of the examples' code. Events come from eventAt, the generator under test above.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import type { SourceSpec } from "../src/api/plan.ts";
import { NexmarkSource } from "../src/api/index.ts";
import { eventAt, nexmarkConfig, type Auction, type Bid, type NexmarkEvent, type Person } from "../src/nexmark/generator.ts";
import { SourceReader, assignSplits, initialSplits, splitForParallelism, type SourceSplit } from "../src/runtime/sources.ts";
import { setLogLevel } from "../src/util/log.ts";
import { removeTempDirs, rng, tempDir } from "./helpers.ts";
import { generate, line, runQuery as runQueryOn, sorted } from "./nexmark-helpers.ts";
import { clusterForTests, type TestCluster } from "./cluster-helpers.ts";

afterAll(removeTempDirs);

function specOf(c: { events: number; seed?: number; ratePerSecond?: number; throttle?: boolean }): Extract<SourceSpec, { type: "nexmark" }> {
  const spec = NexmarkSource.events(c).spec;
  if (spec.type !== "nexmark") throw new Error("not a nexmark spec");
  return spec;
}

function readAll(reader: SourceReader): NexmarkEvent[] {
  const out: NexmarkEvent[] = [];
  for (let chunk = reader.next(); chunk !== null; chunk = reader.next()) out.push(...(chunk as NexmarkEvent[]));
  return out;
}

/** A stable identity of an event: its type and id (people, auctions) or all its fields (bids have no id). */
const key = (e: NexmarkEvent) => JSON.stringify(e);

describe("generator", () => {
  const N = 50_000;
  const cfg = nexmarkConfig({ events: N, seed: 42 });
  const events = Array.from({ length: N }, (_, n) => eventAt(n, cfg));

  test("1 person, 3 auctions and 46 bids in every 50 events; person and auction ids count up from 1000", () => {
    for (let g = 0; g < N; g += 50) {
      const types = events.slice(g, g + 50).map((e) => e.type);
      expect([types.filter((t) => t === "person").length, types.filter((t) => t === "auction").length, types.filter((t) => t === "bid").length]).toEqual([1, 3, 46]);
    }
    const people = events.flatMap((e) => (e.type === "person" ? [e.person.id] : [])).sort((a, b) => a - b);
    const auctions = events.flatMap((e) => (e.type === "auction" ? [e.auction.id] : [])).sort((a, b) => a - b);
    expect(people).toEqual(Array.from({ length: N / 50 }, (_, i) => 1000 + i));
    expect(auctions).toEqual(Array.from({ length: (N / 50) * 3 }, (_, i) => 1000 + i));
  });

  test("fields, references to earlier ids (plus a lead of 10) and hot auctions and bidders", () => {
    let people = 0;
    let auctions = 0;
    const bidsPerAuction = new Map<number, number>();
    const bidsPerBidder = new Map<number, number>();
    let bids = 0;
    for (const e of events) {
      if (e.type === "person") {
        people++;
        const p: Person = e.person;
        expect(Object.keys(p).sort()).toEqual(["city", "creditCard", "dateTime", "emailAddress", "id", "name", "state"]);
        expect(p.creditCard).toMatch(/^\d{4} \d{4} \d{4} \d{4}$/);
        expect(p.emailAddress).toMatch(/^[a-z ]+@[a-z ]+\.com$/);
        expect(["AZ", "CA", "ID", "OR", "WA", "WY"]).toContain(p.state);
      } else if (e.type === "auction") {
        auctions++;
        const a: Auction = e.auction;
        expect(Object.keys(a).sort()).toEqual(["category", "dateTime", "description", "expires", "id", "initialBid", "itemName", "reserve", "seller"]);
        expect(a.seller).toBeGreaterThanOrEqual(1000);
        expect(a.seller).toBeLessThan(1000 + people + 11);
        expect(a.category).toBeGreaterThanOrEqual(10);
        expect(a.category).toBeLessThanOrEqual(14);
        expect(a.expires).toBeGreaterThan(a.dateTime);
        expect(a.reserve).toBeGreaterThanOrEqual(a.initialBid);
        expect(a.initialBid).toBeGreaterThanOrEqual(100);
        expect(a.initialBid).toBeLessThanOrEqual(100_000_000);
      } else {
        bids++;
        const b: Bid = e.bid;
        expect(Object.keys(b).sort()).toEqual(["auction", "bidder", "channel", "dateTime", "price", "url"]);
        expect(b.auction).toBeGreaterThanOrEqual(1000);
        // At most 10 ids ahead of the auctions generated so far (event ids are shuffled within groups of 50 only).
        expect(b.auction).toBeLessThan(1000 + auctions + 3 + 10);
        expect(b.bidder).toBeLessThan(1000 + people + 1 + 10);
        expect(b.price).toBeGreaterThanOrEqual(100);
        bidsPerAuction.set(b.auction, (bidsPerAuction.get(b.auction) ?? 0) + 1);
        bidsPerBidder.set(b.bidder, (bidsPerBidder.get(b.bidder) ?? 0) + 1);
      }
    }
    // Skew: about half the bids go to hot auctions (ids 1000 + a multiple of 100), 3/4 come from hot bidders.
    const hotAuctionBids = [...bidsPerAuction].filter(([a]) => (a - 1000) % 100 === 0).reduce((s, [, n]) => s + n, 0);
    const hotBidderBids = [...bidsPerBidder].filter(([p]) => (p - 1000) % 100 === 1).reduce((s, [, n]) => s + n, 0);
    expect(hotAuctionBids / bids).toBeGreaterThan(0.45);
    expect(hotBidderBids / bids).toBeGreaterThan(0.7);
    // Categories are spread evenly.
    const perCategory = new Map<number, number>();
    for (const e of events) if (e.type === "auction") perCategory.set(e.auction.category, (perCategory.get(e.auction.category) ?? 0) + 1);
    for (const n of perCategory.values()) expect(Math.abs(n / auctions - 0.2)).toBeLessThan(0.03);
  });

  test("event time: 10 µs per event by default, out of order by less than 50 events; the rate is configurable", () => {
    const time = (e: NexmarkEvent) => NexmarkSource.eventTime(e);
    expect(time(events[0]!)).toBe(1_700_000_000_000);
    let max = -Infinity;
    for (let n = 0; n < N; n++) {
      const t = time(events[n]!);
      expect(Math.abs(t - (1_700_000_000_000 + n / 100))).toBeLessThan(1.5);
      expect(t).toBeGreaterThanOrEqual(max - 1);
      max = Math.max(max, t);
    }
    expect(max).toBe(1_700_000_000_000 + Math.floor((N - 1) / 100));
    const slow = nexmarkConfig({ events: N, seed: 42, ratePerSecond: 1000, firstEventTime: 0 });
    expect(time(eventAt(49_950, slow))).toBe(49_950);
  });

  test("deterministic per (seed, event number): the same events in any order, other events for another seed", () => {
    const r = rng(3);
    for (let i = 0; i < 2000; i++) {
      const n = Math.floor(r() * N);
      expect(eventAt(n, cfg)).toEqual(events[n]!);
    }
    const other = nexmarkConfig({ events: N, seed: 43 });
    let same = 0;
    for (let n = 0; n < 1000; n++) if (key(eventAt(n, other)) === key(events[n]!)) same++;
    expect(same).toBeLessThan(50);
  });
});

describe("source splits", () => {
  const N = 30_001;
  const spec = specOf({ events: N, seed: 9 });
  const all = Array.from({ length: N }, (_, n) => eventAt(n, spec));

  test("parallel subtasks generate disjoint event numbers, together all of them", () => {
    for (const p of [1, 2, 3, 7]) {
      const seen: NexmarkEvent[] = [];
      for (let i = 0; i < p; i++) {
        const got = readAll(new SourceReader(spec, initialSplits(spec, i, p)));
        // Subtask i generates i, i+p, ...: so its k-th event is event number i + k*p.
        got.forEach((e, k) => expect(e).toEqual(all[i + k * p]!));
        seen.push(...got);
      }
      expect(seen.length).toBe(N);
      expect(new Set(seen.map(key)).size).toBe(new Set(all.map(key)).size);
    }
    // More subtasks than events: the extra ones have nothing to do.
    expect(readAll(new SourceReader(specOf({ events: 2 }), initialSplits(specOf({ events: 2 }), 3, 4)))).toEqual([]);
  });

  test("positions survive JSON and restore at another parallelism without loss or duplicates", () => {
    const r = rng(5);
    for (const [from, to] of [[2, 3], [3, 2], [1, 4], [4, 1], [2, 5]] as const) {
      const read: NexmarkEvent[] = [];
      const saved: SourceSplit[] = [];
      for (let i = 0; i < from; i++) {
        const reader = new SourceReader(spec, initialSplits(spec, i, from), r() < 0.5);
        const chunks = Math.floor(r() * 8);
        for (let c = 0; c < chunks; c++) read.push(...((reader.next() ?? []) as NexmarkEvent[]));
        saved.push(...(JSON.parse(JSON.stringify(reader.positions())) as SourceSplit[]));
      }
      const rest = splitForParallelism(saved, to);
      expect(rest.length).toBeGreaterThanOrEqual(Math.min(to, N - read.length));
      for (let i = 0; i < to; i++) read.push(...readAll(new SourceReader(spec, assignSplits(rest, i, to), true)));
      expect(read.length).toBe(N);
      const want = all.map(key).sort();
      expect(read.map(key).sort()).toEqual(want);
    }
  });

  test("a halved split keeps pace in event time: its halves interleave", () => {
    const [s] = initialSplits(spec, 0, 1);
    const halves = splitForParallelism([s!], 2);
    expect(halves).toEqual([
      { type: "nexmark", id: 0, next: 0, last: N - 1, stride: 2 },
      { type: "nexmark", id: 1, next: 1, last: N - 1, stride: 2 },
    ]);
  });

  test("throttled: events come at the configured rate", () => {
    const slow = specOf({ events: 3000, seed: 1, ratePerSecond: 20_000, throttle: true });
    const t0 = performance.now();
    const got = readAll(new SourceReader(slow, initialSplits(slow, 0, 1)));
    const ms = performance.now() - t0;
    expect(got.length).toBe(3000);
    expect(ms).toBeGreaterThanOrEqual(140); // 3000 events at 20,000/s: 150 ms
    expect(ms).toBeLessThan(2000);
  });

  test("throttled at a high rate: each chunk holds at least 0.1 ms of the schedule, and no event comes before it is due", () => {
    // 1 M events/s in all; subtask 1 of 2 emits every second event, so 50 of its events make 0.1 ms.
    const fast = specOf({ events: 40_000, seed: 1, ratePerSecond: 1_000_000, throttle: true });
    const reader = new SourceReader(fast, initialSplits(fast, 1, 2));
    const t0 = performance.now();
    const sizes: number[] = [];
    let emitted = 0;
    for (let chunk = reader.next(); chunk !== null; chunk = reader.next()) {
      const now = performance.now();
      emitted += chunk.length;
      sizes.push(chunk.length);
      // Its last event (subtask 1's event number 2 * emitted - 1) was due by now: at or after the reader began.
      expect(now - t0).toBeGreaterThanOrEqual((2 * emitted - 1) * 0.001 - 0.01);
    }
    expect(emitted).toBe(20_000);
    // Every chunk but the last waited for 50 events (more when the reader was behind its schedule).
    expect(Math.min(...sizes.slice(0, -1))).toBeGreaterThanOrEqual(50);
  });
});

// ---- the queries on a cluster, against reference implementations ----

setLogLevel("warn");
const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 5000, "log.level": "warn" };
let t: TestCluster;
let dir: string;

const runQuery = (query: string, events: number, seed: number, rate: number) => runQueryOn(t.client, dir, query, events, seed, rate);

describe("queries at parallelism 2 against references", () => {
  beforeAll(() => void (dir = tempDir("tm-nexmark-")));
  t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 2, config }));

  const EVENTS = 30_000;
  const SEED = 7;

  test("q0, q1, q2: pass-through, currency conversion, selection", async () => {
    const { evs } = generate(EVENTS, SEED, 100_000);
    const bids = evs.filter((e) => e.type === "bid").map((e) => (e as { bid: Bid }).bid);
    const q0 = bids.map((b) => line([b.auction, b.bidder, b.price, b.dateTime]));
    const q1 = bids.map((b) => line([b.auction, b.bidder, b.price * 0.908, b.dateTime]));
    const q2 = bids.filter((b) => b.auction % 123 === 0).map((b) => line([b.auction, b.price]));
    expect(q2.length).toBeGreaterThan(10);
    expect(sorted((await runQuery("q0", EVENTS, SEED, 100_000)).flat())).toEqual(sorted(q0));
    expect(sorted((await runQuery("q1", EVENTS, SEED, 100_000)).flat())).toEqual(sorted(q1));
    expect(sorted((await runQuery("q2", EVENTS, SEED, 100_000)).flat())).toEqual(sorted(q2));
  }, 60_000);

  test("q3: people in OR, ID or CA selling in category 10 (a join)", async () => {
    const { evs } = generate(EVENTS, SEED, 100_000);
    const people = new Map<number, Person>();
    for (const e of evs) if (e.type === "person") people.set(e.person.id, e.person);
    const want: string[] = [];
    for (const e of evs) {
      if (e.type !== "auction" || e.auction.category !== 10) continue;
      const p = people.get(e.auction.seller);
      if (p && (p.state === "OR" || p.state === "ID" || p.state === "CA")) want.push(line([p.name, p.city, p.state, e.auction.id]));
    }
    expect(want.length).toBeGreaterThan(20);
    expect(sorted((await runQuery("q3", EVENTS, SEED, 100_000)).flat())).toEqual(sorted(want));
  }, 60_000);

  test("q4: average closing price per category (auctions joined with the bids in their lifetime)", async () => {
    // 2,000 events/s of event time: auctions last about 1.7 s on average.
    const { evs } = generate(EVENTS, SEED, 2000);
    const auctions = evs.filter((e) => e.type === "auction").map((e) => (e as { auction: Auction }).auction);
    const bidsOf = new Map<number, Bid[]>();
    for (const e of evs) if (e.type === "bid") bidsOf.set(e.bid.auction, [...(bidsOf.get(e.bid.auction) ?? []), e.bid]);
    const sum = new Map<number, number>();
    const count = new Map<number, number>();
    let closed = 0;
    for (const a of auctions) {
      const prices = (bidsOf.get(a.id) ?? []).filter((b) => b.dateTime >= a.dateTime && b.dateTime <= a.expires).map((b) => b.price);
      if (prices.length === 0) continue;
      closed++;
      sum.set(a.category, (sum.get(a.category) ?? 0) + Math.max(...prices));
      count.set(a.category, (count.get(a.category) ?? 0) + 1);
    }
    const want = [...sum.keys()].sort().map((c) => line([c, Math.floor(sum.get(c)! / count.get(c)!)]));
    expect(closed).toBeGreaterThan(100);
    const files = await runQuery("q4", EVENTS, SEED, 2000);
    // One update per closed auction; the last update of each category is the final average.
    expect(files.flat().length).toBe(closed);
    const last = new Map<string, string>();
    for (const lines of files) for (const l of lines) last.set(l.slice(1, l.indexOf(",")), l);
    expect([...last.values()].sort()).toEqual(want);
  }, 60_000);

  test("q5: hot items, the auctions with the most bids per sliding window (10 s every 2 s)", async () => {
    const { evs } = generate(EVENTS, SEED, 1000);
    const counts = new Map<number, Map<number, number>>(); // window start -> auction -> bids
    for (const e of evs) {
      if (e.type !== "bid") continue;
      const t = e.bid.dateTime;
      for (let start = t - (t % 2000); start > t - 10_000; start -= 2000) {
        const m = counts.get(start) ?? new Map<number, number>();
        counts.set(start, m);
        m.set(e.bid.auction, (m.get(e.bid.auction) ?? 0) + 1);
      }
    }
    const want: string[] = [];
    for (const [start, m] of counts) {
      const max = Math.max(...m.values());
      for (const [auction, n] of m) if (n === max) want.push(line([auction, n, start]));
    }
    expect(counts.size).toBeGreaterThan(10);
    expect(sorted((await runQuery("q5", EVENTS, SEED, 1000)).flat())).toEqual(sorted(want));
  }, 60_000);

  test("q7: the highest bids per 10 s tumbling window", async () => {
    const { evs } = generate(EVENTS, SEED, 200);
    const byWindow = new Map<number, Bid[]>();
    for (const e of evs) {
      if (e.type !== "bid") continue;
      const start = e.bid.dateTime - (e.bid.dateTime % 10_000);
      byWindow.set(start, [...(byWindow.get(start) ?? []), e.bid]);
    }
    const want: string[] = [];
    for (const [start, bids] of byWindow) {
      const max = Math.max(...bids.map((b) => b.price));
      for (const b of bids) if (b.price === max) want.push(line([start, b.auction, b.price, b.bidder, b.dateTime]));
    }
    expect(byWindow.size).toBeGreaterThan(10);
    expect(sorted((await runQuery("q7", EVENTS, SEED, 200)).flat())).toEqual(sorted(want));
  }, 60_000);

  test("q8: new users, people who opened an auction in the 10 s window they registered in", async () => {
    const { evs } = generate(EVENTS, SEED, 1000);
    const sellers = new Set<string>();
    for (const e of evs) if (e.type === "auction") sellers.add(`${e.auction.seller}|${e.auction.dateTime - (e.auction.dateTime % 10_000)}`);
    const want: string[] = [];
    for (const e of evs) {
      if (e.type !== "person") continue;
      const start = e.person.dateTime - (e.person.dateTime % 10_000);
      if (sellers.has(`${e.person.id}|${start}`)) want.push(line([e.person.id, e.person.name, start]));
    }
    expect(want.length).toBeGreaterThan(20);
    expect(sorted((await runQuery("q8", EVENTS, SEED, 1000)).flat())).toEqual(sorted(want));
  }, 60_000);
});
