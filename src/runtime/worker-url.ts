// Where the task Worker's entry lives: next to this file when running from source, and at its path inside
// the binary's embedded file system when compiled (it is an extra entrypoint of `bun build --compile`).
import { embeddedFile } from "../runtime-env/index.ts";

export function taskWorkerUrl(): string {
  return embeddedFile(import.meta.url, "src/runtime/task-worker.ts") ?? new URL("./task-worker.ts", import.meta.url).href;
}
