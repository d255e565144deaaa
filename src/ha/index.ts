// The HA services a JobManager runs with, from high-availability.type.
import type { Config } from "../config/index.ts";
import { FileHaServices } from "./file-ha.ts";
import { haDir, NoHaServices, type HaServices } from "./ha-services.ts";

export { FencedError, NoHaServices, haDir, type HaServices, type JobRecord, type BrokenJob, type CheckpointPointer, type LeaderAddress } from "./ha-services.ts";
export { HaLockError } from "./file-ha.ts";

export function createHaServices(config: Config): HaServices {
  const dir = haDir(config);
  switch (config["high-availability.type"]) {
    case "none":
      return new NoHaServices();
    case "file":
      return new FileHaServices(dir!);
    case "etcd":
      throw new Error("high-availability.type = etcd is not available in this build");
  }
}
