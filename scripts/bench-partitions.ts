// Issue 21's figures: time from a network cut to its detection and to RUNNING again, per scenario of
// tests/partitions.test.ts (network namespaces, real processes, default heartbeat and keepalive settings).
// Runs that suite RUNS times (default 3), collects the figures it writes to $TM_PARTITION_REPORT and prints a
// markdown table with the median, min and max of each. Needs root and `ip netns`, as the suite does.
//
// Usage: bun scripts/bench-partitions.ts [runs]
// The figures are latencies set by time-outs, not by CPU work: wall time is what they measure. The CPU time of the
// whole suite run (user + sys of the test runner and every process it started) is printed beside it for context.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const runs = Number(process.argv[2] ?? 3);
if (!Number.isInteger(runs) || runs < 1) {
  console.error("usage: bun scripts/bench-partitions.ts [runs >= 1]");
  process.exit(2);
}
const root = path.resolve(import.meta.dir, "..");
const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-partitions-")), "figures.jsonl");
const cpu: number[] = [];
const wall: number[] = [];
for (let r = 1; r <= runs; r++) {
  console.error(`run ${r}/${runs}: bun test tests/partitions.test.ts`);
  const t0 = Date.now();
  const child = Bun.spawn([process.execPath, "test", "tests/partitions.test.ts"], {
    cwd: root,
    env: { ...process.env, TM_PARTITION_REPORT: report },
    stdout: "inherit",
    stderr: "inherit",
  });
  const code = await child.exited;
  wall.push((Date.now() - t0) / 1000);
  const usage = child.resourceUsage();
  if (usage) cpu.push(Number(usage.cpuTime.total) / 1e6);
  if (code !== 0) {
    console.error(`run ${r} failed with exit code ${code}; its figures are not used`);
    process.exit(1);
  }
}

type Row = { scenario: string; [k: string]: unknown };
const rows: Row[] = fs.readFileSync(report, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const byScenario = new Map<string, Row[]>();
for (const row of rows) byScenario.set(row.scenario, [...(byScenario.get(row.scenario) ?? []), row]);

function stat(values: number[]): string {
  if (values.length === 0) return "-";
  const v = [...values].sort((a, b) => a - b);
  const median = v[Math.floor((v.length - 1) / 2)]!;
  return `${(median / 1000).toFixed(1)} s (${(v[0]! / 1000).toFixed(1)}-${(v[v.length - 1]! / 1000).toFixed(1)})`;
}
const numbers = (list: Row[], key: string) => list.map((r) => r[key]).filter((x): x is number => typeof x === "number");

console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "?"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Bun ${Bun.version}. ${new Date().toISOString().slice(0, 10)}.`);
console.log(`${runs} run(s); each suite run took ${wall.map((w) => w.toFixed(0)).join(", ")} s wall, ${cpu.map((c) => c.toFixed(0)).join(", ")} s CPU (the runner's own children counted by the kernel where it reports them).`);
console.log("");
console.log("| scenario | cut -> detected (job RESTARTING) | cut -> RUNNING again | other |");
console.log("|---|---|---|---|");
for (const [scenario, list] of byScenario) {
  const other = ["zombieCanceledAfterMs", "tasksCanceledOnTaskManagersMs", "runningAfterHealMs"]
    .filter((k) => numbers(list, k).length > 0)
    .map((k) => `${k.replace(/Ms$/, "")}: ${stat(numbers(list, k))}`);
  const restarts = list.map((r) => r.restarts).filter((x) => typeof x === "number");
  if (restarts.length > 0) other.push(`restarts: ${restarts.join(", ")}`);
  console.log(`| ${scenario} | ${stat(numbers(list, "detectMs"))} | ${stat(numbers(list, "runningAgainMs"))} | ${other.join("; ") || "-"} |`);
}
