// Local channel between two task Workers of one process: a single-producer single-consumer ring of
// fixed-size slots in a SharedArrayBuffer. The producer copies a finished network buffer (or an encoded
// in-band event) into a slot; the consumer reads it in place and releases the slot when done, so no
// ArrayBuffer is transferred or recycled through postMessage (faster, see scripts/bench-local-channel.ts),
// and a slow consumer backpressures the producer through the ring's fixed number of slots.
//
// Layout (Int32s in platform byte order, both ends being in one process; everything 8-byte aligned):
//   header, 32 bytes: [0] published count (written by the writer only), [1] released count (reader only),
//                     [2] slots, [3] slotBytes, [4] magic, [5] buffer size announced by the consumer (buffer
//                     debloating, FLIP-183; 0 = none, written by the consumer's side, read by the producer's),
//                     [6] 1 while the reader waits on [0] and has not been woken (the writer clears it as it wakes
//                     the reader), [7] 1 + the released count at which to wake the waiting writer (0: none waits)
//   slot i at 32 + i * stride, stride = 8 + slotBytes rounded up to 8:
//                     [0] kind (1 buffer, 2 event), [1] payload length (1..slotBytes), then the payload.
// An event is msgpack-encoded (msgpackr's pack) into one slot: a barrier takes about 60 bytes plus its dir
// in UTF-8, so slotBytes must leave room for the longest checkpoint dir (tryPushEvent throws otherwise).
// Both counters count modulo M = slots * floor(2^30 / slots): M is a multiple of slots (so counter % slots
// is the slot, across the wrap too) and far larger than slots (so published - released, mod M, is
// unambiguous); they never overflow an Int32. A side's counter is published with Atomics.store after its
// plain writes to the slot (seq-cst), and the other side reads it with Atomics.load before touching the slot.
//
// Waiting is Atomics.waitAsync on the other side's counter with the value just checked, so a notify between
// the check and the wait is not missed, and the Worker's event loop keeps running. A side notifies only when the
// other has a wait pending ([6], [7]), and once per wait (the writer clears [6] as it notifies; the reader raises it
// again each time it is about to wait); waking a pending wait costs about 8 us of CPU over both threads
// (scripts/bench-wakeups.ts), so the reader arms a wait only while its task has nothing to read (input-gate.ts):
// with a wait pending at all times, wake-ups were most of both threads' time at a buffer per record. No wake-up is
// lost: the waiter raises its flag before it reads the counter, the other side stores the counter before it reads
// the flag (all sequentially consistent), so one of them sees the other's write. A writer that finds the ring full
// waits for half of it to be free (it is back-pressured, and the reader has that much to read meanwhile): the
// reader wakes it once per half ring, not once per slot, and the writer fills several slots in one go. A pending wait does not
// keep a Worker (or process) alive in Bun or Deno; if the other side goes away, the promise simply never
// settles: the owner must race it with its own cancellation (the task's Worker is terminated anyway).
import { pack, unpack } from "msgpackr";
import type { ChannelEvent } from "./record-writer.ts";
import { assert } from "../util/assert.ts";

const PUBLISHED = 0;
const RELEASED = 1;
const SLOTS = 2;
const SLOT_BYTES = 3;
const MAGIC = 4;
const MAGIC_VALUE = 0x52494e47; // "RING"
const BUFFER_SIZE = 5;
/** 1 while the reader waits on PUBLISHED and nobody has woken it yet; 0 otherwise. */
const PUBLISHED_WAITERS = 6;
/** 1 + the RELEASED value at which the reader wakes the writer; 0 while the writer does not wait. */
const WAKE_WRITER_AT = 7;
const HEADER_BYTES = 32;
/** Bytes of each slot's own header (kind, length) in front of its payload. */
export const SLOT_HEADER_BYTES = 8;
const KIND_BUFFER = 1;
const KIND_EVENT = 2;
const MAX_SLOTS = 1 << 20;

/** Wake-ups of the other side (Atomics.notify of a pending wait) by the ring ends of this thread: a task's metric. */
export const ringWakeUps = { count: 0 };

const stride = (slotBytes: number) => SLOT_HEADER_BYTES + Math.ceil(slotBytes / 8) * 8;

/** A ring's shared memory: `slots` slots of `slotBytes` payload bytes each, plus its header. */
export function createRing(slots: number, slotBytes: number): SharedArrayBuffer {
  if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new Error(`ring slots must be an integer in 1..${MAX_SLOTS}, got ${slots}`);
  if (!Number.isInteger(slotBytes) || slotBytes < 1 || slotBytes > 0x7fffffff - SLOT_HEADER_BYTES) throw new Error(`ring slotBytes must be a positive integer, got ${slotBytes}`);
  const sab = new SharedArrayBuffer(HEADER_BYTES + slots * stride(slotBytes));
  const h = new Int32Array(sab, 0, HEADER_BYTES / 4);
  h[SLOTS] = slots;
  h[SLOT_BYTES] = slotBytes;
  h[MAGIC] = MAGIC_VALUE;
  return sab;
}

/** A ring's slot count and its consumer's announced buffer size, for a side that holds only the shared memory. */
export function ringSlots(sab: SharedArrayBuffer): number {
  return new Int32Array(sab, 0, HEADER_BYTES / 4)[SLOTS]!;
}

export function announceBufferSize(sab: SharedArrayBuffer, bytes: number): void {
  Atomics.store(new Int32Array(sab, 0, HEADER_BYTES / 4), BUFFER_SIZE, bytes);
}

export type RingItem = { kind: "buffer"; bytes: Uint8Array } | { kind: "event"; event: ChannelEvent };

/** What both ends derive from the ring's header. */
class RingEnd {
  readonly slots: number;
  readonly slotBytes: number;
  /** The whole ring as Int32s: header counters and slot headers. */
  protected readonly h: Int32Array;
  protected readonly u8: Uint8Array;
  /** Counters count modulo this (a multiple of slots). */
  protected readonly mod: number;
  private readonly stride: number;

  constructor(protected readonly sab: SharedArrayBuffer) {
    if (sab.byteLength < HEADER_BYTES) throw new Error("not a ring: too small");
    this.h = new Int32Array(sab);
    this.u8 = new Uint8Array(sab);
    this.slots = this.h[SLOTS]!;
    this.slotBytes = this.h[SLOT_BYTES]!;
    this.stride = stride(this.slotBytes);
    if (this.h[MAGIC] !== MAGIC_VALUE || this.slots < 1 || sab.byteLength !== HEADER_BYTES + this.slots * this.stride) throw new Error("not a ring: bad header");
    this.mod = this.slots * Math.floor(2 ** 30 / this.slots);
  }

  /** The buffer size the consumer's side announced (buffer debloating), 0 when none. */
  get announcedBufferSize(): number {
    return Atomics.load(this.h, BUFFER_SIZE);
  }

  /** Announces a buffer size to the producer's side (the consumer's end, or the main thread relaying a remote one). */
  announceBufferSize(bytes: number): void {
    Atomics.store(this.h, BUFFER_SIZE, bytes);
  }

  /** a - b for counters modulo mod, where a is at or ahead of b. */
  protected dist(a: number, b: number): number {
    const d = a - b;
    return d < 0 ? d + this.mod : d;
  }

  protected next(c: number): number {
    return c + 1 === this.mod ? 0 : c + 1;
  }

  /** Byte offset of the slot for counter value c (its header; the payload follows). */
  protected slotOffset(c: number): number {
    return HEADER_BYTES + (c % this.slots) * this.stride;
  }

  /** The wait pending on this end's Int32Array, and the sleeps it ends (see sleep). */
  private parked: { counter: number; seen: number; wakes: Set<() => void> } | null = null;

  /**
   * Waits until `counter` is not `seen` (its other side then notifies), or timeoutMs passed, or the next backstop
   * tick: every caller loops and checks its condition again, so a wake-up that never comes costs at most
   * BACKSTOP_MS. Bun 1.4.5 lost one in a latency run: a task that waited for a ring with ten buffers published in
   * it, the writer's notify done (the waiter flag cleared), slept until it was killed 12 minutes later, and its
   * producer with it (scripts/bench-helpers/latency-job.js at a buffer per record). A sleep on the same unchanged
   * value as the pending wait (the backstop ended the last one) shares that waitAsync instead of adding one per tick
   * to the runtime's waiter list (an idle channel would add ten a second).
   */
  protected sleep(counter: number, seen: number, timeoutMs?: number): Promise<void> {
    let parked = this.parked;
    if (parked === null || parked.counter !== counter || parked.seen !== seen) {
      const w = Atomics.waitAsync(this.h, counter, seen, timeoutMs);
      if (!w.async) return Promise.resolve();
      const entry = { counter, seen, wakes: new Set<() => void>() };
      void w.value.then(() => {
        if (this.parked === entry) this.parked = null;
        for (const wake of [...entry.wakes]) wake();
      });
      this.parked = parked = entry;
    }
    const wakes = parked.wakes;
    return new Promise<void>((resolve) => {
      const done = () => {
        wakes.delete(done);
        backstopSleepers.delete(done);
        resolve();
      };
      wakes.add(done);
      backstopSleepers.add(done);
      if (backstopTimer === null) {
        backstopTimer = setInterval(backstopTick, BACKSTOP_MS);
        (backstopTimer as { unref?: () => void }).unref?.();
      }
    });
  }
}

/** How long a ring wait lasts at most without its wake-up (RingEnd.sleep); the waiter then checks again. */
export const BACKSTOP_MS = 100;
/** This thread's pending ring sleeps, each ended by its wake-up or the next backstop tick. */
const backstopSleepers = new Set<() => void>();
let backstopTimer: ReturnType<typeof setInterval> | null = null;

function backstopTick(): void {
  if (backstopSleepers.size === 0) {
    clearInterval(backstopTimer!);
    backstopTimer = null;
    return;
  }
  for (const wake of [...backstopSleepers]) wake();
}

/** The producer's end: only one RingWriter per ring, in one thread. */
export class RingWriter extends RingEnd {
  /** Local copy of the published counter (only this end writes it). */
  private pub: number;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.pub = Atomics.load(this.h, PUBLISHED);
    this.relSeen = Atomics.load(this.h, RELEASED);
  }

  private relSeen: number;
  private relTotal = 0;
  /** Items the reader has released since this writer was made (a count that only grows). */
  releasedCount(): number {
    const rel = Atomics.load(this.h, RELEASED);
    this.relTotal += this.dist(rel, this.relSeen);
    this.relSeen = rel;
    return this.relTotal;
  }

  /** Slots free right now. */
  get free(): number {
    const rel = Atomics.load(this.h, RELEASED);
    const used = this.dist(this.pub, rel);
    // The reader releases only what was published: more than `slots` in use means a counter went wrong.
    assert(used <= this.slots, () => `ring: ${used} slots in use of ${this.slots} (published ${this.pub}, released ${rel}, modulo ${this.mod})`);
    return this.slots - used;
  }

  /** Copies bytes (length 1..slotBytes) into the next free slot and publishes it; false (nothing written) when the ring is full. Throws if bytes are too long or empty. */
  tryPush(bytes: Uint8Array): boolean {
    const n = bytes.length;
    if (n < 1 || n > this.slotBytes) throw new Error(`ring buffer of ${n} bytes: must be 1..${this.slotBytes}`);
    if (this.free === 0) return false;
    const off = this.slotOffset(this.pub);
    this.u8.set(bytes, off + SLOT_HEADER_BYTES);
    this.publish(off, KIND_BUFFER, n);
    return true;
  }

  /** Publishes an in-band event (msgpack-encoded into a slot); false when full. Throws if the encoding exceeds slotBytes. */
  tryPushEvent(event: ChannelEvent): boolean {
    const enc = pack(event);
    if (enc.length > this.slotBytes) throw new Error(`ring event of ${enc.length} bytes encoded exceeds the slot size ${this.slotBytes}`);
    if (this.free === 0) return false;
    const off = this.slotOffset(this.pub);
    this.u8.set(enc, off + SLOT_HEADER_BYTES);
    this.publish(off, KIND_EVENT, enc.length);
    return true;
  }

  /**
   * Resolves at once if a slot is free; else when half the ring is free (at least one slot). With timeoutMs it may
   * also resolve after that long with the ring still full (the caller checks again): a wait that never ends would
   * keep the ring alive. One wait at a time per writer.
   */
  async whenFree(timeoutMs?: number): Promise<void> {
    const from = Atomics.load(this.h, RELEASED);
    if (this.dist(this.pub, from) < this.slots) return;
    const want = Math.ceil(this.slots / 2);
    Atomics.store(this.h, WAKE_WRITER_AT, ((from + want) % this.mod) + 1);
    try {
      for (;;) {
        // Read after the wake-up point was stored: a release that reached it before is seen here.
        const rel = Atomics.load(this.h, RELEASED);
        if (this.dist(rel, from) >= want) return;
        await this.sleep(RELEASED, rel, timeoutMs);
        if (timeoutMs !== undefined) return;
      }
    } finally {
      Atomics.store(this.h, WAKE_WRITER_AT, 0);
    }
  }

  private publish(off: number, kind: number, length: number): void {
    this.h[off >> 2] = kind;
    this.h[(off >> 2) + 1] = length;
    this.pub = this.next(this.pub);
    Atomics.store(this.h, PUBLISHED, this.pub); // orders the slot writes above before the count
    // Once per wait: the reader is woken already if the flag is gone, and until its turn comes (tens of
    // microseconds) every publish would notify it again, each notify costing the writer about 4 us.
    if (Atomics.load(this.h, PUBLISHED_WAITERS) === 1 && Atomics.compareExchange(this.h, PUBLISHED_WAITERS, 1, 0) === 1) {
      Atomics.notify(this.h, PUBLISHED);
      ringWakeUps.count++;
    }
  }
}

/** The consumer's end: only one RingReader per ring, in one thread. */
export class RingReader extends RingEnd {
  /** Local copy of the released counter (only this end writes it). */
  private rel: number;
  /** Items taken and not released yet: they follow rel in order. */
  private taken = 0;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.rel = Atomics.load(this.h, RELEASED);
  }

  /** The next published item not yet taken, or null. A buffer's bytes are a view into the ring, valid until its release(). */
  take(): RingItem | null {
    const pub = Atomics.load(this.h, PUBLISHED);
    const ahead = this.dist(pub, this.rel);
    // The writer publishes at most `slots` ahead of what was released, and this end takes only what was published.
    assert(ahead <= this.slots && this.taken <= ahead, () => `ring: ${ahead} published ahead of released of ${this.slots} slots, ${this.taken} taken (published ${pub}, released ${this.rel}, modulo ${this.mod})`);
    if (ahead <= this.taken) return null;
    const off = this.slotOffset((this.rel + this.taken) % this.mod);
    const kind = this.h[off >> 2]!;
    const length = this.h[(off >> 2) + 1]!;
    assert(length >= 1 && length <= this.slotBytes && (kind === KIND_BUFFER || kind === KIND_EVENT), () => `corrupt ring slot ${(this.rel + this.taken) % this.slots}: kind ${kind}, length ${length} (slots hold 1..${this.slotBytes} bytes)`);
    this.taken++;
    const start = off + SLOT_HEADER_BYTES;
    if (kind === KIND_BUFFER) return { kind: "buffer", bytes: new Uint8Array(this.sab, start, length) };
    // Copied out of the shared memory first: decoders (TextDecoder) may refuse views of a SharedArrayBuffer.
    return { kind: "event", event: unpack(this.u8.slice(start, start + length)) as ChannelEvent };
  }

  /** Frees the oldest taken, unreleased item's slot (items are released in the order taken) and wakes a writer waiting in whenFree(). Throws if nothing is taken and unreleased. */
  release(): void {
    assert(this.taken > 0, () => `ring: release() with no item taken and unreleased (released ${this.rel}, ${this.available} published and not taken)`);
    this.taken--;
    this.rel = this.next(this.rel);
    Atomics.store(this.h, RELEASED, this.rel); // after this the writer may overwrite the slot
    if (Atomics.load(this.h, WAKE_WRITER_AT) === this.rel + 1) {
      Atomics.notify(this.h, RELEASED);
      ringWakeUps.count++;
    }
  }

  /** Items taken and not released yet. */
  get unreleased(): number {
    return this.taken;
  }

  /** Items published and not taken yet. */
  get available(): number {
    return this.dist(Atomics.load(this.h, PUBLISHED), this.rel) - this.taken;
  }

  /**
   * Resolves when an item has been published that take() has not returned yet (at once if there is one). With
   * timeoutMs it may also resolve after that long with nothing new (the caller checks again).
   */
  async whenPublished(timeoutMs?: number): Promise<void> {
    if (this.dist(Atomics.load(this.h, PUBLISHED), this.rel) > this.taken) return;
    try {
      for (;;) {
        // Raised before the count is read, every time (a wake-up cleared it): a publish before it is seen here, one
        // after it finds the flag and notifies.
        Atomics.store(this.h, PUBLISHED_WAITERS, 1);
        const pub = Atomics.load(this.h, PUBLISHED);
        if (this.dist(pub, this.rel) > this.taken) return;
        await this.sleep(PUBLISHED, pub, timeoutMs);
        if (timeoutMs !== undefined) return;
      }
    } finally {
      Atomics.store(this.h, PUBLISHED_WAITERS, 0);
    }
  }
}
