// Timers and windows without strings on the hot path (issue 19 item 2): the window table (ids interned per window,
// freed with the window's last timer, reused), the timer service's numeric deduplication (short lists per key, a
// map by timestamp for keys with many timers) and its retains and releases, and the window operator run directly
// on real state backends against independent models: many sliding windows per key, merging sessions whose ids are
// reused, and a snapshot restored at another parallelism (timers fire once, in the subtask owning their key), on
// the heap and SQLite backends; the heap map state's cached per-key map (writes after that map left its table);
// and a windowed job on a cluster resumed from a savepoint at another parallelism.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig, type Config } from "../src/config/index.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { submitJob, waitForJob } from "../src/client/job-client.ts";
import { setLogLevel } from "../src/util/log.ts";
import { InternalTimerService, type Timer, type TimerNamespaces } from "../src/runtime/event-time.ts";
import { WindowOperator, WindowTable } from "../src/runtime/windows.ts";
import type { OperatorContext } from "../src/runtime/operator.ts";
import { createKeyedStateBackend, OperatorStateStore, type KeyedStateBackend } from "../src/state/index.ts";
import { HeapKeyedStateBackend } from "../src/state/heap-backend.ts";
import { MapStateDescriptor } from "../src/state/api.ts";
import type { KeyedSnapshotHandle } from "../src/state/snapshot-format.ts";
import { keyGroupOf } from "../src/state/key-groups.ts";
import { removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { clusterForTests } from "./cluster-helpers.ts";

setLogLevel("warn");
const API = JSON.stringify(path.resolve("src/api/index.ts"));

/** A deterministic pseudo-random sequence (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("window table", () => {
  test("one id per window while it is referenced; freed with its last reference and reused by another window", () => {
    const t = new WindowTable();
    const a = t.intern(0, 10);
    expect(t.intern(0, 10)).toBe(a);
    const b = t.intern(0, 20); // same start, another end (sessions)
    const c = t.intern(10, 20);
    expect(new Set([a.id, b.id, c.id]).size).toBe(3);
    expect([a.id, b.id, c.id].includes(0)).toBe(false); // 0 is "no namespace"
    expect([t.nameOf(a.id), t.nameOf(b.id), t.nameOf(c.id)]).toEqual(["0|10", "0|20", "10|20"]);
    for (const w of [a, b, c]) t.retain(w.id);
    t.retain(b.id);
    t.release(b.id);
    expect(t.window(b.id)).toBe(b); // one reference left
    t.release(b.id);
    expect(() => t.window(b.id)).toThrow(`window namespace id ${b.id} is not in use`);
    expect(t.intern(0, 10)).toBe(a); // a still found by its start after b (same start) left
    const d = t.intern(30, 40);
    expect(d.id).toBe(b.id); // reused
    expect(t.nameOf(d.id)).toBe("30|40");
    expect(t.intern(0, 20)).not.toBe(b); // b is gone: interning it again makes a new window
    expect(t.idOf("10|20")).toBe(c.id);
    expect(t.window(t.idOf("-5|7"))).toMatchObject({ start: -5, end: 7, ns: "-5|7" });
    for (const bad of ["", "12", "a|b", "1|2|3", "01|2"]) expect(() => t.idOf(bad)).toThrow(`a checkpointed window timer has namespace ${JSON.stringify(bad)}`);
  });
});

/** Namespaces that count references, to check the timer service's retains and releases. */
class CountingNamespaces implements TimerNamespaces {
  refs = new Map<number, number>();
  idOf(name: string): number {
    return Number(name.slice(1));
  }
  nameOf(id: number): string {
    return `n${id}`;
  }
  retain(id: number): void {
    this.refs.set(id, (this.refs.get(id) ?? 0) + 1);
  }
  release(id: number): void {
    const n = this.refs.get(id) ?? 0;
    if (n <= 0) throw new Error(`release of ${id} without a reference`);
    if (n === 1) this.refs.delete(id);
    else this.refs.set(id, n - 1);
  }
}

describe("timer service: numeric identity", () => {
  test("random registers and deletes over keys with few and many timers: each live (key, domain, ts, namespace) fires once, in order; references balance", async () => {
    const keyed = await createKeyedStateBackend({ kind: "heap", maxParallelism: 16, keyGroupRange: { start: 0, end: 15 }, restoreFrom: [] });
    const names = new CountingNamespaces();
    const fired: Timer[] = [];
    const ctx = { operatorState: new OperatorStateStore() } as unknown as OperatorContext;
    const timers = new InternalTimerService(keyed, ctx, "__t", (t) => fired.push({ ...t }), names);
    const r = rng(7);
    const model = new Map<string, boolean>();
    const keys: unknown[] = [0, -0, 1, "a", "\u0001b", ["c", 1], { d: 2 }, 3n, true, null];
    for (let i = 0; i < 20_000; i++) {
      const ki = Math.floor(r() * keys.length);
      const key = ki === 0 ? 7 : keys[ki]; // key 7 gets far more timers than SMALL (the map by timestamp)
      keyed.setCurrentKey(key);
      const ts = Math.floor(r() * (ki === 0 ? 3000 : 40));
      const ns = Math.floor(r() * 3);
      const id = `${JSON.stringify(keyed.getCurrentHeapKey(), (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}|${ts}|${ns}`;
      if (r() < 0.25) {
        timers.delete(0, ts, ns);
        model.set(id, false);
      } else {
        timers.register(0, ts, ns);
        model.set(id, true);
      }
    }
    const live = [...model].filter(([, v]) => v).length;
    expect(timers.size).toBe(live);
    expect([...names.refs.values()].reduce((a, b) => a + b, 0)).toBe(live);
    timers.advanceWatermark(1500);
    expect(fired.every((t) => t.ts <= 1500)).toBe(true);
    timers.advanceWatermark(Infinity);
    expect(fired.length).toBe(live);
    for (let i = 1; i < fired.length; i++) expect(fired[i]!.ts).toBeGreaterThanOrEqual(fired[i - 1]!.ts);
    const firedIds = fired.map((t) => `${JSON.stringify(t.hk, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}|${t.ts}|${t.ns}`);
    expect(new Set(firedIds).size).toBe(firedIds.length);
    expect(firedIds.sort()).toEqual([...model].filter(([, v]) => v).map(([k]) => k).sort());
    expect(names.refs.size).toBe(0);
    expect(timers.size).toBe(0);
    await keyed.close();
  });

  test("a timer registered in onTimer at or before the watermark fires in the same advance; its namespace stays referenced while onTimer runs", async () => {
    const keyed = await createKeyedStateBackend({ kind: "heap", maxParallelism: 16, keyGroupRange: { start: 0, end: 15 }, restoreFrom: [] });
    const names = new CountingNamespaces();
    const seen: string[] = [];
    const ctx = { operatorState: new OperatorStateStore() } as unknown as OperatorContext;
    const timers: InternalTimerService = new InternalTimerService(
      keyed,
      ctx,
      "__t",
      (t) => {
        seen.push(`${String(keyed.getCurrentKey())}@${t.ts}/${t.ns} refs ${names.refs.get(t.ns) ?? 0}`);
        if (t.ts < 30) timers.register(0, t.ts + 10, t.ns); // again, later, same namespace
        if (t.ts === 10 && t.ns === 1) timers.register(0, 10, 2); // at the same time, another namespace
      },
      names,
    );
    keyed.setCurrentKey("k");
    timers.register(0, 10, 1);
    timers.advanceWatermark(35);
    expect(seen).toEqual(["k@10/1 refs 1", "k@10/2 refs 1", "k@20/1 refs 1", "k@20/2 refs 1", "k@30/1 refs 1", "k@30/2 refs 1"]);
    expect(timers.size).toBe(0);
    expect(names.refs.size).toBe(0);
    await keyed.close();
  });
});

describe("timer service: processing time", () => {
  test("processing-time timers, most deleted before they are due: the live ones fire once by the clock, in order", async () => {
    const keyed = await createKeyedStateBackend({ kind: "heap", maxParallelism: 16, keyGroupRange: { start: 0, end: 15 }, restoreFrom: [] });
    const fired: Timer[] = [];
    const ctx = { operatorState: new OperatorStateStore() } as unknown as OperatorContext;
    const timers = new InternalTimerService(keyed, ctx, "__t", (t) => fired.push({ ...t }));
    const base = Date.now() + 100;
    const model = new Map<string, boolean>(); // (key, ts) -> live: the last register or delete wins
    for (let i = 0; i < 1000; i++) {
      keyed.setCurrentKey(i % 37);
      const ts = base + (i % 5) * 20;
      timers.register(1, ts);
      // Deleted: the earliest ones first, so the first due bucket holds only dead timers at its front.
      if (i % 10 !== 9) timers.delete(1, ts);
      model.set(`${i % 37}|${ts}`, i % 10 === 9);
    }
    // Registered again after a delete: one timer, not two.
    keyed.setCurrentKey(36);
    timers.register(1, base);
    timers.delete(1, base);
    timers.register(1, base);
    model.set(`36|${base}`, true);
    const expected = [...model].filter(([, v]) => v).map(([k]) => k).sort();
    expect(expected.length).toBeGreaterThan(10);
    expect(timers.size).toBe(expected.length);
    await waitFor("the live processing-time timers fired", () => fired.length >= expected.length, 10_000);
    timers.fireProcessingTime(Infinity);
    expect(fired.map((t) => `${t.key}|${t.ts}`).sort()).toEqual(expected);
    for (let i = 1; i < fired.length; i++) expect(fired[i]!.ts).toBeGreaterThanOrEqual(fired[i - 1]!.ts);
    expect(fired.every((t) => t.ts <= Date.now())).toBe(true);
    timers.dispose();
    await keyed.close();
  });
});

describe("heap map state: the cached per-key map", () => {
  test("writes after the key's map left its table (removed by another cell, cleared, expired by cleanup) are kept, and snapshotted", async () => {
    let now = 1_000_000;
    const b = new HeapKeyedStateBackend({ maxParallelism: 16, keyGroupRange: { start: 0, end: 15 }, clock: () => now });
    const d = new MapStateDescriptor<string, number>("m");
    const m1 = b.getMapState(d);
    const m2 = b.getMapState(d); // a second cell on the same state
    const t = b.getMapState(new MapStateDescriptor<string, number>("t", { ttl: { ttlMs: 100 } }));
    b.setCurrentKey("k");
    m1.put("a", 1);
    m2.remove("a"); // the key's map is now empty and leaves the table
    m1.put("b", 2); // no setCurrentKey in between: must not land in the detached map
    expect(m2.get("b")).toBe(2);
    expect(b.countEntries("m")).toBe(1); // in the table itself, not only in a cell's cached map
    m2.clear();
    m1.put("c", 3);
    expect([...m2.entries()]).toEqual([["c", 3]]);
    expect(b.countEntries("m")).toBe(1);
    t.put("x", 1);
    now += 1000;
    expect(b.cleanupExpired(100)).toBe(1); // the key's map of "t" is empty and removed by the cleanup
    t.put("y", 2);
    expect(t.get("y")).toBe(2);
    expect(b.countEntries("t")).toBe(1);
    const dir = tempDir("tm-heap-map-cache-");
    const handle = await b.snapshot(dir);
    const r = new HeapKeyedStateBackend({ maxParallelism: 16, keyGroupRange: { start: 0, end: 15 }, clock: () => now });
    await r.restore([handle]);
    r.setCurrentKey("k");
    expect([...r.getMapState(d).entries()]).toEqual([["c", 3]]);
    expect([...r.getMapState(new MapStateDescriptor<string, number>("t", { ttl: { ttlMs: 100 } })).entries()]).toEqual([["y", 2]]);
    await b.close();
    await r.close();
    removeTempDirs();
  });
});

type Out = { key: number; start: number; end: number; n: number };

/** A window operator run directly: process, watermarks, snapshots; it collects [key, start, end, count] per firing. */
async function windowOperator(
  assigner: Record<string, unknown>,
  opts: { backend?: "heap" | "sqlite"; range?: { start: number; end: number }; dir?: string; store?: OperatorStateStore; restore?: KeyedSnapshotHandle[] } = {},
) {
  const backend = opts.backend ?? "heap";
  const keyed: KeyedStateBackend = await createKeyedStateBackend({
    kind: backend,
    maxParallelism: 16,
    keyGroupRange: opts.range ?? { start: 0, end: 15 },
    dir: opts.dir,
    restoreFrom: opts.restore ?? [],
  });
  const store = opts.store ?? new OperatorStateStore();
  const time = { ts: null as number | null };
  const keyNode = { id: 1, kind: "keyBy", name: "key", inputs: [], fn: (r: [number, number]) => r[0] };
  const out: Out[] = [];
  const node = {
    id: 2,
    kind: "window",
    name: "Window",
    inputs: [1],
    keyNode: 1,
    allowedLateness: 0,
    lateTag: null,
    assigner: { kind: "windowAssigner", time: "event", ...assigner },
    fn: {
      type: "aggregate",
      aggregate: { createAccumulator: () => 0, add: (_r: unknown, n: number) => n + 1, getResult: (n: number) => n, merge: (a: number, b: number) => a + b },
      process: (key: number, c: { window: { start: number; end: number } }, counts: number[], o: { collect(v: unknown): void }) =>
        o.collect({ key, start: c.window.start, end: c.window.end, n: counts[0]! }),
    },
  };
  const ctx = { node: () => keyNode, keyed, time, operatorState: store } as unknown as OperatorContext;
  const op = new WindowOperator(node as never, ctx, (v) => out.push(v as Out), { watermark() {}, side() {}, idle() {} } as never);
  op.open?.();
  return {
    op,
    out,
    keyed,
    store,
    push(key: number, ts: number) {
      time.ts = ts;
      op.process([key, ts]);
    },
  };
}

const byWindow = (a: Out, b: Out) => a.key - b.key || a.start - b.start || a.end - b.end;

describe("window operator: ids, purge and reuse", () => {
  test("many sliding windows per key (100 each), out of order within the watermark's bound: every window once with its count, all ids freed at the end", async () => {
    const SIZE = 1000, SLIDE = 10, BOUND = 300;
    const w = await windowOperator({ type: "sliding", size: SIZE, slide: SLIDE, offset: 0 });
    const r = rng(11);
    const expected = new Map<string, Out>();
    let maxTs = 0;
    let maxLive = 0;
    for (let i = 0; i < 6000; i++) {
      const key = Math.floor(r() * 12);
      const ts = Math.max(0, i * 3 - Math.floor(r() * BOUND)); // never behind the watermark (maxTs - BOUND - 1)
      w.push(key, ts);
      for (let start = ts - (ts % SLIDE); start > ts - SIZE; start -= SLIDE) {
        const id = `${key}|${start}`;
        const e = expected.get(id) ?? { key, start, end: start + SIZE, n: 0 };
        e.n++;
        expected.set(id, e);
      }
      maxTs = Math.max(maxTs, ts);
      if (i % 50 === 49) w.op.processWatermark(maxTs - BOUND - 1);
      maxLive = Math.max(maxLive, w.op.windows.size);
    }
    expect(w.op.lateRecords).toBe(0);
    expect(maxLive).toBeGreaterThanOrEqual(SIZE / SLIDE); // windows alive at once: at least those of one record
    expect(w.out.length).toBeGreaterThan(0); // some fired before the end
    w.op.processWatermark(Infinity);
    expect(w.out.slice().sort(byWindow)).toEqual([...expected.values()].sort(byWindow));
    expect(w.op.windows.size).toBe(0);
    w.op.dispose?.();
    await w.keyed.close();
  });

  test("merging session windows over many keys: ids of closed sessions are reused, and no session gets another's count", async () => {
    // Even timestamps and an odd gap: a record never lands exactly on a session's end (windows that touch merge, as
    // in Flink, but one that fired already cannot), so the sessions are the model's whatever the watermark did.
    const GAP = 51, BOUND = 200;
    const w = await windowOperator({ type: "session", gap: GAP });
    const r = rng(5);
    const perKey = new Map<number, number[]>();
    let maxTs = 0;
    for (let i = 0; i < 8000; i++) {
      const key = Math.floor(r() * 40);
      const ts = 2 * Math.max(0, i - Math.floor((r() * BOUND) / 2)); // never behind the watermark (maxTs - BOUND - 1)
      w.push(key, ts);
      (perKey.get(key) ?? perKey.set(key, []).get(key)!).push(ts);
      maxTs = Math.max(maxTs, ts);
      if (i % 40 === 39) w.op.processWatermark(maxTs - BOUND - 1);
    }
    expect(w.op.lateRecords).toBe(0);
    w.op.processWatermark(Infinity);
    // Independently: each key's timestamps sorted, split where the next one is at least GAP after the last.
    const expected: Out[] = [];
    for (const [key, tss] of perKey) {
      tss.sort((a, b) => a - b);
      let s = { key, start: tss[0]!, end: tss[0]! + GAP, n: 0 };
      for (const ts of tss) {
        if (ts > s.end) {
          expected.push(s);
          s = { key, start: ts, end: ts + GAP, n: 0 };
        }
        s.end = Math.max(s.end, ts + GAP);
        s.n++;
      }
      expected.push(s);
    }
    expect(expected.length).toBeGreaterThan(500);
    expect(w.out.slice().sort(byWindow)).toEqual(expected.sort(byWindow));
    expect(w.op.windows.highestId).toBeLessThan(expected.length / 4); // ids were reused: far fewer ids than sessions
    expect(w.op.windows.size).toBe(0);
    w.op.dispose?.();
    await w.keyed.close();
  });

  for (const backend of ["heap", "sqlite"] as const) {
    test(`a snapshot restored at another parallelism (1 -> 2): each window fires once, in the subtask owning its key, with all its records (${backend})`, async () => {
      const dir = tempDir("tm-window-timers-");
      for (const d of ["a", "b0", "b1", "cp-keyed", "cp-op"]) fs.mkdirSync(path.join(dir, d));
      const SIZE = 400, SLIDE = 100;
      const all: [number, number][] = [];
      for (let i = 0; i < 4000; i++) all.push([i % 23, i]);
      const half = 2000;
      const w = await windowOperator({ type: "sliding", size: SIZE, slide: SLIDE, offset: 0 }, { backend, dir: path.join(dir, "a"), store: new OperatorStateStore(0, 1) });
      for (const [k, ts] of all.slice(0, half)) w.push(k, ts);
      w.op.processWatermark(half - 300);
      const before = w.out.slice();
      w.op.snapshotState();
      const keyedHandle = await w.keyed.snapshot(path.join(dir, "cp-keyed"));
      const opHandle = await w.store.snapshot(path.join(dir, "cp-op"));
      w.op.dispose?.();
      await w.keyed.close();
      const ranges = [{ start: 0, end: 6 }, { start: 7, end: 15 }];
      const after: Out[][] = [];
      for (let i = 0; i < 2; i++) {
        const store = new OperatorStateStore(i, 2);
        await store.restore([opHandle]);
        const s = await windowOperator({ type: "sliding", size: SIZE, slide: SLIDE, offset: 0 }, { backend, dir: path.join(dir, `b${i}`), range: ranges[i], store, restore: [keyedHandle] });
        const own = (k: number) => keyGroupOf(k, 16) >= ranges[i]!.start && keyGroupOf(k, 16) <= ranges[i]!.end;
        // Timers restored: those of the keys this subtask owns, each window of such a key with state (one timer each).
        expect(s.op.windows.size).toBeGreaterThan(0);
        for (const [k, ts] of all.slice(half)) if (own(k)) s.push(k, ts);
        s.op.processWatermark(Infinity);
        expect(s.out.every((o) => own(o.key))).toBe(true);
        expect(s.op.windows.size).toBe(0);
        after.push(s.out);
        s.op.dispose?.();
        await s.keyed.close();
      }
      const expected = new Map<string, Out>();
      for (const [key, ts] of all) {
        for (let start = ts - (ts % SLIDE); start > ts - SIZE; start -= SLIDE) {
          const e = expected.get(`${key}|${start}`) ?? { key, start, end: start + SIZE, n: 0 };
          e.n++;
          expected.set(`${key}|${start}`, e);
        }
      }
      const got = [...before, ...after[0]!, ...after[1]!].sort(byWindow);
      expect(before.length).toBeGreaterThan(0);
      expect(got).toEqual([...expected.values()].sort(byWindow));
      removeTempDirs();
    });
  }
});

describe("windowed job on a cluster", () => {
  const config: Config = { ...defaultConfig(), "heartbeat.interval": 200, "heartbeat.timeout": 2000, "log.level": "warn" };
  let dir = "";
  beforeAll(() => void (dir = tempDir("tm-window-timers-cluster-")));
  const t = clusterForTests(() => ({ taskManagers: 1, slotsPerTaskManager: 4, config: { ...config, "state.checkpoints.dir": path.join(dir, "checkpoints") } }));
  afterAll(removeTempDirs);
  const readLines = (d: string) =>
    (fs.existsSync(d) ? (fs.statSync(d).isDirectory() ? fs.readdirSync(d).map((f) => path.join(d, f)) : [d]) : []).flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0);

  test("sliding windows resumed from a savepoint at another parallelism (2 -> 3): every window once with its full count", async () => {
    const out1 = path.join(dir, "out-1");
    const out2 = path.join(dir, "out-2");
    const N = 60_000, SIZE = 2000, SLIDE = 500, KEYS = 17;
    const job = writeJob(dir, "sliding.ts", `
      import { SlidingEventTimeWindows, WatermarkStrategy } from ${API};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env, args) => {
        env.setStateBackend(args[1]);
        env.fromSequence(1, ${N}).setParallelism(1)
          .map((x) => { if (x % 50 === 0) Atomics.wait(pause, 0, 0, 2); return x; }).setParallelism(1)
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((x) => x)).setParallelism(1)
          .keyBy((x) => x % ${KEYS})
          .window(SlidingEventTimeWindows.of(${SIZE}, ${SLIDE}))
          .aggregate({ createAccumulator: () => 0, add: (_x, n) => n + 1, getResult: (n) => n },
            (key, ctx, counts, out) => out.collect(JSON.stringify([key, ctx.window.start, counts[0]])))
          .writeAsText(args[0]);
      };`);
    const jobId = await submitJob(t.client, await prepareJob(job, [out1, "sqlite"], 2));
    // A savepoint once some windows have fired (and many are open).
    await waitFor("some windows fired", async () => readLines(out1).length > 50, 30_000);
    const sp = await t.client.request("triggerSavepoint", { jobId, dir: path.join(dir, "savepoints"), cancel: true }, 30_000);
    expect((await waitForJob(t.client, jobId, () => {})).state).toBe("CANCELED");
    const first = readLines(out1);
    const resumed = await waitForJob(t.client, await submitJob(t.client, { ...(await prepareJob(job, [out2, "sqlite"], 3)), fromSavepoint: sp.path }), () => {});
    expect(resumed.error?.message).toBeUndefined();
    expect(resumed.state).toBe("FINISHED");
    expect(resumed.checkpoints.restoredFrom).toContain(sp.path);
    const expected = new Map<string, number>();
    for (let x = 1; x <= N; x++) {
      for (let start = x - (x % SLIDE); start > x - SIZE; start -= SLIDE) {
        const id = JSON.stringify([x % KEYS, start]);
        expected.set(id, (expected.get(id) ?? 0) + 1);
      }
    }
    const second = readLines(out2);
    const want = [...expected].map(([id, n]) => JSON.stringify([...JSON.parse(id), n])).sort();
    expect(first.length).toBeLessThan(expected.size);
    // Each run emits a window at most once, and together they emit every window with its full count and nothing else.
    // The text sink is not transactional: a window the first run fired between the savepoint's barrier and the
    // cancel is in its output and (restored from the savepoint, where it had not fired) fires again after the
    // restore, so the two runs may share lines; the resumed run alone must emit every window not in the first.
    expect(new Set(first).size).toBe(first.length);
    expect(new Set(second).size).toBe(second.length);
    expect([...new Set([...first, ...second])].sort()).toEqual(want);
    const shared = second.filter((l) => first.includes(l));
    expect(shared.length).toBeLessThan(first.length);
  }, 120_000);
});
