// The runtime adapter: everything Bun and Deno do differently goes through this folder, so no other file names
// `Bun` or `Deno` or asks which runtime it runs on. Here: detection and version, garbage collection and heap
// figures, CRC-32, Worker creation options and the environment of processes a job spawns, and the compiled binary's
// embedded files. Bundling a job is in ./bundle.ts, the SQLite module in ./sqlite.ts.
// Bun's globals are reached through globalThis with the few members used typed here, so `tsc` (with @types/bun)
// and `deno check` (without it) both accept this file.

/** The members of Bun's global that tm uses. */
export interface BunGlobal {
  readonly version: string;
  gc(force: boolean): void;
  readonly hash: { crc32(data: Uint8Array): number };
  build(options: { entrypoints: string[]; target: "bun"; format: "esm"; sourcemap: "inline" | "none" }): Promise<{
    success: boolean;
    outputs: { arrayBuffer(): Promise<ArrayBuffer> }[];
    logs: { message?: string }[];
  }>;
}

interface DenoGlobal {
  readonly version: { readonly deno: string };
  execPath(): string;
}

import { writeFileSync } from "node:fs";

const g = globalThis as { Bun?: BunGlobal; Deno?: DenoGlobal; gc?: () => void };

/** Bun's global, or undefined under any other runtime. */
export const bun: BunGlobal | undefined = g.Bun;
/** Deno's global, or undefined under any other runtime. */
export const deno: DenoGlobal | undefined = bun === undefined ? g.Deno : undefined;

export type RuntimeName = "bun" | "deno" | "node";
export const runtimeName: RuntimeName = bun !== undefined ? "bun" : deno !== undefined ? "deno" : "node";

/** "bun 1.4.5", "deno 2.9.6", "node v24.0.0": the runtime label of tm_process_info. */
export function runtimeVersion(): string {
  if (bun !== undefined) return `bun ${bun.version}`;
  if (deno !== undefined) return `deno ${deno.version.deno}`;
  return `node ${process.version}`;
}

/** A full, synchronous garbage collection (Bun.gc(true), or globalThis.gc where exposed), or undefined if this runtime offers none. */
export const forceGc: (() => void) | undefined =
  bun !== undefined ? () => bun.gc(true) : typeof g.gc === "function" ? () => g.gc!() : undefined;

/** Bun's native CRC-32 (IEEE), or undefined: the caller then uses its portable one. */
export const nativeCrc32: ((data: Uint8Array) => number) | undefined = bun !== undefined ? (d) => bun.hash.crc32(d) >>> 0 : undefined;

/**
 * Bun's process.memoryUsage() mixes two measures: heapUsed is JavaScriptCore's heap size with its extra memory and
 * large objects, heapTotal only the bytes of its small-object blocks, so "used" came out above "total". JSC's own
 * heapSize and heapCapacity count the same things. (Deno's V8 figures agree already.)
 */
let jscHeap: (() => { used: number; total: number }) | null = null;
if (bun !== undefined) {
  void import("bun:jsc").then((jsc) => {
    jscHeap = () => {
      const h = jsc.heapStats();
      return { used: h.heapSize, total: h.heapCapacity };
    };
  });
}

/** This thread's JavaScript heap: bytes in use and bytes allocated (used <= total). */
export function heapUsage(): { used: number; total: number } {
  if (jscHeap) return jscHeap();
  const m = process.memoryUsage();
  return { used: m.heapUsed, total: Math.max(m.heapTotal, m.heapUsed) };
}

/**
 * A reader of this Worker's own heap size in bytes, for taskmanager.task.memory-limit: under Bun each Worker is a
 * JavaScriptCore VM of its own and bun:jsc's heapSize() counts its heap alone. Null where the limit is not
 * enforced (Deno: see docs/configuration.md).
 */
export async function workerHeapReader(): Promise<(() => number) | null> {
  if (bun === undefined) return null;
  const jsc = await import("bun:jsc");
  return () => jsc.heapSize();
}

/**
 * A developer's CPU profile of one task Worker (Bun only; `TASK_PROFILE_DIR`, docs/benchmarks.md): starts
 * JavaScriptCore's sampling profiler in this Worker and returns a function that writes its stack traces as JSON into
 * `dir`. Null under Deno. Not under TM_: a Worker's environment has no TM_* variables.
 */
export async function startWorkerProfile(dir: string, name: string): Promise<(() => void) | null> {
  if (bun === undefined) return null;
  // samplingProfilerStackTraces is in bun:jsc but not in its type declarations.
  const jsc = (await import("bun:jsc")) as unknown as { startSamplingProfiler(): void; samplingProfilerStackTraces(): unknown };
  jsc.startSamplingProfiler();
  return () => writeFileSync(`${dir}/${name.replace(/[^\w.-]+/g, "_")}-${Date.now()}.json`, JSON.stringify(jsc.samplingProfilerStackTraces()));
}

/**
 * Options for a task's Worker. Bun's `env` option gives the Worker its own process.env; Deno has no such option
 * and its Workers share the process's environment (README, "Trust model").
 */
export function workerOptions(env: Record<string, string>): WorkerOptions {
  return bun !== undefined ? ({ type: "module", env } as WorkerOptions) : { type: "module" };
}

/** Whether a Worker gets the environment passed to workerOptions (false: it sees the process's). */
export const workerEnvIsolated = bun !== undefined;

/**
 * Bun.spawn and Bun.spawnSync without an `env` option hand the child Bun's start-up environment, not this Worker's
 * process.env (oven-sh/bun#34972), so a job's child would see the TaskManager's TM_* variables and the secret that
 * was removed from process.env. Called in a task's Worker, this makes them default to the Worker's environment.
 * (Deno's and node's child_process already take process.env.)
 */
export function spawnWithWorkerEnvironment(): void {
  if (bun === undefined) return;
  const b = bun as unknown as Record<string, (first: unknown, options?: object) => unknown>;
  for (const key of ["spawn", "spawnSync"]) {
    const real = b[key]!.bind(bun);
    b[key] = (first: unknown, options?: object) =>
      Array.isArray(first) ? real(first, { env: { ...process.env }, ...options }) : real({ env: { ...process.env }, ...(first as object) });
  }
}

/**
 * Where one of tm's own source files (path from the repository root) is inside a binary of `bun build --compile`:
 * /$bunfs/root/<path> (it must be an entrypoint of the build: scripts/build). Null when `moduleUrl` (the caller's
 * import.meta.url) is not inside such a binary, i.e. when running from source.
 */
export function embeddedFile(moduleUrl: string, pathFromRoot: string): string | null {
  return moduleUrl.includes("$bunfs") ? `/$bunfs/root/${pathFromRoot}` : null;
}
