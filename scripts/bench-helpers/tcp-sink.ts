// Half of scripts/bench-network.ts: a TCP server that reads and discards `expected` bytes, then prints the
// seconds from the first byte to the last and the CPU seconds this process used.
import * as net from "node:net";

const expected = Number(process.argv[2]);
const server = net.createServer((sock) => {
  let got = 0;
  let t0 = 0;
  sock.on("data", (d: Buffer) => {
    if (got === 0) t0 = performance.now();
    got += d.length;
    if (got >= expected) {
      const c = process.cpuUsage();
      console.log(`DONE ${(performance.now() - t0) / 1000} CPU ${(c.user + c.system) / 1e6}`);
      sock.destroy();
      server.close();
    }
  });
});
server.listen(0, "127.0.0.1", () => console.log(`PORT ${(server.address() as net.AddressInfo).port}`));
