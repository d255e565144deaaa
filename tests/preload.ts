// Preloaded by bun test (bunfig.toml), once for the whole run:
// - JobManagers started by tests take a free REST port rather than 8081, so that test files, and test runs, can run
//   side by side. A test that wants a fixed port passes -D rest.port=N.
// - Every temporary directory of the run goes under one root (TMPDIR, inherited by child processes), removed when the
//   run ends: the tests' own, and those JobManagers and TaskManagers make for themselves, which stay behind when a
//   test SIGKILLs them on purpose.
import { afterAll } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

process.env.TM_REST_PORT ??= "0";
if (process.env.TM_TEST_TMPDIR === undefined) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "tm-test-run-"));
  // Traversable by other users, as /tmp is: PostgreSQL runs as its own user on directories the tests make.
  fs.chmodSync(root, 0o755);
  process.env.TMPDIR = root;
  process.env.TM_TEST_TMPDIR = root;
  // A hook of the preload file runs once, after every test file (process "exit" handlers do not run under bun test).
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
}
