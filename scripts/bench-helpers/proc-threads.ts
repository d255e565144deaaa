// The threads of a process as Linux's /proc shows them: each thread's name and CPU time (user + system), and on
// request its context switches. Used by scripts/bench-checkpoint.ts (its own threads) and scripts/thread-cpu.ts (a
// child's). Threads that end between the listing and the read are left out; an empty list when the process is gone.
import * as fs from "node:fs";

/** USER_HZ: /proc's stat times count in 1/100 s on Linux. */
const TICKS_PER_SECOND = 100;

export type ProcThread = { tid: string; comm: string; cpuSeconds: number; voluntary?: number; involuntary?: number };

export function procThreads(pid: number | "self", contextSwitches = false): ProcThread[] {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: ProcThread[] = [];
  for (const tid of tids) {
    try {
      const dir = `/proc/${pid}/task/${tid}`;
      const comm = fs.readFileSync(`${dir}/comm`, "utf8").trim();
      // Fields after the ") " that ends the thread's name: utime and stime are the 12th and 13th.
      const stat = fs.readFileSync(`${dir}/stat`, "utf8").split(") ")[1]!.split(" ");
      const t: ProcThread = { tid, comm, cpuSeconds: (Number(stat[11]) + Number(stat[12])) / TICKS_PER_SECOND };
      if (contextSwitches) {
        const status = fs.readFileSync(`${dir}/status`, "utf8");
        t.voluntary = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
        t.involuntary = Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      }
      out.push(t);
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}
