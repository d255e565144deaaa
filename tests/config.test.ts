import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CONFIG_KEYS, ConfigError, defaultConfig, loadConfig, parseDuration } from "../src/config/index.ts";

const dir = mkdtempSync(join(tmpdir(), "tm-config-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let fileCount = 0;
/** Writes a TOML file under the temp dir and returns its path. */
function tomlFile(text: string): string {
  const path = join(dir, `tm-${++fileCount}.toml`);
  writeFileSync(path, text);
  return path;
}

/** The ConfigError message thrown by fn (fails if fn does not throw a ConfigError). */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).exitCode).toBe(2);
    return (err as Error).message;
  }
  throw new Error("expected a ConfigError, nothing was thrown");
}

describe("defaults", () => {
  test("every key has its documented default; durations are milliseconds", () => {
    expect(defaultConfig()).toEqual({
      "jobmanager.rpc.address": "127.0.0.1",
      "jobmanager.rpc.port": 6123,
      "jobmanager.storage.dir": "",
      "jobmanager.slot-request.timeout": 300_000,
      "jobstore.max-capacity": 2147483647,
      "jobstore.expiration-time": 3_600_000,
      "high-availability.type": "none",
      "high-availability.storageDir": "",
      "high-availability.cluster-id": "default",
      "high-availability.etcd.endpoints": [],
      "high-availability.etcd.lease-ttl": 3000,
      "taskmanager.jobmanager-loss.grace-period": 30_000,
      "security.auth.secret-file": "",
      "security.insecure": false,
      "security.ssl.enabled": false,
      "security.ssl.cert-file": "",
      "security.ssl.key-file": "",
      "security.ssl.ca-file": "",
      "security.ssl.client-auth": false,
      "rpc.max-frame-size": 67108864,
      "rpc.handshake-timeout": 10_000,
      "rpc.idle-timeout": 300_000,
      "rpc.max-connections-per-address": 256,
      "security.rest.token-file": "",
      "taskmanager.task.memory-limit": 0,
      "taskmanager.task.bundle-runtime": true,
      "taskmanager.memory.process-limit": 0,
      "taskmanager.resource-id": "",
      "taskmanager.host": "127.0.0.1",
      "taskmanager.data.port": 0,
      "taskmanager.numberOfTaskSlots": 1,
      "taskmanager.tmp.dir": "",
      "taskmanager.memory.segment-size": 32768,
      "taskmanager.memory.process.size": 0,
      "taskmanager.memory.network.fraction": 0.1,
      "taskmanager.memory.network.min": 67108864,
      "taskmanager.memory.network.max": 1073741824,
      "taskmanager.network.numberOfBuffers": 0,
      "taskmanager.network.memory.buffers-per-channel": 2,
      "taskmanager.network.memory.floating-buffers-per-gate": 8,
      "taskmanager.network.memory.max-overdraft-buffers-per-gate": 5,
      "taskmanager.network.memory.max-buffers-per-channel": 10,
      "taskmanager.network.memory.buffer-debloat.enabled": false,
      "taskmanager.network.memory.buffer-debloat.target": 1_000,
      "taskmanager.network.memory.buffer-debloat.period": 200,
      "taskmanager.memory.min-segment-size": 256,
      "taskmanager.network.tcp-connection.keepalive.interval": 2000,
      "taskmanager.network.tcp-connection.keepalive.timeout": 10_000,
      "taskmanager.network.request-backoff.initial": 100,
      "taskmanager.network.request-backoff.max": 2000,
      "state.backend": "heap",
      "state.backend.sqlite.cache-size": 67108864,
      "state.backend.incremental": false,
      "state.backend.local-recovery": false,
      "taskmanager.state.dir": "",
      "taskmanager.registration.initial-backoff": 100,
      "taskmanager.registration.max-backoff": 10_000,
      "heartbeat.interval": 1_000,
      "heartbeat.timeout": 6_000,
      "execution.checkpointing.interval": 0,
      "execution.checkpointing.mode": "EXACTLY_ONCE",
      "execution.checkpointing.timeout": 600_000,
      "execution.checkpointing.min-pause": 0,
      "execution.checkpointing.max-concurrent-checkpoints": 1,
      "execution.checkpointing.unaligned.enabled": false,
      "execution.checkpointing.aligned-checkpoint-timeout": 0,
      "execution.checkpointing.checkpoints-after-tasks-finish": true,
      "state.checkpoints.dir": "",
      "state.checkpoints.num-retained": 1,
      "state.savepoints.dir": "",
      "restart-strategy.type": "auto",
      "restart-strategy.fixed-delay.attempts": 3,
      "restart-strategy.fixed-delay.delay": 1_000,
      "restart-strategy.exponential-delay.initial-backoff": 1_000,
      "restart-strategy.exponential-delay.max-backoff": 60_000,
      "restart-strategy.exponential-delay.backoff-multiplier": 2,
      "restart-strategy.exponential-delay.max-attempts": 2147483647,
      "restart-strategy.exponential-delay.reset-backoff-threshold": 3_600_000,
      "parallelism.default": 1,
      "pipeline.auto-watermark-interval": 200,
      "pipeline.operator-chaining.keyed-at-parallelism-one": true,
      "pipeline.object-reuse": false,
      "rest.address": "127.0.0.1",
      "rest.port": 8081,
      "web.exception-history-size": 16,
      "rest.allowed-hosts": [],
      "rest.allowed-origins": [],
      "metrics.port": 0,
      "metrics.latency.interval": 0,
      "taskmanager.shutdown.grace-period": 10_000,
      "log.format": "text",
      "taskmanager.registration.timeout": 300_000,
      "log.level": "info",
    });
  });

  test("loadConfig() with nothing given returns the defaults, as a fresh object", () => {
    const config = loadConfig();
    expect(config).toEqual(defaultConfig());
    config["log.level"] = "debug";
    expect(loadConfig()["log.level"]).toBe("info");
  });

  test("CONFIG_KEYS lists key, type, default, doc and env var", () => {
    const slots = CONFIG_KEYS.find((s) => s.key === "taskmanager.numberOfTaskSlots")!;
    expect(slots.envVar).toBe("TM_TASKMANAGER_NUMBEROFTASKSLOTS");
    expect(slots.default).toBe(1);
    expect(slots.doc).toBe("Number of task slots.");
    expect(CONFIG_KEYS.find((s) => s.key === "jobmanager.slot-request.timeout")!.envVar).toBe(
      "TM_JOBMANAGER_SLOT_REQUEST_TIMEOUT",
    );
    expect(CONFIG_KEYS).toHaveLength(Object.keys(defaultConfig()).length);
  });
});

describe("TOML file", () => {
  test("nested tables", () => {
    const file = tomlFile(`
[jobmanager.rpc]
address = "10.0.0.5"
port = 7000

[taskmanager]
numberOfTaskSlots = 4
host = "tm-1.local"

[taskmanager.registration]
initial-backoff = "250 ms"
max-backoff = 30000

[heartbeat]
interval = "2s"
timeout = "1.5 min"

[log]
level = "debug"
`);
    const config = loadConfig({ file });
    expect(config["jobmanager.rpc.address"]).toBe("10.0.0.5");
    expect(config["jobmanager.rpc.port"]).toBe(7000);
    expect(config["taskmanager.numberOfTaskSlots"]).toBe(4);
    expect(config["taskmanager.host"]).toBe("tm-1.local");
    expect(config["taskmanager.registration.initial-backoff"]).toBe(250);
    expect(config["taskmanager.registration.max-backoff"]).toBe(30_000);
    expect(config["heartbeat.interval"]).toBe(2000);
    expect(config["heartbeat.timeout"]).toBe(90_000);
    expect(config["log.level"]).toBe("debug");
    expect(config["parallelism.default"]).toBe(1); // untouched keys keep their defaults
  });

  test("dotted keys, also mixed with tables", () => {
    const file = tomlFile(`
taskmanager.numberOfTaskSlots = 8
jobmanager.slot-request.timeout = "30 sec"
parallelism.default = 3

[heartbeat]
interval = 5000
`);
    const config = loadConfig({ file });
    expect(config["taskmanager.numberOfTaskSlots"]).toBe(8);
    expect(config["jobmanager.slot-request.timeout"]).toBe(30_000);
    expect(config["parallelism.default"]).toBe(3);
    expect(config["heartbeat.interval"]).toBe(5000);
  });

  test("missing file names the path", () => {
    const path = join(dir, "no-such-tm.toml");
    expect(errorOf(() => loadConfig({ file: path }))).toBe(`config file ${path} not found`);
  });

  test("TOML syntax error names the file, line and column", () => {
    const file = tomlFile(`[taskmanager]\nnumberOfTaskSlots = 2\nhost = "a\n`);
    const message = errorOf(() => loadConfig({ file }));
    expect(message).toStartWith(`${file}: invalid TOML at line 3, column `);
    expect(message).not.toContain("\n");
  });

  test("unknown key is an error, with the closest known key suggested", () => {
    const file = tomlFile(`[taskmanager]\nnumberOfSlots = 2\n`);
    expect(errorOf(() => loadConfig({ file }))).toBe(
      `${file}: unknown key "taskmanager.numberOfSlots" (did you mean "taskmanager.numberOfTaskSlots"?)`,
    );
    const wrongCase = tomlFile(`log.Level = "info"\n`);
    expect(errorOf(() => loadConfig({ file: wrongCase }))).toBe(
      `${wrongCase}: unknown key "log.Level" (did you mean "log.level"?)`,
    );
  });

  test("unknown key far from every known key gets no suggestion", () => {
    const file = tomlFile(`[metrics]\nreporter = "prometheus"\n`);
    expect(errorOf(() => loadConfig({ file }))).toBe(`${file}: unknown key "metrics.reporter"`);
  });
});

describe("type errors", () => {
  const cases: [toml: string, message: string][] = [
    [`taskmanager.numberOfTaskSlots = "two"`, `taskmanager.numberOfTaskSlots: expected an integer >= 1 and <= 1024, got "two" (string)`],
    [`taskmanager.numberOfTaskSlots = "4"`, `taskmanager.numberOfTaskSlots: expected an integer >= 1 and <= 1024, got "4" (string)`],
    [`taskmanager.numberOfTaskSlots = 0`, `taskmanager.numberOfTaskSlots: expected an integer >= 1 and <= 1024, got 0`],
    [`taskmanager.numberOfTaskSlots = 1025`, `taskmanager.numberOfTaskSlots: expected an integer >= 1 and <= 1024, got 1025`],
    [`parallelism.default = 2.5`, `parallelism.default: expected an integer >= 1, got 2.5`],
    [`jobmanager.rpc.port = 70000`, `jobmanager.rpc.port: expected a port 0..65535, got 70000`],
    [`taskmanager.data.port = -1`, `taskmanager.data.port: expected a port 0..65535, got -1`],
    [`jobmanager.rpc.port = true`, `jobmanager.rpc.port: expected a port 0..65535, got true (boolean)`],
    [`heartbeat.interval = "10 parsecs"`, `heartbeat.interval: expected a duration (milliseconds, or a number and a unit ms/s/sec/min/h such as "10 s"), got "10 parsecs" (string)`],
    [`heartbeat.interval = -5`, `heartbeat.interval: expected a duration (milliseconds, or a number and a unit ms/s/sec/min/h such as "10 s"), got -5`],
    [`heartbeat.interval = 0`, `heartbeat.interval: expected a duration of at least 1 ms, got 0`],
    [`heartbeat.timeout = [1, 2]`, `heartbeat.timeout: expected a duration (milliseconds, or a number and a unit ms/s/sec/min/h such as "10 s"), got an array`],
    [`jobmanager.slot-request.timeout = "1000 h"`, `jobmanager.slot-request.timeout: expected a duration of at most 2147483647 ms (about 24 days), got "1000 h" (string)`],
    [`log.level = "verbose"`, `log.level: expected one of "debug", "info", "warn", "error", got "verbose" (string)`],
    [`taskmanager.host = "my host"`, `taskmanager.host: expected a host name or IP address (non-empty, no spaces), got "my host" (string)`],
    [`jobmanager.rpc.address = ""`, `jobmanager.rpc.address: expected a host name or IP address (non-empty, no spaces), got "" (string)`],
    [`taskmanager.tmp.dir = 5`, `taskmanager.tmp.dir: expected a string, got 5`],
    [`[jobmanager.rpc.port]\nvalue = 1`, `jobmanager.rpc.port: expected a port 0..65535, got a table`],
  ];
  for (const [toml, message] of cases) {
    test(toml.replace("\n", " "), () => {
      const file = tomlFile(toml + "\n");
      expect(errorOf(() => loadConfig({ file }))).toBe(`${file}: ${message}`);
    });
  }
});

describe("parseDuration", () => {
  test("numbers are milliseconds; strings take a unit", () => {
    expect(parseDuration(250, "x")).toBe(250);
    expect(parseDuration("500 ms", "x")).toBe(500);
    expect(parseDuration("10s", "x")).toBe(10_000);
    expect(parseDuration("3 sec", "x")).toBe(3000);
    expect(parseDuration("1.5 min", "x")).toBe(90_000);
    expect(parseDuration("2 h", "x")).toBe(7_200_000);
    expect(parseDuration("750", "x")).toBe(750);
    expect(parseDuration("0 s", "x")).toBe(0);
  });

  test("errors are ConfigErrors prefixed with where", () => {
    expect(errorOf(() => parseDuration("ten seconds", "tm.toml: heartbeat.interval"))).toStartWith(
      `tm.toml: heartbeat.interval: expected a duration`,
    );
    expect(errorOf(() => parseDuration(1.5, "w"))).toEndWith(", got 1.5");
    expect(errorOf(() => parseDuration("-1 s", "w"))).toEndWith(`, got "-1 s" (string)`);
  });
});

describe("environment and -D flags", () => {
  test("TM_* variables set keys, parsed by type; unknown TM_* variables are ignored", () => {
    const config = loadConfig({
      env: {
        TM_TASKMANAGER_NUMBEROFTASKSLOTS: "4",
        TM_HEARTBEAT_INTERVAL: "2 s",
        TM_JOBMANAGER_SLOT_REQUEST_TIMEOUT: "1500",
        TM_LOG_LEVEL: "warn",
        TM_NO_SUCH_KEY: "whatever",
        PATH: "/usr/bin",
      },
    });
    expect(config["taskmanager.numberOfTaskSlots"]).toBe(4);
    expect(config["heartbeat.interval"]).toBe(2000);
    expect(config["jobmanager.slot-request.timeout"]).toBe(1500);
    expect(config["log.level"]).toBe("warn");
  });

  test("-D key=value sets keys; the value may contain '='", () => {
    const config = loadConfig({
      overrides: ["taskmanager.numberOfTaskSlots=16", "taskmanager.resource-id=tm=a", "taskmanager.tmp.dir="],
    });
    expect(config["taskmanager.numberOfTaskSlots"]).toBe(16);
    expect(config["taskmanager.resource-id"]).toBe("tm=a");
    expect(config["taskmanager.tmp.dir"]).toBe("");
  });

  test("precedence: defaults < file < environment < -D", () => {
    const file = tomlFile(`
taskmanager.numberOfTaskSlots = 2
parallelism.default = 2
log.level = "warn"
`);
    const config = loadConfig({
      file,
      env: { TM_TASKMANAGER_NUMBEROFTASKSLOTS: "3", TM_PARALLELISM_DEFAULT: "3" },
      overrides: ["taskmanager.numberOfTaskSlots=4"],
    });
    expect(config["taskmanager.numberOfTaskSlots"]).toBe(4); // file, env and -D: -D wins
    expect(config["parallelism.default"]).toBe(3); // file and env: env wins
    expect(config["log.level"]).toBe("warn"); // file only
    expect(config["jobmanager.rpc.port"]).toBe(6123); // default
  });

  test("a bad environment value names the variable and the key", () => {
    expect(errorOf(() => loadConfig({ env: { TM_TASKMANAGER_NUMBEROFTASKSLOTS: "two" } }))).toBe(
      `environment variable TM_TASKMANAGER_NUMBEROFTASKSLOTS: taskmanager.numberOfTaskSlots: expected an integer >= 1 and <= 1024, got "two" (string)`,
    );
    expect(errorOf(() => loadConfig({ env: { TM_JOBMANAGER_RPC_PORT: "70000" } }))).toBe(
      `environment variable TM_JOBMANAGER_RPC_PORT: jobmanager.rpc.port: expected a port 0..65535, got "70000" (string)`,
    );
  });

  test("lists: a TOML array, or a comma-separated string from the environment and -D; anything else names the key", () => {
    const file = tomlFile(`[rest]\nallowed-hosts = ["jm.example", " tm-jobmanager:8081 "]\n`);
    expect(loadConfig({ file })["rest.allowed-hosts"]).toEqual(["jm.example", "tm-jobmanager:8081"]);
    expect(loadConfig({ env: { TM_REST_ALLOWED_ORIGINS: "https://a.example, ,http://b.example:8080" } })["rest.allowed-origins"]).toEqual(["https://a.example", "http://b.example:8080"]);
    expect(loadConfig({ overrides: ["rest.allowed-hosts="] })["rest.allowed-hosts"]).toEqual([]);
    expect(errorOf(() => loadConfig({ file: tomlFile(`rest.allowed-hosts = [1, 2]\n`) }))).toEndWith(
      `rest.allowed-hosts: expected a list of strings (a TOML array, or one comma-separated string such as "a, b"), got an array`,
    );
    expect(defaultConfig()["rest.allowed-hosts"]).not.toBe(defaultConfig()["rest.allowed-hosts"]); // no shared mutable default
  });

  test("memory sizes take Flink's units in a file, the environment and -D; a bad one names the key and the forms", () => {
    expect(loadConfig({ overrides: ["state.backend.sqlite.cache-size=256m"] })["state.backend.sqlite.cache-size"]).toBe(256 * 1024 * 1024);
    expect(loadConfig({ env: { TM_TASKMANAGER_MEMORY_SEGMENT_SIZE: "64 kb" } })["taskmanager.memory.segment-size"]).toBe(65536);
    const file = tomlFile(`[taskmanager.memory]\nprocess-limit = "1.5g"\nmin-segment-size = 512\n[rpc]\nmax-frame-size = "128mb"\n`);
    const c = loadConfig({ file });
    expect([c["taskmanager.memory.process-limit"], c["taskmanager.memory.min-segment-size"], c["rpc.max-frame-size"]]).toEqual([1.5 * 1024 ** 3, 512, 128 * 1024 * 1024]);
    expect(errorOf(() => loadConfig({ overrides: ["state.backend.sqlite.cache-size=64q"] }))).toContain(
      'state.backend.sqlite.cache-size: expected a size in bytes >= 1048576 and <= 68719476736 (a number of bytes, or a number and a unit k/m/g/t such as "64m")',
    );
    expect(errorOf(() => loadConfig({ overrides: ["taskmanager.memory.segment-size=1k"] }))).toContain("taskmanager.memory.segment-size: expected a size in bytes >= 4096");
  });

  test("bad -D flags", () => {
    expect(errorOf(() => loadConfig({ overrides: ["foo"] }))).toBe(`-D flag "foo": expected key=value`);
    expect(errorOf(() => loadConfig({ overrides: ["=4"] }))).toBe(`-D flag "=4": expected key=value`);
    expect(errorOf(() => loadConfig({ overrides: ["taskmanager.numberOfSlots=4"] }))).toBe(
      `-D flag: unknown key "taskmanager.numberOfSlots" (did you mean "taskmanager.numberOfTaskSlots"?)`,
    );
    expect(errorOf(() => loadConfig({ overrides: ["log.level=loud"] }))).toBe(
      `-D flag: log.level: expected one of "debug", "info", "warn", "error", got "loud" (string)`,
    );
    expect(errorOf(() => loadConfig({ overrides: ["heartbeat.interval=soon"] }))).toStartWith(
      `-D flag: heartbeat.interval: expected a duration`,
    );
  });
});

describe("cross-key checks", () => {
  test("heartbeat.timeout must be greater than heartbeat.interval; the error names both keys and sources", () => {
    const file = tomlFile(`[heartbeat]\ntimeout = "1 s"\n`);
    expect(errorOf(() => loadConfig({ file }))).toBe(
      `heartbeat.timeout (1 s, from ${file}) must be greater than heartbeat.interval (1 s, default)`,
    );
    expect(errorOf(() => loadConfig({ env: { TM_HEARTBEAT_INTERVAL: "1 min" } }))).toBe(
      `heartbeat.timeout (6 s, default) must be greater than heartbeat.interval (1 min, from TM_HEARTBEAT_INTERVAL)`,
    );
  });

  test("execution.checkpointing.aligned-checkpoint-timeout must be shorter than execution.checkpointing.timeout", () => {
    expect(errorOf(() => loadConfig({ overrides: ["execution.checkpointing.aligned-checkpoint-timeout=10 min"] }))).toBe(
      `execution.checkpointing.aligned-checkpoint-timeout (10 min, from -D flag) must be shorter than execution.checkpointing.timeout (10 min, default)`,
    );
    expect(loadConfig({ overrides: ["execution.checkpointing.aligned-checkpoint-timeout=2 s"] })["execution.checkpointing.aligned-checkpoint-timeout"]).toBe(2000);
  });

  test("taskmanager.memory.min-segment-size must be at most taskmanager.memory.segment-size", () => {
    expect(errorOf(() => loadConfig({ overrides: ["taskmanager.memory.min-segment-size=65536"] }))).toBe(
      `taskmanager.memory.min-segment-size (65536, from -D flag) must be at most taskmanager.memory.segment-size (32768, default)`,
    );
  });

  test("a later source can fix what an earlier one broke", () => {
    const file = tomlFile(`heartbeat.timeout = "5 s"\n`);
    const config = loadConfig({ file, overrides: ["heartbeat.interval=1s"] });
    expect(config["heartbeat.timeout"]).toBe(5000);
    expect(config["heartbeat.interval"]).toBe(1000);
  });
});

describe("docs/configuration.md", () => {
  const markdown = readFileSync(join(import.meta.dir, "..", "docs", "configuration.md"), "utf8");
  // Rows of the key table: | `key` | type | `default` | `ENV_VAR` | description |
  const rows = markdown
    .split("\n")
    .filter((line) => line.startsWith("| `"))
    .map((line) => line.split(/(?<!\\)\|/).slice(1, -1).map((cell) => cell.trim()));
  const unquote = (cell: string) => cell.replace(/^`|`$/g, "").replace(/^"(.*)"$/, "$1");

  test("documents exactly the keys of CONFIG_KEYS, in the same order", () => {
    expect(rows.map((row) => unquote(row[0]!))).toEqual(CONFIG_KEYS.map((spec) => spec.key));
  });

  test("each row's env var, default and description match the schema", () => {
    for (const spec of CONFIG_KEYS) {
      const row = rows.find((r) => unquote(r[0]!) === spec.key)!;
      expect(unquote(row[3]!)).toBe(spec.envVar);
      // The documented default, given as a -D flag, must load to the schema's default.
      expect(loadConfig({ overrides: [`${spec.key}=${unquote(row[2]!)}`] })[spec.key]).toEqual(spec.default as never);
      expect(row[4]!.replaceAll("`", "")).toBe(spec.doc);
    }
  });
});
