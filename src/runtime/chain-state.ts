// The state of a task's chain, kept per operator as in Flink: each keyed operator has its own keyed state backend
// and every operator its own operator state store (source positions, timers, user operator state), restored from
// what that operator id wrote in a checkpoint or savepoint and snapshotted under that id. So state follows its
// operator whatever chain, chain count or parallelism it ran in before (docs/architecture.md 5.1).
import * as fs from "node:fs";
import * as path from "node:path";
import { isKeyedOperator, type PlanNode } from "../api/plan.ts";
import { operatorsOf, type OperatorInfo } from "../graph/job-graph.ts";
import type { OperatorSubtaskSnapshot, TaskDeployment, TaskSnapshot, TaskStateMetrics } from "../rpc/messages.ts";
import { LocalStateStore } from "../state/local-recovery.ts";
import { createLogger } from "../util/log.ts";
import {
  createKeyedStateBackend,
  keyedSnapshotStates,
  keyGroupRange,
  OperatorStateStore,
  type AggregatingStateDescriptor,
  type CloseOptions,
  type KeyedSnapshotHandle,
  type KeyedStateBackend,
  type ListStateDescriptor,
  type MapStateDescriptor,
  type ReducingStateDescriptor,
  type SnapshotOptions,
  type ValueStateDescriptor,
} from "../state/index.ts";
import type { StateGrant } from "./worker-protocol.ts";

const log = createLogger("state");

export class ChainState {
  /** Figures for the task's metrics (TaskStateMetrics), besides what the backends report themselves. */
  private readonly counts = { checkpointedBytesFull: 0, checkpointedBytesIncremental: 0, snapshotsFull: 0, snapshotsIncremental: 0, restoresLocal: 0, restoresRemote: 0 };
  private lastCache = { hits: 0, misses: 0, ratio: null as number | null };
  /** state.backend.local-recovery: the task's local copies of its checkpoints (null when off). */
  private local: LocalStateStore | null = null;

  private constructor(
    private readonly ops: OperatorInfo[],
    private readonly keyed: Map<number, KeyedStateBackend>,
    private readonly stores: Map<number, OperatorStateStore>,
  ) {}

  /** Opens the state of every operator of the chain, restored from `d.restore` by operator id. */
  static async open(d: TaskDeployment, grant: StateGrant, chain: PlanNode[]): Promise<ChainState> {
    const ops = d.operators ?? operatorsOf({ id: d.vertexId, name: d.vertexName, operatorIds: d.operatorIds, parallelism: d.parallelism, isSource: false });
    const keyed = new Map<number, KeyedStateBackend>();
    const stores = new Map<number, OperatorStateStore>();
    const state = new ChainState(ops, keyed, stores);
    const keyedNodes = chain.filter(isKeyedOperator);
    const where = `task ${d.vertexName} (${d.subtaskIndex + 1}/${d.parallelism})`;
    if (grant.localRecoveryDir && keyedNodes.length > 0) state.local = new LocalStateStore(grant.localRecoveryDir, (msg) => log.warn(msg, { job: d.jobId, task: where }));
    try {
      for (const [i, n] of chain.entries()) {
        const op = ops[i];
        if (!op || op.nodeId !== n.id) throw new Error(`the deployment's operators do not match the chain at node ${n.id}`);
        const restore = d.restore?.operators[op.id];
        const label = `operator "${op.name}" (id ${op.id})`;
        if (isKeyedOperator(n)) {
          // One keyed operator per chain is the rule (keyBy starts a chain); more get a directory each.
          const dir = keyedNodes.length === 1 ? grant.dir : path.join(grant.dir, `op-${n.id}`);
          if (grant.backend === "sqlite") fs.mkdirSync(dir, { recursive: true });
          const range = keyGroupRange(d.subtaskIndex, d.parallelism, d.maxParallelism);
          const backend = await createKeyedStateBackend({
            kind: grant.backend,
            maxParallelism: d.maxParallelism,
            keyGroupRange: range,
            dir,
            cacheBytes: grant.cacheBytes,
            incremental: grant.incremental ?? false,
          });
          keyed.set(n.id, new OperatorKeyedState(backend, label));
          const handles = restore?.keyed ?? [];
          if (handles.length > 0) {
            await state.restoreKeyed(backend, d.restore!.checkpointId, op.id, handles, range).catch((err: Error) => {
              throw new Error(`${label}: restoring its keyed state failed: ${err.message}`, { cause: err });
            });
          }
        }
        const store = new OperatorStateStore(d.subtaskIndex, d.parallelism);
        if (restore && restore.operator.length > 0) {
          await store.restore(restore.operator).catch((err: Error) => {
            throw new Error(`${label}: restoring its operator state failed: ${err.message}`, { cause: err });
          });
        }
        stores.set(n.id, store);
      }
    } catch (err) {
      await state.close();
      throw err;
    }
    return state;
  }

  /**
   * Restores a keyed backend: from the local copy when local recovery has one of this checkpoint that matches
   * the metadata, else (or when reading the copy fails) from checkpoint storage, with a WARN when a copy was
   * expected to serve.
   */
  private async restoreKeyed(b: KeyedStateBackend, checkpointId: number, operatorId: string, handles: KeyedSnapshotHandle[], range: { start: number; end: number }): Promise<void> {
    const local = this.local?.localHandles(checkpointId, operatorId, handles, range);
    if (local?.handles) {
      try {
        await b.restore(local.handles);
        this.counts.restoresLocal++;
        log.info("restored keyed state from the local copy", { operator: operatorId, checkpoint: checkpointId, files: local.handles.flatMap((h) => h.files).length });
        return;
      } catch (err) {
        log.warn(`local recovery: the local copy of checkpoint ${checkpointId} failed to restore; restoring from checkpoint storage: ${(err as Error).message}`, { operator: operatorId });
      }
    } else if (local && local.expected) {
      log.warn(`local recovery: not using the local copy of checkpoint ${checkpointId}: ${local.reason}; restoring from checkpoint storage`, { operator: operatorId });
    }
    await b.restore(handles);
    this.counts.restoresRemote++;
  }

  /** The keyed state metrics of the task (null without keyed state). */
  stateMetrics(): TaskStateMetrics | null {
    if (this.keyed.size === 0) return null;
    let sizeBytes = 0;
    let entries: number | null = 0;
    let hits: number | undefined;
    let misses: number | undefined;
    let backend: "heap" | "sqlite" = "heap";
    for (const b of this.keyed.values()) {
      const st = b.stats();
      backend = b.kind;
      sizeBytes += st.sizeBytes;
      entries = entries === null || st.entries === null ? null : entries + st.entries;
      if (st.cacheHits !== undefined) {
        hits = (hits ?? 0) + st.cacheHits;
        misses = (misses ?? 0) + (st.cacheMisses ?? 0);
      }
    }
    const m: TaskStateMetrics = { backend, sizeBytes, entries, ...this.counts };
    if (hits !== undefined && misses !== undefined) {
      const dh = hits - this.lastCache.hits;
      const dm = misses - this.lastCache.misses;
      // Over the last report interval; an interval without lookups keeps the previous ratio.
      if (dh + dm > 0) this.lastCache.ratio = dh / (dh + dm);
      this.lastCache.hits = hits;
      this.lastCache.misses = misses;
      Object.assign(m, { cacheHits: hits, cacheMisses: misses, cacheHitRatio: this.lastCache.ratio });
    }
    return m;
  }

  /** The keyed state backend of a chained operator (null unless it runs on a keyed stream). */
  keyedOf(nodeId: number): KeyedStateBackend | null {
    return this.keyed.get(nodeId) ?? null;
  }

  operatorStateOf(nodeId: number): OperatorStateStore {
    const s = this.stores.get(nodeId);
    if (!s) throw new Error(`no operator state for plan node ${nodeId} in this task`);
    return s;
  }

  /**
   * Checkpoint: the synchronous part of every operator's snapshot runs now (the copy-on-write marks, the encoding
   * of operator state); the files are written when the promise resolves. Operators without state are left out.
   */
  snapshot(dir: string, opts?: SnapshotOptions): Promise<TaskSnapshot> {
    const parts: Promise<OperatorSubtaskSnapshot>[] = [];
    for (const op of this.ops) {
      const kb = this.keyed.get(op.nodeId);
      const store = this.stores.get(op.nodeId)!;
      const opStates = store.stateInfo();
      if (!kb && opStates.length === 0) continue;
      const keyed = kb
        ? kb.snapshot(dir, opts).then((h) => {
            // A change set lists its base's files first; what it wrote itself is newBytes.
            if (h.files.length > 1 && h.newBytes !== undefined) {
              this.counts.checkpointedBytesIncremental += h.newBytes;
              this.counts.snapshotsIncremental++;
            } else {
              this.counts.checkpointedBytesFull += h.sizeBytes;
              this.counts.snapshotsFull++;
            }
            return h;
          })
        : Promise.resolve(null);
      const operator = opStates.length > 0 ? store.snapshot(dir) : Promise.resolve(null);
      parts.push(
        Promise.all([keyed, operator]).then(async ([k, o]) => ({
          operatorId: op.id,
          keyed: k,
          operator: o,
          states: [...(k ? await keyedSnapshotStates(k) : []), ...opStates],
        })),
      );
    }
    return Promise.all(parts).then((operators) => {
      // stream-task passes `incremental` exactly for checkpoints (savepoints are full and never kept locally).
      if (this.local && opts?.incremental === true && opts.checkpointId !== undefined) {
        const handles: Record<string, KeyedSnapshotHandle> = {};
        for (const o of operators) if (o.keyed) handles[o.operatorId] = o.keyed;
        this.local.keep(opts.checkpointId, handles);
      }
      return { operators };
    });
  }

  /** Checkpoint n completed: an incremental keyed backend may now build on it; its local copy is the one kept. */
  notifyCheckpointComplete(checkpointId: number): void {
    for (const b of this.keyed.values()) b.notifyCheckpointComplete(checkpointId);
    void this.local?.complete(checkpointId);
  }

  /** The task's end (or a failed start): its state directory is deleted next (taskmanager/task.ts), so backends discard. */
  async close(): Promise<void> {
    await Promise.all([...this.keyed.values()].map((b) => b.close({ discard: true }).catch(() => {})));
  }
}

/**
 * An operator's keyed backend: registering a state whose stored kind or TTL setting does not match the
 * descriptor (a ValueState restored as a ListState) fails naming the operator as well as the state.
 */
class OperatorKeyedState implements KeyedStateBackend {
  constructor(private readonly b: KeyedStateBackend, private readonly label: string) {}
  get kind() {
    return this.b.kind;
  }
  get keyGroupRange() {
    return this.b.keyGroupRange;
  }
  get maxParallelism() {
    return this.b.maxParallelism;
  }
  setCurrentKey(key: unknown): void {
    this.b.setCurrentKey(key);
  }
  getCurrentKey(): unknown {
    return this.b.getCurrentKey();
  }
  getCurrentKeyGroup(): number {
    return this.b.getCurrentKeyGroup();
  }
  getCurrentHeapKey() {
    return this.b.getCurrentHeapKey();
  }
  private named<S>(get: () => S): S {
    try {
      return get();
    } catch (err) {
      throw new Error(`${this.label}: ${(err as Error).message}`, { cause: err });
    }
  }
  getState<T>(d: ValueStateDescriptor<T>) {
    return this.named(() => this.b.getState(d));
  }
  getListState<T>(d: ListStateDescriptor<T>) {
    return this.named(() => this.b.getListState(d));
  }
  getMapState<K, V>(d: MapStateDescriptor<K, V>) {
    return this.named(() => this.b.getMapState(d));
  }
  getReducingState<T>(d: ReducingStateDescriptor<T>) {
    return this.named(() => this.b.getReducingState(d));
  }
  getAggregatingState<IN, ACC, OUT>(d: AggregatingStateDescriptor<IN, ACC, OUT>) {
    return this.named(() => this.b.getAggregatingState(d));
  }
  cleanupExpired(maxEntries?: number): number {
    return this.b.cleanupExpired(maxEntries);
  }
  snapshot(dir: string, opts?: SnapshotOptions): Promise<KeyedSnapshotHandle> {
    return this.b.snapshot(dir, opts);
  }
  notifyCheckpointComplete(checkpointId: number): void {
    this.b.notifyCheckpointComplete(checkpointId);
  }
  restore(handles: readonly KeyedSnapshotHandle[]): Promise<void> {
    return this.b.restore(handles);
  }
  close(opts?: CloseOptions): Promise<void> {
    return this.b.close(opts);
  }
  keys(name: string): unknown[] {
    return this.named(() => this.b.keys(name));
  }
  stats() {
    return this.b.stats();
  }
}
