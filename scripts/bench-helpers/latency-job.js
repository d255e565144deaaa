// The end-to-end latency job of scripts/bench-nexmark.ts (issue 23), a job file for `bun main.ts local` too, for
// A/B runs at a fixed rate (scripts/bench-compare-commands.ts; latency-summary.ts reads what it writes).
// args: events, rate (events/s), throttle (1 or 0), out dir, parallelism, buffer timeout (ms).
// Stamping map chained to the source: the throttled source emits its k-th event no earlier than A + k / rate, A
// being when its schedule started. The map notes, per event, its k and the offset now - k / rate; A is taken as the
// smallest offset of the run (the tightest anchor under which no event came out early: anchoring at the first event
// instead made every later one look up to 2 ms early, and p50 negative). The sink records (k, its time); latency =
// sink time - (A + k / rate). The map also notes the largest offset after the first second: how far the source fell
// behind its schedule (a source that falls behind turns latency into queueing in the source).
import * as fs from "node:fs";
import { NexmarkSource } from "../../src/api/index.ts";

export default (env, args) => {
  const [events, rate, throttle, outDir, p, bufferTimeout] = [Number(args[0]), Number(args[1]), args[2] === "1", args[3], Number(args[4]), Number(args[5])];
  env.setBufferTimeout(bufferTimeout);
  const msPer = (1000 * p) / rate;
  const id = () => Math.random().toString(36).slice(2);
  env.fromSource(NexmarkSource.events({ events, seed: 0, ratePerSecond: rate, throttle }), null)
    .map({
      open() { this.k = 0; this.first = -1; this.minOff = Infinity; this.maxOff = -Infinity; },
      map(e) {
        const now = performance.timeOrigin + performance.now();
        if (this.first < 0) this.first = now;
        const k = this.k++;
        const off = now - msPer * k;
        if (off < this.minOff) this.minOff = off;
        if (now - this.first > 1000 && off > this.maxOff) this.maxOff = off;
        return [e.type === "bid" ? e.bid.auction : e.type === "auction" ? e.auction.id : e.person.id, k];
      },
      close() { fs.writeFileSync(outDir + "/offsets-" + id() + ".json", JSON.stringify([this.minOff, this.maxOff])); },
    })
    .keyBy((t) => t[0])
    .addSink({
      // Samples go into arrays sized for every event up front: a growing JS array of millions of numbers stalled
      // this sink for tens of milliseconds as it grew, which back-pressured the source and was measured as a
      // latency tail of 120-160 ms (the source then fell as far behind its schedule).
      open() { this.at = new Float64Array(events); this.ks = new Float64Array(events); this.n = 0; this.first = -1; },
      invoke(t) {
        const now = performance.timeOrigin + performance.now();
        if (this.first < 0) this.first = now;
        if (now - this.first <= 1000) return; // the first second is warm-up
        this.at[this.n] = now;
        this.ks[this.n++] = t[1];
      },
      close() {
        const name = id();
        fs.writeFileSync(outDir + "/at-" + name + ".bin", this.at.subarray(0, this.n));
        fs.writeFileSync(outDir + "/ks-" + name + ".bin", this.ks.subarray(0, this.n));
      },
    })
    // A task of its own at p=1 too (a keyBy there chains otherwise): the latency measured is the network path's.
    .disableChaining();
};
