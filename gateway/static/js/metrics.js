"use strict";
// Live metrics on the Metrics page: over the last N minutes, time to first token and retrieval
// latency (p50/p99), request rates and error ratios per service, and a per-backend storage TTFB
// chart. Every figure is computed by the gateway from the services' own Prometheus histograms and
// counters (GET /api/metrics/window, gateway/metrics_window.py); this file only draws them.
(function liveMetrics() {
  const { h, svg, $, clear, num, ms } = DDN;
  const COLORS = ["#2364c9", "#d4202c", "#188a6b", "#8c4bc9", "#c27b00"];
  const REFRESH_MS = 5000;
  let timer = null;
  let asked = 0; // the latest request: an older answer arriving late is dropped

  function quantileRow(testid, label, q) {
    return h("tr", { "data-testid": testid },
      h("th", { scope: "row", text: label }),
      h("td", { class: "p50", text: ms(q.p50_ms) }),
      h("td", { class: "p99", text: ms(q.p99_ms) }),
      h("td", { class: "muted", text: num(q.count, 0) }));
  }

  function quantileTable(rows) {
    return h("table", { class: "tbl" },
      h("thead", {}, h("tr", {}, h("th", { text: "" }), h("th", { text: "p50" }), h("th", { text: "p99" }), h("th", { text: "count" }))),
      h("tbody", {}, ...rows));
  }

  function ratesCard(requests) {
    const rows = Object.entries(requests).map(([job, r]) => h("tr", { "data-job": job },
      h("th", { scope: "row", text: job }),
      h("td", { class: "rate", text: r.rate_per_s === null ? "-" : num(r.rate_per_s, 2) + "/s" }),
      h("td", { class: "error-ratio", text: r.error_ratio === null ? "-" : num(r.error_ratio * 100, 2) + "%" }),
      h("td", { class: "muted", text: num(r.requests, 0) })));
    return h("div", { class: "card" }, h("h3", { text: "Requests and errors" }),
      rows.length ? h("table", { class: "tbl", "data-testid": "rates" },
        h("thead", {}, h("tr", {}, h("th", { text: "service" }), h("th", { text: "rate" }), h("th", { text: "errors" }), h("th", { text: "calls" }))),
        h("tbody", {}, ...rows))
        : h("div", { class: "muted", "data-testid": "rates", text: "No requests in this window." }),
      h("div", { class: "muted small", text: "Errors: server-side gRPC statuses (internal, unavailable, deadline...) and HTTP 5xx." }));
  }

  function ttfbChart(series, start, end) {
    const backends = Object.keys(series);
    const wrap = h("div", { class: "live-chart", "data-testid": "ttfb-chart" });
    if (!backends.length) { wrap.appendChild(h("div", { class: "muted", text: "No GETs in this window." })); return wrap; }
    const values = backends.flatMap((b) => series[b].flatMap((p) => [p.p50_ms, p.p99_ms])).filter((v) => v !== null && v > 0);
    const maxV = Math.max(...values, 0.001) * 1.1;
    const W = 900, H = 220, L = 70, R = 12, T = 12, B = 28;
    const xs = (t) => L + ((t - start) / (end - start || 1)) * (W - L - R);
    const ys = (v) => T + (1 - v / maxV) * (H - T - B);
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "storage GET TTFB per backend" });
    for (let i = 0; i <= 4; i++) {
      const v = (maxV / 4) * i, y = ys(v);
      g.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e8ee" }));
      g.appendChild(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, ms(v)));
    }
    g.appendChild(svg("text", { x: L, y: H - 8 }, new Date(start * 1000).toLocaleTimeString()));
    g.appendChild(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, new Date(end * 1000).toLocaleTimeString()));
    const legend = h("div", { class: "legend muted small" });
    backends.forEach((b, i) => {
      const color = COLORS[i % COLORS.length];
      for (const [key, dash] of [["p50_ms", null], ["p99_ms", "5 4"]]) {
        const pts = series[b].filter((p) => p[key] !== null);
        if (!pts.length) continue;
        const d = pts.map((p, j) => (j ? "L" : "M") + xs(p.at).toFixed(1) + " " + ys(p[key]).toFixed(1)).join(" ");
        g.appendChild(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash, class: "series" }));
        for (const p of pts) {
          g.appendChild(svg("circle", { cx: xs(p.at), cy: ys(p[key]), r: 2.5, fill: color },
            svg("title", {}, b + " GET TTFB " + key.replace("_ms", "") + ": " + ms(p[key]) + " (" + p.count + " GETs)")));
        }
      }
      legend.appendChild(h("span", { class: "legend-item" }, h("i", { style: "background:" + color }), b));
    });
    legend.appendChild(h("span", { text: "(solid p50, dashed p99)" }));
    wrap.appendChild(g);
    wrap.appendChild(legend);
    return wrap;
  }

  function render(r) {
    const grid = clear($("metrics-live-grid"));
    grid.parentNode.setAttribute("data-window", String(r.window_s));
    const note = $("metrics-live-note");
    if (!r.snapshots) { grid.appendChild(h("div", { class: "muted", text: "No metrics scraped yet." })); return; }
    grid.appendChild(h("div", { class: "card" }, h("h3", { text: "Time to first token" }), quantileTable([
      quantileRow("ttft-rag", "Answer (retrieval included)", r.ttft.rag),
      quantileRow("ttft-model", "Model (gen_ai)", r.ttft.model),
      quantileRow("ttft-gateway", "Answer, as reported to the gateway", r.ttft.gateway),
    ])));
    const stages = Object.entries(r.retrieval.stages).map(([name, q]) => quantileRow("stage-" + name, "stage: " + name, q));
    grid.appendChild(h("div", { class: "card" }, h("h3", { text: "Retrieval latency" }),
      quantileTable([quantileRow("retrieval-search", "Search", r.retrieval.search), ...stages])));
    grid.appendChild(ratesCard(r.requests));
    const ttfbRows = r.storage_ttfb.map((row) => quantileRow("ttfb-" + row.backend + "-" + row.operation, row.backend + " " + row.operation, row));
    grid.appendChild(h("div", { class: "card wide" }, h("h3", { text: "Storage time to first byte per backend" }),
      ttfbChart(r.storage_ttfb_series, r.at - r.window_s, r.at),
      ttfbRows.length ? quantileTable(ttfbRows) : h("div", { class: "muted", text: "No storage operations in this window." })));
    const span = r.partial ? "the " + num(r.measured_s, 0) + " s scraped so far" : "the last " + num(r.window_s / 60, 0) + " minutes";
    note.textContent = "Computed by the gateway from the services' Prometheus metrics over " + span + "." +
      (r.scrape_failures.length ? " Not reachable: " + r.scrape_failures.join(", ") + "." : "");
  }

  async function load() {
    const mine = ++asked;
    try {
      const r = await DDN.api("GET", "/api/metrics/window?minutes=" + encodeURIComponent($("metrics-window").value));
      if (mine === asked) render(r);
    } catch (err) {
      if (mine === asked) clear($("metrics-live-grid")).appendChild(DDN.errorBox(err.message));
    }
  }

  $("metrics-window").addEventListener("change", load);
  $("metrics-refresh").addEventListener("click", load);
  document.addEventListener("tab", (e) => {
    clearInterval(timer);
    timer = null;
    if (e.detail === "metrics") { load(); timer = setInterval(load, REFRESH_MS); }
  });
})();
