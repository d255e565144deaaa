// A task's operator chain (as Flink's OperatorChain): the record writers of its output edges and the chained
// operators between its input and those writers, built from the chain's tail. The tail emits main records to the
// edges that feed ordinary consumers and side-output values to the edges that feed that tag's getSideOutput node;
// a sink is always a tail. Also opens the chain's state (per operator id, chain-state.ts) and, for a source chain,
// its reader (built-in or connector) at the restored or initial splits.
import { describePlan, isVirtual, type Plan, type PlanNode } from "../api/plan.ts";
import { streamTargetsOf } from "../api/job-graph.ts";
import type { TaskDeployment, TaskSnapshot } from "../rpc/messages.ts";
import { RecordWriter } from "../network/record-writer.ts";
import { LocalBufferPool } from "../network/local-buffer-pool.ts";
import { channelShare } from "../network/buffer-budget.ts";
import { createPartitioner } from "../network/partitioners.ts";
import { channelId, channelJob, type NetworkGrant } from "../network/wire.ts";
import { createOperator } from "./operators.ts";
import type { ChainOutput, Collector, Operator, OperatorContext, TimeContext } from "./operator.ts";
import type { ListState, SnapshotOptions } from "../state/index.ts";
import { ChainState } from "./chain-state.ts";
import { assignSplits, initialSplits, SourceReader, splitForParallelism, type SourceSplit } from "./sources.ts";
import type { StateGrant } from "./worker-protocol.ts";
import type { ConnectorSourceReader, ConnectorSplit } from "../api/connector.ts";
import type { LatencyMarker } from "./latency-markers.ts";

/** Operator (union list) state in which a source keeps its splits and positions. */
export const SOURCE_SPLITS = "__source-splits";

/** What the chain needs of its task. */
export interface ChainHost {
  /** The timestamp of the record in flight (event time). */
  time: TimeContext;
  /** The chain's tail emits a watermark or an idleness change to every output channel. */
  emitWatermark(wm: number): void;
  emitIdle(idle: boolean): void;
  /** A failure outside the task loop (a processing-time timer). */
  failAsync(err: unknown): void;
  /** Output produced outside the task loop: flush the operators. */
  flushOperators(): void;
  /** FLIP-147: a final checkpoint follows end of input (two-phase-commit sinks commit through it). */
  finalCheckpoint: boolean;
}

export function taskDisplayName(d: TaskDeployment): string {
  return `${d.vertexName} (${d.subtaskIndex + 1}/${d.parallelism})`;
}

export class OperatorChain {
  /** The output edges' writers, in deployment.outputs order. */
  readonly writers: RecordWriter[];
  /** Output channel id -> its writer. */
  readonly writerOf = new Map<string, RecordWriter>();
  /** The chained operators, head first. */
  readonly operators: Operator[] = [];
  /** Where input records go (the head operator's process). */
  head: Operator = { process: () => {} };
  /** Where the second input's records go, when the head is a two-input operator (connect); else null. */
  head2: Operator | null = null;
  /** The chain's entry for watermarks (the first operator that handles them, or the writers). */
  headWatermark: (wm: number) => void = () => {};
  sourceNode: Extract<PlanNode, { kind: "source" }> | null = null;
  sourceReader: SourceReader | null = null;
  /** A connector source's reader (asynchronous polls) instead of sourceReader. */
  connectorReader: ConnectorSourceReader | null = null;
  /** The source's split positions, in the source operator's state. */
  private sourceSplits: ListState<SourceSplit> | null = null;
  /** Keyed and operator state per chained operator, by operator id (chain-state.ts). */
  chainState: ChainState | null = null;
  /** Records the tail emitted (or a sink consumed): the task's records out. */
  recordsOut = 0;
  /** The chained operators that record latency markers (all but a source), by name (made unique in the chain). */
  latencyOperators: string[] = [];

  private constructor(
    private readonly d: TaskDeployment,
    private readonly plan: Plan,
    network: NetworkGrant,
    /** Records cross the network as [timestamp, record] (the job assigns timestamps somewhere). */
    readonly eventTime: boolean,
  ) {
    this.writers = d.outputs.map((o, i) => {
      const ids = o.targets.map((t) => channelId(channelJob(d), o.edgeId, d.subtaskIndex, t.subtask));
      const keyNode = o.keyNodeId !== undefined ? this.node(o.keyNodeId) : undefined;
      const rawKey = keyNode?.kind === "keyBy" ? keyNode.fn : keyNode?.kind === "partition" ? keyNode.custom?.key : undefined;
      // With event time a record travels as [timestamp, record]: the key is the record's.
      const keySelector = rawKey && eventTime ? (w: [number | null, unknown]) => rawKey(w[1]) : rawKey;
      const custom = keyNode?.kind === "partition" ? keyNode.custom?.partition : undefined;
      const partitioner = createPartitioner(o.partitioner, d.subtaskIndex, ids.length, d.maxParallelism, keySelector, custom);
      const pool = new LocalBufferPool(network.outputBuffers[i]!, network.segmentSize, network.maxOverdraft);
      // A declared record type travels with the edge; without one the writer infers it (unless the job turned that off).
      const serializer = { ...(o.recordType ? { declared: o.recordType } : {}), eventTime, infer: plan.settings.typeInference !== false };
      const writer = new RecordWriter(ids, partitioner, pool, d.bufferTimeoutMs === 0, channelShare(pool.size, ids.length, network.maxBuffersPerChannel), serializer);
      for (const id of ids) this.writerOf.set(id, writer);
      return writer;
    });
  }

  node(id: number): PlanNode {
    const n = this.plan.nodes[id];
    if (!n) throw new Error(`plan has no node ${id}`);
    return n;
  }

  /** The writers exist at once (channels may be wired before the operators are open). */
  static create(d: TaskDeployment, plan: Plan, network: NetworkGrant): OperatorChain {
    const eventTime = plan.nodes.some((n) => n.kind === "assignTimestamps");
    return new OperatorChain(d, plan, network, eventTime);
  }

  /** Opens the state, builds the operators from the tail and opens them. */
  async open(host: ChainHost, state: StateGrant): Promise<void> {
    const d = this.d;
    const node = (id: number) => this.node(id);
    const chain = d.operatorIds.map(node);
    const named = chain.filter((n) => n.kind !== "source" && !isVirtual(n));
    this.latencyOperators = named.map((n) => (named.filter((m) => m.name === n.name).length > 1 ? `${n.name} #${n.id}` : n.name));
    const tailId = d.operatorIds[d.operatorIds.length - 1]!;
    const targets = this.writers.length > 0 ? streamTargetsOf(describePlan(this.plan), tailId) : [];
    if (targets.length !== this.writers.length) throw new Error(`operator ${tailId} has ${targets.length} output edges in the plan but ${this.writers.length} in the deployment`);
    const mainWriters: RecordWriter[] = [];
    const sideWriters = new Map<string, RecordWriter[]>();
    targets.forEach((t, i) => {
      const target = node(t);
      if (target.kind === "sideOutput") {
        if (!sideWriters.has(target.tag)) sideWriters.set(target.tag, []);
        sideWriters.get(target.tag)!.push(this.writers[i]!);
      } else mainWriters.push(this.writers[i]!);
    });
    const eventTime = this.eventTime;
    const time = host.time;
    let out: Collector = eventTime
      ? (r) => {
          this.recordsOut++;
          const w = [time.ts, r];
          for (let i = 0; i < mainWriters.length; i++) mainWriters[i]!.emit(w);
        }
      : (r) => {
          this.recordsOut++;
          for (let i = 0; i < mainWriters.length; i++) mainWriters[i]!.emit(r);
        };
    let side: (tag: string, v: unknown) => void = (tag, v) => {
      const ws = sideWriters.get(tag);
      if (!ws) return;
      this.recordsOut++;
      const w = eventTime ? [time.ts, v] : v;
      for (const writer of ws) writer.emit(w);
    };
    let watermark: (wm: number) => void = (wm) => host.emitWatermark(wm);
    const idle = (b: boolean) => host.emitIdle(b);
    const chainState = (this.chainState = await ChainState.open(d, state, chain));
    const baseCtx: Omit<OperatorContext, "keyed" | "operatorState"> = {
      subtaskIndex: d.subtaskIndex,
      parallelism: d.parallelism,
      taskName: taskDisplayName(d),
      runtimeMode: d.runtimeMode,
      objectReuse: d.objectReuse === true,
      node,
      jobId: d.jobId,
      attempt: d.attempt,
      restoredCheckpointId: d.restore?.checkpointId ?? 0,
      time,
      finalCheckpoint: host.finalCheckpoint,
      fail: (err) => host.failAsync(err),
      afterAsyncOutput: () => host.flushOperators(),
    };
    const noop = () => {};
    for (let i = chain.length - 1; i >= 0; i--) {
      const n = chain[i]!;
      // Each operator sees its own state (restored by its operator id).
      const ctx: OperatorContext = { ...baseCtx, keyed: chainState.keyedOf(n.id), operatorState: chainState.operatorStateOf(n.id) };
      if (n.kind === "source") {
        if (i !== 0) throw new Error(`source node ${n.id} is not at the head of its chain`);
        this.sourceNode = n;
        // Where to read from: the restored positions (any old parallelism) or this subtask's initial share.
        const hasRestored = ctx.operatorState.stateNames().includes(SOURCE_SPLITS);
        this.sourceSplits = ctx.operatorState.getUnionListState<SourceSplit>(SOURCE_SPLITS);
        const restoredSplits = hasRestored ? assignSplits(splitForParallelism(this.sourceSplits.get(), d.parallelism), d.subtaskIndex, d.parallelism) : null;
        if (n.source.type === "connector") {
          const connector = n.source.connector;
          if (restoredSplits?.some((s) => s.type !== "connector" || s.connector !== connector.connector)) {
            throw new Error(`${n.name}: the restored checkpoint holds splits of another source than ${connector.connector}`);
          }
          this.connectorReader = connector.createReader({
            subtaskIndex: d.subtaskIndex,
            parallelism: d.parallelism,
            jobId: d.jobId,
            attempt: d.attempt,
            restoredCheckpointId: d.restore?.checkpointId ?? 0,
            restoredSplits: restoredSplits as ConnectorSplit[] | null,
          });
          break;
        }
        const restored = restoredSplits ?? initialSplits(n.source, d.subtaskIndex, d.parallelism);
        // Event time: splits take turns, so that each split's watermark advances with the others'.
        this.sourceReader = new SourceReader(n.source, restored, eventTime);
        break;
      }
      if (n.kind === "sink") {
        // A sink is always a chain's tail; what it writes counts as the task's output.
        const sink = createOperator(n, ctx, () => {});
        this.operators.unshift(sink);
        out = (r) => {
          this.recordsOut++;
          sink.process(r);
        };
        side = noop;
        continue;
      }
      // The next operator is a getSideOutput node: only this tag's values go on, the main output goes nowhere.
      const next = chain[i + 1];
      const nextProcess = out;
      const mainOut = next?.kind === "sideOutput" ? noop : out;
      const sideOut = next === undefined ? side : next.kind === "sideOutput" ? (tag: string, v: unknown) => void (tag === next.tag && nextProcess(v)) : noop;
      const chainOut: ChainOutput = { watermark, idle, side: sideOut };
      const op = createOperator(n, ctx, mainOut, chainOut);
      if (op.process2) {
        // Both inputs come over the network (two input edges are never chained), so it heads its chain.
        if (i !== 0) throw new Error(`two-input operator ${n.name} (node ${n.id}) is not at the head of its chain`);
        this.head2 = { process: (r) => op.process2!(r) };
      }
      this.operators.unshift(op);
      out = handOffTo(op, i);
      side = noop;
      if (op.processWatermark) watermark = (wm) => op.processWatermark!(wm);
    }
    this.headWatermark = watermark;
    this.head = { process: out };
    for (const op of this.operators) await op.open?.();
    await this.connectorReader?.open();
  }

  /**
   * Snapshot's synchronous part: operators pre-commit, and a source's split positions go into operator state.
   * Returns the asynchronous pre-commits (connector sinks), which the acknowledgement waits for.
   */
  snapshotState(checkpointId: number): Promise<void>[] {
    this.flush();
    const preCommits: Promise<void>[] = [];
    for (const op of this.operators) {
      const p = op.snapshotState?.(checkpointId);
      if (p instanceof Promise) preCommits.push(p);
    }
    if (this.sourceReader) this.sourceSplits!.update(this.sourceReader.positions());
    if (this.connectorReader) {
      this.sourceSplits!.update(this.connectorReader.positions());
      this.connectorReader.snapshotState?.(checkpointId);
    }
    return preCommits;
  }

  /** The chain's state files for a checkpoint (per operator id); the synchronous part runs now. */
  snapshot(dir: string, opts: SnapshotOptions): Promise<TaskSnapshot> {
    return this.chainState!.snapshot(dir, opts);
  }

  /** Checkpoint n completed: state backends, operators and a connector source hear of it; a rejection fails the task. */
  notifyCheckpointComplete(checkpointId: number, fail: (err: unknown) => void): void {
    this.chainState?.notifyCheckpointComplete(checkpointId);
    for (const op of this.operators) {
      const done = op.notifyCheckpointComplete?.(checkpointId);
      if (done instanceof Promise) this.track(done.catch(fail));
    }
    if (this.connectorReader?.notifyCheckpointComplete) {
      this.track(Promise.resolve(this.connectorReader.notifyCheckpointComplete(checkpointId)).catch(fail));
    }
  }

  /** Asynchronous notifies still running (a connector sink's external commit). */
  private readonly notifying = new Set<Promise<unknown>>();

  private track(p: Promise<unknown>): void {
    this.notifying.add(p);
    void p.finally(() => this.notifying.delete(p));
  }

  /** Resolves once every notify started so far has settled: the final checkpoint's commits are done before the task ends. */
  async notificationsSettled(): Promise<void> {
    while (this.notifying.size > 0) await Promise.allSettled([...this.notifying]);
  }

  flush(): void {
    for (const op of this.operators) op.flush?.();
  }

  /** A latency marker leaves the chain on one random channel of each output (behind the records emitted before it). */
  forwardLatencyMarker(marker: LatencyMarker): void {
    for (const w of this.writers) w.randomEvent(marker);
  }

  dispose(): void {
    for (const op of this.operators) op.dispose?.();
  }

  /** The task ends: a connector source's connection and the state backends are closed. */
  async close(): Promise<void> {
    await this.connectorReader?.close().catch(() => {});
    await this.chainState?.close();
  }
}

/**
 * A chain link's hand-off to its operator, `(r) => op.process(r)`, compiled from source text of its own for each link.
 * In JavaScriptCore the closures made from one function literal share its compiled code and type profiles, so one
 * hand-off literal for every link mixed the links' records (a source's numbers, a map's tuples) in one profile, and
 * the code inlined through it was compiled for all of them: the map's `%` as a generic operation handing out doubles,
 * then the keyed sum's keys, accumulators and copies of both kinds. A keyed sum chained at p=1 took about 1.9 s for
 * 20 M records instead of 1.5 (docs/benchmarks.md, issue 19). `new Function` with the same text shared them as well
 * (measured), so the texts differ in a comment that numbers the link; nothing from the job goes into them.
 */
function handOffTo(op: Operator, link: number): Collector {
  const make = new Function("op", `return (r) => op.process(r); // chain link ${Math.trunc(link)}`) as (o: Operator) => Collector;
  return make(op);
}
