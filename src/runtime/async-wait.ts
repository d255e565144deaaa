// The async I/O operator (Flink's AsyncWaitOperator; api/async.ts): each record starts a request of the user's async
// function; at most `capacity` requests are in flight, further records of the batch wait in order, and the task stops
// taking input (waitReady) while the queue is full. Results leave in input order (ordered) or as they complete
// (unordered), but never across a watermark: a watermark is an entry of the queue and goes on once everything before
// it went. Each request has a time-out over all its attempts (the function's timeout(input) gives the results then,
// else the task fails naming the record) and retries by the strategy. At a checkpoint the inputs of every entry not
// yet emitted go into operator state (split on rescale) and are requested again when the task starts from it, so the
// effect downstream is exactly once. Results are emitted from promise callbacks, between the task loop's turns.
import type { PlanNode } from "../api/plan.ts";
import type { AsyncRetryStrategy } from "../api/async.ts";
import type { ListState } from "../state/api.ts";
import { preview } from "./event-time.ts";
import type { ChainOutput, Collector, Operator, OperatorContext } from "./operator.ts";

type AsyncNode = Extract<PlanNode, { kind: "async" }>;

/** Operator state holding the inputs in flight at a checkpoint, as [timestamp, input]. */
const IN_FLIGHT = "__async-in-flight";

interface RecordEntry {
  kind: "record";
  input: unknown;
  ts: number | null;
  done: boolean;
  results: unknown[];
  started: boolean;
  timer: ReturnType<typeof setTimeout> | null;
}
type Entry = RecordEntry | { kind: "watermark"; wm: number };

export class AsyncWaitOperator implements Operator {
  private readonly queue: Entry[] = [];
  /** Requests started and not done. */
  private inFlight = 0;
  /** Records queued but not started (a batch beyond the capacity). */
  private readonly waiting: RecordEntry[] = [];
  private readonly invoke: (input: unknown) => Promise<Iterable<unknown>>;
  private readonly onTimeout: ((input: unknown) => Iterable<unknown> | Promise<Iterable<unknown>>) | null;
  private readonly retry: AsyncRetryStrategy;
  private state: ListState<[number | null, unknown]> | null = null;
  private readyWaiter: { resolve: () => void; reject: (e: unknown) => void; promise: Promise<void> } | null = null;
  private drainedWaiter: { resolve: () => void; reject: (e: unknown) => void } | null = null;
  private failed: unknown = null;
  private disposed = false;

  constructor(
    private readonly node: AsyncNode,
    private readonly ctx: OperatorContext,
    private readonly out: Collector,
    private readonly chain: ChainOutput,
  ) {
    const fn = node.fn;
    this.invoke = typeof fn === "function" ? fn : (x) => fn.asyncInvoke(x);
    this.onTimeout = typeof fn === "object" && typeof fn.timeout === "function" ? (x) => fn.timeout!(x) : null;
    this.retry = node.retry;
  }

  async open(): Promise<void> {
    const fn = this.node.fn;
    if (typeof fn === "object" && typeof fn.open === "function") await fn.open(undefined);
    this.state = this.ctx.operatorState.getListState<[number | null, unknown]>(IN_FLIGHT);
    // Requests in flight at the checkpoint this task starts from: issued again, before any new input.
    const restored = this.state.get();
    this.state.update([]);
    for (const [ts, input] of restored) this.add(input, ts);
  }

  process(record: unknown): void {
    this.add(record, this.ctx.time.ts);
  }

  private add(input: unknown, ts: number | null): void {
    const e: RecordEntry = { kind: "record", input, ts, done: false, results: [], started: false, timer: null };
    this.queue.push(e);
    if (this.inFlight < this.node.capacity) this.start(e);
    else this.waiting.push(e);
  }

  private start(e: RecordEntry): void {
    e.started = true;
    this.inFlight++;
    const deadline = Date.now() + this.node.timeoutMs;
    e.timer = setTimeout(() => this.timedOut(e), this.node.timeoutMs);
    void this.attempt(e, 1, deadline);
  }

  private async attempt(e: RecordEntry, n: number, deadline: number): Promise<void> {
    let results: unknown[] | null = null;
    let error: unknown = null;
    try {
      const produced = await this.invoke(e.input);
      if (produced == null || typeof (produced as Iterable<unknown>)[Symbol.iterator] !== "function") {
        throw new TypeError(`the async function's promise resolved to ${produced === null ? "null" : typeof produced}, expected an array or iterable of outputs`);
      }
      results = [...produced];
    } catch (err) {
      error = err;
    }
    if (e.done || this.disposed) return; // timed out meanwhile
    const r = this.retry;
    const again = n < r.maxAttempts && (error !== null ? r.ifException?.(error) === true : r.ifResult?.(results!) === true);
    if (again) {
      const delay = r.delayMs(n);
      if (Date.now() + delay < deadline) {
        setTimeout(() => {
          if (!e.done && !this.disposed) void this.attempt(e, n + 1, deadline);
        }, delay);
        return;
      }
    }
    if (error !== null) {
      const tries = n > 1 ? ` after ${n} attempts` : "";
      this.fail(new Error(`${this.node.name}: the async function failed${tries} on ${preview(e.input)}: ${(error as Error)?.message ?? String(error)}`, { cause: error }));
      return;
    }
    this.complete(e, results!);
  }

  private timedOut(e: RecordEntry): void {
    e.timer = null;
    if (e.done || this.disposed) return;
    if (this.onTimeout === null) {
      this.fail(new Error(`${this.node.name}: the async function did not complete within ${this.node.timeoutMs} ms on ${preview(e.input)}`));
      return;
    }
    Promise.resolve()
      .then(() => this.onTimeout!(e.input))
      .then(
        (produced) => this.complete(e, [...produced]),
        (err) => this.fail(new Error(`${this.node.name}: the timeout function threw on ${preview(e.input)}: ${(err as Error)?.message ?? String(err)}`, { cause: err })),
      );
  }

  private complete(e: RecordEntry, results: unknown[]): void {
    if (e.done || this.disposed) return;
    e.done = true;
    e.results = results;
    if (e.timer !== null) clearTimeout(e.timer);
    this.inFlight--;
    const next = this.waiting.shift();
    if (next) this.start(next);
    this.emitReady();
    this.ctx.afterAsyncOutput?.();
    this.signal();
  }

  /** Emits what may go: the done head entries (ordered), or done entries before the first watermark (unordered). */
  private emitReady(): void {
    const q = this.queue;
    const time = this.ctx.time;
    for (;;) {
      const head = q[0];
      if (head === undefined) return;
      if (head.kind === "watermark") {
        q.shift();
        this.chain.watermark(head.wm);
        continue;
      }
      if (this.node.ordered) {
        if (!head.done) return;
        q.shift();
        time.ts = head.ts;
        for (const r of head.results) this.out(r);
        continue;
      }
      // Unordered: every done record before the first watermark goes now.
      let i = 0;
      while (i < q.length && q[i]!.kind === "record") {
        const e = q[i] as RecordEntry;
        if (e.done) {
          q.splice(i, 1);
          time.ts = e.ts;
          for (const r of e.results) this.out(r);
        } else i++;
      }
      if (q[0]?.kind !== "watermark") return;
    }
  }

  processWatermark(wm: number): void {
    this.queue.push({ kind: "watermark", wm });
    this.emitReady();
  }

  /** The task waits while the queue holds more than the capacity (records not started yet). */
  waitReady(): Promise<void> | null {
    if (this.failed !== null) return Promise.reject(this.failed);
    if (this.waiting.length === 0 && this.inFlight < this.node.capacity) return null;
    if (!this.readyWaiter) {
      let resolve!: () => void, reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => ((resolve = res), (reject = rej)));
      this.readyWaiter = { resolve, reject, promise };
    }
    return this.readyWaiter.promise;
  }

  private signal(): void {
    if (this.readyWaiter && this.waiting.length === 0 && this.inFlight < this.node.capacity) {
      const w = this.readyWaiter;
      this.readyWaiter = null;
      w.resolve();
    }
    if (this.drainedWaiter && this.queue.length === 0) {
      const d = this.drainedWaiter;
      this.drainedWaiter = null;
      d.resolve();
    }
  }

  private fail(err: unknown): void {
    if (this.failed !== null) return;
    this.failed = err;
    if (this.readyWaiter) {
      this.readyWaiter.reject(err);
      this.readyWaiter = null;
    }
    if (this.drainedWaiter) {
      this.drainedWaiter.reject(err);
      this.drainedWaiter = null;
    }
    this.ctx.fail?.(err);
  }

  /** The inputs of every entry not emitted yet: requested again after a restore from this checkpoint. */
  snapshotState(): void {
    const pending: [number | null, unknown][] = [];
    for (const e of this.queue) if (e.kind === "record") pending.push([e.ts, e.input]);
    this.state!.update(pending);
  }

  /** End of input: every request completes (or fails the task) and its results go out before the task ends. */
  async endInput(): Promise<void> {
    if (this.failed === null && this.queue.length > 0) {
      // Settled by signal() once the queue is empty, or by fail().
      await new Promise<void>((resolve, reject) => (this.drainedWaiter = { resolve, reject }));
    }
    if (this.failed !== null) throw this.failed;
    const fn = this.node.fn;
    if (typeof fn === "object" && typeof fn.close === "function") fn.close();
  }

  dispose(): void {
    this.disposed = true;
    for (const e of this.queue) if (e.kind === "record" && e.timer !== null) clearTimeout(e.timer);
  }
}
