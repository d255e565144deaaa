// Checkpoint storage on the JobManager's side: one directory per checkpoint (<base>/<job>/chk-<id>), into which
// every task writes its own files; the JobManager writes the checkpoint's _metadata file last and atomically,
// so a directory without a valid _metadata is never restored. Keeps the last N completed checkpoints, and of older
// ones the files that retained (incremental) checkpoints still reference.
import * as fs from "node:fs";
import * as path from "node:path";
import type { ChannelStateHandle } from "../rpc/messages.ts";
import type { KeyedSnapshotHandle, OperatorSnapshotHandle, StateInfo } from "../state/snapshot-format.ts";
import { createLogger } from "../util/log.ts";
import { writeFileAtomic } from "../util/files.ts";

const log = createLogger("checkpoints");

export const METADATA_FILE = "_metadata";
export const METADATA_MAGIC = "tm-checkpoint";
/**
 * Version 2 stores state per operator id (`operators`); version 1 (before operator ids) stored it per operator
 * chain and is refused with a message saying so: its state cannot be told apart by operator.
 */
export const METADATA_VERSION = 2;

/** The job's chains at the time (for `savepoint info` and messages; restore goes by operator id). */
export interface VertexSnapshot {
  id: number;
  name: string;
  parallelism: number;
  /** Operator ids chained into it, head first. */
  operatorIds: string[];
  /** Task-level state per subtask (null: nothing beyond its operators' state): the in-flight records of an unaligned
   *  checkpoint, and whether the subtask had finished (FLIP-147). Restored by vertex, not by operator id. */
  subtasks?: (SubtaskTaskState | null)[];
}

export interface SubtaskTaskState {
  channel?: ChannelStateHandle | null;
  finished?: boolean;
}

/** What one operator (by its id) wrote in a checkpoint, over all its subtasks. */
export interface OperatorSnapshot {
  id: string;
  uid: string | null;
  name: string;
  parallelism: number;
  /** Per subtask, in subtask order (null: that subtask had nothing). */
  subtasks: ({ keyed: KeyedSnapshotHandle | null; operator: OperatorSnapshotHandle | null } | null)[];
  /** Its states (names, kinds), over all subtasks. */
  states: StateInfo[];
}

export interface CheckpointMetadata {
  magic: typeof METADATA_MAGIC;
  version: typeof METADATA_VERSION;
  jobId: string;
  jobName: string;
  checkpointId: number;
  timestamp: number;
  savepoint: boolean;
  /** The job attempt that wrote it: a job restored from it continues with a higher attempt (sink file names). */
  attempt: number;
  /** With HA: the leadership epoch of the JobManager that completed it. */
  epoch?: number;
  maxParallelism: number;
  vertices: VertexSnapshot[];
  /** Every operator with state, by operator id. */
  operators: OperatorSnapshot[];
}

export class CheckpointMetadataError extends Error {
  override name = "CheckpointMetadataError";
}

/** Reads and checks a metadata file (or the _metadata of a directory); the error names the path. */
export function readMetadata(file: string): { meta: CheckpointMetadata; path: string } {
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, METADATA_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CheckpointMetadataError(`cannot read checkpoint metadata ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let meta: any;
  try {
    meta = JSON.parse(text);
  } catch {
    throw new CheckpointMetadataError(`checkpoint metadata ${file} is truncated or corrupt (${text.length} bytes, not valid JSON)`);
  }
  if (meta?.magic !== METADATA_MAGIC) throw new CheckpointMetadataError(`${file} is not a checkpoint metadata file`);
  if (meta.version === 1) {
    throw new CheckpointMetadataError(
      `checkpoint metadata ${file} has format version 1, which stored state per operator chain (before operator ids); this build restores format version ${METADATA_VERSION} only (state per operator id). Restore it with the build that wrote it, or start the job without it`,
    );
  }
  if (meta.version !== METADATA_VERSION) {
    throw new CheckpointMetadataError(`checkpoint metadata ${file} has format version ${JSON.stringify(meta.version)}; this build reads format version ${METADATA_VERSION}`);
  }
  if (!Number.isInteger(meta.checkpointId) || !Array.isArray(meta.vertices) || !Array.isArray(meta.operators) || !Number.isInteger(meta.maxParallelism)) {
    throw new CheckpointMetadataError(`checkpoint metadata ${file} is incomplete (checkpointId, maxParallelism, vertices or operators missing)`);
  }
  return { meta: meta as CheckpointMetadata, path: file };
}

export { writeFileAtomic } from "../util/files.ts";

/** The checkpoints of one job under <base>/<jobId>. */
export class CheckpointStore {
  readonly jobDir: string;

  constructor(
    base: string,
    jobId: string,
    private readonly retained: number,
    /** HA: only checkpoints completed in this epoch are found by latest(); older ones come from the HA pointer
     *  (a deposed leader may have left metadata that was never pointed to). */
    private readonly epoch?: number,
  ) {
    this.jobDir = path.join(base, jobId);
  }

  /** Directory of checkpoint `id`, created now (a clear error if the storage is not writable). */
  prepare(id: number): string {
    const dir = this.dirOf(id);
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  dirOf(id: number): string {
    return path.join(this.jobDir, `chk-${id}`);
  }

  /** Writes the metadata last (atomically), then (unless told not to: HA prunes once the pointer is stored)
   *  drops checkpoints beyond the retained count. Returns the file. */
  complete(meta: CheckpointMetadata, dir: string, prune = true): string {
    const file = path.join(dir, METADATA_FILE);
    writeFileAtomic(file, JSON.stringify(meta));
    if (!meta.savepoint && prune) this.prune();
    return file;
  }

  /** Removes an aborted checkpoint's directory. */
  discard(id: number): void {
    fs.rm(this.dirOf(id), { recursive: true, force: true }, () => {});
  }

  /** Completed checkpoints, newest first, by id (the directory names). */
  private ids(): number[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.jobDir);
    } catch {
      return [];
    }
    return names
      .map((n) => /^chk-(\d+)$/.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => b - a);
  }

  /** The newest checkpoint whose metadata is valid; a bad one is logged with its path and skipped. */
  latest(): { meta: CheckpointMetadata; path: string } | null {
    for (const id of this.ids()) {
      const file = path.join(this.dirOf(id), METADATA_FILE);
      if (!fs.existsSync(file)) continue; // in progress or aborted: not a completed checkpoint
      try {
        const r = readMetadata(file);
        checkChannelState(r.meta);
        if (this.epoch !== undefined && r.meta.epoch !== this.epoch) continue;
        return r;
      } catch (err) {
        log.error("refusing a checkpoint; using the previous one", { path: file, error: (err as Error).message });
      }
    }
    return null;
  }

  /**
   * Keeps the newest `retained` completed checkpoints. An older one loses its _metadata first (so it is never
   * restored), then every file in its directory that no retained checkpoint references (incremental checkpoints
   * reference files of earlier ones: the references are counted over the retained checkpoints' metadata); its
   * directory goes once it is empty. Directories left over that way are swept again at every prune.
   */
  prune(): void {
    const completed = this.ids().filter((id) => fs.existsSync(path.join(this.dirOf(id), METADATA_FILE)));
    const retained = completed.slice(0, this.retained);
    if (retained.length === 0) return;
    const oldestRetained = retained[retained.length - 1]!;
    const refs = new Map<string, number>();
    for (const id of retained) {
      let meta: CheckpointMetadata;
      try {
        meta = readMetadata(path.join(this.dirOf(id), METADATA_FILE)).meta;
      } catch (err) {
        // Unreadable: we cannot know what it references, so delete nothing this time.
        log.error("cannot read a retained checkpoint's metadata; keeping older files", { id, error: (err as Error).message });
        return;
      }
      for (const f of referencedFiles(meta)) refs.set(f, (refs.get(f) ?? 0) + 1);
    }
    for (const id of this.ids()) {
      if (id >= oldestRetained) continue;
      const dir = this.dirOf(id);
      fs.rmSync(path.join(dir, METADATA_FILE), { force: true });
      removeUnreferenced(dir, refs);
    }
  }
}

/**
 * Channel state files (unaligned checkpoints) are checked before a checkpoint is chosen: one that is missing or
 * of another size than recorded makes the checkpoint unusable (the previous one is used), naming the file.
 */
export function checkChannelState(meta: CheckpointMetadata): void {
  for (const v of meta.vertices) {
    for (const s of v.subtasks ?? []) {
      const h = s?.channel;
      if (!h) continue;
      let size: number;
      try {
        size = fs.statSync(h.file).size;
      } catch {
        throw new Error(`channel state ${h.file} is missing`);
      }
      if (size !== h.sizeBytes) throw new Error(`channel state ${h.file} is truncated or damaged: ${size} bytes, the checkpoint recorded ${h.sizeBytes}`);
    }
  }
}

/** Every state file a checkpoint's metadata references (absolute paths). */
export function referencedFiles(meta: CheckpointMetadata): string[] {
  const out: string[] = [];
  for (const o of meta.operators) {
    for (const s of o.subtasks) {
      for (const f of s?.keyed?.files ?? []) out.push(path.resolve(f));
      for (const f of s?.operator?.files ?? []) out.push(path.resolve(f));
    }
  }
  // Channel state files of unaligned checkpoints (task level).
  for (const v of meta.vertices) for (const s of v.subtasks ?? []) if (s?.channel) out.push(path.resolve(s.channel.file));
  return out;
}

/** Removes the files under `dir` that `refs` does not hold, and the directories that end up empty. Returns
 *  whether `dir` itself is gone. */
function removeUnreferenced(dir: string, refs: Map<string, number>): boolean {
  let names: fs.Dirent[];
  try {
    names = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return true;
  }
  let kept = 0;
  for (const d of names) {
    const p = path.resolve(dir, d.name);
    if (d.isDirectory()) {
      if (!removeUnreferenced(p, refs)) kept++;
    } else if (refs.has(p)) kept++;
    else fs.rmSync(p, { force: true });
  }
  if (kept > 0) return false;
  fs.rmSync(dir, { recursive: true, force: true });
  return true;
}
