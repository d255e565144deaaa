// One parallel subtask of a job vertex, run inside its own Worker: imports the job artifact, rebuilds the
// plan, wires the operator chain between its input channels and record writers, and runs it mailbox-style
// (one input buffer at a time, pausing while an output has no free buffer).
import * as fs from "node:fs";
import * as path from "node:path";
import { loadPlan } from "../api/load-plan.ts";
import { describePlan, type Plan, type PlanNode } from "../api/plan.ts";
import { planFingerprint, streamTargetsOf } from "../api/job-graph.ts";
import type { ErrorInfo, TaskDeployment, TaskMetrics, TaskSnapshot } from "../rpc/messages.ts";
import { RecordWriter } from "../network/record-writer.ts";
import { InputGate } from "../network/input-gate.ts";
import { LocalBufferPool } from "../network/local-buffer-pool.ts";
import { receiveFromRing, RingSender } from "../network/channel-ends.ts";
import { channelShare } from "../network/buffer-budget.ts";
import { createPartitioner } from "../network/partitioners.ts";
import { createOperator } from "./operators.ts";
import type { ChainOutput, Collector, Operator, OperatorContext, TimeContext } from "./operator.ts";
import type { ListState } from "../state/index.ts";
import { ChainState } from "./chain-state.ts";
import { WatermarkValve, type WatermarkEvent } from "./event-time.ts";
import { assignSplits, initialSplits, SourceReader, splitForParallelism, type SourceSplit } from "./sources.ts";
import type { FromWorker, StateGrant, ToWorker } from "./worker-protocol.ts";
import { channelId, channelJob, type NetworkGrant } from "../network/wire.ts";
import type { ConnectorSourceReader, ConnectorSplit } from "../api/connector.ts";

type Post = (msg: FromWorker) => void;

const METRICS_INTERVAL_MS = 1000;
/** Operator (union list) state in which a source keeps its splits and positions. */
const SOURCE_SPLITS = "__source-splits";

export function taskDisplayName(d: TaskDeployment): string {
  return `${d.vertexName} (${d.subtaskIndex + 1}/${d.parallelism})`;
}

/** Time accounting as Flink's busy / backpressured / idle ms per second. */
class TimeMeter {
  busy = 0;
  backPressured = 0;
  idle = 0;
  private last = performance.now();
  state: "busy" | "backPressured" | "idle" = "busy";
  switchTo(state: "busy" | "backPressured" | "idle"): void {
    const now = performance.now();
    this[this.state] += now - this.last;
    this.last = now;
    this.state = state;
  }
}

export class StreamTask {
  private readonly gate: InputGate;
  private writers: RecordWriter[] = [];
  private readonly writerOf = new Map<string, RecordWriter>();
  private operators: Operator[] = [];
  private head!: Operator;
  private sourceNode: Extract<PlanNode, { kind: "source" }> | null = null;
  private recordsIn = 0;
  private recordsOut = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private readonly time = new TimeMeter();
  private lastReport = { at: performance.now(), busy: 0, backPressured: 0, idle: 0 };
  /** Ports to local peer tasks that arrived before init() created the writers. */
  private pendingConnects: Extract<ToWorker, { type: "connect" }>[] = [];

  /** Keyed and operator state per chained operator, by operator id (chain-state.ts). */
  private chainState: ChainState | null = null;
  /** The source's split positions, in the source operator's state. */
  private sourceSplits: ListState<SourceSplit> | null = null;
  private sourceReader: SourceReader | null = null;
  /** A connector source's reader (asynchronous polls) instead of sourceReader. */
  private connectorReader: ConnectorSourceReader | null = null;
  /** Source tasks: checkpoints to inject after the current chunk. */
  private triggers: { checkpointId: number; timestamp: number; dir: string }[] = [];
  /** Non-source tasks: the barrier being aligned, and the channels that delivered it. */
  private aligning: { checkpointId: number; timestamp: number; dir: string; seen: Set<string> } | null = null;
  private lastCheckpointId = 0;
  /** Input done: a checkpoint can no longer be taken. */
  private inputEnded = false;

  // ---- event time ----
  /** The timestamp of the record in flight through the chain. */
  private readonly recordTime: TimeContext = { ts: null };
  /** The job assigns timestamps somewhere: records cross the network as [timestamp, record]. */
  private eventTime = false;
  private readonly valve: WatermarkValve;
  /** The chain's entry for watermarks (the first operator that handles them, or the writers). */
  private headWatermark: (wm: number) => void = () => {};
  /** What this task last sent downstream: watermark and idleness. */
  private outWatermark = -Infinity;
  private outIdle = false;
  private asyncFailed = false;

  constructor(
    private readonly d: TaskDeployment,
    private readonly network: NetworkGrant,
    private readonly state: StateGrant,
    private readonly post: Post,
    private readonly autoWatermarkIntervalMs = 200,
  ) {
    // Known before init() finishes: data may arrive while the artifact is still being imported.
    const inputs: string[] = [];
    for (const input of d.inputs) for (const p of input.producers) inputs.push(channelId(channelJob(d), input.edgeId, p.subtask, d.subtaskIndex));
    this.gate = new InputGate(inputs);
    this.inputChannels = inputs;
    this.valve = new WatermarkValve(inputs);
  }

  private readonly inputChannels: string[];

  async init(artifactPath: string): Promise<void> {
    const plan = await loadPlan(artifactPath, this.d.jobArgs);
    if (planFingerprint(describePlan(plan)) !== this.d.planFingerprint) {
      throw new Error("the job's builder produced a different plan in the task than at submission; a job's default function must build the same pipeline every time it runs");
    }
    const node = (id: number) => {
      const n = plan.nodes[id];
      if (!n) throw new Error(`plan has no node ${id}`);
      return n;
    };
    const d = this.d;
    const net = this.network;
    const eventTime = (this.eventTime = plan.nodes.some((n) => n.kind === "assignTimestamps"));
    this.writers = d.outputs.map((o, i) => {
      const ids = o.targets.map((t) => channelId(channelJob(d), o.edgeId, d.subtaskIndex, t.subtask));
      const keyNode = o.keyNodeId !== undefined ? node(o.keyNodeId) : undefined;
      const rawKey = keyNode?.kind === "keyBy" ? keyNode.fn : keyNode?.kind === "partition" ? keyNode.custom?.key : undefined;
      // With event time a record travels as [timestamp, record]: the key is the record's.
      const keySelector = rawKey && eventTime ? (w: [number | null, unknown]) => rawKey(w[1]) : rawKey;
      const custom = keyNode?.kind === "partition" ? keyNode.custom?.partition : undefined;
      const partitioner = createPartitioner(o.partitioner, d.subtaskIndex, ids.length, d.maxParallelism, keySelector, custom);
      const pool = new LocalBufferPool(net.outputBuffers[i]!, net.segmentSize, net.maxOverdraft);
      const writer = new RecordWriter(ids, partitioner, pool, d.bufferTimeoutMs === 0, channelShare(pool.size, ids.length, net.maxBuffersPerChannel));
      for (const id of ids) this.writerOf.set(id, writer);
      return writer;
    });
    for (const c of this.pendingConnects.splice(0)) this.onConnect(c);

    // Build the chain from its tail. The tail emits to the record writers: main records to the edges that
    // feed ordinary consumers, side-output values to the edges that feed that tag's getSideOutput node.
    const chain = d.operatorIds.map(node);
    const tailId = d.operatorIds[d.operatorIds.length - 1]!;
    const targets = this.writers.length > 0 ? streamTargetsOf(describePlan(plan), tailId) : [];
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
    const time = this.recordTime;
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
    let watermark: (wm: number) => void = (wm) => this.emitWatermark(wm);
    const idle = (b: boolean) => this.emitIdle(b);
    const chainState = (this.chainState = await ChainState.open(d, this.state, chain));
    const baseCtx: Omit<OperatorContext, "keyed" | "operatorState"> = {
      subtaskIndex: d.subtaskIndex,
      parallelism: d.parallelism,
      taskName: taskDisplayName(d),
      runtimeMode: d.runtimeMode,
      node,
      jobId: d.jobId,
      attempt: d.attempt,
      restoredCheckpointId: d.restore?.checkpointId ?? 0,
      time,
      fail: (err) => this.failAsync(err),
      afterAsyncOutput: () => this.flushOperators(),
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
      this.operators.unshift(op);
      out = (r) => op.process(r);
      side = noop;
      if (op.processWatermark) watermark = (wm) => op.processWatermark!(wm);
    }
    this.headWatermark = watermark;
    this.head = { process: out };
    for (const op of this.operators) await op.open?.();
    await this.connectorReader?.open();
    const interval = plan.settings.autoWatermarkInterval ?? this.autoWatermarkIntervalMs;
    if (interval > 0 && this.operators.some((op) => op.onPeriodic)) {
      this.timers.push(
        setInterval(() => {
          try {
            for (const op of this.operators) op.onPeriodic?.();
          } catch (err) {
            this.failAsync(err);
          }
        }, interval),
      );
    }
    if (d.bufferTimeoutMs > 0 && this.writers.length > 0) {
      this.timers.push(setInterval(() => this.flushWriters(), d.bufferTimeoutMs));
    }
    this.timers.push(setInterval(() => this.post({ type: "metrics", metrics: this.metrics() }), METRICS_INTERVAL_MS));
  }

  /** Runs the task to the end of its input; throws on a failure in user code. */
  async run(): Promise<TaskMetrics> {
    this.post({ type: "running" });
    try {
      if (this.sourceNode) await this.runSource();
      else await this.runInputs();
      this.inputEnded = true;
      for (const t of this.triggers.splice(0)) this.post({ type: "checkpointDecline", checkpointId: t.checkpointId, reason: "the task reached the end of its input" });
      // End of input is the end of event time (Flink's MAX_WATERMARK): every event-time timer and window fires.
      if (this.valve.current < Infinity) {
        this.valve.current = Infinity;
        this.headWatermark(Infinity);
      }
      for (const op of this.operators) await op.endInput?.();
      await Promise.all(this.writers.map((w) => w.finish()));
      // No external commit without the JobManager's word: a TaskManager cut off from it (a zombie whose attempt
      // was already replaced) must not commit the final transaction on its own.
      const committers = this.operators.filter((op) => op.hasFinalCommit?.());
      if (committers.length > 0) {
        await this.finalCommitApproval();
        for (const op of committers) await op.finalCommit!();
      }
      this.time.switchTo("idle");
      return this.metrics();
    } finally {
      for (const t of this.timers) clearInterval(t);
      for (const op of this.operators) op.dispose?.();
      await this.connectorReader?.close().catch(() => {});
      await this.chainState?.close();
    }
  }

  private finalCommitReply: ((msg: Extract<ToWorker, { type: "finalCommitReply" }>) => void) | null = null;

  /** Asks the JobManager (through the main thread) whether this attempt may commit its final transaction. */
  private finalCommitApproval(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.finalCommitReply = (msg) => {
        this.finalCommitReply = null;
        if (msg.approved) resolve();
        else reject(new Error(`the final commit was not confirmed by the JobManager: ${msg.reason ?? "no reason given"}`));
      };
      this.post({ type: "finalCommitRequest" });
    });
  }

  /** Messages from the main thread other than init. */
  onMessage(msg: ToWorker): void {
    switch (msg.type) {
      case "finalCommitReply":
        this.finalCommitReply?.(msg);
        break;
      case "connect":
        if (this.writers.length === 0 && this.d.outputs.length > 0) this.pendingConnects.push(msg);
        else this.onConnect(msg);
        break;
      case "resizeOutputPools":
        // Before the writers exist (init still loading), the new sizes are what they will be built with.
        this.network.outputBuffers = msg.outputBuffers;
        this.writers.forEach((w, i) => {
          const size = msg.outputBuffers[i];
          if (size === undefined) return;
          w.pool.resize(size);
          w.maxBuffersPerChannel = channelShare(size, this.d.outputs[i]!.targets.length, this.network.maxBuffersPerChannel);
        });
        break;
      case "checkpoint":
        if (this.inputEnded || !this.sourceNode) this.post({ type: "checkpointDecline", checkpointId: msg.checkpointId, reason: this.sourceNode ? "the task reached the end of its input" : "not a source task" });
        else this.triggers.push({ checkpointId: msg.checkpointId, timestamp: msg.timestamp, dir: msg.dir });
        break;
      case "checkpointComplete":
        this.chainState?.notifyCheckpointComplete(msg.checkpointId);
        for (const op of this.operators) {
          const done = op.notifyCheckpointComplete?.(msg.checkpointId);
          if (done instanceof Promise) done.catch((err) => this.failAsync(err));
        }
        if (this.connectorReader?.notifyCheckpointComplete) {
          Promise.resolve(this.connectorReader.notifyCheckpointComplete(msg.checkpointId)).catch((err) => this.failAsync(err));
        }
        break;
    }
  }

  /**
   * Checkpoint n at this task: the synchronous part (operators pre-commit, source positions, the state
   * backends' copy-on-write marks) happens before the barrier goes downstream and before the next record; the
   * files are written asynchronously and then acknowledged. A failure declines the checkpoint, never the task,
   * and the barrier is forwarded anyway so that downstream tasks do not wait for it.
   */
  private checkpoint(checkpointId: number, timestamp: number, dir: string): void {
    this.lastCheckpointId = Math.max(this.lastCheckpointId, checkpointId);
    const d = this.d;
    const taskDir = path.join(dir, `${d.vertexId}-${d.subtaskIndex}`);
    let pending: Promise<[TaskSnapshot, unknown]>;
    try {
      this.flushOperators();
      // Asynchronous pre-commits (connector sinks): the acknowledgement waits for them.
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
      fs.mkdirSync(taskDir, { recursive: true });
      // Checkpoints may be incremental; savepoints (not in a chk-<n> directory of the checkpoint store) are full.
      const incremental = /^chk-\d+$/.test(path.basename(dir));
      pending = Promise.all([this.chainState!.snapshot(taskDir, { checkpointId, incremental }), Promise.all(preCommits)]);
    } catch (err) {
      pending = Promise.reject(err);
    }
    const barrier = { type: "barrier" as const, checkpointId, timestamp, dir };
    for (const w of this.writers) w.broadcastEvent(barrier);
    pending.then(
      ([snapshot]) => this.post({ type: "checkpointAck", checkpointId, snapshot }),
      (err: Error) => this.post({ type: "checkpointDecline", checkpointId, reason: `${taskDisplayName(d)}: ${err?.message ?? String(err)}` }),
    );
  }

  /** A barrier from one input channel: aligned (exactly-once) or counted (at-least-once). */
  private onBarrier(channel: string, b: { checkpointId: number; timestamp: number; dir: string }): void {
    if (b.checkpointId <= this.lastCheckpointId) return; // of a checkpoint already taken or abandoned here
    let a = this.aligning;
    if (a && b.checkpointId > a.checkpointId) {
      // A newer barrier overtook an unfinished alignment (that checkpoint was aborted upstream): give it up.
      this.post({ type: "checkpointDecline", checkpointId: a.checkpointId, reason: `barrier ${b.checkpointId} arrived before alignment of ${a.checkpointId} completed` });
      this.gate.unblockAll();
      a = this.aligning = null;
    }
    if (!a) a = this.aligning = { checkpointId: b.checkpointId, timestamp: b.timestamp, dir: b.dir, seen: new Set() };
    a.seen.add(channel);
    if (this.d.checkpointingMode === "EXACTLY_ONCE") this.gate.block(channel);
    this.maybeAligned();
  }

  private maybeAligned(): void {
    const a = this.aligning;
    if (!a) return;
    let waiting = 0;
    for (const ch of this.inputChannels) if (!a.seen.has(ch) && !this.gate.isEnded(ch)) waiting++;
    if (waiting > 0) return;
    this.aligning = null;
    this.checkpoint(a.checkpointId, a.timestamp, a.dir);
    this.gate.unblockAll();
  }

  /** The task's channels: rings in shared memory with a peer task's Worker (local) or the main thread (remote). */
  private onConnect(msg: Extract<ToWorker, { type: "connect" }>): void {
    const fail = (err: unknown) => this.post({ type: "failed", error: errorInfo(err, taskDisplayName(this.d)) });
    for (const { channel, ring } of msg.consume) receiveFromRing(ring, channel, this.gate, fail);
    for (const { channel, ring } of msg.produce) {
      const writer = this.writerOf.get(channel);
      writer?.connect(channel, new RingSender(ring, (buf) => writer.recycle(buf, channel), fail));
    }
  }

  private async runSource(): Promise<void> {
    const writers = this.writers;
    const blocked = () => {
      for (let w = 0; w < writers.length; w++) if (writers[w]!.backpressured) return true;
      return false;
    };
    const reader: { next(): unknown[] | null | Promise<unknown[] | null>; activeSplitIds(): number[]; lastSplitId: number } = this.sourceReader ?? {
      next: () => this.connectorReader!.poll(),
      activeSplitIds: () => this.connectorReader!.activeSplitIds(),
      get lastSplitId() {
        return connector.lastSplitId;
      },
    };
    const connector = this.connectorReader!;
    const splitAware = this.operators.filter((op): op is Operator & { onSourceSplit(id: number, active: readonly number[]): void } => "onSourceSplit" in op);
    for (;;) {
      let chunk = reader.next();
      if (chunk instanceof Promise) {
        this.time.switchTo("idle");
        chunk = await chunk;
        this.time.switchTo("busy");
      }
      if (chunk === null) break;
      const eventTime = this.eventTime;
      if (splitAware.length > 0 && chunk.length > 0) {
        const active = reader.activeSplitIds();
        for (const op of splitAware) op.onSourceSplit(reader.lastSplitId, active);
      }
      for (let i = 0; i < chunk.length; i++) {
        this.recordsIn++;
        if (eventTime) this.recordTime.ts = null;
        this.head.process(chunk[i]);
        // A source stops at once when its output is full, not at the end of its chunk: large records
        // would otherwise pile up beyond the buffer pool.
        if (blocked() && i + 1 < chunk.length) {
          this.flushOperators();
          await this.afterBatch();
        }
      }
      this.flushOperators();
      await this.afterBatch();
      // Barriers go in between chunks, where the reader's position is exact.
      while (this.triggers.length > 0) {
        const t = this.triggers.shift()!;
        this.checkpoint(t.checkpointId, t.timestamp, t.dir);
      }
    }
  }

  private async runInputs(): Promise<void> {
    const gate = this.gate;
    while (!gate.finished) {
      const item = gate.poll();
      if (item === null) {
        this.time.switchTo("idle");
        await gate.waitNext();
        this.time.switchTo("busy");
        continue;
      }
      if ("event" in item) {
        const ev = item.event;
        if (ev.type === "barrier") this.onBarrier(item.channel, ev);
        else if (ev.type === "watermark") this.onWatermarkEvent(item.channel, ev as WatermarkEvent);
        else if (ev.type === "end") {
          this.maybeAligned(); // an ended channel no longer holds an alignment back
          const wm = this.valve.onEnd(item.channel);
          if (wm !== null) this.headWatermark(wm);
          this.emitIdle(this.valve.idle);
        }
        continue;
      }
      const records = item.records;
      this.recordsIn += records.length;
      if (this.eventTime) {
        const time = this.recordTime;
        for (let i = 0; i < records.length; i++) {
          const w = records[i] as [number | null, unknown];
          time.ts = w[0];
          this.head.process(w[1]);
        }
      } else for (let i = 0; i < records.length; i++) this.head.process(records[i]);
      this.flushOperators();
      await this.afterBatch();
    }
  }

  private onWatermarkEvent(channel: string, ev: WatermarkEvent): void {
    const wm = this.valve.onWatermark(channel, ev.timestamp, ev.idle === true);
    if (wm !== null) this.headWatermark(wm);
    this.emitIdle(this.valve.idle);
  }

  /** The chain's tail: a watermark goes to every output channel when it advances. */
  private emitWatermark(wm: number): void {
    if (wm <= this.outWatermark) return;
    this.outWatermark = wm;
    this.outIdle = false;
    if (!this.eventTime) return;
    const ev: WatermarkEvent = { type: "watermark", timestamp: wm };
    for (const w of this.writers) w.broadcastEvent(ev);
  }

  /** Idleness: downstream tasks leave this task's channels out of their watermark until it emits again. */
  private emitIdle(idle: boolean): void {
    if (idle === this.outIdle) return;
    this.outIdle = idle;
    if (!this.eventTime) return;
    // Becoming active again is a watermark event without `idle` (at the last watermark: no change downstream).
    const ev: WatermarkEvent = idle ? { type: "watermark", timestamp: this.outWatermark, idle: true } : { type: "watermark", timestamp: this.outWatermark };
    for (const w of this.writers) w.broadcastEvent(ev);
  }

  /** A failure in a timer callback (outside the task loop) fails the task. */
  private failAsync(err: unknown): void {
    if (this.asyncFailed) return;
    this.asyncFailed = true;
    for (const t of this.timers) clearInterval(t);
    for (const op of this.operators) op.dispose?.();
    this.publishCounters();
    this.post({ type: "failed", error: errorInfo(err, taskDisplayName(this.d)) });
  }

  /** Pauses while an output has no free buffer, and lets buffers, recycles and timers in. */
  private async afterBatch(): Promise<void> {
    this.publishCounters();
    for (const op of this.operators) {
      const ready = op.waitReady?.();
      if (ready) {
        this.time.switchTo("backPressured");
        await ready;
        this.time.switchTo("busy");
      }
    }
    for (const w of this.writers) {
      if (w.backpressured) {
        this.time.switchTo("backPressured");
        await w.waitAvailable();
        this.time.switchTo("busy");
      }
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  private flushOperators(): void {
    for (const op of this.operators) op.flush?.();
  }

  private flushWriters(): void {
    for (const w of this.writers) w.flush();
  }

  private counters: Float64Array | null = null;

  /** The main thread's view of the counters (see ToWorker "init"). */
  shareCounters(buffer: SharedArrayBuffer): void {
    this.counters = new Float64Array(buffer, 0, 4);
  }

  publishCounters(): void {
    const c = this.counters;
    if (!c) return;
    c[0] = this.recordsIn;
    c[1] = this.recordsOut;
    c[2] = this.gate.bytesIn;
    let out = 0;
    for (const w of this.writers) out += w.bytesOut;
    c[3] = out;
  }

  private metrics(): TaskMetrics {
    this.publishCounters();
    this.time.switchTo(this.time.state); // close the current period
    const now = performance.now();
    const span = Math.max(1, now - this.lastReport.at);
    const per = (v: number, last: number) => Math.round(((v - last) / span) * 1000);
    const m: TaskMetrics = {
      recordsIn: this.recordsIn,
      recordsOut: this.recordsOut,
      bytesIn: this.gate.bytesIn,
      bytesOut: this.writers.reduce((a, w) => a + w.bytesOut, 0),
      buffersIn: this.gate.buffersIn,
      buffersOut: this.writers.reduce((a, w) => a + w.buffersOut, 0),
      outPoolUsage: ratio(this.writers.reduce((a, w) => a + w.pool.inUse, 0), this.writers.reduce((a, w) => a + w.pool.size, 0)),
      inPoolUsage: ratio(this.gate.queuedBuffers, this.d.inputs.reduce((a, i) => a + i.producers.length, 0) * 2),
      busyTimeMsPerSecond: per(this.time.busy, this.lastReport.busy),
      backPressuredTimeMsPerSecond: per(this.time.backPressured, this.lastReport.backPressured),
      idleTimeMsPerSecond: per(this.time.idle, this.lastReport.idle),
    };
    if (this.eventTime || this.valve.backwards > 0) {
      m.watermarksIgnored = this.valve.backwards;
      m.currentInputWatermark = Number.isFinite(this.valve.current) ? this.valve.current : null;
      m.currentOutputWatermark = Number.isFinite(this.outWatermark) ? this.outWatermark : null;
      m.lateRecordsDropped = this.operators.reduce((a, op) => a + ((op as { lateRecords?: number }).lateRecords ?? 0), 0);
    }
    this.lastReport = { at: now, busy: this.time.busy, backPressured: this.time.backPressured, idle: this.time.idle };
    return m;
  }
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : Math.min(1, a / b);
}

export function errorInfo(err: unknown, task?: string): ErrorInfo {
  if (err instanceof Error) return { message: `${err.name === "Error" ? "" : err.name + ": "}${err.message}`, stack: err.stack, task };
  return { message: String(err), task };
}
