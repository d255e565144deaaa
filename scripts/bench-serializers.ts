// Micro-benchmark of the record serializers alone (issue 19, item 1): the records of a chunked channel stream
// (chunks of CHUNK_RECORDS records, as the RecordWriter cuts them) serialized and deserialized in one thread, by the
// RecordSerializer with msgpack only, with an inferred type and with the declared type, side by side, alternating
// within each round. Records: [int key, 1] (the keyed sum's), [string key, int] tuples and flat objects.
// Prints records/s and ns per record (encode + decode, CPU time beside wall time), median (min-max) of --runs.
// Run: bun scripts/bench-serializers.ts [--records 2000000] [--runs 5]
import * as os from "node:os";
import { parseArgs } from "node:util";
import { CHUNK_RECORDS, RecordDeserializer, RecordSerializer, type SerializerOptions } from "../src/network/serialization.ts";
import { Types, type TypeInformation } from "../src/api/types.ts";
import { median } from "./bench-helpers/stats.ts";

const { values } = parseArgs({ options: { records: { type: "string", default: "2000000" }, runs: { type: "string", default: "5" } } });
const N = Number(values.records);
const RUNS = Number(values.runs);
if (!Number.isInteger(N) || N < CHUNK_RECORDS || !Number.isInteger(RUNS) || RUNS < 1) throw new Error("--records and --runs: expected positive integers");

interface Shape {
  name: string;
  make: (i: number) => unknown;
  type: TypeInformation<any>;
}
const shapes: Shape[] = [
  { name: "[int, 1] (the keyed sum's tuple)", make: (i) => [i % 10000, 1], type: Types.TUPLE(Types.INT, Types.INT) },
  { name: "[string key, int]", make: (i) => ["key-" + (i % 10000), i & 0xffff], type: Types.TUPLE(Types.STRING, Types.INT) },
  { name: "{auction, bidder, price, channel} object", make: (i) => ({ auction: 1000 + (i % 500), bidder: i % 7919, price: (i * 31) % 100000, channel: "channel-" + (i % 4) }), type: Types.ROW({ auction: Types.LONG, bidder: Types.LONG, price: Types.LONG, channel: Types.STRING }) },
];

/** One pass: every record through serialize -> framed bytes -> RecordDeserializer; returns wall and CPU seconds. */
function pass(records: unknown[], opts: SerializerOptions): { wall: number; cpu: number; bytes: number; check: number } {
  const s = new RecordSerializer(opts);
  const d = new RecordDeserializer();
  const buf = new Uint8Array(1 << 20);
  const out: unknown[] = [];
  let bytes = 0;
  let check = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < records.length; i += CHUNK_RECORDS) {
    const body = s.serialize(records.slice(i, i + CHUNK_RECORDS));
    // Frame it as the writer does (u32 length), then decode as the input gate does.
    new DataView(buf.buffer).setUint32(0, body.length);
    buf.set(body, 4);
    bytes += body.length + 4;
    out.length = 0;
    d.read(buf.subarray(0, body.length + 4), out);
    check += out.length;
  }
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  if (check !== records.length) throw new Error(`decoded ${check} of ${records.length} records`);
  return { wall, cpu: (c.user + c.system) / 1e6, bytes, check };
}

const fmtRate = (n: number) => `${(n / 1e6).toFixed(2)} M`;
const range = (xs: number[], f: (x: number) => string) => `${f(median(xs))} (${f(Math.min(...xs))}-${f(Math.max(...xs))})`;

console.log(`# serializer micro-benchmark: ${N} records per pass, chunks of ${CHUNK_RECORDS}, median (min-max) of ${RUNS} alternating runs`);
console.log(`# machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "?"}, Bun ${Bun.version}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
console.log("| records | serializer | records/s (wall) | ns per record (CPU) | bytes per record | vs msgpack (CPU) |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const shape of shapes) {
  const records = Array.from({ length: N }, (_, i) => shape.make(i));
  const variants: [string, SerializerOptions][] = [
    ["msgpackr", {}],
    ["typed, inferred", { infer: true }],
    ["typed, declared", { declared: { type: shape.type, operator: "bench" } }],
  ];
  const res = variants.map(() => ({ rate: [] as number[], ns: [] as number[], bytes: 0 }));
  pass(records.slice(0, 100_000), {}); // warm-up
  for (const [, o] of variants) pass(records.slice(0, 100_000), o);
  for (let r = 0; r < RUNS; r++) {
    variants.forEach(([, o], i) => {
      const x = pass(records, o);
      res[i]!.rate.push(N / x.wall);
      res[i]!.ns.push((x.cpu * 1e9) / N);
      res[i]!.bytes = x.bytes / N;
    });
  }
  const base = median(res[0]!.ns);
  variants.forEach(([name], i) => {
    const x = res[i]!;
    console.log(`| ${shape.name} | ${name} | ${range(x.rate, fmtRate)} | ${range(x.ns, (v) => v.toFixed(0))} | ${x.bytes.toFixed(1)} | ${(median(x.ns) / base).toFixed(2)}x |`);
  });
}
console.log(`# load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
