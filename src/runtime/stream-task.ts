// One parallel subtask of a job vertex, run inside its own Worker: imports the job artifact, rebuilds the
// plan, wires the operator chain between its input channels and record writers, and runs it mailbox-style
// (one input buffer at a time, pausing while an output has no free buffer).
import { pathToFileURL } from "node:url";
import { StreamExecutionEnvironment, type JobBuilder } from "../api/environment.ts";
import { describePlan, type Plan, type PlanNode } from "../api/plan.ts";
import { planFingerprint } from "../api/job-graph.ts";
import type { ErrorInfo, TaskDeployment, TaskMetrics } from "../rpc/messages.ts";
import { RecordWriter, type BufferSender } from "../network/record-writer.ts";
import { InputGate } from "../network/input-gate.ts";
import { LocalBufferPool } from "../network/local-buffer-pool.ts";
import { createPartitioner } from "../network/partitioners.ts";
import { createOperator, type Collector, type Operator, type OperatorContext } from "./operators.ts";
import { createKeyedStateBackend, OperatorStateStore, type KeyedStateBackend } from "../state/index.ts";
import { keyGroupRange } from "../state/key-groups.ts";
import { readSource } from "./sources.ts";
import { channelId, type FromWorker, type NetworkGrant, type PortMessage, type StateGrant, type ToWorker } from "./worker-protocol.ts";

type Post = (msg: FromWorker, transfer?: Transferable[]) => void;

const METRICS_INTERVAL_MS = 1000;

export function taskDisplayName(d: TaskDeployment): string {
  return `${d.vertexName} (${d.subtaskIndex + 1}/${d.parallelism})`;
}

export async function loadPlan(artifactPath: string, jobArgs: string[]): Promise<Plan> {
  const mod = await import(pathToFileURL(artifactPath).href);
  const builder = mod.default as JobBuilder | undefined;
  if (typeof builder !== "function") {
    throw new Error(`job module must \`export default\` a function (env, args) => void; found ${typeof builder}`);
  }
  const env = new StreamExecutionEnvironment();
  await builder(env, jobArgs);
  return env.getPlan();
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

  private keyed: KeyedStateBackend | null = null;

  constructor(
    private readonly d: TaskDeployment,
    private readonly network: NetworkGrant,
    private readonly state: StateGrant,
    private readonly post: Post,
  ) {
    // Known before init() finishes: data may arrive while the artifact is still being imported.
    const inputs: string[] = [];
    for (const input of d.inputs) for (const p of input.producers) inputs.push(channelId(d.jobId, input.edgeId, p.subtask, d.subtaskIndex));
    this.gate = new InputGate(inputs);
  }

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
    this.writers = d.outputs.map((o, i) => {
      const ids = o.targets.map((t) => channelId(d.jobId, o.edgeId, d.subtaskIndex, t.subtask));
      const keyNode = o.keyNodeId !== undefined ? node(o.keyNodeId) : undefined;
      const keySelector = keyNode?.kind === "keyBy" ? keyNode.fn : keyNode?.kind === "partition" ? keyNode.custom?.key : undefined;
      const custom = keyNode?.kind === "partition" ? keyNode.custom?.partition : undefined;
      const partitioner = createPartitioner(o.partitioner, d.subtaskIndex, ids.length, d.maxParallelism, keySelector, custom);
      const pool = new LocalBufferPool(net.outputBuffers[i]!, net.segmentSize, net.maxOverdraft);
      const writer = new RecordWriter(ids, partitioner, pool, d.bufferTimeoutMs === 0);
      o.targets.forEach((t, j) => {
        this.writerOf.set(ids[j]!, writer);
        // Remote consumers: buffers go to the main thread, which sends them against the consumer's credit.
        if (t.resourceId !== net.resourceId) writer.connect(ids[j]!, this.mainThreadSender);
      });
      return writer;
    });
    for (const c of this.pendingConnects.splice(0)) this.onConnect(c);

    // Build the chain from its tail: the tail emits to every record writer.
    const writers = this.writers;
    let out: Collector = (r) => {
      this.recordsOut++;
      for (let i = 0; i < writers.length; i++) writers[i]!.emit(r);
    };
    const chain = d.operatorIds.map(node);
    const keyedChain = chain.some((n) => n.kind === "reduce" || n.kind === "process" || ((n.kind === "map" || n.kind === "flatMap" || n.kind === "filter") && n.keyNode !== undefined));
    if (keyedChain) {
      const st = this.state;
      this.keyed = await createKeyedStateBackend({
        kind: st.backend,
        maxParallelism: d.maxParallelism,
        keyGroupRange: keyGroupRange(d.subtaskIndex, d.parallelism, d.maxParallelism),
        dir: st.dir,
        cacheBytes: st.cacheBytes,
      });
    }
    const ctx: OperatorContext = {
      subtaskIndex: d.subtaskIndex,
      parallelism: d.parallelism,
      taskName: taskDisplayName(d),
      runtimeMode: d.runtimeMode,
      node,
      keyed: this.keyed,
      operatorState: new OperatorStateStore(d.subtaskIndex, d.parallelism),
    };
    for (let i = chain.length - 1; i >= 0; i--) {
      const n = chain[i]!;
      if (n.kind === "source") {
        if (i !== 0) throw new Error(`source node ${n.id} is not at the head of its chain`);
        this.sourceNode = n;
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
        continue;
      }
      const op = createOperator(n, ctx, out);
      this.operators.unshift(op);
      out = (r) => op.process(r);
    }
    this.head = { process: out };
    for (const op of this.operators) await op.open?.();
    if (d.bufferTimeoutMs > 0 && this.writers.length > 0) {
      this.timers.push(setInterval(() => this.flushWriters(), d.bufferTimeoutMs));
    }
    this.timers.push(setInterval(() => this.post({ type: "metrics", metrics: this.metrics() }), METRICS_INTERVAL_MS));
  }

  /** Runs the task to the end of its input; throws on a failure in user code. */
  async run(): Promise<TaskMetrics> {
    this.post({ type: "running" });
    try {
      if (this.sourceNode) await this.runSource(this.sourceNode);
      else await this.runInputs();
      for (const op of this.operators) op.endInput?.();
      await Promise.all(this.writers.map((w) => w.finish()));
      this.time.switchTo("idle");
      return this.metrics();
    } finally {
      for (const t of this.timers) clearInterval(t);
      await this.keyed?.close().catch(() => {});
    }
  }

  /** Messages from the main thread other than init. */
  onMessage(msg: ToWorker): void {
    switch (msg.type) {
      case "connect":
        if (this.writers.length === 0 && this.d.outputs.length > 0) this.pendingConnects.push(msg);
        else this.onConnect(msg);
        break;
      case "buffer":
        this.gate.onBuffer(msg.channel, msg.buf, msg.size, this.recycleToMain(msg.channel));
        break;
      case "event":
        this.gate.onEvent(msg.channel, msg.event);
        break;
      case "recycle":
        this.writerOf.get(msg.channel)?.recycle(msg.buf);
        break;
    }
  }

  private readonly mainThreadSender: BufferSender = {
    buffer: (channel, buf, size, backlog) => this.post({ type: "buffer", channel, buf, size, backlog }, [buf]),
    event: (channel, event) => this.post({ type: "event", channel, event }),
  };

  private recycleToMain(channel: string): (buf: ArrayBuffer) => void {
    return (buf) => this.post({ type: "recycle", channel, buf }, [buf]);
  }

  /** A MessagePort to a local peer task: buffers flow directly between the two Workers. */
  private onConnect(msg: Extract<ToWorker, { type: "connect" }>): void {
    const port = msg.port;
    const sender: BufferSender = {
      buffer: (ch, buf, size) => port.postMessage({ t: "b", ch, buf, size } satisfies PortMessage, [buf]),
      event: (ch, event) => port.postMessage({ t: "e", ch, event } satisfies PortMessage),
    };
    const recycle = (ch: string) => (buf: ArrayBuffer) => port.postMessage({ t: "r", ch, buf } satisfies PortMessage, [buf]);
    port.onmessage = (e: MessageEvent<PortMessage>) => {
      const m = e.data;
      try {
        if (m.t === "b") this.gate.onBuffer(m.ch, m.buf, m.size, recycle(m.ch));
        else if (m.t === "e") this.gate.onEvent(m.ch, m.event);
        else this.writerOf.get(m.ch)?.recycle(m.buf);
      } catch (err) {
        this.post({ type: "failed", error: errorInfo(err, taskDisplayName(this.d)) });
      }
    };
    for (const ch of msg.produce) this.writerOf.get(ch)?.connect(ch, sender);
  }

  private async runSource(node: Extract<PlanNode, { kind: "source" }>): Promise<void> {
    const writers = this.writers;
    const blocked = () => {
      for (let w = 0; w < writers.length; w++) if (writers[w]!.backpressured) return true;
      return false;
    };
    for (const chunk of readSource(node.source, this.d.subtaskIndex, this.d.parallelism)) {
      for (let i = 0; i < chunk.length; i++) {
        this.recordsIn++;
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
      if ("event" in item) continue; // end of partition: counted by the gate
      const records = item.records;
      this.recordsIn += records.length;
      for (let i = 0; i < records.length; i++) this.head.process(records[i]);
      this.flushOperators();
      await this.afterBatch();
    }
  }

  /** Pauses while an output has no free buffer, and lets buffers, recycles and timers in. */
  private async afterBatch(): Promise<void> {
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

  private metrics(): TaskMetrics {
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
