import { expect, test } from "bun:test";
import { InternalError, assert } from "../src/util/assert.ts";

test("assert throws an InternalError naming the invariant with its numbers, and builds no message when it holds", () => {
  let built = 0;
  expect(() => assert(1 + 1 === 2, () => `never ${++built}`)).not.toThrow();
  expect(built).toBe(0);
  const free = 5, total = 4;
  let err: unknown;
  try {
    assert(free <= total, () => `buffers free ${free} > total ${total}`);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InternalError);
  expect((err as Error).message).toBe("internal: buffers free 5 > total 4");
});
