// The same sources run under Deno (the `deno` npm package): a local cluster runs the bundled word count.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { Child, countWords, expectSameCounts, parseCountLines, ROOT } from "./helpers.ts";

afterAll(() => Child.stopAll());

test("deno run -A main.ts local examples/wordcount.ts prints the right counts", async () => {
  const deno = path.join(ROOT, "node_modules/.bin/deno");
  expect(fs.existsSync(deno)).toBe(true);
  const child = new Child([deno, "run", "-A", "main.ts", "local", "examples/wordcount.ts"], { DENO_NO_UPDATE_CHECK: "1" });
  expect(await child.exited(60_000)).toBe(0);
  expect(child.stderr).toContain("FINISHED");
  const expected = countWords(fs.readFileSync(path.join(ROOT, "examples/data/hamlet.txt"), "utf8"));
  expectSameCounts(parseCountLines(child.stdout.trim().split("\n")), expected);
}, 70_000);
