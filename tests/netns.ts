// Test hosts in network namespaces: each host is a namespace with one veth (eth0, 10.231.7.x/24) whose other end
// sits on a bridge inside a hub namespace the test also made. Nothing is added to the test process's own
// namespace, so all traffic stays between namespaces the test created and removes. Cuts:
//  - cut(host): the host's link on the bridge goes down (it reaches nobody);
//  - cutPair(a, b): each of the two gets a permanent neighbour entry with a bogus MAC for the other, so their
//    frames to each other go nowhere while both still reach every other host (the JobManager among them).
import { spawnSync } from "node:child_process";

const SUBNET = "10.231.7";
const BOGUS_MAC = "02:00:5e:00:00:99";

function ip(args: string[], allowFailure = false): string {
  const r = spawnSync("ip", args, { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0 && !allowFailure) throw new Error(`ip ${args.join(" ")} failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** Why namespaces cannot be made here, or null when they can (root, iproute2, a kernel that allows it). */
export function netnsUnavailable(): string | null {
  if (process.platform !== "linux") return "network namespaces need Linux";
  if (process.getuid?.() !== 0) return "network namespaces need root";
  const probe = `tmprobe${process.pid}`;
  const r = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8", timeout: 10_000 });
  if (r.status !== 0) return `'ip netns add' failed: ${(r.stderr || r.error?.message || "").trim()}`;
  ip(["netns", "del", probe], true);
  return null;
}

export class TestNetwork {
  readonly hub: string;
  readonly hosts: string[];
  private destroyed = false;

  /** hostCount hosts: host i has address 10.231.7.(10 + i). */
  constructor(hostCount: number) {
    const prefix = `tm${process.pid % 100000}${Math.floor(Math.random() * 1000)}`;
    this.hub = `${prefix}hub`;
    this.hosts = Array.from({ length: hostCount }, (_, i) => `${prefix}h${i}`);
    try {
      ip(["netns", "add", this.hub]);
      ip(["-n", this.hub, "link", "set", "lo", "up"]);
      ip(["-n", this.hub, "link", "add", "br0", "type", "bridge"]);
      ip(["-n", this.hub, "link", "set", "br0", "up"]);
      this.hosts.forEach((ns, i) => {
        ip(["netns", "add", ns]);
        ip(["-n", ns, "link", "set", "lo", "up"]);
        // Both ends are made inside namespaces of ours: the veth is created in the hub with its peer in the host.
        ip(["-n", this.hub, "link", "add", `p${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ip(["-n", this.hub, "link", "set", `p${i}`, "master", "br0"]);
        ip(["-n", this.hub, "link", "set", `p${i}`, "up"]);
        ip(["-n", ns, "addr", "add", `${this.address(i)}/24`, "dev", "eth0"]);
        ip(["-n", ns, "link", "set", "eth0", "up"]);
      });
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  address(host: number): string {
    return `${SUBNET}.${10 + host}`;
  }

  /** The command that runs argv inside host i's namespace (ip netns exec execs it: the pid is the program's). */
  exec(host: number, argv: string[]): string[] {
    return ["ip", "netns", "exec", this.hosts[host]!, ...argv];
  }

  /** Host i reaches nobody until heal(i). */
  cut(host: number): void {
    ip(["-n", this.hub, "link", "set", `p${host}`, "down"]);
  }

  heal(host: number): void {
    ip(["-n", this.hub, "link", "set", `p${host}`, "up"]);
  }

  /** Hosts a and b cannot reach each other; both still reach everyone else. */
  cutPair(a: number, b: number): void {
    ip(["-n", this.hosts[a]!, "neigh", "replace", this.address(b), "lladdr", BOGUS_MAC, "dev", "eth0", "nud", "permanent"]);
    ip(["-n", this.hosts[b]!, "neigh", "replace", this.address(a), "lladdr", BOGUS_MAC, "dev", "eth0", "nud", "permanent"]);
  }

  healPair(a: number, b: number): void {
    ip(["-n", this.hosts[a]!, "neigh", "del", this.address(b), "dev", "eth0"], true);
    ip(["-n", this.hosts[b]!, "neigh", "del", this.address(a), "dev", "eth0"], true);
  }

  /** Removes every namespace (their veths and the bridge go with them). Kill the processes in them first. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const ns of [...this.hosts, this.hub]) ip(["netns", "del", ns], true);
  }

  /** Namespaces of this helper's naming left by a test run that was killed (best effort; only ours by prefix). */
  static listLeftovers(): string[] {
    return ip(["netns", "list"], true)
      .split("\n")
      .map((l) => l.split(" ")[0]!)
      .filter((n) => /^tm\d+(hub|h\d+)$/.test(n));
  }
}
