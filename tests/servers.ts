// Real PostgreSQL and NATS servers for connector tests: each on a free loopback port in a temp dir, started as a
// child process and stopped by pid. PostgreSQL's initdb refuses to run as root, so the cluster directory belongs to
// the `postgres` user and the server runs as that user (runuser); its pid comes from postmaster.pid.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import postgres from "postgres";
import type { Subprocess } from "bun";
import type { JobStatus } from "../src/rpc/messages.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { type Child, startProcessCluster, tempDir, waitFor } from "./helpers.ts";

const CLUSTER = [
  "-D", "heartbeat.interval=200ms",
  "-D", "heartbeat.timeout=2s",
  "-D", "taskmanager.registration.max-backoff=200ms",
  "-D", "restart-strategy.type=fixed-delay",
  "-D", "restart-strategy.fixed-delay.attempts=20",
  "-D", "restart-strategy.fixed-delay.delay=300ms",
];

/** A JobManager and TaskManagers (2 slots each) as child processes (stopped by Child.stopAll()); the client is closed by the caller. */
export function startCluster(dir: string, taskManagers: number): ReturnType<typeof startProcessCluster> {
  return startProcessCluster(dir, taskManagers, CLUSTER);
}



/** The TaskManagers that run a task of the job now. */
export function runningTaskManagers(s: JobStatus): string[] {
  return [...new Set(s.vertices.flatMap((v) => v.subtasks.filter((t) => t.state === "RUNNING").map((t) => t.taskManager)))];
}

/** Waits for a RUNNING job with all tasks running and a checkpoint completed after `before`. */
export async function runningWithNewCheckpoint(rpc: RpcConnection, jobId: string, before: number, jm: Child): Promise<JobStatus> {
  return waitFor("a running job with a new checkpoint", async () => {
    const s = await rpc.request("jobStatus", { jobId });
    if (s.state === "FAILED") throw new Error(`job failed: ${s.error?.message}`);
    return s.state === "RUNNING" && s.tasks.RUNNING === s.vertices.reduce((a, v) => a + v.parallelism, 0) && s.checkpoints.completed > before && s;
  }, 60_000).catch(async (err) => {
    throw new Error(`${err.message}; job status: ${JSON.stringify(await rpc.request("jobStatus", { jobId }))}\nJobManager: ${jm.stderr.slice(-3000)}`);
  });
}

/** A server process with its output captured; not in Child's registry, so tests' Child.stopAll() leaves it alone. */
class ServerProcess {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  output = "";
  constructor(cmd: string[]) {
    this.proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    void this.pump(this.proc.stdout);
    void this.pump(this.proc.stderr);
  }
  private async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) this.output = (this.output + decoder.decode(chunk, { stream: true })).slice(-20_000);
  }
  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    try {
      process.kill(this.proc.pid, signal);
    } catch {
      // gone already
    }
  }
}

export const PG_PASSWORD = "tm-secret";

/** A free TCP port on 127.0.0.1 (bound, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function run(cmd: string[], what: string): void {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${what} failed (${r.status}): ${r.stderr || r.stdout}`);
}

function asPostgresUser(cmd: string[]): string[] {
  return process.getuid?.() === 0 ? ["runuser", "-u", "postgres", "--", ...cmd] : cmd;
}

export interface PgServer {
  port: number;
  dir: string;
  url: string;
  /** A client as superuser (closed by stop()). */
  sql: postgres.Sql;
  /** The postmaster's pid. */
  pid(): number;
  start(): Promise<void>;
  /** Fast shutdown (SIGINT to the postmaster), waiting until it is gone. */
  stop(): Promise<void>;
  /** Settings of postgresql.conf for the next start. */
  setConf(lines: string[]): void;
}

const PG_BIN = fs.existsSync("/usr/lib/postgresql/15/bin") ? "/usr/lib/postgresql/15/bin" : "";
const pgTool = (name: string) => (PG_BIN ? path.join(PG_BIN, name) : name);

/** initdb in a temp dir, then a server on a free port with logical replication and prepared transactions. */
export async function startPostgres(conf: string[] = ["max_prepared_transactions = 10"]): Promise<PgServer> {
  const root = tempDir("tm-pg-");
  const dir = path.join(root, "data");
  fs.mkdirSync(dir);
  const pwfile = path.join(root, "pw");
  fs.writeFileSync(pwfile, PG_PASSWORD + "\n");
  if (process.getuid?.() === 0) {
    fs.chmodSync(root, 0o755);
    run(["chown", "-R", "postgres:postgres", root], "chown");
  }
  run(asPostgresUser([pgTool("initdb"), "-D", dir, "-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=trust", `--pwfile=${pwfile}`, "-E", "UTF8", "--no-sync"]), "initdb");
  const port = await freePort();
  const base = [`port = ${port}`, "listen_addresses = '127.0.0.1'", `unix_socket_directories = '${dir}'`, "wal_level = logical", "max_replication_slots = 10", "max_wal_senders = 10", "fsync = off", "synchronous_commit = off", "log_min_messages = fatal"];
  const confFile = path.join(dir, "postgresql.conf");
  const original = fs.readFileSync(confFile, "utf8");
  let child: ServerProcess | null = null;
  let pid = 0;
  const server: PgServer = {
    port,
    dir,
    url: `postgres://postgres:${PG_PASSWORD}@127.0.0.1:${port}/postgres`,
    sql: null as unknown as postgres.Sql,
    pid: () => pid,
    setConf(lines) {
      fs.writeFileSync(confFile, original + "\n" + [...base, ...lines].join("\n") + "\n");
    },
    async start() {
      child = new ServerProcess(asPostgresUser([pgTool("postgres"), "-D", dir]));
      await waitFor("PostgreSQL to accept connections", async () => {
        if (child!.proc.exitCode !== null) throw new Error(`postgres exited with ${child!.proc.exitCode}: ${child!.output.slice(-2000)}`);
        const pidFile = path.join(dir, "postmaster.pid");
        if (!fs.existsSync(pidFile)) return false;
        const lines = fs.readFileSync(pidFile, "utf8").split("\n");
        if (!/ready/.test(lines[7] ?? "")) return false;
        pid = Number(lines[0]);
        return true;
      }, 30_000, 50);
    },
    async stop() {
      if (pid > 0) {
        const p = pid;
        pid = 0;
        try {
          process.kill(p, "SIGINT");
        } catch {
          return;
        }
        await waitFor("PostgreSQL to stop", () => {
          try {
            process.kill(p, 0);
            return false;
          } catch {
            return true;
          }
        }, 30_000, 50);
      }
      // runuser exits with the server; killed by pid in case it did not.
      child?.kill();
      await child?.proc.exited;
    },
  };
  server.setConf(conf);
  await server.start();
  server.sql = postgres(server.url, { max: 4, onnotice: () => {}, idle_timeout: 0 });
  return server;
}

export async function stopPostgres(s: PgServer | null): Promise<void> {
  if (!s) return;
  await s.sql?.end({ timeout: 1 }).catch(() => {});
  await s.stop();
}

export interface NatsServer {
  port: number;
  url: string;
  child: ServerProcess;
  stop(): Promise<void>;
}

/** nats-server with JetStream, its store in a temp dir. */
export async function startNats(): Promise<NatsServer> {
  const dir = tempDir("tm-nats-");
  const port = await freePort();
  const child = new ServerProcess(["nats-server", "-js", "-sd", dir, "-a", "127.0.0.1", "-p", String(port)]);
  await waitFor("nats-server to be ready", () => {
    if (child.proc.exitCode !== null) throw new Error(`nats-server exited with ${child.proc.exitCode}: ${child.output.slice(-2000)}`);
    return /Server is ready/.test(child.output);
  }, 30_000, 50);
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    child,
    async stop() {
      child.kill("SIGKILL");
      await child.proc.exited;
    },
  };
}
