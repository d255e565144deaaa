// Where the task Worker's entry lives: next to this file when running from source, and at its path inside
// the binary's embedded file system when compiled (it is an extra entrypoint of `bun build --compile`). From source
// under Bun, bundledTaskWorker bundles the entry (once per process) into a file, so that each task Worker loads one
// module, as in the binary, instead of a hundred source files: about 60 ms less CPU and 25 ms sooner per Worker
// (docs/benchmarks.md, "Task Workers from one bundle").
import * as fs from "node:fs";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import { bundleWorkerEntry } from "../runtime-env/bundle.ts";
import { embeddedFile } from "../runtime-env/index.ts";
import { writeFileAtomic } from "../util/files.ts";
import { sha256Hex } from "../util/hash.ts";

const SOURCE_URL = new URL("./task-worker.ts", import.meta.url);
/** The entry inside the compiled binary; null when running from source. */
const EMBEDDED_URL = embeddedFile(import.meta.url, "src/runtime/task-worker.ts");
let bundling: Promise<Uint8Array | null> | null = null;

/** The URL a task's Worker starts from: the binary's embedded entry, or the sources' (see bundledTaskWorker). */
export function taskWorkerUrl(): string {
  return EMBEDDED_URL ?? SOURCE_URL.href;
}

/**
 * From source under Bun: the URL of the Worker's entry bundled into `dir` (named by its content, so a kept directory
 * reuses it after checking it, and written whole before it is used); null in the binary and under Deno, where taskWorkerUrl() serves.
 * A file, not a blob: URL, because a module loaded from a blob cannot import the job's artifact file. Throws
 * (BundleError, or the file system's error) when it cannot be built or written.
 */
export async function bundledTaskWorker(dir: string): Promise<string | null> {
  if (EMBEDDED_URL !== null) return null;
  const bytes = await (bundling ??= bundleWorkerEntry(decodeURIComponent(SOURCE_URL.pathname)));
  if (bytes === null) return null;
  const file = path.join(dir, `task-worker-${sha256Hex(bytes).slice(0, 16)}.js`);
  // A file already there is used only if it holds these bytes: a kept directory outlives the jobs that could write it.
  if (!fs.existsSync(file) || !Buffer.from(bytes).equals(fs.readFileSync(file))) {
    fs.mkdirSync(dir, { recursive: true });
    writeFileAtomic(file, bytes);
  }
  return pathToFileURL(file).href;
}
