// Two builds side by side (issue 20: "benchmarks within noise"): runs word count (`local -p P examples/wordcount.ts`
// on a generated text, every word through a keyBy exchange, serialization and keyed state) with binary A and binary B
// alternately, ROUNDS times each, and prints the median, min and max of wall time and CPU time (user + system of the
// binary's process and its Workers) for each. Alternating A and B in one run keeps a shared, noisy machine fair.
//
// Usage: bun scripts/bench-compare-builds.ts <binary A> <binary B> [--mb 50] [--rounds 3] [-p 1]
// Build an older commit's binary with: git worktree add /tmp/old <commit> && (cd /tmp/old && bash scripts/build /tmp/tm-old)
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { generateText, ROOT } from "../tests/helpers.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { mb: { type: "string", default: "50" }, rounds: { type: "string", default: "3" }, p: { type: "string", short: "p", default: "1" } },
});
const [a, b] = positionals;
if (!a || !b || !fs.existsSync(a) || !fs.existsSync(b)) {
  console.error("usage: bun scripts/bench-compare-builds.ts <binary A> <binary B> [--mb 50] [--rounds 3] [-p 1] (both binaries must exist)");
  process.exit(2);
}
const rounds = Number(values.rounds);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-compare-"));
try {
  const input = path.join(dir, "input.txt");
  // generateText writes whole lines; about 60 bytes a line.
  generateText(input, Math.round((Number(values.mb) * 1048576) / 60));
  const mb = fs.statSync(input).size / 1048576;
  const results: Record<string, { wall: number[]; cpu: number[] }> = { A: { wall: [], cpu: [] }, B: { wall: [], cpu: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const [name, binary] of [["A", a], ["B", b]] as const) {
      const out = path.join(dir, `out-${name}-${r}`);
      const t0 = performance.now();
      const child = Bun.spawn([binary, "local", "-p", values.p!, path.join(ROOT, "examples/wordcount.ts"), "--input", input, "--output", out], {
        cwd: dir,
        stdout: "ignore",
        stderr: "pipe",
      });
      const code = await child.exited;
      const wall = (performance.now() - t0) / 1000;
      if (code !== 0) throw new Error(`${name} (${binary}) exited ${code}: ${(await new Response(child.stderr).text()).slice(-2000)}`);
      const usage = child.resourceUsage();
      const cpu = usage ? Number(usage.cpuTime.total) / 1e6 : NaN;
      results[name]!.wall.push(wall);
      results[name]!.cpu.push(cpu);
      console.error(`round ${r + 1} ${name}: ${wall.toFixed(2)} s wall, ${cpu.toFixed(2)} s CPU`);
      fs.rmSync(out, { recursive: true, force: true });
    }
  }
  const stat = (xs: number[]) => {
    const v = [...xs].sort((x, y) => x - y);
    return `${v[Math.floor((v.length - 1) / 2)]!.toFixed(2)} (${v[0]!.toFixed(2)}-${v[v.length - 1]!.toFixed(2)})`;
  };
  console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "?"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Bun ${Bun.version}. ${new Date().toISOString().slice(0, 10)}. Load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}.`);
  console.log(`Word count, local -p ${values.p}, ${mb.toFixed(1)} MB, ${rounds} rounds alternating A and B; median (min-max) in seconds.`);
  console.log("");
  console.log("| build | wall s | CPU s | MB/s (median wall) |");
  console.log("|---|---|---|---|");
  for (const [name, binary] of [["A", a], ["B", b]] as const) {
    const res = results[name]!;
    const med = [...res.wall].sort((x, y) => x - y)[Math.floor((res.wall.length - 1) / 2)]!;
    console.log(`| ${name}: ${binary} | ${stat(res.wall)} | ${stat(res.cpu)} | ${(mb / med).toFixed(1)} |`);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
