// High-availability services (Flink's HighAvailabilityServices, in our terms): leader election with a fencing
// epoch, the job graph store, the pointer to each job's latest completed checkpoint and the checkpoint id counter.
// The bulk (job records, artifacts, checkpoint metadata) lives in high-availability.storageDir; what decides who
// leads and which pointer is current lives in the HA service (a lock file, or etcd). Every write that could let
// a deposed leader act (job records, pointers, the counter) is fenced by the epoch: it fails once a newer leader
// exists. `none` keeps today's behaviour: epoch 0, always the leader, nothing survives the process.
import * as path from "node:path";
import { ConfigError, type Config } from "../config/index.ts";
import type { JobGraph } from "../graph/job-graph.ts";

/** A job as the store keeps it: enough to run it again after a failover. */
export interface JobRecord {
  jobId: string;
  name: string;
  graph: JobGraph;
  artifactHash: string;
  jobArgs: string[];
  /** The savepoint it was submitted from (its metadata path), if any. */
  fromSavepoint: string | null;
  submittedAt: number;
  /** The highest attempt deployed so far: a recovered job continues with attempt + 1 unless it adopts this one. */
  attempt: number;
}

/** A job whose stored record cannot be used (corrupt, foreign): failed with its path named; the others recover. */
export interface BrokenJob {
  jobId: string;
  path: string;
  error: string;
}

export interface CheckpointPointer {
  checkpointId: number;
  /** The checkpoint's (or savepoint's) _metadata file. */
  path: string;
  /** The leadership that completed it. */
  epoch: number;
}

/** Where the leader serves, published for TaskManagers and clients (etcd mode). */
export interface LeaderAddress {
  id: string;
  host: string;
  port: number;
  restPort: number;
}

/** Thrown when a write is refused because a newer leader exists (or leadership could not be confirmed). */
export class FencedError extends Error {
  override name = "FencedError";
}

export interface HaServices {
  readonly type: "none" | "file" | "etcd";
  /** <storageDir>/<cluster-id>, or null without HA. */
  readonly dir: string | null;
  /** This process's leadership epoch (0 without HA or before leading). */
  readonly epoch: number;
  /** Resolves once this process leads; with etcd a standby waits here. */
  becomeLeader(): Promise<number>;
  /** Publishes where the leader serves (etcd: the leader key's value, under its lease). */
  publishAddress(address: LeaderAddress): Promise<void>;
  /** Local and synchronous: false as soon as leadership may be lost (lease not renewed in time, lock taken). */
  isLeader(): boolean;
  /** Asks the service itself (etcd: a read compared with the leader key); rejects with FencedError when deposed. */
  confirmLeadership(): Promise<void>;
  /** Called once when leadership is lost; the JobManager stops acting at once. */
  onLeadershipLost(cb: (reason: string) => void): void;
  /** The other JobManagers waiting to lead (etcd), for the dashboard. */
  standbys(): Promise<LeaderAddress[]>;

  putJob(record: JobRecord): Promise<void>;
  removeJob(jobId: string): Promise<void>;
  /** A job record that cannot be used is moved aside (named in the returned path) so that it fails only once. */
  quarantineJob(jobId: string): Promise<string>;
  recoverJobs(): Promise<{ jobs: JobRecord[]; broken: BrokenJob[] }>;

  /** Points the job at a completed checkpoint; refused (FencedError) for a deposed leader or an older epoch. */
  setLatestCheckpoint(jobId: string, checkpointId: number, metadataPath: string): Promise<void>;
  latestCheckpoint(jobId: string): Promise<CheckpointPointer | null>;
  /** Records that checkpoint ids up to `id` are used, before it is triggered (fenced). */
  reserveCheckpointId(jobId: string, id: number): Promise<void>;
  /** The highest checkpoint id ever reserved for the job (0 = none). */
  checkpointIdCounter(jobId: string): Promise<number>;

  /** Releases leadership (lock file, lease). */
  close(): Promise<void>;
}

/** No HA: one JobManager, epoch 0, nothing stored. */
export class NoHaServices implements HaServices {
  readonly type = "none" as const;
  readonly dir = null;
  readonly epoch = 0;
  async becomeLeader(): Promise<number> {
    return 0;
  }
  async publishAddress(): Promise<void> {}
  isLeader(): boolean {
    return true;
  }
  async confirmLeadership(): Promise<void> {}
  onLeadershipLost(): void {}
  async standbys(): Promise<LeaderAddress[]> {
    return [];
  }
  async putJob(): Promise<void> {}
  async removeJob(): Promise<void> {}
  async quarantineJob(jobId: string): Promise<string> {
    return jobId;
  }
  async recoverJobs(): Promise<{ jobs: JobRecord[]; broken: BrokenJob[] }> {
    return { jobs: [], broken: [] };
  }
  async setLatestCheckpoint(): Promise<void> {}
  async latestCheckpoint(): Promise<CheckpointPointer | null> {
    return null;
  }
  async reserveCheckpointId(): Promise<void> {}
  async checkpointIdCounter(): Promise<number> {
    return 0;
  }
  async close(): Promise<void> {}
}

/** The directory of this cluster's HA data; a ConfigError when HA is on without a storage dir. */
export function haDir(config: Config): string | null {
  const type = config["high-availability.type"];
  if (type === "none") return null;
  const dir = config["high-availability.storageDir"];
  if (!dir) throw new ConfigError(`high-availability.type = ${type} needs high-availability.storageDir: where job graphs, artifacts and checkpoint pointers survive the JobManager`);
  const id = config["high-availability.cluster-id"];
  if (!/^[A-Za-z0-9._-]+$/.test(id) || id === "." || id === "..") throw new ConfigError(`high-availability.cluster-id: ${JSON.stringify(id)} must be letters, digits, '.', '_' or '-'`);
  return path.join(dir, id);
}

/** Checks a record read back from the store; throws naming what is wrong. */
export function checkJobRecord(r: any, jobId: string): JobRecord {
  const bad = (what: string) => new Error(`not a job record of this cluster: ${what}`);
  if (typeof r !== "object" || r === null) throw bad("not an object");
  if (r.jobId !== jobId) throw bad(`it names job ${JSON.stringify(r.jobId)}, its place is job ${jobId}`);
  if (typeof r.artifactHash !== "string" || !/^[0-9a-f]{64}$/.test(r.artifactHash)) throw bad("artifactHash missing");
  if (!Array.isArray(r.jobArgs)) throw bad("jobArgs missing");
  if (!Number.isInteger(r.attempt) || r.attempt < 0) throw bad("attempt missing");
  const g = r.graph;
  if (typeof g !== "object" || g === null || !Array.isArray(g.vertices) || g.vertices.length === 0 || !Array.isArray(g.edges)) throw bad("no job graph");
  return r as JobRecord;
}
