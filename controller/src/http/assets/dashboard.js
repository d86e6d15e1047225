// The cpevisor fleet dashboard. The token comes from the URL fragment (#token=..., never sent
// to the server, removed from the address bar at once) or the login field, and is kept in
// sessionStorage (this tab only). Every datum is put in the page as text, never as HTML.
"use strict";

const KEY = "cpevisor-api-token";
const REFRESH_MS = 5000;
let timer = null;

const $ = (id) => document.getElementById(id);

function hashParams() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  return p;
}

function takeTokenFromHash() {
  const p = hashParams();
  const t = p.get("token");
  if (t) {
    sessionStorage.setItem(KEY, t);
    p.delete("token");
    const rest = p.toString();
    history.replaceState(null, "", location.pathname + (rest ? "#" + rest : ""));
  }
}

function token() {
  return sessionStorage.getItem(KEY);
}

async function api(path) {
  const r = await fetch("/api/v1/" + path, {
    headers: { Authorization: "Bearer " + token() },
    cache: "no-store",
  });
  if (r.status === 401) {
    const e = new Error("the token was refused");
    e.unauthorized = true;
    throw e;
  }
  const body = await r.json();
  if (!r.ok) {
    throw new Error(body.error || r.statusText);
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = c instanceof Node ? wrap(c) : el("td", c === null || c === undefined ? "-" : c);
    tr.appendChild(td);
  }
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  return tr;
}

function wrap(node) {
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows);
}

function agentLink(id) {
  const a = el("a", id);
  a.href = "#agent=" + encodeURIComponent(id);
  return a;
}

function kib(n) {
  if (n === null || n === undefined) return "-";
  return n >= 1024 ? (n / 1024).toFixed(0) + " MiB" : n + " KiB";
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "-";
}

function fault(code, message) {
  // An execution unit says NoFault when it has none.
  if (code === null || code === undefined || code === "NoFault") return "";
  return code + (message ? " " + message : "");
}

function show(section) {
  for (const s of ["login", "fleet", "agent"]) $(s).hidden = s !== section;
  $("logout").hidden = section === "login";
}

function progress(r) {
  const t = r.targets || {};
  const total = Object.values(t).reduce((a, b) => a + b, 0);
  const bar = el("div", null, "bar");
  bar.setAttribute("role", "img");
  const parts = [
    ["done", t.done || 0],
    ["failed", (t.failed || 0) + (t.rollback_failed || 0)],
    ["active", (t.active || 0) + (t.queued || 0)],
    ["back", (t.rollback || 0) + (t.rolled_back || 0)],
  ];
  for (const [cls, n] of parts) {
    if (!total || !n) continue;
    const s = el("span", null, cls);
    s.style.width = (100 * n) / total + "%";
    s.title = n + " " + cls;
    bar.appendChild(s);
  }
  bar.setAttribute("aria-label", (t.done || 0) + " of " + total + " done");
  return { bar, total, t };
}

function rolloutBox(r) {
  const box = el("div", null, "rollout");
  box.dataset.rollout = r.id;
  const title = el("div", null, "title");
  const name = el("span", "#" + r.id + " " + r.name + " " + r.version);
  const state = el("span", r.state, "state state-" + r.state);
  state.dataset.state = r.state;
  title.append(name, state);
  const { bar, total, t } = progress(r);
  const counts = el(
    "div",
    (t.done || 0) + "/" + total + " done, " + (t.failed || 0) + " failed, " +
      ((t.active || 0) + (t.queued || 0)) + " in flight, " + (t.pending || 0) + " pending" +
      (r.wave >= 0 ? ", wave " + r.wave : ""),
    "counts"
  );
  counts.dataset.done = t.done || 0;
  counts.dataset.total = total;
  box.append(title, bar, counts);
  if (r.reason) box.appendChild(el("div", r.reason, "note"));
  return box;
}

async function rolloutDetail(box, id) {
  // Per-wave progress and the failures with their fault codes.
  const d = await api("rollouts/" + id);
  const waves = el("div", null, "waves");
  for (const w of d.waves || []) {
    const t = w.targets || {};
    waves.appendChild(
      el("span", (w.wave === 0 ? "canary" : "wave " + w.wave) + ": " + (t.done || 0) + "/" +
        w.agents + " done" + (t.failed ? ", " + t.failed + " failed" : ""))
    );
  }
  box.appendChild(waves);
  for (const f of d.failures || []) {
    const line = el("div", null, "fault");
    line.dataset.agent = f.agent;
    line.append(agentLink(f.agent), document.createTextNode(" " + f.state + ": " +
      fault(f.fault_code, f.fault_message)));
    box.appendChild(line);
  }
}

async function loadFleet() {
  const [s, agents, rollouts] = await Promise.all([
    api("summary"),
    api("agents?limit=500"),
    api("rollouts"),
  ]);
  $("agents-online").textContent = s.agents.online;
  $("agents-total").textContent = s.agents.total;
  $("rollouts-active").textContent = s.rollouts_active;
  $("apps-count").textContent = s.apps.length;

  const boxes = [];
  for (const r of rollouts.rollouts.slice(0, 10)) {
    const box = rolloutBox(r);
    boxes.push(box);
    await rolloutDetail(box, r.id);
  }
  $("rollouts").replaceChildren(...(boxes.length ? boxes : [el("p", "No rollout yet.", "note")]));

  fill("apps", s.apps.map((a) => row([a.name, a.version, a.agents, a.not_installed])));
  fill("failures", s.failures.map((f) => row([
    agentLink(f.agent), f.kind, f.deployment, f.state,
    el("span", fault(f.fault_code, f.fault_message), "fault"),
  ], { "data-failure": f.agent })));

  fill("agents", agents.agents.map((a) => {
    const free = Math.max(...a.exec_envs.map((e) => e.available_kib ?? -1), -1);
    const apps = a.dus.map((d) => d.name + " " + d.version + (d.status && d.status !== "Installed" ? " (" + d.status + ")" : "")).join(", ");
    const faults = a.eus.filter((u) => fault(u.fault_code))
      .map((u) => (u.name || u.euid) + ": " + fault(u.fault_code, u.fault_message)).join("; ");
    // The agent's architecture, else its ExecEnvs'.
    const arch = a.arch || [...new Set(a.exec_envs.map((e) => e.arch).filter(Boolean))].join(", ");
    return row([
      agentLink(a.endpoint_id),
      el("span", a.online ? "online" : "offline", a.online ? "online" : "offline"),
      a.model, a.board, arch || "-", free >= 0 ? kib(free) : "-", apps || "-",
      el("span", faults, "fault"),
    ], { "data-agent": a.endpoint_id });
  }));
  $("agents-more").textContent = agents.next ? "First 500 agents shown." : "";
}

async function loadAgent(id) {
  const a = await api("agents/" + encodeURIComponent(id));
  $("agent-title").textContent = a.endpoint_id;
  $("agent").dataset.agent = a.endpoint_id;
  const facts = [
    ["Online", a.online ? "yes" : "no"], ["Last seen", when(a.last_seen)],
    ["Inventory read", when(a.inventory_at)], ["Manufacturer", a.manufacturer],
    ["Model", a.model], ["Software", a.software_version], ["Serial", a.serial],
    ["Board", a.board], ["Arch", a.arch],
    ["Labels", Object.entries(a.labels || {}).map(([k, v]) => k + "=" + v).join(", ") || null],
  ];
  $("agent-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", k), el("dd", v ?? "-")]));
  fill("agent-envs", a.exec_envs.map((e) => row([e.name, e.type, e.status, e.arch,
    kib(e.budget_kib), kib(e.available_kib)])));
  fill("agent-dus", a.dus.map((d) => row([d.name, d.version, d.status, d.uuid, d.url])));
  fill("agent-eus", a.eus.map((u) => row([u.name, u.euid, u.status,
    el("span", fault(u.fault_code, u.fault_message), "fault")])));
  fill("agent-ops", a.operations.map((o) => row([o.id, o.deployment, o.kind, o.state,
    el("span", fault(o.fault_code, o.fault_message), "fault"), when(o.finished || o.created)])));
}

async function refresh() {
  clearTimeout(timer);
  if (!token()) {
    show("login");
    return;
  }
  const agent = hashParams().get("agent");
  try {
    if (agent) {
      await loadAgent(agent);
      show("agent");
    } else {
      await loadFleet();
      show("fleet");
    }
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.unauthorized) {
      sessionStorage.removeItem(KEY);
      $("login-error").textContent = "The token was refused.";
      show("login");
      return;
    }
    $("status").textContent = "error: " + e.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromHash();
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    $("login-error").textContent = "";
    refresh();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    show("login");
  });
  window.addEventListener("hashchange", () => {
    takeTokenFromHash();
    refresh();
  });
  refresh();
});
