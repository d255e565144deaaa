// The ceiling of a credit loop on this machine, without tm: two Bun processes over loopback TCP, the sender
// writes 32 KiB buffers only against credit, the receiver returns one credit per buffer it reads (coalesced per
// turn, as tm does). No Workers, no serialization: what is left is TCP and the two event loops. Compare its
// GB/s with scripts/bench-network.ts (docs/benchmarks.md, issue 3).
// Run: bun scripts/bench-credit-loop.ts [--window 10] [--buffers 60000]
import * as net from "node:net";
import { parseArgs } from "node:util";

const SEG = 32 * 1024;
const { values } = parseArgs({ options: { window: { type: "string", default: "10" }, buffers: { type: "string", default: "60000" }, receiver: { type: "boolean", default: false } } });
const total = Number(values.buffers);

if (values.receiver) {
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    let got = 0;
    let partial = 0;
    let due = 0;
    let t0 = 0;
    sock.on("data", (d: Buffer) => {
      if (t0 === 0) t0 = performance.now();
      partial += d.length;
      while (partial >= SEG) {
        partial -= SEG;
        got++;
        due++;
      }
      if (got >= total) {
        console.log(`DONE ${(total * SEG) / ((performance.now() - t0) / 1000)}`);
        process.exit(0);
      }
      if (due > 0) {
        const n = due;
        due = 0;
        queueMicrotask(() => {
          const credit = Buffer.allocUnsafe(4);
          credit.writeUInt32BE(n);
          sock.write(credit);
        });
      }
    });
  });
  server.listen(0, "127.0.0.1", () => console.log(`PORT ${(server.address() as net.AddressInfo).port}`));
} else {
  const child = Bun.spawn([process.execPath, import.meta.path, "--receiver", "--buffers", String(total)], { stdout: "pipe", stderr: "inherit" });
  try {
    const lines = child.stdout.getReader();
    const dec = new TextDecoder();
    const port = Number(/PORT (\d+)/.exec(dec.decode((await lines.read()).value))![1]);
    const sock = net.connect(port, "127.0.0.1");
    sock.setNoDelay(true);
    await new Promise((r) => sock.once("connect", r));
    let credit = Number(values.window);
    let sent = 0;
    let pending: Buffer = Buffer.alloc(0);
    const frame = Buffer.alloc(SEG, 7); // the same bytes every time: node:net may keep a reference until written
    const pump = () => {
      while (credit > 0 && sent < total) {
        credit--;
        sent++;
        sock.write(frame);
      }
    };
    sock.on("data", (d: Buffer) => {
      pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
      while (pending.length >= 4) {
        credit += pending.readUInt32BE(0);
        pending = pending.subarray(4);
      }
      pump();
    });
    pump();
    const done = Number(/DONE ([\d.]+)/.exec(dec.decode((await lines.read()).value))![1]);
    console.log(`credit loop, window ${values.window} x 32 KiB, ${total} buffers: ${(done / 1e9).toFixed(2)} GB/s`);
    sock.destroy();
  } finally {
    child.kill();
  }
}
