// The JobManager role: the JobManager (RPC, scheduling, checkpoints) plus its REST API, dashboard and /metrics,
// which see it only through its gateway (src/jobmanager/gateway.ts). `taskmanager jobmanager` and `local` start it.
import type { Config } from "../config/index.ts";
import { JobManager } from "../jobmanager/jobmanager.ts";
import { RestServer } from "../rest/rest-server.ts";
import { restTokenFromConfig, securityFromConfig } from "../rpc/security.ts";
import { createLogger } from "../util/log.ts";

const log = createLogger("jobmanager");

export interface RunningJobManager {
  jobManager: JobManager;
  /** The bound RPC and REST ports. */
  port: number;
  restPort: number;
  /** True once the JobManager has canceled its jobs and told its peers (only ports are left to close). */
  readonly drained: boolean;
  /** `reason` goes to every connected peer before its connection closes. */
  stop(reason?: string): Promise<void>;
}

/** Starts the JobManager, then the REST API on rest.address:rest.port; a REST port that cannot be bound stops both. */
export async function startJobManager(config: Config): Promise<RunningJobManager> {
  const jobManager = new JobManager(config);
  const port = await jobManager.start();
  const host = config["rest.address"];
  let rest: RestServer;
  let restPort: number;
  try {
    // Bearer token of mutating calls and TLS (security.*); throws ConfigError naming the key, never the token.
    const security = securityFromConfig(config);
    const access = { allowedHosts: config["rest.allowed-hosts"], allowedOrigins: config["rest.allowed-origins"] };
    rest = new RestServer(jobManager.gateway(), (err) => log.error("REST request failed", { error: err.message }), security, restTokenFromConfig(config, security), access);
    restPort = await rest.start(host, config["rest.port"]);
  } catch (err) {
    await jobManager.stop();
    throw err;
  }
  // With etcd HA: where TaskManagers and clients find this leader.
  await jobManager.publishAddress(restPort);
  log.info("REST API started", { rest: `${host}:${restPort}`, dashboard: `${rest.tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${restPort}/` });
  return {
    jobManager,
    port,
    restPort,
    get drained() {
      return jobManager.drained;
    },
    async stop(reason?: string) {
      await jobManager.stop(reason);
      await rest.stop();
    },
  };
}
