// Summing up refused connections per peer address and reason, for the listeners (listen.ts).
import type * as net from "node:net";
import type { Logger } from "../util/log.ts";

/**
 * Refused connections are summed up per peer address and reason, so that a flood of them (a scanner, a
 * misconfigured client in a loop, an attack) costs a few log lines, not one each: the first refusal is logged in
 * full, the ones that follow within REFUSAL_SUMMARY_INTERVAL_MS as one line with their count at the end of that
 * interval, and so on while they keep coming. 10 s: short enough that an operator watching the log sees a flood
 * while it happens, long enough that a flood of thousands a second costs one line per 10 s.
 */
export const REFUSAL_SUMMARY_INTERVAL_MS = 10_000;
/**
 * Peer address and reason pairs summed up at once. Refusals from many addresses (a scan of a whole network, spoofed
 * sources) beyond it are summed up together, as one line per interval, instead of one window each.
 */
export const MAX_REFUSAL_WINDOWS = 1024;
/** The key of the window for the refusals beyond MAX_REFUSAL_WINDOWS. */
const OTHERS = "\0others";

export class RefusalLog {
  private readonly windows = new Map<string, { count: number; timer: ReturnType<typeof setTimeout>; msg: string; address: string; fields: Record<string, unknown> }>();

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = REFUSAL_SUMMARY_INTERVAL_MS,
  ) {}

  refused(msg: string, socket: net.Socket | undefined, fields: Record<string, unknown>): void {
    const address = socket?.remoteAddress ?? "?";
    // Numbers in a reason (frame sizes, ports) do not make another reason: a peer cannot dodge the sum by varying them.
    const key = `${address}\0${msg}\0${String(fields.error ?? "").replace(/\d+/g, "#")}`;
    const w = this.windows.get(key);
    if (w) {
      w.count++;
      return;
    }
    if (this.windows.size >= MAX_REFUSAL_WINDOWS) {
      const others = this.windows.get(OTHERS);
      if (others) others.count++;
      else {
        this.open(OTHERS, "refused connections (from more addresses and reasons than are summed up one by one)", "many", {});
        this.windows.get(OTHERS)!.count = 1;
      }
      return;
    }
    this.log.warn(msg, { peer: `${address}:${socket?.remotePort}`, ...fields });
    this.open(key, msg, address, fields);
  }

  /** Logs the counts not yet logged (the listener closes). */
  flush(): void {
    for (const key of [...this.windows.keys()]) this.report(key, false);
  }

  private open(key: string, msg: string, address: string, fields: Record<string, unknown>): void {
    const timer = setTimeout(() => this.report(key, true), this.intervalMs);
    (timer as { unref?: () => void }).unref?.();
    this.windows.set(key, { count: 0, timer, msg, address, fields });
  }

  private report(key: string, reopen: boolean): void {
    const w = this.windows.get(key);
    if (!w) return;
    clearTimeout(w.timer);
    this.windows.delete(key);
    if (w.count === 0) return; // quiet for a whole interval: the next refusal is logged in full again
    this.log.warn(`${w.msg} (${w.count} more in the last ${Math.round(this.intervalMs / 1000)} s)`, { peer: w.address, ...w.fields, count: w.count });
    if (reopen) this.open(key, w.msg, w.address, w.fields);
  }
}

