// The compiled binary as operators run it: one JobManager and two TaskManagers (2 slots each) as separate
// processes on 127.0.0.1, word count submitted at parallelism 4 over a few MB of text, output checked
// against counts computed here, every process stopped with SIGTERM and expected to exit 0.
import { afterAll, beforeAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { Child, countWords, expectSameCounts, generateText, readCounts, removeTempDirs, ROOT, tempDir } from "./helpers.ts";

let dir: string;
let binary: string;

beforeAll(async () => {
  dir = tempDir("tm-smoke-");
  // CI builds dist/taskmanager first and points SMOKE_BINARY at it; otherwise build one here.
  binary = process.env.SMOKE_BINARY ? path.resolve(process.env.SMOKE_BINARY) : path.join(dir, "taskmanager");
  if (!process.env.SMOKE_BINARY) {
    const build = new Child(["bash", path.join(ROOT, "scripts/build"), binary]);
    expect(await build.exited(120_000)).toBe(0);
  }
  expect(fs.existsSync(binary)).toBe(true);
}, 130_000);

afterAll(async () => {
  await Child.stopAll();
  removeTempDirs();
});

test("compiled binary: JobManager + 2 TaskManagers run word count at parallelism 4", async () => {
  const input = path.join(dir, "input.txt");
  generateText(input, 400_000, 42); // about 5 MB
  expect(fs.statSync(input).size).toBeGreaterThan(3_000_000);
  const out = path.join(dir, "counts");
  const cwd = dir; // run away from the source tree: the binary must carry everything it needs

  const jm = new Child([binary, "jobmanager", "-D", "jobmanager.rpc.port=0"], {}, cwd);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const tms = [0, 1].map((i) => new Child([binary, "--config", writeTmConfig(port, i)], {}, cwd));
  await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/)));

  const job = path.join(ROOT, "examples/wordcount.ts");
  const submit = new Child([binary, "submit", "--jobmanager", `127.0.0.1:${port}`, "-p", "4", job, "--input", input, "--output", out], {}, cwd);
  expect(await submit.exited(120_000)).toBe(0);
  expect(submit.stderr).toMatch(/FINISHED after/);

  // Tasks ran in both TaskManager processes.
  for (const tm of tms) expect(tm.stderr).toMatch(/deploying task/);
  expect(fs.readdirSync(out).sort()).toEqual(["1", "2", "3", "4"]);
  const [actual] = readCounts(out);
  expectSameCounts(actual!, countWords(fs.readFileSync(input, "utf8")));

  for (const p of [...tms, jm]) p.kill("SIGTERM");
  for (const p of [...tms, jm]) expect(await p.exited(10_000)).toBe(0);
}, 120_000);

function writeTmConfig(port: number, i: number): string {
  const file = path.join(dir, `tm${i}.toml`);
  fs.writeFileSync(file, `[jobmanager.rpc]\naddress = "127.0.0.1"\nport = ${port}\n\n[taskmanager]\nresource-id = "smoke-tm-${i}"\nnumberOfTaskSlots = 2\nhost = "127.0.0.1"\n`);
  return file;
}
