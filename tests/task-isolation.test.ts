// What job code in a task's Worker can do to its TaskManager, with real processes (`bun main.ts` children) on
// 127.0.0.1: it does not see the TaskManager's TM_* environment (the shared secret least of all), neither do the
// processes it starts, and process.kill of the TaskManager's pid, process.abort and process.exit fail that task
// alone, naming the call, while the TaskManager lives on and runs the next job.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { connectClient, submitJob, waitForJob } from "../src/client/job-client.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import type { JobStatus } from "../src/rpc/messages.ts";
import { BUN, Child, removeTempDirs, ROOT, tempDir } from "./helpers.ts";

const SECRET = "isolation-test-secret-0123456789abcdef";
const FAST = ["-D", "heartbeat.interval=100ms", "-D", "heartbeat.timeout=3s", "-D", "taskmanager.registration.max-backoff=200ms"];
const withSecret = { security: { secret: Buffer.from(SECRET), insecure: false, tls: null } };

const closers: (() => void)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await Child.stopAll();
});
afterAll(removeTempDirs);

/** A JobManager and one TaskManager (2 slots), both given the secret in TM_SECURITY_AUTH_SECRET, and a client. */
async function cluster(extraEnv: Record<string, string> = {}): Promise<{ rpc: RpcConnection; tm: Child }> {
  const env = { TM_SECURITY_AUTH_SECRET: SECRET, ...extraEnv };
  const jm = new Child([BUN, "main.ts", "jobmanager", "-D", "jobmanager.rpc.port=0", "-D", "restart-strategy.type=none", ...FAST], env);
  const port = Number((await jm.waitForOutput(/JobManager started rpc=127\.0\.0\.1:(\d+)/, 30_000))[1]);
  const tm = new Child([BUN, "main.ts", "-D", `jobmanager.rpc.port=${port}`, "-D", "taskmanager.numberOfTaskSlots=2", "-D", "taskmanager.resource-id=tm-iso", ...FAST], env);
  await tm.waitForOutput(/registered at the JobManager/, 30_000);
  const rpc = await connectClient("127.0.0.1", port, withSecret);
  closers.push(() => rpc.close());
  return { rpc, tm };
}

async function run(rpc: RpcConnection, dir: string, name: string, source: string): Promise<JobStatus> {
  const file = path.join(dir, name);
  fs.writeFileSync(file, source);
  const jobId = await submitJob(rpc, await prepareJob(file, [], 1));
  return waitForJob(rpc, jobId, () => {}, 50);
}

describe("job code and the TaskManager's environment", () => {
  test("a task sees no TM_* variable (not the secret given in TM_SECURITY_AUTH_SECRET), and neither do the processes it starts", async () => {
    const dir = tempDir("tm-iso-env-");
    const { rpc } = await cluster({ TM_TASKMANAGER_TMP_DIR: path.join(dir, "tmp") });
    const out = path.join(dir, "seen.json");
    // Runs in the task's Worker: what process.env and children started in four ways show of TM_*.
    const status = await run(rpc, dir, "peek.ts", `
      import { spawnSync, execSync } from "node:child_process";
      export default (env) => {
        env.fromElements(1).map(() => {
          const sh = "echo \\"[$TM_SECURITY_AUTH_SECRET][$TM_TASKMANAGER_TMP_DIR]\\"";
          return JSON.stringify({
            secret: process.env.TM_SECURITY_AUTH_SECRET ?? null,
            tmKeys: Object.keys(process.env).filter((k) => k.startsWith("TM_")),
            hasPath: typeof process.env.PATH === "string",
            bunSpawn: Bun.spawnSync(["sh", "-c", sh]).stdout.toString().trim(),
            bunSpawnObject: Bun.spawnSync({ cmd: ["sh", "-c", sh] }).stdout.toString().trim(),
            childProcess: spawnSync("sh", ["-c", sh]).stdout.toString().trim(),
            exec: execSync(sh).toString().trim(),
          });
        }).writeAsText(${JSON.stringify(out)});
      };`);
    expect(status.state).toBe("FINISHED");
    const seen = JSON.parse(fs.readFileSync(out, "utf8").trim());
    expect(seen).toEqual({ secret: null, tmKeys: [], hasPath: true, bunSpawn: "[][]", bunSpawnObject: "[][]", childProcess: "[][]", exec: "[][]" });
  }, 90_000);

  test("loading the config from process.env moves TM_SECURITY_AUTH_SECRET out of it; the secret is still what the process authenticates with", async () => {
    // In a process of its own: what loadConfig takes out of process.env stays taken for that process's life.
    const script = `
      import { environmentWithSecrets, loadConfig } from ${JSON.stringify(path.join(ROOT, "src/config/load.ts"))};
      import { securityFromConfig } from ${JSON.stringify(path.join(ROOT, "src/rpc/security.ts"))};
      const other = { TM_SECURITY_AUTH_SECRET: "another-secret-0123456789" };
      loadConfig({ env: other });
      const config = loadConfig({ env: process.env });
      console.log(JSON.stringify({
        inProcessEnv: process.env.TM_SECURITY_AUTH_SECRET ?? null,
        listed: Object.keys(process.env).includes("TM_SECURITY_AUTH_SECRET"),
        taken: environmentWithSecrets().TM_SECURITY_AUTH_SECRET,
        used: securityFromConfig(config).secret?.toString(),
        otherLeftAlone: other.TM_SECURITY_AUTH_SECRET,
        child: Bun.spawnSync(["sh", "-c", 'echo "[$TM_SECURITY_AUTH_SECRET]"'], { env: process.env }).stdout.toString().trim(),
      }));`;
    const file = path.join(tempDir("tm-iso-load-"), "load.ts");
    fs.writeFileSync(file, script);
    const child = new Child([BUN, file], { TM_SECURITY_AUTH_SECRET: SECRET });
    expect({ exit: await child.exited(30_000), stderr: child.stderr }).toEqual({ exit: 0, stderr: "" });
    expect(JSON.parse(child.stdout)).toEqual({ inProcessEnv: null, listed: false, taken: SECRET, used: SECRET, otherLeftAlone: "another-secret-0123456789", child: "[]" });
  }, 30_000);
});

describe("calls that would end the TaskManager fail the task alone", () => {
  test("process.kill of the TaskManager's pid or group, process.abort and process.exit each fail their job naming the call; the TaskManager runs the next job", async () => {
    const dir = tempDir("tm-iso-kill-");
    const { rpc, tm } = await cluster();
    const calls: [string, RegExp][] = [
      [`process.kill(process.pid, "SIGKILL")`, /^process\.kill\(\d+, "SIGKILL"\) called by the job's code/],
      [`process.kill(process.pid, "SIGTERM")`, /^process\.kill\(\d+, "SIGTERM"\) called by the job's code/],
      [`process.abort()`, /^process\.abort\(\) called by the job's code/],
      [`process.exit(0)`, /^process\.exit\(0\) called by the job's code/],
    ];
    for (const [i, [call, message]] of calls.entries()) {
      // The call is made while the task processes a record; a try/catch around it must not keep the task alive.
      const status = await run(rpc, dir, `call${i}.ts`, `export default (env) => { env.fromSequence(1, 100).map((x) => { if (x === 50) { try { ${call}; } catch {} } return x; }).addSink(() => {}); };`);
      expect({ call, state: status.state }).toEqual({ call, state: "FAILED" });
      expect(status.error?.message).toMatch(message);
      expect(status.error?.message).toContain("the task fails instead");
      expect(tm.proc.exitCode).toBeNull();
    }
    // The TaskManager is the same process, registered, and runs the next job to its end.
    const out = path.join(dir, "out");
    const ok = await run(rpc, dir, "ok.ts", `export default (env) => { env.fromSequence(1, 1000).map((x) => x * 2).writeAsText(${JSON.stringify(out)}); };`);
    expect(ok.state).toBe("FINISHED");
    expect(fs.readFileSync(out, "utf8").trim().split("\n").map(Number).reduce((a, b) => a + b, 0)).toBe(1001 * 1000);
    expect(tm.proc.exitCode).toBeNull();
    expect(tm.stdout + tm.stderr).not.toMatch(/SIGTERM: shutting down/);
    expect((await rpc.request("clusterOverview", {})).taskManagers).toBe(1);
  }, 120_000);
});
