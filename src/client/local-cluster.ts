// A JobManager and TaskManagers in one process on 127.0.0.1: what `local` runs a job on.
import { defaultConfig, type Config } from "../config/index.ts";
import type { JobManager } from "../jobmanager/jobmanager.ts";
import { startJobManager } from "../roles/jobmanager-role.ts";
import { TaskExecutor } from "../taskmanager/task-executor.ts";

export interface LocalCluster {
  jobManager: JobManager;
  /** The REST API's bound port. */
  restPort: number;
  taskManagers: TaskExecutor[];
  port: number;
  stop(): Promise<void>;
}

export async function startLocalCluster(opts: { taskManagers: number; slotsPerTaskManager: number; config?: Config }): Promise<LocalCluster> {
  const base = opts.config ?? defaultConfig();
  // REST and metrics on free ports: an in-process cluster must not collide with a running JobManager on 8081.
  const jmConfig: Config = { ...base, "jobmanager.rpc.address": "127.0.0.1", "jobmanager.rpc.port": 0, "rest.address": "127.0.0.1", "rest.port": 0, "metrics.port": 0 };
  const role = await startJobManager(jmConfig);
  const { jobManager, port, restPort } = role;
  const taskManagers: TaskExecutor[] = [];
  for (let i = 0; i < opts.taskManagers; i++) {
    const tm = new TaskExecutor({
      ...jmConfig,
      "jobmanager.rpc.port": port,
      "taskmanager.host": "127.0.0.1",
      "taskmanager.data.port": 0,
      "taskmanager.numberOfTaskSlots": opts.slotsPerTaskManager,
      "taskmanager.resource-id": base["taskmanager.resource-id"] ? `${base["taskmanager.resource-id"]}-${i}` : `local-tm-${i}`,
    });
    await tm.start();
    taskManagers.push(tm);
  }
  await Promise.all(taskManagers.map((tm) => tm.waitRegistered()));
  return {
    jobManager,
    restPort,
    taskManagers,
    port,
    async stop() {
      await Promise.all(taskManagers.map((tm) => tm.stop()));
      await role.stop();
    },
  };
}
