// Measures the walking skeleton (issue 2): TaskManager start -> registered, idle TaskManager RSS, and word
// count throughput of `local` at parallelism 1 and 2 on a >= 50 MB text file. Uses the compiled binary
// (dist/taskmanager; built if missing). Run: bun scripts/bench-skeleton.ts [--mb 50] [--runs 5]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { Child, generateText, ROOT } from "../tests/helpers.ts";
import { median } from "./bench-helpers/stats.ts";

const { values } = parseArgs({ options: { mb: { type: "string", default: "50" }, runs: { type: "string", default: "5" } } });
const targetMb = Number(values.mb);
const runs = Number(values.runs);
const binary = path.join(ROOT, "dist/taskmanager");
if (!fs.existsSync(binary)) {
  const build = new Child(["bash", path.join(ROOT, "scripts/build")]);
  if ((await build.exited()) !== 0) throw new Error(`build failed:\n${build.stderr}`);
}
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-"));

try {
  // 1. Start -> registered, and idle RSS.
  const jm = new Child([binary, "jobmanager", "-D", "jobmanager.rpc.port=0"], {}, dir);
  const port = Number((await jm.waitForOutput(/rpc=127\.0\.0\.1:(\d+)/))[1]);
  const startMs: number[] = [];
  const rssMb: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const tm = new Child([binary, "-D", `jobmanager.rpc.port=${port}`, "-D", `taskmanager.resource-id=bench-${i}`, "-D", "taskmanager.numberOfTaskSlots=2"], {}, dir);
    await tm.waitForOutput(/registered at the JobManager/, 10_000);
    startMs.push(performance.now() - t0);
    await Bun.sleep(2000);
    const status = fs.readFileSync(`/proc/${tm.pid}/status`, "utf8");
    rssMb.push(Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) / 1024);
    tm.kill("SIGTERM");
    await tm.exited();
  }
  jm.kill("SIGTERM");
  await jm.exited();

  // 2. Word count throughput.
  const input = path.join(dir, "input.txt");
  let lines = 100_000;
  generateText(input, lines, 1);
  const perLine = fs.statSync(input).size / lines;
  lines = Math.ceil((targetMb * 1024 * 1024) / perLine);
  generateText(input, lines, 1);
  const bytes = fs.statSync(input).size;
  const words = fs.readFileSync(input, "utf8").split(/\s+/).filter((w) => w.length > 0).length;
  const rows: string[] = [];
  for (const p of [1, 2]) {
    const secs: number[] = [];
    for (let r = 0; r < Math.min(runs, 3); r++) {
      const out = path.join(dir, `out-${p}-${r}`);
      const job = new Child([binary, "local", "-p", String(p), path.join(ROOT, "examples/wordcount.ts"), "--input", input, "--output", out], {}, dir);
      if ((await job.exited(600_000)) !== 0) throw new Error(`word count failed:\n${job.stderr}`);
      secs.push(Number(/FINISHED after ([\d.]+) s/.exec(job.stderr)![1]));
      fs.rmSync(out, { recursive: true, force: true });
    }
    const s = median(secs);
    rows.push(`| word count, \`local -p ${p}\` | ${(words / s / 1e6).toFixed(2)} M words/s (${(lines / s / 1e6).toFixed(2)} M lines/s, ${(bytes / s / 1048576).toFixed(1)} MB/s) | median of ${secs.length}: ${s.toFixed(2)} s for ${(bytes / 1048576).toFixed(1)} MB, ${words} words |`);
  }
  console.log(`| measure | result | detail |\n|---|---|---|`);
  console.log(`| TaskManager start -> registered | ${median(startMs).toFixed(0)} ms (median of ${runs}) | process spawn to the JobManager's registration reply |`);
  console.log(`| idle TaskManager RSS | ${median(rssMb).toFixed(1)} MB (median of ${runs}) | 2 slots, registered, 2 s after start |`);
  for (const r of rows) console.log(r);
  console.log(`\nmachine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.type()} ${os.release()}, Bun ${Bun.version}`);
} finally {
  await Child.stopAll();
  fs.rmSync(dir, { recursive: true, force: true });
}
