// Content hashes of job artifacts: the client names an artifact by it, the JobManager's blob store keys by it,
// and a TaskManager checks what it fetched against it.
import { createHash } from "node:crypto";

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}
