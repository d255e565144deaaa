// The JobManager's REST API and /metrics, and a TaskManager's /metrics, /healthz and /readyz, against a live
// cluster of real processes (one JobManager, one TaskManager) running a throttled streaming job with checkpoints.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { parsePrometheus, sampleValue } from "./prometheus-parse.ts";
import { startOpsCluster } from "./ops-job.ts";

const PROMTOOL = Bun.which("promtool");
if (!PROMTOOL) console.warn("promtool not found (Debian package prometheus): the promtool lint of /metrics is skipped");

let jm: Child;
let tm: Child;
let rest: string;
let metricsUrl: string;
let rpc: RpcConnection;
let jobId: string;
let dir: string;

async function get(p: string): Promise<any> {
  const r = await fetch(rest + p);
  const body = await r.json();
  if (r.status !== 200) throw new Error(`GET ${p}: ${r.status} ${JSON.stringify(body)}`);
  return body;
}

beforeAll(async () => {
  dir = tempDir("tm-rest-");
  const c = await startOpsCluster({ dir, jobName: "ops-demo", parallelism: 2, tmArgs: ["-D", "taskmanager.resource-id=tm-rest"] });
  ({ jm, tm, rpc, jobId } = c);
  rest = `http://127.0.0.1:${c.restPort}`;
  metricsUrl = `http://127.0.0.1:${(await tm.waitForOutput(/metrics endpoint started metrics=127\.0\.0\.1:(\d+)/))[1]}`;
}, 40_000);

afterAll(async () => {
  rpc?.close();
  await Child.stopAll();
  removeTempDirs();
});

describe("REST API", () => {
  test("/overview and /taskmanagers show the registered TaskManager and its slots in use", async () => {
    const o = await get("/overview");
    expect(o).toMatchObject({ taskmanagers: 1, "slots-total": 2, "slots-available": 0, "jobs-running": 1, "jobs-finished": 0 });
    const { taskmanagers } = await get("/taskmanagers");
    expect(taskmanagers).toHaveLength(1);
    const t = taskmanagers[0];
    expect(t).toMatchObject({ id: "tm-rest", address: "127.0.0.1", slotsNumber: 2, freeSlots: 0, pid: tm.pid });
    expect(t.slots).toEqual([{ index: 0, jobId }, { index: 1, jobId }]);
    expect(t.timeSinceLastHeartbeat).toBeLessThan(3000);
    expect(t.hardware.cpuCores).toBeGreaterThan(0);
    expect((await get("/taskmanagers/tm-rest")).tasks).toHaveLength(4);
  });

  test("/jobs, /jobs/overview and /jobs/:id show the job, its vertices and subtasks; records and rates move", async () => {
    expect((await get("/jobs")).jobs).toEqual([{ id: jobId, status: "RUNNING" }]);
    const [ov] = (await get("/jobs/overview")).jobs;
    expect(ov).toMatchObject({ jid: jobId, name: "ops-demo", state: "RUNNING", "end-time": -1, tasks: { total: 4, running: 4 } });
    const first = await get(`/jobs/${jobId}`);
    expect(first.vertices.map((v: any) => [v.name, v.parallelism, v.status])).toEqual([
      ["Numbers -> Doubler", 2, "RUNNING"],
      ["Sums -> Slow Sink", 2, "RUNNING"],
    ]);
    expect(first.vertices[1].subtasks.map((s: any) => [s.subtask, s.status, s.taskmanager])).toEqual([[0, "RUNNING", "tm-rest"], [1, "RUNNING", "tm-rest"]]);
    expect(first.plan.nodes[1].inputs).toEqual([{ num: 0, id: 0, ship_strategy: "HASH", exchange: "pipelined_bounded" }]);
    // Metrics come with heartbeats; the sink's records grow and the per-second rate is sampled once a second.
    const later = await waitFor("moving records and a rate", async () => {
      const j = await get(`/jobs/${jobId}`);
      return j.vertices[1].metrics["read-records"] > first.vertices[1].metrics["read-records"] && j.vertices[1].metrics["records-in-per-second"] > 0 && j;
    }, 10_000);
    expect(later.vertices[1].metrics["records-in-per-second"]).toBeLessThan(20_000); // throttled by the sleeping sink
    expect(["ok", "low", "high"]).toContain(later.vertices[0].backpressure.level);
    const v = await get(`/jobs/${jobId}/vertices/1`);
    expect(v.subtasks).toHaveLength(2);
  }, 15_000);

  test("/jobs/:id/checkpoints lists completed checkpoints with duration, size and acknowledgements", async () => {
    const cps = await waitFor("two completed checkpoints", async () => {
      const c = await get(`/jobs/${jobId}/checkpoints`);
      return c.counts.completed >= 2 && c;
    }, 15_000);
    const done = cps.history.filter((h: any) => h.status === "COMPLETED");
    expect(done.length).toBeGreaterThanOrEqual(1);
    const h = done[0];
    expect(h).toMatchObject({ is_savepoint: false, num_subtasks: 4, num_acknowledged_subtasks: 4 });
    expect(h.end_to_end_duration).toBeGreaterThanOrEqual(0);
    expect(h.state_size).toBeGreaterThan(0);
    expect(cps.latest.completed.id).toBeGreaterThanOrEqual(h.id);
    expect((await get(`/jobs/${jobId}/checkpoints/details/${h.id}`)).id).toBe(h.id);
  }, 20_000);

  test("POST /jobs/:id/savepoints triggers a savepoint; polling its request id gives the location", async () => {
    const target = path.join(dir, "savepoints");
    const r = await fetch(`${rest}/jobs/${jobId}/savepoints`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ "target-directory": target, "cancel-job": false }) });
    expect(r.status).toBe(202);
    const { "request-id": requestId } = await r.json();
    expect(requestId).toMatch(/^[0-9a-f]{32}$/);
    const done = await waitFor("the savepoint", async () => {
      const s = await get(`/jobs/${jobId}/savepoints/${requestId}`);
      return s.status.id === "COMPLETED" && s;
    }, 15_000);
    expect(done.operation.location.startsWith(target)).toBe(true);
    expect(fs.existsSync(path.join(done.operation.location, "_metadata"))).toBe(true);
    expect((await get(`/jobs/${jobId}`)).state).toBe("RUNNING");
  }, 20_000);

  test("errors: unknown job 404, unknown path 404, bad body 400, unsupported method 405, with Flink's {errors: [...]}", async () => {
    const r404 = await fetch(`${rest}/jobs/nope`);
    expect(r404.status).toBe(404);
    expect(await r404.json()).toEqual({ errors: ["no job nope"] });
    expect((await fetch(`${rest}/nothing-here`)).status).toBe(404);
    const bad = await fetch(`${rest}/jobs/${jobId}/savepoints`, { method: "POST", headers: { "content-type": "application/json" }, body: "{not json" });
    expect(bad.status).toBe(400);
    expect((await bad.json()).errors[0]).toMatch(/JSON object/);
    expect((await fetch(`${rest}/overview`, { method: "DELETE" })).status).toBe(405);
    expect((await fetch(`${rest}/jobs/${jobId}?mode=stop`, { method: "PATCH" })).status).toBe(400);
  });
});

describe("metrics and health", () => {
  test("the TaskManager's /metrics parses as Prometheus text and its task counters move", async () => {
    const r = await fetch(`${metricsUrl}/metrics`);
    expect(r.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const a = parsePrometheus(await r.text());
    const labels = { job_id: jobId, task_name: "Sums -> Slow Sink", subtask_index: "0" };
    expect(a.get("tm_task_records_in_total")!.type).toBe("counter");
    expect(a.get("tm_task_records_in_total")!.samples).toHaveLength(4);
    expect(a.get("tm_task_records_in_total")!.samples[0]!.labels).toMatchObject({ job_id: jobId, job_name: "ops-demo" });
    for (const name of ["tm_task_out_pool_usage", "tm_task_in_pool_usage", "tm_task_bytes_in_total", "tm_task_buffers_out_total"]) {
      expect(sampleValue(a, name, labels)).toBeNumber();
    }
    // Time fractions in base units (0..1), not milliseconds per second; busy + back-pressured + idle is about 1.
    const ratios = ["tm_task_busy_time_ratio", "tm_task_backpressured_time_ratio", "tm_task_idle_time_ratio"].map((name) => sampleValue(a, name, labels)!);
    for (const r of ratios) expect(r).toBeWithin(0, 1.0001);
    expect(ratios[0]! + ratios[1]! + ratios[2]!).toBeWithin(0.5, 1.5);
    expect(sampleValue(a, "tm_taskmanager_slots")).toBe(2);
    expect(sampleValue(a, "tm_taskmanager_network_buffers")).toBeGreaterThanOrEqual(sampleValue(a, "tm_taskmanager_network_buffers_available")!);
    expect(sampleValue(a, "tm_taskmanager_slots_used")).toBe(2);
    expect(sampleValue(a, "tm_taskmanager_registered")).toBe(1);
    expect(sampleValue(a, "process_resident_memory_bytes")).toBeGreaterThan(10_000_000);
    expect(sampleValue(a, "tm_process_heap_used_bytes")).toBeGreaterThan(0);
    expect(sampleValue(a, "tm_process_heap_used_bytes")).toBeLessThanOrEqual(sampleValue(a, "tm_process_heap_total_bytes")!);
    expect(sampleValue(a, "tm_process_event_loop_lag_seconds")).toBeGreaterThanOrEqual(0);
    const before = sampleValue(a, "tm_task_records_in_total", labels)!;
    await waitFor("records_in to grow", async () => {
      const b = parsePrometheus(await (await fetch(`${metricsUrl}/metrics`)).text());
      return sampleValue(b, "tm_task_records_in_total", labels)! > before;
    }, 10_000);
    expect((await fetch(`${metricsUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${metricsUrl}/readyz`)).status).toBe(200);
    expect((await fetch(`${metricsUrl}/nope`)).status).toBe(404);
  }, 15_000);

  test("the JobManager's /metrics: cluster, job state, checkpoint counts and last checkpoint; counters move", async () => {
    const scrape = async () => parsePrometheus(await (await fetch(`${rest}/metrics`)).text());
    const a = await scrape();
    const job = { job_id: jobId };
    expect(sampleValue(a, "tm_jobmanager_taskmanagers")).toBe(1);
    expect(sampleValue(a, "tm_jobmanager_slots")).toBe(2);
    expect(sampleValue(a, "tm_jobmanager_slots_available")).toBe(0);
    expect(sampleValue(a, "tm_process_heap_used_bytes")).toBeLessThanOrEqual(sampleValue(a, "tm_process_heap_total_bytes")!);
    expect(sampleValue(a, "tm_jobmanager_jobs", { state: "RUNNING" })).toBe(1);
    expect(sampleValue(a, "tm_job_state", { ...job, state: "RUNNING" })).toBe(1);
    expect(sampleValue(a, "tm_job_state", { ...job, state: "FAILED" })).toBe(0);
    expect(sampleValue(a, "tm_job_restarts_total", job)).toBe(0);
    expect(sampleValue(a, "tm_job_last_checkpoint_size_bytes", job)).toBeGreaterThan(0);
    expect(sampleValue(a, "tm_job_last_checkpoint_duration_seconds", job)).toBeGreaterThanOrEqual(0);
    expect(sampleValue(a, "process_resident_memory_bytes")).toBeGreaterThan(10_000_000);
    const completed = sampleValue(a, "tm_job_checkpoints_completed_total", job)!;
    expect(completed).toBeGreaterThan(0);
    await waitFor("one more completed checkpoint", async () => sampleValue(await scrape(), "tm_job_checkpoints_completed_total", job)! > completed, 10_000);
    expect((await fetch(`${rest}/healthz`)).status).toBe(200);
    expect((await fetch(`${rest}/readyz`)).status).toBe(200);
  }, 15_000);

  // promtool is Debian's package prometheus (.ci/run installs it); without it the lint cannot run here.
  test.skipIf(!PROMTOOL)("promtool check metrics passes on the JobManager's and the TaskManager's live /metrics", async () => {
    for (const url of [`${rest}/metrics`, `${metricsUrl}/metrics`]) {
      const exposition = await (await fetch(url)).text();
      expect(exposition).toContain("tm_process_heap_used_bytes"); // a real scrape, not an error page
      const p = Bun.spawn([PROMTOOL!, "check", "metrics"], { stdin: new TextEncoder().encode(exposition), stdout: "pipe", stderr: "pipe" });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      expect({ url, problems: (out + err).trim(), code }).toEqual({ url, problems: "", code: 0 });
    }
  }, 15_000);

  test("PATCH /jobs/:id?mode=cancel cancels the job; its tasks leave the TaskManager's metrics and its slots are free", async () => {
    const r = await fetch(`${rest}/jobs/${jobId}?mode=cancel`, { method: "PATCH" });
    expect(r.status).toBe(202);
    expect((await waitForJob(rpc, jobId, () => {}, 100)).state).toBe("CANCELED");
    expect((await get(`/jobs/${jobId}`)).state).toBe("CANCELED");
    await waitFor("free slots", async () => (await get("/overview"))["slots-available"] === 2, 5_000);
    const m = parsePrometheus(await (await fetch(`${metricsUrl}/metrics`)).text());
    expect(m.get("tm_task_records_in_total")).toBeUndefined();
    expect(sampleValue(m, "tm_taskmanager_slots_used")).toBe(0);
    const jmMetrics = parsePrometheus(await (await fetch(`${rest}/metrics`)).text());
    expect(sampleValue(jmMetrics, "tm_job_state", { job_id: jobId, state: "CANCELED" })).toBe(1);
  }, 15_000);

  test("/jobs/:id/config shows each job's execution config, object reuse as the client set it", async () => {
    // A second job with pipeline.object-reuse (whether it gets slots or not: its graph is what is shown).
    const job = writeJob(dir, "reuse.ts", `export default (env) => env.fromSequence(1, 100).map((x) => [x % 3, 1]).keyBy((t) => t[0]).sum(1).addSink(() => {});`);
    const reuseId = await submitJob(rpc, await prepareJob(job, [], 1, { objectReuse: true }));
    expect(await get(`/jobs/${reuseId}/config`)).toEqual({
      jid: reuseId,
      name: "reuse",
      "execution-config": { "execution-mode": "PIPELINED", "job-parallelism": 1, "object-reuse-mode": true, "user-config": {}, "max-parallelism": 128, "runtime-mode": "STREAMING", "buffer-timeout": 100, "state-backend": null },
    });
    const ops = await get(`/jobs/${jobId}/config`);
    expect(ops).toMatchObject({ jid: jobId, name: "ops-demo", "execution-config": { "object-reuse-mode": false, "job-parallelism": 2 } });
    expect((await fetch(`${rest}/jobs/${jobId}/config/x`)).status).toBe(404);
    await fetch(`${rest}/jobs/${reuseId}?mode=cancel`, { method: "PATCH" });
    expect(["FINISHED", "CANCELED"]).toContain((await waitForJob(rpc, reuseId, () => {}, 100)).state);
  }, 20_000);
});

describe("ports and logs", () => {
  test("a REST port in use: the JobManager exits with code 3 naming rest.port", async () => {
    const port = new URL(rest).port;
    const c = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", `rest.port=${port}`]);
    expect(await c.exited(15_000)).toBe(3);
    expect(c.stderr).toContain(`error: rest.port: address 127.0.0.1:${port} is already in use`);
  }, 20_000);

  test("a metrics port in use: the TaskManager exits with code 3 naming metrics.port", async () => {
    const port = new URL(metricsUrl).port;
    const c = new Child([BUN, "main.ts", "taskmanager", "-D", `metrics.port=${port}`, "-D", "jobmanager.rpc.port=1"]);
    expect(await c.exited(15_000)).toBe(3);
    expect(c.stderr).toContain(`error: metrics.port: address 127.0.0.1:${port} is already in use`);
  }, 20_000);

  test("log.format=json: every log line is a JSON object with ts, level, component and msg", async () => {
    const c = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "rest.port=0", "-D", "log.format=json"]);
    await c.waitForOutput(/"msg":"REST API started"/);
    c.kill("SIGTERM");
    expect(await c.exited(10_000)).toBe(0);
    const lines = c.stderr.trim().split("\n");
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const l of lines) expect(Object.keys(JSON.parse(l)).slice(0, 4)).toEqual(["ts", "level", "component", "msg"]);
    expect(JSON.parse(lines.find((l) => l.includes("REST API started"))!)).toMatchObject({ level: "info", component: "jobmanager", rest: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
  }, 15_000);
});

