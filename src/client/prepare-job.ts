// Turns a job module into what a JobManager runs: one self-contained ESM artifact (the module bundled with
// everything it imports) and the JobGraph built from the plan its default function records.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { buildJobGraph } from "../api/job-graph.ts";
import type { JobGraph } from "../graph/job-graph.ts";
import { describePlan } from "../api/plan.ts";
import { loadPlan } from "../api/load-plan.ts";
import { sha256Hex } from "../util/hash.ts";

export interface PreparedJob {
  artifact: Uint8Array;
  graph: JobGraph;
  jobArgs: string[];
}

export class JobPreparationError extends Error {
  override name = "JobPreparationError";
}

/** The job file named on the command line does not exist (or is not a file): a usage error, exit 2. */
export class JobFileNotFoundError extends JobPreparationError {
  override name = "JobFileNotFoundError";
}

export async function bundleJob(jobPath: string): Promise<Uint8Array> {
  const entry = path.resolve(jobPath);
  if (!fs.statSync(entry, { throwIfNoEntry: false })?.isFile()) throw new JobFileNotFoundError(`job file ${jobPath} not found (or not a file)`);
  if (typeof Bun === "undefined") return singleFileJob(entry, jobPath);
  // An inline source map makes stack traces from user code name the job's own file and line.
  const result = await Bun.build({ entrypoints: [entry], target: "bun", format: "esm", sourcemap: "inline" });
  if (!result.success || result.outputs.length === 0) {
    const why = result.logs.map((l) => String(l.message ?? l)).join("; ");
    throw new JobPreparationError(`cannot bundle ${jobPath}: ${why || "no output"}`);
  }
  return new Uint8Array(await result.outputs[0]!.arrayBuffer());
}

/**
 * Without Bun's bundler (under Deno) a job ships as its own source, so it must be one file: only `node:`
 * built-ins and type-only imports. Artifacts are stored as .ts, which both runtimes import directly.
 */
function singleFileJob(entry: string, jobPath: string): Uint8Array {
  const source = fs.readFileSync(entry, "utf8");
  for (const m of source.matchAll(/^\s*(import|export)\s+(type\s+)?[^;]*?from\s+["']([^"']+)["']/gm)) {
    if (!m[2] && !m[3]!.startsWith("node:")) {
      throw new JobPreparationError(`${jobPath} imports ${JSON.stringify(m[3])}: without Bun a job must be a single file (node: built-ins and type-only imports); run it with Bun or the compiled binary to bundle it`);
    }
  }
  return new TextEncoder().encode(source);
}

export async function prepareJob(jobPath: string, jobArgs: string[], defaultParallelism: number): Promise<PreparedJob> {
  const artifact = await bundleJob(jobPath);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-job-"));
  const file = path.join(dir, `${sha256Hex(artifact)}.ts`);
  try {
    fs.writeFileSync(file, artifact);
    let plan;
    try {
      plan = await loadPlan(file, jobArgs);
    } catch (err) {
      throw new JobPreparationError(`${jobPath}: building the job failed: ${(err as Error).message}`);
    }
    const name = path.basename(jobPath).replace(/\.[cm]?[jt]s$/, "");
    return { artifact, graph: buildJobGraph(describePlan(plan), plan.settings, defaultParallelism, name), jobArgs };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
