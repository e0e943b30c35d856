// The live board: /just-opened for the start, then the SSE stream for every new drop/close.
"use strict";
(function () {
  const pageParams = new URLSearchParams(location.search);
  const apiKey = pageParams.get("api_key");
  const board = document.getElementById("board");
  const statusEl = document.getElementById("status");
  const countEl = document.getElementById("count");
  const errorEl = document.getElementById("error");
  const form = document.getElementById("filters");
  const cards = new Map(); // slot key -> li
  const hours = new Map(); // hour start ms -> drops
  let source = null;
  const FILTERS = ["provider", "neighborhood", "venue", "time_slot", "party_size", "date_from", "date_to"];

  for (const name of FILTERS) {
    const v = pageParams.get(name);
    if (v && form.elements[name]) form.elements[name].value = v;
  }

  function filterQuery() {
    const q = new URLSearchParams();
    for (const name of FILTERS) {
      const v = (form.elements[name].value || "").trim();
      if (v) q.set(name, v);
    }
    if (apiKey) q.set("api_key", apiKey);
    return q;
  }

  const slotKey = (d) => d.bucket_id + "|" + d.slot_id + "|" + d.opened_at_ms;
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  function fmtDuration(s) {
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  function text(tag, cls, value) {
    const el = document.createElement(tag);
    el.className = cls;
    el.textContent = value;
    return el;
  }

  function render(d) {
    const li = document.createElement("li");
    li.className = "drop";
    li.dataset.key = slotKey(d);
    li.dataset.venue = d.venue_id;
    const left = document.createElement("div");
    left.append(text("div", "venue", d.venue_name || d.venue_id));
    const party = d.party_max ? d.party_min + "–" + d.party_max : d.party_min + "+";
    left.append(text("div", "meta", [d.neighborhood, d.actual_time, "party " + party, d.provider, (d.seating_types || []).join(", ")].filter(Boolean).join(" · ")));
    const right = document.createElement("div");
    right.className = "when";
    right.append(text("div", "opened", "opened " + fmtTime(d.opened_at_ms)));
    li.append(left, right);
    return li;
  }

  function markClosed(li, d) {
    if (li.classList.contains("closed")) return;
    li.classList.add("closed");
    const secs = d.open_seconds != null ? d.open_seconds : (d.closed_at_ms - d.opened_at_ms) / 1000;
    li.querySelector(".when").append(text("span", "gone", "gone in " + fmtDuration(secs)));
  }

  function addDrop(d, live) {
    const key = slotKey(d);
    if (d.event === "close") {
      let li = cards.get(key);
      if (!li) { li = render(d); cards.set(key, li); board.append(li); }
      markClosed(li, d);
      return;
    }
    if (cards.has(key)) return;
    const li = render(d);
    cards.set(key, li);
    board.prepend(li);
    if (live) countHour(d.opened_at_ms);
    while (board.children.length > 300) {
      const last = board.lastElementChild;
      cards.delete(last.dataset.key);
      last.remove();
    }
    countEl.textContent = board.querySelectorAll(".drop:not(.closed)").length + " open";
  }

  function countHour(ms) {
    const h = Math.floor(ms / 3600000) * 3600000;
    hours.set(h, (hours.get(h) || 0) + 1);
    drawChart();
  }

  let skewMs = 0; // the server's clock minus this device's (from /stats/by-hour's as_of_ms)

  function drawChart() {
    const chart = document.getElementById("chart");
    const now = Math.floor((Date.now() + skewMs) / 3600000) * 3600000;
    const slots = [];
    for (let i = 23; i >= 0; i--) slots.push(now - i * 3600000);
    const max = Math.max(1, ...slots.map((h) => hours.get(h) || 0));
    chart.replaceChildren(...slots.map((h, i) => {
      const n = hours.get(h) || 0;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.dataset.hour = String(h);
      bar.dataset.drops = String(n);
      bar.title = new Date(h).getHours() + ":00 — " + n + " drops";
      bar.style.height = (100 * n / max) + "%";
      if (i % 6 === 0) bar.append(text("span", "", new Date(h).getHours() + "h"));
      return bar;
    }));
  }

  async function getJSON(path, q) {
    const r = await fetch(path + (q && q.toString() ? "?" + q : ""));
    const body = await r.json();
    if (!r.ok) throw new Error((body.param ? body.param + ": " : "") + (body.message || r.status));
    return body;
  }

  function setStatus(state, label) {
    statusEl.dataset.state = state;
    statusEl.textContent = label;
  }

  async function start() {
    if (source) source.close();
    errorEl.hidden = true;
    board.replaceChildren();
    cards.clear();
    const q = filterQuery();
    const streamQ = new URLSearchParams(q);
    const since = pageParams.get("since");
    if (since) streamQ.set("since", since);
    source = new EventSource("/feed/stream?" + streamQ);
    source.addEventListener("ready", () => setStatus("live", "live"));
    source.addEventListener("drop", (e) => addDrop(JSON.parse(e.data), true));
    source.onerror = () => setStatus("reconnecting", "reconnecting…");
    try {
      const hq = new URLSearchParams();
      hq.set("hours", "24");
      if (apiKey) hq.set("api_key", apiKey);
      const [just, byHour] = await Promise.all([getJSON("/just-opened", q), getJSON("/stats/by-hour", hq)]);
      // the chart's hours are the server's: a device clock that is off does not shift them
      skewMs = byHour.as_of_ms - Date.now();
      hours.clear();
      for (const h of byHour.hours) hours.set(h.hour_ms, h.drops);
      drawChart();
      for (const d of just.items.slice().reverse()) addDrop(d, false);
    } catch (err) {
      errorEl.textContent = String(err.message || err);
      errorEl.hidden = false;
    }
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = filterQuery();
    q.delete("api_key");
    history.replaceState(null, "", "?" + q);
    start();
  });
  drawChart();
  start();
})();
