"use strict";
// Shared helpers: DOM building (never innerHTML with data), API calls with the optional key,
// a fetch-based SSE reader (sends Authorization and Last-Event-ID, resumes dropped streams),
// inline SVG icons, tabs with keyboard access, number formatting.
const DDN = (window.DDN = {});

DDN.h = function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return el;
};
DDN.svg = function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return el;
};
DDN.clear = (el) => { while (el.firstChild) el.removeChild(el.firstChild); return el; };
DDN.$ = (id) => document.getElementById(id);

const ICONS = {
  chat: "M4 5h16v11H8l-4 4z",
  file: "M6 3h8l4 4v14H6zM14 3v4h4",
  chart: "M4 20V4M4 20h16M8 16l4-5 3 3 5-7",
  refresh: "M20 11a8 8 0 10-2.3 5.7M20 4v7h-7",
  coins: "M12 3v18M16.5 7.5C16 6 14.3 5 12 5c-2.8 0-4.5 1.3-4.5 3.2 0 4.3 9 2.3 9 6.6 0 1.9-1.9 3.2-4.5 3.2-2.4 0-4.2-1-4.8-2.7",
  gear: "M12 9a3 3 0 100 6 3 3 0 000-6zM19 12l2-1-1-3-2 .3-1.3-1.3.3-2-3-1-1 2h-2L10 3 7 4l.3 2L6 7.3 4 7 3 10l2 1v2l-2 1 1 3 2-.3 1.3 1.3-.3 2 3 1 1-2h2l1 2 3-1-.3-2 1.3-1.3 2 .3 1-3-2-1z",
  gauge: "M4 17a8 8 0 1116 0M12 17l4-6",
  trash: "M5 7h14M10 7V4h4v3M7 7l1 13h8l1-13",
  play: "M7 4l13 8-13 8z",
  stop: "M6 6h12v12H6z",
  check: "M5 12l5 5 9-10",
  x: "M6 6l12 12M18 6L6 18",
  plug: "M9 3v5M15 3v5M7 8h10v4a5 5 0 01-10 0zM12 17v4",
  download: "M12 4v11m0 0l-4-4m4 4l4-4M4 20h16",
  clock: "M12 7v5l3 2M12 3a9 9 0 100 18 9 9 0 000-18z",
  folder: "M3 6h6l2 2h10v11H3z",
  info: "M12 11v6M12 7v.5M12 3a9 9 0 100 18 9 9 0 000-18z",
  chip: "M7 7h10v10H7zM9 3v4M15 3v4M9 17v4M15 17v4M3 9h4M3 15h4M17 9h4M17 15h4",
};
DDN.icon = function icon(name, cls) {
  return DDN.svg("svg", { viewBox: "0 0 24 24", class: "icon " + (cls || ""), "aria-hidden": "true" },
    DDN.svg("path", { d: ICONS[name] || "" }));
};
for (const el of document.querySelectorAll("[data-icon]")) el.prepend(DDN.icon(el.dataset.icon));

// --- API --------------------------------------------------------------------------------------
DDN.key = () => sessionStorage.getItem("ddnrag-key") || "";
DDN.headers = function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (DDN.key()) h.Authorization = "Bearer " + DDN.key();
  return h;
};
class ApiError extends Error {
  constructor(message, status, body) { super(message); this.status = status; this.body = body; }
}
DDN.ApiError = ApiError;
async function failure(resp) {
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401) DDN.$("auth-bar").hidden = false;
  const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
  return new ApiError(msg, resp.status, body);
}
DDN.api = async function api(method, path, body, opts) {
  const init = { method, headers: DDN.headers(), signal: opts && opts.signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const resp = await fetch(path, init);
  if (!resp.ok) throw await failure(resp);
  const type = resp.headers.get("Content-Type") || "";
  return type.includes("json") ? resp.json() : resp.text();
};
DDN.download = async function download(path, filename) {
  const resp = await fetch(path, { headers: DDN.headers() });
  if (!resp.ok) throw await failure(resp);
  const url = URL.createObjectURL(await resp.blob());
  const a = DDN.h("a", { href: url, download: filename });
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
};

// SSE over fetch: calls onEvent(name, data, id) per event; resolves when a terminal event
// ("done" or "error", or `terminal`) arrives. A stream that drops before its terminal event is
// resumed with Last-Event-ID (up to `retries` times). Abort with opts.signal.
DDN.sse = async function sse(path, onEvent, opts) {
  opts = opts || {};
  const terminal = opts.terminal || ["done", "error", "refused"];
  let lastId = opts.lastEventId || "";
  let retries = opts.retries === undefined ? 3 : opts.retries;
  for (;;) {
    const headers = DDN.headers({ Accept: "text/event-stream" });
    if (lastId) headers["Last-Event-ID"] = lastId;
    let ended = false;
    try {
      const resp = await fetch(path, { headers, signal: opts.signal });
      if (!resp.ok) throw await failure(resp);
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let m;
        while ((m = /\r\n\r\n|\n\n/.exec(buf))) {
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          let name = "message", data = "", id = null;
          for (const line of block.split(/\r\n|\n/)) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            const field = i < 0 ? line : line.slice(0, i);
            const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
            if (field === "event") name = val;
            else if (field === "data") data += (data ? "\n" : "") + val;
            else if (field === "id") id = val;
          }
          if (id !== null) lastId = id;
          if (!data) continue;
          let parsed = data;
          try { parsed = JSON.parse(data); } catch (e) { /* keep the text */ }
          onEvent(name, parsed, id);
          if (terminal.includes(name)) { ended = true; reader.cancel().catch(() => {}); return; }
        }
      }
    } catch (err) {
      if (err instanceof ApiError || (opts.signal && opts.signal.aborted)) throw err;
      if (retries-- <= 0) throw err;
    }
    if (ended) return;
    if (retries-- <= 0) throw new Error("the stream ended before its result");
    await new Promise((r) => setTimeout(r, 500));
  }
};

// --- formatting ---------------------------------------------------------------------------------
DDN.ms = (v) => (v === null || v === undefined ? "-" : v < 10 ? v.toFixed(2) + " ms" : v < 1000 ? v.toFixed(1) + " ms" : (v / 1000).toFixed(2) + " s");
DDN.num = (v, d) => (v === null || v === undefined || Number.isNaN(v) ? "-" : Number(v).toLocaleString(undefined, { maximumFractionDigits: d === undefined ? 1 : d }));
DDN.bytes = (n) => {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
};
DDN.date = (unixNs) => (unixNs ? new Date(unixNs / 1e6).toLocaleString() : "-");
DDN.state = (s) => DDN.h("span", { class: "state " + s, text: s });
DDN.errorBox = (msg) => DDN.h("div", { class: "error-box", role: "alert", text: msg });

// --- backends (shared by several tabs) ---------------------------------------------------------
DDN.backends = [];
DDN.loadBackends = async function loadBackends() {
  const r = await DDN.api("GET", "/api/config/backends");
  DDN.backends = r.backends;
  document.dispatchEvent(new CustomEvent("backends", { detail: r }));
  return r;
};

// --- tabs ---------------------------------------------------------------------------------------
// The address names the tab and, after it, the page's own route: "#compare/local/remote" is the
// Compare tab with route ["local", "remote"] (DDN.route), so a page per item has its own URL.
DDN.route = [];
(function tabs() {
  const list = [...document.querySelectorAll('[role="tab"]')];
  const hashOf = (tab, route) => [tab.id.replace("tab-", ""), ...route.map(encodeURIComponent)].join("/");
  function select(tab, focus, route) {
    for (const t of list) {
      const on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      DDN.$(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    DDN.route = route || [];
    if (location.hash.slice(1) !== hashOf(tab, DDN.route)) location.hash = hashOf(tab, DDN.route);
    document.dispatchEvent(new CustomEvent("tab", { detail: tab.id.replace("tab-", "") }));
  }
  function fromHash() {
    const [want, ...rest] = location.hash.slice(1).split("/");
    let route = [];
    try { route = rest.map(decodeURIComponent); } catch (err) { route = []; } // a malformed address
    return [list.find((t) => t.id === "tab-" + want) || list[0], route];
  }
  DDN.selectTab = (name, route) => select(DDN.$("tab-" + name), false, route);
  window.addEventListener("hashchange", () => {
    const [tab, route] = fromHash();
    if (location.hash.slice(1) === hashOf(tab, route) && tab.getAttribute("aria-selected") === "true" && route.join("/") === DDN.route.join("/")) return;
    select(tab, false, route);
  });
  for (const t of list) {
    t.addEventListener("click", () => select(t, false));
    t.addEventListener("keydown", (e) => {
      const i = list.indexOf(t);
      if (e.key === "ArrowRight") select(list[(i + 1) % list.length], true);
      else if (e.key === "ArrowLeft") select(list[(i - 1 + list.length) % list.length], true);
      else return;
      e.preventDefault();
    });
  }
  window.addEventListener("DOMContentLoaded", () => {
    const [tab, route] = fromHash();
    select(tab, false, route);
  });
})();

// --- health pill and API key ---------------------------------------------------------------------
DDN.refreshHealth = async function refreshHealth() {
  const pill = DDN.$("health-pill");
  let body;
  try {
    const resp = await fetch("/api/health", { headers: DDN.headers() });
    body = await resp.json();
  } catch (e) {
    body = null;
  }
  const dot = pill.querySelector(".dot"), txt = pill.querySelector(".txt");
  if (!body) { dot.className = "dot bad"; txt.textContent = "gateway unreachable"; return null; }
  dot.className = "dot " + (body.down && body.down.length ? "bad" : "ok");
  txt.textContent = body.down && body.down.length ? "down: " + body.down.join(", ") : "all services serving";
  pill.title = body.message || "";
  return body;
};
DDN.$("api-key-save").addEventListener("click", () => {
  sessionStorage.setItem("ddnrag-key", DDN.$("api-key").value.trim());
  DDN.$("api-key").value = "";
  DDN.$("auth-bar").hidden = true;
  document.dispatchEvent(new Event("auth"));
});
// The role badge: what this key may do (GET /api/whoami), e.g. "reader: ask, read".
DDN.refreshRole = async function refreshRole() {
  const badge = DDN.$("role-badge");
  try {
    const resp = await fetch("/api/whoami", { headers: DDN.headers() });
    if (!resp.ok) { badge.hidden = true; return null; }
    const me = await resp.json();
    const can = Object.keys(me.can).filter((k) => me.can[k]).join(", ");
    badge.textContent = (me.auth === "open" ? "no keys: " : "") + me.role;
    badge.title = "this key may: " + can;
    badge.dataset.role = me.role;
    badge.hidden = false;
    return me;
  } catch (e) {
    badge.hidden = true;
    return null;
  }
};
window.addEventListener("DOMContentLoaded", () => {
  DDN.refreshHealth();
  DDN.refreshRole();
  setInterval(DDN.refreshHealth, 10000);
  DDN.loadBackends().catch(() => {});
});
document.addEventListener("auth", () => { DDN.loadBackends().catch(() => {}); DDN.refreshRole(); });
