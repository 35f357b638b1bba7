// resc dashboard: plain DOM, no framework. Every text from the server (events, tasks,
// reasons, names) goes into the page as a text node, never as HTML.
"use strict";

const state = { page: "overview", session: null, timer: null, liveAfter: 0, livePaused: false, liveKept: [] };
const REFRESH_MS = 2000;
const LIVE_KEPT = 300;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { node.replaceChildren(); return node; }
const $ = (id) => document.getElementById(id);

// --- numbers with units --------------------------------------------------------------

function count(n) {
  if (n === null || n === undefined) return "–";
  const abs = Math.abs(n);
  if (abs >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (abs >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (abs >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return String(Math.round(n));
}
function rate(n) {
  if (n === null || n === undefined) return "–";
  const abs = Math.abs(n);
  const text = abs >= 100 ? n.toFixed(0) : abs >= 10 ? n.toFixed(1) : n.toFixed(2);
  return (n > 0 ? "+" : "") + text;
}
function perSecond(n) {
  if (n === null || n === undefined) return ["–", ""];
  return [n >= 100 ? n.toFixed(0) : n.toFixed(1), "events/s"];
}
function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(0) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}
function percent(x) { return x === null || x === undefined ? "–" : (x * 100).toFixed(x < 0.1 ? 2 : 1) + " %"; }
function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "–"; }
function when(t) { return t ? new Date(t * 1000).toLocaleString() : "time n/a"; }

// --- talking to the server -----------------------------------------------------------

async function get(path) {
  const answer = await fetch("/dashboard/api/" + path, { headers: { Accept: "application/json" } });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error || answer.statusText);
  return body;
}

async function post(path, data) {
  const answer = await fetch("/dashboard/api/" + path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": state.session ? state.session.csrf : "" },
    body: JSON.stringify(data),
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.error || answer.statusText);
  return body;
}

function showError(where, error) {
  clear(where).append(el("p", { class: "error" }, String(error.message || error)));
}

// --- sparklines ------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function spark(values) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 30");
  svg.setAttribute("preserveAspectRatio", "none");
  const known = values.filter((v) => v !== null && v !== undefined);
  if (known.length < 2) return svg;
  const max = Math.max(...known, 1);
  const step = 100 / (values.length - 1);
  const points = values.map((v, i) => `${(i * step).toFixed(2)},${(28 - ((v || 0) / max) * 26).toFixed(2)}`);
  const area = document.createElementNS(SVG, "polygon");
  area.setAttribute("points", `0,30 ${points.join(" ")} 100,30`);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(area, line);
  return svg;
}

// --- pages -----------------------------------------------------------------------------

function card(label, value, unit, extra) {
  return el("div", { class: "card" }, el("div", { class: "label" }, label),
    el("div", { class: "value" }, value, unit ? el("span", { class: "unit" }, unit) : null), extra || null);
}

async function showOverview() {
  const data = await get("overview");
  const status = $("status");
  status.className = "pill " + (data.ready ? "good" : "bad");
  status.textContent = data.ready ? "ready" : "not ready";
  status.title = Object.entries(data.not_ready).map(([k, v]) => `${k}: ${v}`).join("\n");
  const events = data.events_per_s;
  const [taken, unit] = perSecond(events ? events.taken : null);
  const [committed] = perSecond(events ? events.committed : null);
  const cards = clear($("overview-cards"));
  cards.append(
    card("Taken", taken, events ? unit : "", null),
    card("Committed", committed, events ? unit : "", null),
    card("Fetch errors", percent(data.fetch_error_rate), "", null),
    card("Readiness", data.ready ? "ready" : "not ready", "",
      data.ready ? null : el("div", { class: "note" }, Object.entries(data.not_ready).map(([k, v]) => `${k}: ${v}`).join("; "))),
  );
  if (!data.in_daemon) cards.append(card("Mode", "standalone", "", el("div", { class: "note" }, "no watchers here: queue lengths only")));
  if (data.redis_error) cards.append(card("Redis", "unavailable", "", el("div", { class: "note error" }, data.redis_error)));
  const grid = clear($("overview-watchers"));
  for (const w of data.watchers) {
    const rows = ["input", "taken", "failed"].map((kind) => el("div", { class: "metric", "data-kind": kind },
      el("span", { class: "name" }, kind),
      spark(w.series[kind]),
      el("span", { class: "num" }, el("span", { "data-value": kind }, count(w[kind])),
        el("span", { class: "rate" }, w.rates[kind] === undefined || w.rates[kind] === null ? "" : rate(w.rates[kind]) + "/s"))));
    const evs = w.events ? el("div", { class: "meta" },
      `taken ${count(w.events.taken)} · committed ${count(w.events.committed)} · failed ${count(w.events.failed)} since start`) : null;
    grid.append(el("div", { class: "panel", "data-watcher": w.name }, el("h3", {}, w.name), ...rows, evs));
  }
  const instances = clear($("overview-instances"));
  if (!data.instances.length) {
    instances.append(el("p", { class: "note" }, data.in_daemon ? "No resc instance registered yet."
      : "No resc instance is registered on these queues."));
  } else {
    const table = el("table", {}, el("tr", {}, el("th", {}, "Instance"), el("th", { class: "l" }, "Host"), el("th", {}, "PID"),
      el("th", {}, "Heartbeat"), el("th", {}, "In hand"), el("th", { class: "l" }, "Watchers")));
    for (const i of data.instances) {
      const beat = !i.alive ? el("span", { class: "tag bad" }, "expired")
        : i.here ? "this instance" : i.heartbeat_age_s === null ? "alive" : duration(i.heartbeat_age_s) + " ago";
      const problems = i.wrong_types.map((t) => el("span", { class: "tag bad" }, t));
      table.append(el("tr", {}, el("td", {}, i.id, ...problems), el("td", { class: "l" }, i.host || "–"),
        el("td", {}, i.pid === null ? "–" : String(i.pid)), el("td", {}, beat), el("td", {}, count(i.in_hand)),
        el("td", { class: "l" }, i.watchers.join(", "))));
    }
    instances.append(el("div", { class: "table-wrap" }, table));
  }
}

async function showRules() {
  const data = await get("rules");
  $("rules-note").textContent = data.in_daemon
    ? `Counts since resc started; a rule highlighted matched nothing in the last ${duration(data.window_s)}.`
    : "This dashboard runs without watchers (resc dashboard): the rules of the config are listed, their figures are counted by resc run and shown by its own dashboard or /metrics.";
  const table = clear($("rules-table"));
  table.append(el("tr", {}, el("th", {}, "Rule"), el("th", { class: "l" }, "Watcher"), el("th", {}, "Matches"),
    el("th", {}, "Pushed"), el("th", {}, "Deduplicated"), el("th", {}, "Fetch failed"), el("th", {}, "Fetch p50"), el("th", {}, "Fetch p99")));
  for (const r of data.rules) {
    const idle = data.in_daemon && r.matches_in_window === 0;
    table.append(el("tr", { class: idle ? "idle" : "", "data-rule": r.rule },
      el("td", {}, r.rule, idle ? el("span", { class: "tag warn" }, "no match") : null),
      el("td", { class: "l" }, r.watcher),
      el("td", {}, count(r.matches)), el("td", {}, count(r.pushed)), el("td", {}, count(r.deduplicated)),
      el("td", {}, r.fetches ? count(r.fetch_failed) : "–"),
      el("td", {}, r.fetches ? duration(r.fetch_p50_s) : "–"), el("td", {}, r.fetches ? duration(r.fetch_p99_s) : "–")));
  }
}

async function showQueues() {
  const data = await get("queues");
  const table = clear($("queues-table"));
  table.append(el("tr", {}, el("th", {}, "Todo queue"), el("th", {}, "Length"), el("th", { class: "l" }, "Set"),
    el("th", {}, "In set"), el("th", {}, "Oldest"), el("th", {}, "Delayed"), el("th", {}, "Claims"),
    el("th", {}, "In hand"), el("th", {}, "Failed")));
  const workers = clear($("queues-workers"));
  for (const q of data.queues) {
    const problems = q.wrong_types.map((t) => el("span", { class: "tag bad" }, t));
    table.append(el("tr", { "data-queue": q.queue }, el("td", {}, q.queue, ...problems),
      el("td", {}, count(q.length)), el("td", { class: "l" }, q.set || (q.set_unknown ? "unknown" : "–")),
      el("td", {}, count(q.set_size)), el("td", {}, duration(q.oldest_age_s)),
      el("td", q.next_due_in_s === null ? {} : { title: `next due in ${duration(Math.max(0, q.next_due_in_s))}` },
        count(q.delayed)), el("td", {}, count(q.claims)), el("td", {}, count(q.held)),
      el("td", {}, q.failed ? el("span", { class: "tag bad" }, count(q.failed)) : count(q.failed))));
    for (const w of q.workers) {
      const alive = w.alive ? el("span", { class: "tag good" }, "alive") : el("span", { class: "tag bad" }, "dead");
      const tasks = w.tasks.length ? el("div", { class: "text" }, w.tasks.join("\n")) : el("div", { class: "note" }, "no task in hand");
      workers.append(el("div", { class: "panel" }, el("h3", {}, `${w.id} `, alive, el("span", { class: "tag" }, q.queue)),
        el("div", { class: "meta" }, `heartbeat ${w.heartbeat_ttl_s === null ? "–" : duration(w.heartbeat_ttl_s) + " left"} · ${count(w.held)} in hand`), tasks));
    }
  }
  if (!data.queues.length) table.append(el("tr", {}, el("td", {}, "No todo queue found.")));
  if (!workers.children.length) workers.append(el("p", { class: "note" }, "No worker registered."));
}

async function failedAction(request, question) {
  if (question && !window.confirm(question)) return;
  const note = $("failed-note");
  try {
    const done = await post("failed", { ...request, confirm: Boolean(question) });
    note.textContent = done.lists.map((l) => `${l.name}: ${l.requeued ?? l.deleted} ${l.requeued !== undefined ? "requeued" : "deleted"}` +
      (l.already_queued ? `, ${l.already_queued} already queued` : "") + (l.gone ? `, ${l.gone} gone` : "")).join("; ") || "nothing selected";
  } catch (error) {
    note.textContent = "Refused: " + error.message;
  }
  await showFailed();
}

function filterRequest(action) {
  const match = $("failed-match").value, reason = $("failed-reason").value;
  return { action, select: "filter", match: match || null, reason: reason || null };
}

async function showFailed() {
  const data = await get("failed");
  const canAct = state.session && state.session.actions;
  for (const id of ["failed-requeue-filter", "failed-delete-filter", "failed-requeue-all", "failed-delete-all"]) $(id).disabled = !canAct;
  if (!canAct && !$("failed-note").textContent) $("failed-note").textContent = "Actions are disabled: start resc with --dashboard-actions to requeue or delete.";
  const lists = clear($("failed-lists"));
  for (const fl of data.lists) {
    const head = el("h3", {}, fl.name, el("span", { class: "tag" }, `${fl.kind} → ${fl.queue}`),
      el("span", { class: fl.length ? "tag bad" : "tag" }, `${count(fl.length)} failed`));
    const panel = el("div", { class: "panel", "data-list": fl.name }, head);
    for (const item of fl.items) {
      const meta = item.reason === null ? "no reason recorded"
        : `${item.reason} · ${when(item.time)}${item.attempts !== null ? ` · ${item.attempts} attempts` : ""}`;
      const one = { list: fl.name, select: "one", text: item.text };
      panel.append(el("div", { class: "item" },
        el("div", {}, el("div", { class: "text" }, item.text), el("div", { class: "meta" }, meta)),
        el("div", { class: "buttons" },
          el("button", { class: "small act", "data-action": "requeue", disabled: canAct ? null : "", on: { click: () => failedAction({ ...one, action: "requeue" }, null) } }, "Requeue"),
          el("button", { class: "small danger act", "data-action": "delete", disabled: canAct ? null : "", on: { click: () => failedAction({ ...one, action: "delete" }, `Delete this copy from ${fl.name} for good?`) } }, "Delete"))));
    }
    if (fl.length > fl.items.length) panel.append(el("p", { class: "note" }, `${fl.items.length} of ${fl.length} shown (the oldest).`));
    if (!fl.length) panel.append(el("p", { class: "note" }, "Empty."));
    lists.append(panel);
  }
  const journal = clear($("failed-journal"));
  for (const entry of data.journal) journal.append(el("li", {}, `${when(entry.time)} · ${entry.client} · ${entry.summary}`));
  if (!data.journal.length) journal.append(el("li", {}, "None yet."));
}

function liveText(message) {
  const d = message.data;
  return typeof d === "string" ? d : `${d.event ?? ""}${d.task !== undefined ? " → " + d.task : ""}${d.queue ? "  [" + d.queue + "]" : ""}`;
}

function liveFilter() {
  const source = $("live-filter").value;
  if (!source) return null;
  try { $("live-filter").setCustomValidity(""); return new RegExp(source); }
  catch (error) { $("live-filter").setCustomValidity(error.message); return null; }
}

function renderLive() {
  const regex = liveFilter();
  const list = clear($("live-list"));
  const shown = state.liveKept.filter((m) => !regex || regex.test(liveText(m)) || regex.test(JSON.stringify(m.data)));
  for (const m of shown.slice(-LIVE_KEPT).reverse()) {
    const kind = typeof m.data === "string" ? (m.data.includes(" TRIGGER ") ? "trigger" : "done") : String(m.data.kind || "");
    list.append(el("li", { "data-seq": String(m.seq) }, el("span", { class: "meta" }, clock(m.time)),
      el("span", { class: "kind-" + kind }, kind), el("span", { class: "text" }, liveText(m))));
  }
  if (!shown.length) list.append(el("li", {}, el("span", {}), el("span", {}), el("span", { class: "note" }, "Nothing yet.")));
}

async function showLive() {
  if (state.livePaused) return;
  const data = await get("live?after=" + state.liveAfter);
  if (!data.channel) {
    $("live-note").textContent = "No listener_channel in the config: resc publishes nothing to follow.";
  } else {
    $("live-note").textContent = data.error ? "Channel unavailable: " + data.error : `Following ${data.channel}`;
  }
  state.liveKept.push(...data.messages);
  state.liveKept = state.liveKept.slice(-LIVE_KEPT);
  state.liveAfter = data.last;
  renderLive();
}

function showExplain() {}

async function explainEvent(event) {
  event.preventDefault();
  const out = $("explain-result");
  try {
    const data = await post("explain", { event: $("explain-event").value, queue: $("explain-queue").value || null });
    clear(out);
    for (const w of data.watchers) {
      const verdict = w.outcome === "fails" ? el("span", { class: "tag bad" }, `fails: ${w.failure} → ${w.failed_queue}`)
        : w.outcome === "incomplete" ? el("span", { class: "tag warn" }, "depends on fetches (not called from here)")
        : el("span", { class: "tag good" }, `${w.tasks.length} task${w.tasks.length === 1 ? "" : "s"}`);
      const panel = el("div", { class: "panel verdict", "data-watcher": w.input_queue }, el("h3", {}, w.input_queue, verdict));
      if (!w.rules.length) panel.append(el("p", { class: "note" }, "No rule matches."));
      for (const r of w.rules) {
        const vars = Object.entries(r.variables).map(([k, v]) => `${k}=${v}`).join("  ");
        panel.append(el("div", { class: "meta" }, `rule ${r.name}`, vars ? "  ·  " + vars : ""));
        for (const f of r.fetches) panel.append(el("div", { class: "meta" }, `fetch ${f.method} ${f.url}`));
      }
      if (w.tasks && w.tasks.length) {
        const table = el("table", { class: "tasks" }, el("tr", {}, el("th", {}, "Task"), el("th", { class: "l" }, "Queue"), el("th", { class: "l" }, "Set"), el("th", { class: "l" }, "Rule")));
        for (const t of w.tasks) table.append(el("tr", {}, el("td", { class: "text" }, t.task), el("td", { class: "l" }, t.queue), el("td", { class: "l" }, t.set || "–"), el("td", { class: "l" }, t.rule)));
        panel.append(el("div", { class: "table-wrap" }, table));
      }
      out.append(panel);
    }
  } catch (error) {
    showError(out, error);
  }
}

const PAGES = { overview: showOverview, rules: showRules, queues: showQueues, failed: showFailed, live: showLive, explain: showExplain };

async function showReadiness() {
  const status = $("status");
  try {
    const answer = await fetch("/readyz");
    const body = await answer.json();
    status.className = "pill " + (body.ready ? "good" : "bad");
    status.textContent = body.ready ? "ready" : "not ready";
    status.title = Object.entries(body.not_ready).map(([k, v]) => `${k}: ${v}`).join("\n");
  } catch (error) {
    status.className = "pill bad";
    status.textContent = "unreachable";
  }
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    if (state.page !== "overview") await showReadiness();
    await PAGES[state.page]();
    $("footer").textContent = `resc ${state.session ? state.session.version : ""} · updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    $("footer").textContent = "Not updated: " + error.message;
  }
  // The failed lists and explain change only when asked: refreshed less often, or never.
  const every = state.page === "explain" ? null : state.page === "failed" ? REFRESH_MS * 5 : REFRESH_MS;
  if (every) state.timer = setTimeout(refresh, every);
}

function route() {
  const page = (location.hash || "#overview").slice(1);
  state.page = page in PAGES ? page : "overview";
  for (const section of document.querySelectorAll(".page")) section.classList.toggle("shown", section.id === "page-" + state.page);
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === state.page);
  document.body.dataset.page = state.page;
  refresh();
}

async function start() {
  try {
    state.session = await get("session");
  } catch (error) {
    $("footer").textContent = "Cannot open the dashboard: " + error.message;
    return;
  }
  for (const name of state.session.watchers) $("explain-queue").append(el("option", { value: name }, name));
  $("explain-form").addEventListener("submit", explainEvent);
  $("live-pause").addEventListener("click", () => {
    state.livePaused = !state.livePaused;
    $("live-pause").textContent = state.livePaused ? "Resume" : "Pause";
    if (!state.livePaused) refresh();
  });
  $("live-filter").addEventListener("input", renderLive);
  $("failed-requeue-filter").addEventListener("click", () => failedAction(filterRequest("requeue"), "Requeue every failed copy matching the filter?"));
  $("failed-delete-filter").addEventListener("click", () => failedAction(filterRequest("delete"), "Delete every failed copy matching the filter, for good?"));
  $("failed-requeue-all").addEventListener("click", () => failedAction({ action: "requeue", select: "all" }, "Requeue every failed copy of every list?"));
  $("failed-delete-all").addEventListener("click", () => failedAction({ action: "delete", select: "all" }, "Delete every failed copy of every list, for good?"));
  window.addEventListener("hashchange", route);
  route();
}

start();
