// Shared test helpers: temp dirs, job files, child processes (always killed by pid), and word counting.
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { Subprocess } from "bun";
import { Database } from "bun:sqlite";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { FrameDecoder } from "../src/rpc/framing.ts";
import type { JobStatus } from "../src/rpc/messages.ts";

export const ROOT = path.resolve(import.meta.dir, "..");
export const BUN = process.execPath;

/** The number a `SELECT count(*) AS n ...` query returns from a SQLite file, read on a connection of its own. */
export function sqliteCount(file: string, sql: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return Number((db.query(sql).get() as { n: number }).n);
  } finally {
    db.close();
  }
}

/** mulberry32: a small seeded PRNG, so randomized tests are reproducible. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const tempDirs: string[] = [];
export function tempDir(prefix = "tm-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}
export function removeTempDirs(): void {
  for (const d of tempDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** Writes a job module (TypeScript source of its default export) to a file and returns its path. */
export function writeJob(dir: string, name: string, source: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, source);
  return file;
}

/** Text of `lines` lines drawn from a vocabulary with a skewed distribution, deterministic for a seed. */
export function generateText(file: string, lines: number, seed = 7): void {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const vocab = Array.from({ length: 3000 }, (_, i) => `word${i}`).concat(["The", "the", "Zürich", "naïve", "don't"]);
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    const n = Math.floor(rand() * 12);
    const words: string[] = [];
    for (let j = 0; j < n; j++) words.push(vocab[Math.floor(rand() ** 2 * vocab.length)]!);
    out.push(words.join(rand() < 0.1 ? "  " : " "));
  }
  fs.writeFileSync(file, out.join("\n") + "\n");
}

/** Word counts computed directly, the same tokenization as examples/wordcount.ts. */
export function countWords(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    for (const w of line.toLowerCase().split(/[^\p{L}\p{N}']+/u)) if (w.length > 0) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  return counts;
}

/** Parses "(word,count)" lines from a file or from every file of a directory (optionally "n> " prefixed). */
export function readCounts(target: string): Map<string, number>[] {
  const files = fs.statSync(target).isDirectory() ? fs.readdirSync(target).map((f) => path.join(target, f)) : [target];
  const lines = files.flatMap((f) => fs.readFileSync(f, "utf8").split("\n")).filter((l) => l.length > 0);
  return [parseCountLines(lines)];
}

export function parseCountLines(lines: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const raw of lines) {
    const line = raw.replace(/^\d+> /, "");
    const match = /^\((.*),(\d+)\)$/.exec(line);
    if (!match) throw new Error(`unexpected output line ${JSON.stringify(raw)}`);
    if (m.has(match[1]!)) throw new Error(`word ${match[1]} appears twice in the output`);
    m.set(match[1]!, Number(match[2]));
  }
  return m;
}

export function expectSameCounts(actual: Map<string, number>, expected: Map<string, number>): void {
  const diffs: string[] = [];
  for (const [w, n] of expected) if (actual.get(w) !== n) diffs.push(`${w}: expected ${n}, got ${actual.get(w)}`);
  for (const w of actual.keys()) if (!expected.has(w)) diffs.push(`${w}: unexpected`);
  if (diffs.length > 0) throw new Error(`${diffs.length} differing counts, e.g. ${diffs.slice(0, 5).join("; ")}`);
}

export async function waitFor<T>(what: string, probe: () => T | undefined | null | false | Promise<T | undefined | null | false>, timeoutMs = 30_000, everyMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(everyMs);
  }
}

/** A child process whose output is captured line by line; killed by pid in stopAll(). */
export class Child {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  stdout = "";
  stderr = "";
  private static all = new Set<Child>();

  constructor(cmd: string[], env: Record<string, string> = {}, cwd = ROOT) {
    this.proc = Bun.spawn(cmd, { cwd, env: { ...process.env, ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    Child.all.add(this);
    void this.pump(this.proc.stdout, (t) => (this.stdout += t));
    void this.pump(this.proc.stderr, (t) => (this.stderr += t));
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** Waits until stdout+stderr match the pattern; returns the match. */
  async waitForOutput(pattern: RegExp, timeoutMs = 15_000): Promise<RegExpMatchArray> {
    try {
      return await waitFor(`output ${pattern} from pid ${this.pid}`, () => {
        if (this.proc.exitCode !== null && !pattern.test(this.stdout + this.stderr)) {
          throw new Error(`process ${this.pid} exited with ${this.proc.exitCode} before printing ${pattern}:\n${this.stderr.slice(-2000)}`);
        }
        return (this.stdout + this.stderr).match(pattern);
      }, timeoutMs);
    } catch (err) {
      // What the process did print is what tells why the expected line never came.
      (err as Error).message += `\nlast output of pid ${this.pid}:\n${(this.stdout + this.stderr).slice(-2000)}`;
      throw err;
    }
  }

  async exited(timeoutMs = 60_000): Promise<number> {
    const timer = setTimeout(() => this.kill(), timeoutMs);
    const code = await this.proc.exited;
    clearTimeout(timer);
    return code;
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }

  static async stopAll(): Promise<void> {
    await Child.stop([...Child.all]);
  }

  /** Kills these children (a stopped one too) by pid and waits for them to exit; the others run on. */
  static async stop(children: Child[]): Promise<void> {
    for (const c of children) {
      c.kill("SIGCONT");
      c.kill("SIGKILL");
    }
    await Promise.all(children.map((c) => c.proc.exited));
    for (const c of children) Child.all.delete(c);
  }

  private async pump(stream: ReadableStream<Uint8Array>, sink: (text: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) sink(decoder.decode(chunk, { stream: true }));
  }
}

/** Bundles a job, runs it on the cluster behind `client` and waits for its end. */
export async function runJob(client: RpcConnection, jobFile: string, args: string[], parallelism: number, pollMs = 200): Promise<JobStatus> {
  const jobId = await submitJob(client, await prepareJob(jobFile, args, parallelism));
  return waitForJob(client, jobId, () => {}, pollMs);
}

/** The committed lines of a file sink's directory (its hidden in-progress and pending files left out). */
export function committedLines(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => !f.startsWith("."))
    .flatMap((f) => fs.readFileSync(path.join(dir, f), "utf8").split("\n"))
    .filter((l) => l.length > 0);
}

/**
 * The lines of a text, by definition: split at "\n", a final "\n" does not start another line,
 * and a "\r" just before a "\n" (CRLF) is not part of the line.
 */
export function expectedLines(text: string): string[] {
  if (text === "") return [];
  const parts = text.split("\n");
  if (text.endsWith("\n")) parts.pop();
  return parts.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l));
}

/**
 * A hand-driven peer on a raw TCP connection to 127.0.0.1:port: writes `first` once connected, decodes the frames
 * the other side sends (onFrame may answer on the socket), and resolves with all of them when the other side
 * closes the connection. Rejects after timeoutMs with `what()` in the message.
 */
export function rawPeer(
  port: number,
  first: Uint8Array,
  opts: { onFrame?: (frame: unknown, sock: net.Socket) => void; timeoutMs?: number; what?: () => string } = {},
): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1");
    const decoder = new FrameDecoder();
    const got: unknown[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the peer did not close the connection${opts.what ? `:\n${opts.what()}` : ""}`));
    }, opts.timeoutMs ?? 5000);
    sock.on("connect", () => sock.write(first));
    let undecodable = false;
    sock.on("data", (d: Buffer) => {
      if (undecodable) return;
      let frames: unknown[];
      try {
        frames = decoder.push(d);
      } catch {
        undecodable = true; // what follows is not frames: keep reading (so the close reaches us), stop decoding
        return;
      }
      for (const f of frames) {
        got.push(f);
        opts.onFrame?.(f, sock);
      }
    });
    sock.on("error", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

/** Keys of keyedJob unless it is given others. */
export const KEYS = 37;

/**
 * Keyed counting over 1..n, as the exactly-once oracle (keyedCountsDiscrepancy) expects: a 1 ms pause every `every`
 * records so that the job runs for some seconds, keyed by x % keys, a count per key in ValueState, [key, count]
 * into the exactly-once file sink in `out`.
 */
export function keyedJob(out: string, n: number, every: number, opts: { keys?: number; checkpointMs?: number; backend?: "heap" | "sqlite" } = {}): string {
  const backend = opts.backend ? `.setStateBackend(${JSON.stringify(opts.backend)})` : "";
  return `
    import { FileSink, ValueStateDescriptor } from ${JSON.stringify(path.resolve(ROOT, "src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(${opts.checkpointMs ?? 300})${backend};
      env.fromSequence(1, ${n})
        .map((x) => { if (x % ${every} === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .keyBy((x) => x % ${opts.keys ?? KEYS})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
          processElement(x, ctx, out) {
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`;
}

/**
 * What is wrong with the output of a keyed counting job over 1..n keyed by x % keys, whose records are "(key,count)":
 * lines out of range, duplicates, and how many of the n expected lines are missing. An exactly-once run gives
 * { bad: [], duplicates: 0, missing: 0 }.
 */
export function keyedCountsDiscrepancy(lines: string[], n: number, keys: number): { bad: string[]; duplicates: number; missing: number } {
  const perKey = new Array<number>(keys).fill(0);
  for (let x = 1; x <= n; x++) perKey[x % keys]!++;
  const seen = new Set<string>();
  const bad: string[] = [];
  let duplicates = 0;
  for (const l of lines) {
    const m = /^\((\d+),(\d+)\)$/.exec(l);
    if (!m || Number(m[1]) >= keys || Number(m[2]) < 1 || Number(m[2]) > perKey[Number(m[1])]!) bad.push(l);
    else if (seen.has(l)) duplicates++;
    else seen.add(l);
  }
  return { bad: bad.slice(0, 5), duplicates, missing: n - seen.size };
}

/** Quick failure detection and restarts for clusters of real processes: a lost TaskManager is noticed within 2 s. */
export const FAST_RECOVERY = [
  "-D", "heartbeat.interval=200ms",
  "-D", "heartbeat.timeout=2s",
  "-D", "taskmanager.registration.max-backoff=200ms",
  "-D", "restart-strategy.type=fixed-delay",
  "-D", "restart-strategy.fixed-delay.attempts=10",
  "-D", "restart-strategy.fixed-delay.delay=200ms",
];

/**
 * A JobManager and TaskManagers tm-0, tm-1, ... (2 slots each) as child processes, all with `args` and checkpoints
 * under dir/checkpoints; each registered before it returns. Child.stopAll() stops them; the caller closes the client.
 */
export async function startProcessCluster(dir: string, taskManagers: number, args: string[] = FAST_RECOVERY): Promise<{ port: number; jm: Child; tms: Child[]; rpc: RpcConnection; startTm: (id: string) => Child }> {
  const common = ["-D", `state.checkpoints.dir=${path.join(dir, "checkpoints")}`, ...args];
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", ...common]);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/))[1]);
  const startTm = (id: string) => new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", `taskmanager.resource-id=${id}`, ...common]);
  const tms = Array.from({ length: taskManagers }, (_, i) => startTm(`tm-${i}`));
  await Promise.all(tms.map((tm) => tm.waitForOutput(/registered at the JobManager/)));
  const rpc = await connectClient("127.0.0.1", port);
  return { port, jm, tms, rpc, startTm };
}
