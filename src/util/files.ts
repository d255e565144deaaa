// Durable file writes shared by the checkpoint store, the HA services and the task Worker's bundle.
import * as fs from "node:fs";
import * as path from "node:path";

/** Writes `data` to `file` so that a reader sees either nothing or all of it (temp file, fsync, rename). */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeFileSync(fd, data); // all of it (one writeSync may write less)
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  try {
    const dfd = fs.openSync(path.dirname(file), "r");
    fs.fsyncSync(dfd);
    fs.closeSync(dfd);
  } catch {
    // Directory fsync is best effort (not every filesystem allows it).
  }
}
