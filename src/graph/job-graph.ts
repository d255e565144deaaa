// The JobGraph: the contract between the client that builds it (src/api/job-graph.ts translates the plan), the
// JobManager that schedules it, and the wire (src/rpc/messages.ts). Plain data and pure functions, no imports from
// outside this folder: every layer above may depend on it.
import type { RecordType } from "./record-type.ts";

/** How records of an edge are distributed over the consumer subtasks (docs/architecture.md 4.6). */
export type PartitionerKind = "forward" | "rebalance" | "rescale" | "hash" | "broadcast" | "custom";

export interface JobVertex {
  id: number;
  name: string;
  /** Plan node ids, chain head first. */
  operatorIds: number[];
  /** The same operators' state identities, in the same order (absent in hand-built graphs: see operatorsOf). */
  operators?: OperatorInfo[];
  parallelism: number;
  isSource: boolean;
}

/**
 * An operator's identity for its state (as Flink's OperatorID): its uid when the job set one, else a hash of its
 * position in the graph (kind, place in a breadth-first walk from the sources, its inputs' ids). Checkpoints and
 * savepoints store state per operator id, so state finds its operator whatever the chaining or parallelism.
 */
export interface OperatorInfo {
  /** Plan node id. */
  nodeId: number;
  id: string;
  uid: string | null;
  name: string;
  /** Whether it keeps state a savepoint should carry (sources, keyed operators, rich keyed functions). */
  stateful: boolean;
  /** Whether it runs on a keyed stream (has a keyed state backend). */
  keyed: boolean;
}

/** The operators of a vertex; a graph built by hand (tests) without them gets ids from its plan node ids. */
export function operatorsOf(v: JobVertex): OperatorInfo[] {
  return v.operators ?? v.operatorIds.map((nodeId) => ({ nodeId, id: `node-${nodeId}`, uid: null, name: v.name, stateful: false, keyed: false }));
}

export interface JobEdge {
  id: number;
  source: number;
  target: number;
  partitioner: PartitionerKind;
  keyNodeId?: number;
  /** The input of a two-input target operator this edge feeds (0 or 1, as Flink's StreamEdge type number); absent = 0. */
  input?: number;
  /** The records' declared type (DataStream.returns) and the operator that declared it; absent: inferred. */
  recordType?: EdgeRecordType;
}

export interface EdgeRecordType {
  type: RecordType;
  /** The operator that emits the records. */
  operator: string;
  /** The operator that declared the type, when another one upstream (the producer emits its input's type: filter, reduce). */
  declaredBy?: string;
}

export interface JobGraph {
  name: string;
  vertices: JobVertex[];
  edges: JobEdge[];
  maxParallelism: number;
  runtimeMode: "streaming" | "batch";
  bufferTimeoutMs: number;
  /** Shape of the whole plan (ids, kinds, inputs, parallelism, partitioners, source and sink types); a task checks that its Worker rebuilt the same plan. */
  planFingerprint: string;
  stateBackend: "heap" | "sqlite" | null;
  /** The job's own checkpoint interval (0 = the cluster's) and mode (null = the cluster's). */
  checkpointInterval?: number;
  checkpointingMode?: "EXACTLY_ONCE" | "AT_LEAST_ONCE" | null;
  /** Object reuse (pipeline.object-reuse, or the job's ExecutionConfig): a keyed reduce emits its accumulator uncopied. */
  objectReuse?: boolean;
}

/** Pointwise edges (forward, rescale) connect each producer to a few consumers; the others connect all to all. */
export function consumersOf(partitioner: PartitionerKind, producer: number, pUp: number, pDown: number): number[] {
  if (partitioner === "forward") return [producer];
  if (partitioner !== "rescale") return range(pDown);
  if (pUp >= pDown) return [Math.floor((producer * pDown) / pUp)];
  return range(pDown).filter((c) => Math.floor((c * pUp) / pDown) === producer);
}

export function producersOf(partitioner: PartitionerKind, consumer: number, pUp: number, pDown: number): number[] {
  return range(pUp).filter((p) => consumersOf(partitioner, p, pUp, pDown).includes(consumer));
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Slots a job needs with one slot-sharing group: the largest vertex parallelism. */
export function requiredSlots(graph: JobGraph): number {
  return Math.max(...graph.vertices.map((v) => v.parallelism));
}
