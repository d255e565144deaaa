// Nexmark throughput (issue 8): every query of examples/nexmark/ at parallelism 1 and 2 on an in-process cluster
// (one TaskManager, 2 slots, real Workers), output discarded, events/s (events / job run time) and events/s per
// core, next to the published Apache Flink figures per core (nexmark/nexmark GUIDE_V1, RocksDB backend).
// Run: bun scripts/bench-nexmark.ts [--events 10000000] [--backend heap|sqlite] [--queries q0,q1,...] [--runs 1]
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { defaultConfig } from "../src/config/index.ts";
import { startLocalCluster } from "../src/client/local-cluster.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { setLogLevel } from "../src/util/log.ts";
import { ROOT } from "../tests/helpers.ts";

/** Flink's published events/s per core (nexmark/nexmark README, GUIDE_V1). */
const FLINK_PER_CORE: Record<string, number> = { q0: 155e3, q1: 158e3, q2: 175e3, q3: 152e3, q4: 34e3, q5: 22e3, q7: 12e3, q8: 146e3 };

const { values } = parseArgs({
  options: {
    events: { type: "string", default: "10000000" },
    backend: { type: "string", default: "heap" },
    queries: { type: "string", default: "q0,q1,q2,q3,q4,q5,q7,q8" },
    runs: { type: "string", default: "1" },
    seed: { type: "string", default: "0" },
  },
});
const EVENTS = Number(values.events);
const RUNS = Number(values.runs);
const BACKEND = values.backend as "heap" | "sqlite";
if (BACKEND !== "heap" && BACKEND !== "sqlite") throw new Error(`--backend: expected heap or sqlite, got ${BACKEND}`);
const QUERIES = values.queries!.split(",").filter((q) => q.length > 0);
const CORES = os.availableParallelism();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bench-nexmark-"));
const log = (s: string) => console.error(`[bench-nexmark] ${s}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
setLogLevel("warn");

/** Seconds the job ran (JobManager's start to end), on a fresh cluster. */
async function run(query: string, p: number): Promise<number> {
  const cfg = { ...defaultConfig(), "state.backend": BACKEND, "taskmanager.state.dir": path.join(dir, "state"), "log.level": "warn" as const };
  const cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: cfg });
  const rpc = await connectClient("127.0.0.1", cluster.port);
  try {
    const job = path.join(ROOT, "examples/nexmark", `${query}.ts`);
    const s = await waitForJob(rpc, await submitJob(rpc, await prepareJob(job, [String(EVENTS), values.seed!, "discard"], p)), () => {}, 50);
    if (s.state !== "FINISHED") throw new Error(`${query} at p=${p} ended ${s.state}: ${s.error?.message}`);
    return (s.endTime! - s.startTime) / 1000;
  } finally {
    rpc.close();
    await cluster.stop();
  }
}

const fmt = (n: number) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(0)} K`);
const rows: string[] = [];
try {
  for (const q of QUERIES) {
    if (!(q in FLINK_PER_CORE)) throw new Error(`unknown query ${q} (expected one of ${Object.keys(FLINK_PER_CORE).join(", ")})`);
    const rate: number[] = [];
    for (const p of [1, 2]) {
      const secs: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        secs.push(await run(q, p));
        log(`${q} p=${p} run ${r + 1}: ${secs.at(-1)!.toFixed(2)} s, ${fmt(EVENTS / secs.at(-1)!)} events/s`);
      }
      rate.push(EVENTS / median(secs));
    }
    const perCore = [rate[0]!, rate[1]! / Math.min(2, CORES)];
    const flink = FLINK_PER_CORE[q]!;
    const verdict = perCore.map((r, i) => `p=${i + 1} ${r >= flink ? "met" : "missed"}`).join(", ");
    rows.push(`| ${q} | ${fmt(rate[0]!)} | ${fmt(rate[1]!)} | ${fmt(perCore[0]!)} / ${fmt(perCore[1]!)} | ${fmt(flink)} | ${verdict} |`);
  }
  console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Bun ${Bun.version}`);
  console.log(`Command: bun scripts/bench-nexmark.ts --events ${EVENTS} --backend ${BACKEND} --queries ${QUERIES.join(",")} --runs ${RUNS}`);
  console.log(`Date: ${new Date().toISOString().slice(0, 10)}. ${EVENTS} events per run (default rate: 10 µs of event time per event), output discarded, ${BACKEND} backend.\n`);
  console.log("| query | events/s p=1 | events/s p=2 | per core p=1 / p=2 | Flink per core | goal (per core >= Flink) |\n| --- | --- | --- | --- | --- | --- |");
  for (const r of rows) console.log(r);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
