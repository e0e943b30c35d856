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
  const FILTERS = ["market", "provider", "neighborhood", "venue", "time_slot", "party_size", "date_from", "date_to"];

  let markets = []; // from /markets: name, time_zone, today
  let chartZone = undefined; // the chart's market's zone (its hours are that zone's)

  function applyPageParams() {
    for (const name of FILTERS) {
      const v = pageParams.get(name);
      if (v && form.elements[name]) form.elements[name].value = v;
    }
  }
  applyPageParams();

  async function loadMarkets() {
    const q = new URLSearchParams();
    if (apiKey) q.set("api_key", apiKey);
    markets = (await getJSON("/markets", q)).markets;
    const picker = form.elements.market;
    for (const m of markets) {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = m.name + " (" + m.time_zone + ")";
      picker.append(o);
    }
    picker.closest("label").hidden = markets.length < 2; // one market: nothing to pick
    applyPageParams();
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
  const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  // "2026-12-08 19:30:00" (already in the venue's zone) -> "Tue 8 Dec, 7:30 pm"
  function humanTime(actual) {
    const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})/.exec(actual || "");
    if (!m) return actual || "";
    const day = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
    const h = +m[4];
    return DAYS[day.getUTCDay()] + " " + (+m[3]) + " " + MONTHS[+m[2] - 1] + ", " + (h % 12 || 12) + ":" + m[5] + " " + (h < 12 ? "am" : "pm");
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
    left.append(text("div", "meta", [d.neighborhood, humanTime(d.actual_time), "party " + party, d.provider, (d.seating_types || []).join(", ")].filter(Boolean).join(" · ")));
    const right = document.createElement("div");
    right.className = "when";
    right.append(text("div", "opened", "opened " + fmtTime(d.opened_at_ms)));
    if (/^https?:\/\//.test(d.booking || "")) {
      const a = text("a", "book", "Book");
      a.href = d.booking;
      a.target = "_blank";
      a.rel = "noopener";
      right.append(a);
    }
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
    const h = hourStart(ms);
    hours.set(h, (hours.get(h) || 0) + 1);
    drawChart();
  }

  let skewMs = 0; // the server's clock minus this device's (from /stats/by-hour's as_of_ms)

  function zoneParts(ms, fields) { // the time in the chart's market, not on this device
    const f = new Intl.DateTimeFormat("en-GB", { ...fields, hourCycle: "h23", timeZone: chartZone });
    return Object.fromEntries(f.formatToParts(new Date(ms)).map((p) => [p.type, +p.value]));
  }
  const hourOf = (ms) => zoneParts(ms, { hour: "numeric" }).hour;
  function hourStart(ms) { // the start of the market's clock hour (half-hour zones too)
    const p = zoneParts(ms, { minute: "numeric", second: "numeric" });
    return ms - (ms % 1000) - (p.minute * 60 + p.second) * 1000;
  }

  function drawChart() {
    const chart = document.getElementById("chart");
    const now = hourStart(Date.now() + skewMs);
    const slots = [];
    for (let i = 23; i >= 0; i--) slots.push(now - i * 3600000);
    const max = Math.max(1, ...slots.map((h) => hours.get(h) || 0));
    chart.replaceChildren(...slots.map((h, i) => {
      const n = hours.get(h) || 0;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.dataset.hour = String(h);
      bar.dataset.drops = String(n);
      const hour = hourOf(h);
      bar.title = hour + ":00 — " + n + " drops";
      bar.style.height = (100 * n / max) + "%";
      if (i % 6 === 0) bar.append(text("span", "", hour + "h"));
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
      if (q.get("market")) hq.set("market", q.get("market"));
      if (apiKey) hq.set("api_key", apiKey);
      const [just, byHour] = await Promise.all([getJSON("/just-opened", q), getJSON("/stats/by-hour", hq)]);
      // the chart's hours are the server's: a device clock that is off does not shift them
      skewMs = byHour.as_of_ms - Date.now();
      chartZone = byHour.time_zone;
      document.getElementById("chart-market").textContent = markets.length > 1 ? byHour.market + ", " : "";
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
  // watches: create one from the current filters, list them, delete them
  const watchForm = document.getElementById("watch-form");
  const watchList = document.getElementById("watch-list");
  const watchError = document.getElementById("watch-error");
  function withKey(path) { return apiKey ? path + (path.includes("?") ? "&" : "?") + "api_key=" + encodeURIComponent(apiKey) : path; }
  function criteriaFromFilters() {
    const c = {};
    const v = (n) => (form.elements[n].value || "").trim();
    if (v("market")) c.markets = [v("market")];
    if (v("provider")) c.providers = [v("provider")];
    if (v("neighborhood")) c.neighborhoods = [v("neighborhood")];
    if (v("venue")) c.venue_ids = [v("venue")];
    if (v("party_size")) c.party_size = +v("party_size");
    if (v("date_from")) c.date_from = v("date_from");
    if (v("date_to")) c.date_to = v("date_to");
    if (v("time_slot")) c.time_slots = [v("time_slot")];
    return c;
  }
  function describe(c) {
    const parts = [];
    if (c.venue_ids && c.venue_ids.length) parts.push("venue " + c.venue_ids.join(", "));
    if (c.neighborhoods && c.neighborhoods.length) parts.push(c.neighborhoods.join(", "));
    if (c.providers && c.providers.length) parts.push(c.providers.join(", "));
    if (c.date_from || c.date_to) parts.push((c.date_from || "…") + " – " + (c.date_to || "…"));
    if (c.time_slots && c.time_slots.length) parts.push("around " + c.time_slots.join(", "));
    if (c.time_from || c.time_to) parts.push((c.time_from || "") + "–" + (c.time_to || ""));
    if (c.party_size) parts.push("party " + c.party_size);
    return parts.join(" · ") || "every drop";
  }
  async function loadWatches() {
    try {
      const body = await getJSON(withKey("/watches"));
      watchList.replaceChildren(...body.watches.map((w) => {
        const li = document.createElement("li");
        li.dataset.id = w.watch_id;
        li.append(text("span", "wname", w.name || w.watch_id), text("span", "crit", describe(w.criteria) + (w.closes ? " · also closes" : "")));
        const del = text("button", "del", "Delete");
        del.type = "button";
        del.addEventListener("click", async () => {
          const r = await fetch(withKey("/watches/" + encodeURIComponent(w.watch_id)), { method: "DELETE" });
          if (r.ok || r.status === 404) loadWatches();
        });
        li.append(del);
        return li;
      }));
    } catch (err) {
      watchError.textContent = String(err.message || err);
      watchError.hidden = false;
    }
  }
  watchForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    watchError.hidden = true;
    const url = watchForm.elements.url.value.trim();
    const body = {
      name: watchForm.elements.name.value.trim(),
      criteria: criteriaFromFilters(),
      channels: [{ type: /^https?:\/\//.test(url) ? "webhook" : "apprise", url: url }],
      closes: watchForm.elements.closes.checked,
    };
    const r = await fetch(withKey("/watches"), { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      watchError.textContent = (err.param ? err.param + ": " : "") + (err.message || r.status);
      watchError.hidden = false;
      return;
    }
    watchForm.reset();
    loadWatches();
  });
  drawChart();
  loadMarkets()
    .catch((err) => { errorEl.textContent = String(err.message || err); errorEl.hidden = false; })
    .finally(start);
  loadWatches();
})();
