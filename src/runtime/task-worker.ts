// Entry point of a task's Worker (an extra entrypoint of the compiled binary: see scripts/build).
import { StreamTask, errorInfo, taskDisplayName } from "./stream-task.ts";
import type { FromWorker, ToWorker } from "./worker-protocol.ts";

declare const self: Worker;

const post = (msg: FromWorker, transfer?: Transferable[]) => self.postMessage(msg, transfer ?? []);
let task: StreamTask | null = null;
let name = "task";

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const msg = event.data;
  if (msg.type === "batch") for (const m of msg.messages) handle(m);
  else handle(msg);
};

function handle(msg: ToWorker): void {
  try {
    if (msg.type === "init") {
      name = taskDisplayName(msg.deployment);
      task = new StreamTask(msg.deployment, msg.network, msg.state, post, msg.autoWatermarkIntervalMs);
      void start(task, msg.artifactPath);
    } else {
      task?.onMessage(msg);
    }
  } catch (err) {
    post({ type: "failed", error: errorInfo(err, name) });
  }
}

async function start(t: StreamTask, artifactPath: string): Promise<void> {
  try {
    await t.init(artifactPath);
    const metrics = await t.run();
    post({ type: "finished", metrics });
  } catch (err) {
    post({ type: "failed", error: errorInfo(err, name) });
  }
}
