// The TaskManager's network buffers as an account (the main thread's, like Flink's NetworkBufferPool with the
// required and optional buffers of FLIP-266). The buffers themselves are created where they are used; this
// class decides how many each task may have.
//
// Every task needs a small *required* minimum to make progress, and would like its *configured* size:
//   holding                          required                 configured                         resized
//   output pool of an edge (Worker)  one per subpartition     targets x per-channel + floating    any time
//   floating buffers of a remote     0                        floating-buffers-per-gate          any time
//     input gate (main thread)
//   ring of a channel (local, or     1 slot                   per-channel + floating             fixed at wiring
//     either end of a remote one)
//   exclusive buffers of a remote    1                        per-channel                        fixed at wiring
//     input channel
// A deployment fails only when the pool cannot give its required buffers. What is left over is optional:
// - resizable holdings share it: each gets required + f x (configured - required), one fraction f for all,
//   recomputed whenever a task comes or goes (Flink's redistribution), so a task that started with little grows
//   as others end, and one that started with everything gives back when others need it;
// - holdings fixed at wiring get their optional part only from what the TaskManager does not need for the
//   minimum of the job's other tasks here, as far as the deployment shows them (its siblings and its local
//   neighbours), and at most half of that, so a task wired early cannot starve one wired later.
import { ConfigError } from "../config/index.ts";
import type { TaskDeployment } from "../rpc/messages.ts";
import { assert } from "../util/assert.ts";

export interface BufferSettings {
  totalBuffers: number;
  buffersPerChannel: number;
  floatingBuffersPerGate: number;
  /** Task slots of the TaskManager: at most this many subtasks of one vertex run here. */
  slots: number;
  /** The configuration key(s) to raise, named when a deployment cannot get its minimum. */
  raiseHint: string;
}

export class InsufficientBuffersError extends Error {
  override name = "InsufficientBuffersError";
}

/** What a task needs, from its deployment and the settings. */
export interface BufferPlan {
  /** One per output edge: the Worker's output pool. */
  outputs: { targets: number; required: number; configured: number }[];
  /** One per input edge: floating buffers of its remote channels (0 when every producer is local). */
  floating: number[];
  /** Rings of the task: one per input channel and one per remote output channel. */
  rings: number;
  /** Remote input channels (exclusive buffers each). */
  remoteInputs: number;
  required: number;
  configured: number;
}

/** A task's buffers as granted now. */
export interface TaskBuffers {
  readonly plan: BufferPlan;
  /** Slots of each of its rings, and exclusive buffers of each remote input channel (fixed at registration). */
  readonly ringSlots: number;
  readonly exclusive: number;
  /** Output pool sizes and floating buffers per input gate: resized as tasks come and go. */
  outputBuffers: number[];
  floating: number[];
}

export interface TaskBufferReport {
  required: number;
  held: number;
  configured: number;
}

export interface BudgetReport {
  total: number;
  /** Buffers the tasks here need at least, and what they hold beyond that. */
  requiredInUse: number;
  optionalInUse: number;
  free: number;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export function planBuffers(d: TaskDeployment, localId: string, s: Pick<BufferSettings, "buffersPerChannel" | "floatingBuffersPerGate">): BufferPlan {
  const ringConfigured = s.buffersPerChannel + s.floatingBuffersPerGate;
  const outputs = d.outputs.map((o) => ({ targets: o.targets.length, required: o.targets.length, configured: o.targets.length * s.buffersPerChannel + s.floatingBuffersPerGate }));
  const remoteIn = d.inputs.map((i) => i.producers.filter((p) => p.resourceId !== localId).length);
  const floating = remoteIn.map((n) => (n > 0 ? s.floatingBuffersPerGate : 0));
  const remoteOut = sum(d.outputs.map((o) => o.targets.filter((t) => t.resourceId !== localId).length));
  const rings = sum(d.inputs.map((i) => i.producers.length)) + remoteOut;
  const remoteInputs = sum(remoteIn);
  return {
    outputs,
    floating,
    rings,
    remoteInputs,
    required: sum(outputs.map((o) => o.required)) + rings + remoteInputs,
    configured: sum(outputs.map((o) => o.configured)) + sum(floating) + rings * ringConfigured + remoteInputs * s.buffersPerChannel,
  };
}

/**
 * The minimum of this task's job on this TaskManager, as far as the deployment shows it: its vertex's subtasks
 * that may run here (up to the slots) and the local producers and consumers it is wired to, each with one buffer
 * per channel of the edge (all-to-all edges: one channel per subtask of the other side).
 */
function anticipatedRequired(d: TaskDeployment, plan: BufferPlan, localId: string, slots: number): number {
  let n = Math.min(d.parallelism, slots) * plan.required;
  for (const i of d.inputs) n += i.producers.filter((p) => p.resourceId === localId).length * (i.producers.length > 1 ? d.parallelism : 1);
  for (const o of d.outputs) n += o.targets.filter((t) => t.resourceId === localId).length * (o.targets.length > 1 ? d.parallelism : 1);
  return n;
}

export class BufferBudget<K> {
  private readonly tasks = new Map<K, TaskBuffers>();
  /** Sums over the registered tasks: required, optional fixed at wiring, configured optional of resizable holdings. */
  private required = 0;
  private fixedOptional = 0;
  private resizableOptional = 0;

  constructor(
    readonly settings: BufferSettings,
    /** A registered task's resizable holdings changed (not called for the task being registered). */
    private readonly onResize: (key: K, buffers: TaskBuffers) => void,
  ) {}

  get ringConfigured(): number {
    return this.settings.buffersPerChannel + this.settings.floatingBuffersPerGate;
  }

  /** Grants the task its buffers: at least its minimum, or InsufficientBuffersError naming the numbers. */
  register(key: K, d: TaskDeployment, localId: string): TaskBuffers {
    assert(!this.tasks.has(key), () => `task ${d.executionId} registered twice for network buffers`);
    const s = this.settings;
    const plan = planBuffers(d, localId, s);
    const T = s.totalBuffers;
    const unrequired = T - this.required - this.fixedOptional;
    if (plan.required > unrequired) {
      throw new InsufficientBuffersError(
        `insufficient network buffers: the task needs at least ${plan.required} (${plan.configured} configured), this TaskManager has ${unrequired} of ${T} not required by other tasks (raise ${s.raiseHint})`,
      );
    }
    // Optional part of the holdings fixed at wiring: at most half of what the job's anticipated minimum leaves,
    // shared among the vertex's subtasks that may come here.
    const ringOpt = this.ringConfigured - 1;
    const exclOpt = s.buffersPerChannel - 1;
    const fixedOptConfigured = plan.rings * ringOpt + plan.remoteInputs * exclOpt;
    let f = 1;
    if (fixedOptConfigured > 0) {
      const room = unrequired - anticipatedRequired(d, plan, localId, s.slots);
      const siblings = Math.min(d.parallelism, s.slots);
      f = Math.max(0, Math.min(1, room / (2 * siblings * fixedOptConfigured)));
    }
    const ringSlots = 1 + Math.floor(f * ringOpt);
    const exclusive = 1 + Math.floor(f * exclOpt);
    const buffers: TaskBuffers = { plan, ringSlots, exclusive, outputBuffers: plan.outputs.map((o) => o.required), floating: plan.floating.map(() => 0) };
    this.tasks.set(key, buffers);
    this.required += plan.required;
    this.fixedOptional += plan.rings * (ringSlots - 1) + plan.remoteInputs * (exclusive - 1);
    this.resizableOptional += resizableOptional(plan);
    assert(this.required + this.fixedOptional <= T, () => `network buffers over the pool: ${this.required} required + ${this.fixedOptional} fixed optional > ${T}`);
    this.redistribute(key);
    return buffers;
  }

  /** The task ended: its buffers go back, and the others' resizable holdings grow into them. */
  unregister(key: K): void {
    const b = this.tasks.get(key);
    if (!b) return;
    this.tasks.delete(key);
    const fixedOpt = b.plan.rings * (b.ringSlots - 1) + b.plan.remoteInputs * (b.exclusive - 1);
    assert(this.required >= b.plan.required && this.fixedOptional >= fixedOpt && this.resizableOptional >= resizableOptional(b.plan), () => `network buffer account underflow: returning ${b.plan.required} required + ${fixedOpt} fixed optional, the account has ${this.required} + ${this.fixedOptional}`);
    this.required -= b.plan.required;
    this.fixedOptional -= fixedOpt;
    this.resizableOptional -= resizableOptional(b.plan);
    this.redistribute(null);
    assert(this.free <= this.settings.totalBuffers, () => `network buffers free (${this.free}) exceed the pool (${this.settings.totalBuffers})`);
  }

  buffersOf(key: K): TaskBuffers | undefined {
    return this.tasks.get(key);
  }

  /** Buffers of the pool nobody holds. */
  get free(): number {
    let held = 0;
    for (const b of this.tasks.values()) held += heldBy(b);
    return this.settings.totalBuffers - held;
  }

  report(): BudgetReport {
    let held = 0;
    for (const b of this.tasks.values()) held += heldBy(b);
    return { total: this.settings.totalBuffers, requiredInUse: this.required, optionalInUse: held - this.required, free: this.settings.totalBuffers - held };
  }

  taskReport(key: K): TaskBufferReport | undefined {
    const b = this.tasks.get(key);
    return b && { required: b.plan.required, held: heldBy(b), configured: b.plan.configured };
  }

  /** One fraction of their optional part for every resizable holding, from what the rest leaves. */
  private redistribute(fresh: K | null): void {
    const room = this.settings.totalBuffers - this.required - this.fixedOptional;
    const f = this.resizableOptional === 0 ? 1 : Math.max(0, Math.min(1, room / this.resizableOptional));
    for (const [key, b] of this.tasks) {
      const outputBuffers = b.plan.outputs.map((o) => o.required + Math.floor(f * (o.configured - o.required)));
      const floating = b.plan.floating.map((n) => Math.floor(f * n));
      const changed = outputBuffers.some((n, i) => n !== b.outputBuffers[i]) || floating.some((n, i) => n !== b.floating[i]);
      b.outputBuffers = outputBuffers;
      b.floating = floating;
      if (changed && key !== fresh) this.onResize(key, b);
    }
    assert(this.free >= 0, () => `network buffers over the pool: ${this.settings.totalBuffers - this.free} held of ${this.settings.totalBuffers}`);
  }
}

function resizableOptional(p: BufferPlan): number {
  return sum(p.outputs.map((o) => o.configured - o.required)) + sum(p.floating);
}

function heldBy(b: TaskBuffers): number {
  return sum(b.outputBuffers) + sum(b.floating) + b.plan.rings * b.ringSlots + b.plan.remoteInputs * b.exclusive;
}

/**
 * Buffers of an output pool that one subpartition may hold: max-buffers-per-channel, but never so many that one
 * blocked channel leaves another without a buffer (a pool at its minimum has one per subpartition).
 */
export function channelShare(poolSize: number, targets: number, maxBuffersPerChannel: number): number {
  return Math.max(1, Math.min(maxBuffersPerChannel, poolSize - targets + 1));
}

/** The TaskManager's network buffers, from the configuration, and where the number came from. */
export interface NetworkSizing {
  totalBuffers: number;
  /** How the number was derived, for the log. */
  source: string;
  /** The key(s) to raise when a deployment cannot get its minimum. */
  raiseHint: string;
}

/**
 * taskmanager.network.numberOfBuffers when set (> 0); else taskmanager.memory.network.fraction of
 * taskmanager.memory.process.size (or, when that is 0, of the machine's physical memory), bounded by
 * taskmanager.memory.network.min and .max, in segments (Flink's rule, FLIP-49).
 */
export function networkSizing(
  c: {
    "taskmanager.network.numberOfBuffers": number;
    "taskmanager.memory.segment-size": number;
    "taskmanager.memory.process.size": number;
    "taskmanager.memory.network.fraction": number;
    "taskmanager.memory.network.min": number;
    "taskmanager.memory.network.max": number;
  },
  physicalMemory: number,
): NetworkSizing {
  const segment = c["taskmanager.memory.segment-size"];
  if (c["taskmanager.network.numberOfBuffers"] > 0) {
    const n = c["taskmanager.network.numberOfBuffers"];
    return { totalBuffers: n, source: `taskmanager.network.numberOfBuffers = ${n}`, raiseHint: "taskmanager.network.numberOfBuffers" };
  }
  const min = c["taskmanager.memory.network.min"];
  const max = c["taskmanager.memory.network.max"];
  if (min > max) throw new ConfigError(`taskmanager.memory.network.min (${min} bytes) is larger than taskmanager.memory.network.max (${max} bytes)`);
  const processSize = c["taskmanager.memory.process.size"];
  const base = processSize > 0 ? processSize : physicalMemory;
  const fraction = c["taskmanager.memory.network.fraction"];
  const bytes = Math.min(max, Math.max(min, Math.floor(base * fraction)));
  const totalBuffers = Math.floor(bytes / segment);
  if (totalBuffers < 1) throw new ConfigError(`network memory of ${bytes} bytes holds no buffer of taskmanager.memory.segment-size ${segment} bytes`);
  const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;
  const of = processSize > 0 ? `taskmanager.memory.process.size ${mib(processSize)}` : `the machine's physical memory ${mib(physicalMemory)} (taskmanager.memory.process.size not set)`;
  return {
    totalBuffers,
    source: `${mib(bytes)}: taskmanager.memory.network.fraction ${fraction} of ${of}, bounded by .min ${mib(min)} and .max ${mib(max)}`,
    raiseHint: bytes >= max ? "taskmanager.memory.network.max, or set taskmanager.network.numberOfBuffers" : processSize > 0 ? "taskmanager.memory.network.fraction or taskmanager.memory.process.size, or set taskmanager.network.numberOfBuffers" : "taskmanager.memory.network.fraction or .min, or set taskmanager.network.numberOfBuffers",
  };
}
