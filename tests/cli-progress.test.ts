// Progress of `local`/`submit` on a terminal and off one, and clear start-up errors with their exit codes:
// real child processes of `bun main.ts` (and `script` from util-linux for a pseudo-terminal).
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BUN, Child, removeTempDirs, tempDir } from "./helpers.ts";
import { JobProgress } from "../src/client/job-client.ts";
import type { JobStatus } from "../src/rpc/messages.ts";

afterAll(async () => {
  await Child.stopAll();
  removeTempDirs();
});

/** A job that runs for about `seconds` s: one source, a map that spins 2 ms per record, a discarding sink. */
function slowJob(dir: string, seconds: number): string {
  const file = path.join(dir, "slow.ts");
  fs.writeFileSync(
    file,
    `export default (env) => {\n  env.fromSequence(1, ${seconds * 500}).map((x) => { const t = Date.now(); while (Date.now() - t < 2) {} return x; }).addSink(() => {});\n};\n`,
  );
  return file;
}

function which(cmd: string): string | null {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    const p = path.join(dir, cmd);
    if (dir && fs.existsSync(p)) return p;
  }
  return null;
}

function status(over: Partial<JobStatus>): JobStatus {
  return {
    jobId: "j1", name: "job", state: "RUNNING", startTime: 0, endTime: null, tasks: {} as JobStatus["tasks"], recordsIn: 0, recordsOut: 0,
    vertices: [], restarts: 0, checkpoints: { completed: 0, failed: 0, latest: null, restoredFrom: null, history: [] }, ...over,
  };
}

describe("JobProgress", () => {
  test("off a terminal: a line per state change and a summary every 5 s while RUNNING", () => {
    let now = 0;
    const out: string[] = [];
    const p = new JobProgress({ write: (t) => out.push(t), tty: false, now: () => now });
    p.update(status({ state: "SCHEDULING" }));
    for (now = 0; now <= 12_000; now += 200) p.update(status({ recordsIn: now * 2, recordsOut: now }));
    p.update(status({ state: "FINISHED", endTime: now, recordsIn: 24_000 }));
    expect(out.every((l) => l.endsWith("\n") && !l.includes("\r"))).toBe(true);
    expect(out[0]).toContain("SCHEDULING");
    expect(out[1]).toContain("RUNNING");
    const summaries = out.filter((l) => /^RUNNING \d+ s: \d+ records in/.test(l));
    expect(summaries).toHaveLength(2); // at 5 s and 10 s
    expect(summaries[1]).toMatch(/^RUNNING 10 s: 20000 records in, 10000 out, 2000 records\/s, 0 restart\(s\), no checkpoint/);
    expect(out.at(-1)).toContain("FINISHED");
  });

  test("on a terminal: the status line is redrawn in place about once a second and erased at the end", () => {
    let now = 1_000_000;
    const out: string[] = [];
    const p = new JobProgress({ write: (t) => out.push(t), tty: true, columns: 200, now: () => now });
    const latest = { id: 7, status: "COMPLETED" as const, savepoint: false, triggerTime: now - 3000, durationMs: 1000, acknowledged: 1, total: 1, sizeBytes: 10 };
    for (let i = 0; i <= 15; i++, now += 200) p.update(status({ startTime: 1_000_000, recordsIn: i * 100, restarts: 1, checkpoints: { completed: 1, failed: 0, latest, restoredFrom: null, history: [] } }));
    const redraws = out.filter((t) => t.startsWith("RUNNING"));
    expect(redraws.length).toBe(4); // at 0, 1, 2 and 3 s: once a second, not on every 200 ms poll
    expect(out.filter((t) => t === "\r\x1b[2K").length).toBe(3);
    expect(redraws.every((t) => !t.includes("\n"))).toBe(true);
    expect(redraws[0]).toContain("checkpoint 7 2 s ago");
    expect(redraws[0]).toContain("1 restart(s)");
    p.update(status({ state: "FINISHED", endTime: now }));
    expect(out.at(-2)).toBe("\r\x1b[2K");
    expect(out.at(-1)).toMatch(/FINISHED.*\n$/);
  });
});

// The two jobs run side by side (each a process of its own; the first takes 14 s by design).
describe("progress of local", () => {
  test.concurrent("not a TTY: plain lines, one per state change and a summary with the records count while RUNNING", async () => {
    // 14 s of records: summaries at 5 and 10 s, so that one comes after the task's first metrics even when its
    // Worker takes seconds to start on a loaded machine.
    const job = slowJob(tempDir(), 14);
    const child = new Child([BUN, "main.ts", "local", job]);
    expect(await child.exited(90_000)).toBe(0);
    const lines = child.stderr.split("\n");
    expect(child.stderr).not.toContain("\r");
    expect(child.stderr).not.toContain("\x1b[");
    expect(lines.some((l) => /^Job "slow" \(\w+\) RUNNING$/.test(l))).toBe(true);
    const summaries = lines.map((l) => /^RUNNING (\d+) s: (\d+) records in, \d+ out, \d+ records\/s, 0 restart\(s\), no checkpoint$/.exec(l)).filter((m) => m !== null);
    expect(summaries.length).toBeGreaterThanOrEqual(1);
    expect(Math.max(...summaries.map((m) => Number(m![2])))).toBeGreaterThan(0);
    expect(child.stderr).toMatch(/FINISHED after [\d.]+ s; 7000 records read by sources, 7000 records into sinks/);
  }, 100_000);

  const script = which("script");
  (script === null ? test.skip : test.concurrent)("a TTY (script -qfc): the status line is refreshed in place with CR and erase-line", async () => {
    const job = slowJob(tempDir(), 4);
    // script(1) runs the command on a pseudo-terminal and copies what it writes to our stdout.
    const child = new Child([script!, "-qfec", `${BUN} main.ts local ${job}`, "/dev/null"]);
    expect(await child.exited(60_000)).toBe(0);
    const out = child.stdout;
    const redraws = out.split("\r\x1b[2K").filter((s) => /^RUNNING \d+ s: \d+ records in/.test(s));
    expect(redraws.length).toBeGreaterThanOrEqual(2);
    expect(out).toMatch(/FINISHED after [\d.]+ s; 2000 records read by sources/);
  }, 70_000);
});

describe("start-up errors", () => {
  async function run(args: string[], timeoutMs = 30_000) {
    const child = new Child([BUN, "main.ts", ...args]);
    const code = await child.exited(timeoutMs);
    return { code, stdout: child.stdout, stderr: child.stderr };
  }

  // A path under a regular file cannot be created, even by root: a portable unusable directory.
  for (const [role, key] of [
    ["taskmanager", "taskmanager.state.dir"],
    ["taskmanager", "taskmanager.tmp.dir"],
    ["taskmanager", "state.checkpoints.dir"],
    ["jobmanager", "jobmanager.storage.dir"],
    ["jobmanager", "state.checkpoints.dir"],
    ["local", "taskmanager.state.dir"],
  ] as const) {
    test(`${role}: an uncreatable ${key} exits 4 with one line naming the key and the path`, async () => {
      const dir = tempDir();
      fs.writeFileSync(path.join(dir, "file"), "");
      const bad = path.join(dir, "file", "sub");
      const r = await run([role, "-D", `${key}=${bad}`, ...(role === "local" ? ["examples/wordcount.ts"] : [])]);
      expect(r.code).toBe(4);
      expect(r.stderr.trim().split("\n")).toEqual([`error: ${key}: cannot create the directory ${bad}: a part of the path is a file, not a directory (ENOTDIR)`]);
    });
  }

  test("an existing file as the directory exits 4 too", async () => {
    const dir = tempDir();
    const file = path.join(dir, "file");
    fs.writeFileSync(file, "");
    const r = await run(["taskmanager", "-D", `taskmanager.tmp.dir=${file}`]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`taskmanager.tmp.dir: cannot create the directory ${file}: it exists and is not a directory`);
  });

  test("a usable directory is created and left without probe files", async () => {
    const dir = path.join(tempDir(), "a", "b");
    const child = new Child([BUN, "main.ts", "taskmanager", "-D", `taskmanager.state.dir=${dir}`, "-D", "jobmanager.rpc.port=1", "-D", "taskmanager.registration.timeout=60s"]);
    await child.waitForOutput(/cannot register at the JobManager/);
    expect(fs.readdirSync(dir)).toEqual([]);
    child.kill("SIGTERM");
    expect(await child.exited(15_000)).toBe(0);
  });

  test("an unreachable JobManager: one clear warning naming the address, retries, then exit 5 after taskmanager.registration.timeout", async () => {
    const t0 = Date.now();
    const r = await run(["taskmanager", "-D", "jobmanager.rpc.port=1", "-D", "taskmanager.registration.timeout=2500ms", "-D", "taskmanager.registration.max-backoff=200ms"]);
    const elapsed = Date.now() - t0;
    expect(r.code).toBe(5);
    expect(elapsed).toBeGreaterThanOrEqual(2500);
    const warnings = r.stderr.split("\n").filter((l) => l.includes("WARN"));
    expect(warnings[0]).toMatch(/cannot register at the JobManager 127\.0\.0\.1:1 \(jobmanager\.rpc\.address\/port\): .*ECONNREFUSED.*; retrying with backoff up to 200 ms, exiting after taskmanager\.registration\.timeout \(2500 ms\)/);
    expect(warnings.length).toBeLessThanOrEqual(2); // retries are logged at debug level, every 10th as a warning
    expect(r.stderr.trim().split("\n").at(-1)).toBe("error: could not register at the JobManager 127.0.0.1:1 within taskmanager.registration.timeout (2500 ms); giving up");
  });

  test("a JobManager that comes up within the timeout: the TaskManager keeps retrying, then registers", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = probe.port;
    probe.stop(true);
    const tm = new Child([BUN, "main.ts", "taskmanager", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.registration.timeout=60s", "-D", "taskmanager.registration.max-backoff=300ms"]);
    await tm.waitForOutput(new RegExp(`cannot register at the JobManager 127\\.0\\.0\\.1:${port} .*ECONNREFUSED`));
    await Bun.sleep(1000);
    expect(tm.proc.exitCode).toBeNull();
    const jm = new Child([BUN, "main.ts", "jobmanager", "-D", `jobmanager.rpc.port=${port}`]);
    await tm.waitForOutput(/registered at the JobManager/, 20_000);
    tm.kill("SIGTERM");
    expect(await tm.exited(15_000)).toBe(0);
    jm.kill("SIGTERM");
    expect(await jm.exited(15_000)).toBe(0);
  }, 40_000);
});
