// One parallel subtask of a job vertex, run inside its own Worker: imports the job artifact, rebuilds the
// plan, builds its operator chain (operator-chain.ts) between its input channels and record writers, and runs it
// mailbox-style (one input buffer at a time, pausing while an output has no free buffer). Checkpoint barriers of a
// task with inputs go through its barrier handler (checkpoint-barrier-handler.ts); a source injects them between
// chunks. With checkpoints after tasks finish (FLIP-147) a task that reached the end of its input announces end of
// data, keeps taking part in checkpoints, and finishes once a checkpoint that covers all its work has completed.
import * as fs from "node:fs";
import * as path from "node:path";
import { loadPlan } from "../api/load-plan.ts";
import { describePlan } from "../api/plan.ts";
import { planFingerprint } from "../api/job-graph.ts";
import type { ErrorInfo, TaskDeployment, TaskMetrics, TaskSnapshot } from "../rpc/messages.ts";
import { InputGate } from "../network/input-gate.ts";
import { OvertakenInbox, receiveFromRing, RingSender, type RingReceiver } from "../network/channel-ends.ts";
import { announceBufferSize, ringSlots, ringWakeUps } from "../network/shared-ring.ts";
import { BufferDebloater } from "../network/buffer-debloater.ts";
import { channelShare } from "../network/buffer-budget.ts";
import { createPartitioner } from "../network/partitioners.ts";
import { LOOK_EVERY } from "../network/typed-serialization.ts";
import type { Operator, TimeContext } from "./operator.ts";
import { OperatorChain, taskDisplayName } from "./operator-chain.ts";
import { createBarrierHandler, type Barrier, type CheckpointBarrierHandler } from "./checkpoint-barrier-handler.ts";
import { splitChannelState, writeChannelState, type OutputChannelState } from "./channel-state.ts";
import type { OvertakenOutput } from "../network/record-writer.ts";
import { RecordedChannelState } from "../network/input-gate.ts";
import { WatermarkValve, type WatermarkEvent } from "./event-time.ts";
import { LatencyTracker, type LatencyMarker } from "./latency-markers.ts";
import type { FromWorker, StateGrant, ToWorker } from "./worker-protocol.ts";
import { channelId, channelJob, type NetworkGrant } from "../network/wire.ts";

type Post = (msg: FromWorker) => void;

const METRICS_INTERVAL_MS = 1000;
/**
 * FLIP-147: checkpoints aborted after end of input before the task stops waiting for a final one and falls back to
 * the final transaction with the JobManager's approval (approveFinalCommit). Flink waits for ever; a job whose
 * checkpoints cannot complete (a time-out shorter than any checkpoint) would then never finish.
 */
const FINAL_CHECKPOINT_ATTEMPTS = 3;
/** With unaligned checkpoints, a task lets its event loop in at least this often, even in the middle of a buffer. */
const SLICE_MS = 10;
/** At most this many records between two looks at the clock while slicing (see slicedHandler). */
const SLICE_CHECK_MAX = 64;
/** Slow records: look at the clock again after about half a slice's worth of them (`done` took `elapsed` ms), 1..max. */
function halfASlice(done: number, elapsed: number, max: number): number {
  return Math.max(1, Math.min(max, Math.floor((done * SLICE_MS) / elapsed / 2)));
}
/** How often a task with unaligned checkpoints looks into its channels' priority rings. */
const PRIORITY_POLL_MS = 10;
/** The pseudo edge under which a source keeps the rest of its chunk in channel state. */
const SOURCE_REST_EDGE = -1;

export { taskDisplayName };

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
  private chain: OperatorChain | null = null;
  private recordsIn = 0;
  private timers: ReturnType<typeof setInterval>[] = [];
  private readonly time = new TimeMeter();
  private lastReport = { at: performance.now(), busy: 0, backPressured: 0, idle: 0 };
  /** Ports to local peer tasks that arrived before init() created the writers. */
  private pendingConnects: Extract<ToWorker, { type: "connect" }>[] = [];
  private readonly inputChannels: string[];
  /** Channels of a two-input head operator's second input (connect); every other channel feeds the first. */
  private readonly secondInput = new Set<string>();
  private readonly barriers: CheckpointBarrierHandler;
  /** Buffer debloating (FLIP-183): the rings of the input channels, where the gate's buffer size is announced. */
  private readonly inputRings: SharedArrayBuffer[] = [];
  private readonly debloater: BufferDebloater | null;
  private debloatLast = { at: performance.now(), bytes: 0, idle: 0 };

  /** Source tasks (and tasks whose inputs all finished): checkpoints to take after the current chunk. */
  private triggers: { checkpointId: number; timestamp: number; dir: string; unaligned: boolean }[] = [];
  /** Checkpoints whose asynchronous part runs: an abort drops their acknowledgement. */
  private readonly inFlight = new Set<number>();
  /**
   * A source back-pressured in the middle of a chunk: the records of the chunk not emitted yet (its reader's position
   * is past them). An unaligned checkpoint is taken then and there, with them as the source's channel state.
   */
  private sourceRest: unknown[] | null = null;
  /** Records of restored channel state, replayed before any new input, per input of the head operator. */
  private restoredInFlight: { input: number; records: unknown[] }[] = [];
  /** Local input channels with a priority ring: looked at every PRIORITY_POLL_MS, a busy task's ring reader aside. */
  private readonly priorityReceivers: RingReceiver[] = [];
  /** Remote input channels: the buffers their priority events overtook on the TaskManagers (OvertakenBuffers messages). */
  private readonly overtaken = new OvertakenInbox();
  /** Restored output channel state: emitted again through the writers before anything else. */
  private restoredOutput: OutputChannelState[] = [];
  /** Input done: no more records. */
  private inputEnded = false;
  /** FLIP-147: the first checkpoint taken after end of input; the task finishes once one at or above it completes. */
  private finalCheckpointId: number | null = null;
  private finalCheckpointDone: (() => void) | null = null;
  private completedUpTo = 0;
  /**
   * FLIP-147: how the task answers checkpoints once it is past its final one (see endCheckpoints). "finished": a
   * checkpoint at or after its final one completed (or it was restored finished); "closing": it gave up waiting and
   * finishes by the approved final commit.
   */
  private pastFinal: "finished" | "closing" | null = null;

  // ---- event time ----
  /** The timestamp of the record in flight through the chain. */
  private readonly recordTime: TimeContext = { ts: null };
  private readonly valve: WatermarkValve;
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
    for (const input of d.inputs) {
      for (const p of input.producers) {
        const ch = channelId(channelJob(d), input.edgeId, p.subtask, d.subtaskIndex);
        inputs.push(ch);
        if (input.input === 1) this.secondInput.add(ch);
      }
    }
    this.gate = new InputGate(inputs);
    // Unaligned checkpoints' input channel state as bytes, decoded only on restore (channel-state.ts).
    this.gate.rawChannelState = true;
    this.inputChannels = inputs;
    this.valve = new WatermarkValve(inputs);
    this.debloater = network.debloat && inputs.length > 0 ? new BufferDebloater(network.debloat, network.segmentSize) : null;
    const kind = d.checkpointingMode === "AT_LEAST_ONCE" ? "at-least-once" : d.unalignedCheckpoints ? "unaligned" : "aligned";
    this.barriers = createBarrierHandler(kind, this.gate, inputs, {
      takeCheckpoint: (b, channelState, alignmentMs, startDelayMs) => this.checkpoint(b, channelState, alignmentMs, startDelayMs),
      abortCheckpoint: (id, reason, decline) => this.abortCheckpoint(id, reason, decline),
    });
  }

  private get operators(): Operator[] {
    return this.chain?.operators ?? [];
  }

  private get writers() {
    return this.chain?.writers ?? [];
  }

  private get eventTime(): boolean {
    return this.chain?.eventTime ?? false;
  }

  async init(artifactPath: string): Promise<void> {
    const plan = await loadPlan(artifactPath, this.d.jobArgs);
    if (planFingerprint(describePlan(plan)) !== this.d.planFingerprint) {
      throw new Error("the job's builder produced a different plan in the task than at submission; a job's default function must build the same pipeline every time it runs");
    }
    const d = this.d;
    const chain = (this.chain = OperatorChain.create(d, plan, this.network));
    // Unaligned checkpoints record what their barriers overtake in this task's output here (output channel state).
    if (d.unalignedCheckpoints && d.checkpointingMode !== "AT_LEAST_ONCE") for (const w of chain.writers) w.keepInFlight = true;
    for (const c of this.pendingConnects.splice(0)) this.onConnect(c);
    await chain.open(
      {
        time: this.recordTime,
        emitWatermark: (wm) => this.emitWatermark(wm),
        emitIdle: (idle) => this.emitIdle(idle),
        failAsync: (err) => this.failAsync(err),
        flushOperators: () => this.flushOperators(),
        finalCheckpoint: d.finalCheckpoint === true,
      },
      this.state,
    );
    if (d.restore?.channel && d.restore.channel.length > 0) ({ input: this.restoredInFlight, output: this.restoredOutput } = this.restoredChannelState(d.restore.channel));
    if (this.secondInput.size > 0 && !chain.head2) throw new Error(`${taskDisplayName(d)}: the deployment has edges into a second input, but the chain's head has one input`);
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
      // The flush serializes waiting records: one that does not match its declared type fails the task.
      this.timers.push(
        setInterval(() => {
          try {
            this.flushWriters();
          } catch (err) {
            this.failAsync(err);
          }
        }, d.bufferTimeoutMs),
      );
    }
    this.timers.push(setInterval(() => this.post({ type: "metrics", metrics: this.metrics() }), METRICS_INTERVAL_MS));
    // A barrier in a priority ring wakes nobody (the ring reader waits on the data ring, which is full): looked for.
    if (d.unalignedCheckpoints && d.inputs.length > 0) {
      this.timers.push(setInterval(() => {
        for (const r of this.priorityReceivers) r.poll();
      }, PRIORITY_POLL_MS));
    }
    if (this.debloater) this.timers.push(setInterval(() => this.debloat(), this.network.debloat!.periodMs));
    // Latency markers start at sources; between chunks (the loop yields after each), so behind the records emitted.
    const latencyMs = plan.settings.latencyTrackingInterval ?? d.latencyIntervalMs ?? 0;
    if (latencyMs > 0 && chain.sourceNode) {
      this.timers.push(setInterval(() => {
        if (this.inputEnded) return;
        try {
          this.onLatencyMarker({ type: "latencyMarker", markedTime: Date.now(), sourceVertexId: d.vertexId, sourceSubtask: d.subtaskIndex });
        } catch (err) {
          this.failAsync(err); // the marker's event serializes waiting records first
        }
      }, latencyMs));
    }
  }

  /** Latency tracking: each chained operator records the marker's age, then it goes on downstream. */
  private readonly latency = new LatencyTracker();

  private onLatencyMarker(marker: LatencyMarker): void {
    const chain = this.chain!;
    const now = Date.now();
    for (const name of chain.latencyOperators) this.latency.record(name, marker, now);
    chain.forwardLatencyMarker(marker);
  }

  /**
   * Buffer debloating, every period: the gate's throughput (bytes read over the time the task was not idle) sets the
   * buffer size announced to the producers in each input ring. The buffers in flight per channel are its ring's
   * slots plus the producer's share of its output pool (at most max-buffers-per-channel), both cut at that size.
   */
  private debloat(): void {
    this.time.switchTo(this.time.state); // close the current period
    const now = performance.now();
    const last = this.debloatLast;
    const bytes = this.gate.bytesIn - last.bytes;
    const activeMs = now - last.at - (this.time.idle - last.idle);
    this.debloatLast = { at: now, bytes: this.gate.bytesIn, idle: this.time.idle };
    if (this.inputRings.length === 0) return;
    let buffers = 0;
    for (const r of this.inputRings) buffers += ringSlots(r) + this.network.maxBuffersPerChannel;
    const size = this.debloater!.update(bytes, activeMs, buffers);
    if (size !== null) for (const r of this.inputRings) announceBufferSize(r, size);
  }

  /**
   * This subtask's share of the old subtasks' in-flight records: of the input channel state split by each input
   * edge's partitioner, of the output channel state old subtask i's for i % parallelism.
   */
  private restoredChannelState(handles: NonNullable<NonNullable<TaskDeployment["restore"]>["channel"]>): { input: { input: number; records: unknown[] }[]; output: OutputChannelState[] } {
    const d = this.d;
    const chain = this.chain!;
    const edges = new Map<number, { owner: (record: unknown, oldConsumer: number) => number }>();
    // A source's unemitted records (any new subtask may emit them; the old subtask's share stays together).
    edges.set(SOURCE_REST_EDGE, { owner: (_r, oldSubtask) => oldSubtask % d.parallelism });
    for (const input of d.inputs) {
      const kind = input.partitioner ?? "forward";
      if (kind === "hash" || kind === "custom") {
        const keyNode = input.keyNodeId !== undefined ? chain.node(input.keyNodeId) : undefined;
        const rawKey = keyNode?.kind === "keyBy" ? keyNode.fn : keyNode?.kind === "partition" ? keyNode.custom?.key : undefined;
        if (!rawKey) throw new Error(`input edge ${input.edgeId} is keyed but its key selector is unknown`);
        const key = this.eventTime ? (w: unknown) => rawKey((w as [number | null, unknown])[1]) : rawKey;
        // The producers' own partitioner, so that restored records go where new ones will.
        const p = createPartitioner(kind, 0, d.parallelism, d.maxParallelism, key, keyNode?.kind === "partition" ? keyNode.custom?.partition : undefined);
        edges.set(input.edgeId, { owner: p });
      } else {
        // Records of one old channel stay together (and in order) at one new subtask.
        edges.set(input.edgeId, { owner: (_r, oldConsumer) => oldConsumer % d.parallelism });
      }
    }
    // A two-input head: each input's records apart (read once more per extra input, only on restore).
    const byInput = [0, 1].map((index) => new Map([...edges].filter(([edgeId]) => (d.inputs.find((i) => i.edgeId === edgeId)?.input ?? 0) === index)));
    const first = splitChannelState(handles, byInput[0]!, new Set(d.outputs.map((o) => o.edgeId)), d.subtaskIndex, d.parallelism);
    const input = [{ input: 0, records: first.input }];
    if (byInput[1]!.size > 0) input.push({ input: 1, records: splitChannelState(handles, byInput[1]!, new Set(), d.subtaskIndex, d.parallelism).input });
    return { input: input.filter((p) => p.records.length > 0), output: first.output };
  }

  /** Runs the task to the end of its input; throws on a failure in user code. */
  async run(): Promise<TaskMetrics> {
    this.post({ type: "running" });
    try {
      if (this.d.restore?.finished) {
        // Every subtask of the vertex had finished in the restored checkpoint: nothing to read or emit again.
      } else {
        // Per channel the consumer's input channel state is older than the producer's output channel state, which is
        // older than anything new: consumers replay theirs before reading their channels, producers emit theirs first.
        if (this.restoredOutput.length > 0) await this.replayOutputState();
        if (this.restoredInFlight.length > 0) await this.replayChannelState();
        if (this.chain!.sourceNode) await this.runSource();
        else await this.runInputs();
      }
      this.inputEnded = true;
      // End of input is the end of event time (Flink's MAX_WATERMARK): every event-time timer and window fires.
      if (this.valve.current < Infinity) {
        this.valve.current = Infinity;
        this.chain!.headWatermark(Infinity);
      }
      for (const op of this.operators) await op.endInput?.();
      this.flushOperators();
      if (this.d.finalCheckpoint && !this.d.restore?.finished) {
        await this.awaitFinalCheckpoint();
        // The final checkpoint's notify commits connector sinks asynchronously: done before the task ends.
        await this.chain!.notificationsSettled();
      }
      else if (this.d.finalCheckpoint) this.endCheckpoints("finished"); // its whole vertex finished in the restored checkpoint
      else for (const t of this.triggers.splice(0)) this.abortCheckpoint(t.checkpointId, "the task reached the end of its input", true);
      await Promise.all(this.writers.map((w) => w.finish()));
      // No external commit without the JobManager's word: a TaskManager cut off from it (a zombie whose attempt
      // was already replaced) must not commit the final transaction on its own. With a final checkpoint its notify
      // was that word, and nothing is left here.
      const committers = this.operators.filter((op) => op.hasFinalCommit?.());
      if (committers.length > 0) {
        await this.finalCommitApproval();
        for (const op of committers) await op.finalCommit!();
      }
      this.time.switchTo("idle");
      return this.metrics();
    } finally {
      for (const t of this.timers) clearInterval(t);
      this.chain?.dispose();
      await this.chain?.close();
    }
  }

  /**
   * FLIP-147: end of data goes downstream (no records follow, barriers do), then the task keeps taking part in
   * checkpoints until one taken after this point has completed, which commits what two-phase-commit sinks hold.
   */
  private async awaitFinalCheckpoint(): Promise<void> {
    for (const w of this.writers) w.broadcastEvent({ type: "endOfData" });
    this.flushWriters();
    const done = new Promise<void>((resolve) => (this.finalCheckpointDone = resolve));
    // Checkpoints triggered while the last chunk was read.
    this.takeTriggered();
    if (this.chain!.sourceNode || this.gate.finished) {
      await done;
      return;
    }
    // Keep reading barriers, cancel markers and the end of the upstream partitions.
    let finished = false;
    void done.then(() => (finished = true));
    while (!finished) {
      const item = this.gate.poll();
      if (item === null) {
        if (this.gate.finished) this.takeTriggered();
        await Promise.race([this.gate.waitNext(), done]);
        continue;
      }
      if ("event" in item) this.onEvent(item.channel, item.event);
      else if (item.records.length > 0) throw new Error(`input channel ${item.channel} sent records after its end of data`);
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
        if (this.chain === null && this.d.outputs.length > 0) this.pendingConnects.push(msg);
        else this.onConnect(msg);
        break;
      case "overtaken":
        this.overtaken.put(msg.channel, msg.id, msg.buffers);
        // The ring reader may be waiting for them at their event.
        for (const r of this.priorityReceivers) r.poll();
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
      case "checkpoint": {
        if (this.pastFinal !== null) {
          this.answerPastFinal(msg.checkpointId);
          break;
        }
        const waitingFinal = this.inputEnded && this.d.finalCheckpoint;
        if (this.inputEnded && !waitingFinal) {
          this.post({ type: "checkpointDecline", checkpointId: msg.checkpointId, reason: "the task reached the end of its input" });
          break;
        }
        // A source, or (FLIP-147) a task whose producers have all finished: taken once its input is read.
        this.triggers.push({ checkpointId: msg.checkpointId, timestamp: msg.timestamp, dir: msg.dir, unaligned: msg.unaligned === true });
        if (waitingFinal && (this.chain?.sourceNode || this.gate.finished)) this.takeTriggered();
        else if (msg.unaligned && this.sourceRest !== null) this.takeTriggered(this.sourceRest);
        break;
      }
      case "checkpointAborted":
        this.onCheckpointAborted(msg.checkpointId);
        break;
      case "checkpointComplete":
        this.chain?.notifyCheckpointComplete(msg.checkpointId, (err) => this.failAsync(err));
        this.completedUpTo = Math.max(this.completedUpTo, msg.checkpointId);
        if (this.finalCheckpointId !== null && msg.checkpointId >= this.finalCheckpointId && this.finalCheckpointDone) {
          this.endCheckpoints("finished");
          this.finalCheckpointDone();
        }
        break;
    }
  }

  /** Triggered checkpoints are taken between chunks (sources) or once all input has ended (finished producers). */
  private takeTriggered(sourceRest: unknown[] = []): void {
    if (!this.chain?.sourceNode && !this.gate.finished) return;
    while (this.triggers.length > 0) {
      const t = this.triggers.shift()!;
      if (t.checkpointId <= this.barriers.lastCheckpointId) continue;
      let state: Promise<Map<string, unknown[]>> | null = null;
      if (sourceRest.length > 0) {
        // As [timestamp, record] with event time, as records on the wire (a source's records have none yet).
        const rest = this.eventTime ? sourceRest.map((r) => [null, r]) : sourceRest;
        state = Promise.resolve(new Map([[channelId(channelJob(this.d), SOURCE_REST_EDGE, this.d.subtaskIndex, this.d.subtaskIndex), rest]]));
        sourceRest = [];
      }
      // With an aligned-checkpoint-timeout the barrier starts aligned (the rest of a chunk is channel state all the
      // same: the records emitted before the barrier precede it); once the time-out has passed, unaligned at once.
      const timeoutMs = this.d.alignedCheckpointTimeoutMs ?? 0;
      const aligned = t.unaligned && timeoutMs > 0 && Date.now() - t.timestamp < timeoutMs;
      const mode = aligned ? { alignedTimeoutMs: timeoutMs } : t.unaligned ? { unaligned: true } : {};
      this.checkpoint({ type: "barrier", checkpointId: t.checkpointId, timestamp: t.timestamp, dir: t.dir, ...mode }, state, 0, Math.max(0, Date.now() - t.timestamp));
      this.barriers.taken(t.checkpointId);
    }
  }

  private readonly abortedAfterEnd = new Set<number>();

  /** Waiting for the final checkpoint: after FINAL_CHECKPOINT_ATTEMPTS aborted ones, finish with the approval path. */
  private noteAbortAfterEnd(checkpointId: number): void {
    if (!this.inputEnded || this.finalCheckpointDone === null || this.abortedAfterEnd.has(checkpointId)) return;
    this.abortedAfterEnd.add(checkpointId);
    if (this.abortedAfterEnd.size >= FINAL_CHECKPOINT_ATTEMPTS) {
      this.endCheckpoints("closing");
      this.finalCheckpointDone();
    }
  }

  /**
   * FLIP-147: the task takes no checkpoint any more; it is about to send end of partition, or has. A barrier sent now
   * would follow the end on a channel whose consumer may have read the end already (the ring reader stops there, a
   * remote channel is closed after it), and that consumer is not triggered by the coordinator either, since this
   * task still runs: it would never take the checkpoint, which would hang at its other acknowledgements. So
   * triggers, those waiting here and later ones, are answered without a barrier (see answerPastFinal).
   */
  private endCheckpoints(how: "finished" | "closing"): void {
    if (this.pastFinal !== null) return;
    this.pastFinal = how;
    for (const t of this.triggers.splice(0)) if (t.checkpointId > this.barriers.lastCheckpointId) this.answerPastFinal(t.checkpointId);
  }

  /**
   * "finished": acknowledged as a finished task (no state; its final checkpoint, completed, holds all it did, as
   * for a task that had finished before the trigger); the coordinator then triggers its consumers whose producers
   * have now all finished. "closing": declined, since its last transaction is in no checkpoint yet.
   */
  private answerPastFinal(checkpointId: number): void {
    if (this.pastFinal === "finished") this.post({ type: "checkpointAck", checkpointId, snapshot: { operators: [], finished: true } });
    else this.post({ type: "checkpointDecline", checkpointId, reason: `${taskDisplayName(this.d)}: the task is finishing without a final checkpoint` });
  }

  /** The coordinator aborted checkpoint n: release its alignment at once and drop its pending work. */
  private onCheckpointAborted(checkpointId: number): void {
    this.noteAbortAfterEnd(checkpointId);
    this.triggers = this.triggers.filter((t) => t.checkpointId !== checkpointId);
    this.inFlight.delete(checkpointId);
    this.barriers.onCheckpointAborted(checkpointId);
  }

  /** Checkpoint n is given up here: decline it (unless told by the coordinator), and tell downstream tasks in-band. */
  private abortCheckpoint(checkpointId: number, reason: string, decline: boolean): void {
    this.noteAbortAfterEnd(checkpointId);
    this.inFlight.delete(checkpointId);
    if (decline) this.post({ type: "checkpointDecline", checkpointId, reason: `${taskDisplayName(this.d)}: ${reason}` });
    for (const w of this.writers) w.broadcastPriorityEvent({ type: "cancelBarrier", checkpointId });
  }

  /**
   * Checkpoint n at this task: the synchronous part (operators pre-commit, source positions, the state
   * backends' copy-on-write marks) happens before the barrier goes downstream and before the next record; the
   * files are written asynchronously and then acknowledged. An unaligned barrier overtakes the task's queued
   * output; the records in flight on its inputs (channelState) are written beside the operator state. A failure
   * declines the checkpoint, never the task, and a cancel marker goes downstream instead of the barrier.
   */
  private checkpoint(b: Barrier, channelState: Promise<Map<string, unknown[]>> | null, alignmentMs: number, startDelayMs: number): void {
    const d = this.d;
    const chain = this.chain!;
    const checkpointId = b.checkpointId;
    const taskDir = path.join(b.dir, `${d.vertexId}-${d.subtaskIndex}`);
    let pending: Promise<TaskSnapshot>;
    const outputState = new Map<string, OvertakenOutput>();
    try {
      // Asynchronous pre-commits (connector sinks): the acknowledgement waits for them.
      const preCommits = chain.snapshotState(checkpointId);
      fs.mkdirSync(taskDir, { recursive: true });
      // Checkpoints may be incremental; savepoints (not in a chk-<n> directory of the checkpoint store) are full.
      const incremental = /^chk-\d+$/.test(path.basename(b.dir));
      const operators = chain.snapshot(taskDir, { checkpointId, incremental });
      // Output channel state: filled below, as the barrier overtakes the task's queued output (before this runs).
      const channel =
        channelState || b.unaligned
          ? Promise.resolve(channelState).then((s) => writeChannelState(taskDir, d.subtaskIndex, s ?? new Map(), outputState, s instanceof RecordedChannelState ? s.parts : undefined))
          : null;
      pending = Promise.all([operators, channel, Promise.all(preCommits)]).then(([o, c]) => ({
        ...o,
        ...(c ? { channel: c } : {}),
        alignmentMs,
        startDelayMs,
        ...(b.unaligned ? { unaligned: true } : {}),
      }));
    } catch (err) {
      // Declined here: no barrier goes on but a cancel marker, and a recording of channel state is dropped.
      channelState?.catch(() => {});
      this.gate.stopRecording(checkpointId);
      this.abortCheckpoint(checkpointId, `${(err as Error)?.message ?? String(err)}`, true);
      return;
    }
    if (this.inputEnded && this.d.finalCheckpoint && this.finalCheckpointId === null) this.finalCheckpointId = checkpointId;
    // The barrier goes on: an unaligned one ahead of the task's queued output, an aligned one after it.
    const { overtakenBytes: _, ...barrier } = b;
    for (const w of this.writers) {
      if (b.unaligned) w.broadcastPriorityEvent(barrier, undefined, outputState);
      else w.broadcastEvent(barrier);
    }
    this.inFlight.add(checkpointId);
    pending.then(
      (snapshot) => {
        if (!this.inFlight.delete(checkpointId)) return; // aborted meanwhile
        this.post({ type: "checkpointAck", checkpointId, snapshot });
      },
      (err: Error) => {
        if (!this.inFlight.delete(checkpointId)) return;
        this.post({ type: "checkpointDecline", checkpointId, reason: `${taskDisplayName(d)}: ${err?.message ?? String(err)}` });
      },
    );
  }

  /** The task's channels: rings in shared memory with a peer task's Worker (local) or the main thread (remote). */
  private onConnect(msg: Extract<ToWorker, { type: "connect" }>): void {
    const fail = (err: unknown) => this.post({ type: "failed", error: errorInfo(err, taskDisplayName(this.d)) });
    for (const { channel, ring, priority, remote } of msg.consume) {
      const receiver = receiveFromRing(ring, channel, this.gate, fail, priority, remote ? this.overtaken : undefined);
      if (priority) this.priorityReceivers.push(receiver);
      this.inputRings.push(ring);
      if (this.debloater && this.debloater.announced < this.network.segmentSize) announceBufferSize(ring, this.debloater.announced);
    }
    for (const { channel, ring, priority, remote } of msg.produce) {
      const writer = this.chain!.writerOf.get(channel);
      writer?.connect(channel, new RingSender(ring, (buf) => writer.recycle(buf, channel), fail, priority, remote === true));
    }
  }

  /**
   * Restored output channel state: emitted again, as the records were on the wire ([timestamp, record] with event
   * time), before anything else this task emits. A keyed edge's partitioner picks the consumer at the current
   * parallelism; on other edges the records go to the old consumer's channel (or its index modulo the channels).
   */
  private async replayOutputState(): Promise<void> {
    const d = this.d;
    const chain = this.chain!;
    const parts = this.restoredOutput;
    this.restoredOutput = [];
    let n = 0;
    for (const part of parts) {
      const i = d.outputs.findIndex((o) => o.edgeId === part.edgeId);
      const writer = chain.writers[i];
      if (!writer) continue;
      const out = d.outputs[i]!;
      const keyed = out.partitioner === "hash" || out.partitioner === "custom";
      let target = -1;
      if (!keyed) {
        target = out.targets.findIndex((t) => t.subtask === part.consumer);
        if (target < 0) target = part.consumer % out.targets.length;
      }
      for (const r of part.records) {
        if (keyed) writer.emit(r);
        else writer.emitTo(target, r);
        if ((++n & 1023) === 0) await this.afterBatch();
      }
    }
    await this.afterBatch();
  }

  /** Restored channel state: the records that were in flight, before any new input (as Flink replays it). */
  private async replayChannelState(): Promise<void> {
    const parts = this.restoredInFlight;
    this.restoredInFlight = [];
    for (const part of parts) await this.replayInput(part.input === 1 ? this.chain!.head2! : this.chain!.head, part.records);
  }

  private async replayInput(head: Operator, records: unknown[]): Promise<void> {
    // In batches of 1024, the task's loop let in between them.
    for (let i = 0; i < records.length; i += 1024) {
      const end = Math.min(records.length, i + 1024);
      this.recordsIn += end - i;
      this.processRange(head, records, i, end);
      if (end - i === 1024) {
        this.flushOperators();
        await this.afterBatch();
      }
    }
    this.flushOperators();
    await this.afterBatch();
  }

  private async runSource(): Promise<void> {
    const chain = this.chain!;
    const head = chain.head;
    const connector = chain.connectorReader;
    const reader: { next(): unknown[] | null | Promise<unknown[] | null>; activeSplitIds(): number[]; lastSplitId: number } = chain.sourceReader ?? {
      next: () => connector!.poll(),
      activeSplitIds: () => connector!.activeSplitIds(),
      get lastSplitId() {
        return connector!.lastSplitId;
      },
    };
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
      let full = false;
      for (let i = 0; i < chunk.length; ) {
        i = this.emitSourceRecords(head, chunk, i);
        // A source stops at once when its output is full, not at the end of its chunk: large records
        // would otherwise pile up beyond the buffer pool.
        if (i < chunk.length) {
          // Chunks shrink to what the output took at once, so that an aligned barrier (taken between chunks)
          // waits for a few records rather than for the rest of a chunk to drain through the slow consumer.
          if (!full) chain.sourceReader?.outputFullAfter(i);
          full = true;
          this.flushOperators();
          // While it waits, an unaligned checkpoint is taken at once, the rest of the chunk kept as its state.
          this.sourceRest = chunk.slice(i);
          await this.afterBatch();
          this.sourceRest = null;
        }
      }
      if (!full) chain.sourceReader?.chunkWentOut();
      this.flushOperators();
      this.sourceRest = [];
      await this.afterBatch();
      this.sourceRest = null;
      // Barriers go in between chunks, where the reader's position is exact.
      this.takeTriggered();
    }
  }

  /** The operator a channel's records go to: the head, or a two-input head's second input. */
  private headFor(channel: string): Operator {
    return this.secondInput.size > 0 && this.secondInput.has(channel) ? this.chain!.head2! : this.chain!.head;
  }

  private async runInputs(): Promise<void> {
    const gate = this.gate;
    // One array for every buffer's records: each buffer's are done with before the next poll.
    const reused: unknown[] = [];
    const unaligned = this.barriers.kind === "unaligned";
    // One input: each record is processed as the gate decodes it (a second input's records need their own head).
    const head = this.chain!.head;
    const single = this.chain!.head2 === null;
    const plain = single ? this.recordHandler(head) : undefined;
    const sliced = single && unaligned ? this.slicedHandler(head) : undefined;
    const goOn = unaligned ? () => this.sliceGoesOn() : undefined;
    // Until end of data on every channel (FLIP-147) or end of partition.
    while (!gate.finished && !this.allEndOfData()) {
      this.startSlice();
      // Unaligned checkpoints: the clock is looked at every LOOK_EVERY fast records by the decoder (a count it keeps,
      // which costs the records nothing measurable); slow ones (sliceCheckEvery below its maximum) one by one
      // (slicedHandler).
      const item = unaligned && this.sliceCheckEvery < SLICE_CHECK_MAX ? gate.poll(reused, sliced) : gate.poll(reused, plain, goOn);
      if (item === null) {
        this.time.switchTo("idle");
        await gate.waitNext();
        this.time.switchTo("busy");
        continue;
      }
      if ("event" in item) {
        this.onEvent(item.channel, item.event);
        continue;
      }
      const records = item.records;
      if (records.length > 0) {
        // The slice ended in the middle of a buffer read now (goOn): the rest goes back to the gate (below).
        if (records === reused && plain !== undefined) this.sliceRest = records.slice();
        // Records decoded earlier (or of a task with two inputs) come as an array.
        else if (unaligned) {
          const h = this.slicedHandler(this.headFor(item.channel));
          for (let i = 0; i < records.length; i++) h(records[i]);
        } else {
          this.recordsIn += records.length;
          this.processRange(this.headFor(item.channel), records, 0, records.length);
        }
      }
      // The slice ended in the middle of the buffer: the records not processed yet go back to the gate before the
      // loop turns, so that whatever happens meanwhile (a priority event arriving, or an aligned-checkpoint-timeout
      // switching to unaligned from its timer) sees them in flight; they are read next unless a priority event came first.
      const rest = this.sliceRest;
      if (rest !== null && rest.length > 0) this.gate.unread(item.channel, rest);
      this.sliceRest = null;
      this.flushOperators();
      await this.afterBatch();
    }
  }

  /** The handler of records as the gate decodes them (no slicing): into the head, with event time unwrapped. */
  private recordHandler(head: Operator): (record: unknown) => void {
    if (!this.eventTime) {
      return (r) => {
        this.recordsIn++;
        head.process(r);
      };
    }
    const time = this.recordTime;
    return (r) => {
      this.recordsIn++;
      const w = r as [number | null, unknown];
      time.ts = w[0];
      head.process(w[1]);
    };
  }

  /**
   * A source chunk's records from `from` on into the chain, until the chunk ends or an output is full after a record
   * with more of the chunk left; returns where it stopped. Synchronous, out of runSource: locals of an async function
   * that live across its awaits are kept in its frame object, which a per-record loop there reads and writes.
   */
  private emitSourceRecords(head: Operator, chunk: unknown[], from: number): number {
    const writers = this.writers;
    const time = this.eventTime ? this.recordTime : null;
    const n = chunk.length;
    for (let i = from; i < n; ) {
      this.recordsIn++;
      if (time !== null) time.ts = null;
      head.process(chunk[i++]);
      if (i < n) for (let w = 0; w < writers.length; w++) if (writers[w]!.backpressured) return i;
    }
    return n;
  }

  /** Records [from, to) of a buffer into the operator (with event time each is [timestamp, record]). */
  private processRange(head: Operator, records: unknown[], from: number, to: number): void {
    if (this.eventTime) {
      const time = this.recordTime;
      for (let i = from; i < to; i++) {
        const w = records[i] as [number | null, unknown];
        time.ts = w[0];
        head.process(w[1]);
      }
    } else for (let i = from; i < to; i++) head.process(records[i]);
  }

  /** Records processed between two looks at the clock while slicing: about half a slice's worth (1..SLICE_CHECK_MAX). */
  private sliceCheckEvery = 1;
  /** The slice (one buffer's records at most): when it began, and at which recordsIn to look at the clock next. */
  private sliceStart = 0;
  private sliceNextCheck = 0;
  /** The records of the buffer left once its slice ended (they go back to the gate); null while it lasts. */
  private sliceRest: unknown[] | null = null;

  /** recordsIn when the slice began: the records processed in it are the difference. */
  private sliceRecordsAtStart = 0;

  private startSlice(): void {
    if (this.barriers.kind !== "unaligned") return;
    this.sliceStart = performance.now();
    this.sliceRecordsAtStart = this.recordsIn;
    this.sliceNextCheck = this.recordsIn + this.sliceCheckEvery;
    this.sliceRest = null;
  }

  /**
   * Asked every LOOK_EVERY fast records and after each chunk (unaligned checkpoints): false once the slice is over, or
   * when records are so slow that the next LOOK_EVERY could overrun it; the records are then looked at one by one
   * from the next buffer on (sliceCheckEvery below its maximum), and the gate keeps this buffer's other records for
   * runInputs to put back.
   */
  private sliceGoesOn(): boolean {
    const elapsed = performance.now() - this.sliceStart;
    const done = this.recordsIn - this.sliceRecordsAtStart;
    if (elapsed < SLICE_MS && elapsed * LOOK_EVERY < (done * SLICE_MS) / 2) return true;
    this.sliceCheckEvery = halfASlice(done, elapsed, SLICE_CHECK_MAX - 1);
    return false;
  }

  /**
   * The handler of slow records with unaligned checkpoints, one by one: the task lets its event loop in every SLICE_MS
   * even in the middle of a buffer, so that a slow operator (a buffer of records may take seconds) neither delays an
   * unaligned barrier nor the writing of a checkpoint's files (each I/O step needs a turn of the loop). Once the slice
   * is over, the buffer's other records are kept in sliceRest (runInputs puts them back to the gate, so a checkpoint
   * taken meanwhile has them in its channel state). The clock is read once per sliceCheckEvery records; when that
   * reaches SLICE_CHECK_MAX the records are fast, and the decoder asks sliceGoesOn instead (runInputs).
   */
  private slicedHandler(head: Operator): (record: unknown) => void {
    const processRecord = this.recordHandler(head);
    return (r) => {
      const rest = this.sliceRest;
      if (rest !== null) {
        rest.push(r);
        return;
      }
      processRecord(r);
      if (this.recordsIn >= this.sliceNextCheck) this.lookAtSlice();
    };
  }

  private lookAtSlice(): void {
    const elapsed = performance.now() - this.sliceStart;
    if (elapsed < SLICE_MS) {
      if (elapsed < SLICE_MS / 4 && this.sliceCheckEvery < SLICE_CHECK_MAX) this.sliceCheckEvery *= 2;
      this.sliceNextCheck = this.recordsIn + this.sliceCheckEvery;
      return;
    }
    this.sliceCheckEvery = halfASlice(this.recordsIn - this.sliceRecordsAtStart, elapsed, SLICE_CHECK_MAX);
    this.sliceRest = [];
  }

  /** Channels that announced end of data (FLIP-147) or ended. */
  private readonly endOfData = new Set<string>();

  private allEndOfData(): boolean {
    return this.endOfData.size === this.inputChannels.length && this.inputChannels.length > 0;
  }

  private onEvent(channel: string, ev: import("../network/record-writer.ts").ChannelEvent): void {
    switch (ev.type) {
      case "barrier":
        this.barriers.onBarrier(channel, ev);
        break;
      case "cancelBarrier":
        this.barriers.onCancelMarker(ev.checkpointId);
        break;
      case "watermark":
        this.onWatermarkEvent(channel, ev as WatermarkEvent);
        break;
      case "latencyMarker":
        this.onLatencyMarker(ev);
        break;
      case "endOfData":
        this.endOfData.add(channel);
        break;
      case "end": {
        this.endOfData.add(channel);
        this.barriers.onEndOfPartition(channel); // an ended channel no longer holds an alignment back
        const wm = this.valve.onEnd(channel);
        if (wm !== null) this.chain!.headWatermark(wm);
        this.emitIdle(this.valve.idle);
        break;
      }
    }
  }

  private onWatermarkEvent(channel: string, ev: WatermarkEvent): void {
    const wm = this.valve.onWatermark(channel, ev.timestamp, ev.idle === true);
    if (wm !== null) this.chain!.headWatermark(wm);
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
    c[1] = (this.chain?.recordsOut ?? 0);
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
      recordsOut: (this.chain?.recordsOut ?? 0),
      bytesIn: this.gate.bytesIn,
      bytesOut: this.writers.reduce((a, w) => a + w.bytesOut, 0),
      buffersIn: this.gate.buffersIn,
      buffersOut: this.writers.reduce((a, w) => a + w.buffersOut, 0),
      wakeUps: ringWakeUps.count,
      outPoolUsage: ratio(this.writers.reduce((a, w) => a + w.pool.inUse, 0), this.writers.reduce((a, w) => a + w.pool.size, 0)),
      inPoolUsage: ratio(this.gate.queuedBuffers, this.d.inputs.reduce((a, i) => a + i.producers.length, 0) * 2),
      busyTimeMsPerSecond: per(this.time.busy, this.lastReport.busy),
      backPressuredTimeMsPerSecond: per(this.time.backPressured, this.lastReport.backPressured),
      idleTimeMsPerSecond: per(this.time.idle, this.lastReport.idle),
    };
    if (this.debloater) m.debloatedBufferSize = this.debloater.announced;
    if (!this.latency.empty) m.latency = this.latency.report();
    if (this.eventTime || this.valve.backwards > 0) {
      m.watermarksIgnored = this.valve.backwards;
      m.currentInputWatermark = Number.isFinite(this.valve.current) ? this.valve.current : null;
      m.currentOutputWatermark = Number.isFinite(this.outWatermark) ? this.outWatermark : null;
      m.lateRecordsDropped = this.operators.reduce((a, op) => a + ((op as { lateRecords?: number }).lateRecords ?? 0), 0);
    }
    const state = this.chain?.chainState?.stateMetrics();
    if (state) m.state = state;
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
