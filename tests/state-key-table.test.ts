// The heap backend's KeyTable (src/state/key-table.ts) against a JS Map: the same answers for random operations,
// number keys of every kind (-0, fractions, large, negative), a switch to a Map on the first other key, and
// iteration that survives deletes and inserts in between.
import { expect, test } from "bun:test";
import { KeyTable } from "../src/state/key-table.ts";
import type { HeapKey } from "../src/state/serde.ts";

function lcg(seed: number) {
  return () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

const sorted = (xs: Iterable<[HeapKey, unknown]>) => [...xs].map(([k, v]) => `${typeof k}:${String(k)}=${String(v)}`).sort();

test("random sets, gets and deletes agree with a Map, through growth, tombstones and shrinking", () => {
  const rand = lcg(7);
  const t = new KeyTable();
  const m = new Map<HeapKey, unknown>();
  const pool = [0, -0, 1, -1, 0.5, 1e15, -1e300, 2 ** 31, 2 ** 31 - 1, Number.MAX_SAFE_INTEGER, 1e-300];
  for (let i = 0; i < 2000; i++) pool.push(Math.floor(rand() * 5000) - 2500, rand() * 100);
  for (let step = 0; step < 200_000; step++) {
    const k = pool[Math.floor(rand() * pool.length)]!;
    const op = rand();
    if (op < 0.55) {
      t.set(k, step);
      m.set(k, step);
    } else if (op < 0.85) {
      expect(t.delete(k)).toBe(m.delete(k));
    } else {
      expect(t.get(k)).toBe(m.get(k));
      expect(t.has(k)).toBe(m.has(k));
    }
    if (step % 20_000 === 0) {
      expect(t.size).toBe(m.size);
      expect(sorted(t.entries())).toEqual(sorted(m.entries()));
    }
  }
  expect(t.size).toBe(m.size);
  expect(sorted(t)).toEqual(sorted(m.entries()));
  expect(t.get(-0)).toBe(m.get(0));
  expect(t.get("0")).toBeUndefined(); // a string key is not the number
});

test("the first key that is not a number turns it into a Map, with everything kept", () => {
  for (const other of ["a", NaN, true, null, undefined, 5n] as HeapKey[]) {
    const t = new KeyTable();
    for (let i = 0; i < 100; i++) t.set(i, i * 2);
    t.set(other, "x");
    expect(t.size).toBe(101);
    expect(t.get(other)).toBe("x");
    expect(t.get(99)).toBe(198);
    expect(t.delete(5)).toBe(true);
    expect(t.get(5)).toBeUndefined();
    expect(t.size).toBe(100);
  }
});

test("an iterator goes on over deletes of visited entries and sees every entry that stays", () => {
  const t = new KeyTable();
  for (let i = 0; i < 10_000; i++) t.set(i, i);
  const seen = new Set<HeapKey>();
  for (const [k] of t) {
    seen.add(k);
    if ((k as number) % 2 === 0) t.delete(k);
  }
  expect(seen.size).toBe(10_000);
  expect(t.size).toBe(5000);
  expect([...t.values()].every((v) => (v as number) % 2 === 1)).toBe(true);
  // Inserts during iteration resize the table: the iteration still ends (entries may be skipped or repeated).
  const it = t.entries();
  let n = 0;
  for (let r = it.next(); !r.done && n < 100_000; r = it.next()) {
    n++;
    if (n === 10) for (let i = 20_000; i < 40_000; i++) t.set(i, i);
  }
  expect(n).toBeLessThan(100_000);
});
