// The configuration schema: one table of every key, its type, default and doc line.
// One schema serves both tm.toml (TaskManager) and jm.toml (JobManager), like Flink's flink-conf.
// Keep docs/configuration.md in sync (tests/config.test.ts checks it).

export type LogLevel = "debug" | "info" | "warn" | "error";

/** The resolved configuration. Durations are numbers of milliseconds. */
export interface Config {
  "jobmanager.rpc.address": string;
  "jobmanager.rpc.port": number;
  "jobmanager.storage.dir": string;
  "jobmanager.slot-request.timeout": number;
  "jobstore.max-capacity": number;
  "jobstore.expiration-time": number;
  "high-availability.type": "none" | "file" | "etcd";
  "high-availability.storageDir": string;
  "high-availability.cluster-id": string;
  "high-availability.etcd.endpoints": string[];
  "high-availability.etcd.lease-ttl": number;
  "taskmanager.jobmanager-loss.grace-period": number;
  "security.auth.secret-file": string;
  "security.insecure": boolean;
  "security.ssl.enabled": boolean;
  "security.ssl.cert-file": string;
  "security.ssl.key-file": string;
  "security.ssl.ca-file": string;
  "security.ssl.client-auth": boolean;
  "rpc.max-frame-size": number;
  "rpc.handshake-timeout": number;
  "rpc.idle-timeout": number;
  "rpc.max-connections-per-address": number;
  "security.rest.token-file": string;
  "taskmanager.task.memory-limit": number;
  "taskmanager.task.bundle-runtime": boolean;
  "taskmanager.memory.process-limit": number;
  "taskmanager.resource-id": string;
  "taskmanager.host": string;
  "taskmanager.data.port": number;
  "taskmanager.numberOfTaskSlots": number;
  "taskmanager.tmp.dir": string;
  "taskmanager.memory.segment-size": number;
  "taskmanager.memory.process.size": number;
  "taskmanager.memory.network.fraction": number;
  "taskmanager.memory.network.min": number;
  "taskmanager.memory.network.max": number;
  "taskmanager.network.numberOfBuffers": number;
  "taskmanager.network.memory.buffers-per-channel": number;
  "taskmanager.network.memory.floating-buffers-per-gate": number;
  "taskmanager.network.memory.max-overdraft-buffers-per-gate": number;
  "taskmanager.network.memory.max-buffers-per-channel": number;
  "taskmanager.network.memory.buffer-debloat.enabled": boolean;
  "taskmanager.network.memory.buffer-debloat.target": number;
  "taskmanager.network.memory.buffer-debloat.period": number;
  "taskmanager.memory.min-segment-size": number;
  "taskmanager.network.tcp-connection.keepalive.interval": number;
  "taskmanager.network.tcp-connection.keepalive.timeout": number;
  "taskmanager.network.request-backoff.initial": number;
  "taskmanager.network.request-backoff.max": number;
  "taskmanager.registration.initial-backoff": number;
  "taskmanager.registration.max-backoff": number;
  "heartbeat.interval": number;
  "heartbeat.timeout": number;
  "execution.checkpointing.interval": number;
  "execution.checkpointing.mode": "EXACTLY_ONCE" | "AT_LEAST_ONCE";
  "execution.checkpointing.timeout": number;
  "execution.checkpointing.min-pause": number;
  "execution.checkpointing.max-concurrent-checkpoints": number;
  "execution.checkpointing.unaligned.enabled": boolean;
  "execution.checkpointing.aligned-checkpoint-timeout": number;
  "execution.checkpointing.checkpoints-after-tasks-finish": boolean;
  "state.checkpoints.dir": string;
  "state.checkpoints.num-retained": number;
  "state.savepoints.dir": string;
  "restart-strategy.type": "auto" | "none" | "fixed-delay" | "exponential-delay";
  "restart-strategy.fixed-delay.attempts": number;
  "restart-strategy.fixed-delay.delay": number;
  "restart-strategy.exponential-delay.initial-backoff": number;
  "restart-strategy.exponential-delay.max-backoff": number;
  "restart-strategy.exponential-delay.backoff-multiplier": number;
  "restart-strategy.exponential-delay.max-attempts": number;
  "restart-strategy.exponential-delay.reset-backoff-threshold": number;
  "parallelism.default": number;
  "pipeline.auto-watermark-interval": number;
  "pipeline.operator-chaining.keyed-at-parallelism-one": boolean;
  "pipeline.object-reuse": boolean;
  "state.backend": "heap" | "sqlite";
  "state.backend.sqlite.cache-size": number;
  "state.backend.incremental": boolean;
  "state.backend.local-recovery": boolean;
  "taskmanager.state.dir": string;
  "rest.address": string;
  "rest.port": number;
  "web.exception-history-size": number;
  "rest.allowed-hosts": string[];
  "rest.allowed-origins": string[];
  "metrics.port": number;
  "metrics.latency.interval": number;
  "taskmanager.shutdown.grace-period": number;
  "log.format": "text" | "json";
  "taskmanager.registration.timeout": number;
  "log.level": LogLevel;
}

export type ConfigKey = keyof Config;

export type ValueType =
  | { kind: "host" } // non-empty string without whitespace
  | { kind: "port" } // integer 0..65535
  | { kind: "string" } // any string, may be empty
  | { kind: "path" } // any string, may be empty (= a default location)
  | { kind: "integer"; min: number; max?: number }
  | { kind: "number"; min: number; max: number } // a decimal number, e.g. a fraction
  | { kind: "bytes"; min: number; max?: number } // bytes; written as 1073741824 or "1g", "64m", "512 kb"
  | { kind: "duration"; min?: number } // milliseconds; written as 500 or "500 ms", "10 s", "1.5 min"
  | { kind: "enum"; values: readonly string[] }
  | { kind: "list" } // strings: a TOML array, or one comma-separated string (env vars, -D flags)
  | { kind: "boolean" }; // true or false (in TOML a boolean, in env vars and -D flags the word)

export interface ConfigKeySpec {
  readonly key: ConfigKey;
  readonly type: ValueType;
  /** The default as it appears in Config (durations in milliseconds). */
  readonly default: string | number | boolean | readonly string[];
  readonly doc: string;
  /** Environment variable that sets this key, e.g. TM_HEARTBEAT_INTERVAL. */
  readonly envVar: string;
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

// Mapped over Config so that the compiler insists on exactly one entry per key, with a default of the right type.
const SCHEMA: { [K in ConfigKey]: { type: ValueType; default: Config[K]; doc: string } } = {
  "jobmanager.rpc.address": {
    type: { kind: "host" },
    default: "127.0.0.1",
    doc: "Address the JobManager binds its RPC port to, and that TaskManagers and clients connect to.",
  },
  "jobmanager.rpc.port": {
    type: { kind: "port" },
    default: 6123,
    doc: "JobManager RPC port (0 = pick a free port).",
  },
  "jobmanager.storage.dir": {
    type: { kind: "path" },
    default: "",
    doc: "Where the JobManager stores job artifacts by content hash; empty = a directory under the OS temp dir.",
  },
  "jobmanager.slot-request.timeout": {
    type: { kind: "duration" },
    default: 5 * MINUTE,
    doc: "How long a submitted job waits for enough free slots before it fails.",
  },
  "jobstore.max-capacity": {
    type: { kind: "integer", min: 1 },
    default: 2147483647,
    doc: "Finished, failed and canceled jobs the JobManager keeps (in /jobs, the dashboard and /metrics); beyond it the one that ended first is dropped.",
  },
  "jobstore.expiration-time": {
    type: { kind: "duration", min: 1 },
    default: 60 * MINUTE,
    doc: "How long the JobManager keeps a finished, failed or canceled job after its end.",
  },
  "high-availability.type": {
    type: { kind: "enum", values: ["none", "file", "etcd"] },
    default: "none",
    doc: "JobManager failover: none = a restarted JobManager remembers no job; file = jobs, artifacts and checkpoint pointers in high-availability.storageDir, one JobManager at a time (a lock file), a restarted one recovers every job; etcd = leader election and discovery through etcd, standbys take over.",
  },
  "high-availability.storageDir": {
    type: { kind: "path" },
    default: "",
    doc: "Where the HA services keep job graphs, job artifacts, checkpoint pointers and (file mode) the lock file; required when high-availability.type is not none; with etcd a directory every JobManager can reach.",
  },
  "high-availability.cluster-id": {
    type: { kind: "string" },
    default: "default",
    doc: "Separates clusters that share one etcd (the prefix of their keys) or one storage dir.",
  },
  "high-availability.etcd.endpoints": {
    type: { kind: "list" },
    default: [],
    doc: "etcd client URLs (http://host:port), for JobManagers (leader election) and for TaskManagers and clients (leader discovery) when high-availability.type = etcd.",
  },
  "high-availability.etcd.lease-ttl": {
    type: { kind: "duration", min: 1000 },
    default: 3 * SECOND,
    doc: "The leader's etcd lease: renewed every third of it; a leader that could not renew for two thirds of it steps down, and a standby takes over once it lapses.",
  },
  "taskmanager.jobmanager-loss.grace-period": {
    type: { kind: "duration" },
    default: 30 * SECOND,
    doc: "With HA on, how long a TaskManager keeps its tasks running after losing its JobManager while it reconnects, so that the new leader can adopt them, and how long a recovered job waits for them (0 = cancel at once and restore, as without HA); the JobManager's value governs, sent at registration.",
  },
  "security.auth.secret-file": {
    type: { kind: "path" },
    default: "",
    doc: "File holding the cluster's shared secret (at least 16 bytes, not the placeholder shipped in deploy/; a trailing newline is ignored) that every RPC and data connection proves in its handshake; empty = the environment variable TM_SECURITY_AUTH_SECRET, or no authentication. Never a -D flag.",
  },
  "security.insecure": {
    type: { kind: "boolean" },
    default: false,
    doc: "Allows RPC and data ports, and the REST API, on a non-loopback address without a shared secret (anyone who reaches them can run code there, or cancel jobs).",
  },
  "security.ssl.enabled": {
    type: { kind: "boolean" },
    default: false,
    doc: "TLS on every RPC and data connection, and HTTPS on the REST API and the metrics endpoints (all processes of a cluster must agree).",
  },
  "security.ssl.cert-file": {
    type: { kind: "path" },
    default: "",
    doc: "PEM certificate (chain) this process presents; required with TLS.",
  },
  "security.ssl.key-file": {
    type: { kind: "path" },
    default: "",
    doc: "PEM private key of security.ssl.cert-file (a key that does not match it stops the start, exit 2); required with TLS.",
  },
  "security.ssl.ca-file": {
    type: { kind: "path" },
    default: "",
    doc: "PEM CA certificate(s) that peers' certificates must chain to; empty = the system's CAs.",
  },
  "security.ssl.client-auth": {
    type: { kind: "boolean" },
    default: false,
    doc: "Mutual TLS: RPC and data ports require a client certificate that chains to security.ssl.ca-file.",
  },
  "rpc.max-frame-size": {
    type: { kind: "bytes", min: 65536, max: 1073741824 },
    default: 67108864,
    doc: "Largest frame body in bytes accepted on an RPC connection (job artifacts must fit); a larger frame closes that connection.",
  },
  "rpc.handshake-timeout": {
    type: { kind: "duration", min: 1 },
    default: 10 * SECOND,
    doc: "A connection that has not completed its handshake (TLS and authentication included) this long after accept is closed.",
  },
  "rpc.idle-timeout": {
    type: { kind: "duration" },
    default: 5 * MINUTE,
    doc: "A client connection to the JobManager that sends nothing and has no request being served for this long is closed (0 = never).",
  },
  "rpc.max-connections-per-address": {
    type: { kind: "integer", min: 0, max: 65535 },
    default: 256,
    doc: "Open connections one IP address may have to an RPC or data port, counted from accept; more are closed at once (0 = no limit).",
  },
  "security.rest.token-file": {
    type: { kind: "path" },
    default: "",
    doc: "File holding the bearer token that the REST API's mutating calls (cancel, savepoints) require; empty = the shared secret (security.auth.secret-file or TM_SECURITY_AUTH_SECRET), or none.",
  },
  "taskmanager.task.memory-limit": {
    type: { kind: "bytes", min: 0, max: 1099511627776 },
    default: 0,
    doc: "Bytes of JavaScript heap one task's Worker may hold; a task over it fails alone, the TaskManager lives on (0 = no limit).",
  },
  "taskmanager.task.bundle-runtime": {
    type: { kind: "boolean" },
    default: true,
    doc: "Running from source under Bun: task Workers load the runtime as one bundle built at start, as the compiled binary's do (faster task starts); false = from its source files, so that stack frames and CPU profiles of runtime code name them. No effect in the binary or under Deno.",
  },
  "taskmanager.memory.process-limit": {
    type: { kind: "bytes", min: 0, max: 1099511627776 },
    default: 0,
    doc: "Resident memory (RSS) of the TaskManager process above which a task Worker that has not answered a ping for 2 s is terminated and failed (0 = off).",
  },
  "taskmanager.resource-id": {
    type: { kind: "string" },
    default: "",
    doc: "Stable id of this TaskManager; empty = generated at start.",
  },
  "taskmanager.host": {
    type: { kind: "host" },
    default: "127.0.0.1",
    doc: "Address the TaskManager binds its data port to and advertises to peers.",
  },
  "taskmanager.data.port": {
    type: { kind: "port" },
    default: 0,
    doc: "Data port for record exchange between TaskManagers (0 = pick a free port).",
  },
  "taskmanager.numberOfTaskSlots": {
    type: { kind: "integer", min: 1, max: 1024 },
    default: 1,
    doc: "Number of task slots.",
  },
  "taskmanager.memory.segment-size": {
    type: { kind: "bytes", min: 4096, max: 16777216 },
    default: 32768,
    doc: "Size in bytes of one network buffer; records larger than a buffer span several.",
  },
  "taskmanager.memory.process.size": {
    type: { kind: "bytes", min: 0, max: 1099511627776 },
    default: 0,
    doc: "Memory of the TaskManager process that sizes its network memory (Flink's key); 0 = the machine's physical memory.",
  },
  "taskmanager.memory.network.fraction": {
    type: { kind: "number", min: 0, max: 1 },
    default: 0.1,
    doc: "Fraction of taskmanager.memory.process.size for network buffers, bounded by taskmanager.memory.network.min and .max (Flink's key); ignored when taskmanager.network.numberOfBuffers is set.",
  },
  "taskmanager.memory.network.min": {
    type: { kind: "bytes", min: 0, max: 1099511627776 },
    default: 64 * 1024 * 1024,
    doc: "Least network memory the fraction may give (Flink's key).",
  },
  "taskmanager.memory.network.max": {
    type: { kind: "bytes", min: 0, max: 1099511627776 },
    default: 1024 * 1024 * 1024,
    doc: "Most network memory the fraction may give (Flink's key).",
  },
  "taskmanager.network.numberOfBuffers": {
    type: { kind: "integer", min: 0, max: 1048576 },
    default: 0,
    doc: "Network buffers of this TaskManager (memory = this x segment size); set, it wins over the taskmanager.memory.network.* keys; 0 = sized from those keys.",
  },
  "taskmanager.network.memory.buffers-per-channel": {
    type: { kind: "integer", min: 1, max: 1024 },
    default: 2,
    doc: "Exclusive buffers of each remote input channel, and buffers per subpartition of a task's output pool; with floating-buffers-per-gate it also sizes each channel's ring between threads (slots = the sum).",
  },
  "taskmanager.network.memory.floating-buffers-per-gate": {
    type: { kind: "integer", min: 0, max: 65536 },
    default: 8,
    doc: "Floating buffers of an input gate (lent to channels with backlog) and extra buffers of an output pool; see buffers-per-channel for ring sizes.",
  },
  "taskmanager.network.memory.max-overdraft-buffers-per-gate": {
    type: { kind: "integer", min: 0, max: 1024 },
    default: 5,
    doc: "Buffers a task may take beyond its output pool to finish the record it is processing (as Flink's overdraft buffers).",
  },
  "taskmanager.network.memory.max-buffers-per-channel": {
    type: { kind: "integer", min: 1, max: 65536 },
    default: 10,
    doc: "Buffers of a task's output pool that one subpartition may hold, so that one blocked or slow consumer cannot take them all (Flink's max-buffers-per-channel).",
  },
  "taskmanager.network.memory.buffer-debloat.enabled": {
    type: { kind: "boolean" },
    default: false,
    doc: "Buffer debloating (FLIP-183, Flink's key): each task measures the throughput of its input gate and announces a buffer size that keeps about buffer-debloat.target of data in flight; producers cut their buffers at that size (local channels through the ring, remote ones with the credit). Back-pressured jobs then hold little in flight, and aligned checkpoints get through faster.",
  },
  "taskmanager.network.memory.buffer-debloat.target": {
    type: { kind: "duration", min: 1 },
    default: 1 * SECOND,
    doc: "Buffer debloating: the time it should take a task to consume the data in flight on its inputs (Flink's key).",
  },
  "taskmanager.network.memory.buffer-debloat.period": {
    type: { kind: "duration", min: 1 },
    default: 200,
    doc: "Buffer debloating: how often the throughput is measured and the buffer size recomputed (Flink's key).",
  },
  "taskmanager.memory.min-segment-size": {
    type: { kind: "bytes", min: 64, max: 16777216 },
    default: 256,
    doc: "Smallest buffer size buffer debloating announces, in bytes (Flink's key); at most taskmanager.memory.segment-size.",
  },
  "taskmanager.network.tcp-connection.keepalive.interval": {
    type: { kind: "duration", min: 10 },
    default: 2 * SECOND,
    doc: "Each data connection between TaskManagers sends a keepalive frame this often, so that both ends can tell a live but quiet peer from a cut or dead one.",
  },
  "taskmanager.network.tcp-connection.keepalive.timeout": {
    type: { kind: "duration", min: 100 },
    default: 10 * SECOND,
    doc: "A data connection on which nothing (data, credit or keepalive) arrived for this long is closed: the tasks using it fail naming the peer, and the job restarts. Also the time a TaskManager keeps retrying to connect to a peer before its consumers fail.",
  },
  "taskmanager.network.request-backoff.initial": {
    type: { kind: "duration", min: 1 },
    default: 100,
    doc: "First delay before a failed data connection attempt to a peer TaskManager is retried; doubled up to taskmanager.network.request-backoff.max, with random jitter (Flink's key).",
  },
  "taskmanager.network.request-backoff.max": {
    type: { kind: "duration", min: 1 },
    default: 2 * SECOND,
    doc: "Longest delay between data connection attempts to a peer TaskManager (Flink's key).",
  },
  "taskmanager.tmp.dir": {
    type: { kind: "path" },
    default: "",
    doc: "Where the TaskManager caches job artifacts; empty = under the OS temp dir.",
  },
  "taskmanager.registration.initial-backoff": {
    type: { kind: "duration" },
    default: 100,
    doc: "First retry delay when the JobManager cannot be reached.",
  },
  "taskmanager.registration.max-backoff": {
    type: { kind: "duration" },
    default: 10 * SECOND,
    doc: "Retry delay cap (the delay doubles up to it).",
  },
  "heartbeat.interval": {
    type: { kind: "duration", min: 1 },
    default: 1 * SECOND,
    doc: "How often each side sends a heartbeat (answered on the main thread, never behind a task).",
  },
  "heartbeat.timeout": {
    type: { kind: "duration" },
    default: 6 * SECOND,
    doc: "Peer declared lost after this long without a heartbeat; must be greater than heartbeat.interval.",
  },
  "execution.checkpointing.interval": {
    type: { kind: "duration" },
    default: 0,
    doc: "Checkpoint interval of jobs that do not call enableCheckpointing (0 = checkpointing off).",
  },
  "execution.checkpointing.mode": {
    type: { kind: "enum", values: ["EXACTLY_ONCE", "AT_LEAST_ONCE"] },
    default: "EXACTLY_ONCE",
    doc: "EXACTLY_ONCE aligns barriers (a task holds back inputs that delivered barrier n until all have); AT_LEAST_ONCE does not.",
  },
  "execution.checkpointing.timeout": {
    type: { kind: "duration", min: 1 },
    default: 10 * MINUTE,
    doc: "A checkpoint not complete after this long is aborted and its files removed; the job keeps running.",
  },
  "execution.checkpointing.min-pause": {
    type: { kind: "duration" },
    default: 0,
    doc: "Least time between the end of one checkpoint and the trigger of the next.",
  },
  "execution.checkpointing.max-concurrent-checkpoints": {
    type: { kind: "integer", min: 1, max: 16 },
    default: 1,
    doc: "Checkpoints in progress at once.",
  },
  "execution.checkpointing.unaligned.enabled": {
    type: { kind: "boolean" },
    default: false,
    doc: "Unaligned checkpoints (EXACTLY_ONCE): barriers overtake in-flight buffers, whose records are stored as channel state (the producer's output and the consumer's input channel state) and replayed on restore, so checkpoints complete under backpressure. Savepoints stay aligned.",
  },
  "execution.checkpointing.aligned-checkpoint-timeout": {
    type: { kind: "duration" },
    default: 0,
    doc: "With unaligned checkpoints: each checkpoint starts aligned, and a task whose alignment is still going on this long after the checkpoint was triggered switches it to unaligned (the in-flight records become channel state, the barrier it forwards overtakes). 0 = unaligned from the start. Ignored without execution.checkpointing.unaligned.enabled (Flink's key). Must be shorter than execution.checkpointing.timeout.",
  },
  "execution.checkpointing.checkpoints-after-tasks-finish": {
    type: { kind: "boolean" },
    default: true,
    doc: "FLIP-147: checkpoints go on after some tasks finished, and a task at the end of its input waits for a final checkpoint, which commits two-phase-commit sinks (the job ends up to one interval later).",
  },
  "state.checkpoints.dir": {
    type: { kind: "path" },
    default: "",
    doc: "Checkpoint storage, a directory every TaskManager and the JobManager can write (local disk or a shared mount); empty = checkpoints under jobmanager.storage.dir.",
  },
  "state.checkpoints.num-retained": {
    type: { kind: "integer", min: 1, max: 1000 },
    default: 1,
    doc: "Completed checkpoints kept per job; older ones are deleted.",
  },
  "state.savepoints.dir": {
    type: { kind: "path" },
    default: "",
    doc: "Default target of savepoints; empty = savepoints/ under the checkpoint storage.",
  },
  "restart-strategy.type": {
    type: { kind: "enum", values: ["auto", "none", "fixed-delay", "exponential-delay"] },
    default: "auto",
    doc: "What a job does after a task or TaskManager failure: restart from the latest checkpoint (fixed-delay, exponential-delay) or fail (none); auto = exponential-delay when checkpointing is on, else none.",
  },
  "restart-strategy.fixed-delay.attempts": {
    type: { kind: "integer", min: 0 },
    default: 3,
    doc: "Restarts before the job fails (fixed-delay).",
  },
  "restart-strategy.fixed-delay.delay": {
    type: { kind: "duration" },
    default: 1 * SECOND,
    doc: "Pause before each restart (fixed-delay).",
  },
  "restart-strategy.exponential-delay.initial-backoff": {
    type: { kind: "duration" },
    default: 1 * SECOND,
    doc: "Pause before the first restart (exponential-delay).",
  },
  "restart-strategy.exponential-delay.max-backoff": {
    type: { kind: "duration" },
    default: 1 * MINUTE,
    doc: "Longest pause between restarts (exponential-delay).",
  },
  "restart-strategy.exponential-delay.backoff-multiplier": {
    type: { kind: "integer", min: 1, max: 100 },
    default: 2,
    doc: "Each pause is the previous one times this (exponential-delay).",
  },
  "restart-strategy.exponential-delay.max-attempts": {
    type: { kind: "integer", min: 0 },
    default: 2147483647,
    doc: "Restarts before the job fails (exponential-delay).",
  },
  "restart-strategy.exponential-delay.reset-backoff-threshold": {
    type: { kind: "duration", min: 1 },
    default: 1 * HOUR,
    doc: "A job that ran this long since its last restart starts the backoff (and the attempts counted) over at its next failure (exponential-delay).",
  },
  "parallelism.default": {
    type: { kind: "integer", min: 1 },
    default: 1,
    doc: "Default parallelism of jobs.",
  },
  "pipeline.auto-watermark-interval": {
    type: { kind: "duration" },
    default: 200,
    doc: "How often a task asks its watermark generators for a watermark (periodic watermarks) and checks for idle inputs, unless the job sets its own (env.setAutoWatermarkInterval); 0 = periodic watermarks off.",
  },
  "pipeline.operator-chaining.keyed-at-parallelism-one": {
    type: { kind: "boolean" },
    default: true,
    doc: "Chain a keyBy edge whose producer and consumer both run at parallelism 1 (read by the client that builds the job graph): every record goes to the one consumer, so the keyed operator runs in its producer's task, without the exchange's serialization and hand-off between Workers (about 40 % less CPU for a keyed sum). Flink never chains a keyBy; false keeps its shape. startNewChain() (or disableChaining()) on the keyed operator keeps that one edge an exchange. Restoring an unaligned checkpoint whose records in flight were on such an edge needs the same chaining.",
  },
  "pipeline.object-reuse": {
    type: { kind: "boolean" },
    default: false,
    doc: "Object reuse for jobs that do not choose (env.getConfig().enableObjectReuse(); read by the client that builds the job graph), as Flink's key: a keyed reduce or sum keeps a key's first record itself as its accumulator (as Flink's reduce does), hands that object to the operators chained after it instead of a copy, and changes it in place with the key's next record. Faster (no allocation per record), but a function must not keep or change a record it was given, nor change one it emitted. Off: a keyed reduce copies the first record and every value it emits.",
  },
  "state.backend": {
    type: { kind: "enum", values: ["heap", "sqlite"] },
    default: "heap",
    doc: "Keyed state backend of jobs that do not choose one: heap (fastest, state must fit in memory) or sqlite (one database file per task, state larger than memory).",
  },
  "state.backend.sqlite.cache-size": {
    type: { kind: "bytes", min: 1048576, max: 68719476736 },
    default: 67108864,
    doc: "Memory budget of the SQLite backend per task: half is SQLite's page cache, a quarter the object cache in front of it, and SQLite maps up to this much of the database file.",
  },
  "state.backend.incremental": {
    type: { kind: "boolean" },
    default: false,
    doc: "Incremental checkpoints (SQLite backend): a checkpoint writes only the rows changed since the last completed one and references the earlier files; savepoints stay full. The heap backend always writes full checkpoints.",
  },
  "state.backend.local-recovery": {
    type: { kind: "boolean" },
    default: false,
    doc: "Local recovery: a task also keeps a copy of its latest completed checkpoint's keyed state on its TaskManager, and a task restarted there restores from that copy (checked against the checkpoint's sizes and checksums) instead of checkpoint storage.",
  },
  "taskmanager.state.dir": {
    type: { kind: "path" },
    default: "",
    doc: "Where tasks keep their SQLite state files; empty = under the TaskManager's temp dir.",
  },
  "rest.address": {
    type: { kind: "host" },
    default: "127.0.0.1",
    doc: "Address the JobManager's REST API, web dashboard and /metrics bind to.",
  },
  "rest.port": {
    type: { kind: "port" },
    default: 8081,
    doc: "Port of the JobManager's REST API, web dashboard and /metrics (0 = pick a free port; local always picks one).",
  },
  "web.exception-history-size": {
    type: { kind: "integer", min: 1, max: 1000 },
    default: 16,
    doc: "Failures kept per job in its exception history (REST /jobs/<id>/exceptions, the dashboard); older ones are dropped.",
  },
  "rest.allowed-hosts": {
    type: { kind: "list" },
    default: [],
    doc: "Host names (optionally name:port) the REST API answers besides rest.address (and, on a loopback or wildcard address, loopback names and this host's addresses); a request whose Host header names another is refused with 403 (DNS rebinding); * = any.",
  },
  "rest.allowed-origins": {
    type: { kind: "list" },
    default: [],
    doc: "Origins (scheme://host:port) besides the REST API's own whose web pages may make mutating calls (cancel, savepoints) and get CORS headers; * = any.",
  },
  "metrics.port": {
    type: { kind: "port" },
    default: 0,
    doc: "Port of a TaskManager's /metrics, /healthz and /readyz, bound on taskmanager.host (0 = pick a free port; the bound port is logged).",
  },
  "metrics.latency.interval": {
    type: { kind: "duration" },
    default: 0,
    doc: "Latency tracking (Flink's key): on the JobManager, sources of every job emit a latency marker this often; each operator records how long markers took to reach it (p50/p95/p99/max per operator and source subtask, on /metrics as tm_task_latency_seconds, in REST and on the dashboard). 0 = off; a job's env.setLatencyTrackingInterval(ms) overrides it.",
  },
  "taskmanager.shutdown.grace-period": {
    type: { kind: "duration" },
    default: 10 * SECOND,
    doc: "On SIGTERM a TaskManager stops taking work, tells the JobManager and cancels its tasks; it exits at the latest after this long (a second SIGTERM exits at once).",
  },
  "log.format": {
    type: { kind: "enum", values: ["text", "json"] },
    default: "text",
    doc: "Log lines as human-readable text or as one JSON object per line.",
  },
  "taskmanager.registration.timeout": {
    type: { kind: "duration" },
    default: 5 * MINUTE,
    doc: "A TaskManager not registered at a JobManager for this long (at start or after losing it) exits with code 5 once a last attempt at that deadline fails; it keeps retrying until then (0 = retry forever).",
  },
  "log.level": {
    type: { kind: "enum", values: ["debug", "info", "warn", "error"] },
    default: "info",
    doc: "Log level.",
  },
};

/** `TM_` + the key upper-cased, with `.` and `-` turned into `_`. */
export function envVarFor(key: string): string {
  return "TM_" + key.toUpperCase().replace(/[.-]/g, "_");
}

export const CONFIG_KEYS: readonly ConfigKeySpec[] = Object.freeze(
  (Object.keys(SCHEMA) as ConfigKey[]).map((key) =>
    Object.freeze({ key, ...SCHEMA[key], envVar: envVarFor(key) }),
  ),
);
