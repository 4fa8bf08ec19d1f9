// The fusionrec console: five read-only views over the documented JSON API (no framework, no
// build step). Routes live in the hash (#/user?id=U1) so every view can be linked to and reloaded.
"use strict";

const KEY_STORAGE = "fusionrec.apiKey";
const POLL_MS = 2500;
const WINDOW_MS = 5 * 60 * 1000;
const $ = (sel) => document.querySelector(sel);

// -- DOM and formatting ---------------------------------------------------------------------------
// Text always goes in through textContent: titles and queries are shop data, never markup.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c);
  return el;
}
const svg = (tag, attrs) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
};
function num(v, digits) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (digits !== undefined) return v.toFixed(digits);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString("en-US");
  return Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}
function duration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const s = Math.abs(ms) / 1000;
  if (s < 1) return `${Math.round(Math.abs(ms))} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}
function when(ts) {
  if (ts === null || ts === undefined) return h("span", { text: "–" });
  const d = new Date(ts);
  const text = d.toISOString().replace("T", " ").slice(0, 19);
  return h("time", { datetime: d.toISOString(), title: `${duration(Date.now() - ts)} ago`, text });
}
const itemLink = (id, title) =>
  h("a", { href: `#/item?id=${encodeURIComponent(id)}`, "data-testid": "item-link", "data-item-id": id, text: title || id });
function show(el, on) { el.hidden = !on; }

// -- the API --------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const what = body && typeof body === "object"
      ? [body.error, body.detail, ...(body.problems || []).map((p) => `${p.field}: ${p.message}`)]
          .filter((x) => x !== undefined && x !== null && x !== "").map(String).join(": ")
      : String(body || "").slice(0, 300);
    super(`${status}${what ? " " + what : ""}`);
    this.status = status;
  }
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function fetchOk(path) {
  let resp;
  try {
    resp = await fetch(path, { headers: { Accept: "application/json", ...authHeaders() } });
  } catch (exc) {
    throw new ApiError(0, `cannot reach the API (${exc.message})`);
  }
  if (resp.ok) return resp;
  const text = await resp.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* not JSON: shown as text */ }
  if (resp.status === 401 || resp.status === 403) askForKey(resp.status, body);
  throw new ApiError(resp.status, body);
}
async function api(path) { return (await fetchOk(path)).json(); }

function showError(view, exc) {
  const box = $(`#${view}-error`);
  box.textContent = exc ? `error: ${exc.message}` : "";
  show(box, Boolean(exc));
}

// -- API key --------------------------------------------------------------------------------------
function askForKey(status, body) {
  const detail = body && typeof body === "object" ? body.detail || body.error : body;
  $("#auth-message").textContent = `The API answered ${status}${detail ? `: ${detail}` : ""}. ` +
    "Give an API key (the console reads with the scopes recommendations:read and search).";
  show($("#auth-panel"), true);
}
function setupAuth() {
  $("#api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("#auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    show($("#auth-panel"), false);
    route();
  });
  $("#api-key-clear").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("#api-key").value = "";
  });
  $("#api-key-toggle").addEventListener("click", () => {
    $("#auth-message").textContent = "API key for this console (empty: none).";
    show($("#auth-panel"), $("#auth-panel").hidden);
  });
}

// -- charts: hand-drawn SVG lines over the last five minutes ----------------------------------------
const CHARTS = [
  { key: "events", title: "events / s", series: [["events", "events/s"]] },
  { key: "outcomes", title: "outcomes / s", series: [["applied", "applied"], ["duplicates", "duplicates"], ["dead_letters", "dead letters"]] },
  { key: "lag", title: "consumer lag (records)", series: [["lag", "lag"]] },
  { key: "freshness", title: "freshness (ms)", series: [["freshness_p50", "p50"], ["freshness_p99", "p99"]] },
  { key: "batch", title: "batch latency (ms)", series: [["batch_p50", "p50"], ["batch_p99", "p99"]] },
];
const W = 300, H = 80;

// The x axis spans the data so far, up to the five-minute window; the y axis starts at 0.
function drawChart(chart, seriesList, now) {
  const svgEl = chart.svgEl;
  svgEl.replaceChildren();
  const pts = seriesList.flatMap((s) => s.points);
  const top = Math.max(1e-9, ...pts.map((p) => p[1]));
  const first = Math.min(now, ...pts.map((p) => p[0]));
  const span = Math.max(2 * POLL_MS, Math.min(WINDOW_MS, now - first));
  const w = svgEl.clientWidth || W; // drawn in the chart's own pixels: round dots, even strokes
  svgEl.setAttribute("viewBox", `0 0 ${w} ${H}`);
  const x = (t) => w - 4 - ((now - t) / span) * (w - 4); // 4 px on the right for the newest dot
  const y = (v) => H - 2 - (v / top) * (H - 6);
  svgEl.append(svg("line", { x1: 0, x2: w, y1: H - 2, y2: H - 2, class: "axis" }));
  seriesList.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svgEl.append(svg("polyline", { points: d, class: `line line-${i}` }));
    const [t, v] = s.points[s.points.length - 1]; // the newest sample, visible even when it is the only one
    svgEl.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: `dot dot-${i}` }));
  });
  chart.scaleEl.textContent = pts.length ? `0–${num(top)} over ${duration(span)}` : "waiting for samples";
}

// -- Live -----------------------------------------------------------------------------------------
const live = { timer: null, workers: new Map() };

function workerBlock(url) {
  const charts = {};
  const block = h("section", { class: "worker", "data-testid": "worker-block", "data-url": url },
    h("h2", {}, h("span", { class: "status", "data-testid": "worker-status" }), " ", h("code", { text: url })),
    h("p", { class: "error", "data-testid": "worker-error", hidden: true }));
  const grid = h("div", { class: "charts" });
  for (const c of CHARTS) {
    const values = h("div", { class: "values" });
    const valueEls = {};
    c.series.forEach(([id, name], i) => {
      valueEls[id] = h("b", { "data-testid": `value-${id}`, "data-value": "", text: "–" });
      values.append(h("span", { class: `legend legend-${i}` }, `${name} `, valueEls[id]));
    });
    const svgEl = svg("svg", {
      viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "chart", "data-testid": `chart-${c.key}`,
    });
    const scaleEl = h("div", { class: "scale" });
    grid.append(h("figure", { class: "card" }, h("figcaption", { text: c.title }), values, svgEl, scaleEl));
    charts[c.key] = { svgEl, scaleEl, valueEls, series: c.series.map(([id]) => id) };
  }
  block.append(grid);
  return { block, charts, prev: null, points: {} };
}

const ms = (q, k) => (q && Number.isFinite(q[k]) ? q[k] : null);
// Counters become rates over the time between two samples; a drop means the worker restarted.
function rate(cur, prev, key, dt) {
  if (!prev || !prev.up || !Number.isFinite(cur[key]) || !Number.isFinite(prev[key]) || cur[key] < prev[key]) return null;
  return (cur[key] - prev[key]) / dt;
}

function addSample(state, w, ts) {
  const sample = { ...w, ts };
  const dt = state.prev ? (ts - state.prev.ts) / 1000 : 0;
  const values = {
    lag: w.up && Number.isFinite(w.lag) ? w.lag : null,
    freshness_p50: w.up ? ms(w.freshness_ms, "p50") : null,
    freshness_p99: w.up ? ms(w.freshness_ms, "p99") : null,
    batch_p50: w.up ? ms(w.batch_ms, "p50") : null,
    batch_p99: w.up ? ms(w.batch_ms, "p99") : null,
  };
  if (w.up && dt > 0) {
    values.events = rate(w, state.prev, "events_total", dt);
    values.applied = rate(w, state.prev, "applied_total", dt);
    values.duplicates = rate(w, state.prev, "duplicates_total", dt);
    values.dead_letters = rate(w, state.prev, "dead_letters_total", dt);
  }
  for (const [id, v] of Object.entries(values)) {
    const list = (state.points[id] = state.points[id] || []);
    if (v !== null && v !== undefined) list.push([ts, v]);
    while (list.length && list[0][0] < ts - WINDOW_MS) list.shift();
  }
  state.prev = sample;
}

function renderWorker(state, w, now) {
  const status = state.block.querySelector("[data-testid=worker-status]");
  status.textContent = w.up ? "up" : "down";
  status.className = `status ${w.up ? "up" : "down"}`;
  const err = state.block.querySelector("[data-testid=worker-error]");
  err.textContent = w.error ? `error: ${w.error}` : "";
  show(err, Boolean(w.error));
  for (const chart of Object.values(state.charts)) {
    for (const id of chart.series) {
      const pts = state.points[id] || [];
      const v = pts.length && pts[pts.length - 1][0] === now ? pts[pts.length - 1][1] : null;
      chart.valueEls[id].textContent = num(v);
      chart.valueEls[id].dataset.value = v === null ? "" : String(v);
    }
    drawChart(chart, chart.series.map((id) => ({ points: state.points[id] || [] })), now);
  }
}

async function pollLive() {
  live.timer = null;
  const token = routeSeq;
  try {
    const data = await api("/v1/console/live");
    if (token !== routeSeq) return; // the view was left (or re-entered) while this poll was out
    showError("live", null);
    const now = data.ts;
    const urls = new Set(data.workers.map((w) => w.url));
    for (const [url, st] of live.workers) if (!urls.has(url)) { st.block.remove(); live.workers.delete(url); }
    for (const w of data.workers) {
      if (!live.workers.has(w.url)) {
        const st = workerBlock(w.url);
        live.workers.set(w.url, st);
        $("#live-workers").append(st.block);
      }
      const st = live.workers.get(w.url);
      addSample(st, w, now);
      renderWorker(st, w, now);
    }
    show($("#live-empty"), data.workers.length === 0);
  } catch (exc) {
    if (token !== routeSeq) return;
    showError("live", exc);
  }
  live.timer = setTimeout(pollLive, POLL_MS);
}

// -- User -----------------------------------------------------------------------------------------
function listItem(it) {
  const li = h("li", { "data-testid": "list-item", "data-item-id": it.item_id },
    itemLink(it.item_id, it.title), " ", h("span", { class: "score", text: num(it.score, 3) }),
    h("span", { class: "meta", text: ` ${it.category || ""}` }));
  if (it.because) {
    li.append(h("div", { class: "because", "data-testid": "because" }, "because you viewed ",
      itemLink(it.because.item_id, it.because.title),
      h("span", { class: "meta", text: ` (similarity ${num(it.because.similarity, 2)})` })));
  }
  return li;
}

async function loadUser(params) {
  const id = (params.get("id") || "").trim();
  $("#user-id").value = id;
  show($("#user-result"), false);
  showError("user", null);
  if (!id) return;
  const token = routeSeq;
  try {
    const a = await api(`/v1/users/${encodeURIComponent(id)}/activity?k=20`);
    if (token !== routeSeq) return;
    const summary = a.state_available
      ? `user ${a.user_id}: ${a.n_events ?? 0} events, last ${a.last_ts ? duration(Date.now() - a.last_ts) + " ago" : "never"}`
      : `user ${a.user_id}: no user state readable here (the list below is what downstream sees)`;
    $("#user-summary").textContent = summary;
    $("#user-events tbody").replaceChildren(...(a.events || []).map((e) =>
      h("tr", { "data-testid": "user-event", "data-item-id": e.item_id },
        h("td", {}, itemLink(e.item_id, e.title)), h("td", { text: e.type }), h("td", {}, when(e.ts)))));
    $("#user-queries").replaceChildren(...(a.queries || []).map((q) =>
      h("li", { "data-testid": "user-query" },
        h("a", { href: `#/search?q=${encodeURIComponent(q)}&k=10`, text: q }))));
    const list = a.list || { items: [] };
    $("#list-source").textContent = list.source || "–";
    $("#list-model").textContent = list.model_version || "–";
    $("#list-age").textContent = duration(list.age_ms);
    $("#user-list").replaceChildren(...list.items.map(listItem));
    if (list.degraded) showError("user", new Error(`list degraded: ${list.degraded}`));
    show($("#user-result"), true);
  } catch (exc) {
    if (token === routeSeq) showError("user", exc);
  }
}

// -- Item -----------------------------------------------------------------------------------------
async function loadItem(params) {
  const id = (params.get("id") || "").trim();
  $("#item-id").value = id;
  show($("#item-result"), false);
  showError("item", null);
  if (!id) return;
  const enc = encodeURIComponent(id);
  const token = routeSeq;
  try {
    const [it, sim] = await Promise.all([api(`/v1/items/${enc}`), api(`/v1/items/${enc}/similar?k=10`)]);
    if (token !== routeSeq) return;
    $("#item-title").textContent = it.title || it.item_id;
    $("#item-description").textContent = it.description || "";
    $("#item-shown-id").textContent = it.item_id;
    $("#item-category").textContent = it.category || "–";
    $("#item-brand").textContent = it.brand || "–";
    const tags = (it.tags || []).map((t) => h("span", { class: "tag", text: t }));
    $("#item-tags").replaceChildren(...(tags.length ? tags : ["–"]));
    $("#similar-basis").textContent = `(by ${sim.basis} vectors, model ${sim.model_version})`;
    $("#item-similar").replaceChildren(...sim.items.map((s) =>
      h("li", { "data-testid": "similar-item", "data-item-id": s.item_id }, itemLink(s.item_id, s.title), " ",
        h("span", { class: "score", text: num(s.score, 3) }))));
    show($("#item-result"), true);
  } catch (exc) {
    if (token === routeSeq) showError("item", exc);
  }
}

// -- Search ---------------------------------------------------------------------------------------
async function loadSearch(params) {
  const q = (params.get("q") || "").trim();
  const k = params.get("k") || "10";
  const user = (params.get("user") || "").trim();
  $("#search-q").value = q;
  $("#search-k").value = k;
  $("#search-personal").checked = Boolean(user);
  $("#search-user").disabled = !user;
  if (user) $("#search-user").value = user;
  show($("#search-result"), false);
  showError("search", null);
  if (!q) return;
  const qs = new URLSearchParams({ q, k, explain: "true" });
  if (user) qs.set("user_id", user);
  const token = routeSeq;
  try {
    const r = await api(`/v1/search?${qs}`);
    if (token !== routeSeq) return;
    const personal = Boolean(r.personalized);
    $("#search-meta").textContent = `${r.items.length} results, mode ${r.mode}, model ${r.model_version}` +
      (user && !personal ? " (not personalised: no list from this model for the user)" : "") +
      (r.degraded ? `; ${r.degraded}` : "");
    $("#search-results").classList.toggle("with-personal", personal);
    const cell = (name, v) => h("td", { class: `num ${name}-col`, "data-testid": `score-${name}`, text: num(v, 3) });
    $("#search-results tbody").replaceChildren(...r.items.map((it, i) => {
      const s = it.scores || {};
      return h("tr", { "data-testid": "search-row", "data-item-id": it.item_id },
        h("td", { text: String(i + 1) }), h("td", {}, itemLink(it.item_id, it.title)),
        cell("bm25", s.bm25), cell("dense", s.dense), cell("hybrid", s.hybrid), cell("personal", s.personal),
        cell("final", it.score));
    }));
    show($("#search-result"), true);
  } catch (exc) {
    if (token === routeSeq) showError("search", exc);
  }
}

// -- Model ----------------------------------------------------------------------------------------
async function loadModel() {
  show($("#model-result"), false);
  showError("model", null);
  const token = routeSeq;
  try {
    const m = await api("/v1/model");
    if (token !== routeSeq) return;
    $("#model-version").textContent = m.model_version;
    $("#model-variant").textContent = m.variant || "–";
    $("#model-kind").textContent = m.kind;
    const metrics = Object.entries(m.validation || {});
    $("#model-validation tbody").replaceChildren(...metrics.map(([name, v]) =>
      h("tr", { "data-testid": "validation-metric" }, h("td", { text: name }),
        h("td", { class: "num", text: typeof v === "number" ? num(v, 4) : JSON.stringify(v) }))));
    show($("#model-validation"), metrics.length > 0);
    show($("#model-no-validation"), metrics.length === 0);
    $("#model-manifest").textContent = JSON.stringify(m.manifest || {}, null, 2);
    const reports = m.reports || [];
    $("#model-reports").replaceChildren(...reports.map((r) => {
      const img = h("img", { alt: r.name, "data-testid": "report-image", "data-name": r.name });
      reportImage(img, r.url);
      return h("figure", { class: "report" }, img, h("figcaption", { text: r.name }));
    }));
    show($("#model-no-reports"), reports.length === 0);
    show($("#model-result"), true);
  } catch (exc) {
    if (token === routeSeq) showError("model", exc);
  }
}

// Fetched rather than <img src>: an <img> request cannot carry the Authorization header.
async function reportImage(img, url) {
  try {
    img.src = URL.createObjectURL(await (await fetchOk(url)).blob());
  } catch (exc) {
    img.replaceWith(h("p", { class: "error", "data-testid": "error", text: `error: ${url}: ${exc.message}` }));
  }
}

// -- routing --------------------------------------------------------------------------------------
const VIEWS = { live: () => pollLive(), user: loadUser, item: loadItem, search: loadSearch, model: loadModel };
// Bumped on every route: an answer that comes back after the view changed is dropped, not drawn.
let routeSeq = 0;

function parseHash() {
  const m = /^#\/([a-z]+)(?:\?(.*))?$/.exec(location.hash);
  const view = m && VIEWS[m[1]] ? m[1] : "live";
  return { view, params: new URLSearchParams(m && m[2] ? m[2] : "") };
}

function route() {
  const { view, params } = parseHash();
  if (live.timer) { clearTimeout(live.timer); live.timer = null; }
  routeSeq += 1;
  for (const name of Object.keys(VIEWS)) show($(`#view-${name}`), name === view);
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  VIEWS[view](params);
}

// A form sets the hash; submitting the same values again reloads the view directly.
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function setupForms() {
  $("#user-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(`#/user?id=${encodeURIComponent($("#user-id").value.trim())}`);
  });
  $("#item-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(`#/item?id=${encodeURIComponent($("#item-id").value.trim())}`);
  });
  $("#search-personal").addEventListener("change", () => {
    $("#search-user").disabled = !$("#search-personal").checked;
  });
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const qs = new URLSearchParams({ q: $("#search-q").value.trim(), k: $("#search-k").value || "10" });
    if ($("#search-personal").checked) {
      const user = $("#search-user").value.trim();
      if (!user) { showError("search", new Error("personal search needs a user id")); return; }
      qs.set("user", user);
    }
    go(`#/search?${qs}`);
  });
}

$("#live-interval").textContent = String(POLL_MS / 1000);
setupAuth();
setupForms();
window.addEventListener("hashchange", route);
route();
