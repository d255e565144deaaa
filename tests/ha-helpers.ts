// Shared by the HA tests (tests/ha-*.test.ts): a free loopback port (the keyed counting job is keyedJob in helpers.ts).
import * as net from "node:net";

export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}


