// State far larger than the cache: 5 million keys written to the SQLite backend with a 64 MiB cache, in a child
// process whose RSS is sampled from /proc/<pid>/status. The child yields to the event loop after every 1024
// records, as a task's mailbox loop does after every batch.
import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const KEYS = 5_000_000;
const CACHE_BYTES = 64 * 1024 * 1024;
/** The bound on the child's peak RSS: the 64 MiB cache (~90 MB of live JS objects), SQLite's 16 MiB page cache,
 *  the runtime itself (~50 MB), and garbage between collections. Measured: ~300 MB. */
const RSS_BOUND_MB = 400;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tm-state-rss-"));
let childPid: number | undefined;
afterAll(() => {
  if (childPid !== undefined) {
    try {
      process.kill(childPid, "SIGKILL");
    } catch {}
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

function rssKb(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined; // the process has exited
  }
}

test(`${KEYS / 1e6} million keys with a ${CACHE_BYTES / 2 ** 20} MiB cache stay under ${RSS_BOUND_MB} MB RSS and read back correctly`, async () => {
  const db = path.join(dir, "state.db");
  const fixture = path.join(import.meta.dir, "fixtures", "state-rss-child.ts");
  const child = Bun.spawn([process.execPath, fixture, db, String(KEYS), String(CACHE_BYTES)], { stdout: "pipe", stderr: "pipe" });
  childPid = child.pid;
  let peakKb = 0;
  let samples = 0;
  const timer = setInterval(() => {
    const kb = rssKb(child.pid);
    if (kb !== undefined) {
      samples++;
      peakKb = Math.max(peakKb, kb);
    }
  }, 100);
  const [code, stdout, stderr] = await Promise.all([child.exited, new Response(child.stdout).text(), new Response(child.stderr).text()]);
  clearInterval(timer);
  childPid = undefined;
  if (code !== 0) throw new Error(`child exited with ${code}:\n${stderr}`);
  const result = JSON.parse(stdout.trim().split("\n").at(-1)!) as { writeSecs: number; checked: number; wrongCount: number; wrong: string[]; cache: { usedBytes: number; limitBytes: number } };
  const peakMb = peakKb / 1024;
  console.log(`[state-rss] ${KEYS} keys written in ${result.writeSecs.toFixed(1)} s; peak RSS ${peakMb.toFixed(0)} MB over ${samples} samples; database ${(fs.statSync(db).size / 2 ** 20).toFixed(0)} MiB`);
  expect(samples).toBeGreaterThan(10);
  expect(result.wrong).toEqual([]);
  expect(result.checked).toBe(5000);
  expect(result.cache.usedBytes).toBeLessThanOrEqual(result.cache.limitBytes);
  // The state really is far larger than the cache: most of it lives in the database file.
  expect(fs.statSync(db).size).toBeGreaterThan(3 * CACHE_BYTES);
  expect(peakMb).toBeLessThan(RSS_BOUND_MB);
  // It asserts memory, not time: 5 M writes take about 30 s alone and over 90 s on a loaded 2-core machine.
}, 240_000);

test("the object cache's estimate of map entries matches their heap bytes (string keys, a fresh string per record)", async () => {
  // q16's shape: thousands of user keys under each of a few thousand string keys, each record building its key
  // anew. The estimate is what the budget is enforced with, so it must not fall short of the real heap; the
  // entries share their node's key string, which makes both about 50 bytes smaller than one string per entry.
  const { createKeyedStateBackend, MapStateDescriptor } = await import("../src/state/index.ts");
  const b = await createKeyedStateBackend({ kind: "sqlite", path: path.join(dir, "map-estimate.db"), maxParallelism: 128, keyGroupRange: { start: 0, end: 127 }, objectCacheBytes: 1024 * 1024 * 1024 });
  const m = b.getMapState(new MapStateDescriptor<number, number>("m"));
  Bun.gc(true);
  const heap0 = process.memoryUsage().heapUsed;
  const n = 400_000;
  for (let i = 0; i < n; i++) {
    b.setCurrentKey(`channel-${i % 2000}|2026-12-03`);
    m.put(i, 1 << (i % 4));
  }
  Bun.gc(true);
  const heapPerEntry = (process.memoryUsage().heapUsed - heap0) / n;
  const estimatePerEntry = (b as unknown as { cacheStats(): { usedBytes: number } }).cacheStats().usedBytes / n;
  console.log(`[map-estimate] heap ${heapPerEntry.toFixed(0)} B, estimate ${estimatePerEntry.toFixed(0)} B per map entry`);
  // (Close at this shape; the Maps' power-of-two tables make the heap up to 15 % more at other fill levels.)
  expect(estimatePerEntry).toBeGreaterThan(heapPerEntry * 0.8);
  expect(estimatePerEntry).toBeLessThan(heapPerEntry * 1.25);
  expect(heapPerEntry).toBeLessThan(305); // one key string per node, not per entry (332 B with a copy each)
  await b.close();
});
