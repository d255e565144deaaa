// From source under Bun a TaskManager bundles the task Worker's entry once into its tmp dir (named by content) and
// starts every task's Worker from that one module, as the compiled binary does; taskmanager.task.bundle-runtime=false
// keeps the source files. The job below shows which one ran: the stack of its map function names the runtime's
// frames by file.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { defaultConfig } from "../src/config/index.ts";
import { bundledTaskWorker } from "../src/runtime/worker-url.ts";
import { clusterPerTest } from "./cluster-helpers.ts";
import { removeTempDirs, runJob, tempDir, writeJob } from "./helpers.ts";

const cluster = clusterPerTest();
afterAll(removeTempDirs);

/** Runs a job at p=2 whose map writes its stack (once per subtask) into `out`; returns the stacks. */
async function stacksOfAJob(bundle: boolean): Promise<{ stacks: string[]; runtimeFiles: string[] }> {
  const dir = tempDir();
  const tmp = path.join(dir, "tm-tmp");
  const config = { ...defaultConfig(), "log.level": "warn" as const, "taskmanager.tmp.dir": tmp, "taskmanager.task.bundle-runtime": bundle };
  const t = await cluster({ taskManagers: 1, slotsPerTaskManager: 2, config });
  const out = path.join(dir, "stacks");
  fs.mkdirSync(out);
  const job = writeJob(dir, "stack.ts", `
    import * as fs from "node:fs";
    export default (env) => {
      env.fromSequence(1, 100).map({
        open(ctx) { this.i = ctx.subtaskIndex; this.done = false; },
        map(x) {
          if (!this.done) { this.done = true; fs.writeFileSync(${JSON.stringify(out)} + "/" + this.i, String(new Error("where").stack)); }
          return x;
        },
      }).addSink(() => {});
    };`);
  const status = await runJob(t.client, job, [], 2);
  expect(status.state).toBe("FINISHED");
  const runtimeDir = path.join(tmp, "runtime");
  return {
    stacks: fs.readdirSync(out).map((f) => fs.readFileSync(path.join(out, f), "utf8")),
    runtimeFiles: fs.existsSync(runtimeDir) ? fs.readdirSync(runtimeDir) : [],
  };
}

describe("task Workers from one bundle of the runtime", () => {
  test("by default every task's Worker runs the bundle the TaskManager wrote into its tmp dir", async () => {
    const { stacks, runtimeFiles } = await stacksOfAJob(true);
    expect(runtimeFiles).toHaveLength(1);
    expect(runtimeFiles[0]).toMatch(/^task-worker-[0-9a-f]{16}\.js$/);
    expect(stacks).toHaveLength(2);
    for (const s of stacks) {
      expect(s).toContain(runtimeFiles[0]!);
      expect(s).not.toContain("operator-chain.ts");
    }
  }, 60_000);

  test("with taskmanager.task.bundle-runtime=false they run the source files and nothing is bundled", async () => {
    const { stacks, runtimeFiles } = await stacksOfAJob(false);
    expect(runtimeFiles).toEqual([]);
    expect(stacks).toHaveLength(2);
    for (const s of stacks) expect(s).toMatch(/src\/runtime\/(operator-chain|operators|stream-task)\.ts/);
  }, 60_000);

  test("the bundle is named by its content: bundling again into the same dir (a kept taskmanager.tmp.dir) reuses the file", async () => {
    const dir = path.join(tempDir(), "runtime");
    const a = await bundledTaskWorker(dir);
    const file = fs.readdirSync(dir);
    const mtime = fs.statSync(path.join(dir, file[0]!)).mtimeMs;
    const b = await bundledTaskWorker(dir);
    expect(b).toBe(a);
    expect(fs.readdirSync(dir)).toEqual(file); // no temporary file left behind
    expect(fs.statSync(path.join(dir, file[0]!)).mtimeMs).toBe(mtime);
    // A file of that name with other bytes (written by a job through a kept taskmanager.tmp.dir) is replaced.
    const good = fs.readFileSync(path.join(dir, file[0]!));
    fs.writeFileSync(path.join(dir, file[0]!), "globalThis.tampered = true;\n");
    expect(await bundledTaskWorker(dir)).toBe(a);
    expect(fs.readFileSync(path.join(dir, file[0]!)).equals(good)).toBe(true);
  }, 60_000);
});
