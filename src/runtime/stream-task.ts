// One parallel subtask of a job vertex, run inside its own Worker: imports the job artifact, rebuilds the
// plan, wires the operator chain between its input channels and record writers, and runs it mailbox-style
// (one input batch at a time, pausing while an output channel lacks credit).
import { pathToFileURL } from "node:url";
import { Unpackr } from "msgpackr";
import { StreamExecutionEnvironment, type JobBuilder } from "../api/environment.ts";
import { describePlan, type Plan, type PlanNode } from "../api/plan.ts";
import { planFingerprint } from "../api/job-graph.ts";
import type { ErrorInfo, TaskDeployment, TaskMetrics } from "../rpc/messages.ts";
import { RecordWriter } from "../network/record-writer.ts";
import { createPartitioner } from "../network/partitioners.ts";
import { createOperator, type Collector, type Operator } from "./operators.ts";
import { readSource } from "./sources.ts";
import { channelId, type FromWorker } from "./worker-protocol.ts";

type Post = (msg: FromWorker, transfer?: Transferable[]) => void;
type MailItem = { channel: string; bytes: Uint8Array } | { channel: string; end: true };

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

export class StreamTask {
  private readonly mailbox: MailItem[] = [];
  private wake: (() => void) | null = null;
  private readonly inputChannels = new Set<string>();
  private writers: RecordWriter[] = [];
  private operators: Operator[] = [];
  private head!: Operator;
  private sourceNode: Extract<PlanNode, { kind: "source" }> | null = null;
  private recordsIn = 0;
  private recordsOut = 0;
  private timers: ReturnType<typeof setInterval>[] = [];

  constructor(
    private readonly d: TaskDeployment,
    private readonly post: Post,
  ) {
    // Known before init() finishes: data may arrive while the artifact is still being imported.
    for (const input of d.inputs) for (const p of input.producers) this.inputChannels.add(channelId(d.jobId, input.edgeId, p, d.subtaskIndex));
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
    this.writers = d.outputs.map((o) => {
      const ids = o.targets.map((t) => channelId(d.jobId, o.edgeId, d.subtaskIndex, t.subtask));
      const keyNode = o.keyNodeId !== undefined ? node(o.keyNodeId) : undefined;
      const keySelector = keyNode?.kind === "keyBy" ? keyNode.fn : undefined;
      const partitioner = createPartitioner(o.partitioner, d.subtaskIndex, ids.length, d.maxParallelism, keySelector);
      return new RecordWriter(ids, partitioner, {
        data: (channel, bytes) => this.post({ type: "data", channel, bytes }, [bytes.buffer as ArrayBuffer]),
        end: (channel) => this.post({ type: "end", channel }),
      }, d.bufferTimeoutMs === 0);
    });

    // Build the chain from its tail: the tail emits to every record writer.
    const writers = this.writers;
    let out: Collector = (r) => {
      this.recordsOut++;
      for (let i = 0; i < writers.length; i++) writers[i]!.emit(r);
    };
    const ctx = { subtaskIndex: d.subtaskIndex, parallelism: d.parallelism, runtimeMode: d.runtimeMode, node };
    const chain = d.operatorIds.map(node);
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
      return this.metrics();
    } finally {
      for (const t of this.timers) clearInterval(t);
    }
  }

  onData(channel: string, bytes: Uint8Array): void {
    this.enqueue({ channel, bytes });
  }

  onEnd(channel: string): void {
    this.enqueue({ channel, end: true });
  }

  onCredit(channel: string, n: number): void {
    for (const w of this.writers) if (w.hasChannel(channel)) w.addCredit(channel, n);
  }

  private enqueue(item: MailItem): void {
    if (!this.inputChannels.has(item.channel)) throw new Error(`received data for unknown input channel ${item.channel}`);
    this.mailbox.push(item);
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private async runSource(node: Extract<PlanNode, { kind: "source" }>): Promise<void> {
    for (const chunk of readSource(node.source, this.d.subtaskIndex, this.d.parallelism)) {
      this.recordsIn += chunk.length;
      for (let i = 0; i < chunk.length; i++) this.head.process(chunk[i]);
      this.flushOperators();
      await this.afterBatch();
    }
  }

  private async runInputs(): Promise<void> {
    const unpackr = new Unpackr({ useRecords: true });
    let open = this.inputChannels.size;
    while (open > 0) {
      const item = this.mailbox.shift();
      if (!item) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      if ("end" in item) {
        open--;
        continue;
      }
      const records = unpackr.unpack(item.bytes) as unknown[];
      this.recordsIn += records.length;
      for (let i = 0; i < records.length; i++) this.head.process(records[i]);
      this.flushOperators();
      this.post({ type: "credit", channel: item.channel, n: 1 });
      await this.afterBatch();
    }
  }

  /** Pauses while downstream lacks credit, and lets credit, cancel and timer messages in. */
  private async afterBatch(): Promise<void> {
    for (const w of this.writers) if (w.backpressured) await w.waitAvailable();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  private flushOperators(): void {
    for (const op of this.operators) op.flush?.();
  }

  private flushWriters(): void {
    for (const w of this.writers) w.flush();
  }

  private metrics(): TaskMetrics {
    return { recordsIn: this.recordsIn, recordsOut: this.recordsOut };
  }
}

export function errorInfo(err: unknown, task?: string): ErrorInfo {
  if (err instanceof Error) return { message: `${err.name === "Error" ? "" : err.name + ": "}${err.message}`, stack: err.stack, task };
  return { message: String(err), task };
}
