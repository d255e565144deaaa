// The HA services a JobManager runs with, from high-availability.type, and leader discovery for TaskManagers
// and clients.
import type { Config } from "../config/index.ts";
import { EtcdClient } from "./etcd-client.ts";
import { currentLeader, EtcdHaServices } from "./etcd-ha.ts";
import { FileHaServices } from "./file-ha.ts";
import { haDir, NoHaServices, type HaServices } from "./ha-services.ts";

export { FencedError, NoHaServices, haDir, type HaServices, type JobRecord, type BrokenJob, type CheckpointPointer, type LeaderAddress } from "./ha-services.ts";
export { HaLockError } from "./file-ha.ts";
export { EtcdUnavailableError } from "./etcd-client.ts";

/** `id`: the JobManager's id (its name as leader or standby). */
export function createHaServices(config: Config, id: string): HaServices {
  const dir = haDir(config);
  switch (config["high-availability.type"]) {
    case "none":
      return new NoHaServices();
    case "file":
      return new FileHaServices(dir!);
    case "etcd":
      return new EtcdHaServices(dir!, etcdClient(config), config["high-availability.cluster-id"], config["high-availability.etcd.lease-ttl"], id);
  }
}

function etcdClient(config: Config): EtcdClient {
  return new EtcdClient(config["high-availability.etcd.endpoints"], Math.max(500, Math.min(2000, config["high-availability.etcd.lease-ttl"] / 3)));
}

export interface LeaderEndpoint {
  host: string;
  port: number;
  /** The leader's id, or null when the address comes from the configuration (no etcd). */
  id: string | null;
}

/**
 * Where the JobManager is: with etcd the current leader (waiting up to waitMs for one to be elected and to
 * publish its address), otherwise jobmanager.rpc.address and port. Throws naming the endpoints when there is none.
 */
export async function findJobManager(config: Config, waitMs: number): Promise<LeaderEndpoint> {
  if (config["high-availability.type"] !== "etcd") return { host: config["jobmanager.rpc.address"], port: config["jobmanager.rpc.port"], id: null };
  const etcd = etcdClient(config);
  const deadline = Date.now() + waitMs;
  for (;;) {
    const leader = await currentLeader(etcd, config["high-availability.cluster-id"]);
    if (leader) return { host: leader.host, port: leader.port, id: leader.id };
    if (Date.now() >= deadline) {
      throw new Error(`no JobManager leads cluster ${config["high-availability.cluster-id"]} in etcd (high-availability.etcd.endpoints = ${etcd.endpoints.join(",")})`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The current leader's id with etcd (null: none now, or no etcd); for a TaskManager to follow a change. */
export async function currentLeaderId(config: Config): Promise<string | null> {
  if (config["high-availability.type"] !== "etcd") return null;
  return (await currentLeader(etcdClient(config), config["high-availability.cluster-id"]))?.id ?? null;
}
