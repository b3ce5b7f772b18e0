"use strict";
// Renders /api/openapi.json as a list of operations grouped by tag: method, path, summary, the
// role a key needs, path and query parameters, and the description. DOM built with textContent
// only (never innerHTML), so a description cannot inject markup.
(function apidocs() {
  const $ = (id) => document.getElementById(id);
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") el.textContent = v; else if (k === "class") el.className = v; else el.setAttribute(k, v);
    }
    for (const c of kids.flat()) if (c !== null && c !== undefined) el.append(c);
    return el;
  }
  let spec = null;
  function render() {
    const out = $("api-ops");
    out.replaceChildren();
    const want = $("api-filter").value.trim().toLowerCase();
    const groups = {};
    for (const [path, ops] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const hay = (method + " " + path + " " + op.summary + " " + op.description).toLowerCase();
        if (want && !hay.includes(want)) continue;
        (groups[op.tags[0]] = groups[op.tags[0]] || []).push([method, path, op]);
      }
    }
    for (const tag of Object.keys(groups).sort()) {
      out.append(h("h2", { text: tag }));
      for (const [method, path, op] of groups[tag]) {
        const params = op.parameters.length ? h("table", { class: "tbl" },
          h("thead", {}, h("tr", {}, h("th", { text: "Parameter" }), h("th", { text: "In" }), h("th", { text: "Description" }))),
          h("tbody", {}, op.parameters.map((p) => h("tr", {}, h("td", { class: "mono", text: p.name }), h("td", { text: p.in }),
            h("td", { text: p.description || (p.in === "path" ? "required" : "") }))))) : null;
        out.append(h("details", { class: "op", "data-op": method.toUpperCase() + " " + path },
          h("summary", {}, h("span", { class: "method " + method, text: method.toUpperCase() }), h("span", { class: "mono", text: path }),
            h("span", { text: op.summary }), h("span", { class: "spacer" }), h("span", { class: "badge", text: "role: " + op["x-required-role"] })),
          h("div", { class: "body" }, op.description ? h("pre", { text: op.description }) : null, params)));
      }
    }
    if (!out.children.length) out.append(h("p", { class: "muted", text: "No operation matches." }));
  }
  async function load() {
    try {
      const resp = await fetch("/api/openapi.json");
      spec = await resp.json();
      $("api-title").textContent = spec.info.title + " (OpenAPI " + spec.openapi + ")";
      $("api-desc").textContent = spec.info.description;
      render();
    } catch (err) {
      $("api-ops").append(h("div", { class: "error-box", text: "Could not load /api/openapi.json: " + err.message }));
    }
  }
  $("api-filter").addEventListener("input", () => spec && render());
  load();
})();
