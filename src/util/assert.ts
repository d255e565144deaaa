// Invariants are asserted, not clamped: a budget that does not add up (a buffer recycled twice, credit or ring
// indices out of range, a pool total exceeded) is a bug, and hiding it makes the next failure stranger. A violated
// invariant throws "internal: <what>" with the numbers; it fails the task or connection where it happens.

export class InternalError extends Error {
  override name = "InternalError";
}

/** Throws `internal: <message()>` when cond is false. message is a function so that the happy path builds no string. */
export function assert(cond: unknown, message: () => string): asserts cond {
  if (!cond) throw new InternalError(`internal: ${message()}`);
}
