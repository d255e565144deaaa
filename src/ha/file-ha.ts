// File HA: the HA services over one directory, for one host. One JobManager at a time holds the lock file
// (<dir>/lock: its pid, process start time, host and epoch); a second one is refused while the owner lives, and a
// restarted one takes over a dead owner's lock with the next epoch (<dir>/epoch). Job records, checkpoint pointers
// and the checkpoint id counter are files under <dir>/jobs/<jobId>/, each written atomically after checking that
// the lock is still this process's (fencing).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { writeFileAtomic } from "../util/files.ts";
import { createLogger } from "../util/log.ts";
import { checkJobRecord, FencedError, type BrokenJob, type CheckpointPointer, type HaServices, type JobRecord, type LeaderAddress } from "./ha-services.ts";

const log = createLogger("ha");

/** The owner touches its lock file every second; a lock of another host (a pod rescheduled onto another node,
 *  the storage dir on a shared mount) is taken over only when it has not been touched for this long. */
export const FOREIGN_LOCK_STALE_MS = 10_000;

/** Another live JobManager holds the lock file. */
export class HaLockError extends Error {
  override name = "HaLockError";
}

interface LockContent {
  pid: number;
  /** The owner's start time (Linux /proc/<pid>/stat field 22), so that a reused pid is not taken for the owner. */
  procStart: string | null;
  host: string;
  epoch: number;
  startedAt: number;
}

function procStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces and parentheses) start after the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

function alive(lock: LockContent): boolean {
  if (!(lock.pid > 0)) return false;
  try {
    process.kill(lock.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  // The pid lives; it is the owner unless its start time says it is another process now.
  const start = procStart(lock.pid);
  return lock.procStart === null || start === null || start === lock.procStart;
}

export class FileHaServices implements HaServices {
  readonly type = "file" as const;
  epoch = 0;
  private readonly lockFile: string;
  private lost: ((reason: string) => void)[] = [];
  private watch: ReturnType<typeof setInterval> | null = null;
  private leading = false;

  constructor(readonly dir: string) {
    this.lockFile = path.join(dir, "lock");
  }

  async becomeLeader(): Promise<number> {
    fs.mkdirSync(path.join(this.dir, "jobs"), { recursive: true });
    let waiting: { since: number; mtime: number } | null = null;
    for (let tries = 0; ; tries++) {
      const current = this.readLock();
      if (current) {
        if (current.host !== os.hostname()) {
          // Its pid means nothing here: the owner is alive while it keeps touching the lock file. Wait for it to
          // go stale (a pod rescheduled onto another node); refuse if it is renewed meanwhile.
          const mtime = this.lockMtime();
          const age = Date.now() - mtime;
          if (age < FOREIGN_LOCK_STALE_MS) {
            const what = `the lock file ${this.lockFile} of a JobManager on host ${current.host} (pid ${current.pid}, epoch ${current.epoch})`;
            if (!waiting) {
              waiting = { since: Date.now(), mtime };
              log.warn(`waiting for ${what} to go stale (not renewed for ${FOREIGN_LOCK_STALE_MS} ms)`, { renewedMsAgo: Math.max(0, Math.round(age)) });
            } else if (Date.now() - waiting.since >= FOREIGN_LOCK_STALE_MS && mtime !== waiting.mtime) {
              throw new HaLockError(`${what} is still being renewed: another JobManager uses high-availability.storageDir`);
            }
            await new Promise((r) => setTimeout(r, 500));
            tries--;
            continue;
          }
        } else if (current.pid !== process.pid && alive(current)) {
          throw new HaLockError(`another JobManager (pid ${current.pid}, epoch ${current.epoch}) holds the lock file ${this.lockFile}; one JobManager at a time may use high-availability.storageDir`);
        }
        // A dead owner's lock: moved aside atomically (two starters racing: one rename wins).
        try {
          fs.renameSync(this.lockFile, `${this.lockFile}.stale`);
          log.info("taking over the lock file of a JobManager that is gone", { lock: this.lockFile, pid: current.pid, epoch: current.epoch });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        }
      }
      const epoch = Math.max(this.readEpoch(), current?.epoch ?? 0) + 1;
      const mine: LockContent = { pid: process.pid, procStart: procStart(process.pid), host: os.hostname(), epoch, startedAt: Date.now() };
      const tmp = `${this.lockFile}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(mine));
      try {
        fs.linkSync(tmp, this.lockFile); // fails when another starter created it first
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST" || tries >= 3) throw err;
        continue;
      } finally {
        fs.rmSync(tmp, { force: true });
      }
      writeFileAtomic(path.join(this.dir, "epoch"), String(epoch));
      this.epoch = epoch;
      this.leading = true;
      // Someone removing or replacing the lock file (an operator, a second JobManager after a manual removal)
      // ends this leadership: the next fenced write would fail anyway; the watch makes it stop at once.
      this.watch = setInterval(() => {
        if (!this.leading) return;
        if (!this.isLeader()) return this.loseLeadership(`the lock file ${this.lockFile} no longer names this process (epoch ${this.epoch})`);
        try {
          const now = new Date();
          fs.utimesSync(this.lockFile, now, now); // the sign of life a JobManager on another host goes by
        } catch (err) {
          log.warn("cannot touch the lock file", { lock: this.lockFile, error: (err as Error).message });
        }
      }, 1000);
      (this.watch as { unref?: () => void }).unref?.();
      log.info("leading with file HA", { dir: this.dir, epoch });
      return epoch;
    }
  }

  async publishAddress(_address: LeaderAddress): Promise<void> {}

  isLeader(): boolean {
    if (!this.leading) return false;
    const l = this.readLock();
    return l !== null && l.pid === process.pid && l.epoch === this.epoch;
  }

  async confirmLeadership(): Promise<void> {
    this.fence("confirm leadership");
  }

  onLeadershipLost(cb: (reason: string) => void): void {
    this.lost.push(cb);
  }

  async standbys(): Promise<LeaderAddress[]> {
    return [];
  }

  async putJob(record: JobRecord): Promise<void> {
    this.fence(`store job ${record.jobId}`);
    const dir = this.jobDir(record.jobId);
    fs.mkdirSync(dir, { recursive: true });
    writeFileAtomic(path.join(dir, "job.json"), JSON.stringify(record));
  }

  async removeJob(jobId: string): Promise<void> {
    this.fence(`remove job ${jobId}`);
    fs.rmSync(this.jobDir(jobId), { recursive: true, force: true });
  }

  async quarantineJob(jobId: string): Promise<string> {
    const to = path.join(this.dir, "jobs-broken", `${jobId}-${Date.now()}`);
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.renameSync(this.jobDir(jobId), to);
    return to;
  }

  async recoverJobs(): Promise<{ jobs: JobRecord[]; broken: BrokenJob[] }> {
    const jobs: JobRecord[] = [];
    const broken: BrokenJob[] = [];
    let names: string[] = [];
    try {
      names = fs.readdirSync(path.join(this.dir, "jobs"));
    } catch {
      return { jobs, broken };
    }
    for (const jobId of names.sort()) {
      const file = path.join(this.jobDir(jobId), "job.json");
      try {
        jobs.push(checkJobRecord(JSON.parse(fs.readFileSync(file, "utf8")), jobId));
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        broken.push({ jobId, path: file, error: e instanceof SyntaxError ? "truncated or corrupt (not valid JSON)" : e.code ?? e.message });
      }
    }
    return { jobs, broken };
  }

  async setLatestCheckpoint(jobId: string, checkpointId: number, metadataPath: string): Promise<void> {
    this.fence(`point job ${jobId} at checkpoint ${checkpointId}`);
    const current = await this.latestCheckpoint(jobId);
    if (current && current.epoch > this.epoch) throw new FencedError(`checkpoint ${checkpointId} of epoch ${this.epoch}: the pointer is of a newer epoch ${current.epoch}`);
    if (current && current.checkpointId >= checkpointId) return; // an older one completing late changes nothing
    const pointer: CheckpointPointer = { checkpointId, path: metadataPath, epoch: this.epoch };
    fs.mkdirSync(this.jobDir(jobId), { recursive: true });
    writeFileAtomic(path.join(this.jobDir(jobId), "checkpoint.json"), JSON.stringify(pointer));
  }

  async latestCheckpoint(jobId: string): Promise<CheckpointPointer | null> {
    try {
      const p = JSON.parse(fs.readFileSync(path.join(this.jobDir(jobId), "checkpoint.json"), "utf8"));
      return Number.isInteger(p?.checkpointId) && typeof p.path === "string" ? p : null;
    } catch {
      return null;
    }
  }

  async reserveCheckpointId(jobId: string, id: number): Promise<void> {
    this.fence(`reserve checkpoint id ${id} of job ${jobId}`);
    if ((await this.checkpointIdCounter(jobId)) >= id) return;
    fs.mkdirSync(this.jobDir(jobId), { recursive: true });
    writeFileAtomic(path.join(this.jobDir(jobId), "counter"), String(id));
  }

  async checkpointIdCounter(jobId: string): Promise<number> {
    try {
      const n = Number(fs.readFileSync(path.join(this.jobDir(jobId), "counter"), "utf8"));
      return Number.isInteger(n) && n > 0 ? n : 0;
    } catch {
      return 0;
    }
  }

  async close(): Promise<void> {
    if (this.watch) clearInterval(this.watch);
    this.watch = null;
    if (this.leading && this.isLeader()) fs.rmSync(this.lockFile, { force: true });
    this.leading = false;
  }

  private jobDir(jobId: string): string {
    if (!/^[0-9a-f]{32}$/.test(jobId)) throw new Error(`invalid job id ${JSON.stringify(jobId)}`);
    return path.join(this.dir, "jobs", jobId);
  }

  private fence(what: string): void {
    if (!this.isLeader()) {
      if (this.leading) this.loseLeadership(`the lock file ${this.lockFile} no longer names this process (epoch ${this.epoch})`);
      throw new FencedError(`cannot ${what}: this JobManager (epoch ${this.epoch}) no longer holds ${this.lockFile}`);
    }
  }

  private loseLeadership(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    if (this.watch) clearInterval(this.watch);
    log.error("lost leadership", { reason, epoch: this.epoch });
    for (const cb of this.lost.splice(0)) cb(reason);
  }

  private readLock(): LockContent | null {
    let text: string;
    try {
      text = fs.readFileSync(this.lockFile, "utf8");
    } catch {
      return null;
    }
    try {
      const l = JSON.parse(text);
      if (Number.isInteger(l?.pid) && Number.isInteger(l?.epoch)) return l as LockContent;
    } catch {
      // fall through: a torn lock (crash while writing a temp file is not possible: it is linked whole)
    }
    log.warn("the lock file is not valid; treating it as stale", { lock: this.lockFile });
    return { pid: -1, procStart: null, host: os.hostname(), epoch: 0, startedAt: 0 };
  }

  private lockMtime(): number {
    try {
      return fs.statSync(this.lockFile).mtimeMs;
    } catch {
      return 0;
    }
  }

  private readEpoch(): number {
    try {
      const n = Number(fs.readFileSync(path.join(this.dir, "epoch"), "utf8"));
      return Number.isInteger(n) ? n : 0;
    } catch {
      return 0;
    }
  }
}
