import { describe, expect, test } from "bun:test";
import { StreamExecutionEnvironment } from "../src/api/environment.ts";
import { JobGraphError, buildJobGraph, planFingerprint } from "../src/api/job-graph.ts";
import { requiredSlots, type JobGraph } from "../src/graph/job-graph.ts";
import { describePlan, type NodeDescription, type Plan } from "../src/api/plan.ts";

const DEFAULT_P = 3;

function graphOf(build: (env: StreamExecutionEnvironment) => void, defaultParallelism = DEFAULT_P): { graph: JobGraph; plan: Plan } {
  const env = new StreamExecutionEnvironment();
  build(env);
  const plan = env.getPlan();
  return { graph: buildJobGraph(describePlan(plan), plan.settings, defaultParallelism, "test-job"), plan };
}

function jobGraphErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(JobGraphError);
    return (err as Error).message;
  }
  throw new Error("expected a JobGraphError, nothing was thrown");
}

/** Finds the plan node id with the given kind (and optional name), failing if it is not unique. */
function nodeId(plan: Plan, kind: string, name?: string): number {
  const ids = plan.nodes.filter((n) => n.kind === kind && (name === undefined || n.name === name)).map((n) => n.id);
  expect(ids.length).toBe(1);
  return ids[0]!;
}

/** Invariants any JobGraph must satisfy, whatever the plan. */
function checkInvariants(graph: JobGraph, plan: Plan): void {
  const physical = plan.nodes.filter((n) => n.kind !== "keyBy" && n.kind !== "partition" && n.kind !== "union").map((n) => n.id);
  // Every physical operator is in exactly one vertex.
  const all = graph.vertices.flatMap((v) => v.operatorIds).sort((a, b) => a - b);
  expect(all).toEqual([...physical].sort((a, b) => a - b));
  graph.vertices.forEach((v, i) => {
    expect(v.id).toBe(i);
    expect(v.operatorIds.length).toBeGreaterThan(0);
    expect(v.isSource).toBe(plan.nodes[v.operatorIds[0]!]!.kind === "source");
    expect(v.name).toBe(v.operatorIds.map((id) => plan.nodes[id]!.name).join(" -> "));
  });
  graph.edges.forEach((e, i) => {
    expect(e.id).toBe(i);
    expect(graph.vertices[e.source]).toBeDefined();
    expect(graph.vertices[e.target]).toBeDefined();
    expect(e.source).not.toBe(e.target);
    if (e.partitioner === "forward") expect(graph.vertices[e.source]!.parallelism).toBe(graph.vertices[e.target]!.parallelism);
    if (e.partitioner === "hash") expect(plan.nodes[e.keyNodeId!]!.kind).toBe("keyBy");
    else expect(e.keyNodeId).toBeUndefined();
  });
  expect(graph.maxParallelism).toBe(plan.settings.maxParallelism);
  expect(graph.planFingerprint).toBe(planFingerprint(describePlan(plan)));
}

describe("describePlan", () => {
  test("strips functions and data, keeps the shape", () => {
    const env = new StreamExecutionEnvironment();
    const secret = { password: "hunter2" };
    env
      .fromCollection([secret])
      .map((x) => x)
      .rebalance()
      .keyBy((x) => x.password)
      .reduce((a) => a)
      .addSink(() => {});
    const plan = env.getPlan();
    const desc = describePlan(plan);
    expect(desc.length).toBe(plan.nodes.length);
    const json = JSON.stringify(desc);
    expect(json).not.toContain("hunter2");
    // A round trip through JSON loses nothing: no functions or other non-data values.
    expect(JSON.parse(json)).toEqual(desc);
    const hasFunction = (v: unknown): boolean =>
      typeof v === "function" || (typeof v === "object" && v !== null && Object.values(v).some(hasFunction));
    expect(hasFunction(desc)).toBe(false);
    expect(desc.map((d) => d.kind)).toEqual(["source", "map", "partition", "keyBy", "reduce", "sink"]);
    expect(desc[0]!.sourceType).toBe("collection");
    expect(desc[2]!.partitioner).toBe("rebalance");
    expect(desc[5]!.sinkType).toBe("function");
    expect(desc.map((d) => d.inputs)).toEqual([[], [0], [1], [2], [3], [4]]);
  });

  test("inputs are copies: editing the description does not change the plan", () => {
    const env = new StreamExecutionEnvironment();
    env.fromSequence(1, 2).map((x) => x).print();
    const plan = env.getPlan();
    const desc = describePlan(plan);
    desc[1]!.inputs.push(99);
    expect(plan.nodes[1]!.inputs).toEqual([0]);
  });
});

describe("buildJobGraph", () => {
  test("word count: two vertices at equal parallelism joined by one hash edge carrying the keyBy node", () => {
    const { graph, plan } = graphOf((env) => {
      env.setParallelism(2);
      env
        .readTextFile("/tmp/in.txt")
        .flatMap((l) => l.split(" "))
        .filter((w) => w.length > 0)
        .map((w): [string, number] => [w, 1])
        .keyBy((p) => p[0])
        .reduce((a, b) => [a[0], a[1] + b[1]])
        .print();
    });
    checkInvariants(graph, plan);
    const src = nodeId(plan, "source");
    const keyBy = nodeId(plan, "keyBy");
    expect(graph.vertices.map((v) => v.operatorIds)).toEqual([
      [src, nodeId(plan, "flatMap"), nodeId(plan, "filter"), nodeId(plan, "map")],
      [nodeId(plan, "reduce"), nodeId(plan, "sink")],
    ]);
    expect(graph.vertices.map((v) => v.parallelism)).toEqual([2, 2]);
    expect(graph.vertices.map((v) => v.isSource)).toEqual([true, false]);
    expect(graph.edges).toEqual([{ id: 0, source: 0, target: 1, partitioner: "hash", keyNodeId: keyBy }]);
    expect(requiredSlots(graph)).toBe(2);
    expect(graph.name).toBe("test-job");
  });

  test("job settings reach the graph; setJobName overrides the given name", () => {
    const { graph } = graphOf((env) => {
      env.setMaxParallelism(64).setRuntimeMode("batch").setBufferTimeout(0).setJobName("named");
      env.fromSequence(1, 10).print();
    });
    expect(graph.name).toBe("named");
    expect(graph.maxParallelism).toBe(64);
    expect(graph.runtimeMode).toBe("batch");
    expect(graph.bufferTimeoutMs).toBe(0);
  });

  test("parallelism: operator's own, else the job's, else the default", () => {
    const { graph, plan } = graphOf((env) => {
      env.fromSequence(1, 10).map((x) => x).print().setParallelism(5);
    }, 4);
    checkInvariants(graph, plan);
    expect(graph.vertices.map((v) => v.parallelism)).toEqual([4, 5]);
    const withJob = graphOf((env) => {
      env.setParallelism(6);
      env.fromSequence(1, 10).map((x) => x).print();
    }, 4).graph;
    expect(withJob.vertices.map((v) => v.parallelism)).toEqual([6]);
  });

  test("different parallelism between map and sink: rebalance edge, no chaining across it", () => {
    const { graph, plan } = graphOf((env) => {
      env.setParallelism(2);
      env.fromSequence(1, 100).map((x) => x * 2).print().setParallelism(1);
    });
    checkInvariants(graph, plan);
    expect(graph.vertices.map((v) => [v.operatorIds, v.parallelism])).toEqual([
      [[nodeId(plan, "source"), nodeId(plan, "map")], 2],
      [[nodeId(plan, "sink")], 1],
    ]);
    expect(graph.edges).toEqual([{ id: 0, source: 0, target: 1, partitioner: "rebalance" }]);
  });

  test("disableChaining on an operator splits the chain before and after it", () => {
    const { graph, plan } = graphOf((env) => {
      env
        .fromSequence(1, 100)
        .map((x) => x + 1)
        .disableChaining()
        .filter((x) => x > 3)
        .print();
    });
    checkInvariants(graph, plan);
    expect(graph.vertices.map((v) => v.operatorIds)).toEqual([
      [nodeId(plan, "source")],
      [nodeId(plan, "map")],
      [nodeId(plan, "filter"), nodeId(plan, "sink")],
    ]);
    expect(graph.edges.map((e) => [e.source, e.target, e.partitioner])).toEqual([
      [0, 1, "forward"],
      [1, 2, "forward"],
    ]);
    expect(graph.vertices.every((v) => v.parallelism === DEFAULT_P)).toBe(true);
  });

  test("without disableChaining the same pipeline is one vertex", () => {
    const { graph, plan } = graphOf((env) => {
      env.fromSequence(1, 100).map((x) => x + 1).filter((x) => x > 3).print();
    });
    checkInvariants(graph, plan);
    expect(graph.vertices.length).toBe(1);
    expect(graph.vertices[0]!.operatorIds).toEqual([0, 1, 2, 3]);
    expect(graph.edges).toEqual([]);
    expect(requiredSlots(graph)).toBe(DEFAULT_P);
  });

  test("union of two sources feeding a map: the map has one edge from each source, nothing chains into it", () => {
    const { graph, plan } = graphOf((env) => {
      const a = env.fromSequence(1, 10).name("A");
      const b = env.fromSequence(11, 20).name("B");
      a.union(b).map((x) => x).print();
    });
    checkInvariants(graph, plan);
    const a = nodeId(plan, "source", "A");
    const b = nodeId(plan, "source", "B");
    const map = nodeId(plan, "map");
    const vOf = (id: number) => graph.vertices.findIndex((v) => v.operatorIds.includes(id));
    expect(graph.vertices.length).toBe(3);
    expect(graph.vertices[vOf(a)]!.operatorIds).toEqual([a]);
    expect(graph.vertices[vOf(b)]!.operatorIds).toEqual([b]);
    expect(graph.vertices[vOf(map)]!.operatorIds).toEqual([map, nodeId(plan, "sink")]);
    const edges: (string | number)[][] = graph.edges.map((e) => [e.source, e.target, e.partitioner]).sort();
    expect(edges).toEqual([[vOf(a), vOf(map), "forward"], [vOf(b), vOf(map), "forward"]].sort());
  });

  describe("a keyBy at parallelism 1 (pipeline.operator-chaining.keyed-at-parallelism-one)", () => {
    const keyedSum = (env: StreamExecutionEnvironment, opts: { sumParallelism?: number; disable?: boolean; newChain?: boolean } = {}) => {
      const sum = env
        .fromSequence(1, 100)
        .map((x): [number, number] => [x % 7, 1])
        .keyBy((t) => t[0])
        .sum(1);
      if (opts.sumParallelism !== undefined) sum.setParallelism(opts.sumParallelism);
      if (opts.disable) sum.disableChaining();
      if (opts.newChain) sum.startNewChain();
      sum.print();
    };
    const shape = (graph: JobGraph) => ({ chains: graph.vertices.map((v) => v.operatorIds.length), partitioners: graph.edges.map((e) => e.partitioner) });

    test("chains into its producer's task when both sides run at parallelism 1: one vertex, no edge, the keyed operator marked keyed", () => {
      const { graph, plan } = graphOf((env) => keyedSum(env), 1);
      checkInvariants(graph, plan);
      expect(shape(graph)).toEqual({ chains: [4], partitioners: [] });
      expect(graph.vertices[0]!.operators!.filter((o) => o.keyed).map((o) => o.nodeId)).toEqual([nodeId(plan, "reduce")]);
    });

    test("stays an exchange at parallelism 2, with a consumer at another parallelism, when turned off, after disableChaining or startNewChain", () => {
      expect(shape(graphOf((env) => keyedSum(env), 2).graph)).toEqual({ chains: [2, 2], partitioners: ["hash"] });
      expect(shape(graphOf((env) => keyedSum(env, { sumParallelism: 2 }), 1).graph)).toEqual({ chains: [2, 1, 1], partitioners: ["hash", "rebalance"] });
      const env = new StreamExecutionEnvironment();
      keyedSum(env);
      const plan = env.getPlan();
      const off = buildJobGraph(describePlan(plan), plan.settings, 1, "j", { chainKeyedAtParallelismOne: false });
      expect(shape(off)).toEqual({ chains: [2, 2], partitioners: ["hash"] });
      expect(shape(graphOf((e) => keyedSum(e, { disable: true }), 1).graph)).toEqual({ chains: [2, 1, 1], partitioners: ["hash", "forward"] });
      // startNewChain (Flink's): a new chain at the sum, which the sink still joins.
      expect(shape(graphOf((e) => keyedSum(e, { newChain: true }), 1).graph)).toEqual({ chains: [2, 2], partitioners: ["hash"] });
    });

    test("operator ids are the same in either shape, so a savepoint of one restores into the other", () => {
      const ids = (p: number) => graphOf((env) => keyedSum(env), p).graph.vertices.flatMap((v) => v.operators!.map((o) => o.id));
      expect(ids(1)).toEqual(ids(2));
    });
  });

  test("union with a non-parallel collection source: that input is rebalanced", () => {
    const { graph, plan } = graphOf((env) => {
      const a = env.fromElements(1, 2, 3);
      const b = env.fromSequence(11, 20);
      a.union(b).map((x) => x).print();
    });
    checkInvariants(graph, plan);
    const vOf = (id: number) => graph.vertices.findIndex((v) => v.operatorIds.includes(id));
    const map = vOf(nodeId(plan, "map"));
    const byKind = new Map(graph.edges.map((e) => [plan.nodes[graph.vertices[e.source]!.operatorIds[0]!]!.name, e]));
    expect(byKind.get("Collection Source")).toMatchObject({ target: map, partitioner: "rebalance" });
    expect(byKind.get("Sequence Source")).toMatchObject({ target: map, partitioner: "forward" });
  });

  test("a union followed by keyBy gives every input a hash edge with the key node", () => {
    const { graph, plan } = graphOf((env) => {
      const a = env.fromSequence(1, 10);
      const b = env.fromSequence(11, 20);
      a.union(b).keyBy((x) => x % 3).reduce((x, y) => x + y).print();
    });
    checkInvariants(graph, plan);
    const keyBy = nodeId(plan, "keyBy");
    expect(graph.edges.length).toBe(2);
    for (const e of graph.edges) expect(e).toMatchObject({ partitioner: "hash", keyNodeId: keyBy });
  });

  test("explicit rebalance and broadcast give those edges even at equal parallelism", () => {
    for (const kind of ["rebalance", "broadcast"] as const) {
      const { graph, plan } = graphOf((env) => {
        const s = env.fromSequence(1, 100);
        (kind === "rebalance" ? s.rebalance() : s.broadcast()).map((x) => x).print();
      });
      checkInvariants(graph, plan);
      expect(graph.vertices.map((v) => v.operatorIds)).toEqual([[0], [nodeId(plan, "map"), nodeId(plan, "sink")]]);
      expect(graph.edges).toEqual([{ id: 0, source: 0, target: 1, partitioner: kind }]);
    }
  });

  test("explicit forward at equal parallelism chains", () => {
    const { graph, plan } = graphOf((env) => {
      env.fromSequence(1, 100).forward().map((x) => x).print();
    });
    checkInvariants(graph, plan);
    expect(graph.vertices.length).toBe(1);
  });

  test("explicit forward with unequal parallelism throws a JobGraphError naming both operators", () => {
    const msg = jobGraphErrorOf(() =>
      graphOf((env) => {
        env.fromSequence(1, 100).name("Numbers").forward().map((x) => x).name("Doubler").setParallelism(DEFAULT_P + 1).print();
      }),
    );
    expect(msg).toContain("Numbers");
    expect(msg).toContain("Doubler");
  });

  // Flink's StreamGraph keeps the downstream-most virtual partitioner (StreamGraph.addEdgeInternal only takes a
  // virtual node's partitioner when none was set closer to the consumer).
  test("the partitioning nearest the consumer wins: rebalance().broadcast() broadcasts", () => {
    const { graph } = graphOf((env) => {
      env.fromSequence(1, 100).rebalance().broadcast().map((x) => x).print();
    });
    expect(graph.edges.map((e) => e.partitioner)).toEqual(["broadcast"]);
  });

  test("the partitioning nearest the consumer wins: keyBy(...).rebalance() rebalances", () => {
    const { graph } = graphOf((env) => {
      env.fromSequence(1, 100).keyBy((x) => x % 2).rebalance().map((x) => x).print();
    });
    expect(graph.edges.map((e) => e.partitioner)).toEqual(["rebalance"]);
    expect(graph.edges[0]!.keyNodeId).toBeUndefined();
  });

  test("a collection source is forced to parallelism 1, whatever the job's parallelism", () => {
    const { graph, plan } = graphOf((env) => {
      env.setParallelism(4);
      env.fromCollection(["a", "b"]).map((x) => x).print();
    });
    checkInvariants(graph, plan);
    expect(graph.vertices.map((v) => [v.operatorIds, v.parallelism])).toEqual([
      [[0], 1],
      [[1, 2], 4],
    ]);
    expect(graph.edges).toEqual([{ id: 0, source: 0, target: 1, partitioner: "rebalance" }]);
    expect(requiredSlots(graph)).toBe(4);
  });

  test("a collection source rejects setParallelism other than 1", () => {
    const env = new StreamExecutionEnvironment();
    expect(() => env.fromElements(1, 2).setParallelism(2)).toThrow();
    expect(() => env.fromElements(1, 2).setParallelism(1)).not.toThrow();
  });

  test("parallelism above maxParallelism throws a JobGraphError", () => {
    const msg = jobGraphErrorOf(() =>
      graphOf((env) => {
        env.setMaxParallelism(4);
        env.fromSequence(1, 10).map((x) => x).name("Too Wide").setParallelism(5).print().setParallelism(1);
      }),
    );
    expect(msg).toContain("Too Wide");
    expect(msg).toContain("5");
    jobGraphErrorOf(() => graphOf((env) => env.setMaxParallelism(2).fromSequence(1, 10).print(), 3));
    // Exactly at the limit is fine.
    const ok = graphOf((env) => env.setMaxParallelism(3).fromSequence(1, 10).print(), 3).graph;
    expect(ok.vertices[0]!.parallelism).toBe(3);
  });

  test("an empty plan throws a JobGraphError", () => {
    const env = new StreamExecutionEnvironment();
    jobGraphErrorOf(() => buildJobGraph(describePlan(env.getPlan()), env.getPlan().settings, 1, "empty"));
  });

  test("an input pointing at an unknown node throws a JobGraphError", () => {
    const env = new StreamExecutionEnvironment();
    env.fromSequence(1, 2).print();
    const desc: NodeDescription[] = describePlan(env.getPlan());
    desc[1]!.inputs = [42];
    jobGraphErrorOf(() => buildJobGraph(desc, env.getPlan().settings, 1, "broken"));
  });

  test("a fan-out ends the chain: the source is its own vertex, each branch chains", () => {
    const { graph, plan } = graphOf((env) => {
      const s = env.fromSequence(1, 10);
      s.map((x) => x).name("M1").print();
      s.map((x) => -x).name("M2").print();
    });
    checkInvariants(graph, plan);
    expect(graph.vertices.length).toBe(3);
    expect(graph.vertices[0]!.operatorIds).toEqual([0]);
    expect(graph.edges.map((e) => [e.source, e.partitioner])).toEqual([
      [0, "forward"],
      [0, "forward"],
    ]);
  });

  test("requiredSlots is the largest vertex parallelism", () => {
    const { graph } = graphOf((env) => {
      env
        .fromSequence(1, 10)
        .setParallelism(2)
        .map((x) => x)
        .setParallelism(7)
        .keyBy((x) => x)
        .reduce((a, b) => a + b)
        .setParallelism(3)
        .print()
        .setParallelism(1);
    });
    expect(graph.vertices.map((v) => v.parallelism).sort()).toEqual([1, 2, 3, 7]);
    expect(requiredSlots(graph)).toBe(7);
  });
});

describe("planFingerprint", () => {
  const wordCount = (env: StreamExecutionEnvironment, extraFilter: boolean) => {
    let s = env.readTextFile("/in").flatMap((l) => l.split(" "));
    if (extraFilter) s = s.filter((w) => w !== "");
    s.map((w): [string, number] => [w, 1]).keyBy((p) => p[0]).sum(1).print();
  };

  test("the same builder gives the same fingerprint every time", () => {
    const a = graphOf((env) => wordCount(env, false)).graph.planFingerprint;
    const b = graphOf((env) => wordCount(env, false)).graph.planFingerprint;
    expect(a).toBe(b);
  });

  test("differs when the plan differs: an extra operator, a different kind, different inputs", () => {
    const base = graphOf((env) => wordCount(env, false)).graph.planFingerprint;
    expect(graphOf((env) => wordCount(env, true)).graph.planFingerprint).not.toBe(base);
    const mapThenFilter = graphOf((env) => env.fromSequence(1, 2).map((x) => x).print()).graph.planFingerprint;
    const filterInstead = graphOf((env) => env.fromSequence(1, 2).filter(() => true).print()).graph.planFingerprint;
    expect(filterInstead).not.toBe(mapThenFilter);
    // Same kinds in the same order, wired differently.
    const chain = graphOf((env) => {
      const s = env.fromSequence(1, 2);
      const t = env.fromSequence(3, 4);
      s.union(t).print();
    }).graph.planFingerprint;
    const other = graphOf((env) => {
      const s = env.fromSequence(1, 2);
      env.fromSequence(3, 4);
      s.union().print();
    }).graph.planFingerprint;
    expect(other).not.toBe(chain);
  });
});
