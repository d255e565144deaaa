// The operators of a chain. Each pushes its output to the next one's process(); the chain's tail pushes
// to the task's record writers. Records move between chained operators as plain objects (no copy).
import * as fs from "node:fs";
import * as path from "node:path";
import type { PlanNode } from "../api/plan.ts";
import { canonicalKey } from "../state/key-groups.ts";

export type Collector = (record: unknown) => void;

export interface Operator {
  process(record: unknown): void;
  /** Called after each input batch or source chunk: a place to flush buffered output. */
  flush?(): void;
  /** End of all input: emit what is held back, release resources. */
  endInput?(): void;
}

export interface OperatorContext {
  subtaskIndex: number;
  parallelism: number;
  taskName: string;
  runtimeMode: "streaming" | "batch";
  /** Looks up a plan node by id (for the key selector of a keyed operator). */
  node(id: number): PlanNode;
}

export function createOperator(node: PlanNode, ctx: OperatorContext, out: Collector): Operator {
  switch (node.kind) {
    case "map": {
      const fn = node.fn;
      return { process: (r) => out(fn(r)) };
    }
    case "filter": {
      const fn = node.fn;
      return { process: (r) => void (fn(r) && out(r)) };
    }
    case "flatMap": {
      const fn = node.fn;
      return {
        process(r) {
          const produced = fn(r);
          if (produced == null || typeof produced[Symbol.iterator] !== "function") {
            throw new TypeError(`flatMap function returned ${produced === null ? "null" : typeof produced}, expected an array or iterable`);
          }
          for (const x of produced) out(x);
        },
      };
    }
    case "reduce": {
      const keyNode = ctx.node(node.keyNode);
      if (keyNode.kind !== "keyBy") throw new Error(`reduce node ${node.id} is not keyed`);
      if (node.sumField !== undefined) return new KeyedSum(keyNode.fn, node.sumField, ctx.runtimeMode === "batch", out);
      return new KeyedReduce(keyNode.fn, node.fn, ctx.runtimeMode === "batch", out);
    }
    case "sink":
      return createSink(node, ctx);
    default:
      throw new Error(`plan node ${node.id} (${node.kind}) cannot run as an operator`);
  }
}

/** Rolling reduce per key. Holds state on the heap until the state layer lands. */
class KeyedReduce implements Operator {
  private readonly state = new Map<unknown, unknown>();
  constructor(
    private readonly key: (r: any) => unknown,
    private readonly reduce: (a: any, b: any) => any,
    private readonly emitAtEndOnly: boolean,
    private readonly out: Collector,
  ) {}
  process(record: unknown): void {
    const k = this.key(record);
    const id = typeof k === "object" && k !== null ? canonicalKey(k) : k;
    const prev = this.state.get(id);
    const next = prev === undefined && !this.state.has(id) ? record : this.reduce(prev, record);
    this.state.set(id, next);
    if (!this.emitAtEndOnly) this.out(next);
  }
  endInput(): void {
    if (this.emitAtEndOnly) for (const v of this.state.values()) this.out(v);
  }
}

/**
 * Keyed sum without a copy per record: the state holds its own copy of the first record of a key and adds
 * into it; what it emits (streaming) is a copy, so downstream never sees the state change under it.
 */
class KeyedSum implements Operator {
  private readonly state = new Map<unknown, any>();
  constructor(
    private readonly key: (r: any) => unknown,
    private readonly field: number | string,
    private readonly emitAtEndOnly: boolean,
    private readonly out: Collector,
  ) {}
  process(record: any): void {
    const k = this.key(record);
    const id = typeof k === "object" && k !== null ? canonicalKey(k) : k;
    const acc = this.state.get(id);
    let next: any;
    if (typeof record !== "object" || record === null) {
      next = acc === undefined ? record : acc + record;
      this.state.set(id, next);
    } else if (acc === undefined) {
      next = Array.isArray(record) ? record.slice() : { ...record };
      this.state.set(id, next);
    } else {
      next = acc;
      next[this.field] += record[this.field];
    }
    if (!this.emitAtEndOnly) this.out(typeof next === "object" ? (Array.isArray(next) ? next.slice() : { ...next }) : next);
  }
  endInput(): void {
    if (this.emitAtEndOnly) for (const v of this.state.values()) this.out(v);
  }
}

/** How sinks print a record: tuples (arrays) as (a,b) like Flink, objects as JSON. */
export function formatRecord(r: unknown): string {
  if (Array.isArray(r)) return `(${r.map((x) => (typeof x === "object" && x !== null ? JSON.stringify(x) : String(x))).join(",")})`;
  if (typeof r === "object" && r !== null) return JSON.stringify(r);
  return String(r);
}

function createSink(node: Extract<PlanNode, { kind: "sink" }>, ctx: OperatorContext): Operator {
  const spec = node.sink;
  switch (spec.type) {
    case "function": {
      const fn = spec.fn;
      if (typeof fn === "function") return { process: (r) => void fn(r) };
      fn.open?.({ subtaskIndex: ctx.subtaskIndex, parallelism: ctx.parallelism, taskName: ctx.taskName });
      return { process: (r) => fn.invoke(r), endInput: () => fn.close?.() };
    }
    case "print": {
      const prefix = (spec.prefix ? `${spec.prefix}:` : "") + (ctx.parallelism > 1 ? `${ctx.subtaskIndex + 1}> ` : spec.prefix ? " " : "");
      return new LineSink((text) => void process.stdout.write(text), prefix);
    }
    case "textFile": {
      let file = spec.path;
      if (ctx.parallelism > 1) {
        fs.mkdirSync(spec.path, { recursive: true });
        file = path.join(spec.path, String(ctx.subtaskIndex + 1));
      } else {
        fs.mkdirSync(path.dirname(path.resolve(spec.path)), { recursive: true });
      }
      const fd = fs.openSync(file, "w");
      return new LineSink((text) => fs.writeSync(fd, text), "", () => fs.closeSync(fd));
    }
  }
}

class LineSink implements Operator {
  private lines: string[] = [];
  constructor(
    private readonly write: (text: string) => void,
    private readonly prefix: string,
    private readonly close?: () => void,
  ) {}
  process(r: unknown): void {
    this.lines.push(this.prefix + formatRecord(r));
    if (this.lines.length >= 4096) this.flush();
  }
  flush(): void {
    if (this.lines.length === 0) return;
    this.write(this.lines.join("\n") + "\n");
    this.lines = [];
  }
  endInput(): void {
    this.flush();
    this.close?.();
  }
}
