// Local channel transport: 32 KiB buffers between two Workers, (1) transferred ArrayBuffers over a
// MessagePort, recycled back to the producer (what tm uses), (2) a SharedArrayBuffer ring with Atomics,
// blocking and with waitAsync (the form a task's event-loop-driven mailbox could use).
// Run: bun scripts/bench-local-channel.ts [--buffers 200000]
import * as os from "node:os";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { buffers: { type: "string", default: "200000" } } });
const n = Number(values.buffers);
const SEG = 32 * 1024;
const url = new URL("./bench-helpers/local-channel-worker.ts", import.meta.url).href;

async function run(setup: (producer: Worker, consumer: Worker) => void): Promise<number> {
  const producer = new Worker(url);
  const consumer = new Worker(url);
  try {
    const done = new Promise<number>((resolve, reject) => {
      producer.onmessage = (e) => resolve(e.data.seconds);
      producer.onerror = (e) => reject(new Error(e.message));
      consumer.onerror = (e) => reject(new Error(e.message));
    });
    setup(producer, consumer);
    return await done;
  } finally {
    producer.terminate();
    consumer.terminate();
  }
}

const rows: string[] = [];
for (const pool of [10]) {
  const secs = await run((p, c) => {
    const { port1, port2 } = new MessageChannel();
    c.postMessage({ mode: "transfer", role: "consumer", port: port2 }, [port2]);
    p.postMessage({ mode: "transfer", role: "producer", port: port1, n, pool }, [port1]);
  });
  rows.push(`| transferred ArrayBuffers (MessagePort, pool of ${pool}) | ${(n / secs / 1000).toFixed(0)} K buffers/s | ${((n * SEG) / secs / 1e9).toFixed(2)} GB/s |`);
}
for (const slots of [10]) {
  const sab = new SharedArrayBuffer(8 + slots * SEG);
  const secs = await run((p, c) => {
    c.postMessage({ mode: "ring", role: "consumer", sab, n, slots });
    p.postMessage({ mode: "ring", role: "producer", sab, n, slots });
  });
  rows.push(`| SharedArrayBuffer ring (${slots} slots, blocking Atomics.wait) | ${(n / secs / 1000).toFixed(0)} K buffers/s | ${((n * SEG) / secs / 1e9).toFixed(2)} GB/s |`);
  const sab2 = new SharedArrayBuffer(8 + slots * SEG);
  const secs2 = await run((p, c) => {
    c.postMessage({ mode: "ring-async", role: "consumer", sab: sab2, n, slots });
    p.postMessage({ mode: "ring-async", role: "producer", sab: sab2, n, slots });
  });
  rows.push(`| SharedArrayBuffer ring (${slots} slots, Atomics.waitAsync) | ${(n / secs2 / 1000).toFixed(0)} K buffers/s | ${((n * SEG) / secs2 / 1e9).toFixed(2)} GB/s |`);
}
console.log(`| local channel, ${n} buffers of 32 KiB | buffers/s | bytes/s |\n|---|---|---|`);
for (const r of rows) console.log(r);
console.log(`\nmachine: ${os.cpus().length} x ${os.cpus()[0]?.model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Bun ${Bun.version}`);
