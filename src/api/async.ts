// Async I/O (as Flink's AsyncDataStream, AsyncFunction and AsyncRetryStrategies): a function that asks an external
// service per record, with many requests in flight, results in input order (orderedWait) or as they complete
// (unorderedWait, never across a watermark), a capacity that back-pressures, a time-out and retries. The requests in
// flight at a checkpoint are in its state and are issued again after a restore. The operator is runtime/async-wait.ts.

/**
 * An async function: a function of the input returning a promise of the outputs (an array or any iterable), or an
 * object with asyncInvoke (and optionally timeout(input), called instead of failing when the time-out passes, and
 * open/close as a rich function).
 */
export type AsyncFunction<IN, OUT> =
  | ((input: IN) => Promise<Iterable<OUT>>)
  | {
      asyncInvoke(input: IN): Promise<Iterable<OUT>>;
      timeout?(input: IN): Iterable<OUT> | Promise<Iterable<OUT>>;
      open?(ctx: unknown): void | Promise<void>;
      close?(): void;
    };

/** When and how often a failed or unwanted attempt is tried again (within the time-out). */
export interface AsyncRetryStrategy {
  readonly kind: "asyncRetryStrategy";
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** Delay before attempt n + 1 (n >= 1), in ms. */
  delayMs(attempt: number): number;
  /** Whether a result is retried (e.g. an empty one), and whether an error is. */
  ifResult: ((result: unknown[]) => boolean) | null;
  ifException: ((error: unknown) => boolean) | null;
}

interface Predicates {
  /** Retry when this holds for a result (Flink's RetryPredicates.EMPTY_RESULT_PREDICATE: (r) => r.length === 0). */
  ifResult?: (result: unknown[]) => boolean;
  /** Retry when this holds for an error (default: every error). */
  ifException?: (error: unknown) => boolean;
}

function strategy(maxAttempts: number, delayMs: (n: number) => number, p: Predicates, what: string): AsyncRetryStrategy {
  if (!Number.isSafeInteger(maxAttempts) || maxAttempts < 1) throw new Error(`${what}: expected maxAttempts >= 1, got ${maxAttempts}`);
  if (p.ifResult !== undefined && typeof p.ifResult !== "function") throw new Error(`${what}: ifResult must be a function`);
  if (p.ifException !== undefined && typeof p.ifException !== "function") throw new Error(`${what}: ifException must be a function`);
  return { kind: "asyncRetryStrategy", maxAttempts, delayMs, ifResult: p.ifResult ?? null, ifException: p.ifException ?? (() => true) };
}

const ms = (n: number, what: string) => {
  if (!Number.isFinite(n) || n < 0) throw new Error(`${what}: expected a number of milliseconds >= 0, got ${n}`);
  return n;
};

export const AsyncRetryStrategies = {
  /** No retry: an error fails the task at once (the default). */
  NO_RETRY: { kind: "asyncRetryStrategy", maxAttempts: 1, delayMs: () => 0, ifResult: null, ifException: null } as AsyncRetryStrategy,
  /** Up to maxAttempts attempts, delayMs apart. */
  fixedDelay(maxAttempts: number, delayMs: number, predicates: Predicates = {}): AsyncRetryStrategy {
    const d = ms(delayMs, "AsyncRetryStrategies.fixedDelay");
    return strategy(maxAttempts, () => d, predicates, "AsyncRetryStrategies.fixedDelay");
  },
  /** Up to maxAttempts attempts; the delay starts at initialDelayMs and grows by multiplier up to maxDelayMs. */
  exponentialBackoff(maxAttempts: number, initialDelayMs: number, maxDelayMs: number, multiplier: number, predicates: Predicates = {}): AsyncRetryStrategy {
    const what = "AsyncRetryStrategies.exponentialBackoff";
    const first = ms(initialDelayMs, what);
    const max = ms(maxDelayMs, what);
    if (!Number.isFinite(multiplier) || multiplier < 1) throw new Error(`${what}: expected a multiplier >= 1, got ${multiplier}`);
    return strategy(maxAttempts, (n) => Math.min(max, first * multiplier ** (n - 1)), predicates, what);
  },
};

/** Checked when the job is built, naming the operator's method. */
export function checkAsyncFunction(fn: unknown, what: string): void {
  if (typeof fn === "function") return;
  const o = fn as Record<string, unknown> | null;
  if (typeof o !== "object" || o === null || typeof o.asyncInvoke !== "function") throw new Error(`${what}: expected a function (input) => Promise<outputs> or an object with asyncInvoke(input)`);
  if (o.timeout !== undefined && typeof o.timeout !== "function") throw new Error(`${what}: timeout must be a method (input) => outputs`);
}
