// In-process clusters for tests (a JobManager and TaskManagers in the test's process: real TCP on 127.0.0.1,
// real Workers) with a connected client, started and stopped by bun:test hooks. Kept apart from helpers.ts,
// which scripts import too, because it registers test hooks.
import { afterAll, afterEach, beforeAll } from "bun:test";
import { connectClient } from "../src/client/job-client.ts";
import { startLocalCluster, type LocalCluster } from "../src/client/local-cluster.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";

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

/** One cluster for the tests of a file or describe block: started in beforeAll, stopped in afterAll. */
export function clusterForTests(options: () => ClusterOptions): TestCluster {
  const t = {} as TestCluster;
  beforeAll(async () => Object.assign(t, await start(options())));
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
