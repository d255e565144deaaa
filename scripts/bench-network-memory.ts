// Issue 22's figures: network memory with required and optional buffers.
//  1. The keyed sum (fromSequence -> map -> keyBy -> sum -> sink) at p=4 on one TaskManager (`bun main.ts local`)
//     with the default pool against a pool that covers only the minimum (taskmanager.network.numberOfBuffers =
//     2 x p x p: one buffer per subpartition of each source, one ring slot per channel of each keyed task),
//     alternated A/B, RUNS runs each: records/s from the job's own duration, wall and CPU time of the process.
//  2. The largest parallelism that runs on one TaskManager with the default network configuration: the keyed sum
//     at each parallelism of the list, until one fails.
//
// Usage: bun scripts/bench-network-memory.ts [--runs 3] [--records 2000000] [--parallelisms 32,64,96,128] [--skip-ab]
// The machine these were taken on is shared and loaded; heartbeat.timeout is raised to 120 s for part 2 (starting
// hundreds of Workers stalls the process for seconds there), nothing else is changed from the defaults.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    records: { type: "string", default: "2000000" },
    parallelisms: { type: "string", default: "32,64,96,128" },
    "skip-ab": { type: "boolean", default: false },
    "skip-max": { type: "boolean", default: false },
  },
});
const runs = Number(values.runs);
const records = Number(values.records);
const parallelisms = values.parallelisms!.split(",").map(Number);
if (!Number.isInteger(runs) || runs < 1 || !Number.isInteger(records) || records < 1 || parallelisms.some((p) => !Number.isInteger(p) || p < 1)) {
  console.error("usage: bun scripts/bench-network-memory.ts [--runs N>=1] [--records N>=1] [--parallelisms 32,64,...]");
  process.exit(2);
}

const root = path.resolve(import.meta.dir, "..");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-netmem-"));
const job = path.join(dir, "keyed-sum.ts");
fs.writeFileSync(job, `
export default (env) => {
  env.fromSequence(1, Number(process.env.BENCH_RECORDS)).map((x) => [x % 1000, x]).keyBy((t) => t[0]).sum(1).addSink(() => {});
};
`);

interface Run {
  ok: boolean;
  jobSeconds: number;
  wallSeconds: number;
  cpuSeconds: number;
  maxRssMb: number;
  intoSinks: number;
  error: string;
}

async function runLocal(p: number, n: number, flags: string[]): Promise<Run> {
  const t0 = performance.now();
  const child = Bun.spawn([process.execPath, "main.ts", "local", "-p", String(p), ...flags, job], {
    cwd: root,
    env: { ...process.env, BENCH_RECORDS: String(n) },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  const code = await child.exited;
  const wallSeconds = (performance.now() - t0) / 1000;
  const usage = child.resourceUsage();
  const text = out + err;
  const done = /FINISHED after ([\d.]+) s; (\d+) records read by sources, (\d+) records into sinks/.exec(text);
  const failure = /Caused by: (.*)|error=(insufficient network buffers[^\n]*)/.exec(text);
  return {
    ok: code === 0 && done !== null && Number(done[3]) === n,
    jobSeconds: done ? Number(done[1]) : NaN,
    wallSeconds,
    cpuSeconds: usage ? Number(usage.cpuTime.total) / 1e6 : NaN,
    maxRssMb: usage ? usage.maxRSS / 1048576 : NaN, // Bun gives maxRSS in bytes
    intoSinks: done ? Number(done[3]) : 0,
    error: failure ? (failure[1] ?? failure[2] ?? "") : code !== 0 ? `exit code ${code}` : "",
  };
}

function stat(xs: number[], digits = 1): string {
  const v = [...xs].sort((a, b) => a - b);
  return `${v[Math.floor((v.length - 1) / 2)]!.toFixed(digits)} (${v[0]!.toFixed(digits)}-${v[v.length - 1]!.toFixed(digits)})`;
}

console.log(`machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "?"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, load ${os.loadavg().map((l) => l.toFixed(1)).join(" ")}, Bun ${Bun.version}`);

if (!values["skip-ab"]) {
  const p = 4;
  const variants = [
    { name: "default pool", flags: [] as string[] },
    { name: `minimum pool (${2 * p * p} buffers)`, flags: ["-D", `taskmanager.network.numberOfBuffers=${2 * p * p}`] },
  ];
  const results = variants.map(() => [] as Run[]);
  for (let r = 0; r < runs; r++) {
    for (let v = 0; v < variants.length; v++) {
      const run = await runLocal(p, records, variants[v]!.flags);
      if (!run.ok) {
        console.error(`${variants[v]!.name}, run ${r + 1}: failed: ${run.error}`);
        process.exit(1);
      }
      results[v]!.push(run);
      console.error(`${variants[v]!.name}, run ${r + 1}: ${(records / run.jobSeconds / 1000).toFixed(0)} K records/s, job ${run.jobSeconds.toFixed(2)} s, wall ${run.wallSeconds.toFixed(1)} s, CPU ${run.cpuSeconds.toFixed(1)} s`);
    }
  }
  console.log(`\nkeyed sum, p=${p}, ${records} records, one TaskManager, ${runs} runs each, alternated; median (min-max)\n`);
  console.log("| pool | K records/s | job s | wall s | CPU s (user+sys) |");
  console.log("|---|---|---|---|---|");
  variants.forEach((v, i) => {
    const rs = results[i]!;
    console.log(`| ${v.name} | ${stat(rs.map((x) => records / x.jobSeconds / 1000), 0)} | ${stat(rs.map((x) => x.jobSeconds), 2)} | ${stat(rs.map((x) => x.wallSeconds))} | ${stat(rs.map((x) => x.cpuSeconds))} |`);
  });
}

if (!values["skip-max"]) {
  const n = 20_000;
  console.log(`\nlargest parallelism on one TaskManager, default network configuration (heartbeat.timeout=120s), keyed sum of ${n} records\n`);
  console.log("| p | result | job s | wall s | CPU s | max RSS MiB |");
  console.log("|---|---|---|---|---|---|");
  for (const p of parallelisms) {
    const run = await runLocal(p, n, ["-D", "heartbeat.timeout=120s"]);
    console.log(`| ${p} | ${run.ok ? "FINISHED, every record once" : `failed: ${run.error}`} | ${run.jobSeconds.toFixed(1)} | ${run.wallSeconds.toFixed(1)} | ${run.cpuSeconds.toFixed(1)} | ${run.maxRssMb.toFixed(0)} |`);
    if (!run.ok) break;
  }
}
fs.rmSync(dir, { recursive: true, force: true });
