// The state serializer (src/state/serde.ts): values decode to what was encoded, on both decode paths (small values
// through the scratch copy, large ones directly), and nothing decoded shares memory with the scratch array or with
// the bytes it came from (a decoded Uint8Array survives later decodes and changes to its source unchanged).
import { expect, test } from "bun:test";
import { decode, decodeMany, encode, encodeMany, heapKeyOfBytes, keyBytesOfHeapKey, transientKeyBytes } from "../src/state/serde.ts";
import { rng } from "./helpers.ts";

function randomValue(rand: () => number, depth: number): unknown {
  const pick = Math.floor(rand() * (depth > 2 ? 7 : 10));
  switch (pick) {
    case 0:
      return Math.floor(rand() * 2 ** 32) - 2 ** 31;
    case 1:
      // (-0 is left out: msgpackr writes it as the integer 0, on both paths alike.)
      return [NaN, 0.5, 1e300, -Infinity, Number.MAX_SAFE_INTEGER, -1.5e-300][Math.floor(rand() * 6)];
    case 2:
      return Array.from({ length: Math.floor(rand() * 40) }, () => {
        const cp = Math.floor(rand() * 0x1ffff);
        return String.fromCodePoint(cp >= 0xd800 && cp <= 0xdfff ? cp - 0x800 : cp); // no lone surrogates: UTF-8 cannot hold them
      }).join("");
    case 3:
      return Uint8Array.from({ length: Math.floor(rand() * (rand() < 0.1 ? 20000 : 100)) }, () => Math.floor(rand() * 256));
    case 4:
      return rand() < 0.5 ? null : rand() < 0.5;
    case 5:
      return BigInt(Math.floor(rand() * 2 ** 50)) * 1000003n;
    case 6:
      return "x".repeat(Math.floor(rand() * 12000));
    case 7:
      return Array.from({ length: Math.floor(rand() * 6) }, () => randomValue(rand, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 5); i > 0; i--) o[`k${Math.floor(rand() * 100)}`] = randomValue(rand, depth + 1);
      return o;
    }
  }
}

test("random values round-trip through encode and decode, small and large", () => {
  const rand = rng(5);
  let small = 0;
  let large = 0;
  for (let i = 0; i < 3000; i++) {
    const v = randomValue(rand, 0);
    const bytes = encode(v);
    if (bytes.length > 8192) large++;
    else small++;
    expect(decode(bytes)).toEqual(v);
  }
  // Lists (back-to-back encodings, as list state stores them), short and long.
  for (let i = 0; i < 300; i++) {
    const vs = Array.from({ length: 1 + Math.floor(rand() * (i % 10 === 0 ? 60 : 5)) }, () => randomValue(rand, 1));
    expect(decodeMany(encodeMany(vs))).toEqual(vs);
  }
  expect(small).toBeGreaterThan(1000);
  expect(large).toBeGreaterThan(20);
});

test("a decoded byte array is its own copy: later decodes and changes to the source leave it as it was", () => {
  const a = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  const bytesA = encode({ payload: a });
  const gotA = decode(bytesA) as { payload: Uint8Array };
  const gotB = decode(encode({ payload: Uint8Array.from([9, 9, 9, 9, 9, 9, 9, 9]) })) as { payload: Uint8Array };
  bytesA.fill(0);
  expect([...gotA.payload]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  expect([...gotB.payload]).toEqual([9, 9, 9, 9, 9, 9, 9, 9]);
  // A decoded value changed in place does not show in the next decode of the same bytes.
  const bytesC = encode([Uint8Array.from([4, 4])]);
  const c1 = decode(bytesC) as Uint8Array[];
  c1[0]![0] = 77;
  expect([...(decode(bytesC) as Uint8Array[])[0]!]).toEqual([4, 4]);
});

test("number keys are the bytes msgpackr writes for them, allocated or in the scratch array", () => {
  // The write-back path encodes user keys without msgpackr (writeIntKey); stored keys must not change with it.
  const rand = rng(19);
  const edges = [0, -0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, 0.5, -1.5, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 53)];
  const values = [...edges];
  for (let i = 0; i < 20_000; i++) values.push(Math.floor((rand() - 0.5) * 2 ** (rand() * 40)));
  let previous: Uint8Array = new Uint8Array(0);
  for (const v of values) {
    const want = [...encode(Object.is(v, -0) ? 0 : v)];
    const kept = keyBytesOfHeapKey(v);
    const transient = transientKeyBytes(v);
    expect([...kept]).toEqual(want);
    expect([...transient]).toEqual(want);
    expect(heapKeyOfBytes(kept)).toBe(Object.is(v, -0) ? 0 : v);
    // An allocated key is its own: a later transient key does not change it.
    expect(previous).not.toBe(kept);
    previous = kept;
  }
  const a = keyBytesOfHeapKey(300);
  transientKeyBytes(7);
  expect([...a]).toEqual([0xcd, 1, 44]);
});
