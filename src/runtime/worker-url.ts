// Where the task Worker's entry lives: next to this file when running from source, and at its path inside
// the binary's embedded file system when compiled (it is an extra entrypoint of `bun build --compile`).
export function taskWorkerUrl(): string {
  if (import.meta.url.includes("$bunfs")) return "/$bunfs/root/src/runtime/task-worker.ts";
  return new URL("./task-worker.ts", import.meta.url).href;
}
