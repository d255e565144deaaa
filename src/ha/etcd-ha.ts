// etcd HA: leader election with a lease and transactions, for several hosts. Keys under /tm/<cluster-id>/:
//   leader                 the leader's address (JSON), under its lease; created only if absent, so its create
//                          revision is the leadership's epoch
//   standby/<id>           each waiting JobManager, under its own lease (for the dashboard)
//   jobs/<jobId>           {path, attempt}: the job record's file in high-availability.storageDir
//   checkpoints/<jobId>    the pointer to the latest completed checkpoint's _metadata
//   counter/<jobId>        the highest checkpoint id used
// Every write is a transaction that compares the leader key's create revision with this leadership's epoch, so
// a deposed leader's write fails. The lease is renewed every third of its TTL; a leader that could not renew for
// two thirds of it stops acting (isLeader() turns false at once, then the leadership-lost callbacks run).
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../util/files.ts";
import { createLogger } from "../util/log.ts";
import { EtcdClient, type KeyValue } from "./etcd-client.ts";
import { checkJobRecord, FencedError, type BrokenJob, type CheckpointPointer, type HaServices, type JobRecord, type LeaderAddress } from "./ha-services.ts";

const log = createLogger("ha");

export function etcdPrefix(clusterId: string): string {
  return `/tm/${clusterId}/`;
}

export class EtcdHaServices implements HaServices {
  readonly type = "etcd" as const;
  epoch = 0;
  private lease: string | null = null;
  private standbyLease: string | null = null;
  private renewedAt = 0;
  private leading = false;
  private closed = false;
  private renewTimer: ReturnType<typeof setInterval> | null = null;
  private lost: ((reason: string) => void)[] = [];
  private readonly ttlMs: number;
  private readonly prefix: string;

  constructor(
    readonly dir: string,
    private readonly etcd: EtcdClient,
    clusterId: string,
    ttlMs: number,
    private readonly id: string,
  ) {
    this.ttlMs = ttlMs;
    this.prefix = etcdPrefix(clusterId);
  }

  private key(k: string): string {
    return this.prefix + k;
  }

  /** Campaigns until this process leads: create the leader key under a fresh lease only if it is absent. */
  async becomeLeader(): Promise<number> {
    fs.mkdirSync(path.join(this.dir, "jobs"), { recursive: true });
    const ttlS = Math.max(1, Math.ceil(this.ttlMs / 1000));
    let announced = false;
    while (!this.closed) {
      try {
        const epoch = await this.campaign(ttlS, announced);
        if (epoch !== null) return epoch;
        announced = true;
      } catch (err) {
        // Unreachable at the first contact: the caller says so (exit 2). Once standing by: retry, saying so.
        if (!announced) throw err;
        log.warn("standing by: etcd unreachable; retrying", { error: (err as Error).message });
        await new Promise((r) => setTimeout(r, Math.max(100, this.ttlMs / 3)));
      }
    }
    throw new Error("closed while standing by");
  }

  /** One round: leads (returns the epoch) or stays a standby for about a third of the TTL (returns null). */
  private async campaign(ttlS: number, announced: boolean): Promise<number | null> {
    {
      const lease = await this.etcd.grant(ttlS);
      const placeholder = JSON.stringify({ id: this.id, host: "", port: 0, restPort: 0 });
      const r = await this.etcd.txn([{ key: this.key("leader"), createRevision: 0 }], [{ put: { key: this.key("leader"), value: placeholder, lease } }]);
      if (r.succeeded) {
        this.lease = lease;
        this.epoch = r.revision; // the leader key's create revision
        this.renewedAt = Date.now();
        this.leading = true;
        this.startRenewing();
        if (this.standbyLease) await this.etcd.revoke(this.standbyLease).catch(() => {});
        this.standbyLease = null;
        log.info("leading (etcd)", { epoch: this.epoch, leaseTtlMs: this.ttlMs });
        return this.epoch;
      }
      await this.etcd.revoke(lease).catch(() => {});
      if (!announced) {
        log.info("standing by: another JobManager leads; waiting for its lease to lapse", { leader: (await this.etcd.get(this.key("leader")))?.value });
      }
      this.standbyLease ??= await this.etcd.grant(ttlS);
      // Stay listed as a standby while waiting; poll the leader key (a few times per lease).
      const until = Date.now() + Math.max(100, this.ttlMs / 3);
      await this.etcd.put(this.key(`standby/${this.id}`), JSON.stringify({ id: this.id }), this.standbyLease!).catch(() => {});
      if ((await this.etcd.keepAlive(this.standbyLease!, this.ttlMs / 3).catch(() => 0)) <= 0) this.standbyLease = null;
      while (Date.now() < until && !this.closed) {
        if (!(await this.etcd.get(this.key("leader")))) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      return null;
    }
  }

  private startRenewing(): void {
    let busy = false;
    const tick = async () => {
      if (!this.leading) return;
      // No renewal for two thirds of the TTL: stop acting now, before the lease can lapse and another lead.
      if (Date.now() - this.renewedAt > (this.ttlMs * 2) / 3) return this.loseLeadership(`the etcd lease was not renewed for ${Math.round((this.ttlMs * 2) / 3)} ms (2/3 of high-availability.etcd.lease-ttl)`);
      if (busy || Date.now() - this.renewedAt < this.ttlMs / 3) return;
      busy = true;
      const sentAt = Date.now();
      try {
        const ttl = await this.etcd.keepAlive(this.lease!, this.ttlMs / 3);
        if (ttl <= 0) this.loseLeadership("the etcd lease has expired");
        else if (this.leading) this.renewedAt = sentAt; // counted from when it was asked, not answered
      } catch (err) {
        log.warn("cannot renew the leader lease", { error: (err as Error).message });
      } finally {
        busy = false;
      }
    };
    this.renewTimer = setInterval(() => void tick(), Math.max(20, this.ttlMs / 30));
  }

  private loseLeadership(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
    log.error("lost leadership", { reason, epoch: this.epoch });
    for (const cb of this.lost.splice(0)) cb(reason);
  }

  async publishAddress(address: LeaderAddress): Promise<void> {
    await this.fencedPut("leader", JSON.stringify({ ...address, epoch: this.epoch }), this.lease!);
  }

  isLeader(): boolean {
    return this.leading && Date.now() - this.renewedAt <= (this.ttlMs * 2) / 3;
  }

  async confirmLeadership(): Promise<void> {
    if (!this.isLeader()) throw new FencedError(`this JobManager (epoch ${this.epoch}) is not the leader`);
    const r = await this.etcd.txn([{ key: this.key("leader"), createRevision: this.epoch }], []);
    if (!r.succeeded) {
      this.loseLeadership("the leader key is no longer this leadership's");
      throw new FencedError(`this JobManager's epoch ${this.epoch} is deposed`);
    }
  }

  onLeadershipLost(cb: (reason: string) => void): void {
    this.lost.push(cb);
  }

  async standbys(): Promise<LeaderAddress[]> {
    return (await this.etcd.getPrefix(this.key("standby/"))).map((kv) => JSON.parse(kv.value));
  }

  /** A put that only happens while the leader key is this leadership's. */
  private async fencedPut(k: string, value: string, lease?: string): Promise<void> {
    if (!this.isLeader()) throw new FencedError(`cannot write ${k}: this JobManager (epoch ${this.epoch}) is not the leader`);
    const r = await this.etcd.txn([{ key: this.key("leader"), createRevision: this.epoch }], [{ put: { key: this.key(k), value, ...(lease ? { lease } : {}) } }]);
    if (!r.succeeded) {
      this.loseLeadership("a fenced write failed: the leader key is no longer this leadership's");
      throw new FencedError(`cannot write ${k}: epoch ${this.epoch} is deposed`);
    }
  }

  private async fencedDelete(k: string): Promise<void> {
    const r = await this.etcd.txn([{ key: this.key("leader"), createRevision: this.epoch }], [{ delete: { key: this.key(k) } }]);
    if (!r.succeeded) throw new FencedError(`cannot delete ${k}: epoch ${this.epoch} is deposed`);
  }

  async putJob(record: JobRecord): Promise<void> {
    if (!this.isLeader()) throw new FencedError(`cannot store job ${record.jobId}: not the leader`);
    // The bulk in the storage dir first, then the fenced pointer to it.
    const file = path.join(this.dir, "jobs", `${record.jobId}.json`);
    writeFileAtomic(file, JSON.stringify(record));
    await this.fencedPut(`jobs/${record.jobId}`, JSON.stringify({ path: file, attempt: record.attempt }));
  }

  async removeJob(jobId: string): Promise<void> {
    await this.fencedDelete(`jobs/${jobId}`);
    await this.fencedDelete(`checkpoints/${jobId}`);
    await this.fencedDelete(`counter/${jobId}`);
    fs.rmSync(path.join(this.dir, "jobs", `${jobId}.json`), { force: true });
  }

  async quarantineJob(jobId: string): Promise<string> {
    const kv = await this.etcd.get(this.key(`jobs/${jobId}`));
    await this.fencedPut(`jobs-broken/${jobId}`, kv?.value ?? "{}");
    await this.fencedDelete(`jobs/${jobId}`);
    return this.key(`jobs-broken/${jobId}`);
  }

  async recoverJobs(): Promise<{ jobs: JobRecord[]; broken: BrokenJob[] }> {
    const jobs: JobRecord[] = [];
    const broken: BrokenJob[] = [];
    for (const kv of await this.etcd.getPrefix(this.key("jobs/"))) {
      const jobId = kv.key.slice(this.key("jobs/").length);
      let where = kv.key;
      try {
        const ref = JSON.parse(kv.value);
        where = String(ref.path);
        const record = checkJobRecord(JSON.parse(fs.readFileSync(where, "utf8")), jobId);
        // The attempt in etcd is the fenced one (the file may be from a later, refused write).
        if (Number.isInteger(ref.attempt)) record.attempt = ref.attempt;
        jobs.push(record);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        broken.push({ jobId, path: where, error: e instanceof SyntaxError ? "truncated or corrupt (not valid JSON)" : e.code ?? e.message });
      }
    }
    return { jobs, broken };
  }

  async setLatestCheckpoint(jobId: string, checkpointId: number, metadataPath: string): Promise<void> {
    const current = await this.latestCheckpoint(jobId);
    if (current && current.checkpointId >= checkpointId && current.epoch <= this.epoch) return;
    if (current && current.epoch > this.epoch) throw new FencedError(`the pointer of job ${jobId} is of a newer epoch ${current.epoch}`);
    await this.fencedPut(`checkpoints/${jobId}`, JSON.stringify({ checkpointId, path: metadataPath, epoch: this.epoch } satisfies CheckpointPointer));
  }

  async latestCheckpoint(jobId: string): Promise<CheckpointPointer | null> {
    const kv = await this.etcd.get(this.key(`checkpoints/${jobId}`));
    return kv ? (JSON.parse(kv.value) as CheckpointPointer) : null;
  }

  async reserveCheckpointId(jobId: string, id: number): Promise<void> {
    await this.fencedPut(`counter/${jobId}`, String(id));
  }

  async checkpointIdCounter(jobId: string): Promise<number> {
    const kv: KeyValue | null = await this.etcd.get(this.key(`counter/${jobId}`));
    return kv ? Number(kv.value) || 0 : 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    const wasLeading = this.leading;
    this.leading = false;
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = null;
    // Revoking the lease deletes the leader key at once: a standby takes over without waiting for the TTL.
    for (const lease of [wasLeading ? this.lease : null, this.standbyLease]) if (lease) await this.etcd.revoke(lease).catch(() => {});
  }
}

/** Where the current leader serves (for TaskManagers and clients), or null while there is none. */
export async function currentLeader(etcd: EtcdClient, clusterId: string): Promise<(LeaderAddress & { epoch: number }) | null> {
  const kv = await etcd.get(etcdPrefix(clusterId) + "leader");
  if (!kv) return null;
  try {
    const a = JSON.parse(kv.value);
    return a.port > 0 ? { ...a, epoch: kv.createRevision } : null;
  } catch {
    return null;
  }
}
