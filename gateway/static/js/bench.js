"use strict";
// Benchmark: presets or custom levels, a live inline-SVG chart (latency and TTFB p50 against
// concurrency, per backend, linear or log scale), the p50/p90/p99 table, CSV/JSON export of the
// saved run, and a comparison of two past runs.
(function bench() {
  const { h, svg, $, clear, num, ms } = DDN;
  const COLORS = ["#d4202c", "#2364c9", "#188a6b", "#8c4bc9", "#c27b00"];
  let levels = [];
  let live = null; // the level running now: {backend, concurrency, p50_ms}, drawn as a hollow point
  let runId = null;
  let abort = null;
  DDN.benchRuns = [];

  document.addEventListener("backends", (e) => {
    const fs = $("bench-backends");
    for (const el of [...fs.querySelectorAll("label")]) el.remove();
    e.detail.backends.forEach((b, i) => {
      fs.appendChild(h("label", {}, h("input", { type: "checkbox", value: b.name, checked: i < 2 ? true : null }),
        b.name + (b.emulated ? " (emulated)" : "")));
    });
  });

  function drawChart() {
    const el = clear($("bench-chart"));
    if (!levels.length && !live) { el.appendChild(h("div", { class: "muted", text: "Run a benchmark to see latency and TTFB against concurrency." })); return; }
    const logY = $("bench-log").checked;
    const concs = [...new Set(levels.map((l) => l.concurrency).concat(live ? [live.concurrency] : []))].sort((a, b) => a - b);
    const backends = [...new Set(levels.map((l) => l.backend).concat(live ? [live.backend] : []))];
    const values = levels.flatMap((l) => [l.latency.p50_ms, l.ttfb.p50_ms]).concat(live ? [live.p50_ms] : []).filter((v) => v > 0);
    const maxV = Math.max(...values, 0.001), minV = Math.max(Math.min(...values, maxV), 0.001);
    const W = 900, H = 340, L = 60, R = 20, T = 20, B = 40;
    const xs = (c) => L + (concs.length === 1 ? (W - L - R) / 2 : (concs.indexOf(c) / (concs.length - 1)) * (W - L - R));
    const lo = logY ? Math.log10(minV) - 0.1 : 0, hi = logY ? Math.log10(maxV) + 0.1 : maxV * 1.1;
    const ys = (v) => { const t = logY ? Math.log10(Math.max(v, 0.001)) : v; return T + (1 - (t - lo) / (hi - lo || 1)) * (H - T - B); };
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, "data-testid": "bench-svg", preserveAspectRatio: "none" });
    const ticks = [];
    if (logY) { for (let p = Math.floor(lo); p <= Math.ceil(hi); p++) for (const m of [1, 2, 5]) ticks.push(m * Math.pow(10, p)); }
    else { for (let i = 0; i <= 5; i++) ticks.push((hi / 5) * i); }
    for (const t of ticks) {
      const y = ys(t);
      if (y < T - 1 || y > H - B + 1) continue;
      g.appendChild(svg("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#e3e8ee" }));
      g.appendChild(svg("text", { x: L - 6, y: y + 4, "text-anchor": "end" }, t >= 1 ? num(t, 1) : t.toPrecision(2)));
    }
    for (const c of concs) g.appendChild(svg("text", { x: xs(c), y: H - B + 16, "text-anchor": "middle" }, String(c)));
    g.appendChild(svg("text", { x: (W + L) / 2, y: H - 6, "text-anchor": "middle" }, "concurrency"));
    g.appendChild(svg("text", { x: 12, y: T + 4 }, "ms" + (logY ? " (log)" : "")));
    backends.forEach((b, i) => {
      const pts = levels.filter((l) => l.backend === b).sort((p, q) => p.concurrency - q.concurrency);
      for (const [key, dash] of [["latency", null], ["ttfb", "6 4"]]) {
        const d = pts.map((p, j) => (j ? "L" : "M") + xs(p.concurrency).toFixed(1) + " " + ys(p[key].p50_ms).toFixed(1)).join(" ");
        g.appendChild(svg("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2.5, "stroke-dasharray": dash, class: "series" }));
        for (const p of pts) {
          g.appendChild(svg("circle", { cx: xs(p.concurrency), cy: ys(p[key].p50_ms), r: 3.5, fill: COLORS[i % COLORS.length] },
            svg("title", {}, b + " " + key + " p50 at concurrency " + p.concurrency + ": " + ms(p[key].p50_ms))));
        }
      }
    });
    if (live && live.p50_ms > 0) {
      const i = backends.indexOf(live.backend);
      g.appendChild(svg("circle", { cx: xs(live.concurrency), cy: ys(live.p50_ms), r: 5, fill: "#fff", class: "live-point",
        stroke: COLORS[i % COLORS.length], "stroke-width": 2 }, svg("title", {}, "running: " + live.backend + " p50 so far " + ms(live.p50_ms))));
    }
    el.appendChild(g);
    el.appendChild(h("div", { class: "legend" }, backends.map((b, i) => h("span", {},
      h("i", { style: "background:" + COLORS[i % COLORS.length] }), b + " latency p50 (solid), TTFB p50 (dashed)"))));
  }
  $("bench-log").addEventListener("change", drawChart);

  function drawTable() {
    const tb = clear($("bench-table").querySelector("tbody"));
    for (const l of levels) {
      tb.appendChild(h("tr", {}, h("td", { text: l.backend + (l.emulated ? " (emulated)" : "") }), h("td", { text: l.operation }),
        h("td", { text: DDN.bytes(l.object_size_bytes) }), h("td", { text: l.concurrency }),
        h("td", { text: num(l.latency.p50_ms, 2) }), h("td", { text: num(l.latency.p90_ms, 2) }), h("td", { text: num(l.latency.p99_ms, 2) }),
        h("td", { text: num(l.ttfb.p50_ms, 2) }), h("td", { text: num(l.ops_per_s, 1) }), h("td", { text: num(l.mib_per_s, 2) }),
        h("td", { text: l.errors })));
    }
  }

  $("bench-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const backends = [...$("bench-backends").querySelectorAll("input:checked")].map((i) => i.value);
    const status = clear($("bench-status"));
    if (!backends.length) { status.appendChild(DDN.errorBox("Pick at least one backend.")); return; }
    const preset = document.querySelector('input[name="preset"]:checked').value;
    const p = new URLSearchParams({ backends: backends.join(","), preset, operation: $("bench-op").value,
      sizes: [...$("bench-size").selectedOptions].map((o) => o.value).join(",") || "65536", ops_per_level: $("bench-ops").value, label: $("bench-label").value });
    if (preset === "custom") p.set("levels", $("bench-levels").value);
    levels = [];
    live = null;
    runId = null;
    drawChart(); drawTable();
    $("export-csv").disabled = $("export-json").disabled = true;
    $("bench-run").disabled = true;
    $("bench-stop").hidden = false;
    abort = new AbortController();
    $("bench-chart").dataset.state = "running";
    try {
      await DDN.sse("/api/benchmarks/stream?" + p, (name, d) => {
        if (name === "progress") {
          live = { backend: d.backend, concurrency: d.concurrency, p50_ms: d.p50_ms };
          drawChart();
          status.textContent = "Running " + d.backend + " at concurrency " + d.concurrency + ": " + d.ops_done + " ops, p50 " + ms(d.p50_ms) +
            "  (" + d.levels_done + "/" + d.levels_total + " levels done)";
        } else if (name === "level") {
          live = null;
          levels.push(d); drawChart(); drawTable();
        } else if (name === "done") {
          runId = d.run.run_id;
          live = null;
          levels = d.run.results; drawChart(); drawTable();
          status.textContent = "Saved run " + runId + " (" + d.run.started + ")" +
            (d.run.not_configured.length ? "; not configured, so not measured: " + d.run.not_configured.join(", ") : "");
          $("export-csv").disabled = $("export-json").disabled = false;
          $("bench-chart").dataset.state = "done";
          loadRuns();
        } else if (name === "error") {
          status.appendChild(DDN.errorBox(d.message));
          $("bench-chart").dataset.state = "error";
        }
      }, { signal: abort.signal, retries: 0 });
    } catch (err) {
      if (!abort.signal.aborted) status.appendChild(DDN.errorBox(err.message));
      else status.textContent = "Stopped.";
    } finally {
      $("bench-run").disabled = false;
      $("bench-stop").hidden = true;
    }
  });
  $("bench-stop").addEventListener("click", () => abort && abort.abort());
  $("export-csv").addEventListener("click", () => runId && DDN.download("/api/benchmarks/" + runId + "/export?format=csv", "benchmark-" + runId + ".csv"));
  $("export-json").addEventListener("click", () => runId && DDN.download("/api/benchmarks/" + runId + "/export?format=json", "benchmark-" + runId + ".json"));

  async function loadRuns() {
    try {
      const r = await DDN.api("GET", "/api/benchmarks");
      DDN.benchRuns = r.runs;
      for (const id of ["cmp-a", "cmp-b"]) {
        const sel = clear($(id));
        for (const run of r.runs) {
          sel.appendChild(h("option", { value: run.run_id, text: run.run_id + "  " + run.started + "  " + (run.label || run.backends.join(" vs ")) }));
        }
      }
      if (r.runs.length > 1) $("cmp-b").selectedIndex = 1;
      document.dispatchEvent(new CustomEvent("runs", { detail: r.runs }));
    } catch (err) { $("bench-status").appendChild(DDN.errorBox(err.message)); }
  }
  DDN.loadRuns = loadRuns;
  $("runs-refresh").addEventListener("click", loadRuns);
  $("cmp-btn").addEventListener("click", async () => {
    const tb = clear($("cmp-table").querySelector("tbody"));
    try {
      const r = await DDN.api("GET", "/api/benchmarks/compare?a=" + encodeURIComponent($("cmp-a").value) + "&b=" + encodeURIComponent($("cmp-b").value));
      for (const row of r.rows) {
        tb.appendChild(h("tr", {}, h("td", { text: row.backend }), h("td", { text: row.operation }), h("td", { text: DDN.bytes(row.object_size_bytes) }),
          h("td", { text: row.concurrency }), h("td", { text: num(row.latency_p50_ms.a, 2) }), h("td", { text: num(row.latency_p50_ms.b, 2) }),
          h("td", { text: row.latency_p50_ms.ratio === null ? "-" : num(row.latency_p50_ms.ratio, 2) + "x" }),
          h("td", { text: num(row.ttfb_p50_ms.a, 2) }), h("td", { text: num(row.ttfb_p50_ms.b, 2) }),
          h("td", { text: num(row.ops_per_s.a, 1) }), h("td", { text: num(row.ops_per_s.b, 1) })));
      }
      if (!r.rows.length) tb.appendChild(h("tr", {}, h("td", { colspan: "11", class: "muted", text: "The two runs share no (backend, operation, size, concurrency) cell." })));
    } catch (err) { tb.appendChild(h("tr", {}, h("td", { colspan: "11" }, DDN.errorBox(err.message)))); }
  });
  document.addEventListener("tab", (e) => { if (e.detail === "benchmark" || e.detail === "impact") { drawChart(); loadRuns(); } });
})();
