// Schemas of every RPC request's payload (valibot): a request is checked against its schema before a handler sees
// it, and a malformed one is answered with an error naming the request, the field and what was wrong, e.g.
// `registerTaskManager: dataPort: expected a number, got "x"`. The compile-time check at the end keeps each
// schema's output assignable to the payload type in messages.ts (docs/protocol.md documents both).
import * as v from "valibot";
import type { KeyedSnapshotHandle, OperatorSnapshotHandle } from "../state/snapshot-format.ts";
import { recordTypeProblem, type RecordType } from "../graph/record-type.ts";
import type { RequestType, RpcRequests, TaskMetrics } from "./messages.ts";

/** At most this many characters of a received value are quoted in an error (a peer's text goes into our logs). */
const MAX_QUOTED = 80;
/** taskmanager.numberOfTaskSlots's maximum: bounds a TaskManager's slot map at the JobManager. */
const MAX_SLOTS = 1024;

const str = v.string();
const num = v.number();
const int = v.pipe(v.number(), v.integer("an integer"));
const nonNegInt = v.pipe(v.number(), v.integer("an integer"), v.minValue(0, "a non-negative integer"));
const port = v.pipe(v.number(), v.integer("an integer"), v.minValue(0, "a port (0..65535)"), v.maxValue(65535, "a port (0..65535)"));
const obj = <E extends v.ObjectEntries>(entries: E) => v.looseObject(entries);

const TASK_STATE = v.picklist(["DEPLOYING", "RUNNING", "FINISHED", "FAILED", "CANCELING", "CANCELED"]);
const PARTITIONER = v.picklist(["forward", "rebalance", "rescale", "hash", "broadcast", "custom"]);
const STATE_BACKEND = v.nullable(v.picklist(["heap", "sqlite"]));
const CHECKPOINTING_MODE = v.picklist(["EXACTLY_ONCE", "AT_LEAST_ONCE"]);
const RUNTIME_MODE = v.picklist(["streaming", "batch"]);

/** Metrics are any number, NaN included: a task's odd ratio must not fail its TaskManager's heartbeat. */
const metric = v.custom<number>((x) => typeof x === "number", "a number");
const ERROR_INFO = obj({ message: str, stack: v.optional(str), task: v.optional(str), name: v.optional(str) });
const TASK_METRICS = obj({
  recordsIn: metric,
  recordsOut: metric,
  bytesIn: metric,
  bytesOut: metric,
  buffersIn: metric,
  buffersOut: metric,
  wakeUps: metric,
  outPoolUsage: metric,
  inPoolUsage: metric,
  busyTimeMsPerSecond: metric,
  backPressuredTimeMsPerSecond: metric,
  idleTimeMsPerSecond: metric,
  watermarksIgnored: v.optional(metric),
  currentInputWatermark: v.optional(v.nullable(metric)),
  currentOutputWatermark: v.optional(v.nullable(metric)),
  lateRecordsDropped: v.optional(metric),
  state: v.optional(v.custom<NonNullable<TaskMetrics["state"]>>((x) => typeof x === "object" && x !== null, "task state metrics (an object)")),
  debloatedBufferSize: v.optional(metric),
  latency: v.optional(
    v.pipe(
      v.array(obj({ operator: str, sourceVertexId: nonNegInt, sourceSubtask: nonNegInt, count: metric, sumMs: num, minMs: num, p50Ms: num, p95Ms: num, p99Ms: num, maxMs: num })),
      v.maxLength(10_000),
    ),
  ),
});
/** Snapshot handles are the state layer's business: here only "an object" (the state layer checks them on restore). */
const KEYED_HANDLE = v.custom<KeyedSnapshotHandle>((x) => typeof x === "object" && x !== null, "a snapshot handle (an object)");
const OPERATOR_HANDLE = v.custom<OperatorSnapshotHandle>((x) => typeof x === "object" && x !== null, "a snapshot handle (an object)");
const STATE_INFO = obj({
  name: str,
  scope: v.picklist(["keyed", "operator"]),
  kind: v.picklist(["value", "list", "map", "reducing", "aggregating", "broadcast"]),
  mode: v.optional(v.picklist(["split", "union"])),
  ttlMs: v.optional(v.nullable(num)),
});
/** A chained operator's state identity (its id: uid or a hash of its place in the graph). */
const OPERATOR_INFO = obj({ nodeId: int, id: str, uid: v.nullable(str), name: str, stateful: v.boolean(), keyed: v.boolean() });
const CHANNEL_TARGET = { resourceId: str, dataHost: str, dataPort: port };
/** A task's input channel state of one unaligned checkpoint (runtime/channel-state.ts checks the file on restore). */
const CHANNEL_STATE_HANDLE = obj({ type: v.literal("channel"), file: str, sizeBytes: nonNegInt, records: nonNegInt, subtaskIndex: nonNegInt });

/** An edge's declared record type (DataStream.returns) and the operator that declared it. */
const EDGE_RECORD_TYPE = obj({ type: v.custom<RecordType>((x) => recordTypeProblem(x) === null, "a record type (Types...)"), operator: str, declaredBy: v.optional(str) });

const JOB_GRAPH = obj({
  name: str,
  vertices: v.array(obj({ id: int, name: str, operatorIds: v.array(int), operators: v.optional(v.array(OPERATOR_INFO)), parallelism: int, isSource: v.boolean() })),
  edges: v.array(obj({ id: int, source: int, target: int, partitioner: PARTITIONER, keyNodeId: v.optional(int), input: v.optional(nonNegInt), recordType: v.optional(EDGE_RECORD_TYPE) })),
  maxParallelism: int,
  runtimeMode: RUNTIME_MODE,
  bufferTimeoutMs: num,
  planFingerprint: str,
  stateBackend: STATE_BACKEND,
  checkpointInterval: v.optional(num),
  checkpointingMode: v.optional(v.nullable(CHECKPOINTING_MODE)),
  objectReuse: v.optional(v.boolean()),
});

const TASK_DEPLOYMENT = obj({
  jobId: str,
  jobName: str,
  executionId: str,
  vertexId: int,
  vertexName: str,
  subtaskIndex: nonNegInt,
  parallelism: int,
  maxParallelism: int,
  slot: nonNegInt,
  artifactHash: str,
  jobArgs: v.array(str),
  operatorIds: v.array(int),
  inputs: v.array(obj({ edgeId: int, partitioner: v.optional(PARTITIONER), keyNodeId: v.optional(int), input: v.optional(nonNegInt), producers: v.array(obj({ ...CHANNEL_TARGET, subtask: nonNegInt })) })),
  outputs: v.array(obj({ edgeId: int, partitioner: PARTITIONER, keyNodeId: v.optional(int), recordType: v.optional(EDGE_RECORD_TYPE), targets: v.array(obj({ ...CHANNEL_TARGET, subtask: nonNegInt })) })),
  runtimeMode: RUNTIME_MODE,
  bufferTimeoutMs: num,
  planFingerprint: str,
  stateBackend: STATE_BACKEND,
  attempt: nonNegInt,
  checkpointingMode: CHECKPOINTING_MODE,
  unalignedCheckpoints: v.optional(v.boolean()),
  alignedCheckpointTimeoutMs: v.optional(num),
  latencyIntervalMs: v.optional(num),
  finalCheckpoint: v.optional(v.boolean()),
  objectReuse: v.optional(v.boolean()),
  operators: v.optional(v.array(OPERATOR_INFO)),
  restore: v.nullable(
    obj({
      checkpointId: int,
      path: str,
      operators: v.record(str, obj({ keyed: v.array(KEYED_HANDLE), operator: v.array(OPERATOR_HANDLE) })),
      channel: v.optional(v.array(CHANNEL_STATE_HANDLE)),
      finished: v.optional(v.boolean()),
    }),
  ),
});

/** Requests without a payload: whatever the peer put there is dropped. */
const EMPTY = v.object({});
const JOB_ID = obj({ jobId: str });
const CHECKPOINT_REF = { executionId: str, checkpointId: int };

/** The schema of each request type's payload. */
export const REQUEST_SCHEMAS = {
  registerTaskManager: obj({
    resourceId: str,
    dataHost: str,
    dataPort: port,
    slots: v.pipe(nonNegInt, v.maxValue(MAX_SLOTS, `at most ${MAX_SLOTS} (taskmanager.numberOfTaskSlots)`)),
    resources: obj({ cpuCores: num, memoryBytes: num }),
    pid: int,
    executions: v.optional(v.array(str)),
    executionSlots: v.optional(v.record(str, nonNegInt)),
    epoch: v.optional(nonNegInt),
  }),
  offerSlots: obj({ resourceId: str, slots: v.pipe(v.array(nonNegInt), v.maxLength(MAX_SLOTS, `at most ${MAX_SLOTS} slots`)) }),
  heartbeat: obj({
    from: str,
    slotReport: v.optional(v.array(obj({ slot: nonNegInt, jobId: v.nullable(str) }))),
    taskMetrics: v.optional(v.record(str, TASK_METRICS)),
    process: v.optional(obj({ heapUsed: num, heapTotal: num, rss: num, networkBuffersTotal: num, networkBuffersAvailable: num })),
  }),
  approveFinalCommit: obj({ executionId: str, epoch: v.optional(nonNegInt) }),
  updateTaskState: obj({ executionId: str, state: TASK_STATE, error: v.optional(ERROR_INFO), metrics: v.optional(TASK_METRICS) }),
  fetchArtifact: obj({ hash: str }),
  disconnectTaskManager: obj({ resourceId: str, reason: str }),
  submitTask: TASK_DEPLOYMENT,
  cancelTask: obj({ executionId: str }),
  releaseJob: JOB_ID,
  triggerCheckpoint: obj({ ...CHECKPOINT_REF, timestamp: num, dir: str, unaligned: v.optional(v.boolean()) }),
  notifyCheckpointComplete: obj(CHECKPOINT_REF),
  notifyCheckpointAborted: obj(CHECKPOINT_REF),
  acknowledgeCheckpoint: obj({
    ...CHECKPOINT_REF,
    snapshot: v.optional(
      obj({
        operators: v.array(obj({ operatorId: str, keyed: v.nullable(KEYED_HANDLE), operator: v.nullable(OPERATOR_HANDLE), states: v.array(STATE_INFO) })),
        // Task level (issue 15): channel state of an unaligned checkpoint, a finished task, per-task figures.
        channel: v.optional(v.nullable(CHANNEL_STATE_HANDLE)),
        finished: v.optional(v.boolean()),
        alignmentMs: v.optional(num),
        startDelayMs: v.optional(num),
        unaligned: v.optional(v.boolean()),
      }),
      () => ({ operators: [] }),
    ),
  }),
  declineCheckpoint: obj({ ...CHECKPOINT_REF, reason: v.optional(str, "declined") }),
  triggerSavepoint: obj({ jobId: str, dir: v.optional(str), cancel: v.optional(v.boolean()) }),
  submitJob: obj({ artifact: v.instance(Uint8Array), jobArgs: v.array(str), graph: JOB_GRAPH, fromSavepoint: v.optional(str), allowNonRestoredState: v.optional(v.boolean()) }),
  jobStatus: JOB_ID,
  cancelJob: JOB_ID,
  listJobs: EMPTY,
  clusterOverview: EMPTY,
  taskManagerInfo: EMPTY,
} satisfies { [T in RequestType]: v.GenericSchema<unknown, RpcRequests[T][0]> };

/** What a schema expects, in words. */
function expectedText(issue: v.BaseIssue<unknown>): string {
  if (issue.kind === "validation") return issue.message; // the actions above carry it ("an integer", "a port (0..65535)")
  switch (issue.expected) {
    case "number":
      return "a number";
    case "string":
      return "a string";
    case "boolean":
      return "a boolean";
    case "Array":
      return "an array";
    case "Object":
      return "an object";
    case "Uint8Array":
      return "bytes";
    default:
      return issue.type === "custom" ? issue.message : `one of ${issue.expected}`;
  }
}

function quoted(received: string): string {
  return received.length > MAX_QUOTED ? `${received.slice(0, MAX_QUOTED)}...` : received;
}

/** The payload of a `type` request, checked against its schema; throws naming the field that is wrong. */
export function parseRequest<T extends RequestType>(type: T, payload: unknown): RpcRequests[T][0] {
  const result = v.safeParse(REQUEST_SCHEMAS[type] as v.GenericSchema, payload);
  if (result.success) return result.output as RpcRequests[T][0];
  const issue = result.issues[0];
  const field = v.getDotPath(issue) ?? "payload";
  // A key that is not there: valibot reports the key as what it expected, and undefined as what it got.
  if (issue.received === "undefined" && issue.kind === "schema" && issue.type.endsWith("object")) throw new Error(`${type}: ${field}: missing`);
  throw new Error(`${type}: ${field}: expected ${expectedText(issue)}, got ${quoted(issue.received)}`);
}
