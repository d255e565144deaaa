// Two or more commands side by side in one tree: runs them alternately, ROUNDS times each, and prints for each the
// median, min and max of wall time, CPU time (user + system of the command's process, its Workers included) and of
// a figure read from its output with --figure (a regex whose first group is a number). Commands are separated by
// "--"; the load average is printed beside, as the machine is shared.
// Usage: bun scripts/bench-compare-commands.ts [--rounds 3] [--figure REGEX] -- <command A...> -- <command B...>
// e.g.   bun scripts/bench-compare-commands.ts --figure "FINISHED after ([\d.]+) s" -- \
//          bun main.ts local scripts/bench-helpers/keyed-sum-job.ts 20000000 100 keyed -- \
//          bun main.ts local scripts/bench-helpers/keyed-sum-job.ts 20000000 100 chained
import * as os from "node:os";
import { parseArgs } from "node:util";

const first = process.argv.indexOf("--");
const { values } = parseArgs({ args: process.argv.slice(2, first < 0 ? undefined : first), options: { rounds: { type: "string", default: "3" }, figure: { type: "string" } } });
const commands: string[][] = [];
if (first >= 0) for (const arg of process.argv.slice(first + 1)) arg === "--" || commands.length === 0 ? commands.push(arg === "--" ? [] : [arg]) : commands.at(-1)!.push(arg);
if (commands.length < 2 || commands.some((c) => c.length === 0)) {
  console.error("usage: bun scripts/bench-compare-commands.ts [--rounds 3] [--figure REGEX] -- <command A...> -- <command B...>");
  process.exit(2);
}
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds: expected a positive integer, got ${values.rounds}`);
const figure = values.figure ? new RegExp(values.figure) : null;

const results = commands.map(() => [] as { wall: number; cpu: number; figure: number | null }[]);
const loads: number[] = [];
for (let r = 0; r < rounds; r++) {
  for (let i = 0; i < commands.length; i++) {
    loads.push(os.loadavg()[0]!);
    const t0 = performance.now();
    const child = Bun.spawn(commands[i]!, { stdout: "pipe", stderr: "pipe" });
    const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
    const code = await child.exited;
    const wall = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(`${commands[i]!.join(" ")} exited with ${code}:\n${err.slice(-2000)}`);
    const cpu = Number(child.resourceUsage()?.cpuTime.total ?? NaN) / 1e6;
    const m = figure ? figure.exec(out + err) : null;
    if (figure && !m) throw new Error(`--figure ${figure} not found in the output of ${commands[i]!.join(" ")}:\n${(out + err).slice(-2000)}`);
    results[i]!.push({ wall, cpu, figure: m ? Number(m[1]) : null });
    console.error(`[compare] round ${r + 1} ${String.fromCharCode(65 + i)}: wall ${wall.toFixed(1)} s, CPU ${cpu.toFixed(1)} s${m ? `, figure ${m[1]}` : ""}`);
  }
}
const stats = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return `${s[Math.floor(s.length / 2)]!.toFixed(2)} (${s[0]!.toFixed(2)}-${s.at(-1)!.toFixed(2)})`;
};
console.log(`${rounds} rounds alternated; load average 1 min during the run ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`);
console.log("| command | wall s, median (min-max) | CPU s | figure |\n| --- | --- | --- | --- |");
results.forEach((xs, i) => {
  const fig = xs.every((x) => x.figure !== null) ? stats(xs.map((x) => x.figure!)) : "";
  console.log(`| ${String.fromCharCode(65 + i)}: \`${commands[i]!.join(" ")}\` | ${stats(xs.map((x) => x.wall))} | ${stats(xs.map((x) => x.cpu))} | ${fig} |`);
});
