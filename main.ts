#!/usr/bin/env bun
// tm: one binary, several roles. See README.md and docs/configuration.md.
import { parseArgs } from "node:util";
import * as fs from "node:fs";
import * as path from "node:path";
import pkg from "./package.json" with { type: "json" };
import { ConfigError, loadConfig, type Config } from "./src/config/index.ts";
import { startJobManager } from "./src/roles/jobmanager-role.ts";
import { EtcdUnavailableError, findJobManager } from "./src/ha/index.ts";
import { TaskExecutor } from "./src/taskmanager/task-executor.ts";
import { graphOptionsOf, prepareJob, JobFileNotFoundError, JobPreparationError } from "./src/client/prepare-job.ts";
import { connectClient, describeFailure, describeStatus, JobProgress, submitJob, useClientConfig, waitForJob, type SubmitOptions } from "./src/client/job-client.ts";
import { formatSavepointInfo, savepointInfo } from "./src/client/savepoint-info.ts";
import { startLocalCluster } from "./src/client/local-cluster.ts";
import { JobGraphError } from "./src/api/job-graph.ts";
import { createLogger, setLogFormat, setLogLevel } from "./src/util/log.ts";
import { BindError } from "./src/util/errors.ts";

/** Exit codes (README.md): 0 ok, 1 job failed or runtime error, 2 bad usage or config. */
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
/** A configured port could not be bound (in use or not permitted). */
const EXIT_BIND = 3;
/** A configured directory cannot be created or written. */
const EXIT_DIR = 4;
/** A TaskManager could not register at its JobManager within taskmanager.registration.timeout. */
const EXIT_REGISTRATION = 5;

class UsageError extends Error {}
class DirectoryError extends Error {}

/** Directories each role writes; an empty value means a private directory under the OS temp dir. */
const TASKMANAGER_DIRS = ["taskmanager.tmp.dir", "taskmanager.state.dir", "state.checkpoints.dir"] as const;
const JOBMANAGER_DIRS = ["jobmanager.storage.dir", "state.checkpoints.dir", "state.savepoints.dir", "high-availability.storageDir"] as const;

const DIR_REASONS: Record<string, string> = {
  ENOTDIR: "a part of the path is a file, not a directory",
  EEXIST: "it exists and is not a directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
};

/**
 * Creates every configured directory of `keys` and writes a probe file into it, so that an unusable directory stops
 * the process at start with one line naming the key and the path (exit 4), not a task later with a stack trace.
 */
function checkDirectories(cfg: Config, keys: readonly (keyof Config)[]): void {
  for (const key of keys) {
    const dir = cfg[key];
    if (typeof dir !== "string" || dir === "") continue;
    let step = "create";
    try {
      fs.mkdirSync(dir, { recursive: true });
      step = "write to";
      const probe = path.join(dir, `.tm-write-test-${process.pid}`);
      fs.writeFileSync(probe, "");
      fs.rmSync(probe, { force: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      throw new DirectoryError(`${key}: cannot ${step} the directory ${dir}: ${DIR_REASONS[code] ?? (err as Error).message}${code ? ` (${code})` : ""}`);
    }
  }
}

const COMMON = `  --config FILE      TOML config file (see docs/configuration.md)
  -D key=value       set a config key (repeatable); beats env vars (TM_*) and the file
  -h, --help         this help`;

const HELP: Record<string, string> = {
  main: `tm ${pkg.version}: a Flink-style TaskManager and JobManager in one binary

Usage:
  taskmanager [taskmanager] [--config tm.toml]      run a TaskManager (the default role)
  taskmanager jobmanager [--config jm.toml]         run a JobManager
  taskmanager local [options] <job.ts> [job args]   run a job on an in-process cluster
  taskmanager submit [options] <job.ts> [job args]  run a job on a cluster
  taskmanager list [-m HOST:PORT]                   list the jobs of a cluster
  taskmanager cancel <job-id> [-m HOST:PORT]        cancel a job (--with-savepoint: take one first)
  taskmanager savepoint <job-id> [DIR] [-m HOST:PORT]  write a savepoint of a running job
  taskmanager savepoint info PATH                   show a savepoint's operators and their states
  taskmanager --version

Run \`taskmanager <command> --help\` for a command's options.

Exit codes: 0 success; 1 the job failed or was canceled, or a runtime error; 2 bad usage or configuration;
3 a configured port cannot be bound; 4 a configured directory cannot be created or written;
5 a TaskManager could not register at its JobManager within taskmanager.registration.timeout.`,
  taskmanager: `Usage: taskmanager [taskmanager] [options]
Runs a TaskManager: registers at the JobManager (jobmanager.rpc.address/port) and runs the tasks it deploys.

Options:
${COMMON}`,
  jobmanager: `Usage: taskmanager jobmanager [options]
Runs a JobManager on jobmanager.rpc.address:jobmanager.rpc.port.

Options:
${COMMON}`,
  local: `Usage: taskmanager local [options] <job.ts> [job args...]
Starts a JobManager and TaskManagers in this process, runs the job, prints its result and exits.

Options:
  -p, --parallelism N    default parallelism of the job (default: parallelism.default)
  --taskmanagers N       number of TaskManagers (default 1); slots are spread to fit the parallelism
  -v, --verbose          log cluster events (info level) to stderr
${COMMON}`,
  submit: `Usage: taskmanager submit [options] <job.ts> [job args...]
Bundles the job, submits it to a JobManager, waits for it to end and prints its final state.

Options:
  -m, --jobmanager HOST:PORT   the JobManager (default: jobmanager.rpc.address:jobmanager.rpc.port)
  -p, --parallelism N          default parallelism of the job (default: parallelism.default)
  -d, --detached               print the job id and return without waiting
  -s, --from-savepoint PATH    start from a savepoint (or retained checkpoint) directory; the parallelism, chaining
                               and operators may differ: state goes to operators by operator id (uid)
  -n, --allowNonRestoredState  with -s: drop state of operators the job no longer has (refused without it)
${COMMON}`,
  list: `Usage: taskmanager list [options]
Lists the jobs of a cluster with their state.

Options:
  -m, --jobmanager HOST:PORT   the JobManager (default: jobmanager.rpc.address:jobmanager.rpc.port)
${COMMON}`,
  cancel: `Usage: taskmanager cancel <job-id> [options]
Cancels a job: its tasks are stopped (a task stuck in user code is terminated) and its slots freed.

Options:
  -m, --jobmanager HOST:PORT   the JobManager (default: jobmanager.rpc.address:jobmanager.rpc.port)
  --with-savepoint [DIR]       take a savepoint first (into DIR, default state.savepoints.dir; a relative DIR is
                               under state.savepoints.dir), then cancel
${COMMON}`,
  savepoint: `Usage: taskmanager savepoint <job-id> [DIR] [options]
       taskmanager savepoint info PATH
Writes a savepoint of a running job into DIR (default: state.savepoints.dir) and prints its path; restore it
with \`submit --from-savepoint PATH\`, also at another parallelism. A relative DIR is taken under the JobManager's
state.savepoints.dir (refused when that is not set), never under a working directory.
\`savepoint info PATH\` reads a savepoint (or retained checkpoint) directory and prints its operators: operator
ids, uids, parallelism, and their states with kinds and sizes; check an upgrade against it before running it.

Options:
  -m, --jobmanager HOST:PORT   the JobManager (default: jobmanager.rpc.address:jobmanager.rpc.port)
${COMMON}`,
};

const COMMON_OPTIONS = {
  config: { type: "string" },
  D: { type: "string", short: "D", multiple: true },
  help: { type: "boolean", short: "h" },
} as const;

function parse<O extends Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>>(args: string[], options: O, positionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals: positionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function config(values: { config?: string; D?: string[] }): Config {
  const cfg = loadConfig({ file: values.config, env: process.env, overrides: values.D ?? [] });
  setLogLevel(cfg["log.level"]);
  setLogFormat(cfg["log.format"]);
  useClientConfig(cfg); // the shared secret and TLS settings of client connections (submit, list, cancel, ...)
  return cfg;
}

/** Splits `[options] <job.ts> [job args]`: options end at the first positional, the job file. */
function splitJobArgs(args: string[], valued: Set<string>): { own: string[]; job: string | undefined; jobArgs: string[] } {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") return { own: args.slice(0, i), job: args[i + 1], jobArgs: args.slice(i + 2) };
    if (!a.startsWith("-")) return { own: args.slice(0, i), job: a, jobArgs: args.slice(i + 1) };
    if (valued.has(a)) i++;
  }
  return { own: args, job: undefined, jobArgs: [] };
}

/**
 * Flink's rule: options go before the job file, everything after it is the job's. A job argument that is one of
 * the command's own options (`submit job.ts -m host:6123`) was most likely meant for the command: say so, since a
 * job that ignores its arguments would otherwise run silently with the defaults.
 */
function warnOptionsAfterJob(command: string, jobArgs: string[], options: Record<string, { type: string; short?: string }>): void {
  const names = new Set(Object.entries(options).flatMap(([long, o]) => (o.short ? [`--${long}`, `-${o.short}`] : [`--${long}`])));
  for (const arg of jobArgs) {
    const name = arg.startsWith("--") ? arg.split("=")[0]! : arg;
    if (names.has(name)) console.error(`warning: job argument '${name}' looks like an option of ${command}; options go before the job file`);
  }
}

function positiveInt(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag}: expected an integer >= 1, got ${JSON.stringify(text)}`);
  return n;
}

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
}

async function runTaskManager(args: string[]): Promise<number> {
  const { values } = parse(args, COMMON_OPTIONS);
  if (values.help) return help("taskmanager");
  const cfg = config(values);
  checkDirectories(cfg, TASKMANAGER_DIRS);
  const tm = new TaskExecutor(cfg);
  await tm.start();
  const signal = await Promise.race([waitForSignal(), tm.fatal]);
  if (signal instanceof Error) {
    // Logged by the TaskExecutor; repeated as the one error line every failed command ends with.
    console.error(`error: ${signal.message}`);
    await Promise.race([tm.stop(), new Promise((r) => setTimeout(r, 2_000))]);
    return EXIT_REGISTRATION;
  }
  // Drain: no new tasks, tell the JobManager, cancel the tasks within the grace period. A second signal exits at once.
  const log = createLogger("taskmanager");
  const again = (s: string) => {
    log.warn(`${s} again: exiting at once`, {});
    process.exit(EXIT_FAILED);
  };
  process.once("SIGINT", again);
  process.once("SIGTERM", again);
  log.info(`${signal}: shutting down`, { gracePeriodMs: cfg["taskmanager.shutdown.grace-period"] });
  const drained = await tm.drain(cfg["taskmanager.shutdown.grace-period"]);
  await Promise.race([tm.stop(), new Promise((r) => setTimeout(r, drained ? 5_000 : 500))]);
  return drained ? 0 : EXIT_FAILED;
}

async function runJobManager(args: string[]): Promise<number> {
  const { values } = parse(args, COMMON_OPTIONS);
  if (values.help) return help("jobmanager");
  const cfg = config(values);
  checkDirectories(cfg, JOBMANAGER_DIRS);
  const log = createLogger("jobmanager");
  const signalled = waitForSignal();
  let jm: Awaited<ReturnType<typeof startJobManager>>;
  let signal: string;
  let standingByAgain = false;
  for (;;) {
    // A standby (etcd) waits in startJobManager until it leads; a signal meanwhile ends it. Unreachable etcd at
    // the first start exits 2; after a lost leadership (e.g. cut off from etcd) it retries until etcd answers.
    const started = startJobManager(cfg);
    const first = await Promise.race([
      started.then(
        (j) => ({ j }),
        (err: Error) => {
          if (!standingByAgain || !(err instanceof EtcdUnavailableError)) throw err;
          return { retry: err };
        },
      ),
      signalled.then((s) => ({ s })),
    ]);
    if ("retry" in first) {
      log.warn("cannot stand by: etcd unreachable; retrying", { error: first.retry.message });
      await Promise.race([new Promise((r) => setTimeout(r, 1000)), signalled]);
      continue;
    }
    if ("s" in first) {
      log.info(`${first.s} while standing by: exiting`, {});
      return 0;
    }
    jm = first.j;
    const next = await Promise.race([signalled.then((s) => ({ s })), jm.jobManager.deposed.then((reason) => ({ reason }))]);
    if ("s" in next) {
      signal = next.s;
      break;
    }
    await jm.stop(`the JobManager lost its leadership: ${next.reason}`);
    // With etcd it stands by again and may lead later; a file-HA JobManager whose lock was taken exits.
    if (cfg["high-availability.type"] !== "etcd") {
      log.error("exiting: the HA lock is no longer this JobManager's", { reason: next.reason });
      return EXIT_FAILED;
    }
    log.warn("standing by again after losing the leadership", { reason: next.reason });
    standingByAgain = true;
  }
  // A second signal exits at once: 0 if the jobs are canceled and the peers told already (only the ports are still
  // closing, e.g. waiting for a stranger's socket in its handshake), 1 if that had not finished.
  const again = (s: string) => {
    log.warn(`${s} again: exiting at once`, { drained: jm.drained });
    process.exit(jm.drained ? 0 : EXIT_FAILED);
  };
  process.once("SIGINT", again);
  process.once("SIGTERM", again);
  log.info(`${signal}: shutting down: canceling the jobs, telling clients and TaskManagers`, {});
  await jm.stop(`the JobManager is shutting down (${signal})`);
  log.info("JobManager stopped", {});
  return 0;
}

async function runLocal(args: string[]): Promise<number> {
  const { own, job, jobArgs } = splitJobArgs(args, new Set(["--config", "-D", "-p", "--parallelism", "--taskmanagers"]));
  const options = { ...COMMON_OPTIONS, parallelism: { type: "string", short: "p" }, taskmanagers: { type: "string" }, verbose: { type: "boolean", short: "v" } } as const;
  const { values } = parse(own, options);
  if (values.help) return help("local");
  if (!job) throw new UsageError("local: missing the job file, e.g. `taskmanager local examples/wordcount.ts`");
  warnOptionsAfterJob("local", jobArgs, options);
  const cfg = config(values);
  checkDirectories(cfg, [...new Set([...JOBMANAGER_DIRS, ...TASKMANAGER_DIRS])]);
  if (!values.verbose && !values.D?.some((d) => d.startsWith("log.level="))) setLogLevel("warn");
  const parallelism = positiveInt(values.parallelism, "--parallelism") ?? cfg["parallelism.default"];
  const tms = positiveInt(values.taskmanagers, "--taskmanagers") ?? 1;
  const prepared = await prepareJob(job, jobArgs, parallelism, graphOptionsOf(cfg));
  const needed = Math.max(...prepared.graph.vertices.map((v) => v.parallelism));
  const cluster = await startLocalCluster({ taskManagers: tms, slotsPerTaskManager: Math.ceil(needed / tms), config: cfg });
  try {
    return await runToEnd("127.0.0.1", cluster.port, prepared, false);
  } finally {
    await cluster.stop();
  }
}

async function runSubmit(args: string[]): Promise<number> {
  const { own, job, jobArgs } = splitJobArgs(args, new Set(["--config", "-D", "-p", "--parallelism", "-m", "--jobmanager", "-s", "--from-savepoint"]));
  const options = {
    ...COMMON_OPTIONS,
    parallelism: { type: "string", short: "p" },
    jobmanager: { type: "string", short: "m" },
    detached: { type: "boolean", short: "d" },
    "from-savepoint": { type: "string", short: "s" },
    allowNonRestoredState: { type: "boolean", short: "n" },
  } as const;
  const { values } = parse(own, options);
  if (values.help) return help("submit");
  if (!job) throw new UsageError("submit: missing the job file");
  warnOptionsAfterJob("submit", jobArgs, options);
  const cfg = config(values);
  const { host, port } = await jobManagerAddress(cfg, values.jobmanager);
  const parallelism = positiveInt(values.parallelism, "--parallelism") ?? cfg["parallelism.default"];
  const prepared = await prepareJob(job, jobArgs, parallelism, graphOptionsOf(cfg));
  const fromSavepoint = values["from-savepoint"] === undefined ? undefined : path.resolve(values["from-savepoint"]);
  const allowNonRestoredState = values.allowNonRestoredState === true;
  if (allowNonRestoredState && fromSavepoint === undefined) throw new UsageError("submit: --allowNonRestoredState (-n) needs --from-savepoint (-s)");
  const onWarning = (w: string) => console.error(`Warning: ${w}`);
  // With HA (and no -m) the wait follows the JobManager through a failover: the same job id at the next leader.
  const follow = cfg["high-availability.type"] !== "none" && values.jobmanager === undefined ? () => findJobManager(cfg, 10_000) : null;
  return runToEnd(host, port, { ...prepared, fromSavepoint, allowNonRestoredState, onWarning }, values.detached ?? false, follow);
}

/** How long `submit` with HA waits for a JobManager again after losing the one it polled. */
const FOLLOW_LEADER_MS = 120_000;

/** -m HOST:PORT, else with etcd HA the current leader (high-availability.etcd.endpoints), else the configured one. */
async function jobManagerAddress(cfg: Config, flag: string | undefined): Promise<{ host: string; port: number }> {
  if (flag === undefined) return findJobManager(cfg, 10_000);
  const m = /^(.+):(\d{1,5})$/.exec(flag);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`--jobmanager: expected HOST:PORT, got ${JSON.stringify(flag)}`);
  return { host: m[1]!, port: Number(m[2]) };
}

async function runList(args: string[]): Promise<number> {
  const { values } = parse(args, { ...COMMON_OPTIONS, jobmanager: { type: "string", short: "m" } });
  if (values.help) return help("list");
  const { host, port } = await jobManagerAddress(config(values), values.jobmanager);
  const rpc = await connectClient(host, port);
  try {
    const jobs = await rpc.request("listJobs", {});
    if (jobs.length === 0) console.log("No jobs.");
    for (const j of jobs) console.log(`${new Date(j.startTime).toISOString()} : ${j.jobId} : ${j.name} (${j.state})`);
    return 0;
  } finally {
    rpc.close();
  }
}

async function runSavepoint(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, { ...COMMON_OPTIONS, jobmanager: { type: "string", short: "m" } }, true);
  if (values.help) return help("savepoint");
  if (positionals[0] === "info") {
    if (positionals.length !== 2) throw new UsageError("savepoint info: expected one savepoint directory (or its _metadata file)");
    process.stdout.write(formatSavepointInfo(await savepointInfo(path.resolve(positionals[1]!))));
    return 0;
  }
  if (positionals.length < 1 || positionals.length > 2) throw new UsageError("savepoint: expected a job id and optionally a target directory");
  const { host, port } = await jobManagerAddress(config(values), values.jobmanager);
  const rpc = await connectClient(host, port);
  try {
    // Sent as given: the JobManager resolves a relative DIR against its state.savepoints.dir (or refuses it).
    const dir = positionals[1] ?? "";
    const r = await rpc.request("triggerSavepoint", { jobId: positionals[0]!, dir }, 15 * 60_000);
    console.log(`Savepoint completed. Path: ${path.dirname(r.path)}`);
    return 0;
  } finally {
    rpc.close();
  }
}

async function runCancel(args: string[]): Promise<number> {
  // --with-savepoint takes an optional directory: "--with-savepoint=DIR", or "--with-savepoint" alone.
  const withSavepoint = args.find((a) => a === "--with-savepoint" || a.startsWith("--with-savepoint="));
  args = args.filter((a) => a !== withSavepoint);
  const { values, positionals } = parse(args, { ...COMMON_OPTIONS, jobmanager: { type: "string", short: "m" } }, true);
  if (values.help) return help("cancel");
  if (positionals.length !== 1) throw new UsageError("cancel: expected exactly one job id");
  const { host, port } = await jobManagerAddress(config(values), values.jobmanager);
  const rpc = await connectClient(host, port);
  try {
    if (withSavepoint !== undefined) {
      const dir = withSavepoint.includes("=") ? withSavepoint.slice(withSavepoint.indexOf("=") + 1) : "";
      const r = await rpc.request("triggerSavepoint", { jobId: positionals[0]!, dir, cancel: true }, 15 * 60_000);
      console.log(`Savepoint completed. Path: ${path.dirname(r.path)}`);
    } else {
      await rpc.request("cancelJob", { jobId: positionals[0]! });
    }
    const final = await waitForJob(rpc, positionals[0]!, () => {});
    console.log(describeStatus(final));
    return final.state === "CANCELED" ? 0 : EXIT_FAILED;
  } finally {
    rpc.close();
  }
}

async function runToEnd(
  host: string,
  port: number,
  prepared: Awaited<ReturnType<typeof prepareJob>> & SubmitOptions,
  detached: boolean,
  follow: (() => Promise<{ host: string; port: number }>) | null = null,
): Promise<number> {
  let rpc = await connectClient(host, port);
  try {
    const jobId = await submitJob(rpc, prepared);
    if (detached) {
      console.log(`Job has been submitted with JobID ${jobId}`);
      return 0;
    }
    // Progress on stderr: redrawn in place on a terminal, plain lines (state changes, a summary every 5 s) otherwise.
    const progress = new JobProgress({ write: (t) => void process.stderr.write(t), tty: process.stderr.isTTY === true, columns: process.stderr.columns });
    // Ctrl-C (or SIGTERM) while waiting cancels the job, as leaving it running unseen would surprise.
    const onSignal = () => {
      progress.clear();
      console.error(`Canceling job ${jobId} ...`);
      rpc.request("cancelJob", { jobId }).catch(() => {});
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const wait = async () => {
      for (;;) {
        try {
          return await waitForJob(rpc, jobId, () => {}, 200, (s) => progress.update(s));
        } catch (err) {
          if (!follow || /^jobStatus: no job /.test((err as Error).message)) throw err;
          progress.clear();
          console.error(`lost the JobManager (${(err as Error).message}); waiting up to ${FOLLOW_LEADER_MS / 1000} s for the next one (high availability)`);
          rpc.close();
          rpc = await reconnect(follow);
        }
      }
    };
    const final = await wait().finally(() => {
      progress.clear();
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    });
    if (final.state === "FINISHED") return 0;
    console.error(describeFailure(final));
    return EXIT_FAILED;
  } finally {
    rpc.close();
  }
}

/** Connects to whichever JobManager `find` names, retrying for FOLLOW_LEADER_MS. */
async function reconnect(find: () => Promise<{ host: string; port: number }>): Promise<Awaited<ReturnType<typeof connectClient>>> {
  const deadline = Date.now() + FOLLOW_LEADER_MS;
  for (;;) {
    try {
      const { host, port } = await find();
      return await connectClient(host, port);
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`no JobManager answered within ${FOLLOW_LEADER_MS / 1000} s: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

function help(which: string): number {
  console.log(HELP[which]);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  try {
    if (first === "--version" || first === "-V") {
      console.log(`tm ${pkg.version}`);
      return 0;
    }
    if (first === "--help" || first === "-h" || first === "help") return help("main");
    switch (first) {
      case "jobmanager":
        return await runJobManager(rest);
      case "local":
        return await runLocal(rest);
      case "submit":
        return await runSubmit(rest);
      case "list":
        return await runList(rest);
      case "cancel":
        return await runCancel(rest);
      case "savepoint":
        return await runSavepoint(rest);
      case "taskmanager":
        return await runTaskManager(rest);
      default:
        if (first !== undefined && !first.startsWith("-")) throw new UsageError(`unknown command ${JSON.stringify(first)} (see --help)`);
        return await runTaskManager(argv);
    }
  } catch (err) {
    if (err instanceof BindError || /^address \S+ is already in use$|^cannot listen on /.test((err as Error)?.message ?? "")) {
      console.error(`error: ${(err as Error).message}`);
      return EXIT_BIND;
    }
    if (err instanceof DirectoryError) {
      console.error(`error: ${err.message}`);
      return EXIT_DIR;
    }
    if (err instanceof ConfigError || err instanceof UsageError || err instanceof JobFileNotFoundError || err instanceof EtcdUnavailableError) {
      console.error(`error: ${err.message}`);
      return EXIT_USAGE;
    }
    if (err instanceof JobPreparationError || err instanceof JobGraphError) {
      console.error(`error: ${err.message}`);
      return EXIT_FAILED;
    }
    console.error(`error: ${(err as Error)?.message ?? err}`);
    return EXIT_FAILED;
  }
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
