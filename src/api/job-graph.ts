// StreamGraph -> JobGraph (as Flink's StreamingJobGraphGenerator): resolve virtual nodes into edges with
// partitioners, then chain operators joined by forward edges into one vertex (one task per subtask).
import type { JobSettings, NodeDescription } from "./plan.ts";
import type { EdgeRecordType, JobEdge, JobGraph, JobVertex, OperatorInfo, PartitionerKind } from "../graph/job-graph.ts";
import { sha256Hex } from "../util/hash.ts";

export class JobGraphError extends Error {
  override name = "JobGraphError";
}

interface StreamEdge {
  source: number;
  target: number;
  partitioner: PartitionerKind;
  keyNodeId?: number;
  /** Which input of a two-input target it feeds (0 or 1). */
  input: number;
}

export interface JobGraphOptions {
  /** Chain a keyBy (hash) edge when its producer and consumer both run at parallelism 1 (default true). */
  chainKeyedAtParallelismOne?: boolean;
  /** pipeline.object-reuse: the default for a job that does not set its own (default false). */
  objectReuse?: boolean;
}

export function buildJobGraph(nodes: NodeDescription[], settings: JobSettings, defaultParallelism: number, jobName: string, options: JobGraphOptions = {}): JobGraph {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const physical = nodes.filter((n) => n.kind !== "keyBy" && n.kind !== "partition" && n.kind !== "union");
  if (physical.length === 0) throw new JobGraphError("the job defines no operators: add a source and a sink");

  const parallelism = new Map<number, number>();
  for (const n of physical) {
    const p = n.kind === "source" && n.sourceType === "collection" ? 1 : (n.parallelism ?? settings.parallelism ?? defaultParallelism);
    if (p > settings.maxParallelism) {
      throw new JobGraphError(`operator "${n.name}" has parallelism ${p}, above the job's max parallelism ${settings.maxParallelism}`);
    }
    parallelism.set(n.id, p);
  }

  // Resolve each physical node's inputs through keyBy / partition / union nodes.
  const edges: StreamEdge[] = [];
  forEachStreamEdge(nodes, (input, target, partitioner, keyNodeId, inputIndex) => {
    const pUp = parallelism.get(input.id)!;
    const pDown = parallelism.get(target)!;
    let kind = partitioner ?? (pUp === pDown ? "forward" : "rebalance");
    if (kind === "forward" && pUp !== pDown) {
      if (partitioner === "forward") {
        throw new JobGraphError(`forward partitioning between "${input.name}" (parallelism ${pUp}) and "${byId.get(target)!.name}" (parallelism ${pDown}) needs equal parallelism`);
      }
      kind = "rebalance";
    }
    edges.push({ source: input.id, target, partitioner: kind, keyNodeId, input: inputIndex });
  });

  const outs = (id: number) => edges.filter((e) => e.source === id);
  const ins = (id: number) => edges.filter((e) => e.target === id);
  // At parallelism 1 on both sides a keyBy sends every record to the one consumer, which may as well run in the
  // producer's task: no serialization, no hand-off between Workers (docs/benchmarks.md, issue 19). Keyed operators
  // set their key per record themselves, and keyed state is per operator, so savepoints restore into either shape.
  const keyedAtOne = options.chainKeyedAtParallelismOne !== false;
  const chainable = (e: StreamEdge) =>
    (e.partitioner === "forward" || (keyedAtOne && e.partitioner === "hash" && parallelism.get(e.source) === 1)) &&
    byId.get(e.source)!.chaining &&
    byId.get(e.target)!.chaining &&
    byId.get(e.target)!.startsChain !== true &&
    outs(e.source).length === 1 &&
    ins(e.target).length === 1 &&
    parallelism.get(e.source) === parallelism.get(e.target);

  // The declared record type of an edge: its producer's, or for a side output the getSideOutput node's. Operators
  // that emit their input's type (filter, timestamps, reduce and sum) keep the type declared upstream of them.
  const declaredBy = (n: NodeDescription): NodeDescription | null => {
    if (n.returns !== undefined) return n;
    if ((n.kind === "filter" || n.kind === "assignTimestamps" || n.kind === "reduce") && n.inputs.length === 1) {
      let input = byId.get(n.inputs[0]!)!;
      while (input.kind === "keyBy" || (input.kind === "partition" && input.returns === undefined)) input = byId.get(input.inputs[0]!)!;
      return input.kind === "union" ? null : declaredBy(input);
    }
    return null;
  };
  const recordTypeOf = (e: StreamEdge): { recordType?: EdgeRecordType } => {
    const target = byId.get(e.target)!;
    const producer = target.kind === "sideOutput" ? target : byId.get(e.source)!;
    const declaring = declaredBy(producer);
    if (declaring === null) return {};
    return { recordType: { type: declaring.returns!, operator: producer.name, ...(declaring !== producer ? { declaredBy: declaring.name } : {}) } };
  };

  const operatorIds = operatorIdsOf(nodes);
  const operatorInfo = (id: number): OperatorInfo => {
    const n = byId.get(id)!;
    return { nodeId: id, id: operatorIds.get(id)!, uid: n.uid, name: n.name, stateful: n.stateful === true, keyed: n.keyed === true };
  };

  // Chain heads: nodes whose single input edge is not chainable (sources, shuffles, unions, ...).
  const vertexOf = new Map<number, number>();
  const vertices: JobVertex[] = [];
  for (const n of physical) {
    const inEdges = ins(n.id);
    if (inEdges.length === 1 && chainable(inEdges[0]!)) continue;
    const chain = [n.id];
    for (let tail = n.id; ; ) {
      const o = outs(tail);
      if (o.length !== 1 || !chainable(o[0]!)) break;
      tail = o[0]!.target;
      chain.push(tail);
    }
    const vertex: JobVertex = {
      id: vertices.length,
      name: chain.map((id) => byId.get(id)!.name).join(" -> "),
      operatorIds: chain,
      operators: chain.map(operatorInfo),
      parallelism: parallelism.get(n.id)!,
      isSource: n.kind === "source",
    };
    for (const id of chain) vertexOf.set(id, vertex.id);
    vertices.push(vertex);
  }

  const jobEdges: JobEdge[] = edges
    .filter((e) => vertexOf.get(e.source) !== vertexOf.get(e.target))
    .map((e, i) => ({
      id: i,
      source: vertexOf.get(e.source)!,
      target: vertexOf.get(e.target)!,
      partitioner: e.partitioner,
      ...(e.keyNodeId !== undefined ? { keyNodeId: e.keyNodeId } : {}),
      ...(e.input > 0 ? { input: e.input } : {}),
      ...recordTypeOf(e),
    }));

  return {
    name: settings.name ?? jobName,
    vertices,
    edges: jobEdges,
    maxParallelism: settings.maxParallelism,
    runtimeMode: settings.runtimeMode,
    bufferTimeoutMs: settings.bufferTimeoutMs,
    planFingerprint: planFingerprint(nodes),
    stateBackend: settings.stateBackend,
    checkpointInterval: settings.checkpointInterval ?? 0,
    checkpointingMode: settings.checkpointingMode ?? null,
    ...((settings.objectReuse ?? options.objectReuse) === true ? { objectReuse: true } : {}),
  };
}

/**
 * The operator id of every physical node (as Flink's StreamGraphHasherV2): its uid when set, else a hash of its
 * kind, its position in a breadth-first walk from the sources (a node is placed once all its inputs are) and its
 * inputs' ids. So an operator without uid keeps its id while nothing before it in the walk changes, and gets a new
 * one when operators are added, removed or reordered upstream; a uid keeps it across any change. Uids must be
 * unique within a job.
 */
export function operatorIdsOf(nodes: NodeDescription[]): Map<number, string> {
  const inputs = new Map<number, number[]>();
  const outputs = new Map<number, number[]>();
  forEachStreamEdge(nodes, (input, target) => {
    if (!inputs.has(target)) inputs.set(target, []);
    inputs.get(target)!.push(input.id);
    if (!outputs.has(input.id)) outputs.set(input.id, []);
    outputs.get(input.id)!.push(target);
  });
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const physical = nodes.filter((n) => n.kind !== "keyBy" && n.kind !== "partition" && n.kind !== "union");
  const uidOwner = new Map<string, NodeDescription>();
  for (const n of physical) {
    if (n.uid === null || n.uid === undefined) continue;
    if (typeof n.uid !== "string" || n.uid.length === 0) throw new JobGraphError(`operator "${n.name}" has an empty uid`);
    const other = uidOwner.get(n.uid);
    if (other) throw new JobGraphError(`uid ${JSON.stringify(n.uid)} is set on two operators, "${other.name}" and "${n.name}": uids must be unique within a job`);
    uidOwner.set(n.uid, n);
  }
  const ids = new Map<number, string>();
  const queue = physical.filter((n) => !inputs.has(n.id)).map((n) => n.id).sort((a, b) => a - b);
  while (queue.length > 0) {
    const id = queue.shift()!;
    if (ids.has(id)) continue;
    const ins = inputs.get(id) ?? [];
    if (!ins.every((i) => ids.has(i))) continue; // placed when its last input is
    const n = byId.get(id)!;
    const inputIds = ins.map((i) => ids.get(i)!).sort();
    ids.set(id, n.uid ?? sha256Hex(new TextEncoder().encode(`${n.kind}|${ids.size}|${inputIds.join(",")}`)).slice(0, 32));
    for (const o of [...(outputs.get(id) ?? [])].sort((a, b) => a - b)) if (!ids.has(o)) queue.push(o);
  }
  return ids;
}

/**
 * Every stream edge (physical node -> physical node, through keyBy, partition and union nodes) in a fixed order:
 * by target node id, then by input. The JobGraph's edges keep this order, so a task can tell which plan node each
 * of its output edges feeds (side outputs are routed by target).
 */
export function forEachStreamEdge(
  nodes: NodeDescription[],
  visit: (input: NodeDescription, target: number, partitioner: PartitionerKind | null, keyNodeId: number | undefined, inputIndex: number) => void,
): void {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  let inputIndex = 0;
  const resolve = (target: number, inputId: number, partitioner: PartitionerKind | null, keyNodeId: number | undefined): void => {
    const input = byId.get(inputId);
    if (!input) throw new JobGraphError(`node ${target} reads from unknown node ${inputId}`);
    // As in Flink, the partitioning nearest the consumer wins over one further upstream.
    if (input.kind === "keyBy") return resolve(target, input.inputs[0]!, partitioner ?? "hash", partitioner ? keyNodeId : input.id);
    if (input.kind === "partition") {
      if (partitioner) return resolve(target, input.inputs[0]!, partitioner, keyNodeId);
      return resolve(target, input.inputs[0]!, input.partitioner!, input.partitioner === "custom" ? input.id : undefined);
    }
    if (input.kind === "union") {
      for (const i of input.inputs) resolve(target, i, partitioner, keyNodeId);
      return;
    }
    visit(input, target, partitioner, keyNodeId, inputIndex);
  };
  for (const n of nodes) {
    if (n.kind === "keyBy" || n.kind === "partition" || n.kind === "union") continue;
    // A two-input operator's inputs are [first, second]: the edges resolved from each feed that input.
    n.inputs.forEach((i, index) => {
      inputIndex = index;
      resolve(n.id, i, null, undefined);
    });
  }
}

/** The plan node ids that a node's outgoing stream edges feed, in the order of its JobGraph output edges. */
export function streamTargetsOf(nodes: NodeDescription[], source: number): number[] {
  const targets: number[] = [];
  forEachStreamEdge(nodes, (input, target) => {
    if (input.id === source) targets.push(target);
  });
  return targets;
}

export function planFingerprint(nodes: NodeDescription[]): string {
  return nodes.map((n) => [n.id, n.kind, n.inputs.join(","), n.parallelism ?? "", n.partitioner ?? "", n.sourceType ?? "", n.sinkType ?? ""].join(":")).join(";");
}
