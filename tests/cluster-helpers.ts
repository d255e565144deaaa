// In-process clusters for tests (a JobManager and TaskManagers in the test's process: real TCP on 127.0.0.1,
// real Workers) with a connected client, started and stopped by bun:test hooks. Kept apart from helpers.ts,
// which scripts import too, because it registers test hooks.
import { afterAll, afterEach, beforeAll } from "bun:test";
import { connectClient } from "../src/client/job-client.ts";
import { startLocalCluster, type LocalCluster } from "../src/client/local-cluster.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { TERMINAL_JOB_STATES } from "../src/rpc/messages.ts";
import { defaultConfig, type Config } from "../src/config/index.ts";

type ClusterOptions = Parameters<typeof startLocalCluster>[0];

export interface TestCluster {
  cluster: LocalCluster;
  client: RpcConnection;
}

async function start(options: ClusterOptions): Promise<TestCluster> {
  const cluster = await startLocalCluster(options);
  return { cluster, client: await connectClient("127.0.0.1", cluster.port) };
}

async function stop(t: Partial<TestCluster>): Promise<void> {
  t.client?.close();
  await t.cluster?.stop();
}

/**
 * After each test on a shared cluster: every job still running is canceled and its slots are awaited, so that a
 * test that failed half-way (its job still running) does not make the next tests fail for want of slots.
 */
async function recover(t: TestCluster): Promise<void> {
  if (!t.client) return;
  for (const job of await t.client.request("listJobs", {})) {
    if (!TERMINAL_JOB_STATES.has(job.state)) await t.client.request("cancelJob", { jobId: job.jobId }).catch(() => {});
  }
  const deadline = Date.now() + 30_000;
  for (;;) {
    const o = await t.client.request("clusterOverview", {});
    if (o.slotsAvailable === o.slotsTotal) return;
    if (Date.now() > deadline) throw new Error(`after the test: ${o.slotsTotal - o.slotsAvailable} slot(s) still held 30 s after canceling its jobs`);
    await Bun.sleep(25);
  }
}

/** One cluster for the tests of a file or describe block: started in beforeAll, recovered after each test, stopped in afterAll. */
export function clusterForTests(options: () => ClusterOptions): TestCluster {
  const t = {} as TestCluster;
  beforeAll(async () => Object.assign(t, await start(options())));
  afterEach(() => recover(t));
  afterAll(() => stop(t));
  return t;
}

/** A cluster each test starts itself (with its own settings); whatever a test started is stopped after it. */
export function clusterPerTest(): (options: ClusterOptions) => Promise<TestCluster> {
  let current: TestCluster | null = null;
  afterEach(async () => {
    if (current) await stop(current);
    current = null;
  });
  return async (options) => (current = await start(options));
}

/** An in-process cluster's config for jobs that fail on purpose: fast heartbeats, 3 restarts 100 ms apart, warn logs. */
export function restartingConfig(): Config {
  return {
    ...defaultConfig(),
    "heartbeat.interval": 200,
    "heartbeat.timeout": 2000,
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": 3,
    "restart-strategy.fixed-delay.delay": 100,
    "log.level": "warn",
  };
}
