// A real partition with etcd HA: the leader JobManager in one network namespace; etcd, the standby JobManager,
// both TaskManagers and the job's client in another (tests/netns.ts: namespaces joined by a bridge, nothing added
// to the test process's own). The leader's link goes down mid-job: it cannot renew its lease and stops acting;
// the standby leads and the job goes on with exactly-once output. When the link is back, the old leader rejoins
// as a standby. Needs root, `ip netns` and etcd; elsewhere the suite is skipped, saying why.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { BUN, Child, committedLines, keyedCountsDiscrepancy, removeTempDirs, tempDir, waitFor, writeJob, keyedJob, KEYS } from "./helpers.ts";
import { TestNetwork, netnsUnavailable } from "./netns.ts";

const unavailable = netnsUnavailable() ?? (spawnSync("which", ["etcd"]).status === 0 ? null : "etcd is not installed (Debian package etcd-server)");
if (unavailable) console.warn(`tests/ha-partition.test.ts: skipped: ${unavailable}`);
const describeIfAble = unavailable ? describe.skip : describe;

const LEADER = 0; // host of the first (leader) JobManager
const REST = 1; // host of etcd, the standby, the TaskManagers and the client

let net: TestNetwork | null = null;
afterEach(async () => {
  await Child.stopAll();
  net?.destroy();
  net = null;
});
afterAll(removeTempDirs);

interface Status {
  t: number;
  state: string;
  restarts: number;
  adoptions: number;
  running: number;
  total: number;
  checkpoints: number;
  leader: string;
}

describeIfAble("etcd HA across a real partition (network namespaces)", () => {
  test("the leader cut off from etcd, the standby and the TaskManagers: it stops acting, the standby leads, output exact; healed, it rejoins as a standby", async () => {
    net = new TestNetwork(2);
    const dir = tempDir("tm-ha-netns-");
    const secretFile = path.join(dir, "secret");
    fs.writeFileSync(secretFile, Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64"), { mode: 0o600 });
    const etcdUrl = `http://${net.address(REST)}:2379`;
    new Child(net.exec(REST, [
      "etcd", "--name", "tm-netns", "--data-dir", path.join(dir, "etcd"),
      "--listen-client-urls", etcdUrl, "--advertise-client-urls", etcdUrl,
      "--listen-peer-urls", `http://${net.address(REST)}:2380`, "--initial-advertise-peer-urls", `http://${net.address(REST)}:2380`,
      "--initial-cluster", `tm-netns=http://${net.address(REST)}:2380`,
    ]));
    const ha = ["-D", "high-availability.type=etcd", "-D", `high-availability.etcd.endpoints=${etcdUrl}`, "-D", `security.auth.secret-file=${secretFile}`];
    const jmArgs = (host: number) => [BUN, "main.ts", "jobmanager", ...ha, "-D", `high-availability.storageDir=${path.join(dir, "ha")}`, "-D", `jobmanager.rpc.address=${net!.address(host)}`, "-D", "jobmanager.rpc.port=6123", "-D", "rest.address=127.0.0.1", "-D", "rest.port=0", "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=50"];
    // The first JobManager retries until etcd is up only once it stood by; at start it needs etcd: wait for it.
    const a = await waitFor("the first JobManager leading", async () => {
      const c = new Child(net!.exec(LEADER, jmArgs(LEADER)));
      const out = await Promise.race([c.waitForOutput(/JobManager started .*epoch=\d+/, 30_000).then(() => c), c.proc.exited.then(() => null)]);
      return out;
    }, 60_000, 500);
    const b = new Child(net.exec(REST, jmArgs(REST)));
    await b.waitForOutput(/standing by/, 30_000);
    const tms = ["tm-1", "tm-2"].map((id) => new Child(net!.exec(REST, [BUN, "main.ts", ...ha, "-D", `taskmanager.host=${net!.address(REST)}`, "-D", `taskmanager.resource-id=${id}`, "-D", "taskmanager.numberOfTaskSlots=2"])));
    await Promise.all(tms.map((t) => t.waitForOutput(/registered at the JobManager/, 30_000)));

    const N = 250_000;
    const out = path.join(dir, "out");
    const agent = new Child(net.exec(REST, [BUN, "tests/fixtures/ha-status-agent.ts", etcdUrl, secretFile, writeJob(dir, "job.ts", keyedJob(out, N, 10)), "2"]));
    const statuses: Status[] = [];
    let seen = 0;
    const parse = () => {
      const lines = agent.stdout.split("\n");
      for (; seen < lines.length - 1; seen++) statuses.push(JSON.parse(lines[seen]!));
    };
    const timer = setInterval(parse, 20);
    const latest = () => (parse(), statuses[statuses.length - 1]);
    try {
      const before = await waitFor("RUNNING with two checkpoints", () => {
        const s = latest();
        return s && s.state === "RUNNING" && s.running === s.total && s.checkpoints >= 2 && s;
      }, 90_000, 50);
      const cutAt = Date.now();
      const mark = a.stderr.length;
      net.cut(LEADER);
      await a.waitForOutput(/lost leadership/, 15_000);
      const steppedDownMs = Date.now() - cutAt;
      await b.waitForOutput(/leading \(etcd\)/, 30_000);
      const again = await waitFor("RUNNING under the standby", () => {
        const s = latest();
        return s && s.leader !== before.leader && s.t > cutAt && s.state === "RUNNING" && s.running === s.total && (s.adoptions > 0 || s.restarts > 0) && s;
      }, 60_000, 50);
      // The new leader's own view (its log line's time): the job running again, adopted or restored. The client's
      // view comes later when its poll was still waiting on the cut-off leader.
      const line = /^(\S+) INFO\s+\[jobmaster\] (adopted the running attempt|job state changed .*state=RUNNING)/m.exec(b.stderr);
      const runningAgainMs = line ? Date.parse(line[1]!) - cutAt : null;
      const clientSawMs = again.t - cutAt;
      net.heal(LEADER);
      const healMark = a.stderr.length;
      await waitFor("the old leader standing by again", () => /standing by: another JobManager leads/.test(a.stderr.slice(healMark)), 30_000, 100);
      await agent.exited(180_000);
      const end = latest()!;
      expect(end.state).toBe("FINISHED");
      expect(keyedCountsDiscrepancy(committedLines(out), N, KEYS)).toEqual({ bad: [], duplicates: 0, missing: 0 });
      // Cut off, the old leader completed no checkpoint, deployed and adopted nothing.
      expect(a.stderr.slice(mark)).not.toMatch(/checkpoint complete|state=RUNNING|adopted/);
      // It stopped acting before its lease (3 s) could lapse and another lead.
      expect(steppedDownMs).toBeLessThan(3_000 + 1_000);
      if (process.env.TM_DEBUG_HA) console.log(`cut at ${new Date(cutAt).toISOString()}\n${[b, ...tms].map((c) => c.stderr.split("\n").filter((l) => /leading|started|adopt|lost|registered|leader|keeping|recovered/.test(l)).join("\n")).join("\n---\n")}`);
      console.log(`partition figures: ${JSON.stringify({ scenario: "etcd leader cut off (lease 3 s)", steppedDownMs, runningAgainMs, clientSawMs, adopted: again.adoptions > 0 })}`);
    } finally {
      clearInterval(timer);
    }
  }, 300_000);
});
