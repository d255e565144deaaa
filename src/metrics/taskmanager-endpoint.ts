// The TaskManager's HTTP endpoint: /metrics (Prometheus text), /healthz (the process serves) and /readyz
// (registered at a JobManager and not shutting down).
import { gauge, MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from "./exposition.ts";
import { eventLoopLag, processCollector } from "./process.ts";
import { taskFamilies, type TaskView } from "./task-metrics.ts";
import { json, startHttpServer, text, type HttpTls, type RunningHttpServer } from "./http-server.ts";

/** What the endpoint reads from a TaskExecutor. */
export interface TaskManagerView {
  readonly resourceId: string;
  readonly registered: boolean;
  readonly draining: boolean;
  taskViews(): TaskView[];
  slotUsage(): { total: number; used: number };
  networkBuffers(): { total: number; available: number; requiredInUse: number; optionalInUse: number };
}

export function taskManagerRegistry(tm: TaskManagerView): MetricsRegistry {
  return new MetricsRegistry()
    .add(processCollector("taskmanager"))
    .add(() => {
      const slots = tm.slotUsage();
      const buffers = tm.networkBuffers();
      const id = { resource_id: tm.resourceId };
      return [
        gauge("tm_taskmanager_registered", "1 while registered at a JobManager.", [{ labels: id, value: tm.registered ? 1 : 0 }]),
        gauge("tm_taskmanager_slots", "Task slots of this TaskManager.", [{ labels: id, value: slots.total }]),
        gauge("tm_taskmanager_slots_used", "Task slots allocated to a job.", [{ labels: id, value: slots.used }]),
        gauge("tm_taskmanager_network_buffers", "Network buffers of this TaskManager (Flink's TotalMemorySegments).", [{ labels: id, value: buffers.total }]),
        gauge("tm_taskmanager_network_buffers_available", "Network buffers no task holds.", [{ labels: id, value: buffers.available }]),
        gauge("tm_taskmanager_network_buffers_required", "Network buffers in use that tasks need at least (the sum of their minimums).", [{ labels: id, value: buffers.requiredInUse }]),
        gauge("tm_taskmanager_network_buffers_optional", "Network buffers in use beyond the tasks' minimums (given back when other tasks need them).", [{ labels: id, value: buffers.optionalInUse }]),
        gauge("tm_taskmanager_tasks", "Tasks deployed on this TaskManager.", [{ labels: id, value: tm.taskViews().length }]),
      ];
    })
    .add(() => taskFamilies(tm.taskViews()));
}

/** `tls`: HTTPS with this certificate and key (security.ssl.enabled), else plain HTTP. */
export async function startTaskManagerEndpoint(tm: TaskManagerView, host: string, port: number, onError: (err: Error) => void, tls: HttpTls | null = null): Promise<RunningHttpServer> {
  const registry = taskManagerRegistry(tm);
  eventLoopLag.acquire();
  try {
    const server = await startHttpServer(host, port, "metrics.port", (req) => {
      if (req.method !== "GET" && req.method !== "HEAD") return json({ errors: [`${req.method} is not allowed`] }, 405);
      switch (req.path) {
        case "/metrics":
          return text(registry.render(), 200, PROMETHEUS_CONTENT_TYPE);
        case "/healthz":
          return json({ status: "ok" });
        case "/readyz": {
          const ready = tm.registered && !tm.draining;
          return json({ status: ready ? "ready" : tm.draining ? "shutting down" : "not registered at a JobManager" }, ready ? 200 : 503);
        }
        default:
          return json({ errors: [`not found: ${req.path} (try /metrics, /healthz, /readyz)`] }, 404);
      }
    }, onError, tls);
    return {
      port: server.port,
      stop: async () => {
        eventLoopLag.release();
        await server.stop();
      },
    };
  } catch (err) {
    eventLoopLag.release();
    throw err;
  }
}
