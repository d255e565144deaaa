// A small etcd v3 client over etcd's JSON gateway (HTTP POST /v3/kv/range, /v3/kv/txn, /v3/lease/grant,
// /v3/lease/keepalive, /v3/lease/revoke; keys and values base64). fetch() is all it needs: no npm dependency,
// and it runs in the compiled binary and under Deno alike. Several endpoints: each call tries them in turn.
import { Buffer } from "node:buffer";

const enc = (s: string) => Buffer.from(s).toString("base64");
const dec = (s: string | undefined) => (s ? Buffer.from(s, "base64").toString("utf8") : "");

export interface KeyValue {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  lease: string;
}

export type Compare = { key: string; createRevision: number };
export type Op = { put: { key: string; value: string; lease?: string } } | { delete: { key: string } };

export class EtcdUnavailableError extends Error {
  override name = "EtcdUnavailableError";
}

export class EtcdClient {
  private preferred = 0;

  constructor(
    readonly endpoints: string[],
    private readonly timeoutMs = 2000,
  ) {
    for (const e of endpoints) {
      if (!/^https?:\/\/[^/\s]+\/?$/.test(e)) throw new Error(`high-availability.etcd.endpoints: ${JSON.stringify(e)} is not an etcd client URL such as http://127.0.0.1:2379`);
    }
  }

  private async call(path: string, body: unknown, timeoutMs = this.timeoutMs, firstChunkOnly = false): Promise<any> {
    const errors: string[] = [];
    for (let i = 0; i < this.endpoints.length; i++) {
      const idx = (this.preferred + i) % this.endpoints.length;
      const url = this.endpoints[idx]!.replace(/\/$/, "") + path;
      const ctrl = new AbortController();
      const timer = setTimeout(() => ctrl.abort(), timeoutMs);
      try {
        const res = await fetch(url, { method: "POST", body: JSON.stringify(body), signal: ctrl.signal, headers: { "content-type": "application/json" } });
        let text: string;
        if (firstChunkOnly) {
          // A streaming endpoint (keepalive): the first JSON line is the answer.
          const reader = res.body!.getReader();
          const { value } = await reader.read();
          text = new TextDecoder().decode(value ?? new Uint8Array());
          ctrl.abort();
        } else text = await res.text();
        const json = JSON.parse(text.split("\n")[0]!);
        if (!res.ok || json.error || json.code) throw new Error(`etcd ${path}: ${json.error ?? json.message ?? res.status}`);
        this.preferred = idx;
        return json;
      } catch (err) {
        errors.push(`${this.endpoints[idx]}: ${(err as Error).name === "AbortError" ? `no answer within ${timeoutMs} ms` : (err as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
    throw new EtcdUnavailableError(`etcd unreachable (high-availability.etcd.endpoints = ${this.endpoints.join(",")}): ${errors.join("; ")}`);
  }

  async get(key: string): Promise<KeyValue | null> {
    const r = await this.call("/v3/kv/range", { key: enc(key) });
    return r.kvs?.length ? toKv(r.kvs[0]) : null;
  }

  async getPrefix(prefix: string): Promise<KeyValue[]> {
    const r = await this.call("/v3/kv/range", { key: enc(prefix), range_end: enc(prefixEnd(prefix)) });
    return (r.kvs ?? []).map(toKv);
  }

  async put(key: string, value: string, lease?: string): Promise<void> {
    await this.call("/v3/kv/put", { key: enc(key), value: enc(value), ...(lease ? { lease } : {}) });
  }

  /** Runs `success` only if every compare holds; returns whether it did and the revision of the answer. */
  async txn(compare: Compare[], success: Op[]): Promise<{ succeeded: boolean; revision: number }> {
    const r = await this.call("/v3/kv/txn", {
      compare: compare.map((c) => ({ key: enc(c.key), target: "CREATE", result: "EQUAL", create_revision: String(c.createRevision) })),
      success: success.map((op) =>
        "put" in op
          ? { request_put: { key: enc(op.put.key), value: enc(op.put.value), ...(op.put.lease ? { lease: op.put.lease } : {}) } }
          : { request_delete_range: { key: enc(op.delete.key) } },
      ),
    });
    return { succeeded: r.succeeded === true, revision: Number(r.header?.revision ?? 0) };
  }

  async grant(ttlSeconds: number): Promise<string> {
    return String((await this.call("/v3/lease/grant", { TTL: ttlSeconds })).ID);
  }

  /** Renews a lease; returns its remaining TTL in seconds (0 or less: it has expired). */
  async keepAlive(lease: string, timeoutMs: number): Promise<number> {
    const r = await this.call("/v3/lease/keepalive", { ID: lease }, timeoutMs, true);
    return Number(r.result?.TTL ?? 0);
  }

  async revoke(lease: string): Promise<void> {
    await this.call("/v3/lease/revoke", { ID: lease });
  }
}

function toKv(kv: any): KeyValue {
  return { key: dec(kv.key), value: dec(kv.value), createRevision: Number(kv.create_revision ?? 0), modRevision: Number(kv.mod_revision ?? 0), lease: String(kv.lease ?? "0") };
}

/** The end of the range of keys starting with `prefix` (the prefix with its last byte incremented). */
function prefixEnd(prefix: string): string {
  const b = Buffer.from(prefix);
  b[b.length - 1]!++;
  return b.toString("latin1");
}
