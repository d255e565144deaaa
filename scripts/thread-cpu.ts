// CPU time per thread of a command, read from /proc/<pid>/task/*/stat every 20 ms until it exits (Linux only), with
// each thread's voluntary and involuntary context switches: which Worker (task) burns what, how much goes to the JIT's
// compiler threads ("JITWorker"), the garbage collector's helpers ("HeapHelper") and the main thread ("bun").
// A thread's last reading before it exits is what counts, so a thread that lives less than 20 ms may be missed.
// Usage: bun scripts/thread-cpu.ts [--rounds N] -- <command...>
//        bun scripts/thread-cpu.ts --rounds 3 -- bun main.ts local -p 2 scripts/bench-helpers/keyed-sum-job.ts 20000000 100 int-keys
// Prints, per round, the command's own output and then one line of threads by name and the busiest threads; with
// several rounds, the median (min-max) of each thread name's total.
import * as fs from "node:fs";
import { procThreads } from "./bench-helpers/proc-threads.ts";
import { median } from "./bench-helpers/stats.ts";

// The options end at the first argument that is not one of ours ("--" is optional: Bun keeps it only after another
// argument), so that the command's own options are left alone.
const args = process.argv.slice(2);
let rounds = 1;
while (args[0] === "--rounds") {
  rounds = Number(args[1]);
  args.splice(0, 2);
}
if (args[0] === "--") args.shift();
const command = args;
if (command.length === 0 || !Number.isInteger(rounds) || rounds < 1) {
  console.error("usage: bun scripts/thread-cpu.ts [--rounds N] -- <command...>");
  process.exit(2);
}
if (!fs.existsSync("/proc/self/task")) {
  console.error("thread-cpu: needs Linux's /proc");
  process.exit(2);
}

type Thread = { name: string; cpu: number; voluntary: number; involuntary: number };

/** Reads every thread of pid into `into` (by thread id); threads that vanish meanwhile are skipped. */
function readThreads(pid: number, into: Map<string, Thread>): void {
  for (const t of procThreads(pid, true)) {
    into.set(t.tid, { name: t.comm.replace(/\s*\d+$/, " N"), cpu: t.cpuSeconds, voluntary: t.voluntary!, involuntary: t.involuntary! });
  }
}

const totals = new Map<string, number[]>();
for (let r = 1; r <= rounds; r++) {
  const child = Bun.spawn(command, { stdout: "inherit", stderr: "inherit" });
  const threads = new Map<string, Thread>();
  const timer = setInterval(() => readThreads(child.pid, threads), 20);
  const code = await child.exited;
  clearInterval(timer);
  if (code !== 0) {
    console.error(`thread-cpu: the command exited with ${code}`);
    process.exit(1);
  }
  const byName = new Map<string, number>();
  for (const t of threads.values()) byName.set(t.name, (byName.get(t.name) ?? 0) + t.cpu);
  for (const [name, cpu] of byName) totals.set(name, [...(totals.get(name) ?? []), cpu]);
  const busiest = [...threads.values()].sort((a, b) => b.cpu - a.cpu).slice(0, 8);
  console.log(`[thread-cpu] round ${r}: by name, CPU s: ${[...byName].sort((a, b) => b[1] - a[1]).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")}`);
  console.log(`[thread-cpu] round ${r}: busiest threads, CPU s (voluntary / involuntary context switches): ${busiest.map((t) => `${t.name} ${t.cpu.toFixed(2)} (${t.voluntary}/${t.involuntary})`).join(", ")}`);
}
if (rounds > 1) {
  const rows = [...totals].filter(([, xs]) => Math.max(...xs) > 0).sort((a, b) => median(b[1]) - median(a[1]));
  console.log(`[thread-cpu] ${rounds} rounds, CPU s by thread name, median (min-max): ${rows.map(([k, xs]) => `${k} ${median(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}-${Math.max(...xs).toFixed(2)})`).join(", ")}`);
}
