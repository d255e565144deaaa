// Latency markers (issue 23, Flink's metrics.latency.interval) on an in-process cluster with real Workers and TCP:
// sources emit markers, every chained operator downstream records how long they took to reach it, per source
// subtask; markers are not records (counts and output unchanged), never read as negative, survive a restart, show on
// /metrics as a Prometheus summary, and with the interval at 0 nothing is emitted.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig } from "../src/config/index.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { JobStatus, LatencyStats } from "../src/rpc/messages.ts";
import { LatencyTracker, LATENCY_HISTORY } from "../src/runtime/latency-markers.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { committedLines, keyedCountsDiscrepancy, keyedJob, KEYS, removeTempDirs, tempDir, writeJob } from "./helpers.ts";
import { parsePrometheus } from "./prometheus-parse.ts";

afterAll(removeTempDirs);
const startCluster = clusterPerTest();

function config(dir: string, extra: Record<string, unknown> = {}) {
  return {
    ...defaultConfig(),
    "taskmanager.state.dir": path.join(dir, "state"),
    "jobmanager.storage.dir": path.join(dir, "jm"),
    "restart-strategy.type": "fixed-delay" as const,
    "restart-strategy.fixed-delay.attempts": 3,
    "restart-strategy.fixed-delay.delay": 100,
    "log.level": "warn" as const,
    ...extra,
  };
}

/** The latency entries of a vertex's subtasks (those of the job's last attempt), by operator. */
function latencyOf(s: JobStatus, vertexPrefix: string): LatencyStats[] {
  const v = s.vertices.find((x) => x.name.startsWith(vertexPrefix));
  if (!v) throw new Error(`no vertex ${vertexPrefix} in ${s.vertices.map((x) => x.name).join(", ")}`);
  return v.subtasks.flatMap((t) => t.metrics.latency ?? []);
}

describe("LatencyTracker", () => {
  test("quantiles over the last markers per operator and source subtask, totals over all", () => {
    const t = new LatencyTracker();
    const m = (ms: number, subtask = 0) => ({ type: "latencyMarker" as const, markedTime: 1000 - ms, sourceVertexId: 0, sourceSubtask: subtask });
    for (let i = 1; i <= 100; i++) t.record("Map", m(i), 1000);
    t.record("Map", m(7, 1), 1000);
    const [a, b] = t.report().sort((x, y) => x.sourceSubtask - y.sourceSubtask);
    expect(a).toMatchObject({ operator: "Map", sourceSubtask: 0, count: 100, minMs: 1, p50Ms: 50, p95Ms: 95, p99Ms: 99, maxMs: 100, sumMs: 5050 });
    expect(b).toMatchObject({ sourceSubtask: 1, count: 1, minMs: 7, p50Ms: 7, maxMs: 7 });
    // The window keeps the last LATENCY_HISTORY samples: old large ones fall out.
    for (let i = 0; i < LATENCY_HISTORY; i++) t.record("Map", m(2), 1000);
    const after = t.report().find((x) => x.sourceSubtask === 0)!;
    expect(after.maxMs).toBe(2);
    expect(after.count).toBe(100 + LATENCY_HISTORY);
  });
});

describe("latency markers in a job", () => {
  const N = 30_000;

  test("every operator downstream of the sources records markers from each source subtask; records and output are unchanged", async () => {
    const dir = tempDir("tm-latency-");
    const { client, cluster } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 4, config: config(dir, { "metrics.latency.interval": 20 }) });
    const out = path.join(dir, "out");
    // About 3 s of input (a 1 ms pause every 10 records), p=2: two source subtasks, two keyed subtasks.
    const job = writeJob(dir, "keyed.ts", keyedJob(out, N, 10, { checkpointMs: 500 }));
    const jobId = await submitJob(client, await prepareJob(job, [], 2));
    // While it runs, the TaskManager's /metrics has the summary, promtool-shaped (quantiles, _sum, _count).
    let scraped = "";
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      scraped = await (await fetch(`http://127.0.0.1:${cluster.taskManagers[0]!.metricsPort}/metrics`)).text();
      if (/tm_task_latency_seconds_count\{[^}]*operator_name="Keyed Process"/.test(scraped)) break;
      await Bun.sleep(100);
    }
    const fam = parsePrometheus(scraped).get("tm_task_latency_seconds");
    expect(fam?.type).toBe("summary");
    const keyed = fam!.samples.filter((s) => s.labels.operator_name === "Keyed Process");
    expect(new Set(keyed.map((s) => s.labels.quantile).filter((q) => q !== undefined))).toEqual(new Set(["0.5", "0.95", "0.99", "1"]));
    expect(keyed.some((s) => s.name === "tm_task_latency_seconds_count" && s.value > 0)).toBe(true);

    const s = await waitForJob(client, jobId, () => {}, 50);
    expect(s.state).toBe("FINISHED");
    // Markers are not records.
    const keyedVertex = s.vertices.find((v) => v.name.startsWith("Keyed Process"))!;
    expect(keyedVertex.subtasks.reduce((a, t) => a + t.metrics.recordsIn, 0)).toBe(N);
    expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });

    // The source's chained map and the keyed operator and sink downstream, each from both source subtasks.
    const sourceVertex = s.vertices.find((v) => v.name.startsWith("Sequence Source"))!;
    for (const [prefix, operators] of [["Sequence Source", ["Map"]], ["Keyed Process", ["Keyed Process", "File Sink"]]] as const) {
      const entries = latencyOf(s, prefix);
      for (const op of operators) {
        const mine = entries.filter((e) => e.operator.startsWith(op));
        expect(new Set(mine.map((e) => e.sourceSubtask))).toEqual(new Set([0, 1]));
        expect(mine.every((e) => e.sourceVertexId === sourceVertex.id)).toBe(true);
        // About 150 markers per source subtask over 3 s; at least some reached each operator.
        expect(mine.reduce((a, e) => a + e.count, 0)).toBeGreaterThan(20);
        for (const e of mine) {
          expect(e.minMs).toBeGreaterThanOrEqual(0);
          expect(e.p50Ms).toBeLessThanOrEqual(e.p99Ms);
          expect(e.p99Ms).toBeLessThanOrEqual(e.maxMs);
        }
      }
    }
    // The source itself does not record its own markers.
    expect(latencyOf(s, "Sequence Source").some((e) => e.operator.includes("Source"))).toBe(false);
  }, 120_000);

  test("with metrics.latency.interval at 0 no marker is emitted", async () => {
    const dir = tempDir("tm-latency-off-");
    const { client } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 4, config: config(dir) });
    const out = path.join(dir, "out");
    const job = writeJob(dir, "keyed.ts", keyedJob(out, 5_000, 10, { checkpointMs: 500 }));
    const s = await waitForJob(client, await submitJob(client, await prepareJob(job, [], 2)), () => {}, 50);
    expect(s.state).toBe("FINISHED");
    for (const v of s.vertices) for (const t of v.subtasks) expect(t.metrics.latency).toBeUndefined();
    expect(keyedCountsDiscrepancy(committedLines(out), 5_000, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  }, 120_000);

  test("a job's setLatencyTrackingInterval turns markers on; they flow again after a restart", async () => {
    const dir = tempDir("tm-latency-restart-");
    const { client } = await startCluster({ taskManagers: 1, slotsPerTaskManager: 4, config: config(dir) });
    const out = path.join(dir, "out");
    const flag = path.join(dir, "thrown");
    // keyedJob with its map throwing once, half-way, and the job's own latency interval.
    const source = keyedJob(out, N, 10, { checkpointMs: 300 })
      .replace("env.enableCheckpointing(300)", "env.enableCheckpointing(300).setLatencyTrackingInterval(20)")
      .replace(
        ".map((x) => {",
        `.map((x) => { if (x === ${N / 2} && !require("node:fs").existsSync(${JSON.stringify(flag)})) { require("node:fs").writeFileSync(${JSON.stringify(flag)}, ""); throw new Error("once"); }`,
      );
    const job = writeJob(dir, "keyed-restart.ts", source);
    const s = await waitForJob(client, await submitJob(client, await prepareJob(job, [], 2)), () => {}, 50);
    expect(s.state).toBe("FINISHED");
    expect(fs.existsSync(flag)).toBe(true);
    expect(s.restarts).toBe(1);
    // The final status shows the restarted attempt's subtasks: their markers arrived after the restart.
    const keyedVertex = s.vertices.find((v) => v.name.startsWith("Keyed Process"))!;
    expect(keyedVertex.subtasks.every((t) => t.attempt === 1)).toBe(true);
    const sink = latencyOf(s, "Keyed Process").filter((e) => e.operator.startsWith("File Sink"));
    expect(sink.reduce((a, e) => a + e.count, 0)).toBeGreaterThan(0);
    expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
  }, 120_000);

  test("setLatencyTrackingInterval refuses a bad value", async () => {
    const { StreamExecutionEnvironment } = await import("../src/api/environment.ts");
    expect(() => new StreamExecutionEnvironment().setLatencyTrackingInterval(-1)).toThrow("setLatencyTrackingInterval: expected a number of milliseconds >= 0, got -1");
  });
});
