// Split by duty into framed-connection.ts, handshake.ts, write-stage.ts, rpc-connection.ts, connect.ts, listen.ts
// and refusal-log.ts. Kept only for src/network/shuffle-environment.ts, which another change reworks at the same
// time: delete this file once that one imports from framed-connection.ts.
export type { FramedConnection } from "./framed-connection.ts";
