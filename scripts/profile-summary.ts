// Summarizes task Worker CPU profiles written with TASK_PROFILE_DIR (JavaScriptCore's sampling profiler, one JSON
// file per task): the share of samples per function, self (top frame) and inclusive (anywhere on the stack).
// Usage: TASK_PROFILE_DIR=/tmp/prof bun main.ts local job.ts ...; bun scripts/profile-summary.ts /tmp/prof/*.json [--top 20]
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: "string", default: "20" } } });
const top = Number(values.top);
if (positionals.length === 0 || !Number.isInteger(top) || top < 1) {
  console.error("usage: bun scripts/profile-summary.ts <profile.json>... [--top N]");
  process.exit(2);
}
type Frame = { name: string; sourceURL?: string; line: number };
for (const file of positionals) {
  const { traces } = JSON.parse(fs.readFileSync(file, "utf8")) as { traces: { frames: Frame[] }[] };
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const where = (f: Frame) => `${f.name || "(anonymous)"} ${path.basename(f.sourceURL ?? "")}`;
  for (const t of traces) {
    const first = t.frames[0];
    const k = first ? `${where(first)}${first.sourceURL ? `:${first.line}` : ""}` : "(no JS frame)";
    self.set(k, (self.get(k) ?? 0) + 1);
    for (const f of new Set(t.frames.map(where))) incl.set(f, (incl.get(f) ?? 0) + 1);
  }
  const show = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, n]) => `  ${((100 * n) / traces.length).toFixed(1).padStart(5)}% ${k}`).join("\n");
  console.log(`== ${path.basename(file)}: ${traces.length} samples\n self:\n${show(self)}\n inclusive:\n${show(incl)}`);
}
