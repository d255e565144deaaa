import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BucketedFileSink, FINAL_TXN, TwoPhaseCommitFileSink } from "../src/runtime/file-sink.ts";
import { formatRecord } from "../src/runtime/record-format.ts";
import { rng } from "./helpers.ts";

const root = fs.mkdtempSync(join(tmpdir(), "tm-file-sink-test-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

let dirCount = 0;
function newDir(): string {
  return join(root, `sink-${++dirCount}`);
}

/** The sink's files (without the attempt markers, which the fencing tests look at themselves). */
function names(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => !n.startsWith(".attempt-")).sort();
}

/** End of input and the final commit the JobManager approved (the task does both in turn). */
function endAndCommit(s: TwoPhaseCommitFileSink): void {
  s.endInput();
  if (s.hasFinalCommit) s.commitFinal();
}

/** What a reader of the output sees: the lines of the files not starting with ".", by file name. */
function visibleFiles(dir: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const name of names(dir)) {
    if (name.startsWith(".")) continue;
    const text = fs.readFileSync(join(dir, name), "utf8");
    out.set(name, text === "" ? [] : text.slice(0, -1).split("\n"));
  }
  return out;
}
function visibleLines(dir: string): string[] {
  return [...visibleFiles(dir).values()].flat().sort();
}
function hidden(dir: string): string[] {
  return names(dir).filter((n) => n.startsWith("."));
}
function sink(dir: string, subtask: number, parallelism: number, attempt: number): TwoPhaseCommitFileSink {
  return new TwoPhaseCommitFileSink({ dir, subtask, parallelism, attempt });
}
const F = String(FINAL_TXN);

describe("two-phase commit", () => {
  test("pending transactions become visible only when their checkpoint completes", () => {
    const dir = newDir();
    const s = sink(dir, 0, 1, 0);
    s.open(0);
    expect(names(dir)).toEqual([]);
    s.write("a");
    s.write("b");
    expect(names(dir)).toEqual([".part-0-0-0.inprogress"]);
    expect(visibleLines(dir)).toEqual([]);
    s.preCommit(1);
    expect(names(dir)).toEqual([".part-0-0-1.pending"]);
    expect(fs.readFileSync(join(dir, ".part-0-0-1.pending"), "utf8")).toBe("a\nb\n");
    s.write("c");
    s.preCommit(2);
    expect(names(dir)).toEqual([".part-0-0-1.pending", ".part-0-0-2.pending"]);
    expect(visibleLines(dir)).toEqual([]);

    s.commit(1);
    expect(visibleFiles(dir)).toEqual(new Map([["part-0-0-1", ["a", "b"]]]));
    expect(hidden(dir)).toEqual([".part-0-0-2.pending"]);
    s.commit(1); // idempotent
    s.commit(0);
    expect(names(dir)).toEqual([".part-0-0-2.pending", "part-0-0-1"]);

    s.commit(2);
    expect(visibleFiles(dir)).toEqual(new Map([["part-0-0-1", ["a", "b"]], ["part-0-0-2", ["c"]]]));
    s.commit(2);
    expect(hidden(dir)).toEqual([]);

    // Nothing written since the last barrier: no file.
    s.preCommit(3);
    s.commit(3);
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2"]);

    s.write("d");
    s.preCommit(4);
    s.write("e");
    expect(visibleLines(dir)).toEqual(["a", "b", "c"]);
    endAndCommit(s); // pending 4 and what is in progress, committed once approved
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2", "part-0-0-4", `part-0-0-${F}`]);
    expect(visibleFiles(dir).get(`part-0-0-${F}`)).toEqual(["e"]);
    expect(visibleLines(dir)).toEqual(["a", "b", "c", "d", "e"]);
    s.close(); // after end of input: harmless
    expect(() => s.write("f")).toThrow(/after/);
    expect(names(dir).length).toBe(4);
  });

  test("a checkpoint that never completes is committed by a later one; end of input with nothing in progress", () => {
    const dir = newDir();
    const s = sink(dir, 1, 2, 0);
    s.open(0);
    s.write("x");
    s.preCommit(5); // checkpoint 5 is declined
    s.write("y");
    s.preCommit(6);
    s.commit(6);
    expect(names(dir)).toEqual(["part-1-0-5", "part-1-0-6"]);
    endAndCommit(s);
    expect(names(dir)).toEqual(["part-1-0-5", "part-1-0-6"]);
    expect(visibleLines(dir)).toEqual(["x", "y"]);
  });

  test("lines are formatRecord's by default, batches of more than 4096 lines arrive whole, a custom format", () => {
    const dir = newDir();
    const s = sink(dir, 0, 1, 0);
    s.open(0);
    const records: unknown[] = [];
    for (let i = 0; i < 10_000; i++) records.push(i % 3 === 0 ? [i, "w", { k: i }] : i % 3 === 1 ? { n: i } : `r${i}`);
    for (const r of records.slice(0, 5000)) s.write(r);
    // More than one batch went to the in-progress file already, nothing visible.
    expect(fs.statSync(join(dir, ".part-0-0-0.inprogress")).size).toBeGreaterThan(0);
    expect(visibleLines(dir)).toEqual([]);
    s.preCommit(1);
    for (const r of records.slice(5000)) s.write(r);
    s.preCommit(2);
    s.commit(2);
    const files = visibleFiles(dir);
    expect(files.get("part-0-0-1")).toEqual(records.slice(0, 5000).map(formatRecord));
    expect(files.get("part-0-0-2")).toEqual(records.slice(5000).map(formatRecord));
    expect(formatRecord([3, "w", { k: 3 }])).toBe('(3,w,{"k":3})');

    const dir2 = newDir();
    const c = new TwoPhaseCommitFileSink({ dir: dir2, subtask: 0, parallelism: 1, attempt: 0, format: (r) => `<${String(r)}>` });
    c.open(0);
    c.write(1);
    endAndCommit(c);
    expect(visibleLines(dir2)).toEqual(["<1>"]);
  });
});

describe("recovery", () => {
  /** Attempt 0: txns 1 and 2 committed, txn 3 pending, more in progress (some of it on disk); then a crash. */
  function crashedRun(dir: string): void {
    const s = sink(dir, 0, 1, 0);
    s.open(0);
    s.write("a");
    s.preCommit(1);
    s.commit(1);
    s.write("b");
    s.preCommit(2);
    s.commit(2);
    s.write("c");
    s.preCommit(3);
    for (let i = 0; i < 5000; i++) s.write(`lost${i}`);
    // The instance is dropped without close (a crash).
    expect(names(dir)).toEqual([".part-0-0-3.inprogress", ".part-0-0-3.pending", "part-0-0-1", "part-0-0-2"]);
    expect(fs.statSync(join(dir, ".part-0-0-3.inprogress")).size).toBeGreaterThan(0);
  }

  test("restored from checkpoint 3 (its notify lost): txn 3 is committed, the in-progress data deleted", () => {
    const dir = newDir();
    crashedRun(dir);
    const s = sink(dir, 0, 1, 1);
    s.open(3);
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2", "part-0-0-3"]);
    expect(visibleLines(dir)).toEqual(["a", "b", "c"]);
    s.open(3); // again: nothing changes
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2", "part-0-0-3"]);
    s.write("d");
    endAndCommit(s);
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2", "part-0-0-3", `part-0-1-${F}`]);
    expect(visibleLines(dir)).toEqual(["a", "b", "c", "d"]);
  });

  test("restored from checkpoint 2: txn 3 is deleted (replayed), committed txns stay", () => {
    const dir = newDir();
    crashedRun(dir);
    const s = sink(dir, 0, 1, 1);
    s.open(2);
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2"]);
    s.write("c");
    s.write("d");
    s.preCommit(3);
    s.commit(3);
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2", "part-0-1-3"]);
    expect(visibleLines(dir)).toEqual(["a", "b", "c", "d"]);
  });

  test("committed output newer than the restored checkpoint (also a final commit) is deleted", () => {
    const dir = newDir();
    const s = sink(dir, 0, 1, 0);
    s.open(0);
    s.write("a");
    s.preCommit(1);
    s.commit(1);
    s.write("b");
    s.preCommit(2);
    s.commit(2);
    s.write("c");
    endAndCommit(s);
    expect(names(dir)).toEqual(["part-0-0-1", "part-0-0-2", `part-0-0-${F}`]);
    // Another subtask failed; the job is restored from checkpoint 1.
    const r = sink(dir, 0, 1, 1);
    r.open(1);
    expect(names(dir)).toEqual(["part-0-0-1"]);
  });

  test("files of the current or a later attempt and foreign files are left alone", () => {
    const dir = newDir();
    fs.mkdirSync(dir);
    const keep = [".part-0-2-0.inprogress", ".part-0-2-7.pending", ".part-3-2-7.pending", "part-0-2-9", ".part-0-3-1.pending", "part-0-3-4", "notes.txt", ".part-x.pending"];
    const old = [".part-0-1-0.inprogress", ".part-5-1-8.pending", "part-1-0-9"];
    for (const n of [...keep, ...old]) fs.writeFileSync(join(dir, n), "z\n");
    // Parallelism 1: every old subtask maps to this one, so only the attempt protects the current files.
    const s = sink(dir, 0, 1, 2);
    s.open(4);
    expect(names(dir)).toEqual([...keep].sort());

    // Another subtask of the current attempt writes while this one recovers.
    const dir2 = newDir();
    const other = sink(dir2, 1, 2, 1);
    other.open(0);
    other.write("o1");
    other.preCommit(1);
    other.write("o2");
    const before = names(dir2);
    const me = sink(dir2, 0, 2, 1);
    me.open(0);
    expect(names(dir2)).toEqual(before);
    other.commit(1);
    endAndCommit(other);
    expect(visibleLines(dir2)).toEqual(["o1", "o2"]);
  });

  test("rescale 3 -> 2: every old file is settled exactly once; the output equals a run without failure", () => {
    const N = 300;
    const records = Array.from({ length: N }, (_, i) => [i, `w${i % 7}`]);
    const expected = records.map(formatRecord).sort();

    // Reference: parallelism 3, no failure.
    const ref = newDir();
    {
      const sinks = [0, 1, 2].map((s) => sink(ref, s, 3, 0));
      for (const k of sinks) k.open(0);
      records.forEach((r, i) => {
        if (i === 100 || i === 200) for (const k of sinks) k.preCommit(i / 100);
        if (i === 150) for (const k of sinks) k.commit(1);
        sinks[i % 3]!.write(r);
      });
      for (const k of sinks) endAndCommit(k);
    }
    expect(visibleLines(ref)).toEqual(expected);

    const dir = newDir();
    const old = [0, 1, 2].map((s) => sink(dir, s, 3, 0));
    for (const k of old) k.open(0);
    for (let i = 0; i < 100; i++) old[i % 3]!.write(records[i]);
    for (const k of old) k.preCommit(1);
    for (const k of old) k.commit(1);
    for (let i = 100; i < 200; i++) old[i % 3]!.write(records[i]);
    for (const k of old) k.preCommit(2); // checkpoint 2 completes (offset 200) ...
    old[0]!.commit(2); // ... but only subtask 0 hears of it
    for (let i = 200; i < 250; i++) old[i % 3]!.write(records[i]);
    old[0]!.preCommit(3); // checkpoint 3 never completes
    old[1]!.preCommit(3);
    for (let i = 250; i < 270; i++) old[i % 3]!.write(records[i]);
    old[0]!.close(); // subtask 0 is canceled, 1 and 2 just vanish
    expect(names(dir)).toEqual([
      ".part-0-0-3.inprogress", ".part-0-0-3.pending",
      ".part-1-0-2.pending", ".part-1-0-3.inprogress", ".part-1-0-3.pending",
      ".part-2-0-2.inprogress", ".part-2-0-2.pending",
      "part-0-0-1", "part-0-0-2", "part-1-0-1", "part-2-0-1",
    ]);

    // Attempt 1 at parallelism 2, restored from checkpoint 2: new 0 settles old 0 and 2, new 1 settles old 1.
    const now = [0, 1].map((s) => sink(dir, s, 2, 1));
    now[0]!.open(2);
    expect(names(dir)).toEqual([
      ".part-1-0-2.pending", ".part-1-0-3.inprogress", ".part-1-0-3.pending", // untouched: old 1 is new 1's
      "part-0-0-1", "part-0-0-2", "part-1-0-1", "part-2-0-1", "part-2-0-2",
    ]);
    now[1]!.open(2);
    const settled = ["part-0-0-1", "part-0-0-2", "part-1-0-1", "part-1-0-2", "part-2-0-1", "part-2-0-2"];
    expect(names(dir)).toEqual(settled);
    expect(visibleLines(dir)).toEqual(records.slice(0, 200).map(formatRecord).sort());
    now[0]!.open(2); // repeated recovery: nothing changes
    now[1]!.open(2);
    expect(names(dir)).toEqual(settled);

    // Replay from offset 200.
    for (let i = 200; i < N; i++) {
      if (i === 260) for (const k of now) k.preCommit(4);
      now[i % 2]!.write(records[i]);
    }
    for (const k of now) k.commit(4);
    for (const k of now) endAndCommit(k);
    expect(visibleLines(dir)).toEqual(visibleLines(ref));
    expect(hidden(dir)).toEqual([]);
  });
});

describe("attempt fencing (a zombie attempt on a cut-off TaskManager)", () => {
  test("end of input commits nothing by itself; the final commit waits for commitFinal", () => {
    const dir = newDir();
    const s = sink(dir, 0, 1, 0);
    s.open(0);
    s.write("a");
    s.endInput();
    expect(s.hasFinalCommit).toBe(true);
    expect(visibleLines(dir)).toEqual([]);
    expect(names(dir)).toEqual([`.part-0-0-${F}.pending`]);
    s.commitFinal();
    expect(visibleLines(dir)).toEqual(["a"]);
  });

  test("every attempt writes its marker before recovery; a superseded attempt refuses to commit", () => {
    const dir = newDir();
    const old = new TwoPhaseCommitFileSink({ dir, subtask: 0, parallelism: 1, attempt: 0, jobId: "j1" });
    old.open(0);
    old.write("a");
    old.preCommit(1);
    old.write("b");
    old.endInput();
    // The JobManager restarted the job as attempt 1 elsewhere, restored from checkpoint 1.
    const next = new TwoPhaseCommitFileSink({ dir, subtask: 0, parallelism: 1, attempt: 1, jobId: "j1" });
    next.open(1);
    expect(fs.readdirSync(dir)).toContain(".attempt-j1-1");
    // Attempt 1's recovery committed txn 1 and deleted the old final transaction (it replays it).
    expect(visibleLines(dir)).toEqual(["a"]);
    expect(() => old.commitFinal()).toThrow(/attempt 1 of the job has started/);
    expect(() => old.commit(1)).toThrow(/superseded/);
    next.write("b");
    endAndCommit(next);
    expect(visibleLines(dir)).toEqual(["a", "b"]);
  });

  test("a final commit that lands after a newer attempt's recovery is withdrawn", () => {
    const dir = newDir();
    const old = new TwoPhaseCommitFileSink({ dir, subtask: 0, parallelism: 1, attempt: 0, jobId: "j2" });
    old.open(0);
    old.write("x");
    old.endInput();
    // The newer attempt's marker appears right after the old attempt's rename (its recovery saw only the pending
    // file): the old attempt checks again after committing and withdraws its final file.
    old.commit(FINAL_TXN);
    expect(visibleLines(dir)).toEqual(["x"]);
    fs.writeFileSync(join(dir, ".attempt-j2-1"), "");
    expect(() => old.withdrawFinalIfSuperseded()).toThrow(/attempt 1 of the job started during the final commit of attempt 0/);
    expect(visibleLines(dir)).toEqual([]);
  });

  test("markers are per job: another job's newer attempt in the same directory does not fence", () => {
    const dir = newDir();
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(join(dir, ".attempt-otherjob-7"), "");
    const s = new TwoPhaseCommitFileSink({ dir, subtask: 0, parallelism: 1, attempt: 0, jobId: "j3" });
    s.open(0);
    s.write("y");
    endAndCommit(s);
    expect(visibleLines(dir)).toEqual(["y"]);
  });
});

describe("errors", () => {
  test("an unusable directory gives an error naming it", () => {
    const file = join(root, "a-regular-file");
    fs.writeFileSync(file, "x");
    const under = join(file, "sub");
    expect(() => sink(under, 0, 1, 0).open(0)).toThrow(under);
    expect(() => sink(file, 0, 1, 0).open(0)).toThrow(file);

    // The directory disappears under a running sink: the write names the file.
    const gone = newDir();
    const s = sink(gone, 0, 1, 0);
    s.open(0);
    fs.rmSync(gone, { recursive: true });
    expect(() => s.write("a")).toThrow(join(gone, ".part-0-0-0.inprogress"));

    // Read-only directory (root may write anywhere, so only as another user).
    if (process.getuid?.() !== 0) {
      const ro = newDir();
      fs.mkdirSync(ro, { mode: 0o555 });
      try {
        expect(() => sink(ro, 0, 1, 0).open(0)).toThrow(ro);
      } finally {
        fs.chmodSync(ro, 0o755);
      }
    }
  });

  test("bad options are refused", () => {
    expect(() => sink(newDir(), 2, 2, 0)).toThrow(/subtask/);
    expect(() => sink(newDir(), 0, 0, 0)).toThrow(/parallelism/);
    expect(() => sink(newDir(), 0, 1, -1)).toThrow(/attempt/);
    expect(() => sink(newDir(), 0, 1, 0).open(-1)).toThrow(/restored/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Randomized: a job with one source and P sink subtasks. Each step is one of: a subtask opens (recovers), the
// source emits a record to a random subtask or a barrier to all, a subtask takes the next event of its channel
// (record, barrier, end of input), a notify of a completed checkpoint reaches one subtask, or a crash. A crash
// drops every instance (some closed, some not); the next attempt, at a random parallelism, restores from the
// last completed checkpoint and the source replays the records after it.

type Ev = { t: "rec"; i: number } | { t: "barrier"; id: number } | { t: "end" };

function randomJob(seed: number, dir: string): { attempts: number; checkpoints: number; lateCrashes: number } {
  fs.mkdirSync(dir); // a reader may look before the first subtask has opened
  const rand = rng(seed);
  const pick = (n: number) => Math.floor(rand() * n);
  const N = pick(250);
  const input: unknown[] = Array.from({ length: N }, (_, i) => (rand() < 0.5 ? `rec-${i}` : [i, "v", { s: seed }]));
  const lines = input.map(formatRecord);
  const index = new Map(lines.map((l, i) => [l, i]));
  const crashP = [0, 0.003, 0.01, 0.03][pick(4)]!;
  const lateCrashP = [0.02, 0.05, 0.15][pick(3)]!; // once a subtask has ended
  const barrierP = [0.02, 0.1, 0.3][pick(3)]!;
  const maxCrashes = pick(12);
  const reuseIds = rand() < 0.5; // checkpoint ids after a restore: restored + 1 (else they keep counting)

  let attempt = 0;
  let crashes = 0;
  let lateCrashes = 0;
  let completed = { id: 0, offset: 0 };
  let nextId = 1;
  let checkpoints = 0;
  /** Records a reader may see now beyond those of completed checkpoints: what ended subtasks committed. */
  let endedRecords = new Set<number>();

  /** At every step: only known lines; nothing not covered by a completed checkpoint or an end of input; no
   *  duplicates once every subtask has recovered (before that an old attempt's output may still be there). */
  const cache = new Map<string, string[]>(); // a committed file never changes
  const checkVisible = (allOpened: boolean) => {
    const seen: string[] = [];
    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith(".")) continue;
      let fileLines = cache.get(name);
      if (!fileLines) {
        const text = fs.readFileSync(join(dir, name), "utf8");
        cache.set(name, (fileLines = text === "" ? [] : text.slice(0, -1).split("\n")));
      }
      seen.push(...fileLines);
    }
    seen.sort();
    for (let k = 0; k < seen.length; k++) {
      const i = index.get(seen[k]!);
      if (i === undefined) throw new Error(`seed ${seed}: unknown line ${seen[k]}`);
      if (i >= completed.offset && !endedRecords.has(i)) throw new Error(`seed ${seed}: ${seen[k]} visible before its commit`);
      if (allOpened && k > 0 && seen[k] === seen[k - 1]) throw new Error(`seed ${seed}: ${seen[k]} visible twice`);
    }
  };

  attempts: for (;;) {
    const P = 1 + pick(4);
    if (reuseIds) nextId = completed.id + 1;
    const sinks: (TwoPhaseCommitFileSink | null)[] = Array.from({ length: P }, () => null);
    const written: number[][] = sinks.map(() => []);
    const hasEnded: boolean[] = sinks.map(() => false);
    const queues: Ev[][] = sinks.map(() => []);
    const acks = new Map<number, { count: number; offset: number }>();
    const notifies: { s: number; id: number }[] = [];
    let opened = 0;
    let offset = completed.offset;
    let sourceEnded = false;
    let ended = 0;
    while (ended < P) {
      if (crashes < maxCrashes && rand() < (ended > 0 ? lateCrashP : crashP)) {
        crashes++;
        if (ended > 0) lateCrashes++;
        for (const k of sinks) if (k && rand() < 0.5) k.close(); // canceled; the others just vanish
        attempt++;
        continue attempts;
      }
      const r = rand();
      if (opened < P && r < 0.1) {
        const s = sinks.map((k, t) => (k ? -1 : t)).filter((t) => t >= 0)[pick(P - opened)]!;
        const k = new TwoPhaseCommitFileSink({ dir, subtask: s, parallelism: P, attempt });
        k.open(completed.id);
        sinks[s] = k;
        if (++opened === P) {
          // Every subtask has recovered: all the output of the restored checkpoint is there, nothing else of the
          // old attempts; what this attempt's ended subtasks committed may be there too.
          endedRecords = new Set(written.filter((_, t) => hasEnded[t]).flat());
          const seen = visibleLines(dir);
          const expected = lines.slice(0, completed.offset).concat([...endedRecords].map((i) => lines[i]!)).sort();
          expect(seen).toEqual(expected);
        }
      } else if (!sourceEnded && r < 0.55) {
        if (rand() < barrierP) {
          const id = nextId++;
          for (const q of queues) q.push({ t: "barrier", id });
          acks.set(id, { count: 0, offset });
        } else if (offset < N) {
          queues[pick(P)]!.push({ t: "rec", i: offset++ });
        } else {
          for (const q of queues) q.push({ t: "end" });
          sourceEnded = true;
        }
      } else if (notifies.length > 0 && r < 0.65) {
        const [n] = notifies.splice(pick(notifies.length), 1);
        sinks[n!.s]!.commit(n!.id);
      } else {
        const ready = queues.map((q, s) => (q.length > 0 && sinks[s] ? s : -1)).filter((s) => s >= 0);
        if (ready.length === 0) continue;
        const s = ready[pick(ready.length)]!;
        const k = sinks[s]!;
        const ev = queues[s]!.shift()!;
        if (ev.t === "rec") {
          k.write(input[ev.i]);
          written[s]!.push(ev.i);
        } else if (ev.t === "end") {
          endAndCommit(k);
          hasEnded[s] = true;
          for (const i of written[s]!) endedRecords.add(i);
          ended++;
        } else {
          k.preCommit(ev.id);
          const a = acks.get(ev.id)!;
          if (++a.count === P) {
            // All acknowledged: the checkpoint is complete; the notifies go out (and may be lost in a crash).
            completed = { id: ev.id, offset: a.offset };
            checkpoints++;
            for (let t = 0; t < P; t++) notifies.push({ s: t, id: ev.id });
          }
        }
      }
      checkVisible(opened === P);
    }
    break;
  }
  expect(visibleLines(dir)).toEqual([...lines].sort());
  expect(hidden(dir)).toEqual([]);
  return { attempts: attempt + 1, checkpoints, lateCrashes };
}

describe("randomized", () => {
  test("crashes at random steps, recovery and replay: the visible output is the input exactly once", () => {
    let attempts = 0;
    let checkpoints = 0;
    let lateCrashes = 0;
    for (let seed = 1; seed <= 120; seed++) {
      const dir = newDir();
      const r = randomJob(seed, dir);
      attempts += r.attempts;
      checkpoints += r.checkpoints;
      lateCrashes += r.lateCrashes;
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // The rounds did exercise failures (also after some subtasks had finished) and checkpoints.
    console.log(`randomized: 120 jobs, ${attempts} attempts, ${lateCrashes} crashes after an end of input, ${checkpoints} completed checkpoints`);
    expect(attempts).toBeGreaterThan(250);
    expect(lateCrashes).toBeGreaterThan(20);
    expect(checkpoints).toBeGreaterThan(300);
  }, 120_000);
});

test("two file sinks of one job in the same directory are refused when the job is built, naming the directory", async () => {
  const { StreamExecutionEnvironment, FileSink } = await import("../src/api/index.ts");
  const env = new StreamExecutionEnvironment();
  const s = env.fromSequence(1, 10);
  s.sinkTo(FileSink.forRowFormat("/tmp/shared-out").build());
  s.sinkTo(FileSink.forRowFormat("/tmp/other-out").build()); // another directory is fine
  expect(() => s.sinkTo(FileSink.forRowFormat("/tmp/shared-out").build())).toThrow(
    "sinkTo: another file sink of this job already writes to /tmp/shared-out; give each file sink a directory of its own",
  );
});

describe("buckets (withBucketAssigner)", () => {
  const bucketed = (dir: string, attempt: number, subtask = 0, parallelism = 1) =>
    new BucketedFileSink({ dir, subtask, parallelism, attempt, jobId: "j" }, (r) => `dt=${(r as [string, number])[0]}/hm=${(r as [string, number])[1] % 2}`);
  const bucketLines = (dir: string, bucket: string) => (fs.existsSync(join(dir, bucket)) ? visibleLines(join(dir, bucket)) : []);

  test("records go into their bucket's directory; every bucket commits with the checkpoint", () => {
    const dir = newDir();
    const s = bucketed(dir, 0);
    s.open(0);
    for (let i = 0; i < 10; i++) s.write(["a", i]);
    s.write(["b", 1]);
    s.preCommit(1);
    expect(bucketLines(dir, "dt=a/hm=0")).toEqual([]);
    s.commit(1);
    expect(bucketLines(dir, "dt=a/hm=0")).toEqual(["(a,0)", "(a,2)", "(a,4)", "(a,6)", "(a,8)"]);
    expect(bucketLines(dir, "dt=a/hm=1")).toEqual(["(a,1)", "(a,3)", "(a,5)", "(a,7)", "(a,9)"]);
    expect(bucketLines(dir, "dt=b/hm=1")).toEqual(["(b,1)"]);
    // End of input: the final transaction of each bucket waits for commitFinal.
    s.write(["c", 0]);
    s.endInput();
    expect(s.hasFinalCommit).toBe(true);
    expect(bucketLines(dir, "dt=c/hm=0")).toEqual([]);
    s.commitFinal();
    expect(bucketLines(dir, "dt=c/hm=0")).toEqual(["(c,0)"]);
  });

  test("recovery settles every existing bucket: pending files of the restored checkpoint committed, the rest deleted", () => {
    const dir = newDir();
    const a0 = bucketed(dir, 0);
    a0.open(0);
    a0.write(["a", 0]);
    a0.write(["b", 1]);
    a0.preCommit(1); // checkpoint 1 completes, its notify is lost
    a0.write(["a", 2]);
    a0.write(["d", 3]); // a bucket only written after checkpoint 1: its in-progress file goes
    a0.preCommit(2); // checkpoint 2 never completes
    a0.write(["a", 4]);
    // The TaskManager dies; attempt 1 restores checkpoint 1.
    const a1 = bucketed(dir, 1);
    a1.open(1);
    expect(bucketLines(dir, "dt=a/hm=0")).toEqual(["(a,0)"]);
    expect(bucketLines(dir, "dt=b/hm=1")).toEqual(["(b,1)"]);
    expect(bucketLines(dir, "dt=d/hm=1")).toEqual([]);
    expect(hidden(join(dir, "dt=a/hm=0"))).toEqual([]);
    expect(hidden(join(dir, "dt=d/hm=1"))).toEqual([]);
  });

  test("a zombie attempt cannot commit into a bucket it creates after a newer attempt started", () => {
    const dir = newDir();
    const zombie = bucketed(dir, 0);
    zombie.open(0);
    bucketed(dir, 1).open(0);
    zombie.write(["new", 0]);
    zombie.preCommit(1);
    expect(() => zombie.commit(1)).toThrow("attempt 1 of the job has started");
    expect(bucketLines(dir, "dt=new/hm=0")).toEqual([]);
  });

  test("bad bucket ids are refused naming the id", () => {
    const dir = newDir();
    for (const [id, why] of [["", "1 to 1024"], ["a//b", "empty path segment"], ["../x", "starting with '.'"], [".hidden", "starting with '.'"], [42, "not a string"]] as const) {
      const s = new BucketedFileSink({ dir, subtask: 0, parallelism: 1, attempt: 0 }, () => id as string);
      s.open(0);
      expect(() => s.write(1)).toThrow(why);
    }
    const throwing = new BucketedFileSink({ dir, subtask: 0, parallelism: 1, attempt: 0 }, () => {
      throw new Error("no bucket for you");
    });
    throwing.open(0);
    expect(() => throwing.write([7])).toThrow("the bucket assigner threw on (7): no bucket for you");
  });
});
