// The web dashboard: one HTML page with inline CSS and JS, served by the JobManager at /. It reads the REST API
// every second (JSON only, never /metrics, whose names may change): overview and job list, a job's operator graph
// (parallelism, records/s, backpressure colour, failed operators red), vertices with watermarks, subtasks (attempt,
// host, duration, busy and back-pressured ratios), why a job waits, its exception history and checkpoints; the
// TaskManagers, each with its page (heap, RSS, network buffers, tasks, configuration, log), and the JobManager's
// configuration and log. The favicon is an inline SVG. No build step, no dependencies.
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tm dashboard</title>
<link rel="icon" type="image/svg+xml" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Crect width='16' height='16' rx='3' fill='%231d2330'/%3E%3Cpath d='M3 4h10v2H9v7H7V6H3z' fill='%23e6522c'/%3E%3C/svg%3E">
<style>
  :root { --fg:#1d2330; --muted:#6b7385; --line:#d9dde5; --bg:#f5f6f8; --card:#fff; --accent:#2f5bd3;
          --ok:#e3f4e7; --okb:#3c9d5a; --low:#fff1d1; --lowb:#d39a1c; --high:#fde0de; --highb:#d2443a; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:center; gap:24px; padding:10px 20px; background:#1d2330; color:#fff; }
  header b { font-size:16px; letter-spacing:.5px; }
  header a { color:#cdd6f4; text-decoration:none; } header a.active, header a:hover { color:#fff; }
  #status { margin-left:auto; font-size:12px; color:#9aa3b5; }
  #status.err { color:#ff8c82; }
  main { padding:16px 20px; max-width:1400px; }
  h1 { font-size:20px; margin:4px 0 12px; } h2 { font-size:15px; margin:20px 0 8px; color:#384057; }
  .cards { display:flex; gap:12px; flex-wrap:wrap; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 16px; min-width:150px; }
  .card .v { font-size:22px; font-weight:600; } .card .k { color:var(--muted); font-size:12px; }
  table { border-collapse:collapse; width:100%; background:var(--card); border:1px solid var(--line); }
  th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { background:#eef0f4; font-weight:600; font-size:12px; color:#4a5368; }
  td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
  a { color:var(--accent); }
  .state { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; background:#e7e9ee; }
  .state.RUNNING { background:#dbe7ff; color:#1f48b8; } .state.FINISHED, .state.COMPLETED { background:var(--ok); color:#23713d; } .state.IN_PROGRESS { background:var(--low); color:#8a5a00; }
  .state.FAILED, .state.FAILING { background:var(--high); color:#a3261d; } .state.CANCELED, .state.CANCELING { background:#ececec; color:#555; }
  .state.RESTARTING, .state.SCHEDULING, .state.DEPLOYING { background:var(--low); color:#8a5a00; }
  .bp-ok { color:var(--okb); } .bp-low { color:var(--lowb); } .bp-high { color:var(--highb); }
  .graph { background:var(--card); border:1px solid var(--line); border-radius:6px; overflow:auto; }
  .graph svg text { font:12px system-ui, sans-serif; fill:#1d2330; }
  .bar { display:inline-block; width:90px; height:10px; background:#e7e9ee; border-radius:5px; overflow:hidden; vertical-align:middle; }
  .bar i { display:block; height:100%; background:var(--accent); }
  button { font:inherit; padding:4px 12px; border:1px solid var(--highb); color:var(--highb); background:#fff; border-radius:4px; cursor:pointer; }
  .muted { color:var(--muted); } pre { background:#fff; border:1px solid var(--line); padding:10px; overflow:auto; }
  .waiting { background:var(--low); border:1px solid var(--lowb); border-radius:6px; padding:8px 12px; }
  td.msg { white-space:normal; max-width:640px; } details summary { cursor:pointer; }
  pre.log { max-height:420px; font-size:12px; white-space:pre-wrap; }
</style>
</head>
<body>
<header>
  <b>tm</b>
  <a href="#/" id="nav-overview">Overview</a>
  <a href="#/jobs" id="nav-jobs">Jobs</a>
  <a href="#/taskmanagers" id="nav-taskmanagers">TaskManagers</a>
  <a href="#/jobmanager" id="nav-jobmanager">JobManager</a>
  <span id="status">connecting...</span>
</header>
<main id="app"></main>
<script>
"use strict";
const app = document.getElementById("app");
const statusEl = document.getElementById("status");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fmtNum = (n) => n >= 1e9 ? (n / 1e9).toFixed(1) + " G" : n >= 1e6 ? (n / 1e6).toFixed(1) + " M" : n >= 1e4 ? (n / 1e3).toFixed(1) + " k" : String(Math.round(n));
const fmtBytes = (n) => n >= 1073741824 ? (n / 1073741824).toFixed(1) + " GiB" : n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
const fmtDur = (ms) => { if (ms == null || ms < 0) return "-"; const s = Math.floor(ms / 1000); if (s < 60) return ms < 10000 ? (ms / 1000).toFixed(1) + " s" : s + " s"; const m = Math.floor(s / 60); if (m < 60) return m + " m " + (s % 60) + " s"; return Math.floor(m / 60) + " h " + (m % 60) + " m"; };
const fmtTime = (t) => t > 0 ? new Date(t).toLocaleTimeString() : "-";
const state = (s) => '<span class="state ' + esc(s) + '">' + esc(s) + "</span>";
const pct = (r) => r == null ? "-" : Math.round(r * 100) + "%";
// Watermarks are event-time milliseconds: shown as a UTC time when they look like one.
const fmtWm = (w) => w == null ? "-" : w > 1e11 && w < 1e14 ? new Date(w).toISOString().replace("T", " ").replace("Z", "") : String(w);
const configTable = (id, entries) => '<table id="' + id + '"><thead><tr><th>Key</th><th>Value</th></tr></thead><tbody>' +
  entries.map((e) => "<tr><td>" + esc(e.key) + "</td><td>" + esc(e.value) + "</td></tr>").join("") + "</tbody></table>";
const logBlock = (id, lines) => '<pre class="log" id="' + id + '">' + (lines.length ? esc(lines.join("\\n")) : "(no log lines yet)") + "</pre>";
// Mutating calls carry the REST token (security.rest.token-file, or the shared secret) when the cluster has one:
// asked for on the first 401 and kept in this tab's sessionStorage only.
async function api(path, opts) {
  const send = () => {
    const token = sessionStorage.getItem("tm-rest-token");
    const o = Object.assign({}, opts);
    if (token && o.method && o.method !== "GET") o.headers = Object.assign({}, o.headers, { authorization: "Bearer " + token });
    return fetch(path, o);
  };
  let r = await send();
  if (r.status === 401 && opts && opts.method && opts.method !== "GET") {
    const token = prompt("This cluster needs its REST token (security.rest.token-file, or the shared secret) to do that:");
    if (token) {
      sessionStorage.setItem("tm-rest-token", token.trim());
      r = await send();
      if (r.status === 401) sessionStorage.removeItem("tm-rest-token");
    }
  }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.errors && body.errors[0]) || r.status + " " + r.statusText);
  return body;
}

function jobsTable(jobs) {
  if (jobs.length === 0) return '<p class="muted">No jobs yet.</p>';
  return "<table><thead><tr><th>Job</th><th>State</th><th>Start</th><th class=num>Duration</th><th class=num>Tasks</th><th>Id</th></tr></thead><tbody>" +
    jobs.sort((a, b) => b["start-time"] - a["start-time"]).map((j) =>
      '<tr><td><a href="#/job/' + esc(j.jid) + '">' + esc(j.name) + "</a></td><td>" + state(j.state) + "</td><td>" + fmtTime(j["start-time"]) +
      "</td><td class=num>" + fmtDur(j.duration) + "</td><td class=num>" + j.tasks.running + " / " + j.tasks.total + '</td><td class="muted">' + esc(j.jid) + "</td></tr>").join("") +
    "</tbody></table>";
}

async function viewOverview() {
  const [o, jobs] = await Promise.all([api("/overview"), api("/jobs/overview")]);
  const card = (k, v) => '<div class="card"><div class="v">' + esc(v) + '</div><div class="k">' + esc(k) + "</div></div>";
  return "<h1>Cluster overview</h1><div class=cards>" + card("TaskManagers", o.taskmanagers) + card("Slots available / total", o["slots-available"] + " / " + o["slots-total"]) +
    card("Jobs running", o["jobs-running"]) + card("Finished", o["jobs-finished"]) + card("Failed", o["jobs-failed"]) + card("Canceled", o["jobs-cancelled"]) +
    '</div><h2>Jobs</h2>' + jobsTable(jobs.jobs) + '<p class="muted">' + esc(o["flink-version"]) + "</p>";
}

async function viewJobs() {
  const jobs = await api("/jobs/overview");
  return "<h1>Jobs</h1>" + jobsTable(jobs.jobs);
}

function graphSvg(job) {
  const nodes = job.plan.nodes, byId = new Map(job.vertices.map((v) => [v.id, v]));
  const depth = new Map();
  const d = (n) => { if (depth.has(n.id)) return depth.get(n.id); depth.set(n.id, 0); const x = n.inputs.length ? 1 + Math.max(...n.inputs.map((i) => d(nodes.find((m) => m.id === i.id)))) : 0; depth.set(n.id, x); return x; };
  nodes.forEach(d);
  const cols = new Map(); for (const n of nodes) { const c = depth.get(n.id); if (!cols.has(c)) cols.set(c, []); cols.get(c).push(n); }
  const W = 210, H = 86, GX = 80, GY = 28, pos = new Map();
  let maxRows = 1;
  for (const [c, ns] of cols) { ns.forEach((n, r) => pos.set(n.id, { x: 20 + c * (W + GX), y: 20 + r * (H + GY) })); maxRows = Math.max(maxRows, ns.length); }
  const width = 40 + cols.size * (W + GX) - GX, height = 40 + maxRows * (H + GY) - GY;
  let s = '<svg xmlns="http://www.w3.org/2000/svg" width="' + width + '" height="' + height + '"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#7a8296"/></marker></defs>';
  for (const n of nodes) for (const i of n.inputs) {
    const a = pos.get(i.id), b = pos.get(n.id); if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    s += '<path d="M' + x1 + "," + y1 + " C" + mx + "," + y1 + " " + mx + "," + y2 + " " + x2 + "," + y2 + '" fill="none" stroke="#7a8296" stroke-width="1.5" marker-end="url(#arrow)"/>';
    s += '<text x="' + (mx - 26) + '" y="' + ((y1 + y2) / 2 - 6) + '" style="font-size:10px;fill:#6b7385">' + esc(i.ship_strategy) + "</text>";
  }
  // Running operators are coloured by backpressure; a failed one is red whatever its backpressure, a canceled one grey.
  const fill = { ok: "#e3f4e7", low: "#fff1d1", high: "#fde0de", failed: "#f8c9c5", canceled: "#ececec" }, stroke = { ok: "#3c9d5a", low: "#d39a1c", high: "#d2443a", failed: "#b3261e", canceled: "#9aa0a6" };
  for (const n of nodes) {
    const p = pos.get(n.id), v = byId.get(n.id); const lvl = v.backpressure.level;
    const look = v.status === "FAILED" ? "failed" : v.status === "CANCELED" || v.status === "CANCELING" ? "canceled" : lvl;
    const name = v.name.length > 30 ? v.name.slice(0, 29) + "\\u2026" : v.name;
    s += '<g class="vertex" data-vertex="' + v.id + '" data-status="' + esc(v.status) + '" data-backpressure="' + lvl + '"><title>' + esc(v.name) + '</title><rect x="' + p.x + '" y="' + p.y + '" width="' + W + '" height="' + H + '" rx="6" fill="' + fill[look] + '" stroke="' + stroke[look] + '" stroke-width="' + (look === "failed" ? 2.5 : 1.5) + '"/>';
    s += '<text x="' + (p.x + 10) + '" y="' + (p.y + 18) + '" style="font-weight:600">' + esc(name) + "</text>";
    s += '<text x="' + (p.x + 10) + '" y="' + (p.y + 36) + '">Parallelism: ' + v.parallelism + " \\u00b7 " + esc(v.status) + "</text>";
    s += '<text x="' + (p.x + 10) + '" y="' + (p.y + 53) + '">in ' + fmtNum(v.metrics["records-in-per-second"]) + "/s \\u00b7 out " + fmtNum(v.metrics["records-out-per-second"]) + "/s</text>";
    s += '<text x="' + (p.x + 10) + '" y="' + (p.y + 70) + '">Backpressure: ' + Math.round(v.backpressure.ratio * 100) + "% \\u00b7 busy " + Math.round(v.busy * 100) + "%</text></g>";
  }
  return s + "</svg>";
}

async function viewJob(id) {
  const jp = "/jobs/" + encodeURIComponent(id);
  const [job, cps, exc, cfg] = await Promise.all([api(jp), api(jp + "/checkpoints"), api(jp + "/exceptions"), api(jp + "/config")]);
  const running = !["FINISHED", "FAILED", "CANCELED"].includes(job.state);
  let h = '<h1 id="job-name">' + esc(job.name) + " " + state(job.state) + "</h1>";
  h += '<p class="muted">' + esc(job.jid) + " \\u00b7 started " + fmtTime(job["start-time"]) + " \\u00b7 duration " + fmtDur(job.duration) + " \\u00b7 restarts " + job.restarts +
    " \\u00b7 records in " + fmtNum(job["records-in"]) + " \\u00b7 out " + fmtNum(job["records-out"]) + (running ? ' \\u00b7 <button id="cancel">Cancel job</button>' : "") + "</p>";
  if (job.waiting) h += '<p class="waiting" id="waiting"><b>' + esc(job.state) + ":</b> " + esc(job.waiting.message) + "</p>";
  h += exceptionsHtml(exc);
  h += '<h2>Operators</h2><div class="graph">' + graphSvg(job) + "</div>";
  h += "<h2>Vertices</h2><table><thead><tr><th>Name</th><th class=num>Parallelism</th><th>Status</th><th class=num>Records in</th><th class=num>Records out</th><th class=num>In/s</th><th class=num>Out/s</th><th class=num>Bytes out</th><th>Backpressure</th><th class=num>Busy</th></tr></thead><tbody>" +
    job.vertices.map((v) => "<tr><td>" + esc(v.name) + "</td><td class=num>" + v.parallelism + "</td><td>" + state(v.status) + "</td><td class=num>" + fmtNum(v.metrics["read-records"]) +
      "</td><td class=num>" + fmtNum(v.metrics["write-records"]) + "</td><td class=num>" + fmtNum(v.metrics["records-in-per-second"]) + "</td><td class=num>" + fmtNum(v.metrics["records-out-per-second"]) +
      "</td><td class=num>" + fmtBytes(v.metrics["write-bytes"]) + '</td><td class="bp-' + v.backpressure.level + '">' + v.backpressure.level.toUpperCase() + " (" + Math.round(v.backpressure.ratio * 100) + "%)</td><td class=num>" + Math.round(v.busy * 100) + "%</td></tr>").join("") +
    "</tbody></table>";
  h += '<h2>Watermarks</h2><table id="watermarks"><thead><tr><th>Vertex</th><th>Low input watermark</th><th>Low output watermark</th></tr></thead><tbody>' +
    job.vertices.map((v) => "<tr><td>" + esc(v.name) + "</td><td>" + (v.watermarks.input == null ? '<span class="muted">No watermark</span>' : fmtWm(v.watermarks.input)) +
      "</td><td>" + (v.watermarks.output == null ? '<span class="muted">No watermark</span>' : fmtWm(v.watermarks.output)) + "</td></tr>").join("") + "</tbody></table>";
  h += '<h2>Subtasks</h2><table id="subtasks"><thead><tr><th>Vertex</th><th class=num>Subtask</th><th class=num>Attempt</th><th>Status</th><th>TaskManager</th><th>Host</th><th class=num>Duration</th><th class=num>Records in</th><th class=num>Records out</th><th class=num>Busy</th><th class=num>Back-pressured</th><th>Backpressure</th><th>Watermark</th><th class=num>Buffer size</th></tr></thead><tbody>' +
    job.vertices.flatMap((v) => v.subtasks.map((t) => "<tr><td>" + esc(v.name) + "</td><td class=num>" + (t.subtask + 1) + "/" + v.parallelism + "</td><td class=num>" + t.attempt + "</td><td>" + state(t.status) +
      '</td><td><a href="#/taskmanager/' + esc(encodeURIComponent(t.taskmanager)) + '">' + esc(t.taskmanager) + "</a></td><td>" + esc(t.host) + "</td><td class=num>" + fmtDur(t.duration) +
      "</td><td class=num>" + fmtNum(t.metrics.recordsIn) + "</td><td class=num>" + fmtNum(t.metrics.recordsOut) + '</td><td class="num busy-ratio">' + pct(t["busy-ratio"]) +
      '</td><td class="num bp-ratio">' + pct(t["backpressure-ratio"]) + '</td><td class="bp-' + t.backpressure + '">' + t.backpressure.toUpperCase() + "</td><td>" + fmtWm(t.watermarks.input ?? t.watermarks.output) +
      '</td><td class="num debloated" title="Buffer debloating: the buffer size this subtask announces to its producers">' + (t.metrics.debloatedBufferSize == null ? "-" : fmtBytes(t.metrics.debloatedBufferSize)) + "</td></tr>")).join("") +
    "</tbody></table>";
  h += latencyHtml(job);
  const c = cps.counts;
  h += '<h2>Checkpoints</h2><div class="cards"><div class="card"><div class="v">' + c.completed + '</div><div class="k">Completed</div></div><div class="card"><div class="v">' + c.failed +
    '</div><div class="k">Failed</div></div><div class="card"><div class="v">' + c.in_progress + '</div><div class="k">In progress</div></div><div class="card"><div class="v">' +
    (cps.latest.completed ? fmtDur(cps.latest.completed.end_to_end_duration) : "-") + '</div><div class="k">Latest duration</div></div></div>';
  if (cps.history.length) {
    h += '<table id="checkpoints" style="margin-top:10px"><thead><tr><th class=num>Id</th><th>Status</th><th>Type</th><th>Triggered</th><th class=num>Duration</th><th class=num>Size</th><th class=num>Acknowledged</th><th>Path / failure</th></tr></thead><tbody>' +
      cps.history.map((x) => "<tr><td class=num>" + x.id + "</td><td>" + state(x.status) + "</td><td>" + (x.is_savepoint ? "Savepoint" : "Checkpoint") + "</td><td>" + fmtTime(x.trigger_timestamp) +
        "</td><td class=num>" + fmtDur(x.end_to_end_duration) + "</td><td class=num>" + fmtBytes(x.state_size) + "</td><td class=num>" + x.num_acknowledged_subtasks + "/" + x.num_subtasks +
        '</td><td class="muted">' + esc(x.failure_message || x.external_path || "") + "</td></tr>").join("") + "</tbody></table>";
  } else h += '<p class="muted">No checkpoints' + (c.restored ? "; restored from " + esc(cps.latest.restored.external_path) : "") + ".</p>";
  // Flink's job Configuration tab: the execution config (object reuse among it).
  const ec = cfg["execution-config"];
  h += "<h2>Configuration</h2>" + configTable("job-config", Object.keys(ec).filter((k) => k !== "user-config").map((k) => ({ key: k, value: ec[k] === null ? "-" : String(ec[k]) })));
  return h;
}

// Latency markers (metrics.latency.interval): per subtask, chained operator and source subtask, over the last markers.
function latencyHtml(job) {
  const names = new Map(job.vertices.map((v) => [v.id, v.name]));
  const rows = job.vertices.flatMap((v) => v.subtasks.flatMap((t) => (t.metrics.latency || []).map((l) => ({ v, t, l }))));
  if (rows.length === 0) return '<h2>Latency</h2><p class="muted" id="latency-none">No latency markers (metrics.latency.interval is off).</p>';
  const ms = (x) => x.toFixed(1) + " ms";
  return '<h2>Latency</h2><table id="latency"><thead><tr><th>Operator</th><th class=num>Subtask</th><th>Source</th><th class=num>p50</th><th class=num>p95</th><th class=num>p99</th><th class=num>Max</th><th class=num>Markers</th></tr></thead><tbody>' +
    rows.map(({ v, t, l }) => "<tr><td>" + esc(l.operator) + "</td><td class=num>" + (t.subtask + 1) + "/" + v.parallelism + "</td><td>" + esc(names.get(l.sourceVertexId) ?? String(l.sourceVertexId)) + " (" + (l.sourceSubtask + 1) + ")" +
      "</td><td class=num>" + ms(l.p50Ms) + "</td><td class=num>" + ms(l.p95Ms) + "</td><td class=num>" + ms(l.p99Ms) + "</td><td class=num>" + ms(l.maxMs) + "</td><td class=num>" + fmtNum(l.count) + "</td></tr>").join("") +
    "</tbody></table>";
}

// Flink's exception history: newest first, each with its task, TaskManager and stack (folded), and the other tasks
// that failed in the same failover.
function exceptionsHtml(exc) {
  const entries = exc.exceptionHistory.entries;
  if (entries.length === 0) return '<h2>Exceptions</h2><p class="muted" id="exceptions-none">No failures.</p>';
  return '<h2>Exceptions</h2><table id="exceptions"><thead><tr><th>Time</th><th class=num>Attempt</th><th>Task</th><th>TaskManager</th><th>Exception</th></tr></thead><tbody>' +
    entries.map((e, i) => "<tr><td>" + fmtTime(e.timestamp) + "</td><td class=num>" + e.attempt + "</td><td>" + esc(e.taskName ?? "-") + "</td><td>" +
      (e.taskManagerId ? '<a href="#/taskmanager/' + esc(encodeURIComponent(e.taskManagerId)) + '">' + esc(e.taskManagerId) + "</a> " + '<span class="muted">' + esc(e.endpoint) + "</span>" : "-") +
      '</td><td class="msg"><details id="exc-' + e.timestamp + "-" + i + '"><summary><b>' + esc(e.exceptionName) + ":</b> " + esc(e.message) + "</summary><pre>" + esc(e.stacktrace) + "</pre>" +
      (e.concurrentExceptions.length ? '<div class="muted">Also failed: ' + e.concurrentExceptions.map((c) => esc((c.taskName ?? "?") + ": " + c.message)).join("; ") + "</div>" : "") +
      "</details></td></tr>").join("") + "</tbody></table>" + (exc.exceptionHistory.truncated ? '<p class="muted">Older failures were dropped (web.exception-history-size).</p>' : "");
}

async function viewTaskManager(id) {
  const tp = "/taskmanagers/" + encodeURIComponent(id);
  const [t, config, logs] = await Promise.all([api(tp), api(tp + "/config"), api(tp + "/logs")]);
  const m = t.metrics;
  const card = (k, v) => '<div class="card"><div class="v">' + esc(v) + '</div><div class="k">' + esc(k) + "</div></div>";
  let h = '<h1 id="tm-name">TaskManager ' + esc(t.id) + "</h1><p class=muted>" + esc(t.address) + ":" + t.dataPort + " \\u00b7 pid " + t.pid + " \\u00b7 registered " + fmtTime(t.registeredAt) + " \\u00b7 last heartbeat " + fmtDur(t.timeSinceLastHeartbeat) + " ago</p>";
  h += '<div class="cards" id="tm-cards">' + card("Heap used / committed", m.heapUsed == null ? "-" : fmtBytes(m.heapUsed) + " / " + fmtBytes(m.heapCommitted)) + card("RSS", m.rss == null ? "-" : fmtBytes(m.rss)) +
    card("Network buffers used / total", m.nettyShuffleMemorySegmentsTotal == null ? "-" : m.nettyShuffleMemorySegmentsUsed + " / " + m.nettyShuffleMemorySegmentsTotal) +
    (t.network ? card("Network buffers required + optional in use", t.network.requiredInUse + " + " + t.network.optionalInUse) : "") +
    card("Slots used / total", (t.slotsNumber - t.freeSlots) + " / " + t.slotsNumber) + card("Running tasks", m.runningTasks) + "</div>";
  if (t.network) h += '<p class="muted" id="tm-network-sizing">Network memory: ' + esc(t.network.sizing) + "</p>";
  h += "<h2>Tasks</h2>" + (t.tasks.length === 0 ? '<p class="muted">No tasks.</p>' : '<table id="tm-tasks"><thead><tr><th>Job</th><th>Task</th><th class=num>Subtask</th><th>Status</th><th class=num>Records in</th><th class=num>Records out</th><th class=num>Network buffers held / configured (minimum)</th></tr></thead><tbody>' +
    t.tasks.map((x) => '<tr><td><a href="#/job/' + esc(x.jobId) + '">' + esc(x.jobId.slice(0, 8)) + "</a></td><td>" + esc(x.vertex) + "</td><td class=num>" + (x.subtask + 1) + "</td><td>" + state(x.state) +
      "</td><td class=num>" + fmtNum(x.recordsIn) + "</td><td class=num>" + fmtNum(x.recordsOut) + "</td><td class=num>" +
      (x.networkBuffers ? x.networkBuffers.held + " / " + x.networkBuffers.configured + " (" + x.networkBuffers.required + ")" : "-") + "</td></tr>").join("") + "</tbody></table>");
  h += "<h2>Log (most recent lines)</h2>" + logBlock("tm-logs", logs.lines);
  h += "<h2>Configuration</h2>" + configTable("tm-config", config);
  return h;
}

async function viewJobManager() {
  const [o, config, logs] = await Promise.all([api("/overview"), api("/jobmanager/config"), api("/jobmanager/logs")]);
  const ha = o["high-availability"];
  return '<h1>JobManager</h1><p class="muted">' + esc(o["jobmanager-id"]) + " \\u00b7 RPC port " + o["rpc-port"] + " \\u00b7 " + esc(o["flink-version"]) + "</p>" +
    (ha && ha.type !== "none" ? '<p id="ha">High availability: ' + esc(ha.type) + " \\u00b7 leader " + esc(ha.leader) + " \\u00b7 epoch " + ha.epoch + " \\u00b7 standbys: " + (ha.standbys.length ? ha.standbys.map(esc).join(", ") : "none") + "</p>" : "") +
    "<h2>Log (most recent lines)</h2>" + logBlock("jm-logs", logs.lines) + "<h2>Configuration</h2>" + configTable("jm-config", config);
}

async function viewTaskManagers() {
  const { taskmanagers } = await api("/taskmanagers");
  if (taskmanagers.length === 0) return '<h1>TaskManagers</h1><p class="muted">No TaskManager registered.</p>';
  return "<h1>TaskManagers</h1><table id=taskmanagers><thead><tr><th>Id</th><th>Data address</th><th class=num>PID</th><th>Slots used</th><th class=num>Free slots</th><th class=num>Last heartbeat</th><th class=num>Cores</th><th class=num>Memory</th><th class=num>Running tasks</th><th class=num>Records out</th></tr></thead><tbody>" +
    taskmanagers.map((t) => { const used = t.slotsNumber - t.freeSlots; return '<tr><td><a href="#/taskmanager/' + esc(encodeURIComponent(t.id)) + '">' + esc(t.id) + "</a></td><td>" + esc(t.address) + ":" + t.dataPort + "</td><td class=num>" + t.pid +
      '</td><td><span class="bar"><i style="width:' + (t.slotsNumber ? Math.round(100 * used / t.slotsNumber) : 0) + '%"></i></span> ' + used + " / " + t.slotsNumber + "</td><td class=num>" + t.freeSlots +
      "</td><td class=num>" + fmtDur(t.timeSinceLastHeartbeat) + " ago</td><td class=num>" + (t.hardware.cpuCores ?? "-") + "</td><td class=num>" + (t.hardware.physicalMemory ? fmtBytes(t.hardware.physicalMemory) : "-") +
      "</td><td class=num>" + t.metrics.runningTasks + "</td><td class=num>" + fmtNum(t.metrics.recordsOut) + "</td></tr>"; }).join("") + "</tbody></table>";
}

let busy = false;
async function render() {
  if (busy) return;
  busy = true;
  const route = location.hash.replace(/^#/, "") || "/";
  for (const a of document.querySelectorAll("header a")) a.classList.toggle("active", a.getAttribute("href") === "#" + route.split("/").slice(0, 2).join("/") || (route === "/" && a.id === "nav-overview"));
  try {
    let html;
    const m = /^\\/job\\/([^/]+)/.exec(route);
    const tm = /^\\/taskmanager\\/([^/]+)/.exec(route);
    if (m) html = await viewJob(decodeURIComponent(m[1]));
    else if (tm) html = await viewTaskManager(decodeURIComponent(tm[1]));
    else if (route === "/jobs") html = await viewJobs();
    else if (route === "/taskmanagers") html = await viewTaskManagers();
    else if (route === "/jobmanager") html = await viewJobManager();
    else html = await viewOverview();
    const y = window.scrollY;
    // Folded stacks the reader opened stay open across the refresh.
    const open = new Set([...app.querySelectorAll("details[open]")].map((d) => d.id));
    app.innerHTML = html;
    for (const d of app.querySelectorAll("details")) if (open.has(d.id)) d.open = true;
    window.scrollTo(0, y);
    const cancel = document.getElementById("cancel");
    if (cancel && m) cancel.onclick = () => { if (confirm("Cancel this job?")) api("/jobs/" + m[1] + "?mode=cancel", { method: "PATCH" }).then(render, (e) => alert(e.message)); };
    statusEl.textContent = "updated " + new Date().toLocaleTimeString();
    statusEl.className = "";
  } catch (e) {
    statusEl.textContent = "error: " + e.message;
    statusEl.className = "err";
  } finally {
    busy = false;
  }
}
window.addEventListener("hashchange", render);
render();
setInterval(render, 1000);
</script>
</body>
</html>
`;
