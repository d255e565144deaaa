// Deno parity: the same sources run under Deno (the `deno` npm package). A local cluster runs the word count and a
// job that imports other files (bundled with `deno bundle` through src/runtime-env/bundle.ts), and every Deno
// command of the README runs from a fresh clone of the repository (as a user would after `npm install`).
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BUN, Child, countWords, expectSameCounts, parseCountLines, removeTempDirs, ROOT, tempDir } from "./helpers.ts";

const DENO = path.join(ROOT, "node_modules/.bin/deno");
const DENO_ENV = { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" };

afterAll(async () => {
  await Child.stopAll();
  removeTempDirs();
});

/** A job's printed lines, "n> " subtask prefixes removed, sorted. */
function printed(stdout: string): string[] {
  return stdout
    .split("\n")
    .filter((l) => l.length > 0)
    .map((l) => l.replace(/^\d+> /, ""))
    .sort();
}

/**
 * What examples/windowed-events.ts must print for `n` events, computed directly from the events it describes:
 * event i is user`i % 5` at 1_700_000_000_000 + 100 i - jitter(i); one (user,start,end,count) line per user and
 * 10 s tumbling window.
 */
function windowedEventsOracle(n: number): string[] {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const ts = 1_700_000_000_000 + i * 100 - (((i * 2654435761) >>> 0) % 4000);
    const start = ts - (ts % 10_000);
    const key = `user${i % 5},${start},${start + 10_000}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([k, c]) => `(${k},${c})`).sort();
}

test("deno run -A main.ts local examples/wordcount.ts prints the right counts", async () => {
  expect(fs.existsSync(DENO)).toBe(true);
  const child = new Child([DENO, "run", "-A", "main.ts", "local", "examples/wordcount.ts"], DENO_ENV);
  expect(await child.exited(60_000)).toBe(0);
  expect(child.stderr).toContain("FINISHED");
  const expected = countWords(fs.readFileSync(path.join(ROOT, "examples/data/hamlet.txt"), "utf8"));
  expectSameCounts(parseCountLines(child.stdout.trim().split("\n")), expected);
}, 70_000);

test("a job that imports other files runs under Deno (deno bundle) and prints what the Bun run prints", async () => {
  const n = 3000;
  const deno = new Child([DENO, "run", "-A", "main.ts", "local", "examples/windowed-events.ts", String(n)], DENO_ENV);
  expect(await deno.exited(90_000)).toBe(0);
  expect(deno.stderr).toContain("FINISHED");
  const denoLines = printed(deno.stdout);
  expect(denoLines).toEqual(windowedEventsOracle(n));
  const bun = new Child([BUN, "main.ts", "local", "examples/windowed-events.ts", String(n)]);
  expect(await bun.exited(90_000)).toBe(0);
  expect(printed(bun.stdout)).toEqual(denoLines);
}, 200_000);

test("under Deno a job whose import cannot be resolved fails before it runs, naming the missing module", async () => {
  const dir = tempDir("tm-deno-job-");
  const job = path.join(dir, "job.ts");
  fs.writeFileSync(job, `import { helper } from "./missing-helper.ts";\nexport default (env) => { env.fromElements(1).map(helper).print(); };\n`);
  const child = new Child([DENO, "run", "-A", "main.ts", "local", job], DENO_ENV);
  expect(await child.exited(60_000)).toBe(1);
  expect(child.stderr).toContain(`cannot bundle ${job}: deno bundle failed`);
  expect(child.stderr).toContain("missing-helper.ts");
  expect(child.stderr).not.toContain("RUNNING");
}, 70_000);

// ---- every Deno command of the README, from a fresh clone ----

const README = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");

/** Commands of the README's ```sh blocks that run Deno (comments removed). */
function denoCommands(markdown: string): string[] {
  const out: string[] = [];
  let inShell = false;
  let inFence = false;
  for (const raw of markdown.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("```")) {
      inShell = !inFence && /^```(sh|bash|shell)\s*$/.test(line);
      inFence = !inFence;
      continue;
    }
    if (!inShell) continue;
    const command = line.replace(/(^|\s)#.*$/, "").trim();
    if (/\bdeno\b/.test(command)) out.push(command);
  }
  return out;
}

interface DenoCommand {
  /** A daemon: ready once its output matches; SIGTERMed (exit 0) at the end. */
  daemon?: RegExp;
  /** What a command that ends must print (stdout and stderr). */
  output?: RegExp;
  /** Checks on its stdout. */
  check?: (stdout: string) => void;
}

/** The prefix the README names in running text (`bun main.ts` becomes this), not a command of its own. */
const RUN_PREFIX = "deno run -A main.ts";
const JM_READY = /JobManager started rpc=127\.0\.0\.1:(\d+)/;
const HAMLET_COUNTS = () => countWords(fs.readFileSync(path.join(ROOT, "examples/data/hamlet.txt"), "utf8"));

const COMMANDS: Record<string, DenoCommand> = {
  "deno task start": { output: /FINISHED/, check: (out) => expectSameCounts(parseCountLines(out.trim().split("\n")), HAMLET_COUNTS()) },
  "deno run -A main.ts local examples/windowed-events.ts": { output: /FINISHED/, check: (out) => expect(printed(out)).toEqual(windowedEventsOracle(20_000)) },
  "deno task jobmanager --config jm.toml": { daemon: JM_READY },
  "deno task taskmanager --config tm.toml": { daemon: /registered at the JobManager/ },
  "deno run -A main.ts submit -m host:6123 -p 2 examples/windowed-events.ts": { output: /FINISHED after [\d.]+ s; 20000 records read by sources/ },
};

describe("README's Deno commands from a fresh clone", () => {
  test("every Deno command in the README is listed here, every entry is in the README, and no Deno command hides in running text", () => {
    const inReadme = denoCommands(README);
    expect(inReadme.length).toBeGreaterThanOrEqual(3);
    expect(inReadme.filter((c) => !(c in COMMANDS))).toEqual([]);
    expect(Object.keys(COMMANDS).filter((c) => !inReadme.includes(c))).toEqual([]);
    // `deno task ...` or `deno run ...` in running text would be a command this test does not run.
    const inline = [...README.matchAll(/`([^`\n]*\bdeno (?:task|run)\b[^`\n]*)`/g)].map((m) => m[1]!);
    expect(inline.filter((c) => !(c in COMMANDS) && c !== RUN_PREFIX)).toEqual([]);
  });

  test("each runs as written in a git clone (node_modules linked) and does what it says", async () => {
    const work = tempDir("tm-deno-clone-");
    const clone = path.join(work, "tm");
    const git = Bun.spawnSync(["git", "clone", "--quiet", ROOT, clone], { stdout: "pipe", stderr: "pipe" });
    expect({ git: git.exitCode, stderr: git.stderr.toString() }).toEqual({ git: 0, stderr: "" });
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(clone, "node_modules"));
    // The clone's node_modules/.bin on the PATH, as the README says.
    const env = { ...DENO_ENV, PATH: [path.join(clone, "node_modules", ".bin"), process.env.PATH].join(path.delimiter) };
    let jmPort: number | undefined;
    const daemons: { child: Child; command: string }[] = [];
    try {
      await runAll();
      // Daemons end as the README says for the roles: SIGTERM, exit 0 (the TaskManager first).
      for (const { child, command } of [...daemons].reverse()) {
        child.kill("SIGTERM");
        expect({ command, exit: await child.exited(30_000) }).toEqual({ command, exit: 0 });
      }
    } finally {
      // `deno task` runs the role as a child process: on a failure, that child must not outlive the test.
      for (const { child } of daemons) if (child.proc.exitCode === null) killTree(child.pid);
    }

    async function runAll(): Promise<void> {
      for (const command of denoCommands(README)) {
        const spec = COMMANDS[command]!;
        const text = command
          .replace("--config jm.toml", `--config ${writeToml(work, "jm.toml", { "jobmanager.rpc.address": "127.0.0.1", "jobmanager.rpc.port": 0, "rest.port": 0, "jobmanager.storage.dir": path.join(work, "jm") })}`)
          .replace("--config tm.toml", () =>
            `--config ${writeToml(work, "tm.toml", { "jobmanager.rpc.address": "127.0.0.1", "jobmanager.rpc.port": need(jmPort, command), "taskmanager.numberOfTaskSlots": 4, "taskmanager.tmp.dir": path.join(work, "tm-tmp"), "taskmanager.state.dir": path.join(work, "tm-state") })}`)
          .replace("host:6123", () => `127.0.0.1:${need(jmPort, command)}`);
        if (spec.daemon) {
          // exec: the pid is the deno task process's own, which passes SIGTERM on to the deno it runs.
          const child = new Child(["sh", "-c", `exec ${text}`], env, clone);
          daemons.push({ child, command });
          const m = await child.waitForOutput(spec.daemon, 60_000);
          if (spec.daemon === JM_READY) jmPort = Number(m[1]);
          continue;
        }
        const child = new Child(["sh", "-c", text], env, clone);
        const code = await child.exited(120_000);
        const where = `README command ${JSON.stringify(command)} run as ${JSON.stringify(text)} in ${clone}`;
        if (code !== 0) throw new Error(`${where} exited ${code}:\n${(child.stdout + child.stderr).slice(-3000)}`);
        if (spec.output && !spec.output.test(child.stdout + child.stderr)) throw new Error(`${where} did not print ${spec.output}:\n${(child.stdout + child.stderr).slice(-3000)}`);
        spec.check?.(child.stdout);
      }
    }
  }, 400_000);
});

/** SIGKILLs a process and its descendants (Linux /proc), children first; gone ones are skipped. */
function killTree(pid: number): void {
  let children: number[] = [];
  try {
    children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(" ").filter(Boolean).map(Number);
  } catch {
    // already gone
  }
  for (const c of children) killTree(c);
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

function need<T>(value: T | undefined, command: string): T {
  if (value === undefined) throw new Error(`${JSON.stringify(command)} needs a JobManager, which no earlier Deno command of the README started`);
  return value;
}

function writeToml(dir: string, name: string, entries: Record<string, string | number>): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, Object.entries(entries).map(([k, v]) => `${JSON.stringify(k)} = ${JSON.stringify(v)}`).join("\n") + "\n");
  return file;
}
