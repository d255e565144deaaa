// The web dashboard in a real headless Chromium (Debian's chromium driven by playwright-core) against a running
// cluster: the overview lists the job, the job page draws its operator graph with live figures, subtasks (attempt,
// host, duration, busy and back-pressured ratios) and checkpoints, the TaskManagers page shows the slots and each
// TaskManager's page its heap, RSS, network buffers, tasks, masked configuration and log; a job that fails shows its
// exceptions, why it waits while RESTARTING, its watermarks and its failed operator in red. A screenshot of each
// page goes to a temp dir.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { defaultConfig } from "../src/config/index.ts";
import { networkSizing } from "../src/network/buffer-budget.ts";
import { startLocalCluster, type LocalCluster } from "../src/client/local-cluster.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/rpc-connection.ts";
import { setLogLevel } from "../src/util/log.ts";
import { removeTempDirs, tempDir, waitFor, writeJob } from "./helpers.ts";
import { opsJobSource } from "./ops-job.ts";

const CHROMIUM = "/usr/bin/chromium";
let cluster: LocalCluster;
let client: RpcConnection;
let browser: BrowserContext;
let page: Page;
let base: string;
let jobId: string;
let shots: string;
let dir: string;
/** Set as security.ssl.key-file (TLS stays off): the configuration pages must mask it. */
let keyFile: string;

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
  setLogLevel("warn");
  dir = tempDir("tm-dashboard-");
  keyFile = path.join(dir, "private-key-do-not-show.pem");
  // TM_SCREENSHOT_DIR keeps the screenshots for a look; by default they go to the temp dir.
  shots = process.env.TM_SCREENSHOT_DIR ? path.resolve(process.env.TM_SCREENSHOT_DIR) : path.join(dir, "screenshots");
  fs.mkdirSync(shots, { recursive: true });
  // One restart 3 s after a failure: the failing job's page shows the delay, then the job fails for good.
  const config = { ...defaultConfig(), "heartbeat.interval": 200, "log.level": "warn" as const, "security.ssl.key-file": keyFile, "restart-strategy.type": "fixed-delay" as const, "restart-strategy.fixed-delay.attempts": 1, "restart-strategy.fixed-delay.delay": 3000 };
  cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config });
  base = `http://127.0.0.1:${cluster.restPort}`;
  client = await connectClient("127.0.0.1", cluster.port);
  jobId = await submitJob(client, await prepareJob(writeJob(dir, "ops.ts", opsJobSource("dashboard-demo")), [], 2));
  await waitFor("the job running", async () => (await client.request("jobStatus", { jobId })).state === "RUNNING", 20_000);
  // A fresh profile in the temp dir (playwright passes it as --user-data-dir).
  browser = await chromium.launchPersistentContext(path.join(dir, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 900 },
    timeout: 30_000,
  });
  page = browser.pages()[0] ?? (await browser.newPage());
}, 60_000);

afterAll(async () => {
  await browser?.close();
  client?.close();
  await cluster?.stop();
  removeTempDirs();
});

async function screenshot(name: string): Promise<void> {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  const png = fs.readFileSync(file);
  expect(png.subarray(1, 4).toString()).toBe("PNG");
  expect(png.length).toBeGreaterThan(5_000);
}

describe("dashboard", () => {
  test("the overview shows the cluster and lists the running job", async () => {
    await page.goto(base + "/");
    await page.getByText("dashboard-demo").waitFor({ timeout: 10_000 });
    const body = await page.locator("main").innerText();
    expect(body).toContain("Cluster overview");
    expect(body).toMatch(/1\s*TaskManagers/);
    expect(body).toMatch(/0 \/ 2\s*Slots available \/ total/);
    const row = page.locator("tr", { hasText: "dashboard-demo" });
    expect(await row.innerText()).toContain("RUNNING");
    await screenshot("overview");
  }, 20_000);

  test("the job page draws the operator graph with parallelism and live records/s, and the checkpoint history", async () => {
    await page.getByRole("link", { name: "dashboard-demo" }).click();
    await page.waitForURL(`**/#/job/${jobId}`);
    await expect(page.locator("#job-name").innerText()).resolves.toContain("dashboard-demo");
    const vertices = page.locator("g.vertex");
    await waitFor("two vertices", async () => (await vertices.count()) === 2, 10_000);
    const sink = page.locator("g.vertex", { hasText: "Sums -> Slow Sink" });
    expect(await sink.locator("text").allTextContents()).toContain("Parallelism: 2 · RUNNING");
    // The page refreshes every second: the sink's rate becomes non-zero once the REST API has sampled it.
    await waitFor("a non-zero records/s in the graph", async () => {
      const t = (await sink.locator("text").allTextContents()).join(" ");
      return /in [1-9][\d.]* ?k?\/s/.test(t);
    }, 10_000);
    expect(["ok", "low", "high"]).toContain((await page.locator("g.vertex").first().getAttribute("data-backpressure"))!);
    expect(await page.locator("h1").innerText()).toContain("RUNNING");
    // The job's execution config (GET /jobs/:id/config), as Flink's Configuration tab.
    expect(await page.locator("#job-config tbody tr", { hasText: "object-reuse-mode" }).locator("td").allInnerTexts()).toEqual(["object-reuse-mode", "false"]);
    expect(await page.locator("#job-config tbody tr", { hasText: "job-parallelism" }).locator("td").allInnerTexts()).toEqual(["job-parallelism", "2"]);
    await page.locator("#checkpoints").waitFor({ timeout: 10_000 });
    // A checkpoint completes within a second or so; under load it can take longer, so wait for the row.
    await waitFor("a COMPLETED checkpoint in the history", async () => (await page.locator("#checkpoints").innerText()).includes("COMPLETED"), 15_000);
    // Subtasks: attempt 0 on 127.0.0.1, a duration, and busy and back-pressured ratios as numbers.
    const rows = page.locator("#subtasks tbody tr");
    expect(await rows.count()).toBe(4);
    const sinkRow = page.locator("#subtasks tbody tr", { hasText: "Sums -> Slow Sink" }).first();
    const cells = await sinkRow.locator("td").allInnerTexts();
    expect(cells[2]).toBe("0"); // attempt
    expect(cells[5]).toBe("127.0.0.1");
    expect(cells[6]).toMatch(/^[\d.]+ s$|^\d+ m \d+ s$/);
    // The slow sink is busy most of the time: its busy ratio is a real number, not a level.
    await waitFor("the sink's busy ratio above 0 %", async () => {
      const busy = await page.locator("#subtasks tbody tr", { hasText: "Sums -> Slow Sink" }).first().locator("td.busy-ratio").innerText();
      return /^\d+%$/.test(busy) && Number(busy.slice(0, -1)) > 0;
    }, 10_000);
    expect(await sinkRow.locator("td.bp-ratio").innerText()).toMatch(/^\d+%$/);
    expect(await page.locator("#exceptions-none").innerText()).toBe("No failures.");
    await screenshot("job");
  }, 30_000);

  test("the page has a favicon that renders", async () => {
    const href = await page.locator('link[rel="icon"]').getAttribute("href");
    expect(href).toStartWith("data:image/svg+xml,");
    const width = await page.evaluate((src) => new Promise<number>((resolve) => {
      const img = new Image();
      img.onload = () => resolve(img.naturalWidth);
      img.onerror = () => resolve(0);
      img.src = src;
    }), href!);
    expect(width).toBeGreaterThan(0);
  }, 10_000);

  test("the TaskManagers page shows each TaskManager with its slots", async () => {
    await page.getByRole("link", { name: "TaskManagers" }).click();
    const table = page.locator("#taskmanagers");
    await table.waitFor({ timeout: 10_000 });
    const text = await table.innerText();
    expect(text).toContain("local-tm-0");
    expect(text).toContain("2 / 2");
    await screenshot("taskmanagers");
  }, 20_000);

  test("a TaskManager's page shows its heap, RSS, network buffers, tasks, masked configuration and log", async () => {
    await page.goto(`${base}/#/taskmanagers`);
    await page.getByRole("link", { name: "local-tm-0" }).click();
    await page.waitForURL("**/#/taskmanager/local-tm-0");
    // Heap and RSS come with heartbeats (every 200 ms here).
    await waitFor("heap and RSS figures", async () => /RSS/.test(await page.locator("#tm-cards").innerText().catch(() => "")) && !(await page.locator("#tm-cards").innerText()).includes("-\nRSS"), 10_000);
    const cards = await page.locator("#tm-cards").innerText();
    // The unit follows the size (a test process can pass 1 GiB of RSS).
    expect(cards).toMatch(/[\d.]+ [KMG]iB \/ [\d.]+ [KMG]iB\s*Heap used \/ committed/);
    expect(cards).toMatch(/[\d.]+ [KMG]iB\s*RSS/);
    const buffers = /(\d+) \/ (\d+)\s*Network buffers used \/ total/.exec(cards);
    expect(buffers).not.toBeNull();
    expect(Number(buffers![2])).toBe(networkSizing(defaultConfig(), os.totalmem()).totalBuffers);
    expect(Number(buffers![1])).toBeGreaterThan(0); // the running job's tasks hold buffers
    // How the pool is split: the tasks' minimums and the optional buffers beyond them, and per task held / configured.
    const split = /(\d+) \+ (\d+)\s*Network buffers required \+ optional in use/.exec(cards);
    expect(split).not.toBeNull();
    expect(Number(split![1]) + Number(split![2])).toBe(Number(buffers![1]));
    expect(await page.locator("#tm-network-sizing").innerText()).toContain("taskmanager.memory.network.fraction");
    const tasks = await page.locator("#tm-tasks").innerText();
    expect(tasks).toContain("Numbers -> Doubler");
    expect(tasks).toContain("Sums -> Slow Sink");
    expect(tasks).toMatch(/Sums -> Slow Sink.*\s\d+ \/ \d+ \(\d+\)/);
    const config = await page.locator("#tm-config").innerText();
    expect(config).toMatch(/taskmanager\.numberOfTaskSlots\s+2/);
    expect(config).toMatch(/security\.ssl\.key-file\s+\*{6}/);
    expect(config).not.toContain("private-key-do-not-show");
    await page.locator("#tm-logs").waitFor({ timeout: 5_000 });
    await screenshot("taskmanager");
  }, 20_000);

  test("canceling from the job page cancels the job", async () => {
    await page.goto(`${base}/#/job/${jobId}`);
    page.once("dialog", (d) => void d.accept());
    await page.locator("#cancel").click({ timeout: 10_000 });
    await waitFor("the job canceled", async () => (await client.request("jobStatus", { jobId })).state === "CANCELED", 15_000);
    await page.locator("h1", { hasText: "CANCELED" }).waitFor({ timeout: 10_000 });
  }, 30_000);

  test("a failing job: its watermarks, its exception and why it waits while RESTARTING, then its failed operator in red", async () => {
    // About 1000 records/s (1 ms per record); "Exploder" throws at record 3000 on every attempt: one restart, then FAILED.
    const job = writeJob(dir, "failing.ts", `
      import { WatermarkStrategy } from ${JSON.stringify(path.resolve("src/api/index.ts"))};
      const pause = new Int32Array(new SharedArrayBuffer(4));
      export default (env) => {
        env.setJobName("dash-failing");
        env.fromSequence(1, 1e12).name("Events")
          .assignTimestampsAndWatermarks(WatermarkStrategy.forMonotonousTimestamps().withTimestampAssigner((n) => 1700000000000 + n * 1000))
          .keyBy((n) => n % 4)
          .process({ processElement(n, ctx, out) {
            Atomics.wait(pause, 0, 0, 1);
            if (n === 3000) throw new Error("boom in Exploder at record 3000");
            out.collect(n);
          } }).name("Exploder").startNewChain() // its own vertex at parallelism 1 too: the failed one in red
          .addSink(() => {}).name("Sink");
      };`);
    const failingId = await submitJob(client, await prepareJob(job, [], 1));
    await page.goto(`${base}/#/job/${failingId}`);
    await page.locator("#watermarks").waitFor({ timeout: 10_000 });
    // Event time 1700000000000 + n s: a watermark in November 2023 once the source has reported one.
    await waitFor("a watermark in the watermarks table", async () => (await page.locator("#watermarks").innerText()).includes("2023-11-"), 15_000);
    await page.locator("#exceptions", { hasText: "boom in Exploder at record 3000" }).waitFor({ timeout: 20_000 });
    expect(await page.locator("#exceptions").innerText()).toContain("local-tm-0");
    await page.locator("#waiting", { hasText: /RESTARTING: restarting in \d+\.\d s/ }).waitFor({ timeout: 10_000 });
    await screenshot("job-restarting");
    await page.locator("h1", { hasText: "FAILED" }).waitFor({ timeout: 30_000 });
    await waitFor("both attempts' failures in the history", async () => (await page.locator("#exceptions tbody tr").count()) === 2, 10_000);
    const failed = page.locator('g.vertex[data-status="FAILED"]');
    expect(await failed.count()).toBe(1);
    expect(await failed.locator("text").first().textContent()).toContain("Exploder");
    expect(await failed.locator("rect").getAttribute("fill")).toBe("#f8c9c5");
    expect(await page.locator('g.vertex[data-status="CANCELED"] rect').getAttribute("fill")).toBe("#ececec");
    // The stack opens on a click (and stays open across the page's refresh).
    await page.locator("#exceptions details summary").first().click();
    await page.waitForTimeout(1500); // two refreshes
    expect(await page.locator("#exceptions details[open] pre").first().innerText()).toContain("boom in Exploder at record 3000");
    await screenshot("job-failed");
  }, 60_000);

  test("the JobManager page shows its masked configuration and recent log lines", async () => {
    await page.getByRole("link", { name: "JobManager" }).click();
    await page.locator("#jm-config").waitFor({ timeout: 10_000 });
    const config = await page.locator("#jm-config").innerText();
    expect(config).toMatch(/security\.ssl\.key-file\s+\*{6}/);
    expect(config).not.toContain("private-key-do-not-show");
    expect(config).toMatch(/restart-strategy\.fixed-delay\.delay\s+3000/);
    // At log.level warn the failing job's failover is logged.
    expect(await page.locator("#jm-logs").innerText()).toContain("task failed; restarting the job from its latest checkpoint");
    await screenshot("jobmanager");
  }, 20_000);
});
