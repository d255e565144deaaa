// Job upgrades from savepoints (issue 24), with real processes: one JobManager and two TaskManagers (`bun main.ts`
// children) for the whole file. A job with two keyed counting stages (uids "A" and "B") is stopped with a
// savepoint part-way; changed versions of it start from that savepoint with `bun main.ts submit -s` and must write
// what one uninterrupted run writes: every (stage, key, count) exactly once. State goes to operators by operator
// id whatever the chaining, chain count or parallelism; state no operator claims is refused unless -n; a state
// restored as another kind fails naming operator and state; `savepoint info` shows what a savepoint holds.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { JobGraphError, buildJobGraph } from "../src/api/job-graph.ts";
import { describePlan } from "../src/api/plan.ts";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { operatorsOf } from "../src/graph/job-graph.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { BUN, Child, removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";

const API = JSON.stringify(path.resolve("src/api/index.ts"));
const N = 40_000;
const MOD_A = 37;
const MOD_B = 23;
const HEX_ID = /^[0-9a-f]{32}$/;

// ---- operator ids, in process ----

function operatorIds(build: (env: StreamExecutionEnvironment) => void): Map<string, string> {
  const env = new StreamExecutionEnvironment();
  build(env);
  const plan = env.getPlan();
  const g = buildJobGraph(describePlan(plan), plan.settings, 2, "ids");
  return new Map(g.vertices.flatMap((v) => operatorsOf(v)).map((o) => [o.name, o.id]));
}

describe("operator ids", () => {
  const base = (env: StreamExecutionEnvironment, opts: { upstream?: boolean; downstream?: boolean; uid?: boolean } = {}) => {
    let s = env.fromSequence(1, 10).name("Src");
    if (opts.upstream) s = s.filter(() => true).name("Upstream Filter");
    const w = s.keyBy((x) => x % 2).reduce((a, b) => a + b).name("Counter");
    if (opts.uid) w.uid("counter");
    let out = w.map((x) => x).name("Format");
    if (opts.downstream) out = out.filter(() => true).name("Downstream Filter");
    out.print().name("Print");
  };

  test("uid when set, else a hash of the position: stable when only downstream changes, new when upstream changes", () => {
    const plain = operatorIds((env) => base(env));
    expect(plain.get("Counter")).toMatch(HEX_ID);
    expect(new Set(plain.values()).size).toBe(plain.size); // distinct
    expect(operatorIds((env) => base(env)).get("Counter")).toBe(plain.get("Counter")); // deterministic
    const down = operatorIds((env) => base(env, { downstream: true }));
    expect(down.get("Src")).toBe(plain.get("Src"));
    expect(down.get("Counter")).toBe(plain.get("Counter"));
    const up = operatorIds((env) => base(env, { upstream: true }));
    expect(up.get("Src")).toBe(plain.get("Src"));
    expect(up.get("Counter")).not.toBe(plain.get("Counter"));
    // With a uid the id is the uid, whatever changes around it.
    expect(operatorIds((env) => base(env, { upstream: true, uid: true })).get("Counter")).toBe("counter");
  });

  test("a uid used twice is refused, naming both operators", () => {
    expect(() =>
      operatorIds((env) => {
        const s = env.fromSequence(1, 10);
        s.map((x) => x).uid("same").name("First").print();
        s.map((x) => x).uid("same").name("Second").print();
      }),
    ).toThrow(new JobGraphError(`uid "same" is set on two operators, "First" and "Second": uids must be unique within a job`));
  });
});

// ---- upgrades with real processes ----

interface JobOptions {
  out: string;
  /** Order of the two keyed stages. */
  order?: ("A" | "B")[];
  uidA?: string;
  /** Stage A registers its "count" as ListState (the savepoint has it as ValueState). */
  listStateA?: boolean;
  extraStateless?: boolean;
  extraStateful?: boolean;
  extraKeyBy?: boolean;
  splitChain?: boolean;
}

/**
 * Numbers 1..N (throttled to run a few seconds) through keyed stages A (key x % 37) and B (key x % 23), each
 * counting records per key in ValueState "count" and adding its count to the record; each record then becomes the
 * lines "a,<key>,<count>" and "b,<key>,<count>" in an exactly-once file sink. That set of lines does not depend on
 * how records interleave, so any run without loss, duplicate or misrouted state writes exactly the same lines.
 */
function jobSource(o: JobOptions): string {
  const order = o.order ?? ["A", "B"];
  return `
    import { FileSink, ListStateDescriptor, ValueStateDescriptor } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const counting = (field, asList) => ({
      open(ctx) { this.count = asList ? ctx.getListState(new ListStateDescriptor("count")) : ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
      processElement(r, ctx, out) {
        const c = this.count.value() + 1;
        this.count.update(c);
        out.collect({ ...r, [field]: c });
      },
    });
    export default (env) => {
      env.enableCheckpointing(150);
      let s = env.fromSequence(1, ${N}).uid("src")
        .map((x) => { if (x % 12 === 0) Atomics.wait(pause, 0, 0, 1); return { x }; }).name("Throttle");
      ${o.extraStateless ? `s = s.filter(() => true).name("Extra Filter");` : ""}
      ${o.extraKeyBy ? `s = s.keyBy((r) => r.x % 5).map((r) => r).name("Extra Keyed Map");` : ""}
      const stages = {
        A: (in_) => in_.keyBy((r) => r.x % ${MOD_A}).process(counting("a", ${o.listStateA === true})).uid(${JSON.stringify(o.uidA ?? "A")}).name("Stage A"),
        B: (in_) => in_.keyBy((r) => r.x % ${MOD_B}).process(counting("b", false)).uid("B").name("Stage B"),
      };
      for (const st of ${JSON.stringify(order)}) s = stages[st](s);
      ${
        o.extraStateful
          ? `s = s.keyBy((r) => r.x % 11).process({
              open(ctx) { this.seen = ctx.getState(new ValueStateDescriptor("seen", { default: 0 })); },
              processElement(r, ctx, out) { this.seen.update(this.seen.value() + 1); out.collect(r); },
            }).uid("extra").name("Extra Stateful");`
          : ""
      }
      const lines = s.flatMap((r) => [
        ...(r.a !== undefined ? ["a," + (r.x % ${MOD_A}) + "," + r.a] : []),
        ...(r.b !== undefined ? ["b," + (r.x % ${MOD_B}) + "," + r.b] : []),
      ]).name("Lines");
      ${o.splitChain ? `lines.disableChaining();` : ""}
      lines.sinkTo(FileSink.forRowFormat(${JSON.stringify(o.out)}).build()).name("Sink");
    };`;
}

/** Committed lines of a sink directory, optionally only those of one job attempt (part-<subtask>-<attempt>-<txn>). */
function linesOf(dir: string, attempt?: number): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => !f.startsWith(".") && (attempt === undefined || f.split("-")[2] === String(attempt)))
    .flatMap((f) => fs.readFileSync(path.join(dir, f), "utf8").split("\n"))
    .filter((l) => l.length > 0);
}

function perKey(mod: number): number[] {
  const n = new Array<number>(mod).fill(0);
  for (let x = 1; x <= N; x++) n[x % mod]!++;
  return n;
}

/** Per key, the counts seen (sorted), and the duplicates. */
function countsOf(lines: string[], tag: string, mod: number): { counts: number[][]; duplicates: string[] } {
  const counts = Array.from({ length: mod }, () => [] as number[]);
  const seen = new Set<string>();
  const duplicates: string[] = [];
  for (const l of lines) {
    if (!l.startsWith(tag + ",")) continue;
    if (seen.has(l)) duplicates.push(l);
    seen.add(l);
    const [, k, c] = l.split(",");
    counts[Number(k)]!.push(Number(c));
  }
  for (const c of counts) c.sort((x, y) => x - y);
  return { counts, duplicates };
}

const upTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** Exactly what an uninterrupted run writes for a stage: per key k, the counts 1..n_k once each. */
function expectUninterrupted(lines: string[], tag: string, mod: number): void {
  const { counts, duplicates } = countsOf(lines, tag, mod);
  expect({ tag, duplicates: duplicates.slice(0, 5) }).toEqual({ tag, duplicates: [] });
  expect(counts).toEqual(perKey(mod).map(upTo));
}

let dir: string;
let port: number;
let rpc: RpcConnection;
let jm: Child;
/** The base job's savepoint and its sink directory as the savepoint left it. */
let basePoint: string;
let baseOut: string;

beforeAll(async () => {
  dir = tempDir("tm-upgrade-");
  const common = [
    "-D", "heartbeat.interval=200ms",
    "-D", "heartbeat.timeout=4s",
    "-D", "restart-strategy.type=none",
    "-D", `state.checkpoints.dir=${path.join(dir, "checkpoints")}`,
  ];
  jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...common]);
  port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tms = [0, 1].map((i) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=tm-${i}`, ...common]));
  await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/, 30_000)));
  rpc = await connectClient("127.0.0.1", port);
}, 60_000);

afterAll(async () => {
  rpc?.close();
  await Child.stopAll();
  removeTempDirs();
});

/** Runs a job until it has completed a checkpoint, then stops it with a savepoint; returns the savepoint and a copy of its sink directory. */
async function savepointOf(name: string, source: (out: string) => string): Promise<{ savepoint: string; out: string }> {
  const out = path.join(dir, `${name}-out`);
  const job = writeJob(dir, `${name}.ts`, source(out));
  const jobId = await submitJob(rpc, await prepareJob(job, [], 2));
  await waitFor("the job running with a completed checkpoint", async () => {
    const s = await rpc.request("jobStatus", { jobId });
    if (s.state !== "RUNNING" && s.state !== "CREATED" && s.state !== "SCHEDULING") throw new Error(`job ${jobId} is ${s.state}: ${s.error?.message}`);
    return s.state === "RUNNING" && s.checkpoints.completed > 0;
  }, 60_000);
  const sp = await rpc.request("triggerSavepoint", { jobId, dir: path.join(dir, `${name}-savepoint`), cancel: true }, 60_000);
  expect((await waitForJob(rpc, jobId, () => {}, 50)).state).toBe("CANCELED");
  return { savepoint: path.dirname(sp.path), out };
}

/** `bun main.ts submit` of a changed job from a savepoint, writing into a copy of the sink directory the savepoint left. */
async function upgrade(name: string, opts: Omit<JobOptions, "out">, args: string[], from = basePoint, outAtSavepoint = baseOut, source = jobSource) {
  const out = path.join(dir, `${name}-out`);
  fs.cpSync(outAtSavepoint, out, { recursive: true });
  const job = writeJob(dir, `${name}.ts`, source({ ...opts, out }));
  const child = new Child([BUN, "main.ts", "submit", "-s", from, ...args, "-m", `127.0.0.1:${port}`, job]);
  const code = await child.exited(120_000);
  return { code, stdout: child.stdout, stderr: child.stderr, out };
}

async function info(savepoint: string): Promise<string> {
  const child = new Child([BUN, "main.ts", "savepoint", "info", savepoint]);
  const code = await child.exited(60_000);
  expect({ code, stderr: child.stderr }).toEqual({ code: 0, stderr: "" });
  return child.stdout;
}

/** The lines of one operator in `savepoint info` output: its heading and its states. */
function operatorBlock(text: string, id: string): string[] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.startsWith(`Operator ${id} (`));
  if (start < 0) throw new Error(`no operator ${id} in:\n${text}`);
  const end = lines.findIndex((l, i) => i > start && !l.startsWith("  "));
  return lines.slice(start, end < 0 ? undefined : end);
}

describe("upgrades from a savepoint (real processes)", () => {
  test("the base job's savepoint: partial output, and `savepoint info` lists its operators, uids, parallelism and states", async () => {
    ({ savepoint: basePoint, out: baseOut } = await savepointOf("base", (out) => jobSource({ out })));
    const partial = linesOf(baseOut);
    expect(partial.length).toBeGreaterThan(0);
    expect(partial.length).toBeLessThan(2 * N); // stopped part-way
    const text = await info(basePoint);
    expect(text).toContain(`Savepoint ${path.join(basePoint, "_metadata")} (format version 2)`);
    expect(text).toContain("3 operator(s) with state:");
    const src = operatorBlock(text, "src");
    expect(src[0]).toMatch(/^Operator src \(uid src\): "Sequence Source", parallelism 2, in chain "Sequence Source -> Throttle"$/);
    expect(src[1]).toMatch(/^ {2}__source-splits: operator list \(union\), [1-9]\d* bytes, 2 entries$/);
    for (const [id, mod] of [["A", MOD_A], ["B", MOD_B]] as const) {
      const block = operatorBlock(text, id);
      expect(block[0]).toBe(`Operator ${id} (uid ${id}): "Stage ${id}", parallelism 2, in chain "Stage ${id}${id === "B" ? " -> Lines -> Sink" : ""}"`);
      // Every key has been counted by the time of the first checkpoint: one entry per key.
      expect(block.slice(1)).toEqual([expect.stringMatching(new RegExp(`^  count: keyed value, [1-9]\\d* bytes, ${mod} entries$`))]);
    }
  }, 90_000);

  // Each changed job continues from the same savepoint (and a copy of the sink directory as it left it).
  const compatible: [string, Omit<JobOptions, "out">, string][] = [
    ["add a stateless operator (chained before the first keyBy)", { extraStateless: true }, "1"],
    ["add a stateful operator (a new keyed stage with its own uid)", { extraStateful: true }, "2"],
    ["split a chain with disableChaining", { splitChain: true }, "1"],
    ["add a keyBy stage (a new chain before stage A)", { extraKeyBy: true }, "1"],
    ["reorder the two keyed stages (uids kept) and change the parallelism", { order: ["B", "A"] }, "3"],
  ];
  for (const [what, opts, p] of compatible) {
    test(`${what}, at parallelism ${p}: the output of one uninterrupted run`, async () => {
      const r = await upgrade(what.split(" ").slice(0, 3).join("-"), opts, ["-p", p]);
      expect({ code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
      expect(r.stderr).not.toContain("Warning"); // every stateful operator has a uid
      const lines = linesOf(r.out);
      expectUninterrupted(lines, "a", MOD_A);
      expectUninterrupted(lines, "b", MOD_B);
      expect(lines.length).toBe(2 * N);
    }, 120_000);
  }

  test("a renamed uid: refused naming the operator id and its states; with -n accepted and that state dropped", async () => {
    const refused = await upgrade("rename-refused", { uidA: "A2" }, []);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`cannot restore ${path.join(basePoint, "_metadata")}: it holds state that no operator of the job claims: operator id "A" ("Stage A", uid "A") with state count (keyed value)`);
    expect(refused.stderr).toContain("--allowNonRestoredState (-n)");

    const r = await upgrade("rename-n", { uidA: "A2" }, ["-n"]);
    expect({ code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
    // Stage B kept its state: its lines are those of one uninterrupted run.
    expectUninterrupted(linesOf(r.out), "b", MOD_B);
    // Stage "A2" started from nothing: the new job (attempt 1) counts every key from 1 again, exactly once, and
    // with the old job's counts (attempt 0) they add up to every record.
    const before = countsOf(linesOf(r.out, 0), "a", MOD_A);
    const after = countsOf(linesOf(r.out, 1), "a", MOD_A);
    expect([before.duplicates, after.duplicates]).toEqual([[], []]);
    expect(before.counts).toEqual(before.counts.map((c) => upTo(c.length)));
    expect(after.counts).toEqual(after.counts.map((c) => upTo(c.length)));
    expect(after.counts.some((c) => c.length > 0)).toBe(true);
    expect(before.counts.map((c, k) => c.length + after.counts[k]!.length)).toEqual(perKey(MOD_A));
  }, 120_000);

  test("a removed stateful operator: refused; with -n accepted and the rest restored", async () => {
    const refused = await upgrade("remove-refused", { order: ["A"] }, []);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`no operator of the job claims: operator id "B" ("Stage B", uid "B") with state count (keyed value)`);

    const r = await upgrade("remove-n", { order: ["A"] }, ["-n", "-p", "3"]);
    expect({ code: r.code, stderr: r.code === 0 ? "" : r.stderr }).toEqual({ code: 0, stderr: "" });
    expectUninterrupted(linesOf(r.out), "a", MOD_A);
    // B's lines are only the old job's, and no more after it.
    expect(linesOf(r.out, 1).filter((l) => l.startsWith("b,"))).toEqual([]);
  }, 120_000);

  test("a state restored as another kind fails at restore naming the operator and the state", async () => {
    const r = await upgrade("kind-mismatch", { listStateA: true }, []);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`operator "Stage A" (id A): state "count" is a value state`);
    expect(r.stderr).toContain("cannot be used as a list state");
  }, 120_000);

  test("a checkpoint of metadata format version 1 is refused naming the format version", async () => {
    const old = path.join(dir, "format-1");
    fs.mkdirSync(old);
    const meta = JSON.parse(fs.readFileSync(path.join(basePoint, "_metadata"), "utf8"));
    fs.writeFileSync(path.join(old, "_metadata"), JSON.stringify({ ...meta, version: 1, operators: undefined }));
    const r = await upgrade("format-1", {}, [], old);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`checkpoint metadata ${path.join(old, "_metadata")} has format version 1, which stored state per operator chain (before operator ids)`);
    const i = new Child([BUN, "main.ts", "savepoint", "info", old]);
    expect(await i.exited(60_000)).toBe(1);
    expect(i.stderr).toContain("has format version 1");
  }, 120_000);

  // Keyed tumbling event-time windows (no uid: the operator id is the hash of its position), then a formatting map
  // and the sink. The new version changes only what follows the window.
  const WINDOW_N = 40_000;
  const windowJob = (o: { out: string; changed?: boolean }) => `
    import { FileSink, TumblingEventTimeWindows, WatermarkStrategy } from ${API};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(150);
      const counts = env.fromSequence(1, ${WINDOW_N}).uid("wsrc")
        .map((x) => { if (x % 10 === 0) Atomics.wait(pause, 0, 0, 1); return x; }).name("Throttle")
        .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => x))
        .keyBy((x) => x % 7)
        .window(TumblingEventTimeWindows.of(1000))
        .aggregate({ createAccumulator: () => 0, add: (_x, acc) => acc + 1, getResult: (acc) => acc, merge: (a, b) => a + b },
          (key, ctx, c, out) => out.collect([key, ctx.window.start, c[0]]));
      ${
        o.changed
          ? `counts.filter(() => true).name("New Filter").map((r) => r[0] + "|" + r[1] + "|" + r[2]).name("New Format").disableChaining()`
          : `counts.map((r) => r.join("|")).name("Format")`
      }.sinkTo(FileSink.forRowFormat(${JSON.stringify(o.out)}).build());
    };`;

  test("window contents and timers survive an upgrade that only changes downstream operators (at another parallelism)", async () => {
    const { savepoint, out } = await savepointOf("window", (o) => windowJob({ out: o }));
    const text = await info(savepoint);
    const windowLine = text.split("\n").find((l) => l.includes("Event-Time Tumbling Window"))!;
    const windowId = /^Operator ([0-9a-f]{32}) \(no uid\): "Event-Time Tumbling Window/.exec(windowLine)?.[1];
    expect(windowId).toMatch(HEX_ID);
    const block = operatorBlock(text, windowId!);
    expect(block.slice(1).sort()).toEqual([
      expect.stringMatching(/^ {2}__timers: operator list \(union\), [1-9]\d* bytes, [1-9]\d* entries$/),
      expect.stringMatching(/^ {2}__window: keyed map, [1-9]\d* bytes, [1-9]\d* entries$/),
    ]);
    const partial = linesOf(out).length;

    const r = await upgrade("window-changed", {}, ["-p", "3"], savepoint, out, (o) => windowJob({ out: o.out, changed: true }));
    if (r.code !== 0) throw new Error(`the upgraded window job exited with ${r.code}:\n${r.stderr}`);
    // The window has no uid: the submission warns about it (its id depends on its position).
    expect(r.stderr).toMatch(/Warning: a stateful operator has no uid: "Event-Time Tumbling Window[^"]*"/);
    // Every (key, window start, count) of an uninterrupted run, exactly once: a window whose contents were lost
    // would count short, one whose timer was lost would never be emitted.
    const expected = new Map<string, number>();
    for (let x = 1; x <= WINDOW_N; x++) {
      const k = `${x % 7}|${Math.floor(x / 1000) * 1000}`;
      expected.set(k, (expected.get(k) ?? 0) + 1);
    }
    const lines = linesOf(r.out);
    expect(lines.sort()).toEqual([...expected].map(([k, c]) => `${k}|${c}`).sort());
    expect(partial).toBeLessThan(lines.length); // the savepoint was taken part-way
  }, 120_000);
});
