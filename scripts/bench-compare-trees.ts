// Two source trees side by side (an older commit checked out with `git worktree add`, and this one): runs the same
// benchmark command in tree A and tree B alternately, ROUNDS times each, and prints for each the median, min and max
// of wall time, CPU time (user + system of the command's process, its Workers included) and of a figure read from
// the command's output with --figure (a regex whose first group is a number, e.g. "q5 heap p=1: [\d.]+ s, (\d+) K";
// --figure may be given several times, each its own column).
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
  options: { rounds: { type: "string", default: "3" }, figure: { type: "string", multiple: true } },
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
const figures = (values.figure ?? []).map((f) => new RegExp(f));

type Sample = { wall: number; cpu: number; figures: number[] };
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
    const found = figures.map((f) => {
      const m = f.exec(out + err);
      if (!m) throw new Error(`${name}: --figure ${f} not found in the output:\n${(out + err).slice(-2000)}`);
      return Number(m[1]);
    });
    results[name].push({ wall, cpu, figures: found });
    console.error(`[compare] round ${r + 1} ${name}: wall ${wall.toFixed(1)} s, CPU ${cpu.toFixed(1)} s${found.map((x) => `, figure ${x}`).join("")}`);
  }
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return `${s[Math.floor(s.length / 2)]!.toFixed(1)} (${s[0]!.toFixed(1)}-${s.at(-1)!.toFixed(1)})`;
};
console.log(`Command (in each tree): ${command.join(" ")}`);
console.log(`A = ${path.resolve(a)}, B = ${path.resolve(b)}; ${rounds} rounds alternated; load average 1 min during the run ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`);
console.log(`| tree | wall s, median (min-max) | CPU s |${figures.map((f) => ` ${f.source.replace(/(?<!\\)\|/g, "\\|")} |`).join("")}`);
console.log(`| --- | --- | --- |${figures.map(() => " --- |").join("")}`);
for (const name of ["A", "B"] as const) {
  const xs = results[name];
  const figs = figures.map((_, i) => ` ${stats(xs.map((x) => x.figures[i]!))} |`).join("");
  console.log(`| ${name} | ${stats(xs.map((x) => x.wall))} | ${stats(xs.map((x) => x.cpu))} |${figs}`);
}
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const ratio = (f: (x: Sample) => number) => (med(results.B.map(f)) / med(results.A.map(f))).toFixed(2);
console.log(`B / A, medians: wall ${ratio((x) => x.wall)}, CPU ${ratio((x) => x.cpu)}${figures.map((_, i) => `, figure ${i + 1} ${ratio((x) => x.figures[i]!)}`).join("")}`);
