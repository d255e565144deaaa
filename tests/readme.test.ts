// The README's doc test: every shell command in a code block of README.md either runs here, as written but for the
// substitutions below (the binary built by the README's own `bash scripts/build` into a temp dir, free ports, temp
// files for jm.toml, tm.toml, job.ts, /etc/tm and /mnt/savepoints, 127.0.0.1 for the example hosts), and ends with
// exit 0 (daemons: start, do their part, and exit 0 on SIGTERM), or is skipped for one of the reasons in SKIP. A
// command added to the README without an entry here fails the first test, so an example cannot break unseen.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BUN, Child, removeTempDirs, ROOT, tempDir } from "./helpers.ts";

/** Why a README command does not run here: the complete list. */
const SKIP = {
  network: "installs packages from the network (node_modules is installed already)",
  suite: "runs the whole test suite, which this file is part of",
  benchmark: "a benchmark that loads the machine for minutes (docs/benchmarks.md)",
  remoteHttps: "HTTPS to a remote host with that host's certificate (the REST token is tested in tests/security.test.ts)",
  deno: "a Deno command: tests/deno.test.ts runs each from a fresh clone of the repository",
} as const;

interface Command {
  text: string;
  section: string;
  block: number;
}

/** The commands of the ```sh (bash, shell) code blocks of a Markdown text, comments removed, `\` lines joined. */
function shellCommands(markdown: string): Command[] {
  const out: Command[] = [];
  let section = "(top)";
  let block = -1;
  let inShell = false;
  let inFence = false;
  let pending = "";
  for (const raw of markdown.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("```")) {
      if (!inFence) {
        inFence = true;
        inShell = /^```(sh|bash|shell)\s*$/.test(line);
        if (inShell) block++;
      } else {
        inFence = inShell = false;
      }
      continue;
    }
    if (!inFence && raw.startsWith("## ")) section = raw.slice(3).trim();
    if (!inShell) continue;
    const text = pending + stripComment(line);
    if (text.endsWith("\\")) {
      pending = text.slice(0, -1);
      continue;
    }
    pending = "";
    if (text.trim() !== "") out.push({ text: text.trim(), section, block });
  }
  return out;
}

/** A line without its `# comment` (a `#` after whitespace and outside quotes). */
function stripComment(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quote) {
      if (c === quote) quote = "";
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]!))) {
      return line.slice(0, i).trimEnd();
    }
  }
  return line.trimEnd();
}

// ---- what runs where ----
const WORK = tempDir("tm-readme-");
const BIN = path.join(WORK, "dist", "taskmanager");
const ETC = path.join(WORK, "etc-tm");
const SAVEPOINTS = path.join(WORK, "savepoints");
fs.mkdirSync(ETC);
/** A short job at any parallelism. */
const QUICK_JOB = `export default (env) => { env.fromSequence(1, 20000).keyBy((x) => x % 16).sum(0).addSink(() => {}); };`;
/** A job with checkpoints that runs for about 15 s at parallelism 4: long enough to take savepoints of it. */
const SLOW_JOB = `export default (env) => {
  env.enableCheckpointing(500);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  env.fromSequence(1, 240000).uid("numbers")
    .map((x) => { if (x % 4 === 0) Atomics.wait(pause, 0, 0, 1); return x; }).uid("slow")
    .keyBy((x) => x % 16).sum(0).uid("sum")
    .addSink(() => {}).uid("sink");
};`;

/** SLOW_JOB at a hundred times its pace (the same operators and uids): a job restored from its savepoint that need only finish. */
const SLOW_JOB_RESTORED = SLOW_JOB.replace("x % 4 === 0", "x % 400 === 0");
/**
 * SLOW_JOB's next version: one more (stateless) operator, every stateful operator keeps its uid; it pauses a hundred
 * times less, so that it finishes in about a second at the default parallelism.
 */
const SLOW_JOB_V2 = SLOW_JOB_RESTORED.replace(".keyBy((x) => x % 16)", '.filter((x) => x > 0).uid("positive")\n    .keyBy((x) => x % 16)');

/** State of one code block's run: its cluster, its job, its savepoint. */
interface BlockRun {
  dir: string;
  jobFile: string;
  jmPort?: number;
  jobId?: string;
  savepoint?: string;
  daemons: { child: Child; command: string }[];
}

interface Handler {
  /** Skipped, and why. */
  skip?: keyof typeof SKIP;
  /** Run this instead of the README's text (still substituted); says why in `because`. */
  instead?: string;
  because?: string;
  /** A process that keeps running: started in the background, ready once its output matches; SIGTERMed (exit 0) at the block's end. */
  daemon?: RegExp;
  /** Environment of the command (on top of the test's). */
  env?: Record<string, string>;
  /** The job file that job.ts stands for in this block (default: QUICK_JOB). */
  job?: string;
  /** Set-up the README leaves to the reader (a cluster to submit to, a running job), done before the command. */
  before?: (run: BlockRun) => Promise<void>;
  /** What the command's output must show; the match is passed to `after`. */
  output?: RegExp;
  after?: (run: BlockRun, match: RegExpMatchArray) => void;
}

const JM_READY = /JobManager started rpc=127\.0\.0\.1:(\d+)/;
const TM_READY = /registered at the JobManager/;
/** A JobManager takes a free RPC port (the README's commands have none or 6123). */
const FREE_RPC_PORT = { TM_JOBMANAGER_RPC_PORT: "0" };

const HANDLERS: Record<string, Handler> = {
  "npm install && npm start": { instead: "npm start", because: SKIP.network, output: /^\(\S+,\d+\)$[\s\S]*FINISHED/m },
  "npm test": { skip: "suite" },
  "bash scripts/build": { output: /built /, after: () => expect(fs.statSync(BIN).mode & 0o111).not.toBe(0) },
  "./dist/taskmanager jobmanager --config jm.toml": { daemon: JM_READY, env: FREE_RPC_PORT },
  "./dist/taskmanager --config tm.toml": { daemon: TM_READY },
  "./dist/taskmanager submit -m host:6123 -p 4 job.ts": { output: /FINISHED/ },
  "./dist/taskmanager local job.ts [job args]": { output: /FINISHED/ },
  "./dist/taskmanager --help": { output: /Usage:/ },
  "bun main.ts local -p 2 examples/nexmark/q4.ts 1000000 7": { output: /FINISHED after .* 1000000 records read by sources/ },
  "bun scripts/bench-nexmark.ts --events 10000000": { skip: "benchmark" },
  "deno task start": { skip: "deno" },
  "deno run -A main.ts local examples/windowed-events.ts": { skip: "deno" },
  "deno task jobmanager --config jm.toml": { skip: "deno" },
  "deno task taskmanager --config tm.toml": { skip: "deno" },
  "deno run -A main.ts submit -m host:6123 -p 2 examples/windowed-events.ts": { skip: "deno" },
  "./dist/taskmanager savepoint -m host:6123 <job-id> /mnt/savepoints": {
    job: SLOW_JOB,
    before: async (run) => {
      await startCluster(run);
      const submit = await sh(run, `${BIN} submit -m 127.0.0.1:${run.jmPort} -p 4 -d ${run.jobFile}`);
      run.jobId = /submitted with JobID ([0-9a-f]+)/.exec(submit.stdout)![1];
      // A savepoint needs every task running: a completed checkpoint says they are.
      await run.daemons[0]!.child.waitForOutput(new RegExp(`checkpoint complete .*${run.jobId}`), 45_000);
    },
    output: /Savepoint completed\. Path: (\S+)/,
    after: (_run, m) => expect(m[1]!.startsWith(SAVEPOINTS + "/savepoint-")).toBe(true),
  },
  "./dist/taskmanager cancel -m host:6123 --with-savepoint=/mnt/savepoints <job-id>": {
    job: SLOW_JOB,
    output: /Savepoint completed\. Path: (\S+)[\s\S]*CANCELED/,
    after: (run, m) => (run.savepoint = m[1]),
  },
  "./dist/taskmanager submit -m host:6123 -s /mnt/savepoints/savepoint-... -p 8 job.ts": { job: SLOW_JOB_RESTORED, output: /FINISHED/ },
  "./dist/taskmanager savepoint info /mnt/savepoints/savepoint-...": {
    job: SLOW_JOB_V2,
    // The job's first version runs, and a savepoint of it is taken (the block's commands upgrade from it).
    before: async (run) => {
      await startCluster(run);
      const v1 = path.join(run.dir, "job-v1.ts");
      fs.writeFileSync(v1, SLOW_JOB);
      const submit = await sh(run, `${BIN} submit -m 127.0.0.1:${run.jmPort} -p 2 -d ${v1}`);
      const jobId = /submitted with JobID ([0-9a-f]+)/.exec(submit.stdout)![1];
      await run.daemons[0]!.child.waitForOutput(new RegExp(`checkpoint complete .*${jobId}`), 45_000);
      const cancel = await sh(run, `${BIN} cancel -m 127.0.0.1:${run.jmPort} --with-savepoint=${SAVEPOINTS} ${jobId}`);
      run.savepoint = /Savepoint completed\. Path: (\S+)/.exec(cancel.stdout + cancel.stderr)?.[1];
    },
    output: /Operator sum \(uid sum\)[\s\S]*Operator numbers \(uid numbers\)/,
  },
  "./dist/taskmanager submit -m host:6123 -s /mnt/savepoints/savepoint-... job.ts": { job: SLOW_JOB_V2, output: /FINISHED/ },
  "./dist/taskmanager submit -m host:6123 -s /mnt/savepoints/savepoint-... -n job.ts": { job: SLOW_JOB_V2, output: /FINISHED/ },
  "head -c 32 /dev/urandom | base64 > /etc/tm/secret && chmod 600 /etc/tm/secret": {
    after: () => expect(fs.statSync(path.join(ETC, "secret")).mode & 0o777).toBe(0o600),
  },
  "./dist/taskmanager jobmanager -D security.auth.secret-file=/etc/tm/secret -D jobmanager.rpc.address=10.0.0.5": {
    daemon: JM_READY,
    env: FREE_RPC_PORT,
  },
  'TM_SECURITY_AUTH_SECRET="$(cat /etc/tm/secret)" ./dist/taskmanager submit -m 10.0.0.5:6123 job.ts': {
    // A TaskManager with the secret to run the job on.
    before: async (run) => {
      await daemon(run, `${BIN} -D jobmanager.rpc.port=${run.jmPort} -D security.auth.secret-file=${ETC}/secret -D taskmanager.tmp.dir=${run.dir}/tm-tmp`, TM_READY);
    },
    output: /FINISHED/,
  },
  'curl -X PATCH -H "Authorization: Bearer $(cat /etc/tm/rest-token)" "https://10.0.0.5:8081/jobs/$JOB?mode=cancel"': { skip: "remoteHttps" },
};

/** The README's command with this machine's binary, ports, files and hosts. */
function substitute(text: string, run: BlockRun): string {
  const need = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`${JSON.stringify(text)} needs ${what}, which no earlier command of its block provided`);
    return value;
  };
  return text
    .replace(/^bash scripts\/build$/, `bash scripts/build ${BIN}`)
    .replaceAll("./dist/taskmanager", BIN)
    .replace(/(?:host|10\.0\.0\.5):6123/g, () => `127.0.0.1:${need(run.jmPort, "a JobManager")}`)
    .replaceAll("10.0.0.5", "127.0.0.1")
    .replace("--config jm.toml", () => `--config ${writeJmToml(run)}`)
    .replace("--config tm.toml", () => `--config ${writeTmToml(run)}`)
    .replace(/ \[job args\]/, "")
    .replace(/(?<=\s)job\.ts\b/, run.jobFile)
    .replaceAll("/etc/tm/", `${ETC}/`)
    .replace("/mnt/savepoints/savepoint-...", () => need(run.savepoint, "a savepoint"))
    .replaceAll("/mnt/savepoints", SAVEPOINTS)
    .replace("<job-id>", () => need(run.jobId, "a running job"));
}

function writeJmToml(run: BlockRun): string {
  const file = path.join(run.dir, "jm.toml");
  fs.writeFileSync(file, [
    `"jobmanager.rpc.address" = "127.0.0.1"`,
    `"jobmanager.storage.dir" = ${JSON.stringify(path.join(run.dir, "jm"))}`,
    `"state.checkpoints.dir" = ${JSON.stringify(path.join(run.dir, "checkpoints"))}`,
  ].join("\n") + "\n");
  return file;
}

function writeTmToml(run: BlockRun): string {
  const file = path.join(run.dir, "tm.toml");
  fs.writeFileSync(file, [
    `"jobmanager.rpc.address" = "127.0.0.1"`,
    `"jobmanager.rpc.port" = ${run.jmPort ?? 6123}`,
    `"taskmanager.numberOfTaskSlots" = 8`,
    `"taskmanager.tmp.dir" = ${JSON.stringify(path.join(run.dir, "tm-tmp"))}`,
    `"taskmanager.state.dir" = ${JSON.stringify(path.join(run.dir, "tm-state"))}`,
    `"state.checkpoints.dir" = ${JSON.stringify(path.join(run.dir, "checkpoints"))}`,
  ].join("\n") + "\n");
  return file;
}

/** `bun` and the project's npm binaries on the PATH, as after `npm install`. */
const PATH = [path.dirname(BUN), path.join(ROOT, "node_modules", ".bin"), process.env.PATH].join(path.delimiter);

async function sh(run: BlockRun, command: string, env: Record<string, string> = {}, timeoutMs = 90_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Child(["sh", "-c", command], { PATH, ...env });
  const code = await child.exited(timeoutMs);
  return { code, stdout: child.stdout, stderr: child.stderr };
}

/** Starts a long-running command (exec'd, so its pid is the process's own) and waits until it is ready. */
async function daemon(run: BlockRun, command: string, ready: RegExp, env: Record<string, string> = {}): Promise<RegExpMatchArray> {
  const child = new Child(["sh", "-c", `exec ${command}`], { PATH, ...env });
  run.daemons.push({ child, command });
  return child.waitForOutput(ready, 45_000);
}

/** The JobManager and TaskManager of the Roles section, for blocks that need a cluster. */
async function startCluster(run: BlockRun): Promise<void> {
  run.jmPort = Number((await daemon(run, `${BIN} jobmanager --config ${writeJmToml(run)}`, JM_READY, FREE_RPC_PORT))[1]);
  await daemon(run, `${BIN} --config ${writeTmToml(run)}`, TM_READY);
}

/** The binary, built as the README says, for a block run on its own (bun test -t). */
function ensureBinary(): void {
  if (fs.existsSync(BIN)) return;
  const r = Bun.spawnSync(["bash", path.join(ROOT, "scripts", "build"), BIN], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building ${BIN} failed: ${r.stderr.toString()}`);
}

afterEach(() => Child.stopAll());
afterAll(removeTempDirs);

const README = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
const COMMANDS = shellCommands(README);

describe("README.md", () => {
  test("every shell command in the README has an entry here, and every entry is in the README", () => {
    const inReadme = COMMANDS.map((c) => c.text);
    expect(inReadme.filter((c) => !(c in HANDLERS))).toEqual([]);
    expect(Object.keys(HANDLERS).filter((c) => !inReadme.includes(c))).toEqual([]);
    expect(COMMANDS.length).toBeGreaterThanOrEqual(15);
  });

  const blocks = [...new Set(COMMANDS.map((c) => c.block))];
  for (const block of blocks) {
    const commands = COMMANDS.filter((c) => c.block === block);
    const runnable = commands.filter((c) => !HANDLERS[c.text]?.skip);
    const title = `code block ${block + 1} (${commands[0]!.section}): ${runnable.length === 0 ? "skipped: " : ""}${commands.map((c) => c.text.slice(0, 48)).join("; ")}`;
    test(title, async () => {
      const dir = fs.mkdtempSync(path.join(WORK, "block-"));
      const run: BlockRun = { dir, jobFile: path.join(dir, "job.ts"), daemons: [] };
      if (commands.some((c) => c.text.includes("./dist/taskmanager")) && commands[0]!.text !== "bash scripts/build") ensureBinary();
      for (const command of commands) {
        const handler = HANDLERS[command.text];
        if (!handler) throw new Error(`no entry for README command ${JSON.stringify(command.text)}`);
        if (handler.skip) {
          expect(SKIP[handler.skip]).toBeString();
          continue;
        }
        fs.writeFileSync(run.jobFile, handler.job ?? QUICK_JOB);
        await handler.before?.(run);
        const text = substitute(handler.instead ?? command.text, run);
        const where = `README command ${JSON.stringify(command.text)} run as ${JSON.stringify(text)}`;
        if (handler.daemon) {
          const m = await daemon(run, text, handler.daemon, handler.env);
          if (handler.daemon === JM_READY) run.jmPort = Number(m[1]);
          continue;
        }
        const r = await sh(run, text, handler.env);
        if (r.code !== 0) throw new Error(`${where} exited ${r.code}:\n${(r.stdout + r.stderr).slice(-3000)}`);
        expect(r.stderr).not.toMatch(/^warning: job argument/m);
        if (handler.output) {
          const m = (r.stdout + r.stderr).match(handler.output);
          if (!m) throw new Error(`${where} did not print ${handler.output}:\n${(r.stdout + r.stderr).slice(-3000)}`);
          handler.after?.(run, m);
        } else {
          handler.after?.(run, [] as unknown as RegExpMatchArray);
        }
      }
      // Daemons end as the README says: SIGTERM, exit 0 (TaskManagers first, which drain to their JobManager).
      for (const { child, command } of run.daemons.reverse()) {
        child.kill("SIGTERM");
        expect({ command, exit: await child.exited(30_000) }).toEqual({ command, exit: 0 });
      }
    }, 120_000);
  }
});

describe("options after the job file", () => {
  test("a job argument that is an option of local or submit gets a warning naming it; other job arguments do not", async () => {
    const dir = tempDir("tm-args-");
    const job = path.join(dir, "args.ts");
    // The job writes the arguments it got, so the test sees that they went to the job.
    const seen = path.join(dir, "seen.json");
    fs.writeFileSync(job, `import * as fs from "node:fs"; export default (env, args) => { fs.writeFileSync(${JSON.stringify(seen)}, JSON.stringify(args)); env.fromElements(1).addSink(() => {}); };`);
    const local = new Child([BUN, "main.ts", "local", job, "-p", "4", "--input", "x", "--taskmanagers=2", "-v"]);
    expect(await local.exited(60_000)).toBe(0);
    expect(JSON.parse(fs.readFileSync(seen, "utf8"))).toEqual(["-p", "4", "--input", "x", "--taskmanagers=2", "-v"]);
    const warnings = local.stderr.split("\n").filter((l) => l.startsWith("warning: job argument"));
    expect(warnings).toEqual([
      "warning: job argument '-p' looks like an option of local; options go before the job file",
      "warning: job argument '--taskmanagers' looks like an option of local; options go before the job file",
      "warning: job argument '-v' looks like an option of local; options go before the job file",
    ]);
    // submit warns before it connects (here to a port nobody listens on, so it then fails).
    const submit = new Child([BUN, "main.ts", "submit", "-m", "127.0.0.1:1", job, "-m", "10.0.0.5:6123", "--detached", "--output", "y"]);
    expect(await submit.exited(60_000)).not.toBe(0);
    expect(submit.stderr.split("\n").filter((l) => l.startsWith("warning: job argument"))).toEqual([
      "warning: job argument '-m' looks like an option of submit; options go before the job file",
      "warning: job argument '--detached' looks like an option of submit; options go before the job file",
    ]);
    // Options before the job file: no warning.
    const plain = new Child([BUN, "main.ts", "local", "-p", "2", job, "--input", "x"]);
    expect(await plain.exited(60_000)).toBe(0);
    expect(plain.stderr).not.toContain("warning: job argument");
  }, 90_000);
});
