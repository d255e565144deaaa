// The Nexmark event generator (the model of the Apache Beam / Flink Nexmark benchmark generators), as pure
// functions of (config, event number): eventAt(n, config) is the same event wherever and whenever it is computed,
// so a source can cut the event numbers into splits, read them in parallel without duplicates and replay any of
// them from a checkpointed position.
//
// The model, as in Nexmark:
// - Events come in epochs of 50: 1 person, 3 auctions, 46 bids. The event id is the event number shuffled within
//   its group of 50 (Nexmark's out-of-order groups: id = base + (n * 953) % 50), and the event's type follows from
//   the id (id % 50: 0 person, 1..3 auction, 4..49 bid), so every 50 consecutive events hold exactly 1 : 3 : 46.
// - Person ids and auction ids count up from 1000 in event-id order (the k-th person generated has id 1000 + k).
//   Sellers and bidders refer to people generated earlier (or up to 10 ids ahead, the "lead", as in Nexmark),
//   auctions of bids to the last 100 auctions (plus a lead of 10). Skew: 3 of 4 auctions are sold by a "hot"
//   seller, half the bids go to a "hot" auction and 3 of 4 come from a "hot" bidder (the first person or auction of
//   the current block of 100 ids).
// - Prices (initial bid, reserve increment, bid price) are 100 * 10^u cents for u uniform in [0, 6). Categories are
//   10..14. Auctions last 1 + [0, 2 * horizon) ms, where horizon is the event time it takes to generate 100 more
//   auctions (about 16.7 ms at the default rate).
// - Event time: event number n is due at firstEventTime + floor(n * 1000 / ratePerSecond) ms; an event's dateTime is
//   the time of its (shuffled) event id, so timestamps are out of order by less than 50 events' time, as in Nexmark.
//   The default rate is 100,000 events/s (10 µs between events), the rate of the GUIDE_V1 runs; the default first
//   event time is a fixed instant (2023-11-14T22:13:20Z, a multiple of 10 s), not the wall clock, so that output is
//   reproducible.
// - Randomness is a small PRNG seeded by (seed, event id): Nexmark seeds java.util.Random with the event id, so
//   this generator does not produce Nexmark's exact values, but the same distributions. The padding field `extra`
//   of Nexmark's records (which pads them to average byte sizes) is left out.

export interface NexmarkConfig {
  /** Number of events: event numbers 0..events-1. */
  events: number;
  seed: number;
  /** Events per second of event time (default 100,000: 10 µs between events). */
  ratePerSecond: number;
  /** Event time of event number 0, in ms since the epoch. */
  firstEventTime: number;
}

export interface Person {
  id: number;
  name: string;
  emailAddress: string;
  creditCard: string;
  city: string;
  state: string;
  dateTime: number;
}

export interface Auction {
  id: number;
  itemName: string;
  description: string;
  initialBid: number;
  reserve: number;
  dateTime: number;
  expires: number;
  seller: number;
  category: number;
}

export interface Bid {
  auction: number;
  bidder: number;
  price: number;
  channel: string;
  url: string;
  dateTime: number;
}

export type NexmarkEvent = { type: "person"; person: Person } | { type: "auction"; auction: Auction } | { type: "bid"; bid: Bid };

export const DEFAULT_RATE_PER_SECOND = 100_000;
export const DEFAULT_FIRST_EVENT_TIME = 1_700_000_000_000;

export const PERSON_PROPORTION = 1;
export const AUCTION_PROPORTION = 3;
export const BID_PROPORTION = 46;
export const TOTAL_PROPORTION = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;
export const FIRST_PERSON_ID = 1000;
export const FIRST_AUCTION_ID = 1000;
export const FIRST_CATEGORY_ID = 10;
export const NUM_CATEGORIES = 5;

const OUT_OF_ORDER_GROUP = 50;
const NUM_IN_FLIGHT_AUCTIONS = 100;
const NUM_ACTIVE_PEOPLE = 1000;
const PERSON_ID_LEAD = 10;
const AUCTION_ID_LEAD = 10;
const HOT_AUCTION_RATIO = 100; // a hot auction is the first of its block of 100 auction ids
const HOT_BIDDER_RATIO = 100;
const HOT_SELLER_RATIO = 100;
const HOT_AUCTIONS_PROB = 2; // 1 - 1/2 of bids go to a hot auction
const HOT_BIDDERS_PROB = 4; // 1 - 1/4 of bids come from a hot bidder
const HOT_SELLERS_PROB = 4; // 1 - 1/4 of auctions are sold by a hot seller
const HOT_CHANNELS_PROB = 2;
const CHANNELS = 10_000;
const MIN_STRING_LENGTH = 3;

const FIRST_NAMES = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
const LAST_NAMES = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];
const US_STATES = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const US_CITIES = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];
const HOT_CHANNELS = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS = HOT_CHANNELS.map((_, i) => `https://www.nexmark.com/hot/${i}/item.htm?query=1`);

/** A config with the defaults filled in, checked. */
export function nexmarkConfig(c: { events: number; seed?: number; ratePerSecond?: number; firstEventTime?: number }): NexmarkConfig {
  const events = c.events;
  const seed = c.seed ?? 0;
  const ratePerSecond = c.ratePerSecond ?? DEFAULT_RATE_PER_SECOND;
  const firstEventTime = c.firstEventTime ?? DEFAULT_FIRST_EVENT_TIME;
  if (!Number.isSafeInteger(events) || events < 0) throw new Error(`Nexmark: expected events to be an integer >= 0, got ${events}`);
  if (!Number.isSafeInteger(seed)) throw new Error(`Nexmark: expected an integer seed, got ${seed}`);
  if (!Number.isFinite(ratePerSecond) || ratePerSecond <= 0) throw new Error(`Nexmark: expected ratePerSecond > 0, got ${ratePerSecond}`);
  if (!Number.isSafeInteger(firstEventTime)) throw new Error(`Nexmark: expected firstEventTime as integer ms, got ${firstEventTime}`);
  return { events, seed, ratePerSecond, firstEventTime };
}

/** The id of event number n: n shuffled within its group of 50 (a bijection on each group). */
export function eventId(n: number): number {
  const base = n - (n % OUT_OF_ORDER_GROUP);
  return base + ((n % OUT_OF_ORDER_GROUP) * 953) % OUT_OF_ORDER_GROUP;
}

/** Event time (ms) of event number (or id) n. */
export function timestampFor(n: number, config: NexmarkConfig): number {
  return config.firstEventTime + Math.floor((n * 1000) / config.ratePerSecond);
}

/** What type event id `id` has. */
export function typeOf(id: number): NexmarkEvent["type"] {
  const rem = id % TOTAL_PROPORTION;
  return rem < PERSON_PROPORTION ? "person" : rem < PERSON_PROPORTION + AUCTION_PROPORTION ? "auction" : "bid";
}

/** Base-0 id of the last person generated at or before event id `id`. */
export function lastBase0PersonId(id: number): number {
  const epoch = Math.floor(id / TOTAL_PROPORTION);
  let offset = id % TOTAL_PROPORTION;
  if (offset >= PERSON_PROPORTION) offset = PERSON_PROPORTION - 1;
  return epoch * PERSON_PROPORTION + offset;
}

/** Base-0 id of the last auction generated at or before event id `id` (-1 before the first). */
export function lastBase0AuctionId(id: number): number {
  let epoch = Math.floor(id / TOTAL_PROPORTION);
  let offset = id % TOTAL_PROPORTION;
  if (offset < PERSON_PROPORTION) {
    epoch--;
    offset = AUCTION_PROPORTION - 1;
  } else if (offset >= PERSON_PROPORTION + AUCTION_PROPORTION) {
    offset = AUCTION_PROPORTION - 1;
  } else {
    offset -= PERSON_PROPORTION;
  }
  return epoch * AUCTION_PROPORTION + offset;
}

// ---- the per-event PRNG (state kept in module variables: eventAt is synchronous and not reentrant) ----

let rs = 0;
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}
function seedRandom(seed: number, id: number): void {
  const hi = Math.floor(id / 4294967296);
  rs = mix32(mix32(seed ^ 0x5bd1e995) ^ mix32((id >>> 0) + 0x9e3779b9) ^ mix32(hi + 0x632be5ab) ^ (Math.floor(seed / 4294967296) | 0));
}
/** mulberry32: a uniform float in [0, 1). */
function random(): number {
  rs = (rs + 0x6d2b79f5) | 0;
  let t = rs;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function nextInt(bound: number): number {
  return Math.floor(random() * bound);
}
/** Lower-case letters with a space now and then, MIN_STRING_LENGTH..maxLength-1 characters (as Nexmark's nextString). */
function nextString(maxLength: number): string {
  const len = MIN_STRING_LENGTH + nextInt(maxLength - MIN_STRING_LENGTH);
  let s = "";
  for (let i = 0; i < len; i++) s += nextInt(13) === 0 ? " " : String.fromCharCode(97 + nextInt(26));
  return s;
}
function nextPrice(): number {
  return Math.round(Math.pow(10, random() * 6) * 100);
}
function nextBase0PersonId(id: number): number {
  const numPeople = lastBase0PersonId(id) + 1;
  const active = Math.min(numPeople, NUM_ACTIVE_PEOPLE);
  return numPeople - active + nextInt(active + PERSON_ID_LEAD);
}
function nextBase0AuctionId(id: number): number {
  const last = lastBase0AuctionId(id);
  const min = Math.max(last - NUM_IN_FLIGHT_AUCTIONS, 0);
  return min + nextInt(last - min + 1 + AUCTION_ID_LEAD);
}
function pad4(n: number): string {
  return n < 10 ? `000${n}` : n < 100 ? `00${n}` : n < 1000 ? `0${n}` : `${n}`;
}

// ---- events ----

function person(id: number, dateTime: number): Person {
  const name = `${FIRST_NAMES[nextInt(FIRST_NAMES.length)]} ${LAST_NAMES[nextInt(LAST_NAMES.length)]}`;
  const emailAddress = `${nextString(7)}@${nextString(5)}.com`;
  const creditCard = `${pad4(nextInt(10000))} ${pad4(nextInt(10000))} ${pad4(nextInt(10000))} ${pad4(nextInt(10000))}`;
  const city = US_CITIES[nextInt(US_CITIES.length)]!;
  const state = US_STATES[nextInt(US_STATES.length)]!;
  return { id: lastBase0PersonId(id) + FIRST_PERSON_ID, name, emailAddress, creditCard, city, state, dateTime };
}

function auction(id: number, dateTime: number, config: NexmarkConfig): Auction {
  const seller = nextInt(HOT_SELLERS_PROB) > 0 ? Math.floor(lastBase0PersonId(id) / HOT_SELLER_RATIO) * HOT_SELLER_RATIO : nextBase0PersonId(id);
  const category = FIRST_CATEGORY_ID + nextInt(NUM_CATEGORIES);
  const initialBid = nextPrice();
  // How long until 100 more auctions have been generated: the average auction length is that horizon.
  const eventsFor100Auctions = Math.floor((NUM_IN_FLIGHT_AUCTIONS * TOTAL_PROPORTION) / AUCTION_PROPORTION);
  const horizon = timestampFor(id + eventsFor100Auctions, config) - dateTime;
  const expires = dateTime + 1 + nextInt(Math.max(horizon * 2, 1));
  const itemName = nextString(20);
  const description = nextString(100);
  const reserve = initialBid + nextPrice();
  return {
    id: lastBase0AuctionId(id) + FIRST_AUCTION_ID,
    itemName,
    description,
    initialBid,
    reserve,
    dateTime,
    expires,
    seller: seller + FIRST_PERSON_ID,
    category,
  };
}

function bid(id: number, dateTime: number): Bid {
  const auctionId = nextInt(HOT_AUCTIONS_PROB) > 0 ? Math.floor(lastBase0AuctionId(id) / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO : nextBase0AuctionId(id);
  const bidder = nextInt(HOT_BIDDERS_PROB) > 0 ? Math.floor(lastBase0PersonId(id) / HOT_BIDDER_RATIO) * HOT_BIDDER_RATIO + 1 : nextBase0PersonId(id);
  const price = nextPrice();
  let channel: string;
  let url: string;
  if (nextInt(HOT_CHANNELS_PROB) > 0) {
    const i = nextInt(HOT_CHANNELS.length);
    channel = HOT_CHANNELS[i]!;
    url = HOT_URLS[i]!;
  } else {
    const c = nextInt(CHANNELS);
    channel = `channel-${c}`;
    url = `https://www.nexmark.com/item.htm?query=1&channel_id=${c}`;
  }
  return { auction: auctionId + FIRST_AUCTION_ID, bidder: bidder + FIRST_PERSON_ID, price, channel, url, dateTime };
}

/** Event number n (0 <= n < config.events) of the stream: the same value for the same (n, config) everywhere. */
export function eventAt(n: number, config: NexmarkConfig): NexmarkEvent {
  const id = eventId(n);
  const dateTime = timestampFor(id, config);
  seedRandom(config.seed, id);
  switch (typeOf(id)) {
    case "person":
      return { type: "person", person: person(id, dateTime) };
    case "auction":
      return { type: "auction", auction: auction(id, dateTime, config) };
    default:
      return { type: "bid", bid: bid(id, dateTime) };
  }
}

/** An event's time (its record's dateTime): what a timestamp assigner of a Nexmark query returns. */
export function eventTime(e: NexmarkEvent): number {
  return e.type === "bid" ? e.bid.dateTime : e.type === "auction" ? e.auction.dateTime : e.person.dateTime;
}
