// Registered TaskManagers and their slots, kept alive by heartbeats in both directions.
import type { RpcConnection } from "../rpc/rpc-connection.ts";
import type { ProcessStats, RegisterTaskManager } from "../rpc/messages.ts";
import { createLogger } from "../util/log.ts";

const log = createLogger("resourcemanager");

export interface RegisteredTaskManager {
  info: RegisterTaskManager;
  rpc: RpcConnection;
  /** slot index -> job id (null = free); only offered slots are present. */
  slots: Map<number, string | null>;
  lastHeartbeat: number;
  registeredAt: number;
  /** Heap, RSS and network buffers, from the TaskManager's latest heartbeat. */
  process?: ProcessStats;
}

export interface SlotAssignment {
  tm: RegisteredTaskManager;
  slot: number;
}

export class ResourceManager {
  readonly taskManagers = new Map<string, RegisteredTaskManager>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private slotWaiters: (() => void)[] = [];
  /** The leadership epoch every request to a TaskManager carries (0 without HA): TaskManagers refuse older ones. */
  epoch = 0;

  constructor(
    private readonly heartbeatIntervalMs: number,
    private readonly heartbeatTimeoutMs: number,
    private readonly onLost: (tm: RegisteredTaskManager, reason: string) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.heartbeatAll(), this.heartbeatIntervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const tm of this.taskManagers.values()) tm.rpc.close();
  }

  register(info: RegisterTaskManager, rpc: RpcConnection): void {
    const previous = this.taskManagers.get(info.resourceId);
    if (previous && previous.rpc !== rpc) this.markLost(previous, "re-registered from a new connection");
    this.taskManagers.set(info.resourceId, { info, rpc, slots: new Map(), lastHeartbeat: Date.now(), registeredAt: Date.now() });
    log.info("TaskManager registered", { id: info.resourceId, data: `${info.dataHost}:${info.dataPort}`, slots: info.slots });
    rpc.onClose((err) => {
      const tm = this.taskManagers.get(info.resourceId);
      if (tm && tm.rpc === rpc) this.markLost(tm, err?.message ?? "connection closed");
    });
  }

  offerSlots(resourceId: string, slots: number[]): number[] {
    const tm = this.taskManagers.get(resourceId);
    if (!tm) throw new Error(`TaskManager ${resourceId} is not registered`);
    const accepted = slots.filter((s) => Number.isInteger(s) && s >= 0 && s < tm.info.slots);
    for (const s of accepted) if (!tm.slots.has(s)) tm.slots.set(s, null);
    this.notifySlots();
    return accepted;
  }

  heartbeatFrom(resourceId: string): void {
    const tm = this.taskManagers.get(resourceId);
    if (tm) tm.lastHeartbeat = Date.now();
  }

  get freeSlots(): number {
    let n = 0;
    for (const tm of this.taskManagers.values()) for (const job of tm.slots.values()) if (job === null) n++;
    return n;
  }

  get totalSlots(): number {
    let n = 0;
    for (const tm of this.taskManagers.values()) n += tm.slots.size;
    return n;
  }

  /** Takes n free slots, spread round-robin over TaskManagers, or returns null when there are fewer. */
  allocate(jobId: string, n: number): SlotAssignment[] | null {
    if (this.freeSlots < n) return null;
    const free = [...this.taskManagers.values()].map((tm) => ({ tm, slots: [...tm.slots].filter(([, j]) => j === null).map(([s]) => s) }));
    const out: SlotAssignment[] = [];
    for (let round = 0; out.length < n; round++) {
      for (const f of free) {
        if (out.length < n && round < f.slots.length) out.push({ tm: f.tm, slot: f.slots[round]! });
      }
    }
    for (const a of out) a.tm.slots.set(a.slot, jobId);
    return out;
  }

  release(jobId: string): void {
    for (const tm of this.taskManagers.values()) for (const [s, j] of tm.slots) if (j === jobId) tm.slots.set(s, null);
    this.notifySlots();
  }

  /** Resolves when slots are offered or freed (or after timeoutMs). */
  waitForSlots(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.slotWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  private notifySlots(): void {
    for (const w of this.slotWaiters.splice(0)) w();
  }

  private heartbeatAll(): void {
    const now = Date.now();
    for (const tm of [...this.taskManagers.values()]) {
      if (now - tm.lastHeartbeat > this.heartbeatTimeoutMs) {
        this.markLost(tm, `no heartbeat for ${this.heartbeatTimeoutMs} ms`);
        continue;
      }
      tm.rpc.request("heartbeat", { from: "jobmanager", epoch: this.epoch }, this.heartbeatTimeoutMs).then(
        () => (tm.lastHeartbeat = Date.now()),
        () => {},
      );
    }
  }

  /** A TaskManager that says goodbye (shutdown) is removed like a lost one, without the alarm. */
  disconnect(resourceId: string, reason: string): void {
    const tm = this.taskManagers.get(resourceId);
    if (tm) this.markLost(tm, reason, true);
  }

  private markLost(tm: RegisteredTaskManager, reason: string, orderly = false): void {
    if (this.taskManagers.get(tm.info.resourceId) !== tm) return;
    this.taskManagers.delete(tm.info.resourceId);
    (orderly ? log.info : log.warn)(orderly ? "TaskManager disconnected; its slots are removed" : "TaskManager lost; its slots are freed", { id: tm.info.resourceId, reason });
    tm.rpc.close();
    this.onLost(tm, reason);
  }
}
