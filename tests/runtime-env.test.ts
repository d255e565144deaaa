// The runtime adapter's boundary: outside src/runtime-env/, no source file of tm reaches Bun's or Deno's globals or
// loads a bun: module (type-only imports aside), so `deno check` and the Bun/Deno differences stay in one place.
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ROOT } from "./helpers.ts";

/** Every .ts file under dir, recursively. */
function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

/** Code without its comments (line comments, block comments) and string contents, so prose may name the runtimes. */
function code(text: string): string {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, "")
    .replace(/(^|[^:"'`])\/\/.*$/gm, "$1")
    .replace(/`(?:\\.|[^`\\])*`|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'/g, (s) => (/^["']bun:/.test(s) ? s : '""'));
}

const RUNTIME_USE = [
  { what: "Bun's global", re: /\bBun\b(?!\w)/ },
  { what: "Deno's global", re: /\bDeno\b(?!\w)/ },
  { what: "a bun: module loaded at run time", re: /(?<!import type [^;]*)\b(?:from|import\()\s*["']bun:/ },
];

test("outside src/runtime-env/ no source file uses Bun's or Deno's globals or loads a bun: module", () => {
  const files = [path.join(ROOT, "main.ts"), ...sources(path.join(ROOT, "src"))].filter((f) => !f.startsWith(path.join(ROOT, "src", "runtime-env") + path.sep));
  expect(files.length).toBeGreaterThan(50);
  const found: string[] = [];
  for (const file of files) {
    const lines = code(fs.readFileSync(file, "utf8")).split("\n");
    lines.forEach((line, i) => {
      for (const { what, re } of RUNTIME_USE) if (re.test(line)) found.push(`${path.relative(ROOT, file)}:${i + 1}: ${what}: ${line.trim()}`);
    });
  }
  expect(found).toEqual([]);
});

test("the boundary check itself sees each kind of use", () => {
  const sample = ['if (typeof Bun !== "undefined") Bun.gc(true);', "const v = Deno.version;", 'const m = await import("bun:jsc");', 'import { Database } from "bun:sqlite";'];
  for (const line of sample) expect(RUNTIME_USE.some(({ re }) => re.test(code(line)))).toBe(true);
  const allowed = ['import type { Database } from "bun:sqlite";', "// under Bun the Worker gets its env", 'log("Deno has no such option")'];
  for (const line of allowed) expect(RUNTIME_USE.some(({ re }) => re.test(code(line)))).toBe(false);
});
