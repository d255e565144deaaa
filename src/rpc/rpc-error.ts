/** An error of the RPC layer: a refused handshake, a closed connection, a request that timed out or failed remotely. */
export class RpcError extends Error {
  override name = "RpcError";
}
