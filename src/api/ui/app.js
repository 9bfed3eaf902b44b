// The Synap console: one page, no dependencies. It reads the node that
// served it through the public API, with the API key kept for the tab in
// sessionStorage. Everything shown comes from the API as text (never as
// HTML): a room or event type cannot inject markup.
"use strict";

const KEY = "synap.apiKey";
const REFRESH_MS = 2000;
const TAIL_LINES = 500;

const $ = (id) => document.getElementById(id);
const state = { key: sessionStorage.getItem(KEY), selected: null, previous: new Map(), tail: null, timer: null };

function headers() {
  return state.key ? { Authorization: "Bearer " + state.key } : {};
}

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: "no-store" });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) {
    throw new HttpError(response.status, (body && body.error) || text || response.statusText);
  }
  return body;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = kind;
}

function retention(stats) {
  const parts = [];
  if (stats.max_events != null) parts.push(stats.max_events + " events");
  if (stats.max_age_secs != null) parts.push(stats.max_age_secs + " s");
  if (stats.max_bytes != null) parts.push(stats.max_bytes + " B");
  return parts.length ? parts.join(", ") : "unlimited";
}

// --- the key ---------------------------------------------------------------

function askForKey(message) {
  stopRefresh();
  $("console").hidden = true;
  $("key-form").hidden = false;
  $("forget-key").hidden = true;
  const error = $("key-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("key-input").focus();
}

async function open() {
  try {
    await api("/stream/list");
  } catch (e) {
    if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
      askForKey(state.key ? "This key was refused: " + e.message : "");
      return;
    }
    setStatus("cannot reach the node: " + e.message, "error");
    setTimeout(open, REFRESH_MS);
    return;
  }
  $("key-form").hidden = true;
  $("console").hidden = false;
  $("forget-key").hidden = !state.key;
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

function stopRefresh() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key-input").value.trim() || null;
  if (state.key) sessionStorage.setItem(KEY, state.key); else sessionStorage.removeItem(KEY);
  $("key-input").value = "";
  open();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  state.key = null;
  stopTail();
  askForKey("");
});

// --- the cluster -------------------------------------------------------------

function renderCluster(status) {
  $("node-label").textContent = "node " + status.id + (status.cluster ? " · cluster " + status.cluster.slice(0, 8) : "");
  const summary = $("cluster-summary");
  summary.replaceChildren();
  const facts = [
    ["state", status.state],
    ["leader", status.leader],
    ["term", status.term],
    ["last log index", status.last_log_index],
    ["applied", status.last_applied],
    ["snapshot", status.snapshot_index],
    ["protocol", status.protocol],
  ];
  for (const [name, value] of facts) {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = name;
    dd.textContent = value === null || value === undefined ? "–" : String(value);
    dd.dataset.fact = name;
    div.append(dt, dd);
    summary.appendChild(div);
  }
  const body = $("members").tBodies[0];
  body.replaceChildren();
  const leaderView = status.state === "Leader";
  for (const member of status.members) {
    const row = document.createElement("tr");
    row.dataset.member = member.id;
    cell(row, member.id, "num");
    cell(row, member.url);
    const role = cell(row, (member.id === status.leader ? "leader" : member.voter ? "voter" : "learner"));
    if (member.id === status.leader) role.classList.add("leader");
    cell(row, member.matched_index, "num");
    const lag = leaderView && member.matched_index != null && status.last_log_index != null
      ? status.last_log_index - member.matched_index : null;
    cell(row, lag, "num");
    body.appendChild(row);
  }
  const note = $("cluster-note");
  note.hidden = leaderView;
  note.textContent = leaderView ? "" : "Replication lag is known on the leader: open its console to see it.";
}

async function refreshCluster() {
  try {
    renderCluster(await api("/admin/cluster"));
  } catch (e) {
    if (!(e instanceof HttpError) || e.status !== 403) throw e;
    $("cluster-summary").replaceChildren();
    $("members").tBodies[0].replaceChildren();
    const note = $("cluster-note");
    note.hidden = false;
    note.textContent = "The cluster view needs an admin key.";
  }
}

// --- rooms and consumers ---------------------------------------------------

async function refreshRooms() {
  const list = await api("/stream/list");
  const rooms = list.rooms.slice().sort();
  const stats = await Promise.all(rooms.map((room) =>
    api("/stream/" + encodeURIComponent(room) + "/stats").catch(() => null)));
  const now = performance.now();
  const body = $("rooms").tBodies[0];
  body.replaceChildren();
  rooms.forEach((room, i) => {
    const s = stats[i];
    if (!s) return;
    const before = state.previous.get(room);
    const rate = before ? ((s.published_total - before.total) * 1000) / (now - before.at) : null;
    state.previous.set(room, { total: s.published_total, at: now });
    const row = document.createElement("tr");
    row.dataset.room = room;
    if (room === state.selected) row.classList.add("selected");
    cell(row, room);
    cell(row, s.event_count, "num");
    cell(row, s.event_count > 0 ? s.min_offset + "–" + (s.next_offset - 1) : null, "num");
    cell(row, rate === null ? null : Math.max(0, rate).toFixed(1), "num");
    cell(row, retention(s));
    cell(row, s.subscribers, "num");
    cell(row, (s.consumers || []).length, "num");
    const action = document.createElement("td");
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "Open";
    open.dataset.open = room;
    open.addEventListener("click", () => selectRoom(room));
    action.appendChild(open);
    row.appendChild(action);
    body.appendChild(row);
  });
  $("rooms-empty").hidden = rooms.length > 0;
}

async function refreshConsumers() {
  if (!state.selected) return;
  const answer = await api("/stream/" + encodeURIComponent(state.selected) + "/consumers");
  const body = $("consumers").tBodies[0];
  body.replaceChildren();
  for (const c of answer.consumers) {
    const row = document.createElement("tr");
    row.dataset.consumer = c.name;
    cell(row, c.name);
    cell(row, c.lag, "num");
    cell(row, c.pending, "num");
    cell(row, c.next_offset, "num");
    cell(row, c.acked, "num");
    cell(row, c.redelivered, "num");
    cell(row, c.dead_lettered, "num");
    body.appendChild(row);
  }
  $("consumers-empty").hidden = answer.consumers.length > 0;
}

async function refresh() {
  try {
    await Promise.all([refreshCluster(), refreshRooms(), refreshConsumers()]);
    setStatus("updated " + new Date().toLocaleTimeString(), "ok");
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) {
      askForKey("The key was refused: " + e.message);
      return;
    }
    setStatus("error: " + e.message, "error");
  }
}

function selectRoom(room) {
  if (state.selected !== room) stopTail();
  state.selected = room;
  $("detail-room").textContent = room;
  $("room-detail").hidden = false;
  $("tail").replaceChildren();
  for (const row of $("rooms").tBodies[0].rows) row.classList.toggle("selected", row.dataset.room === room);
  refreshConsumers().catch((e) => setStatus("error: " + e.message, "error"));
}

// --- the live tail (SSE read with fetch, so that the key travels in a
// header and every event type arrives, whatever its name) -------------------

function tailLine(className, parts) {
  const list = $("tail");
  const li = document.createElement("li");
  if (className) li.className = className;
  for (const [text, partClass] of parts) {
    const span = document.createElement("span");
    span.textContent = text;
    if (partClass) span.className = partClass;
    li.appendChild(span);
  }
  list.appendChild(li);
  while (list.children.length > TAIL_LINES) list.removeChild(list.firstChild);
  list.scrollTop = list.scrollHeight;
}

function showFrame(name, data) {
  let frame;
  try { frame = JSON.parse(data); } catch (_) { return; }
  if (frame && typeof frame.code === "string" && frame.offset === undefined) {
    tailLine("notice", [[name + ": " + (frame.error || frame.code), null]]);
    return;
  }
  if (name === "gap") {
    tailLine("notice", [["gap: events trimmed by retention before they were read", null]]);
    return;
  }
  tailLine(null, [
    [String(frame.offset), "offset"],
    [frame.event, "type"],
    [JSON.stringify(frame.data), "data"],
  ]);
}

function stopTail() {
  if (state.tail) state.tail.abort();
  state.tail = null;
  $("tail-start").disabled = false;
  $("tail-stop").disabled = true;
  $("tail-state").textContent = "";
}

async function startTail() {
  stopTail();
  const room = state.selected;
  if (!room) return;
  const query = new URLSearchParams();
  const from = $("tail-from").value;
  if (from !== "latest") query.set("from_offset", from);
  const types = $("tail-types").value.trim();
  if (types) query.set("types", types);
  const controller = new AbortController();
  state.tail = controller;
  $("tail").replaceChildren();
  $("tail-start").disabled = true;
  $("tail-stop").disabled = false;
  $("tail-state").textContent = "connecting…";
  try {
    const url = "/stream/" + encodeURIComponent(room) + "/sse?" + query.toString();
    const response = await fetch(url, { headers: headers(), signal: controller.signal, cache: "no-store" });
    if (!response.ok) {
      const text = await response.text();
      let message = text;
      try { message = JSON.parse(text).error || text; } catch (_) { /* plain text */ }
      throw new Error(message);
    }
    $("tail-state").textContent = "following" + (types ? " " + types : "");
    $("tail").dataset.following = room;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) showFrame(name, data.join("\n"));
      }
    }
    if (state.tail === controller) $("tail-state").textContent = "the node closed the stream";
  } catch (e) {
    if (controller.signal.aborted) return;
    tailLine("notice", [["tail stopped: " + e.message, null]]);
    $("tail-state").textContent = "";
  } finally {
    if (state.tail === controller) {
      state.tail = null;
      $("tail-start").disabled = false;
      $("tail-stop").disabled = true;
    }
  }
}

$("tail-form").addEventListener("submit", (event) => { event.preventDefault(); startTail(); });
$("tail-stop").addEventListener("click", stopTail);

open();
