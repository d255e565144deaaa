// Checkpoint storage on the JobManager's side: one directory per checkpoint (<base>/<job>/chk-<id>), into which
// every task writes its own files; the JobManager writes the checkpoint's _metadata file last and atomically,
// so a directory without a valid _metadata is never restored. Keeps the last N completed checkpoints.
import * as fs from "node:fs";
import * as path from "node:path";
import type { TaskSnapshot } from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";
import { writeFileAtomic } from "../util/files.ts";

const log = createLogger("checkpoints");

export const METADATA_FILE = "_metadata";
export const METADATA_MAGIC = "tm-checkpoint";
export const METADATA_VERSION = 1;

export interface VertexSnapshot {
  id: number;
  name: string;
  parallelism: number;
  /** One entry per subtask, in subtask order. */
  subtasks: TaskSnapshot[];
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
  if (meta.version !== METADATA_VERSION) {
    throw new CheckpointMetadataError(`checkpoint metadata ${file} has version ${JSON.stringify(meta.version)}; this build reads version ${METADATA_VERSION}`);
  }
  if (!Number.isInteger(meta.checkpointId) || !Array.isArray(meta.vertices) || !Number.isInteger(meta.maxParallelism)) {
    throw new CheckpointMetadataError(`checkpoint metadata ${file} is incomplete (checkpointId, maxParallelism or vertices missing)`);
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
        if (this.epoch !== undefined && r.meta.epoch !== this.epoch) continue;
        return r;
      } catch (err) {
        log.error("refusing a checkpoint; using the previous one", { path: file, error: (err as Error).message });
      }
    }
    return null;
  }

  prune(): void {
    const completed = this.ids().filter((id) => fs.existsSync(path.join(this.dirOf(id), METADATA_FILE)));
    for (const id of completed.slice(this.retained)) {
      fs.rmSync(this.dirOf(id), { recursive: true, force: true });
    }
  }
}
