// Barrier handling of a task with inputs (as Flink's CheckpointBarrierHandler), between its input gate and the
// task: decides when checkpoint n is taken at this task from the barriers of its input channels.
// - aligned (EXACTLY_ONCE): a channel that delivered barrier n is held back (InputGate.block) until every open
//   channel delivered it; then the snapshot is taken and the channels are released.
// - unaligned (EXACTLY_ONCE with execution.checkpointing.unaligned.enabled): barriers are priority events that
//   overtake the queued buffers; the first barrier n takes the snapshot at once and forwards the barrier ahead of
//   the task's queued output, and the records still in flight before the barrier on each channel become the
//   checkpoint's channel state (InputGate.startRecording). Savepoints stay aligned (their barriers say so).
//   With execution.checkpointing.aligned-checkpoint-timeout the barriers start aligned (alignedTimeoutMs set, not
//   priority) and are aligned as above; when the alignment is still going on that long after the checkpoint was
//   triggered (the barrier's timestamp, as Flink measures it since 1.14), or an unaligned barrier of it arrives
//   (upstream switched), the task switches: blocked channels are released, the snapshot is taken at once, the
//   records before the barrier on the channels that have not delivered it become channel state, and the barrier
//   goes on unaligned (a priority event), so downstream tasks switch too. The time-out is armed when the first
//   barrier arrives at the gate (InputGate.onBarrierArrived, Flink's barrier announcement), not when it is read.
// - at-least-once: barriers are only counted; nothing is held back.
// A cancel marker on any channel, or the coordinator's checkpoint-aborted notice, gives checkpoint n up here at
// once: the alignment is released, the recording dropped, and the marker goes on downstream.
import type { InputGate } from "../network/input-gate.ts";
import type { ChannelEvent } from "../network/record-writer.ts";

export type Barrier = Extract<ChannelEvent, { type: "barrier" }>;

/** What the handler needs of its task. */
export interface BarrierHandlerHost {
  /**
   * Takes checkpoint n now (synchronous part, then forward the barrier, then write asynchronously). For an
   * unaligned checkpoint, channelState resolves with the input channel state once every channel's part is in.
   */
  takeCheckpoint(barrier: Barrier, channelState: Promise<Map<string, unknown[]>> | null, alignmentMs: number, startDelayMs: number): void;
  /** Checkpoint n is given up at this task: decline it (unless the coordinator aborted it) and send the cancel marker on. */
  abortCheckpoint(checkpointId: number, reason: string, decline: boolean): void;
}

export type BarrierHandlerKind = "aligned" | "unaligned" | "at-least-once";

interface Pending {
  barrier: Barrier;
  seen: Set<string>;
  /** When the first barrier n was read (alignment starts), and how long after the trigger that was. */
  startedAt: number;
  startDelayMs: number;
  /** An aligned checkpoint switched to unaligned after its aligned-checkpoint-timeout (its snapshot is taken). */
  switched?: boolean;
}

export abstract class CheckpointBarrierHandler {
  protected pending: Pending | null = null;
  /** The newest checkpoint taken, aborted or declined here: older barriers and markers are late. */
  protected latest = 0;
  /** Checkpoints the coordinator aborted before any of their barriers arrived here. */
  protected readonly aborted = new Set<number>();

  constructor(
    protected readonly gate: InputGate,
    protected readonly channels: readonly string[],
    protected readonly host: BarrierHandlerHost,
  ) {}

  abstract readonly kind: BarrierHandlerKind;

  /** The checkpoint being aligned (or recorded), if any. */
  get current(): number | null {
    return this.pending?.barrier.checkpointId ?? null;
  }

  get lastCheckpointId(): number {
    return this.latest;
  }

  onBarrier(channel: string, b: Barrier): void {
    if (b.checkpointId <= this.latest || this.aborted.has(b.checkpointId)) return; // taken, aborted or declined here
    const p = this.pending;
    if (p && b.checkpointId > p.barrier.checkpointId) {
      // A newer barrier overtook an unfinished alignment (that checkpoint was given up upstream): give it up too.
      this.abort(p.barrier.checkpointId, `barrier ${b.checkpointId} arrived before alignment of ${p.barrier.checkpointId} completed`, true);
    }
    if (!this.pending) this.pending = { barrier: b, seen: new Set(), startedAt: performance.now(), startDelayMs: Math.max(0, Date.now() - b.timestamp) };
    this.pending.seen.add(channel);
    this.onBarrierSeen(channel, this.pending, this.pending.seen.size === 1, b);
    this.maybeComplete();
  }

  /** Flink's CancelCheckpointMarker: checkpoint n was declined upstream. */
  onCancelMarker(checkpointId: number): void {
    this.giveUp(checkpointId, `checkpoint ${checkpointId} was canceled upstream`, false, true);
  }

  /** The coordinator aborted checkpoint n (notifyCheckpointAborted). */
  onCheckpointAborted(checkpointId: number): void {
    this.giveUp(checkpointId, `checkpoint ${checkpointId} was aborted by the coordinator`, false, true);
  }

  /** A channel ended: it no longer holds an alignment back. */
  onEndOfPartition(_channel: string): void {
    this.maybeComplete();
  }

  /** A source took checkpoint n (it has no barriers to align): older triggers and markers are late. */
  taken(checkpointId: number): void {
    this.latest = Math.max(this.latest, checkpointId);
    this.settled(this.latest);
    for (const id of this.aborted) if (id <= this.latest) this.aborted.delete(id);
  }

  /** Drops the alignment of checkpoint n if it is the current one; remembers n so that its late barriers are ignored. */
  private giveUp(checkpointId: number, reason: string, decline: boolean, forward: boolean): void {
    if (checkpointId <= this.latest && this.pending?.barrier.checkpointId !== checkpointId) return;
    if (this.pending && this.pending.barrier.checkpointId <= checkpointId) {
      this.abort(this.pending.barrier.checkpointId, reason, decline);
      if (checkpointId === this.latest) return;
    }
    if (checkpointId > this.latest) {
      this.aborted.add(checkpointId);
      // Bounded: only ids above the latest can still arrive.
      for (const id of this.aborted) if (id <= this.latest) this.aborted.delete(id);
      if (forward) this.host.abortCheckpoint(checkpointId, reason, decline);
    }
  }

  private abort(checkpointId: number, reason: string, decline: boolean): void {
    this.pending = null;
    this.latest = Math.max(this.latest, checkpointId);
    this.settled(this.latest);
    this.releaseAlignment(checkpointId);
    this.host.abortCheckpoint(checkpointId, reason, decline);
  }

  protected maybeComplete(): void {
    const p = this.pending;
    if (!p) return;
    for (const ch of this.channels) if (!p.seen.has(ch) && !this.gate.isEnded(ch)) return;
    this.pending = null;
    this.taken(p.barrier.checkpointId);
    this.onAligned(p);
  }

  /** Checkpoints up to n are taken or given up here: nothing of them is to be timed any more. */
  protected settled(_checkpointId: number): void {}
  /** A barrier (b) of the pending checkpoint arrived on `channel` (first: the first one of it). */
  protected abstract onBarrierSeen(channel: string, p: Pending, first: boolean, b: Barrier): void;
  /** Every open channel delivered barrier n. */
  protected abstract onAligned(p: Pending): void;
  /** Checkpoint n is given up: release what its alignment holds. */
  protected abstract releaseAlignment(checkpointId: number): void;
}

/** Holds back the channels that delivered barrier n until all did (exactly-once, aligned). */
export class AlignedBarrierHandler extends CheckpointBarrierHandler {
  readonly kind = "aligned";
  protected onBarrierSeen(channel: string): void {
    this.gate.block(channel);
  }
  protected onAligned(p: Pending): void {
    const now = performance.now();
    this.host.takeCheckpoint(p.barrier, null, now - p.startedAt, p.startDelayMs);
    this.gate.unblockAll();
  }
  protected releaseAlignment(): void {
    this.gate.unblockAll();
  }
}

/** Counts barriers only: records after barrier n on one channel may be in checkpoint n's state (at-least-once). */
export class AtLeastOnceBarrierHandler extends CheckpointBarrierHandler {
  readonly kind = "at-least-once";
  protected onBarrierSeen(): void {}
  protected onAligned(p: Pending): void {
    this.host.takeCheckpoint(p.barrier, null, performance.now() - p.startedAt, p.startDelayMs);
  }
  protected releaseAlignment(): void {}
}

/**
 * Unaligned: the first barrier n takes the snapshot at once, and the in-flight records become channel state.
 * A barrier that is not marked unaligned (a savepoint) is aligned as by AlignedBarrierHandler.
 */
export class UnalignedBarrierHandler extends CheckpointBarrierHandler {
  readonly kind = "unaligned";
  private recorded: { checkpointId: number; reject: (e: Error) => void } | null = null;
  /** The aligned-checkpoint-timeout of the newest timeoutable checkpoint whose barrier arrived here. */
  private timeout: { barrier: Barrier; arrivedAt: number; startedAt: number; timer: ReturnType<typeof setTimeout> } | null = null;

  constructor(gate: InputGate, channels: readonly string[], host: BarrierHandlerHost) {
    super(gate, channels, host);
    gate.onBarrierArrived = (_channel, b) => this.arm(b);
  }

  protected onBarrierSeen(channel: string, p: Pending, first: boolean, b: Barrier): void {
    if (p.switched) return; // taken already: the rest of its barriers only complete it
    if (!p.barrier.unaligned) {
      // An aligned barrier: a savepoint's, or a timeoutable one (aligned-checkpoint-timeout) that may switch.
      if (b.unaligned || (timeoutable(p.barrier) && Date.now() >= deadline(p.barrier))) {
        this.switchToUnaligned(p); // upstream switched already, or the time-out passed before its timer ran
        return;
      }
      this.gate.block(channel);
      if (timeoutable(p.barrier)) this.arm(p.barrier);
      return;
    }
    if (!first) return;
    // Snapshot now, before any record queued behind the barrier is read.
    this.host.takeCheckpoint(p.barrier, this.record(p.barrier.checkpointId), 0, p.startDelayMs);
  }

  /** Records the channel state of checkpoint n in the gate; resolves once every channel's part is in. */
  private record(id: number): Promise<Map<string, unknown[]>> {
    return new Promise<Map<string, unknown[]>>((resolve, reject) => {
      this.recorded = { checkpointId: id, reject };
      this.gate.startRecording(id, (s) => {
        this.recorded = null;
        resolve(s);
      });
    });
  }

  /** Times the aligned-checkpoint-timeout of a timeoutable barrier from the checkpoint's trigger. */
  private arm(b: Barrier): void {
    if (!timeoutable(b) || b.checkpointId <= this.latest || this.aborted.has(b.checkpointId)) return;
    if (this.pending?.switched && this.pending.barrier.checkpointId >= b.checkpointId) return; // switched already
    if (this.timeout && this.timeout.barrier.checkpointId >= b.checkpointId) return;
    if (this.timeout) clearTimeout(this.timeout.timer);
    const id = b.checkpointId;
    const timer = setTimeout(() => this.onTimeout(id), Math.max(0, deadline(b) - Date.now()));
    this.timeout = { barrier: b, arrivedAt: Date.now(), startedAt: performance.now(), timer };
  }

  protected override settled(checkpointId: number): void {
    if (this.timeout && this.timeout.barrier.checkpointId <= checkpointId) {
      clearTimeout(this.timeout.timer);
      this.timeout = null;
    }
  }

  private onTimeout(id: number): void {
    const t = this.timeout;
    if (!t || t.barrier.checkpointId !== id) return;
    this.timeout = null;
    if (id <= this.latest || this.aborted.has(id)) return;
    let p = this.pending;
    if (p && (p.barrier.checkpointId !== id || p.switched || p.barrier.unaligned)) return; // an older one still aligns
    // No barrier of it read yet (they wait in the gate behind buffers): the alignment starts now, switched at once.
    p ??= this.pending = { barrier: t.barrier, seen: new Set(), startedAt: t.startedAt, startDelayMs: Math.max(0, t.arrivedAt - t.barrier.timestamp) };
    this.switchToUnaligned(p);
  }

  /**
   * Alignment took too long: checkpoint n becomes unaligned here. The channels held back are released (what they
   * hold is after their barrier), the snapshot is taken now, and the records before barrier n on the other channels
   * (queued in the gate or still to come) are recorded as channel state.
   */
  private switchToUnaligned(p: Pending): void {
    p.switched = true;
    this.settled(p.barrier.checkpointId);
    this.gate.unblockAll();
    const b: Barrier = { ...p.barrier, unaligned: true };
    this.host.takeCheckpoint(b, this.record(b.checkpointId), performance.now() - p.startedAt, p.startDelayMs);
  }

  protected onAligned(p: Pending): void {
    if (p.barrier.unaligned || p.switched) return; // taken at the first barrier or the switch; the recording completes in the gate
    this.host.takeCheckpoint(p.barrier, null, performance.now() - p.startedAt, p.startDelayMs);
    this.gate.unblockAll();
  }

  protected releaseAlignment(checkpointId: number): void {
    this.gate.unblockAll();
    if (this.recorded && this.recorded.checkpointId <= checkpointId) {
      this.gate.stopRecording(checkpointId);
      this.recorded.reject(new Error(`checkpoint ${checkpointId} was aborted while its channel state was recorded`));
      this.recorded = null;
    }
  }

  /** A newer checkpoint or an abort after the snapshot: the recording of an older one is dropped. */
  override onCheckpointAborted(checkpointId: number): void {
    super.onCheckpointAborted(checkpointId);
    if (this.recorded && this.recorded.checkpointId <= checkpointId) this.releaseAlignment(checkpointId);
  }
}

function timeoutable(b: Barrier): boolean {
  return !b.unaligned && (b.alignedTimeoutMs ?? 0) > 0;
}

function deadline(b: Barrier): number {
  return b.timestamp + (b.alignedTimeoutMs ?? 0);
}

export function createBarrierHandler(kind: BarrierHandlerKind, gate: InputGate, channels: readonly string[], host: BarrierHandlerHost): CheckpointBarrierHandler {
  if (kind === "aligned") return new AlignedBarrierHandler(gate, channels, host);
  if (kind === "unaligned") return new UnalignedBarrierHandler(gate, channels, host);
  return new AtLeastOnceBarrierHandler(gate, channels, host);
}
