// The state layer's public entry point: the factory and everything the runtime and operators use.
import type { KeyGroupRange } from "./api.ts";
import { HeapKeyedStateBackend } from "./heap-backend.ts";
import type { Clock, KeyedStateBackend } from "./keyed-backend.ts";
import { SqliteKeyedStateBackend } from "./sqlite-backend.ts";
import type { BackendKind, KeyedSnapshotHandle } from "./snapshot-format.ts";
import * as path from "node:path";

export * from "./api.ts";
export type { Clock, CloseOptions, KeyedStateBackend } from "./keyed-backend.ts";
export { HeapKeyedStateBackend } from "./heap-backend.ts";
export { SqliteKeyedStateBackend, DEFAULT_CACHE_BYTES, DEFAULT_PAGE_CACHE_BYTES, sqliteMemory, type SqliteBackendOptions } from "./sqlite-backend.ts";
export { MAX_CHANGE_SETS } from "./sqlite-snapshot.ts";
export { OperatorStateStore, type RedistributionMode } from "./operator-state.ts";
export type { BackendKind, KeyedSnapshotHandle, OperatorSnapshotHandle, SnapshotOptions, SnapshotStateMeta, StateInfo } from "./snapshot-format.ts";
export { KEYED_CHANGESET_VERSION, KEYED_FORMAT_VERSION, OPERATOR_FORMAT_VERSION, keyedSnapshotStates, stateSizes } from "./snapshot-format.ts";
export { openSqliteDriver, type SqliteDriver, type SqliteStatement, type SqlValue } from "./sqlite-driver.ts";
export { assignToKeyGroup, keyGroupRange, assignKeyToOperator, operatorIndexForKeyGroup } from "./key-groups.ts";

export interface KeyedStateBackendOptions {
  kind: BackendKind;
  maxParallelism: number;
  keyGroupRange: KeyGroupRange;
  /** SQLite: the database file, or a directory in which `state-kg<start>-<end>.db` is used. Required for "sqlite". */
  dir?: string;
  /** SQLite: an explicit database file path (takes precedence over `dir`). */
  path?: string;
  /** SQLite: the memory budget in bytes (`state.backend.sqlite.cache-size`, default 64 MiB), split between
   *  SQLite's page cache, its memory map and the object cache (sqliteMemory). */
  cacheBytes?: number;
  /** SQLite: overrides of that split (an explicit object cache bound does not adapt to the database's size). */
  objectCacheBytes?: number;
  pageCacheBytes?: number;
  mmapBytes?: number;
  /** SQLite: record changed rows, so that snapshots taken with `incremental: true` write change sets
   *  (`state.backend.incremental`). The heap backend always writes full snapshots. */
  incremental?: boolean;
  /** Time source for TTL (default Date.now). */
  clock?: Clock;
  /** Snapshots to restore from before the backend is returned. */
  restoreFrom?: readonly KeyedSnapshotHandle[];
}

/** Creates (and opens, and optionally restores) a keyed state backend. */
export async function createKeyedStateBackend(opts: KeyedStateBackendOptions): Promise<KeyedStateBackend> {
  let backend: KeyedStateBackend;
  if (opts.kind === "heap") {
    backend = new HeapKeyedStateBackend(opts);
  } else if (opts.kind === "sqlite") {
    const file = opts.path ?? (opts.dir !== undefined ? path.join(opts.dir, `state-kg${opts.keyGroupRange.start}-${opts.keyGroupRange.end}.db`) : undefined);
    if (file === undefined) throw new TypeError('the "sqlite" state backend needs `dir` (or `path`) for its database file');
    backend = await SqliteKeyedStateBackend.open({ ...opts, path: file });
  } else {
    throw new TypeError(`unknown state backend kind ${JSON.stringify((opts as { kind: unknown }).kind)} (expected "heap" or "sqlite")`);
  }
  if (opts.restoreFrom !== undefined && opts.restoreFrom.length > 0) {
    try {
      await backend.restore(opts.restoreFrom);
    } catch (e) {
      await backend.close().catch(() => {});
      throw e;
    }
  }
  return backend;
}
