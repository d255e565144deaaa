// Exactly-once row files, as Flink's FileSink in row format: a two-phase commit tied to checkpoints.
//
// One instance per parallel subtask and job attempt. Records are appended to an in-progress file; at the
// barrier of checkpoint n the file is flushed, fsynced, closed and renamed to pending transaction n
// (preCommit); when checkpoint n completes, every pending transaction <= n of this subtask and attempt is
// renamed to its final, visible name (commit). Names inside the sink directory:
//
//   in progress  .part-<subtask>-<attempt>-<seq>.inprogress   (seq counts the files of this instance)
//   pending      .part-<subtask>-<attempt>-<txn>.pending
//   committed    part-<subtask>-<attempt>-<txn>                (readers read only names not starting with ".")
//
// End of input pre-commits what is in progress as the final transaction (txn = Number.MAX_SAFE_INTEGER); it is
// committed only once the JobManager has confirmed that this attempt is still the current one (commitFinal), so a
// TaskManager cut off from its JobManager never commits on its own. With checkpoints after tasks finish (FLIP-147)
// end of input only stops writing (endOfData): the job's final checkpoint pre-commits the rest and its notify, the
// JobManager's word, commits it.
// Fencing: every attempt writes a marker .attempt-<job>-<attempt> before its recovery. A commit refuses to run when
// a newer attempt's marker exists, and a final commit that raced with a newer attempt's recovery removes what it
// committed (that attempt replays it).
// Recovery (open) settles the files of older attempts that map to this subtask (old s % parallelism ===
// subtask): pending files that the restored checkpoint covers are committed (the notify may have been lost),
// everything newer and every in-progress file is deleted, since the job replays that output. Files of the
// current attempt are never touched there (other subtasks may already be writing).
import * as fs from "node:fs";
import * as path from "node:path";
import { formatRecord } from "./record-format.ts";

export interface FileSinkOptions {
  dir: string;
  subtask: number;
  parallelism: number;
  attempt: number;
  /** The job's id: attempt markers are per job, so a new job writing into an old job's directory is not fenced. */
  jobId?: string;
  /** One record to one line (without the "\n"); default formatRecord, the line format of the other sinks. */
  format?: (record: unknown) => string;
  /** A bucket's sink: the bucketed sink's base directory, whose attempt markers fence this sink's commits too. */
  fenceDir?: string;
}

/** The transaction id of the commit at end of input. */
export const FINAL_TXN = Number.MAX_SAFE_INTEGER;

/** Lines buffered before a write(2), as LineSink. */
const BATCH_LINES = 4096;

const INPROGRESS_RE = /^\.part-(\d+)-(\d+)-(\d+)\.inprogress$/;
const PENDING_RE = /^\.part-(\d+)-(\d+)-(\d+)\.pending$/;
const COMMITTED_RE = /^part-(\d+)-(\d+)-(\d+)$/;
const ATTEMPT_MARKER_RE = /^\.attempt-(.+)-(\d+)$/;

/** The marker a job's attempt writes into the sink directory before it recovers (hidden from readers by the dot). */
export function attemptMarkerName(jobId: string, attempt: number): string {
  return `.attempt-${jobId}-${attempt}`;
}

export function inProgressName(subtask: number, attempt: number, seq: number): string {
  return `.part-${subtask}-${attempt}-${seq}.inprogress`;
}
export function pendingName(subtask: number, attempt: number, txn: number): string {
  return `.part-${subtask}-${attempt}-${txn}.pending`;
}
export function committedName(subtask: number, attempt: number, txn: number): string {
  return `part-${subtask}-${attempt}-${txn}`;
}

/** A sink file name taken apart; null for names the sink did not write. */
export function parseSinkFileName(name: string): { kind: "inprogress" | "pending" | "committed"; subtask: number; attempt: number; n: number } | null {
  const m = INPROGRESS_RE.exec(name) ?? PENDING_RE.exec(name) ?? COMMITTED_RE.exec(name);
  if (!m) return null;
  const kind = name.endsWith(".inprogress") ? "inprogress" : name.endsWith(".pending") ? "pending" : "committed";
  const [subtask, attempt, n] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (!Number.isSafeInteger(subtask) || !Number.isSafeInteger(attempt) || !Number.isSafeInteger(n)) return null;
  return { kind, subtask, attempt, n };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Runs an fs operation; a failure is rethrown with a message naming the path. */
function io<T>(what: string, file: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new Error(`file sink: cannot ${what} ${file}: ${errorText(err)}`, { cause: err });
  }
}

function checkIndex(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new Error(`file sink: ${name} must be an integer >= ${min}, got ${v}`);
}

export class TwoPhaseCommitFileSink {
  private readonly dir: string;
  private readonly subtask: number;
  private readonly parallelism: number;
  private readonly attempt: number;
  private readonly jobId: string;
  private readonly format: (record: unknown) => string;
  private readonly fenceDir: string | null;

  private lines: string[] = [];
  /** The open in-progress file (null: nothing written since the last barrier). */
  private fd: number | null = null;
  private inProgressPath = "";
  private seq = 0;
  /** Pending transactions of this instance, not yet committed, ascending. */
  private pending: number[] = [];
  private state: "running" | "ended" | "closed" = "running";

  constructor(opts: FileSinkOptions) {
    checkIndex("subtask", opts.subtask, 0);
    checkIndex("parallelism", opts.parallelism, 1);
    checkIndex("attempt", opts.attempt, 0);
    if (opts.subtask >= opts.parallelism) throw new Error(`file sink: subtask ${opts.subtask} out of range for parallelism ${opts.parallelism}`);
    if (typeof opts.dir !== "string" || opts.dir === "") throw new Error("file sink: expected a directory path");
    this.dir = opts.dir;
    this.subtask = opts.subtask;
    this.parallelism = opts.parallelism;
    this.attempt = opts.attempt;
    this.jobId = opts.jobId ?? "job";
    if (!/^[\w.]+$/.test(this.jobId)) throw new Error(`file sink: job id ${JSON.stringify(this.jobId)} must be letters, digits, '_' or '.'`);
    this.format = opts.format ?? formatRecord;
    this.fenceDir = opts.fenceDir ?? null;
  }

  /**
   * Recovery, before the first record. restoredCheckpointId: the checkpoint the job was restored from, 0 if none.
   * Settles the files of older attempts whose old subtask s has s % parallelism === subtask: pending with
   * txn <= restoredCheckpointId are committed; pending or committed with a larger txn, and every in-progress
   * file, are deleted. Files of the current (or a later) attempt are left alone. Creates the directory if missing.
   */
  open(restoredCheckpointId: number): void {
    if (!Number.isSafeInteger(restoredCheckpointId) || restoredCheckpointId < 0) {
      throw new Error(`file sink: restored checkpoint id must be an integer >= 0, got ${restoredCheckpointId}`);
    }
    const dir = this.dir;
    io("create directory", dir, () => fs.mkdirSync(dir, { recursive: true }));
    const st = io("stat", dir, () => fs.statSync(dir));
    if (!st.isDirectory()) throw new Error(`file sink: cannot use ${dir}: not a directory`);
    io("write to directory", dir, () => fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK));
    // First the marker: from now on an older attempt of this job (a zombie on a cut-off TaskManager) commits nothing.
    const marker = path.join(dir, attemptMarkerName(this.jobId, this.attempt));
    io("write attempt marker", marker, () => fs.closeSync(fs.openSync(marker, "a")));
    this.syncDir();
    const names = io("list directory", dir, () => fs.readdirSync(dir));
    let changed = false;
    for (const name of names) {
      // Older attempts' markers of this job: ours fences them now; only the newest marker stays.
      const m = ATTEMPT_MARKER_RE.exec(name);
      if (m && m[1] === this.jobId && Number(m[2]) < this.attempt) {
        io("delete", path.join(dir, name), () => fs.rmSync(path.join(dir, name), { force: true }));
        continue;
      }
      const f = parseSinkFileName(name);
      if (!f || f.attempt >= this.attempt || f.subtask % this.parallelism !== this.subtask) continue;
      const file = path.join(dir, name);
      if (f.kind === "pending" && f.n <= restoredCheckpointId) {
        const target = path.join(dir, committedName(f.subtask, f.attempt, f.n));
        io("commit", file, () => fs.renameSync(file, target));
        changed = true;
      } else if (f.kind === "inprogress" || f.n > restoredCheckpointId) {
        io("delete", file, () => fs.rmSync(file, { force: true }));
        changed = true;
      }
    }
    if (changed) this.syncDir();
  }

  /** Buffers one record; the lines go to the in-progress file in batches. */
  write(record: unknown): void {
    if (this.state !== "running") throw new Error(`file sink ${this.dir}: write after ${this.state === "ended" ? "end of input" : "close"}`);
    if (this.fd === null) this.openInProgress();
    this.lines.push(this.format(record));
    if (this.lines.length >= BATCH_LINES) this.flushLines();
  }

  /**
   * Synchronous part of checkpoint n: flush, fsync and close the in-progress file and rename it to pending
   * transaction n. No file if nothing was written since the last barrier.
   */
  preCommit(checkpointId: number): void {
    if (!Number.isSafeInteger(checkpointId) || checkpointId < 0) throw new Error(`file sink: bad checkpoint id ${checkpointId}`);
    if (this.state === "closed") throw new Error(`file sink ${this.dir}: checkpoint ${checkpointId} after close`);
    if (this.fd === null) return;
    if (this.pending.includes(checkpointId)) throw new Error(`file sink ${this.dir}: transaction ${checkpointId} is already pending`);
    this.flushLines();
    const fd = this.fd;
    const file = this.inProgressPath;
    this.fd = null;
    try {
      io("sync", file, () => fs.fsyncSync(fd));
    } finally {
      io("close", file, () => fs.closeSync(fd));
    }
    const target = path.join(this.dir, pendingName(this.subtask, this.attempt, checkpointId));
    io("rename", file, () => fs.renameSync(file, target));
    this.syncDir();
    this.pending.push(checkpointId);
    this.pending.sort((a, b) => a - b);
  }

  /**
   * Checkpoint n completed: commits every pending transaction <= n of this subtask and attempt. Idempotent.
   * Refuses (throws) when a newer attempt of the job has started: its recovery settles these pending files.
   */
  commit(checkpointId: number): void {
    let count = 0;
    while (count < this.pending.length && this.pending[count]! <= checkpointId) count++;
    if (count === 0) return;
    const newer = this.newerAttempt();
    if (newer !== null) throw new Error(`file sink ${this.dir}: not committing for attempt ${this.attempt}: attempt ${newer} of the job has started (this attempt is superseded)`);
    for (const txn of this.pending.slice(0, count)) {
      const from = path.join(this.dir, pendingName(this.subtask, this.attempt, txn));
      const to = path.join(this.dir, committedName(this.subtask, this.attempt, txn));
      try {
        fs.renameSync(from, to);
      } catch (err) {
        // Already committed (a repeated call after a failure half-way): fine; anything else is an error.
        if (!((err as NodeJS.ErrnoException).code === "ENOENT" && fs.existsSync(to))) {
          throw new Error(`file sink: cannot commit ${from}: ${errorText(err)}`, { cause: err });
        }
      }
      this.pending.shift();
    }
    this.syncDir();
  }

  /**
   * End of input: pre-commits what is in progress as the final transaction. commitFinal() commits it once the
   * JobManager has confirmed this attempt (the task asks it after end of input).
   */
  endInput(): void {
    if (this.state !== "running") return;
    this.preCommit(FINAL_TXN);
    this.state = "ended";
  }

  /**
   * End of input with a final checkpoint to come (FLIP-147): no more records; what is in progress is pre-committed by
   * that checkpoint's barrier and committed by its notify, as every other transaction.
   */
  endOfData(): void {
    if (this.state !== "running") return;
    this.flushLines();
    this.state = "ended";
  }

  /** True when end of input left transactions to commit (the task then asks the JobManager before commitFinal). */
  get hasFinalCommit(): boolean {
    return this.state === "ended" && (this.pending.length > 0 || this.fd !== null);
  }

  /**
   * Commits every pending transaction, the final one included, after the JobManager's confirmation. A newer
   * attempt that started meanwhile wins: if its marker appears during the commit, what this attempt just made
   * visible after the newer attempt's recovery ran is removed again (the newer attempt writes it anew).
   */
  commitFinal(): void {
    if (this.state !== "ended") throw new Error(`file sink ${this.dir}: final commit before end of input`);
    // After endOfData whose final checkpoint never completed: what is still in progress is the final transaction.
    if (this.fd !== null) this.preCommit(FINAL_TXN);
    this.commit(FINAL_TXN);
    this.withdrawFinalIfSuperseded();
  }

  /**
   * After the final commit: when a newer attempt's marker has appeared, its recovery may have run before the
   * rename and missed the file, so the final transaction is removed again and this throws. Regular transactions
   * stay: the newer attempt's recovery commits those up to its restored checkpoint too, and the final one is the
   * only one certainly newer than any checkpoint.
   */
  withdrawFinalIfSuperseded(): void {
    const newer = this.newerAttempt();
    if (newer === null) return;
    fs.rmSync(path.join(this.dir, committedName(this.subtask, this.attempt, FINAL_TXN)), { force: true });
    this.syncDir();
    throw new Error(`file sink ${this.dir}: attempt ${newer} of the job started during the final commit of attempt ${this.attempt}; its output was withdrawn`);
  }

  /** The highest attempt of this job above ours that has written its marker, or null. */
  private newerAttempt(): number | null {
    let newest: number | null = null;
    for (const dir of this.fenceDir === null ? [this.dir] : [this.dir, this.fenceDir]) {
      for (const name of io("list directory", dir, () => fs.readdirSync(dir))) {
        const m = ATTEMPT_MARKER_RE.exec(name);
        if (!m || m[1] !== this.jobId) continue;
        const a = Number(m[2]);
        if (a > this.attempt && (newest === null || a > newest)) newest = a;
      }
    }
    return newest;
  }

  /** Task canceled or failed: closes the file descriptor and drops buffered lines; files stay (recovery cleans up). */
  close(): void {
    this.state = "closed";
    this.lines = [];
    const fd = this.fd;
    this.fd = null;
    if (fd !== null) {
      try {
        fs.closeSync(fd);
      } catch {
        // Closing on the failure path: nothing to do about it.
      }
    }
  }

  private openInProgress(): void {
    const file = path.join(this.dir, inProgressName(this.subtask, this.attempt, this.seq++));
    this.fd = io("open", file, () => fs.openSync(file, "w"));
    this.inProgressPath = file;
  }

  private flushLines(): void {
    if (this.lines.length === 0 || this.fd === null) return;
    const buf = Buffer.from(this.lines.join("\n") + "\n", "utf8");
    this.lines = [];
    const fd = this.fd;
    io("write", this.inProgressPath, () => {
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
    });
  }

  /** Makes renames in the directory durable (best effort where directories cannot be fsynced). */
  private syncDir(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.dir, "r");
    } catch {
      return;
    }
    try {
      fs.fsyncSync(fd);
    } catch {
      // EINVAL/EISDIR/EPERM: the platform does not sync directories.
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Directory levels a bucketed sink looks into for existing buckets at recovery. */
const MAX_BUCKET_DEPTH = 16;

/**
 * A file sink whose records go into buckets (Flink's BucketAssigner): subdirectories of the sink directory named by a
 * function of the record, e.g. "dt=2023-11-14/hm=22:13". Each bucket is a TwoPhaseCommitFileSink of its own; they
 * pre-commit and commit together, so a checkpoint covers every bucket. The base directory gets this attempt's marker
 * first, and every bucket's commit also checks it, so a zombie attempt cannot commit into a bucket it creates after a
 * newer attempt started. Recovery opens every existing bucket (a directory holding sink files or markers) to settle
 * older attempts' files there.
 */
export class BucketedFileSink {
  private readonly base: TwoPhaseCommitFileSink;
  private readonly buckets = new Map<string, TwoPhaseCommitFileSink>();
  private restoredCheckpointId = 0;

  constructor(
    private readonly opts: FileSinkOptions,
    private readonly assigner: (record: unknown) => string,
  ) {
    this.base = new TwoPhaseCommitFileSink(opts);
  }

  open(restoredCheckpointId: number): void {
    this.base.open(restoredCheckpointId);
    this.restoredCheckpointId = restoredCheckpointId;
    for (const id of existingBuckets(this.opts.dir)) this.bucket(id);
  }

  write(record: unknown): void {
    let id: unknown;
    try {
      id = this.assigner(record);
    } catch (err) {
      throw new Error(`file sink ${this.opts.dir}: the bucket assigner threw on ${formatRecord(record).slice(0, 200)}: ${errorText(err)}`, { cause: err });
    }
    const bucket = this.buckets.get(id as string) ?? this.bucket(checkBucketId(id, this.opts.dir));
    bucket.write(record);
  }

  private bucket(id: string): TwoPhaseCommitFileSink {
    const s = new TwoPhaseCommitFileSink({ ...this.opts, dir: path.join(this.opts.dir, id), fenceDir: this.opts.dir });
    s.open(this.restoredCheckpointId);
    this.buckets.set(id, s);
    return s;
  }

  preCommit(checkpointId: number): void {
    for (const s of this.buckets.values()) s.preCommit(checkpointId);
  }

  commit(checkpointId: number): void {
    for (const s of this.buckets.values()) s.commit(checkpointId);
  }

  endInput(): void {
    for (const s of this.buckets.values()) s.endInput();
  }

  endOfData(): void {
    for (const s of this.buckets.values()) s.endOfData();
  }

  get hasFinalCommit(): boolean {
    return [...this.buckets.values()].some((s) => s.hasFinalCommit);
  }

  commitFinal(): void {
    for (const s of this.buckets.values()) if (s.hasFinalCommit) s.commitFinal();
  }

  close(): void {
    for (const s of this.buckets.values()) s.close();
    this.base.close();
  }
}

/** A bucket id is a relative path of visible names: no empty, hidden (".", "..", the sink's own files) or odd segments. */
export function checkBucketId(id: unknown, dir: string): string {
  const bad = (why: string) => new Error(`file sink ${dir}: bucket id ${JSON.stringify(id)} ${why}`);
  if (typeof id !== "string") throw bad("is not a string");
  if (id.length === 0 || id.length > 1024) throw bad("must be 1 to 1024 characters");
  for (const segment of id.split("/")) {
    if (segment === "") throw bad("has an empty path segment");
    if (segment.startsWith(".")) throw bad("has a segment starting with '.' (hidden names belong to the sink)");
    if (/[\\\0]/.test(segment)) throw bad("contains a backslash or NUL");
  }
  return id;
}

/** Bucket ids under dir: directories (not hidden, not symlinks) that hold sink files or attempt markers. */
function existingBuckets(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string, depth: number) => {
    if (depth > MAX_BUCKET_DEPTH) return;
    const abs = path.join(dir, rel);
    const entries = io("list directory", abs, () => fs.readdirSync(abs, { withFileTypes: true }));
    if (rel !== "" && entries.some((e) => e.isFile() && (parseSinkFileName(e.name) !== null || ATTEMPT_MARKER_RE.test(e.name)))) out.push(rel);
    for (const e of entries) if (e.isDirectory() && !e.name.startsWith(".")) walk(rel === "" ? e.name : `${rel}/${e.name}`, depth + 1);
  };
  walk("", 0);
  return out;
}
