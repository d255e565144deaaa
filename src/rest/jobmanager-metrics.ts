// The JobManager's /metrics: cluster (TaskManagers, slots, jobs by state), per job (state, uptime, restarts,
// checkpoints: counts, last duration and size) and process metrics.
import type { JobManagerGateway } from "../jobmanager/gateway.ts";
import type { JobState } from "../rpc/messages.ts";
import { counter, gauge, MetricsRegistry, type MetricFamily, type Sample } from "../metrics/exposition.ts";
import { processCollector } from "../metrics/process.ts";

const JOB_STATES: JobState[] = ["CREATED", "SCHEDULING", "RUNNING", "FINISHED", "FAILING", "FAILED", "CANCELING", "CANCELED", "RESTARTING"];

export function jobManagerRegistry(jm: JobManagerGateway): MetricsRegistry {
  return new MetricsRegistry()
    .add(processCollector("jobmanager"))
    .add(() => {
      const jobs = [...jm.jobs()];
      const slots = jm.slots();
      return [
        gauge("tm_jobmanager_taskmanagers", "TaskManagers registered.", [...jm.taskManagers()].length),
        gauge("tm_jobmanager_slots", "Task slots offered by the registered TaskManagers (Flink's taskSlotsTotal).", slots.total),
        gauge("tm_jobmanager_slots_available", "Task slots not allocated to a job.", slots.free),
        gauge("tm_jobmanager_jobs", "Jobs by state.", JOB_STATES.map((state) => ({ labels: { state }, value: jobs.filter((j) => j.state === state).length }))),
      ];
    })
    .add(() => jobFamilies(jm));
}

function jobFamilies(jm: JobManagerGateway): MetricFamily[] {
  const now = Date.now();
  const f = {
    state: [] as Sample[],
    uptime: [] as Sample[],
    restarts: [] as Sample[],
    adoptions: [] as Sample[],
    completed: [] as Sample[],
    failed: [] as Sample[],
    inProgress: [] as Sample[],
    lastDuration: [] as Sample[],
    lastSize: [] as Sample[],
    lastId: [] as Sample[],
    recordsIn: [] as Sample[],
    recordsOut: [] as Sample[],
  };
  for (const job of jm.jobs()) {
    const s = job.status();
    const labels = { job_id: s.jobId, job_name: s.name };
    for (const state of JOB_STATES) f.state.push({ labels: { ...labels, state }, value: s.state === state ? 1 : 0 });
    f.uptime.push({ labels, value: ((s.endTime ?? now) - s.startTime) / 1000 });
    f.restarts.push({ labels, value: s.restarts });
    f.adoptions.push({ labels, value: s.adoptions ?? 0 });
    f.completed.push({ labels, value: s.checkpoints.completed });
    f.failed.push({ labels, value: s.checkpoints.failed });
    f.inProgress.push({ labels, value: s.checkpoints.history.filter((h) => h.status === "IN_PROGRESS").length });
    const last = s.checkpoints.latest;
    if (last) {
      f.lastDuration.push({ labels, value: (last.durationMs ?? 0) / 1000 });
      f.lastSize.push({ labels, value: last.sizeBytes });
      f.lastId.push({ labels, value: last.id });
    }
    f.recordsIn.push({ labels, value: s.recordsIn });
    f.recordsOut.push({ labels, value: s.recordsOut });
  }
  return [
    gauge("tm_job_state", "1 for the job's current state, 0 for the others.", f.state),
    gauge("tm_job_uptime_seconds", "Seconds since the job was submitted (until it ended).", f.uptime),
    counter("tm_job_restarts_total", "Restarts of the job.", f.restarts),
    counter("tm_job_adoptions_total", "JobManager failovers in which the new leader adopted the job's running tasks (HA).", f.adoptions),
    counter("tm_job_checkpoints_completed_total", "Completed checkpoints (and savepoints) of the job.", f.completed),
    counter("tm_job_checkpoints_failed_total", "Failed or aborted checkpoints of the job.", f.failed),
    gauge("tm_job_checkpoints_in_progress", "Checkpoints of the job in progress.", f.inProgress),
    gauge("tm_job_last_checkpoint_duration_seconds", "Duration of the latest completed checkpoint.", f.lastDuration),
    gauge("tm_job_last_checkpoint_size_bytes", "Size of the latest completed checkpoint.", f.lastSize),
    gauge("tm_job_last_checkpoint_id", "Id of the latest completed checkpoint.", f.lastId),
    counter("tm_job_records_in_total", "Records read by the job's sources (as last reported by its tasks).", f.recordsIn),
    counter("tm_job_records_out_total", "Records written by the job's sinks (as last reported by its tasks).", f.recordsOut),
  ];
}
