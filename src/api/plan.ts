// The stream graph a job's builder function records: one node per transformation, functions included.
// The client strips the functions (describePlan) to build the JobGraph; each task's Worker runs the builder
// again and takes the functions of the nodes chained into it, so a builder must be deterministic.

export type SourceSpec =
  | { type: "collection"; items: unknown[] }
  | { type: "textFile"; path: string }
  | { type: "sequence"; from: number; to: number };

/** What a function sees of the task it runs in (as Flink's RuntimeContext). */
export interface RuntimeContext {
  subtaskIndex: number;
  parallelism: number;
  taskName: string;
}

/** A sink: a function per record, or an object with open/invoke/close (as Flink's RichSinkFunction). */
export type SinkFunction<T = any> = ((value: T) => void) | { open?(ctx: RuntimeContext): void; invoke(value: T): void; close?(): void };

export type SinkSpec =
  | { type: "print"; prefix?: string }
  | { type: "textFile"; path: string }
  | { type: "function"; fn: SinkFunction };

export type PartitionSpec = "rebalance" | "rescale" | "broadcast" | "forward" | "custom";

export type PlanNode =
  | (NodeBase & { kind: "source"; source: SourceSpec })
  | (NodeBase & { kind: "map" | "flatMap" | "filter"; fn: (value: any) => any })
  | (NodeBase & { kind: "keyBy"; fn: (value: any) => unknown })
  | (NodeBase & { kind: "partition"; partitioner: PartitionSpec; custom?: { partition: (key: any, numPartitions: number) => number; key: (value: any) => unknown } })
  | (NodeBase & { kind: "union" })
  | (NodeBase & { kind: "reduce"; fn: (a: any, b: any) => any; keyNode: number; sumField?: number | string })
  | (NodeBase & { kind: "sink"; sink: SinkSpec });

export interface NodeBase {
  id: number;
  name: string;
  inputs: number[];
  /** Explicit parallelism, or null for the job's default. */
  parallelism: number | null;
  uid: string | null;
  chaining: boolean;
}

export type NodeKind = PlanNode["kind"];

/** Virtual nodes only shape edges (partitioning, union); they never become operators. */
export function isVirtual(node: PlanNode): boolean {
  return node.kind === "keyBy" || node.kind === "partition" || node.kind === "union";
}

export interface JobSettings {
  parallelism: number | null;
  maxParallelism: number;
  runtimeMode: "streaming" | "batch";
  bufferTimeoutMs: number;
  name: string | null;
}

export interface Plan {
  nodes: PlanNode[];
  settings: JobSettings;
}

/** A node without its functions and data: what the JobManager sees. */
export interface NodeDescription {
  id: number;
  kind: NodeKind;
  name: string;
  inputs: number[];
  parallelism: number | null;
  uid: string | null;
  chaining: boolean;
  partitioner?: PartitionSpec;
  sourceType?: SourceSpec["type"];
  sinkType?: SinkSpec["type"];
}

export function describePlan(plan: Plan): NodeDescription[] {
  return plan.nodes.map((n) => {
    const d: NodeDescription = {
      id: n.id,
      kind: n.kind,
      name: n.name,
      inputs: [...n.inputs],
      parallelism: n.parallelism,
      uid: n.uid,
      chaining: n.chaining,
    };
    if (n.kind === "partition") d.partitioner = n.partitioner;
    if (n.kind === "source") d.sourceType = n.source.type;
    if (n.kind === "sink") d.sinkType = n.sink.type;
    return d;
  });
}
