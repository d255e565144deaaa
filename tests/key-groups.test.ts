import { describe, expect, test } from "bun:test";
import { createPartitioner } from "../src/network/partitioners.ts";
import {
  canonicalKey,
  assignKeyToOperator,
  assignToKeyGroup,
  hashKey,
  keyGroupRange,
  operatorIndexForKeyGroup,
} from "../src/state/key-groups.ts";
import { rng } from "./helpers.ts";

/** (parallelism, maxParallelism) pairs, including edge cases: 1, p == max, p not dividing max, primes. */
const PAIRS: [number, number][] = [
  [1, 1],
  [1, 128],
  [2, 128],
  [3, 128],
  [4, 128],
  [7, 128],
  [128, 128],
  [5, 7],
  [6, 7],
  [3, 10],
  [13, 1000],
  [17, 32768],
];

// ---- An independent model of Flink's KeyGroupRangeAssignment, in BigInt (Java int semantics). ----
const MASK = 0xffffffffn;
const toInt32 = (x: bigint): bigint => BigInt.asIntN(32, x);
const mul32 = (a: bigint, b: bigint): bigint => toInt32((a & MASK) * (b & MASK));
const rotl32 = (x: bigint, r: bigint): bigint => toInt32(((x & MASK) << r) | ((x & MASK) >> (32n - r)));
const ushr32 = (x: bigint, r: bigint): bigint => (x & MASK) >> r;

/** Flink MathUtils.murmurHash(int). */
function flinkMurmur(code: number): number {
  let h = BigInt(code);
  h = mul32(h, 0xcc9e2d51n);
  h = rotl32(h, 15n);
  h = mul32(h, 0x1b873593n);
  h = rotl32(h, 13n);
  h = toInt32(h * 5n + 0xe6546b64n);
  h = toInt32(h ^ 4n);
  // bitMix
  h = toInt32(h ^ ushr32(h, 16n));
  h = mul32(h, 0x85ebca6bn);
  h = toInt32(h ^ ushr32(h, 13n));
  h = mul32(h, 0xc2b2ae35n);
  h = toInt32(h ^ ushr32(h, 16n));
  if (h >= 0n) return Number(h);
  if (h !== -(2n ** 31n)) return Number(-h);
  return 0;
}

/** java.lang.String.hashCode over UTF-16 code units. */
function javaStringHash(s: string): number {
  let h = 0n;
  for (let i = 0; i < s.length; i++) h = toInt32(h * 31n + BigInt(s.charCodeAt(i)));
  return Number(h);
}

function flinkKeyGroup(javaHash: number, maxParallelism: number): number {
  return flinkMurmur(javaHash) % maxParallelism;
}


function randomString(next: () => number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_éü中文😀";
  const chars = [...alphabet];
  const n = Math.floor(next() * 24);
  let s = "";
  for (let i = 0; i < n; i++) s += chars[Math.floor(next() * chars.length)]!;
  return s;
}

describe("hashKey", () => {
  test("is a 32-bit integer, stable across calls", () => {
    for (const k of ["", "a", "hello world", 0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 40, 1.5, NaN, true, false, null, undefined, [1, 2], { a: 1 }, 10n]) {
      const h = hashKey(k);
      expect(Number.isInteger(h)).toBe(true);
      expect(h).toBe(h | 0);
      expect(hashKey(k)).toBe(h);
    }
  });

  test("equal strings hash equal, however they were built", () => {
    const parts = ["wo", "rd"];
    expect(hashKey(parts.join(""))).toBe(hashKey("word"));
    expect(hashKey(String.fromCharCode(104, 105))).toBe(hashKey("hi"));
    expect(hashKey(`${"中"}${"文"}`)).toBe(hashKey("中文"));
    expect(hashKey(new TextDecoder().decode(new TextEncoder().encode("😀é")))).toBe(hashKey("😀é"));
  });

  test("equal numbers hash equal", () => {
    expect(hashKey(1)).toBe(hashKey(1.0));
    expect(hashKey(7 / 2)).toBe(hashKey(3.5));
    expect(hashKey(0)).toBe(hashKey(-0));
    expect(hashKey(2 ** 40)).toBe(hashKey(Number("1099511627776")));
    expect(hashKey(-(2 ** 31))).toBe(hashKey(-2147483648));
    expect(hashKey(0.1 + 0.2)).toBe(hashKey(0.30000000000000004));
  });

  test("equal arrays (distinct identities) hash equal", () => {
    const a = [1, "two", [3, { four: 4 }], null, true];
    const b = JSON.parse(JSON.stringify(a));
    expect(b).not.toBe(a);
    expect(hashKey(b)).toBe(hashKey(a));
    expect(hashKey(["user", 42])).toBe(hashKey(["user", 42]));
    expect(hashKey([])).toBe(hashKey([]));
  });

  test("equal objects (distinct identities) hash equal", () => {
    const mk = () => ({ user: "alice", day: 3, tags: ["x", "y"], nested: { k: 1.5 } });
    const a = mk();
    const b = mk();
    expect(b).not.toBe(a);
    expect(hashKey(b)).toBe(hashKey(a));
    expect(hashKey(structuredClone(a))).toBe(hashKey(a));
  });

  test("object keys are equal whatever their property order; Map and Set keys are refused", () => {
    expect(canonicalKey({ a: 1, b: { c: 2, d: [3, { e: 4, f: 5 }] } })).toBe(canonicalKey({ b: { d: [3, { f: 5, e: 4 }], c: 2 }, a: 1 }));
    expect(hashKey({ x: "k", y: 2 })).toBe(hashKey({ y: 2, x: "k" }));
    expect(canonicalKey({ a: 1, b: 2 })).not.toBe(canonicalKey({ a: 2, b: 1 }));
    expect(() => hashKey({ m: new Map([[1, 2]]) })).toThrow(/Map or Set/);
    expect(() => hashKey(new Set([1]))).toThrow(/Map or Set/);
  });

  test("different values mostly hash differently", () => {
    const keys = ["a", "b", "ab", "ba", 1, 2, [1, 2], [2, 1], { a: 1 }, { a: 2 }, true, false];
    const hashes = new Set(keys.map(hashKey));
    expect(hashes.size).toBe(keys.length);
  });

  test("strings and int keys hash as Java's String.hashCode / Integer.hashCode", () => {
    const next = rng(7);
    for (let i = 0; i < 2000; i++) {
      const s = randomString(next);
      expect(hashKey(s)).toBe(javaStringHash(s));
    }
    for (const n of [0, 1, -1, 42, 2 ** 31 - 1, -(2 ** 31), 123456789]) expect(hashKey(n)).toBe(n);
  });
});

describe("assignToKeyGroup", () => {
  test("is within [0, maxParallelism) for many keys and max parallelisms", () => {
    const next = rng(1);
    const keys: unknown[] = [0, -1, 2 ** 31 - 1, -(2 ** 31), 2 ** 53, -0.5, "", null, [1], { a: 1 }];
    for (let i = 0; i < 2000; i++) keys.push(randomString(next), Math.floor((next() - 0.5) * 2 ** 32));
    for (const max of [1, 2, 7, 128, 1000, 32768]) {
      for (const k of keys) {
        const kg = assignToKeyGroup(k, max);
        expect(Number.isInteger(kg)).toBe(true);
        expect(kg).toBeGreaterThanOrEqual(0);
        expect(kg).toBeLessThan(max);
      }
    }
  });

  test("matches Flink's murmurHash(hashCode) % maxParallelism (independent BigInt model)", () => {
    const next = rng(99);
    const ints = [0, 1, -1, 2, 42, 2 ** 31 - 1, -(2 ** 31), 1 << 30];
    for (let i = 0; i < 1000; i++) ints.push(Math.floor((next() - 0.5) * 2 ** 32) | 0);
    for (const max of [1, 128, 1000, 32768]) {
      for (const n of ints) expect(assignToKeyGroup(n, max)).toBe(flinkKeyGroup(n, max));
      for (let i = 0; i < 300; i++) {
        const s = randomString(next);
        expect(assignToKeyGroup(s, max)).toBe(flinkKeyGroup(javaStringHash(s), max));
      }
    }
  });
});

describe("keyGroupRange / operatorIndexForKeyGroup", () => {
  test("ranges of all subtasks are non-empty, contiguous, disjoint and cover [0, maxParallelism)", () => {
    for (const [p, max] of PAIRS) {
      let expectedStart = 0;
      for (let i = 0; i < p; i++) {
        const { start, end } = keyGroupRange(i, p, max);
        expect({ p, max, i, start }).toEqual({ p, max, i, start: expectedStart });
        expect(end).toBeGreaterThanOrEqual(start);
        expectedStart = end + 1;
      }
      expect({ p, max, coveredUpTo: expectedStart }).toEqual({ p, max, coveredUpTo: max });
    }
  });

  test("range sizes differ by at most one", () => {
    for (const [p, max] of PAIRS) {
      const sizes = Array.from({ length: p }, (_, i) => {
        const r = keyGroupRange(i, p, max);
        return r.end - r.start + 1;
      });
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      expect(sizes.reduce((a, b) => a + b, 0)).toBe(max);
    }
  });

  test("operatorIndexForKeyGroup(kg) is the subtask whose range contains kg, for every kg", () => {
    for (const [p, max] of PAIRS) {
      const owner = new Array<number>(max).fill(-1);
      for (let i = 0; i < p; i++) {
        const { start, end } = keyGroupRange(i, p, max);
        for (let kg = start; kg <= end; kg++) owner[kg] = i;
      }
      for (let kg = 0; kg < max; kg++) {
        const idx = operatorIndexForKeyGroup(kg, p, max);
        if (idx !== owner[kg]) expect({ p, max, kg, idx }).toEqual({ p, max, kg, idx: owner[kg]! });
      }
    }
  });

  test("assignKeyToOperator composes key group and operator index", () => {
    const next = rng(5);
    for (const [p, max] of PAIRS) {
      for (let i = 0; i < 200; i++) {
        const key = randomString(next);
        const kg = assignToKeyGroup(key, max);
        const op = assignKeyToOperator(key, p, max);
        const { start, end } = keyGroupRange(op, p, max);
        expect(kg).toBeGreaterThanOrEqual(start);
        expect(kg).toBeLessThanOrEqual(end);
      }
    }
  });

  test("100k string keys spread roughly evenly over 4 subtasks", () => {
    const p = 4;
    const counts = new Array<number>(p).fill(0);
    const n = 100_000;
    for (let i = 0; i < n; i++) counts[assignKeyToOperator(`key-${i}`, p, 128)]!++;
    const mean = n / p;
    for (const c of counts) {
      expect(c).toBeGreaterThan(mean * 0.8);
      expect(c).toBeLessThan(mean * 1.2);
    }
    expect(counts.reduce((a, b) => a + b, 0)).toBe(n);
  });

  test("100k random word-like keys spread roughly evenly over 4 subtasks", () => {
    const next = rng(12345);
    const p = 4;
    const counts = new Array<number>(p).fill(0);
    const n = 100_000;
    for (let i = 0; i < n; i++) counts[assignKeyToOperator(randomString(next) + i, p, 128)]!++;
    const mean = n / p;
    for (const c of counts) {
      expect(c).toBeGreaterThan(mean * 0.8);
      expect(c).toBeLessThan(mean * 1.2);
    }
  });
});

describe("partitioners", () => {
  test("hash sends each record to assignKeyToOperator(key) and agrees with the key-group ranges", () => {
    const next = rng(3);
    for (const [n, max] of [[1, 128], [3, 128], [4, 128], [7, 10], [128, 128]] as [number, number][]) {
      const part = createPartitioner("hash", 0, n, max, (r: { k: string }) => r.k);
      for (let i = 0; i < 500; i++) {
        const k = randomString(next);
        const ch = part({ k, payload: i });
        expect(ch).toBe(assignKeyToOperator(k, n, max));
        const r = keyGroupRange(ch, n, max);
        const kg = assignToKeyGroup(k, max);
        expect(kg >= r.start && kg <= r.end).toBe(true);
      }
    }
  });

  test("hash routing does not depend on the producer index", () => {
    const a = createPartitioner("hash", 0, 5, 128, (r: [string, number]) => r[0]);
    const b = createPartitioner("hash", 3, 5, 128, (r: [string, number]) => r[0]);
    for (let i = 0; i < 200; i++) expect(a([`w${i}`, 1])).toBe(b([`w${i}`, 99]));
  });

  test("hash partitioning of composite keys uses value equality", () => {
    const part = createPartitioner("hash", 0, 8, 128, (r: { user: string; day: number }) => [r.user, r.day]);
    for (let i = 0; i < 100; i++) {
      expect(part({ user: `u${i}`, day: i % 7 })).toBe(part({ user: `u${i}`, day: i % 7 }));
    }
  });

  test("hash into one consumer sends everything to it without computing a key", () => {
    let keyed = 0;
    const one = createPartitioner("hash", 2, 1, 128, (r: [string, number]) => (keyed++, r[0]));
    for (let i = 0; i < 100; i++) expect(one([`w${i}`, i])).toBe(0);
    expect(keyed).toBe(0);
    const two = createPartitioner("hash", 2, 2, 128, (r: [string, number]) => (keyed++, r[0]));
    for (let i = 0; i < 100; i++) two([`w${i}`, i]);
    expect(keyed).toBe(100);
  });

  test("hash without a key selector is rejected", () => {
    expect(() => createPartitioner("hash", 0, 2, 128)).toThrow();
  });

  test("rebalance cycles over all channels, each once per round", () => {
    for (const n of [1, 2, 3, 5, 8]) {
      for (let producer = 0; producer < n + 2; producer++) {
        const part = createPartitioner("rebalance", producer, n, 128);
        const seq = Array.from({ length: n * 4 }, (_, i) => part(i));
        for (let round = 0; round < 4; round++) {
          const window = seq.slice(round * n, (round + 1) * n).sort((a, b) => a - b);
          expect(window).toEqual(Array.from({ length: n }, (_, i) => i));
        }
        // Round-robin: consecutive records go to consecutive channels.
        for (let i = 1; i < seq.length; i++) expect(seq[i]).toBe((seq[i - 1]! + 1) % n);
      }
    }
  });

  test("rebalance producers start on different channels", () => {
    const n = 4;
    const firsts = Array.from({ length: n }, (_, p) => createPartitioner("rebalance", p, n, 128)(null));
    expect(new Set(firsts).size).toBe(n);
  });

  test("broadcast returns -1 (every channel); forward returns channel 0", () => {
    const b = createPartitioner("broadcast", 2, 4, 128);
    const f = createPartitioner("forward", 2, 1, 128);
    for (let i = 0; i < 10; i++) {
      expect(b({ i })).toBe(-1);
      expect(f({ i })).toBe(0);
    }
  });

  test("an unknown kind is rejected", () => {
    expect(() => createPartitioner("shuffle" as never, 0, 2, 128)).toThrow("shuffle");
  });
});
