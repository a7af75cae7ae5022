"""The web page ``GET /`` serves: plain HTML and JavaScript, no build step.

It asks for the merchant's API token once (kept in ``localStorage``), lists the merchant's uploads with a
live progress bar, the current stage's message and ETA, and errors, fed by ``EventSource`` on
``/api/events``; a form uploads a file. Stable hooks for tests and frontends: rows ``tr[data-upload-id]``,
``.progress-bar[data-percent]``, ``.status``, ``.message``, ``.eta``, ``.error`` (why a failed upload failed,
red) and ``.review`` (why an upload needs review, amber), each row's ``data-status``. When the stream (re)opens,
or the server sends ``event: reset`` (its history no longer reaches back to where the page left off), the
page re-reads the uploads list, so a row never stays behind. Text from the server is only ever set as
``textContent`` (a file name cannot inject markup).
"""

from __future__ import annotations

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>poflow</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; } h1 small { color: #888; font-weight: normal; font-size: .9rem; }
  form { display: flex; gap: .5rem; align-items: center; margin: .5rem 0 1rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #eee; vertical-align: top; }
  .progress { display: inline-block; vertical-align: middle; background: #eee; border-radius: 4px; height: .8rem;
              width: 12rem; overflow: hidden; }
  .progress-bar { background: #2a7; height: 100%; width: 0; transition: width .2s; }
  tr[data-status=failed] .progress-bar { background: #c33; }
  tr[data-status=needs_review] .progress-bar { background: #e90; }
  .pct { font-variant-numeric: tabular-nums; color: #555; }
  .message { color: #333; } .eta { color: #666; font-size: .9em; } .error { color: #c33; } .review { color: #b60; }
  #connection { font-size: .85rem; color: #888; } #connection.live { color: #2a7; } #connection.down { color: #c33; }
  #stats span { margin-right: 1rem; } .hidden { display: none; }
</style>
</head>
<body>
<h1>poflow <small>purchase orders → Shopify</small> <span id="connection">not connected</span></h1>
<form id="token-form">
  <label for="token-input">API token</label>
  <input id="token-input" type="password" size="50" autocomplete="off" placeholder="pf_… (poflow merchant token ID)">
  <button id="token-save" type="submit">Use token</button>
  <button id="token-forget" type="button">Forget</button>
</form>
<div id="app" class="hidden">
  <form id="upload-form">
    <input id="file-input" type="file" name="file" required>
    <button id="upload-button" type="submit">Upload</button>
    <span id="upload-result"></span>
    <button id="token-change" type="button">Change token</button>
  </form>
  <div id="stats"></div>
  <table>
    <thead><tr><th>File</th><th>Status</th><th>Progress</th><th>Stage</th><th>ETA</th></tr></thead>
    <tbody id="uploads"></tbody>
  </table>
</div>
<template id="row-template">
  <tr>
    <td><span class="file"></span><div class="error"></div><div class="review"></div></td>
    <td class="status"></td>
    <td><div class="progress"><div class="progress-bar" data-percent="0"></div></div> <span class="pct">0 %</span></td>
    <td class="message"></td>
    <td class="eta"></td>
  </tr>
</template>
<script>
"use strict";
const TERMINAL = new Set(["completed", "failed", "needs_review", "duplicate"]);
const STAGES = {ai_parsing: "Parsing", database_save: "Saving the PO", product_draft_creation: "Creating drafts",
  shopify_sync: "Syncing to Shopify", status_update: "Finishing", image_attachment: "Attaching images"};
const ENDED = {completed: "Done", failed: "Failed", needs_review: "Waiting for a review", duplicate: ""};
const uploads = new Map();  // upload id -> {file, status, percent, message, stage, eta_seconds, eta_at, error, seq}
let token = localStorage.getItem("poflow_token") || "";
let source = null;
let lastEventId = null;

const $ = (selector) => document.querySelector(selector);

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: {Authorization: "Bearer " + token}});
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((body.error && body.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function seconds(value) {
  if (value < 1) return "<1 s";
  return value < 120 ? "~" + Math.round(value) + " s" : "~" + (value / 60).toFixed(1) + " min";
}

function rowFor(id) {
  let row = document.querySelector('tr[data-upload-id="' + CSS.escape(id) + '"]');
  if (!row) {
    row = $("#row-template").content.firstElementChild.cloneNode(true);
    row.dataset.uploadId = id;
    $("#uploads").prepend(row);
  }
  return row;
}

function render(id) {
  const s = uploads.get(id), row = rowFor(id);
  const percent = Math.max(0, Math.min(100, Math.round(s.percent || 0)));
  const done = TERMINAL.has(s.status);
  row.dataset.status = s.status || "";
  row.querySelector(".file").textContent = s.file || id;
  row.querySelector(".status").textContent = (s.status || "").replace("_", " ");
  const bar = row.querySelector(".progress-bar");
  bar.style.width = percent + "%";
  bar.dataset.percent = String(percent);
  row.querySelector(".pct").textContent = percent + " %";
  const live = !done && s.eta_seconds != null;
  const what = done ? (s.status === "duplicate" ? s.message || "" : ENDED[s.status]) :
    s.message || (s.stage ? (STAGES[s.stage] || s.stage) + "…" : "Waiting to start…");
  const joint = /[….!?]$/.test(what) ? " " : "… ";
  row.querySelector(".message").textContent = what + (live ? joint + seconds(s.eta_seconds) + " remaining" : "");
  const clock = s.eta_at ? " (" + new Date(s.eta_at).toLocaleTimeString() + ")" : "";
  row.querySelector(".eta").textContent = live ? "ETA " + seconds(s.eta_seconds) + clock :
    (s.status === "completed" || s.status === "duplicate" ? "done" : "");
  // A failure and a review are told apart: red "why it failed", amber "what to review"; never both.
  row.querySelector(".error").textContent = s.status === "needs_review" ? "" : s.error || "";
  row.querySelector(".review").textContent = s.status === "needs_review" ? "To review: " + (s.error || "") : "";
}

function fromRow(r) {  // a row of GET /api/uploads
  return {file: r.file, status: (r.status === "received" || r.status === "pending") ? "queued" : r.status, percent: r.progress_percent,
    stage: r.current_stage, eta_seconds: r.eta_seconds, eta_at: r.eta_at, seq: 0,
    message: r.status === "duplicate" ? "Same file as " + r.duplicate_of : null,
    error: r.status === "failed" || r.status === "needs_review" ? r.error_message : null};
}

function onProgress(message) {
  lastEventId = message.lastEventId || lastEventId;
  const e = JSON.parse(message.data);
  const known = uploads.get(e.upload_id);
  if (known && e.seq && known.seq && e.seq <= known.seq) return;  // seen already (a resumed stream)
  const s = known || {file: null};
  const status = TERMINAL.has(e.status) || e.status === "queued" ? e.status : "processing";
  Object.assign(s, {status: status, percent: e.percent, stage: e.stage, message: e.message,
    eta_seconds: e.eta_seconds, eta_at: e.eta_at, seq: e.seq || s.seq,
    error: e.status === "failed" || e.status === "stage_failed" || e.status === "needs_review" ? e.message : null});
  uploads.set(e.upload_id, s);
  render(e.upload_id);
  if (!known) api("/api/uploads/" + encodeURIComponent(e.upload_id)).then((full) => {
    s.file = full.file; render(e.upload_id);
  }).catch(() => {});
  if (TERMINAL.has(e.status)) refreshStats();
}

function connect() {
  if (source) source.close();
  const url = "/api/events?token=" + encodeURIComponent(token) +
    (lastEventId ? "&last_event_id=" + encodeURIComponent(lastEventId) : "");
  source = new EventSource(url);
  source.addEventListener("open", () => {
    $("#connection").textContent = "live"; $("#connection").className = "live";
    reconcile();  // what happened before this stream opened (first load, a reconnect, a lost event)
  });
  source.addEventListener("progress", onProgress);
  // The server's kept history no longer reaches where this page left off (it then sends what it still has):
  // events were lost, so the list is read again.
  source.addEventListener("reset", () => reconcile(true));
  source.addEventListener("revoked", () => { source.close(); showToken("This token was revoked."); });
  source.addEventListener("error", () => {
    const closed = source.readyState === EventSource.CLOSED;
    $("#connection").textContent = closed ? "disconnected" : "reconnecting…";
    $("#connection").className = "down";
    if (closed) setTimeout(() => api("/api/stats").then(connect).catch((err) => {
      if (err.status === 401) showToken("The token was not accepted."); else setTimeout(connect, 2000);
    }), 2000);
  });
}

async function reconcile(reset = false) {
  // The list is the truth for uploads that ended (or that the page has not seen): a row left "processing"
  // because an event fell between loading the list and opening the stream, or was lost in a Redis hiccup,
  // catches up. A row that is still running keeps what the live events said (they are newer than the list),
  // unless the server said events were lost (``reset``): then the list moves it forward too, never back.
  try {
    const list = await api("/api/uploads?limit=100");
    for (const r of list.uploads) {
      const fresh = fromRow(r), known = uploads.get(r.upload_id);
      if (!known || (TERMINAL.has(fresh.status) && !TERMINAL.has(known.status)) ||
          (reset && !TERMINAL.has(known.status) && (fresh.percent || 0) >= (known.percent || 0))) {
        uploads.set(r.upload_id, Object.assign(known || {}, fresh, {seq: known ? known.seq : 0}));
        render(r.upload_id);
      }
    }
    refreshStats();
  } catch (err) { /* the next reconnect tries again */ }
}

async function refreshStats() {
  try {
    const s = await api("/api/stats");
    const stats = $("#stats");
    stats.textContent = "";
    for (const [name, count] of Object.entries(s.counts)) {
      const span = document.createElement("span");
      span.dataset.stat = name;
      span.textContent = name.replace("_", " ") + ": " + count;
      stats.append(span);
    }
    const rate = document.createElement("span");
    rate.dataset.stat = "throughput";
    rate.textContent = "running: " + s.active_runs + " · done last 5 min: " + s.throughput.completed_last_5_min +
      ", last hour: " + s.throughput.completed_last_60_min;
    stats.append(rate);
  } catch (err) { /* shown by the next successful call */ }
}

function showToken(why) {
  $("#app").classList.add("hidden");
  $("#token-form").classList.remove("hidden");
  $("#connection").textContent = why || "not connected";
  $("#connection").className = why ? "down" : "";
}

async function start() {
  try {
    const list = await api("/api/uploads?limit=100");
    for (const r of list.uploads.slice().reverse()) { uploads.set(r.upload_id, fromRow(r)); render(r.upload_id); }
  } catch (err) {
    showToken(err.status === 401 ? "The token was not accepted." : err.message);
    return;
  }
  $("#token-form").classList.add("hidden");
  $("#app").classList.remove("hidden");
  connect();
  refreshStats();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("#token-input").value.trim();
  localStorage.setItem("poflow_token", token);
  start();
});
$("#token-forget").addEventListener("click", () => {
  localStorage.removeItem("poflow_token"); token = ""; if (source) source.close(); showToken();
});
$("#token-change").addEventListener("click", () => { if (source) source.close(); showToken(); });
$("#upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("#file-input").files[0];
  if (!file) return;
  const body = new FormData();
  body.append("file", file);
  $("#upload-result").textContent = "Uploading " + file.name + "…";
  try {
    const r = await api("/api/uploads", {method: "POST", body: body});
    if (!uploads.has(r.upload_id)) {
      uploads.set(r.upload_id, {file: r.file || file.name, status: (r.status === "received" || r.status === "pending") ? "queued" : r.status,
        percent: r.duplicate_of ? 100 : 0, seq: 0,
        message: r.duplicate_of ? "Same file as " + r.duplicate_of : null});
    }
    render(r.upload_id);
    $("#upload-result").textContent = r.duplicate_of ? "Already uploaded as " + r.duplicate_of : "Uploaded.";
    $("#upload-form").dataset.lastUploadId = r.upload_id;
    $("#file-input").value = "";
    refreshStats();
  } catch (err) {
    $("#upload-result").textContent = "Upload failed: " + err.message;
  }
});
if (token) start(); else showToken();
</script>
</body>
</html>
"""
