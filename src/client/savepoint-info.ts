// `taskmanager savepoint info PATH`: what a savepoint (or retained checkpoint) holds, per operator id, so that an
// upgrade can be checked before it runs: which operators, their uids and parallelism, and their states with
// kinds and sizes (read from the state files themselves).
import { readMetadata } from "../jobmanager/checkpoint-store.ts";
import { stateSizes, type KeyedSnapshotHandle, type OperatorSnapshotHandle, type StateInfo } from "../state/index.ts";

export interface SavepointInfo {
  path: string;
  formatVersion: number;
  jobId: string;
  jobName: string;
  checkpointId: number;
  timestamp: number;
  savepoint: boolean;
  maxParallelism: number;
  operators: {
    id: string;
    uid: string | null;
    name: string;
    parallelism: number;
    /** The chain it ran in when the savepoint was taken. */
    chain: string | null;
    states: (StateInfo & { bytes: number; entries: number })[];
  }[];
}

export async function savepointInfo(target: string): Promise<SavepointInfo> {
  const { meta, path } = readMetadata(target);
  const operators: SavepointInfo["operators"] = [];
  for (const op of meta.operators) {
    const keyed = op.subtasks.flatMap((s): KeyedSnapshotHandle[] => (s?.keyed ? [s.keyed] : []));
    const operator = op.subtasks.flatMap((s): OperatorSnapshotHandle[] => (s?.operator ? [s.operator] : []));
    const sizes = await stateSizes(keyed, operator);
    operators.push({
      id: op.id,
      uid: op.uid,
      name: op.name,
      parallelism: op.parallelism,
      chain: meta.vertices.find((v) => v.operatorIds.includes(op.id))?.name ?? null,
      states: op.states.map((s) => ({ ...s, bytes: sizes.get(s.name)?.bytes ?? 0, entries: sizes.get(s.name)?.entries ?? 0 })),
    });
  }
  return {
    path,
    formatVersion: meta.version,
    jobId: meta.jobId,
    jobName: meta.jobName,
    checkpointId: meta.checkpointId,
    timestamp: meta.timestamp,
    savepoint: meta.savepoint,
    maxParallelism: meta.maxParallelism,
    operators,
  };
}

/**
 * One block per operator:
 *   Operator counter (uid counter): "Keyed Process", parallelism 2, in chain "Keyed Process -> Sink"
 *     count: keyed value, 1234 bytes, 37 entries
 */
export function formatSavepointInfo(i: SavepointInfo): string {
  const lines = [
    `${i.savepoint ? "Savepoint" : "Checkpoint"} ${i.path} (format version ${i.formatVersion})`,
    `Job "${i.jobName}" (${i.jobId}), checkpoint ${i.checkpointId}, taken ${new Date(i.timestamp).toISOString()}, max parallelism ${i.maxParallelism}`,
    `${i.operators.length} operator(s) with state:`,
  ];
  for (const op of i.operators) {
    lines.push(
      `Operator ${op.id} (${op.uid === null ? "no uid" : `uid ${op.uid}`}): "${op.name}", parallelism ${op.parallelism}${op.chain ? `, in chain "${op.chain}"` : ""}`,
    );
    if (op.states.length === 0) lines.push("  (no states)");
    for (const s of op.states) {
      const kind = `${s.scope} ${s.kind}${s.mode ? ` (${s.mode})` : ""}${s.ttlMs ? ` with TTL ${s.ttlMs} ms` : ""}`;
      lines.push(`  ${s.name}: ${kind}, ${s.bytes} bytes, ${s.entries} entries`);
    }
  }
  return lines.join("\n") + "\n";
}
