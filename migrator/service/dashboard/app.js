// The migrator dashboard: the API and its event stream, read like any client does.
// Every text from the journal is set with textContent, never parsed as HTML.
"use strict";

const PAGE = 200;
const RETRY_MS = 1000;
const DONE = new Set(["CONFIRMED"]);
const FAILED = new Set(["ROLLED_BACK", "FAILED", "LOST"]);
const rows = new Map();
let token = sessionStorage.getItem("migrator-token") || "";
let chosen = null;
let lastEventId = null;
let refreshTimer = null;
let detailTimer = null;

const $ = (id) => document.getElementById(id);

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not a problem document */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function showError(error) {
  $("error").hidden = !error;
  $("error").textContent = error ? String(error.message || error) : "";
}

// -- progress: how far through its steps a migration is --------------------------------

const PHASES = [
  [/^QUEUED$/, 0], [/^NEW$/, 2], [/^(BEGIN|DUMP)/, 6], [/^PREPAR/, 14],
  [/^PERFORMING/, 20], [/^PERFORM/, 80], [/^FINISH/, 86], [/^CONFIRM/, 95],
];

function percent(m) {
  if (DONE.has(m.state)) return 100;
  const p = m.progress;
  if (/^PERFORMING/.test(m.state) && p && p.total > 0) {
    return Math.min(79, 20 + Math.floor((60 * p.transferred) / p.total));
  }
  for (const [pattern, value] of PHASES) if (pattern.test(m.state)) return value;
  return 0;
}

function stateClass(state) {
  if (DONE.has(state)) return "done";
  if (FAILED.has(state)) return "failed";
  if (state === "IN_DOUBT") return "doubt";
  return state === "QUEUED" ? "" : "running";
}

// -- the table --------------------------------------------------------------------------

function cell(tr, text, className) {
  const td = tr.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function renderRow(m) {
  const tr = document.createElement("tr");
  tr.dataset.id = m.id;
  if (m.id === chosen) tr.classList.add("chosen");
  cell(tr, m.id.slice(0, 8), "id").title = m.id;
  cell(tr, m.domain);
  cell(tr, `${m.src} → ${m.dst}`, "hosts");
  cell(tr, m.state, `state ${stateClass(m.state)}`);
  const td = cell(tr, "");
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = percent(m);
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = `${bar.value} %`;
  td.append(bar, pct);
  cell(tr, m.reason || "", "reason");
  tr.addEventListener("click", () => choose(m.id));
  return tr;
}

function render() {
  const body = $("migrations").tBodies[0];
  const sorted = [...rows.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
  body.replaceChildren(...sorted.map(renderRow));
  $("count").textContent = `${rows.size} shown`;
}

function updateRow(m) {
  const old = document.querySelector(`tr[data-id="${CSS.escape(m.id)}"]`);
  if (old) old.replaceWith(renderRow(m));
  else render();
}

async function refresh() {
  const params = new URLSearchParams({ limit: PAGE });
  if ($("state").value) params.set("state", $("state").value);
  if ($("host").value) params.set("host", $("host").value);
  try {
    const page = await (await api(`/v1/migrations?${params}`)).json();
    rows.clear();
    for (const m of page.items) rows.set(m.id, m);
    render();
    showError(null);
  } catch (error) {
    showError(error);
  }
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

function matches(state, src, dst) {
  const wanted = $("state").value;
  const host = $("host").value;
  return (!wanted || wanted === state) && (!host || src.includes(host) || dst.includes(host));
}

// -- the event stream (fetch, so that it can carry the token) ---------------------------

function onJournalEvent(e) {
  const m = rows.get(e.migration_id);
  if (!m) {
    refreshSoon();
  } else {
    m.state = e.state;
    m.reason = e.reason;
    if (!matches(m.state, m.src, m.dst)) refreshSoon();
    else updateRow(m);
  }
  if (e.migration_id === chosen) showDetailSoon();
}

function onProgress(p) {
  const m = rows.get(p.migration_id);
  if (!m) return;
  m.progress = p.progress;
  m.state = p.state;
  updateRow(m);
}

function dispatch(fields) {
  if (!("data" in fields)) return;
  const data = JSON.parse(fields.data);
  if (fields.event === "progress") onProgress(data);
  else {
    lastEventId = fields.id ?? lastEventId;
    onJournalEvent(data);
  }
}

async function follow() {
  const params = new URLSearchParams({ progress: "true" });
  const extra = lastEventId ? { "Last-Event-ID": lastEventId } : {};
  const response = await fetch(`/v1/events?${params}`, { headers: headers(extra) });
  if (!response.ok) throw new Error(`event stream: ${response.status}`);
  setLive(true);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let fields = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") { dispatch(fields); fields = {}; continue; }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      fields[name] = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    }
  }
}

function setLive(on) {
  $("live").className = `live ${on ? "on" : "off"}`;
  $("live").textContent = on ? "stream: live" : "stream: reconnecting";
}

async function followForever() {
  for (;;) {
    try { await follow(); } catch (error) { console.warn(error); }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

// -- one migration: its timeline and the path it took ------------------------------------

function choose(id) {
  chosen = id;
  for (const tr of document.querySelectorAll("#migrations tr.chosen")) tr.classList.remove("chosen");
  const tr = document.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
  if (tr) tr.classList.add("chosen");
  showDetail();
}

function showDetailSoon() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(showDetail, 300);
}

function seconds(value) {
  return value == null ? "" : `${(value * 1000).toFixed(1)} ms`;
}

async function showDetail() {
  if (!chosen) return;
  try {
    const shown = await (await api(`/v1/migrations/${encodeURIComponent(chosen)}/events`)).json();
    const m = shown.migration;
    $("detail").hidden = false;
    $("detail-id").textContent = m.id;
    $("detail-summary").textContent =
      `${m.domain}: ${m.src} → ${m.dst}, protocol v${m.protocol}, ${m.state}` +
      (m.owner ? `, owner ${m.owner}` : "");
    $("detail-reason").textContent = m.reason || "";
    const body = $("timeline").tBodies[0];
    body.replaceChildren(...shown.events.map((e) => {
      const tr = document.createElement("tr");
      cell(tr, e.seq);
      cell(tr, e.at ? e.at.replace("T", " ").slice(0, 23) : "");
      cell(tr, e.step || "");
      cell(tr, e.kind);
      cell(tr, e.state, `state ${stateClass(e.state)}`);
      cell(tr, seconds(e.duration));
      cell(tr, e.error ? `${e.error.type || ""}: ${e.error.message || ""}` : "", "reason");
      return tr;
    }));
    const svg = await (await api(`/v1/diagram?migration=${encodeURIComponent(m.id)}`)).blob();
    const img = $("diagram");
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(svg);
  } catch (error) {
    showError(error);
  }
}

// -- start ---------------------------------------------------------------------------------

async function loadStates() {
  const doc = await (await fetch("/openapi.json")).json();
  for (const state of doc.components.schemas.State.enum) {
    const option = document.createElement("option");
    option.value = option.textContent = state;
    $("state").append(option);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("token").value = token;
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("migrator-token", token);
    refresh();
  });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("state").addEventListener("change", refresh);
  $("host").addEventListener("input", refreshSoon);
  await loadStates().catch(showError);
  await refresh();
  followForever();
});
