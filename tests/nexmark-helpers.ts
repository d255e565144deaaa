// What the Nexmark query tests share: running examples/nexmark/<query>.ts on a test cluster with a FileSink, and the
// generator's events for the independent references the tests compute themselves.
import * as fs from "node:fs";
import * as path from "node:path";
import { eventAt, nexmarkConfig, type NexmarkConfig, type NexmarkEvent } from "../src/nexmark/generator.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { runJob } from "./helpers.ts";

/**
 * Runs examples/nexmark/<query>.ts at `parallelism` with a FileSink under dir; returns the output lines per part file
 * (per subtask), in the order written. Extra arguments follow the four common ones.
 */
export async function runQuery(client: RpcConnection, dir: string, query: string, events: number, seed: number, rate: number, extra: string[] = [], parallelism = 2): Promise<string[][]> {
  const out = path.join(dir, `${query}-${events}-${seed}-${rate}-p${parallelism}`);
  const status = await runJob(client, path.resolve(`examples/nexmark/${query}.ts`), [String(events), String(seed), out, String(rate), ...extra], parallelism, 50);
  if (status.state !== "FINISHED") throw new Error(`${query} ended ${status.state}: ${status.error?.message}`);
  return fs
    .readdirSync(out)
    .filter((f) => !f.startsWith("."))
    .map((f) => fs.readFileSync(path.join(out, f), "utf8").split("\n").filter((l) => l.length > 0));
}

/** A tuple as the FileSink writes it. */
export const line = (t: unknown[]) => `(${t.join(",")})`;
export const sorted = (xs: string[]) => [...xs].sort();

export function generate(events: number, seed: number, rate: number): { cfg: NexmarkConfig; evs: NexmarkEvent[] } {
  const cfg = nexmarkConfig({ events, seed, ratePerSecond: rate });
  return { cfg, evs: Array.from({ length: events }, (_, n) => eventAt(n, cfg)) };
}

/** Of continuous updates, the last line per key (a key's updates all come from one subtask, so from one file). */
export function lastPerKey(files: string[][], keyOf: (line: string) => string): Map<string, string> {
  const last = new Map<string, string>();
  for (const lines of files) for (const l of lines) last.set(keyOf(l), l);
  return last;
}

/** The fields of a line written by line() (fields themselves without commas). */
export const fields = (l: string) => l.slice(1, -1).split(",");
