// Bundling a job module with everything it imports into one self-contained ESM file: Bun.build under Bun (and in
// the compiled binary), `deno bundle` (the running Deno executable) under Deno. Both keep `node:` built-ins as
// imports and add an inline source map, so stack traces from user code name the job's own file and line.
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { bun, deno } from "./index.ts";

export class BundleError extends Error {
  override name = "BundleError";
}

/** How long `deno bundle` may take (it starts a process; the first run on a machine fetches esbuild into Deno's cache). */
const DENO_BUNDLE_TIMEOUT_MS = 120_000;

/** The bundle of the module at `entry` (an absolute path); throws BundleError saying why it cannot be built. */
export async function bundleModule(entry: string): Promise<Uint8Array> {
  if (bun !== undefined) return bunBuild(bun, entry, "inline");
  if (deno !== undefined) return denoBundle(deno.execPath(), entry);
  return singleFile(entry);
}

/** Bun.build of `entry` into one ESM module; throws BundleError saying why it cannot be built. */
async function bunBuild(b: NonNullable<typeof bun>, entry: string, sourcemap: "inline" | "none"): Promise<Uint8Array> {
  let result;
  try {
    result = await b.build({ entrypoints: [entry], target: "bun", format: "esm", sourcemap });
  } catch (err) {
    // Bun.build throws an AggregateError ("Bundle failed") whose errors say what failed.
    const why = err instanceof AggregateError ? err.errors.map((e) => String((e as Error)?.message ?? e)).join("; ") : "";
    throw new BundleError(why || (err as Error).message);
  }
  if (!result.success || result.outputs.length === 0) {
    throw new BundleError(result.logs.map((l) => String(l.message ?? l)).join("; ") || "no output");
  }
  return new Uint8Array(await result.outputs[0]!.arrayBuffer());
}

/**
 * Under Bun from source: the module at `entry` (a Worker's entry) bundled into one ESM module; null elsewhere (Deno
 * runs the sources, the compiled binary has its bundle already). No source map: a Worker parses the bundle at each
 * start, and an inline map made it four times the size, which took back most of what the bundle saves (the binary's
 * bundle has none either).
 */
export async function bundleWorkerEntry(entry: string): Promise<Uint8Array | null> {
  return bun === undefined ? null : bunBuild(bun, entry, "none");
}

async function denoBundle(denoPath: string, entry: string): Promise<Uint8Array> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-bundle-"));
  const out = path.join(dir, "job.js");
  try {
    const args = ["bundle", "--quiet", "--platform", "deno", "--format", "esm", "--sourcemap", "inline", "--output", out, entry];
    const stderr = await new Promise<string>((resolve, reject) => {
      execFile(denoPath, args, { env: { ...process.env, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", RUST_BACKTRACE: "0" }, timeout: DENO_BUNDLE_TIMEOUT_MS, maxBuffer: 4 << 20 }, (err, _stdout, stderr) => {
        if (err) reject(new BundleError(`deno bundle failed (${err.killed ? `killed after ${DENO_BUNDLE_TIMEOUT_MS} ms` : `exit ${err.code}`}): ${String(stderr).trim() || err.message}`));
        else resolve(String(stderr));
      });
    });
    if (!fs.existsSync(out)) throw new BundleError(`deno bundle wrote no output: ${stderr.trim() || "no message"}`);
    return new Uint8Array(fs.readFileSync(out));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A runtime with no bundler (node) ships a job as its own source, so it must be one file: only `node:` built-ins
 * and type-only imports. Artifacts are stored as .ts, which the runtimes import directly.
 */
function singleFile(entry: string): Uint8Array {
  const source = fs.readFileSync(entry, "utf8");
  for (const m of source.matchAll(/^\s*(import|export)\s+(type\s+)?[^;]*?from\s+["']([^"']+)["']/gm)) {
    if (!m[2] && !m[3]!.startsWith("node:")) {
      throw new BundleError(`it imports ${JSON.stringify(m[3])}: without Bun or Deno a job must be a single file (node: built-ins and type-only imports); run it with Bun, Deno or the compiled binary to bundle it`);
    }
  }
  return new TextEncoder().encode(source);
}
