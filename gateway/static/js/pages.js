"use strict";
// Continuous ingestion, Business impact, Configuration and Metrics.
(function pages() {
  const { h, svg, $, clear, num, ms } = DDN;

  // --- continuous ingestion -------------------------------------------------------------------
  let watchTimer = null;
  document.addEventListener("backends", (e) => {
    const sel = clear($("watch-backend"));
    sel.appendChild(h("option", { value: "", text: "default" }));
    for (const b of e.detail.backends) sel.appendChild(h("option", { value: b.name, text: b.name }));
  });
  async function loadWatches() {
    const out = clear($("watch-list"));
    try {
      const r = await DDN.api("GET", "/api/watches");
      if (!r.watches.length) out.appendChild(h("div", { class: "card muted", text: "No watches yet." }));
      for (const w of r.watches) {
        const tb = h("tbody");
        for (const f of w.files) {
          tb.appendChild(h("tr", {}, h("td", { text: f.object_key }), h("td", {}, DDN.state(f.status)), h("td", { text: f.job_id || "-" }),
            h("td", { text: f.error || "" }), h("td", { text: DDN.date(f.updated_unix_ns) })));
        }
        if (!w.files.length) tb.appendChild(h("tr", {}, h("td", { colspan: "5", class: "muted", text: "No files seen yet under " + w.prefix })));
        out.appendChild(h("div", { class: "card" },
          h("div", { class: "card-head" }, h("h3", { text: w.prefix }), DDN.state(w.active ? "running" : "stopped"),
            h("span", { class: "muted small", text: "collection " + w.collection + ", backend " + (w.backend || "default") + ", every " + w.interval_s + " s" }),
            h("span", { class: "spacer" }),
            w.active ? h("button", { class: "ghost danger", type: "button", onclick: async () => {
              try { await DDN.api("POST", "/api/watches/" + encodeURIComponent(w.watch_id) + "/stop"); loadWatches(); }
              catch (err) { $("watch-msg").appendChild(DDN.errorBox(err.message)); }
            } }, DDN.icon("stop"), "Stop") : null),
          h("table", { class: "tbl" }, h("thead", {}, h("tr", {}, h("th", { text: "Object" }), h("th", { text: "Status" }), h("th", { text: "Job" }),
            h("th", { text: "Error" }), h("th", { text: "Updated" }))), tb)));
      }
    } catch (err) { out.appendChild(DDN.errorBox(err.message)); }
  }
  $("watch-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const msg = clear($("watch-msg"));
    try {
      await DDN.api("POST", "/api/watches", { prefix: $("watch-prefix").value, collection: $("watch-collection").value,
        backend: $("watch-backend").value, interval_s: Number($("watch-interval").value) });
      loadWatches();
    } catch (err) { msg.appendChild(DDN.errorBox(err.message)); }
  });

  // --- business impact --------------------------------------------------------------------------
  // Every number comes from one saved, measured benchmark run; the formulas are shown on the page.
  document.addEventListener("runs", (e) => {
    const sel = $("im-run");
    const keep = sel.value;
    clear(sel);
    for (const run of e.detail) sel.appendChild(h("option", { value: run.run_id, text: run.run_id + "  " + run.started + "  " + (run.label || "") }));
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    renderImpact();
  });
  function nearest(results, op, conc) {
    const rows = results.filter((r) => r.operation === op && r.errors < r.ops);
    if (!rows.length) return null;
    return rows.reduce((best, r) => (Math.abs(r.concurrency - conc) < Math.abs(best.concurrency - conc) ? r : best));
  }
  function renderImpact() {
    const out = clear($("impact-out"));
    if (DDN.abImpact && DDN.abImpact(out)) return; // an A/B run picked as the source (ab.js)
    const run = (DDN.benchRuns || []).find((r) => r.run_id === $("im-run").value);
    if (!run) { out.appendChild(h("div", { class: "card muted", text: "No measured benchmark run yet. Run one on the Benchmark tab; this page only uses measured numbers." })); return; }
    const qpd = Number($("im-qpd").value), gib = Number($("im-corpus").value), gpus = Number($("im-gpus").value);
    const cost = Number($("im-cost").value), k = Number($("im-k").value);
    const trace = (lv) => "run " + run.run_id + " (" + run.started + "), " + lv.operation + " " + DDN.bytes(lv.object_size_bytes) + " at concurrency " + lv.concurrency;
    const backends = [...new Set([...run.results.map((r) => r.backend), ...(run.request.backends || [])])];
    const fetchWait = {};
    for (const b of backends) {
      const res = run.results.filter((r) => r.backend === b);
      const get = nearest(res, "get", k);
      const put = res.filter((r) => r.operation === "put" && r.mib_per_s > 0).sort((a, c) => c.mib_per_s - a.mib_per_s)[0];
      const card = h("div", { class: "card", "data-testid": "impact-" + b }, h("h3", { text: b + (res.some((r) => r.emulated) ? " (emulated)" : "") }));
      if (get) {
        const waitS = get.latency.p50_ms / 1000;
        fetchWait[b] = { ms: get.latency.p50_ms, lv: get };
        const gpuHours = (qpd * waitS * gpus) / 3600;
        card.appendChild(h("div", {}, h("div", { class: "big-num", text: num(gpuHours, 2) + " GPU-h/day" }),
          h("div", { text: "GPU time waiting on storage, " + num(gpuHours * cost, 2) + " USD/day" }),
          h("div", { class: "trace", text: "= queries/day x GET p50 " + ms(get.latency.p50_ms) + " x GPUs / 3600; from " + trace(get) })));
      } else {
        card.appendChild(h("div", { class: "muted", text: "No GET measurement for " + b + " in this run: GPU wait not computed." }));
      }
      if (put) {
        const hours = (gib * 1024) / put.mib_per_s / 3600;
        card.appendChild(h("div", {}, h("div", { class: "big-num", text: num(hours, 1) + " h" }),
          h("div", { text: "to write the corpus (" + num(gib, 0) + " GiB at " + num(put.mib_per_s, 1) + " MiB/s)" }),
          h("div", { class: "trace", text: "= corpus MiB / best PUT MiB/s / 3600; from " + trace(put) })));
      } else {
        card.appendChild(h("div", { class: "muted", text: "No PUT measurement for " + b + " in this run: ingest time not computed (run a put benchmark)." }));
      }
      out.appendChild(card);
    }
    const measured = Object.keys(fetchWait);
    if (measured.length >= 2) {
      const sorted = measured.sort((a, c) => fetchWait[a].ms - fetchWait[c].ms);
      const fast = sorted[0], slow = sorted[sorted.length - 1];
      const diff = fetchWait[slow].ms - fetchWait[fast].ms;
      out.appendChild(h("div", { class: "card", "data-testid": "impact-ttft" }, h("h3", { text: "TTFT difference users feel" }),
        h("div", { class: "big-num", text: ms(diff) }),
        h("div", { text: fast + " answers sooner than " + slow + " on every query (storage fetch of " + k + " chunks)" }),
        h("div", { class: "trace", text: "= GET p50 " + slow + " " + ms(fetchWait[slow].ms) + " - " + fast + " " + ms(fetchWait[fast].ms) + "; from " + trace(fetchWait[slow].lv) + " and " + trace(fetchWait[fast].lv) })));
    } else {
      out.appendChild(h("div", { class: "card muted", text: "The TTFT difference needs GET measurements of two backends in one run." }));
    }
  }
  for (const id of ["im-qpd", "im-corpus", "im-gpus", "im-cost", "im-k", "im-run"]) $(id).addEventListener("input", renderImpact);
  DDN.renderImpact = renderImpact;

  // --- configuration ------------------------------------------------------------------------------
  document.addEventListener("backends", (e) => {
    const tb = clear($("be-table").querySelector("tbody"));
    for (const b of e.detail.backends) {
      const conn = h("td", { class: "muted", text: "not tested" });
      tb.appendChild(h("tr", {}, h("td", {}, h("strong", { text: b.name }), b.is_default ? h("span", { class: "badge", text: "default" }) : null,
        b.emulated ? h("span", { class: "badge emu", text: "emulated" }) : null),
        h("td", { text: b.label || b.kind }), h("td", { text: b.endpoint || "(AWS default)" }), h("td", { text: b.bucket }),
        h("td", {}, DDN.state(b.has_credentials ? "set" : "none")), conn,
        h("td", {}, h("button", { class: "ghost", type: "button", onclick: async () => {
          conn.textContent = "testing...";
          try {
            const r = await DDN.api("POST", "/api/config/backends/" + encodeURIComponent(b.name) + "/test");
            clear(conn).appendChild(DDN.state(r.ok ? "ok" : "bad"));
            conn.appendChild(document.createTextNode(" HeadBucket " + ms(r.head_bucket_ms) + (r.message ? ", " + r.message : "") +
              ", read " + (r.can_read ? "yes" : "no") + ", write " + (r.can_write ? "yes" : "no")));
          } catch (err) { clear(conn).appendChild(DDN.errorBox(err.message)); }
        } }, DDN.icon("plug"), "Test"),
        b.is_default ? null : h("button", { class: "ghost danger", type: "button", onclick: async () => {
          if (!confirm("Remove backend " + b.name + "?")) return;
          try { await DDN.api("DELETE", "/api/config/backends/" + encodeURIComponent(b.name)); DDN.loadBackends(); }
          catch (err) { $("be-msg").appendChild(DDN.errorBox(err.message)); }
        } }, DDN.icon("trash"), "Remove"))));
    }
  });
  $("be-refresh").addEventListener("click", () => DDN.loadBackends().catch((err) => $("be-msg").appendChild(DDN.errorBox(err.message))));
  $("be-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target, msg = clear($("be-msg"));
    const body = {};
    const shaping = {};
    for (const el of f.elements) {
      if (!el.name) continue;
      if (el.name.startsWith("shaping_")) { if (el.value !== "") shaping[el.name.slice(8)] = Number(el.value); continue; }
      body[el.name] = el.type === "checkbox" ? el.checked : el.value;
    }
    if (Object.keys(shaping).length) body.shaping = shaping;
    try {
      const r = await DDN.api("POST", "/api/config/backends", body);
      f.elements.secret_access_key.value = "";
      f.elements.access_key_id.value = "";
      msg.appendChild(h("div", {}, DDN.icon("check"), " Saved " + r.backend.name + (r.backend.has_credentials ? " (credentials set)" : "")));
      DDN.loadBackends();
    } catch (err) { msg.appendChild(DDN.errorBox(err.message)); }
  });

  // --- metrics --------------------------------------------------------------------------------------
  function hbar(label, frac, text) {
    return h("div", { class: "hbar" }, h("div", { class: "hbar-head" }, h("span", { text: label }), h("span", { class: "muted", text })),
      h("div", { class: "bar", role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100",
        "aria-valuenow": String(Math.round((frac || 0) * 100)) }, h("span", { style: "width:" + Math.round((frac || 0) * 100) + "%" })));
  }
  async function loadMetrics() {
    const out = clear($("metrics-out"));
    try {
      const r = await DDN.api("GET", "/api/metrics/summary");
      const health = h("div", { class: "card", "data-testid": "metrics-health" }, h("h3", { text: "Services" }));
      for (const s of Object.values(r.health.services)) {
        health.appendChild(h("div", { class: "svc" }, h("span", { class: "dot " + (s.serving ? "ok" : "bad") }),
          h("strong", { text: s.service }), h("span", { class: "muted small", text: s.status + (s.latency_ms !== undefined ? ", " + ms(s.latency_ms) : "") })));
      }
      out.appendChild(health);
      const dev = r.embedder.error ? h("div", {}, DDN.errorBox(r.embedder.error.message))
        : h("div", {}, h("div", { class: "big-num", text: r.embedder.device.toUpperCase().startsWith("CUDA") ? "CUDA" : "CPU" }),
          h("div", { class: "muted", text: [r.embedder.device, r.embedder.model_id, r.embedder.dtype, r.embedder.backend].filter(Boolean).join(", ") }));
      out.appendChild(h("div", { class: "card" }, h("h3", { text: "Embedder device" }), dev));
      const caches = h("div", { class: "card" }, h("h3", { text: "Cache hit rates" }));
      for (const c of Object.values(r.caches)) {
        if (c.error) { caches.appendChild(h("div", {}, c.cache + ": ", DDN.errorBox(c.error.message))); continue; }
        caches.appendChild(hbar(c.cache + " cache", c.hit_rate || 0,
          (c.hit_rate === null ? "no lookups" : num(c.hit_rate * 100, 1) + "%") + "  (" + num(c.entries, 0) + " entries, " + DDN.bytes(c.size_bytes) + ")"));
      }
      caches.appendChild(h("button", { class: "ghost", type: "button", onclick: async () => { await DDN.api("POST", "/api/cache/purge"); loadMetrics(); } },
        DDN.icon("trash"), "Purge all caches"));
      out.appendChild(caches);
      const g = r.gateway;
      out.appendChild(h("div", { class: "card" }, h("h3", { text: "Gateway" }),
        h("div", {}, "Answers streamed: ", h("strong", { text: num(g.answers, 0) })),
        h("div", {}, "Mean TTFT: ", h("strong", { text: g.ttft_mean_ms === null ? "-" : ms(g.ttft_mean_ms) })),
        h("div", {}, "Open streams: ", h("strong", { text: num(g.open_streams, 0) })),
        h("div", {}, "Requests: " + Object.entries(g.requests_by_class).map(([k, v]) => k + " " + num(v, 0)).join(", ")),
        h("div", { class: "muted small" }, "Prometheus metrics at /metrics")));
    } catch (err) { out.appendChild(DDN.errorBox(err.message)); }
  }
  $("metrics-refresh").addEventListener("click", loadMetrics);

  document.addEventListener("tab", (e) => {
    clearInterval(watchTimer);
    if (e.detail === "watch") { loadWatches(); watchTimer = setInterval(loadWatches, 3000); }
    if (e.detail === "metrics") loadMetrics();
    if (e.detail === "config") DDN.loadBackends().catch(() => {});
  });
})();
