// Runs a job module's default function against a fresh environment and returns the recorded plan: what the client
// does once to build the JobGraph, and every task's Worker again to get the user functions back.
import { pathToFileURL } from "node:url";
import { StreamExecutionEnvironment, type JobBuilder } from "./environment.ts";
import type { Plan } from "./plan.ts";

export async function loadPlan(artifactPath: string, jobArgs: string[]): Promise<Plan> {
  const mod = await import(pathToFileURL(artifactPath).href);
  const builder = mod.default as JobBuilder | undefined;
  if (typeof builder !== "function") {
    throw new Error(`job module must \`export default\` a function (env, args) => void; found ${typeof builder}`);
  }
  const env = new StreamExecutionEnvironment();
  await builder(env, jobArgs);
  return env.getPlan();
}
