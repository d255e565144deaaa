// What a wake-up between two threads costs (the figure behind the rings' wake-up rules, docs/architecture.md 4.3):
// Atomics.notify with nobody waiting, and a ping-pong between this thread and a Worker where each side waits with
// Atomics.waitAsync and wakes the other with Atomics.notify (a round trip is two wake-ups). Median (min-max) of
// --runs runs; CPU time of the process (both threads) per round trip beside the wall time.
// Usage: bun scripts/bench-wakeups.ts [--rounds 20000] [--runs 3]
import * as os from "node:os";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { rounds: { type: "string", default: "20000" }, runs: { type: "string", default: "3" } } });
const ROUNDS = Number(values.rounds);
const RUNS = Number(values.runs);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || !Number.isInteger(RUNS) || RUNS < 1) throw new Error("--rounds and --runs: positive integers");

function notifyNobody(): number {
  const h = new Int32Array(new SharedArrayBuffer(8));
  const n = 1_000_000;
  const t = performance.now();
  for (let i = 0; i < n; i++) Atomics.notify(h, 0);
  return ((performance.now() - t) * 1e6) / n; // ns
}

async function pingPong(): Promise<{ wallUs: number; cpuUs: number }> {
  const sab = new SharedArrayBuffer(8);
  const h = new Int32Array(sab);
  const worker = new Worker(new URL("./bench-helpers/wakeup-worker.ts", import.meta.url).href);
  const done = new Promise<void>((resolve) => (worker.onmessage = () => resolve()));
  worker.postMessage([sab, ROUNDS]);
  // A pending waitAsync does not keep the process alive (Bun): this timer does, until the end.
  const keepAlive = setInterval(() => {}, 1000);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 1; i <= ROUNDS; i++) {
    Atomics.store(h, 0, i);
    Atomics.notify(h, 0);
    for (let seen = Atomics.load(h, 1); seen < i; seen = Atomics.load(h, 1)) {
      const w = Atomics.waitAsync(h, 1, seen);
      if (w.async) await w.value;
    }
  }
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  await done;
  clearInterval(keepAlive);
  worker.terminate();
  return { wallUs: (wall * 1000) / ROUNDS, cpuUs: (c.user + c.system) / ROUNDS };
}

const med = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[Math.floor(s.length / 2)]!.toFixed(1)} (${s[0]!.toFixed(1)}-${s.at(-1)!.toFixed(1)})`;
};
const load0 = os.loadavg()[0]!;
const nobody: number[] = [];
const wall: number[] = [];
const cpu: number[] = [];
for (let r = 0; r < RUNS; r++) {
  nobody.push(notifyNobody());
  const p = await pingPong();
  wall.push(p.wallUs);
  cpu.push(p.cpuUs);
}
console.log(`Wake-ups between two threads (Bun ${Bun.version}, ${os.cpus().length} cores, load average ${load0.toFixed(1)} at the start, ${os.loadavg()[0]!.toFixed(1)} at the end; ${RUNS} runs, median (min-max))`);
console.log("| measure | figure |\n| --- | --- |");
console.log(`| Atomics.notify with nobody waiting | ${med(nobody)} ns |`);
console.log(`| round trip, waitAsync + notify each way (two wake-ups), wall | ${med(wall)} us |`);
console.log(`| same, CPU of both threads per round trip | ${med(cpu)} us |`);
