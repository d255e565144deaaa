// Turns a job module into what a JobManager runs: one self-contained ESM artifact (the module bundled with
// everything it imports) and the JobGraph built from the plan its default function records.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { buildJobGraph, type JobGraphOptions } from "../api/job-graph.ts";
import type { JobGraph } from "../graph/job-graph.ts";
import type { Config } from "../config/index.ts";
import { describePlan } from "../api/plan.ts";
import { loadPlan } from "../api/load-plan.ts";
import { BundleError, bundleModule } from "../runtime-env/bundle.ts";
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
  try {
    return await bundleModule(entry);
  } catch (err) {
    if (err instanceof BundleError) throw new JobPreparationError(`cannot bundle ${jobPath}: ${err.message}`);
    throw err;
  }
}

/** The client's configuration keys that shape a job graph (pipeline.*). */
export function graphOptionsOf(cfg: Config): JobGraphOptions {
  return { chainKeyedAtParallelismOne: cfg["pipeline.operator-chaining.keyed-at-parallelism-one"], objectReuse: cfg["pipeline.object-reuse"] };
}

export async function prepareJob(jobPath: string, jobArgs: string[], defaultParallelism: number, graphOptions: JobGraphOptions = {}): Promise<PreparedJob> {
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
    return { artifact, graph: buildJobGraph(describePlan(plan), plan.settings, defaultParallelism, name, graphOptions), jobArgs };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
