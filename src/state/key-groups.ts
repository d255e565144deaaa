// Key -> key group -> subtask, as in Flink's KeyGroupRangeAssignment. The network's hash partitioner and
// the state backends must both use these functions, so that a key's records meet its state.
import { assert } from "../util/assert.ts";

/** A stable 32-bit hash of a key's value (not its identity): equal keys hash equal in every process. */
export function hashKey(key: unknown): number {
  switch (typeof key) {
    case "string":
      return stringHash(key);
    case "number":
      return Number.isInteger(key) && key >= -0x80000000 && key <= 0x7fffffff ? key | 0 : stringHash(String(key));
    case "boolean":
      return key ? 1231 : 1237; // Java's Boolean.hashCode
    case "bigint":
      return stringHash(key.toString());
    case "undefined":
      return 0;
    default:
      return key === null ? 0 : stringHash(canonicalKey(key));
  }
}

/** A string that identifies a key by value; used to index composite keys (arrays, objects) in maps. */
export function canonicalKey(key: unknown): string {
  return JSON.stringify(key, (_k, v) => {
    if (typeof v === "bigint") return `${v}n`;
    if (v instanceof Map || v instanceof Set) throw new TypeError("a key must not contain a Map or Set: use arrays or plain objects");
    // Property order must not matter: {a, b} and {b, a} are the same key.
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]));
    return v;
  });
}

function stringHash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(31, h) + s.charCodeAt(i)) | 0;
  return h;
}

/** Murmur3's 32-bit finalizer over one int, made non-negative (Flink's MathUtils.murmurHash). */
function murmur(code: number): number {
  let h = Math.imul(code, 0xcc9e2d51);
  h = (h << 15) | (h >>> 17);
  h = Math.imul(h, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  h ^= 4;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >= 0 ? h : h === -0x80000000 ? 0 : -h;
}

export function assignToKeyGroup(key: unknown, maxParallelism: number): number {
  return murmur(hashKey(key)) % maxParallelism;
}

export function operatorIndexForKeyGroup(keyGroup: number, parallelism: number, maxParallelism: number): number {
  // Per record: the guard keeps the message closure off the happy path.
  if (!(keyGroup >= 0 && keyGroup < maxParallelism && parallelism >= 1 && parallelism <= maxParallelism)) {
    assert(false, () => `key group ${keyGroup} of max parallelism ${maxParallelism}, parallelism ${parallelism}: need 0 <= key group < max parallelism and 1 <= parallelism <= max parallelism`);
  }
  return Math.floor((keyGroup * parallelism) / maxParallelism);
}

export function assignKeyToOperator(key: unknown, parallelism: number, maxParallelism: number): number {
  return operatorIndexForKeyGroup(assignToKeyGroup(key, maxParallelism), parallelism, maxParallelism);
}

/** The contiguous key groups [start, end] that subtask `index` of `parallelism` owns. */
export function keyGroupRange(index: number, parallelism: number, maxParallelism: number): { start: number; end: number } {
  // Every subtask owns at least one key group, and the ranges of 0..parallelism-1 cover 0..maxParallelism-1.
  assert(
    Number.isInteger(index) && Number.isInteger(parallelism) && Number.isInteger(maxParallelism) && index >= 0 && index < parallelism && parallelism <= maxParallelism,
    () => `key group range of subtask ${index} of parallelism ${parallelism}, max parallelism ${maxParallelism}: need 0 <= subtask < parallelism <= max parallelism`,
  );
  return {
    start: Math.ceil((index * maxParallelism) / parallelism),
    end: Math.ceil(((index + 1) * maxParallelism) / parallelism) - 1,
  };
}

// ---- Added for the state backends' hot path ----

/** stringHash, four characters per step (the same value: 31^4 = 923521, 31^3 = 29791, 31^2 = 961). */
function stringHash4(s: string): number {
  const n = s.length;
  let h = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    h = (Math.imul(923521, h) + Math.imul(29791, s.charCodeAt(i)) + Math.imul(961, s.charCodeAt(i + 1)) + Math.imul(31, s.charCodeAt(i + 2)) + s.charCodeAt(i + 3)) | 0;
  }
  for (; i < n; i++) h = (Math.imul(31, h) + s.charCodeAt(i)) | 0;
  return h;
}

/** Exactly assignToKeyGroup(key, maxParallelism), with a faster path for string keys. */
export function keyGroupOf(key: unknown, maxParallelism: number): number {
  if (typeof key === "string") return murmur(stringHash4(key)) % maxParallelism;
  if (typeof key === "number" && (key | 0) === key) return murmur(key) % maxParallelism;
  return murmur(hashKey(key)) % maxParallelism;
}
