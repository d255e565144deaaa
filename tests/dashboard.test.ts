// The web dashboard in a real headless Chromium (Debian's chromium driven by playwright-core) against a running
// cluster: the overview lists the job, the job page draws its operator graph with live figures and checkpoints,
// the TaskManagers page shows the slots. A screenshot of each page goes to a temp dir.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { defaultConfig } from "../src/config/index.ts";
import { startLocalCluster, type LocalCluster } from "../src/client/local-cluster.ts";
import { prepareJob } from "../src/client/prepare-job.ts";
import { connectClient, submitJob } from "../src/client/job-client.ts";
import type { RpcConnection } from "../src/rpc/connection.ts";
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

beforeAll(async () => {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
  setLogLevel("warn");
  const dir = tempDir("tm-dashboard-");
  // TM_SCREENSHOT_DIR keeps the screenshots for a look; by default they go to the temp dir.
  shots = process.env.TM_SCREENSHOT_DIR ? path.resolve(process.env.TM_SCREENSHOT_DIR) : path.join(dir, "screenshots");
  fs.mkdirSync(shots, { recursive: true });
  cluster = await startLocalCluster({ taskManagers: 1, slotsPerTaskManager: 2, config: { ...defaultConfig(), "heartbeat.interval": 200, "log.level": "warn" } });
  base = `http://127.0.0.1:${cluster.jobManager.restPort}`;
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
    await page.locator("#checkpoints").waitFor({ timeout: 10_000 });
    // A checkpoint completes within a second or so; under load it can take longer, so wait for the row.
    await waitFor("a COMPLETED checkpoint in the history", async () => (await page.locator("#checkpoints").innerText()).includes("COMPLETED"), 15_000);
    await screenshot("job");
  }, 30_000);

  test("the TaskManagers page shows each TaskManager with its slots", async () => {
    await page.getByRole("link", { name: "TaskManagers" }).click();
    const table = page.locator("#taskmanagers");
    await table.waitFor({ timeout: 10_000 });
    const text = await table.innerText();
    expect(text).toContain("local-tm-0");
    expect(text).toContain("2 / 2");
    await screenshot("taskmanagers");
  }, 20_000);

  test("canceling from the job page cancels the job", async () => {
    await page.goto(`${base}/#/job/${jobId}`);
    page.once("dialog", (d) => void d.accept());
    await page.locator("#cancel").click({ timeout: 10_000 });
    await waitFor("the job canceled", async () => (await client.request("jobStatus", { jobId })).state === "CANCELED", 15_000);
    await page.locator("h1", { hasText: "CANCELED" }).waitFor({ timeout: 10_000 });
  }, 30_000);
});
