// deploy/: the example configs load with the project's config loader, the systemd units and Kubernetes manifests
// name commands and flags the CLI accepts and agree with the configs (ports, probes, grace periods), and the units
// pass `systemd-analyze verify` where it exists. The Dockerfile is checked as text (no container engine here).
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { loadConfig, type Config } from "../src/config/index.ts";
import { BUN, Child, removeTempDirs, ROOT, tempDir } from "./helpers.ts";

afterAll(async () => {
  await Child.stopAll();
  removeTempDirs();
});

const DEPLOY = path.join(ROOT, "deploy");

function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

/** Loads a config file with no environment, as the binary would with `--config`. */
function load(file: string): Config {
  return loadConfig({ file, env: {} });
}

/** Runs `bun main.ts <args> --help`: the CLI rejects an unknown command or flag with exit 2 before --help. */
async function cliAccepts(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Child([BUN, "main.ts", ...args, "--help"]);
  const code = await child.exited(30_000);
  return { code, stdout: child.stdout, stderr: child.stderr };
}

function unitFile(name: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const line of fs.readFileSync(path.join(DEPLOY, "systemd", name), "utf8").split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (m) keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!]);
  }
  return keys;
}

function yamlDocs(file: string): any[] {
  const parsed = Bun.YAML.parse(fs.readFileSync(path.join(DEPLOY, "k8s", file), "utf8"));
  return Array.isArray(parsed) ? parsed : [parsed];
}

const configMap = yamlDocs("configmap.yaml")[0];

/** A ConfigMap entry written to a file and loaded like the mounted /etc/tm/<name>. */
function loadConfigMapEntry(name: string): Config {
  const file = path.join(tempDir(), name);
  fs.writeFileSync(file, configMap.data[name]);
  return load(file);
}

describe("deploy/", () => {
  test("every config file under deploy/ (and in the ConfigMap) loads without error", () => {
    const tomls = filesUnder(DEPLOY).filter((f) => f.endsWith(".toml"));
    expect(tomls.map((f) => path.relative(DEPLOY, f)).sort()).toEqual(["jm.toml", "tm.toml"]);
    for (const f of tomls) expect(() => load(f)).not.toThrow();
    expect(Object.keys(configMap.data).sort()).toEqual(["jm.toml", "tm.toml"]);
    for (const name of Object.keys(configMap.data)) expect(() => loadConfigMapEntry(name)).not.toThrow();
    // The example settings that the units and manifests rely on.
    const tm = load(path.join(DEPLOY, "tm.toml"));
    expect(tm["metrics.port"]).toBe(9249);
    expect(tm["taskmanager.registration.timeout"]).toBe(300_000);
    for (const key of ["taskmanager.tmp.dir", "taskmanager.state.dir", "state.checkpoints.dir"] as const) expect(tm[key]).toStartWith("/var/lib/tm/");
    expect(load(path.join(DEPLOY, "jm.toml"))["jobmanager.storage.dir"]).toStartWith("/var/lib/tm/");
  });

  describe("systemd units", () => {
    const units = { "taskmanager.service": "tm.toml", "jobmanager.service": "jm.toml" } as const;
    for (const [unit, toml] of Object.entries(units)) {
      test(`${unit}: ExecStart names a command and flags the CLI accepts, and the unit agrees with deploy/${toml}`, async () => {
        const u = unitFile(unit);
        const exec = u.get("ExecStart")![0]!.split(/\s+/);
        expect(exec[0]).toBe("/usr/local/bin/taskmanager");
        expect(exec.slice(-2)).toEqual(["--config", `/etc/tm/${toml}`]);
        const r = await cliAccepts(exec.slice(1));
        expect(r.code).toBe(0);
        expect(r.stdout).toContain(unit === "jobmanager.service" ? "Usage: taskmanager jobmanager" : "Usage: taskmanager [taskmanager]");
        expect(u.get("Type")).toEqual(["simple"]);
        expect(u.get("Restart")).toEqual(["on-failure"]);
        expect(u.get("KillSignal")).toEqual(["SIGTERM"]);
        expect(u.get("ProtectSystem")).toEqual(["strict"]);
        expect(u.get("User")).toEqual(["tm"]);
        expect(Number(u.get("LimitNOFILE")![0])).toBeGreaterThanOrEqual(65536);
        expect(u.get("EnvironmentFile")).toEqual(["/etc/tm/tm.env"]);
        expect(fs.readFileSync(path.join(DEPLOY, "systemd", "tm.env.example"), "utf8")).toMatch(/^TM_SECURITY_AUTH_SECRET=/m);
        // Every directory the config writes is inside the one writable path.
        const cfg = load(path.join(DEPLOY, toml));
        const writable = u.get("ReadWritePaths")![0]!;
        for (const key of ["taskmanager.tmp.dir", "taskmanager.state.dir", "state.checkpoints.dir", "jobmanager.storage.dir"] as const) {
          if (cfg[key]) expect(cfg[key]).toStartWith(writable + "/");
        }
        // systemd waits for the drain before SIGKILL.
        expect(Number(u.get("TimeoutStopSec")![0]) * 1000).toBeGreaterThan(cfg["taskmanager.shutdown.grace-period"]);
      });
    }

    const analyze = Bun.which("systemd-analyze");
    test.skipIf(analyze === null)("systemd-analyze verify accepts both units without a warning", async () => {
      // verify checks that ExecStart's binary exists: point it at a stand-in, nothing else changes.
      const dir = tempDir();
      const bin = path.join(dir, "taskmanager");
      fs.writeFileSync(bin, "#!/bin/sh\n", { mode: 0o755 });
      const files = Object.keys(units).map((unit) => {
        const f = path.join(dir, unit);
        fs.writeFileSync(f, fs.readFileSync(path.join(DEPLOY, "systemd", unit), "utf8").replaceAll("/usr/local/bin/taskmanager", bin));
        return f;
      });
      const child = new Child([analyze!, "verify", ...files]);
      const code = await child.exited(30_000);
      expect((child.stdout + child.stderr).trim()).toBe("");
      expect(code).toBe(0);
    });
  });

  describe("Kubernetes manifests", () => {
    const jm = yamlDocs("jobmanager.yaml");
    const tmDeployment = yamlDocs("taskmanager.yaml")[0];
    const secret = yamlDocs("secret.yaml")[0];
    const jmDeployment = jm.find((d) => d.kind === "Deployment");
    const service = jm.find((d) => d.kind === "Service");

    test("kinds, names and references agree", () => {
      expect(configMap.kind).toBe("ConfigMap");
      expect(secret.kind).toBe("Secret");
      expect(Object.keys(secret.stringData)).toEqual(["TM_SECURITY_AUTH_SECRET"]);
      expect(jmDeployment.apiVersion).toBe("apps/v1");
      expect(tmDeployment.kind).toBe("Deployment");
      for (const d of [jmDeployment, tmDeployment]) {
        expect(d.spec.selector.matchLabels).toEqual(d.spec.template.metadata.labels);
        const pod = d.spec.template.spec;
        expect(pod.securityContext.runAsNonRoot).toBe(true);
        expect(pod.volumes.find((v: any) => v.name === "config").configMap.name).toBe(configMap.metadata.name);
        const c = pod.containers[0];
        expect(c.envFrom[0].secretRef.name).toBe(secret.metadata.name);
        expect(c.volumeMounts.find((m: any) => m.name === "config").mountPath).toBe("/etc/tm");
      }
      expect(service.spec.selector).toEqual(jmDeployment.spec.template.metadata.labels);
      // TaskManagers reach the JobManager through the Service.
      const tmCfg = loadConfigMapEntry("tm.toml");
      expect(tmCfg["jobmanager.rpc.address"]).toBe(service.metadata.name);
      expect(tmDeployment.spec.template.spec.containers[0].env.find((e: any) => e.name === "TM_TASKMANAGER_HOST").valueFrom.fieldRef.fieldPath).toBe("status.podIP");
    });

    test("the containers' args are accepted by the CLI and name a ConfigMap entry", async () => {
      for (const [d, usage] of [[jmDeployment, "Usage: taskmanager jobmanager"], [tmDeployment, "Usage: taskmanager [taskmanager]"]] as const) {
        const args: string[] = d.spec.template.spec.containers[0].args;
        const r = await cliAccepts(args);
        expect(r.code).toBe(0);
        expect(r.stdout).toContain(usage);
        expect(configMap.data[path.basename(args[args.indexOf("--config") + 1]!)]).toBeDefined();
      }
    });

    test("ports and probes match the configs: rpc and rest on the Service, /healthz and /readyz", () => {
      const jmCfg = loadConfigMapEntry("jm.toml");
      const tmCfg = loadConfigMapEntry("tm.toml");
      const jmPorts = Object.fromEntries(jmDeployment.spec.template.spec.containers[0].ports.map((p: any) => [p.name, p.containerPort]));
      expect(jmPorts).toEqual({ rpc: jmCfg["jobmanager.rpc.port"], rest: jmCfg["rest.port"] });
      expect(Object.fromEntries(service.spec.ports.map((p: any) => [p.name, p.port]))).toEqual({ rpc: jmCfg["jobmanager.rpc.port"], rest: jmCfg["rest.port"] });
      expect(tmCfg["jobmanager.rpc.port"]).toBe(jmCfg["jobmanager.rpc.port"]);
      const tmPorts = Object.fromEntries(tmDeployment.spec.template.spec.containers[0].ports.map((p: any) => [p.name, p.containerPort]));
      expect(tmPorts).toEqual({ data: tmCfg["taskmanager.data.port"], metrics: tmCfg["metrics.port"] });
      for (const [d, port] of [[jmDeployment, "rest"], [tmDeployment, "metrics"]] as const) {
        const c = d.spec.template.spec.containers[0];
        expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port });
        expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port });
      }
    });

    test("state.checkpoints.dir of both pods is the ReadWriteMany claim, mounted at exactly that path (not a pod's emptyDir)", () => {
      const pvc = yamlDocs("checkpoints-pvc.yaml")[0];
      expect(pvc.kind).toBe("PersistentVolumeClaim");
      expect(pvc.spec.accessModes).toEqual(["ReadWriteMany"]);
      expect(pvc.spec.resources.requests.storage).toMatch(/^\d+[MGT]i$/);
      for (const [d, toml] of [[jmDeployment, "jm.toml"], [tmDeployment, "tm.toml"]] as const) {
        const cfg = loadConfigMapEntry(toml);
        const dir = cfg["state.checkpoints.dir"];
        expect({ toml, dir }).toEqual({ toml, dir: expect.stringMatching(/^\//) });
        const pod = d.spec.template.spec;
        const mounts: { name: string; mountPath: string }[] = pod.containers[0].volumeMounts;
        // The mount that holds the directory is the one with the longest path that contains it.
        const holder = mounts
          .filter((m) => dir === m.mountPath || dir.startsWith(m.mountPath.replace(/\/$/, "") + "/"))
          .sort((a, b) => b.mountPath.length - a.mountPath.length)[0]!;
        expect({ toml, mountPath: holder.mountPath }).toEqual({ toml, mountPath: dir });
        const volume = pod.volumes.find((v: any) => v.name === holder.name);
        expect({ toml, volume: volume.persistentVolumeClaim }).toEqual({ toml, volume: { claimName: pvc.metadata.name } });
        // Savepoints default to savepoints/ under the checkpoint storage: on the shared claim as well.
        expect(cfg["state.savepoints.dir"] === "" || cfg["state.savepoints.dir"].startsWith(dir + "/")).toBe(true);
      }
      // Both tomls name the same directory, so a checkpoint one pod writes is where the other looks.
      expect(loadConfigMapEntry("tm.toml")["state.checkpoints.dir"]).toBe(loadConfigMapEntry("jm.toml")["state.checkpoints.dir"]);
      // Every manifest is one of the known files (a new one gets its checks here).
      expect(fs.readdirSync(path.join(DEPLOY, "k8s")).sort()).toEqual(["checkpoints-pvc.yaml", "configmap.yaml", "jobmanager.yaml", "secret.yaml", "taskmanager.yaml"]);
    });

    test("the ConfigMap's comments do not claim that the REST API has no authentication", () => {
      expect(fs.readFileSync(path.join(DEPLOY, "k8s", "configmap.yaml"), "utf8")).not.toMatch(/no authentication/i);
    });

    test("the TaskManager's terminationGracePeriodSeconds is longer than its shutdown grace period", () => {
      const grace = loadConfigMapEntry("tm.toml")["taskmanager.shutdown.grace-period"];
      expect(tmDeployment.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(grace);
    });
  });

  test("Dockerfile: builds the binary with scripts/build (bun build --compile), runs as non-root, CMD the CLI accepts", async () => {
    const docker = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
    expect(docker).toMatch(/^RUN bash scripts\/build dist\/taskmanager/m);
    expect(fs.readFileSync(path.join(ROOT, "scripts/build"), "utf8")).toContain("bun build --compile");
    const user = [...docker.matchAll(/^USER (\S+)/gm)].at(-1)?.[1];
    expect(user).toMatch(/^[1-9]\d*:[1-9]\d*$/); // numeric and not 0, so runAsNonRoot can check it
    expect(docker).toContain('ENTRYPOINT ["/usr/local/bin/taskmanager"]');
    const cmd: string[] = JSON.parse(/^CMD (\[.*\])$/m.exec(docker)![1]!);
    const r = await cliAccepts(cmd);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Usage: taskmanager [taskmanager]");
    expect(fs.readFileSync(path.join(ROOT, ".dockerignore"), "utf8")).toMatch(/^node_modules$/m);
  });
});
