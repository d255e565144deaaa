// The writer's hot path with unaligned checkpoints' output channel state kept (RecordWriter.keepInFlight) and
// without, alternating run by run in one thread: records [key, 1] through a RecordWriter, a RingSender, a real ring
// and an InputGate, as between a source chain and a keyed task. Prints the CPU time of each run (issue 15).
// Run: bun scripts/bench-output-state.ts [--records 3000000] [--runs 7]
import * as os from "node:os";
import { parseArgs } from "node:util";
import { RecordWriter } from "../src/network/record-writer.ts";
import { LocalBufferPool } from "../src/network/local-buffer-pool.ts";
import { RingSender, receiveFromRing } from "../src/network/channel-ends.ts";
import { createRing } from "../src/network/shared-ring.ts";
import { InputGate } from "../src/network/input-gate.ts";
import { median as med } from "./bench-helpers/stats.ts";

const { values } = parseArgs({ options: { records: { type: "string", default: "3000000" }, runs: { type: "string", default: "7" } } });
const N = Number(values.records);
const RUNS = Number(values.runs);
if (!(N > 0) || !(RUNS > 0)) throw new Error(`--records and --runs: expected positive numbers, got ${values.records} and ${values.runs}`);

/** CPU ms of one run; with default network settings (32 KiB segments, a ring of 10, at most 10 buffers per channel). */
async function run(keep: boolean): Promise<number> {
  const pool = new LocalBufferPool(20, 32768, 2);
  const w = new RecordWriter(["c"], () => 0, pool, false, 10);
  w.keepInFlight = keep;
  const ring = createRing(10, 32768);
  const gate = new InputGate(["c"]);
  w.connect("c", new RingSender(ring, (b) => w.recycle(b, "c"), (e) => { throw e; }));
  receiveFromRing(ring, "c", gate, (e) => { throw e; });
  const c0 = process.cpuUsage();
  let got = 0, i = 0;
  const drain = () => {
    for (let item = gate.poll(); item; item = gate.poll()) if ("records" in item) got += item.records.length;
  };
  while (i < N) {
    for (let k = 0; k < 1024 && i < N; k++, i++) w.emit([i % 10000, 1]);
    drain();
    if (w.backpressured) await new Promise((r) => setImmediate(r));
  }
  w.flush();
  while (got < N) {
    await new Promise((r) => setImmediate(r));
    drain();
  }
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

const res: Record<string, number[]> = { off: [], keep: [] };
const load0 = os.loadavg();
for (let r = 0; r < RUNS; r++) for (const m of ["off", "keep"]) res[m]!.push(await run(m === "keep"));
console.log(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model.trim()}, Linux ${os.release()}, Bun ${Bun.version}; load average ${load0.map((l) => l.toFixed(2)).join(" ")} before, ${os.loadavg().map((l) => l.toFixed(2)).join(" ")} after`);
console.log(`Command: bun scripts/bench-output-state.ts --records ${N} --runs ${RUNS}\n`);
console.log("| writer | CPU ms for the records, median (min..max) | ns per record |\n| --- | --- | --- |");
for (const m of ["off", "keep"]) {
  const xs = res[m]!;
  console.log(`| ${m === "off" ? "checkpoints aligned (nothing kept)" : "unaligned (keepInFlight)"} | ${med(xs).toFixed(0)} (${Math.min(...xs).toFixed(0)}..${Math.max(...xs).toFixed(0)}) | ${((med(xs) * 1e6) / N).toFixed(0)} |`);
}
process.exit(0);
