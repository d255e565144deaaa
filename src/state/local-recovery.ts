// Local recovery (`state.backend.local-recovery`, Flink's key): a task keeps a copy of its keyed snapshot files on
// its TaskManager, so that a task restarted there restores from local disk instead of checkpoint storage.
//
// One directory per job, vertex and subtask on the TaskManager (it outlives the task's attempts). After a checkpoint's
// files are written (and acknowledged), they are copied in; the copy of the checkpoint that completes last is the
// one kept (`latest.json`), the rest is deleted. Each finished copy is recorded at once (`pending-<n>.json`), so a
// task restored from checkpoint n finds its copy even when the previous attempt died before hearing that n
// completed. An incremental checkpoint's chain reuses the copies of the files it shares with the previous one.
// On restore the copy is used only when it is of the checkpoint being restored and
// every file has the size and checksum that the checkpoint's metadata records for it (a handle's `fileSizes` and
// `checksums`); while reading, every block's CRC32 is checked too. A missing, mismatched or corrupt copy falls back
// to checkpoint storage (the caller logs a WARN).
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import * as path from "node:path";
import { readSnapshotChecksum, type KeyedSnapshotHandle } from "./snapshot-format.ts";

interface LocalFile {
  /** The file in checkpoint storage, as the checkpoint's metadata names it. */
  remote: string;
  /** The file name of the copy in the local directory. */
  local: string;
  size: number;
  checksum: number;
}

interface Manifest {
  checkpointId: number;
  /** Per operator id: the files of its keyed handle, in order. */
  operators: Record<string, LocalFile[]>;
}

const LATEST = "latest.json";

/** The size and checksum the handle records for each of its files (undefined where it records none). */
function recorded(h: KeyedSnapshotHandle): { size: number; checksum: number | undefined }[] {
  const sizes = h.fileSizes ?? (h.files.length === 1 ? [h.sizeBytes] : []);
  return h.files.map((_, i) => ({ size: sizes[i] ?? -1, checksum: h.checksums?.[i] }));
}

export class LocalStateStore {
  /** Copies in progress or done, of checkpoints not yet completed. */
  private readonly pending = new Map<number, Promise<Manifest | null>>();
  private latest: Manifest | null;

  /** complete() calls run one after the other: each replaces the kept copy and deletes what it no longer needs. */
  private completions: Promise<void> = Promise.resolve();

  constructor(readonly dir: string, private readonly warn: (msg: string) => void) {
    this.latest = readManifest(path.join(dir, LATEST));
    // Copies a previous attempt left unfinished (its Worker is gone).
    try {
      for (const name of fs.readdirSync(dir)) if (name.endsWith(".tmp")) fs.rmSync(path.join(dir, name), { force: true });
    } catch {}
  }

  /**
   * Copies the keyed snapshot files of checkpoint `checkpointId` (per operator id) into the local directory, in the
   * background. Files already copied for an earlier checkpoint (an incremental chain's base) are reused.
   */
  keep(checkpointId: number, handles: Record<string, KeyedSnapshotHandle>): void {
    // The copies started before this one (never this one itself: it would wait for itself).
    const earlier = Promise.all([...this.pending.values()]);
    const copy = (async (): Promise<Manifest | null> => {
      await fsp.mkdir(this.dir, { recursive: true });
      const known = new Map<string, LocalFile>();
      for (const m of [this.latest, ...(await earlier)]) for (const fs of Object.values(m?.operators ?? {})) for (const f of fs) known.set(f.remote, f);
      const operators: Record<string, LocalFile[]> = {};
      for (const [op, h] of Object.entries(handles)) {
        const rec = recorded(h);
        const files: LocalFile[] = [];
        for (let i = 0; i < h.files.length; i++) {
          const remote = h.files[i]!;
          const { size, checksum } = rec[i]!;
          if (checksum === undefined) return null; // written before checksums were recorded: cannot be verified
          const have = known.get(remote);
          if (have !== undefined && have.size === size && have.checksum === checksum && fs.existsSync(path.join(this.dir, have.local))) {
            files.push(have);
            continue;
          }
          const local = path.basename(remote);
          const tmp = path.join(this.dir, `${local}.tmp`);
          await fsp.copyFile(remote, tmp, fs.constants.COPYFILE_FICLONE);
          await fsp.rename(tmp, path.join(this.dir, local));
          files.push({ remote, local, size, checksum });
        }
        operators[op] = files;
      }
      const m: Manifest = { checkpointId, operators };
      // Recorded at once: a restore from checkpoint n may come before this attempt hears that n completed.
      await writeAtomic(path.join(this.dir, pendingName(checkpointId)), JSON.stringify(m));
      return m;
    })().catch((err: Error) => {
      this.warn(`local recovery: cannot keep a local copy of checkpoint ${checkpointId}: ${err.message}`);
      return null;
    });
    this.pending.set(checkpointId, copy);
  }

  private async settledPending(): Promise<(Manifest | null)[]> {
    return Promise.all([...this.pending.values()]);
  }

  /** Checkpoint `checkpointId` completed: its copy (once written) becomes the one kept; older copies go. */
  complete(checkpointId: number): Promise<void> {
    const copy = this.pending.get(checkpointId);
    for (const id of [...this.pending.keys()]) if (id <= checkpointId) this.pending.delete(id);
    this.completions = this.completions.then(() => this.replaceKept(checkpointId, copy));
    return this.completions;
  }

  private async replaceKept(checkpointId: number, copy: Promise<Manifest | null> | undefined): Promise<void> {
    const m = copy === undefined ? null : await copy;
    if (m === null) return;
    if (this.latest !== null && this.latest.checkpointId > m.checkpointId) return;
    try {
      await writeAtomic(path.join(this.dir, LATEST), JSON.stringify(m));
      this.latest = m;
      // Keep what the kept copy and the copies still in progress reference; delete the rest.
      const keep = new Set<string>([LATEST]);
      for (const mm of [m, ...(await this.settledPending())]) {
        if (mm === null) continue;
        if (mm.checkpointId > m.checkpointId) keep.add(pendingName(mm.checkpointId));
        for (const fs of Object.values(mm.operators)) for (const f of fs) keep.add(f.local);
      }
      for (const name of await fsp.readdir(this.dir)) {
        if (!keep.has(name) && !name.endsWith(".tmp")) await fsp.rm(path.join(this.dir, name), { force: true });
      }
    } catch (err) {
      this.warn(`local recovery: cannot record the local copy of checkpoint ${checkpointId}: ${(err as Error).message}`);
    }
  }

  /**
   * The handles to restore operator `operatorId` from, with local files in place of remote ones when the local copy
   * is of checkpoint `checkpointId` and matches what the metadata records; null when the copy cannot be used
   * (`reason` says why; `expected` is false when there was simply none to use, e.g. after a rescale).
   */
  localHandles(
    checkpointId: number,
    operatorId: string,
    handles: readonly KeyedSnapshotHandle[],
    range: { start: number; end: number },
  ): { handles: KeyedSnapshotHandle[] } | { handles: null; reason: string; expected: boolean } {
    // The kept copy, or a finished copy of a checkpoint whose completion this TaskManager did not hear of (the
    // restore says it completed).
    const m = this.latest?.checkpointId === checkpointId ? this.latest : readManifest(path.join(this.dir, pendingName(checkpointId)));
    if (m === null || m.checkpointId !== checkpointId) {
      return { handles: null, reason: this.latest === null ? "no local copy" : `the local copy is of checkpoint ${this.latest.checkpointId}`, expected: false };
    }
    const mine = m.operators[operatorId];
    if (mine === undefined) return { handles: null, reason: "the local copy has no state of this operator", expected: false };
    const out: KeyedSnapshotHandle[] = [];
    for (const h of handles) {
      if (h.keyGroupRange.end < range.start || h.keyGroupRange.start > range.end) continue; // not read at all
      const same = h.files.length === mine.length && h.files.every((f, i) => f === mine[i]!.remote);
      if (!same) return { handles: null, reason: "the checkpoint's state of this subtask is not the one copied here (rescaled?)", expected: false };
      const rec = recorded(h);
      const files: string[] = [];
      for (let i = 0; i < mine.length; i++) {
        const f = mine[i]!;
        const local = path.join(this.dir, f.local);
        let size: number;
        try {
          size = fs.statSync(local).size;
        } catch {
          return { handles: null, reason: `the local copy ${local} is missing`, expected: true };
        }
        if (size !== rec[i]!.size || rec[i]!.checksum === undefined) {
          return { handles: null, reason: `the local copy ${local} has ${size} bytes, the checkpoint records ${rec[i]!.size}`, expected: true };
        }
        let sum: number;
        try {
          sum = readSnapshotChecksum(local);
        } catch (err) {
          return { handles: null, reason: `the local copy ${local} is unreadable: ${(err as Error).message}`, expected: true };
        }
        if (sum !== rec[i]!.checksum) return { handles: null, reason: `the local copy ${local} has checksum ${sum}, the checkpoint records ${rec[i]!.checksum}`, expected: true };
        files.push(local);
      }
      out.push({ ...h, files });
    }
    return { handles: out };
  }
}

function pendingName(checkpointId: number): string {
  return `pending-${checkpointId}.json`;
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await fsp.writeFile(`${file}.tmp`, text);
  await fsp.rename(`${file}.tmp`, file);
}

function readManifest(file: string): Manifest | null {
  try {
    const m = JSON.parse(fs.readFileSync(file, "utf8")) as Manifest;
    return typeof m?.checkpointId === "number" && typeof m.operators === "object" ? m : null;
  } catch {
    return null;
  }
}
