// Two source trees side by side (an older commit checked out with `git worktree add`, and this one): runs the same
// benchmark command in tree A and tree B alternately, ROUNDS times each, and prints for each the median, min and max
// of wall time, CPU time (user + system of the command's process, its Workers included) and of a figure read from
// the command's output with --figure (a regex whose first group is a number, e.g. "q5 heap p=1: [\d.]+ s, (\d+) K").
// Alternating A and B in one run keeps a shared, noisy machine fair; the load average is printed beside.
//
// Usage: bun scripts/bench-compare-trees.ts <tree A> <tree B> [--rounds 3] [--figure REGEX] -- <command...>
// e.g.   git worktree add /tmp/old HEAD~1 && ln -s "$PWD/node_modules" /tmp/old/node_modules
//        bun scripts/bench-compare-trees.ts /tmp/old . --figure "q5 heap p=1: [\d.]+ s, (\d+) K events/s" -- \
//          node_modules/.bin/bun scripts/bench-nexmark.ts --queries q5 --backends heap --events 2000000
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { rounds: { type: "string", default: "3" }, figure: { type: "string" } },
});
const sep = process.argv.indexOf("--");
const [a, b] = positionals;
const command = sep >= 0 ? process.argv.slice(sep + 1) : [];
if (!a || !b || command.length === 0 || !fs.existsSync(a) || !fs.existsSync(b)) {
  console.error("usage: bun scripts/bench-compare-trees.ts <tree A> <tree B> [--rounds 3] [--figure REGEX] -- <command...> (both trees must exist)");
  process.exit(2);
}
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: expected a positive integer, got ${values.rounds}`);
const figure = values.figure ? new RegExp(values.figure) : null;

type Sample = { wall: number; cpu: number; figure: number | null };
const results: Record<"A" | "B", Sample[]> = { A: [], B: [] };
const loads: number[] = [];
for (let r = 0; r < rounds; r++) {
  for (const [name, tree] of [["A", a], ["B", b]] as const) {
    loads.push(os.loadavg()[0]!);
    const t0 = performance.now();
    const child = Bun.spawn(command, { cwd: path.resolve(tree), stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
    const code = await child.exited;
    const wall = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(`${name} (${tree}) exited with ${code}:\n${err.slice(-2000)}`);
    const usage = child.resourceUsage();
    const cpu = usage ? Number(usage.cpuTime.total) / 1e6 : NaN;
    const m = figure ? figure.exec(out + err) : null;
    if (figure && !m) throw new Error(`${name}: --figure ${figure} not found in the output:\n${(out + err).slice(-2000)}`);
    const sample = { wall, cpu, figure: m ? Number(m[1]) : null };
    results[name].push(sample);
    console.error(`[compare] round ${r + 1} ${name}: wall ${wall.toFixed(1)} s, CPU ${cpu.toFixed(1)} s${m ? `, figure ${m[1]}` : ""}`);
  }
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return `${s[Math.floor(s.length / 2)]!.toFixed(1)} (${s[0]!.toFixed(1)}-${s.at(-1)!.toFixed(1)})`;
};
console.log(`Command (in each tree): ${command.join(" ")}`);
console.log(`A = ${path.resolve(a)}, B = ${path.resolve(b)}; ${rounds} rounds alternated; load average 1 min during the run ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`);
console.log("| tree | wall s, median (min-max) | CPU s | figure |");
console.log("| --- | --- | --- | --- |");
for (const name of ["A", "B"] as const) {
  const xs = results[name];
  const fig = xs.every((x) => x.figure !== null) ? stats(xs.map((x) => x.figure!)) : "";
  console.log(`| ${name} | ${stats(xs.map((x) => x.wall))} | ${stats(xs.map((x) => x.cpu))} | ${fig} |`);
}
