// A configuration as the REST API shows it (/jobmanager/config, /taskmanagers/<id>/config): every key with its
// value, and the values of keys that name secrets masked as Flink does (by the key's name, whatever the value).
import type { Config } from "./schema.ts";

export const MASKED = "******";
/** Key names that hold or point at secrets: the shared secret, the REST token, TLS private keys, passwords. */
const SENSITIVE = /secret|password|token|key-file|apikey/i;

export function isSensitiveKey(key: string): boolean {
  return SENSITIVE.test(key);
}

/** [{key, value}] sorted by key; sensitive values that are set become "******". */
export function maskedConfig(config: Config): { key: string; value: string }[] {
  return Object.entries(config)
    .map(([key, v]) => ({ key, value: isSensitiveKey(key) && v !== "" ? MASKED : String(v) }))
    .sort((a, b) => a.key.localeCompare(b.key));
}
