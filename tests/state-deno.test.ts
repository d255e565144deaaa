// The state layer under Deno: the SQLite backend runs on node:sqlite (DatabaseSync) there.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const ROOT = path.resolve(import.meta.dir, "..");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-state-deno-"));
let pid: number | undefined;
afterAll(() => {
  if (pid !== undefined) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test("under Deno the SQLite backend uses node:sqlite, and snapshots cross to the heap backend and back", async () => {
  const deno = path.join(ROOT, "node_modules/.bin/deno");
  const child = Bun.spawn([deno, "run", "-A", path.join(ROOT, "tests/fixtures/state-deno-smoke.ts"), dir], {
    cwd: ROOT,
    env: { ...process.env, DENO_NO_UPDATE_CHECK: "1" },
    stdout: "pipe",
    stderr: "pipe",
  });
  pid = child.pid;
  const [code, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
  pid = undefined;
  if (code !== 0) throw new Error(`deno exited with ${code}:\n${stderr}`);
  const r = JSON.parse(stdout.trim().split("\n").at(-1)!);
  expect(r).toEqual({ runtime: "deno", implementation: "node:sqlite", journal: "wal", entries: 20500, errors: [] });
}, 60_000);
