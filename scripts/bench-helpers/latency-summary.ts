// Reads what scripts/bench-helpers/latency-job.js wrote into its out dir: every event's latency (sink time minus its
// scheduled time, sorted, ms) and how far the source fell behind its schedule (ms). Used by bench-nexmark.ts; run
// directly it prints one run's figures, for A/B runs at a fixed rate:
//   bun main.ts local scripts/bench-helpers/latency-job.js 5000000 500000 1 /tmp/lat 1 0 && bun scripts/bench-helpers/latency-summary.ts /tmp/lat 500000
import * as fs from "node:fs";
import * as path from "node:path";

export function readLatencies(dir: string, rate: number, p = 1): { lat: number[]; behind: number } {
  const files = fs.readdirSync(dir);
  const floats = (f: string) => {
    const b = fs.readFileSync(path.join(dir, f));
    return new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8);
  };
  const offsets = files.filter((f) => f.startsWith("offsets-")).map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) as [number, number]);
  if (offsets.length !== 1) throw new Error(`latency: expected the offsets of one source subtask in ${dir}, got ${offsets.length}`);
  const [anchor, maxOff] = offsets[0]!;
  const msPer = (1000 * p) / rate;
  const lat: number[] = [];
  for (const f of files.filter((f) => f.startsWith("at-"))) {
    const at = floats(f);
    const ks = floats("ks-" + f.slice(3));
    for (let i = 0; i < at.length; i++) lat.push(at[i]! - (anchor + ks[i]! * msPer));
  }
  lat.sort((a, b) => a - b);
  return { lat, behind: maxOff - anchor };
}

/** The q-quantile (0..1) of sorted latencies, as the bench reports it. */
export function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

if (import.meta.main) {
  const [dir, rate, p] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4] ?? 1)];
  if (!dir || !(rate > 0)) throw new Error("usage: latency-summary.ts OUT_DIR RATE [PARALLELISM]");
  const { lat, behind } = readLatencies(dir, rate, p);
  const pct = (q: number) => percentile(lat, q).toFixed(1);
  console.log(`p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, p99.9 ${pct(0.999)} ms, max ${lat.at(-1)!.toFixed(1)} ms; source at most ${behind.toFixed(1)} ms behind; ${lat.length} events`);
  for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f));
}
