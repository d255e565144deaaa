// The shape of src/: no import cycle between files, and no import from a higher layer (docs/architecture.md
// section 2 lists the layers). Reads the import graph from the sources themselves: every static
// `import ... from "./x"`, `export ... from "./x"` and literal `import("./x")` with a relative path.
import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ROOT } from "./helpers.ts";

/**
 * Lowest first: a folder may import only from folders before it (and from itself). `api/index.ts`, the job
 * authors' public surface, re-exports connectors (nexmark) that themselves build on the API, so it is a layer of
 * its own above them. A new folder must be placed here before anything imports it.
 */
const LAYERS = [
  "runtime-env",
  "util",
  "config",
  "graph",
  "state",
  "rpc",
  "metrics",
  "network",
  "api",
  "nexmark",
  "connectors",
  "api/index.ts",
  "runtime",
  "ha",
  "taskmanager",
  "jobmanager",
  "rest",
  "roles",
  "client",
  "main.ts",
];

const IMPORT_RE = /(?:^|[\s;])(import|export)\s(type\s)?[^;]*?\sfrom\s+["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith(".ts") ? [p] : [];
  });
}

/**
 * File -> the project files it imports (paths relative to the repository root). With `values`, only imports that
 * exist at run time: `import type` / `export type` between files of one folder are left out (a backend and its
 * helpers may name each other's types; across folders the layer rule below still counts them).
 */
export function importGraph(values = false): Map<string, string[]> {
  const files = [path.join(ROOT, "main.ts"), ...sourceFiles(path.join(ROOT, "src"))];
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const text = fs.readFileSync(file, "utf8");
    const deps = new Set<string>();
    for (const m of text.matchAll(IMPORT_RE)) {
      const target = path.resolve(path.dirname(file), m[3] ?? m[4]!);
      if (!target.endsWith(".ts")) continue;
      if (values && m[2] && path.dirname(target) === path.dirname(file)) continue;
      deps.add(path.relative(ROOT, target));
    }
    graph.set(path.relative(ROOT, file), [...deps]);
  }
  return graph;
}

/** The layer a file belongs to: "main.ts", "api/index.ts", or its folder under src/. */
function layerOf(file: string): string {
  if (file === "main.ts" || file === "src/api/index.ts") return file.replace(/^src\//, "");
  return file.split("/")[1]!;
}

/** Strongly connected components with more than one file (or a file importing itself): the import cycles. */
function cycles(graph: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe("structure of src/", () => {
  const graph = importGraph();

  test("the import graph is read (sanity: known edges are seen, every import resolves to a file)", () => {
    expect(graph.get("src/roles/jobmanager-role.ts")).toContain("src/rest/rest-server.ts");
    expect(graph.get("src/runtime/stream-task.ts")).toContain("src/api/load-plan.ts");
    const missing = [...graph].flatMap(([file, deps]) => deps.filter((d) => !fs.existsSync(path.join(ROOT, d))).map((d) => `${file} -> ${d}`));
    expect(missing).toEqual([]);
  });

  test("no import cycle between files (type-only imports inside one folder aside)", () => {
    expect(cycles(importGraph(true))).toEqual([]);
  });

  test("the cycle check finds a cycle when there is one", () => {
    const g = new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]]);
    expect(cycles(g)).toEqual([["a", "b", "c"]]);
  });

  test("every folder of src/ has its place in the layer order", () => {
    const folders = fs.readdirSync(path.join(ROOT, "src"), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(folders.filter((f) => !LAYERS.includes(f))).toEqual([]);
  });

  test("no import from a higher layer", () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      const from = LAYERS.indexOf(layerOf(file));
      for (const dep of deps) {
        if (dep === "package.json") continue;
        const to = LAYERS.indexOf(layerOf(dep));
        if (to > from) wrong.push(`${file} (${layerOf(file)}) imports ${dep} (${layerOf(dep)})`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
