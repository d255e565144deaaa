// Configuration of the TaskManager and the JobManager: schema (schema.ts) and loader (load.ts).
export type { Config, ConfigKeySpec } from "./schema.ts";
export { CONFIG_KEYS } from "./schema.ts";
export { ConfigError, defaultConfig, loadConfig, parseDuration } from "./load.ts";
