// omk dashboard: fetches the JSON API and follows /api/events. Every piece
// of data goes into the page through textContent, never as HTML.
"use strict";

(function () {
  // A token given once as /#token=... is kept for this tab, then removed
  // from the address bar.
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("omk-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
})();
const token = sessionStorage.getItem("omk-token");

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function badge(text, tone) {
  return el("span", "badge " + tone, text);
}

function tone(status) {
  const s = String(status || "").toLowerCase();
  if (["completed", "ready", "complete", "closed", "ok", "healthy"].includes(s)) return "ok";
  if (["failed", "failed_infra", "open", "exhausted", "interrupted", "degraded", "error"].includes(s)) return "bad";
  if (["halfopen", "blocked_on_human", "needs_more_budget", "not_ready", "shutdown", "stopped", "paused"].includes(s)) return "warn";
  return "info";
}

async function get(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(path, { headers });
  if (r.status === 401) throw new Error("unauthorized: open /#token=<token>");
  return r.json();
}

function fill(id, items, render, empty) {
  const box = document.getElementById(id);
  box.replaceChildren();
  if (!items || items.length === 0) {
    box.append(el("p", "empty", empty));
    return;
  }
  for (const item of items) box.append(render(item));
}

function teamCard(t) {
  const c = el("div", "card");
  c.dataset.team = t.name;
  const h = el("h3");
  h.append(el("span", null, t.name), badge(t.phase, tone(t.phase)));
  c.append(h, el("div", "meta", t.task));
  c.append(el("div", "meta", `${t.worker_count} × ${t.worker_role} · ${t.tokens || 0} tokens`));
  const ul = el("ul");
  for (const task of t.tasks || []) {
    const li = el("li");
    li.append(badge(task.status, tone(task.status)), document.createTextNode(" "));
    li.append(el("span", "task-title", task.title));
    if (task.worker) li.append(el("span", "meta", " · " + task.worker));
    ul.append(li);
  }
  c.append(ul);
  return c;
}

function goalCard(g) {
  const c = el("div", "card");
  const h = el("h3");
  h.append(el("span", null, g.goal_id), badge(g.status, tone(g.status)));
  c.append(h, el("div", "meta", g.normalized_goal || g.original_goal));
  const ready = g.status === "ready" ? "proof: ready" : "proof: not ready (" + g.status + ")";
  c.append(el("div", "meta", `phase ${g.phase} · ${ready}`));
  return c;
}

function gateCard(b) {
  const c = el("div", "card");
  const h = el("h3");
  h.append(el("span", null, b.gate_name), badge(b.state, tone(b.state)));
  c.append(h, el("div", "meta", `failures ${b.failure_count}` + (b.last_failure_at ? ` · last ${b.last_failure_at}` : "")));
  return c;
}

// A bar filled to `taken` of `of`.
function loadBar(taken, of) {
  const bar = el("div", "bar");
  const fillBar = el("span");
  fillBar.style.width = Math.min(100, (100 * taken) / Math.max(1, of)) + "%";
  bar.append(fillBar);
  return bar;
}

function poolCard(p) {
  const c = el("div", "card");
  const h = el("h3");
  h.append(el("span", null, p.name), badge(`${p.active_tasks}/${p.max_workers}`, "info"));
  c.append(h, el("div", "meta", `queued ${p.queued_tasks} · admitted ${p.total_admitted} · rejected ${p.total_rejected}`));
  c.append(loadBar(p.active_tasks, p.max_workers));
  return c;
}

// A pool of the store's cluster (omk dashboard --store): its load against
// its declared capacity, else against the slots of the workers serving it.
function clusterPoolCard(p) {
  const c = el("div", "card");
  c.dataset.clusterPool = p.name;
  const h = el("h3");
  const taken = p.active_tasks + p.leased_slots;
  const of = p.capacity === null ? p.max_workers : p.capacity;
  h.append(el("span", null, p.name), badge("cluster", "info"), badge(`${taken}/${of}`, "info"));
  const cap = p.capacity === null ? "no capacity set" : `capacity ${p.capacity}`;
  c.append(
    h,
    el("div", "meta", `${cap} · worker slots ${p.max_workers} · queued ${p.queued_tasks}`),
    el("div", "meta", `workers: ${p.workers.length ? p.workers.join(", ") : "none"}`),
    loadBar(taken, of),
  );
  return c;
}

function runCard(r) {
  const c = el("div", "card");
  const h = el("h3");
  h.append(el("span", null, r.id), badge(r.status, tone(r.status)));
  const what = r.phase !== undefined ? `autopilot · phase ${r.phase}` : `ralph · iteration ${r.iteration}/${r.max_iterations}`;
  c.append(h, el("div", "meta", r.task), el("div", "meta", what));
  return c;
}

// Whether /api/pools has a store's cluster: then a team's changes (its
// tasks claimed and ended on the hosts) change the pools' load too.
let clustered = false;

const loaders = {
  async teams() {
    const d = await get("/api/teams");
    fill("teams", d.teams, teamCard, "no teams");
  },
  async goals() {
    const d = await get("/api/goals");
    fill("goals", d.goals, goalCard, "no goals");
  },
  async gates() {
    const d = await get("/api/gates");
    fill("gates", d.breakers, gateCard, "no gates");
  },
  async pools() {
    const d = await get("/api/pools");
    clustered = !!d.cluster;
    const cluster = (d.cluster ? d.cluster.pools : []).map((p) => ({ ...p, cluster: true }));
    fill("pools", [...d.pools, ...cluster], (p) => (p.cluster ? clusterPoolCard(p) : poolCard(p)), "no pools");
  },
  async runs() {
    const [a, r] = await Promise.all([get("/api/autopilots"), get("/api/ralphs")]);
    fill("runs", [...(a.autopilots || []), ...(r.ralphs || [])], runCard, "no runs");
  },
  async metrics() {
    const d = await get("/api/metrics");
    const box = document.getElementById("metrics");
    box.replaceChildren();
    for (const [k, v] of Object.entries(d.metrics || {})) {
      if (typeof v !== "number" || k === "version") continue;
      const t = el("div", "tile");
      t.append(el("div", "n", v), el("div", "k", k.replace(/^total_/, "").replace(/_/g, " ")));
      box.append(t);
    }
  },
  async health() {
    const d = await get("/api/health");
    const h = document.getElementById("health");
    h.textContent = `omk ${d.version} · ${d.status}`;
    h.className = "badge " + tone(d.status);
  },
};

const kindToLoader = { team: "teams", goal: "goals", gates: "gates", pools: "pools", metrics: "metrics", autopilot: "runs", ralph: "runs" };
const pending = new Set();
let timer = null;

function refresh(name) {
  pending.add(name);
  if (timer) return;
  // Coalesce bursts of events into one fetch per section.
  timer = setTimeout(async () => {
    timer = null;
    const names = [...pending];
    pending.clear();
    await Promise.all(names.map((n) => loaders[n]().catch(showError)));
  }, 50);
}

function showError(e) {
  const h = document.getElementById("health");
  h.textContent = String(e.message || e);
  h.className = "badge bad";
}

function follow() {
  const url = "/api/events" + (token ? "?token=" + encodeURIComponent(token) : "");
  const es = new EventSource(url);
  const live = document.getElementById("live");
  es.addEventListener("hello", () => {
    live.textContent = "live";
    live.className = "badge ok";
    Object.keys(loaders).forEach(refresh);
  });
  for (const kind of Object.keys(kindToLoader)) {
    es.addEventListener(kind, () => refresh(kindToLoader[kind]));
  }
  es.addEventListener("team", () => {
    if (clustered) refresh("pools");
  });
  es.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "badge warn";
  };
}

Object.keys(loaders).forEach(refresh);
follow();
