// Shared by the HA tests (tests/ha-*.test.ts): a free loopback port and the keyed counting job.
import * as net from "node:net";
import * as path from "node:path";

export const KEYS = 37;

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Keyed counting over 1..n (a 1 ms pause every `every` records), into the exactly-once file sink. */
export function keyedJob(out: string, n: number, every: number): string {
  return `
    import { FileSink, ValueStateDescriptor } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export default (env) => {
      env.enableCheckpointing(300);
      env.fromSequence(1, ${n})
        .map((x) => { if (x % ${every} === 0) Atomics.wait(pause, 0, 0, 1); return x; })
        .keyBy((x) => x % ${KEYS})
        .process({
          open(ctx) { this.count = ctx.getState(new ValueStateDescriptor("count", { default: 0 })); },
          processElement(x, ctx, out) {
            const c = this.count.value() + 1;
            this.count.update(c);
            out.collect([ctx.getCurrentKey(), c]);
          },
        })
        .sinkTo(FileSink.forRowFormat(${JSON.stringify(out)}).build());
    };`;
}

