"use strict";
// The comparison page: one page per pair of backends, at its own address (#compare/A/B), with
// the pair's latest A/B runs and storage benchmark runs, their trends across runs, the latest
// run's verdicts ("A faster by X% (95% CI ...)" only when the interval excludes zero, otherwise
// "no significant difference": the A/B service's own wording, services/llm_gateway/ab/stats.py),
// and live per-backend GET TTFB of real traffic from the storage service's metrics. Inline SVG.
(function compare() {
  const { h, svg, $, clear, ms } = DDN;
  const COLORS = ["#2364c9", "#c27b00"];
  const STAGES = [["fetch_ttfb", "Fetch TTFB"], ["fetch_total", "Fetch total"], ["ttft", "TTFT"]];
  let pair = ["", ""]; // the pair shown, from the address
  let dashGen = 0, liveGen = 0, timer = null;

  const isEmulated = (name) => (DDN.backends.find((b) => b.name === name) || {}).emulated;
  const label = (name) => name + (isEmulated(name) ? " (emulated)" : "");
  const nsMs = (ns) => ms(ns / 1e6);
  const pairHash = (a, b) => "#compare/" + encodeURIComponent(a) + "/" + encodeURIComponent(b);
  const samePair = (backends, a, b) => backends.length === 2 && backends.includes(a) && backends.includes(b);

  function fillPickers() {
    for (const [id, pick] of [["dash-a", 0], ["dash-b", 1]]) {
      const sel = clear($(id));
      for (const b of DDN.backends) sel.appendChild(h("option", { value: b.name, text: label(b.name) }));
      const want = pair[pick];
      if (want && [...sel.options].some((o) => o.value === want)) sel.value = want;
      else if (sel.options.length > pick) sel.selectedIndex = pick;
    }
  }

  function drawPairLinks(abRuns) {
    // Every pair of configured backends, and every pair an A/B run compared: one link each.
    const names = DDN.backends.map((b) => b.name);
    const seen = new Map();
    for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) seen.set(names[i] + "\n" + names[j], [names[i], names[j]]);
    for (const r of abRuns) {
      const [a, b] = r.request.backends;
      if (![a + "\n" + b, b + "\n" + a].some((k) => seen.has(k))) seen.set(a + "\n" + b, [a, b]);
    }
    const ul = clear($("pair-links"));
    for (const [a, b] of seen.values()) {
      const runs = abRuns.filter((r) => samePair(r.request.backends, a, b)).length;
      const current = samePair(pair, a, b);
      ul.appendChild(h("li", {}, h("a", { href: pairHash(a, b), "aria-current": current ? "page" : null, text: label(a) + " vs " + label(b) }),
        h("span", { class: "muted", text: " (" + runs + " A/B run" + (runs === 1 ? "" : "s") + ")" })));
    }
    if (!seen.size) ul.appendChild(h("li", { class: "muted", text: "Configure two backends to compare them." }));
  }

  function trendSvg(points, names, title) {
    // points: [{x: label, values: {name: ms}}] oldest first
    const W = 900, H = 200, L = 56, R = 16, T = 16, B = 30;
    const vals = points.flatMap((p) => names.map((n) => p.values[n]).filter((v) => v > 0));
    if (!vals.length) return h("div", { class: "muted", text: "No " + title + " for this pair yet." });
    const hi = Math.max(...vals) * 1.15;
    const xs = (i) => L + (points.length === 1 ? (W - L - R) / 2 : (i / (points.length - 1)) * (W - L - R));
    const ys = (v) => T + (1 - v / hi) * (H - T - B);
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none" });
    for (let i = 0; i <= 4; i++) {
      const v = (hi / 4) * i;
      g.appendChild(svg("line", { x1: L, x2: W - R, y1: ys(v), y2: ys(v), stroke: "#e3e8ee" }));
      g.appendChild(svg("text", { x: L - 6, y: ys(v) + 4, "text-anchor": "end" }, v.toFixed(v < 10 ? 2 : 0)));
    }
    g.appendChild(svg("text", { x: 8, y: T }, "ms"));
    names.forEach((n, j) => {
      const pts = points.map((p, i) => [i, p.values[n]]).filter(([, v]) => v > 0);
      g.appendChild(svg("path", { d: pts.map(([i, v], k) => (k ? "L" : "M") + xs(i).toFixed(1) + " " + ys(v).toFixed(1)).join(" "), fill: "none", stroke: COLORS[j], "stroke-width": 2.5 }));
      for (const [i, v] of pts) g.appendChild(svg("circle", { cx: xs(i), cy: ys(v), r: 3.5, fill: COLORS[j] }, svg("title", {}, label(n) + " " + points[i].x + ": " + ms(v))));
      g.appendChild(svg("text", { x: W - R - 220, y: T + 12 + 14 * j, fill: COLORS[j] }, label(n)));
    });
    return g;
  }

  function drawVerdicts(latest) {
    const el = clear($("dash-verdict"));
    const [a, b] = pair;
    if (!latest) { el.appendChild(h("div", { class: "muted", text: "No A/B run of " + label(a) + " and " + label(b) + " yet: run one on the A/B tab." })); return; }
    el.appendChild(h("div", { class: "muted small", text: "Latest A/B run " + latest.run_id + " (" + (latest.request.questions_count || "?") + " questions x " + latest.request.repeat + " passes, top " + latest.request.top_k + " chunks):" }));
    for (const phase of ["cold", "warm"]) {
      const s = latest.summary[phase];
      if (!s) continue;
      for (const [key, name] of STAGES) {
        const p = s.paired[key];
        if (!p) continue;
        // The verdict names the faster side only when the 95% interval excludes zero.
        el.appendChild(h("div", { class: "verdict" + (p.significant ? "" : " none"), "data-testid": "pair-verdict-" + phase + "-" + key },
          phase + " " + name + ": " + p.verdict + " (" + s.pairs + " pairs, run " + latest.run_id + ")"));
      }
    }
  }

  function drawAbRuns(runs) {
    const [a, b] = pair;
    const points = runs.slice().reverse().map((r) => ({ x: r.run_id, values: Object.fromEntries([a, b].map((n) => [n, ((r.summary.cold || {}).backends || {})[n] ? r.summary.cold.backends[n].fetch_ttfb.p50_ns / 1e6 : 0])) }));
    clear($("dash-trend")).appendChild(trendSvg(points, [a, b], "A/B runs"));
    const tbody = clear($("dash-runs").tBodies[0]);
    for (const r of runs.slice(0, 10)) {
      const cold = r.summary.cold || { backends: {}, paired: {} }, warm = r.summary.warm || { paired: {} };
      const c = (n) => (cold.backends[n] ? nsMs(cold.backends[n].fetch_ttfb.p50_ns) : "-");
      tbody.appendChild(h("tr", {}, h("td", { text: r.run_id }), h("td", { text: String(r.request.questions_count || "") }), h("td", { text: c(a) }), h("td", { text: c(b) }),
        h("td", { text: (cold.paired.fetch_ttfb || {}).verdict || "-" }), h("td", { text: (warm.paired.fetch_ttfb || {}).verdict || "-" }),
        h("td", {}, h("button", { class: "ghost", text: "Show", onclick: () => DDN.api("GET", "/api/ab/runs/" + encodeURIComponent(r.run_id)).then((x) => { DDN.selectTab("ab"); DDN.showAbRun(x.run); }) }))));
    }
    if (!runs.length) tbody.appendChild(h("tr", {}, h("td", { colspan: 7, class: "muted", text: "No A/B run of this pair yet." })));
  }

  function drawBenchRuns(runs) {
    // GET TTFB p50 per backend at the run's smallest object size and lowest concurrency.
    const [a, b] = pair;
    const rows = runs.map((run) => {
      const values = {};
      for (const n of [a, b]) {
        const lv = run.results.filter((l) => l.backend === n && l.operation === "get" && l.ops > l.errors)
          .sort((p, q) => p.object_size_bytes - q.object_size_bytes || p.concurrency - q.concurrency)[0];
        if (lv) values[n] = lv.ttfb.p50_ms;
      }
      return { x: run.run_id, values };
    }).filter((p) => Object.keys(p.values).length);
    clear($("dash-bench-trend")).appendChild(trendSvg(rows.slice().reverse(), [a, b], "benchmark runs"));
    const tbody = clear($("pair-bench").tBodies[0]);
    for (const r of rows.slice(0, 10)) {
      const va = r.values[a], vb = r.values[b];
      tbody.appendChild(h("tr", {}, h("td", { text: r.x }), h("td", { text: ms(va) }), h("td", { text: ms(vb) }),
        h("td", { text: va && vb ? (vb / va).toFixed(2) : "-" })));
    }
    if (!rows.length) tbody.appendChild(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No benchmark run read from these backends yet." })));
  }

  async function loadPage() {
    const [a, b] = pair;
    const gen = ++dashGen; // several triggers may overlap: only the latest one draws
    $("pair-title").textContent = a && b && a !== b ? label(a) + " vs " + label(b) : "Compare two backends";
    try {
      const [abRuns, bench] = await Promise.all([DDN.api("GET", "/api/ab/runs?page_size=50"), DDN.api("GET", "/api/benchmarks?page_size=50")]);
      if (gen !== dashGen) return;
      const done = abRuns.runs.filter((r) => r.request && r.summary);
      drawPairLinks(done);
      if (!a || !b || a === b) { clear($("dash-verdict")).appendChild(h("div", { class: "muted", text: "Pick two different backends." })); $("pair-body").hidden = true; return; }
      $("pair-body").hidden = false;
      const mine = done.filter((r) => samePair(r.request.backends, a, b));
      drawVerdicts(mine[0]);
      drawAbRuns(mine);
      drawBenchRuns(bench.runs);
    } catch (err) { if (gen === dashGen) clear($("dash-verdict")).appendChild(DDN.errorBox(err.message)); }
  }

  async function loadLive() {
    // The storage service's storage_backend_ttfb_seconds over the last 5 minutes, as the Metrics
    // page scrapes it: real traffic, per backend, GET operations.
    const el = $("dash-live");
    const gen = ++liveGen;
    if (!pair[0] || !pair[1]) return;
    try {
      const w = await DDN.api("GET", "/api/metrics/window?minutes=5");
      if (gen !== liveGen) return;
      clear(el);
      for (const n of pair) {
        const row = (w.storage_ttfb || []).find((r) => r.backend === n && r.operation === "get");
        el.appendChild(h("div", { "data-backend": n }, label(n) + ": " + (row && row.count
          ? "GET TTFB p50 " + ms(row.p50_ms) + ", p99 " + ms(row.p99_ms) + " over " + row.count + " reads in the last " + Math.round((w.measured_s || 0) / 60 * 10) / 10 + " min"
          : "no reads through this backend in the last 5 minutes")));
      }
    } catch (err) { if (gen === liveGen) clear(el).appendChild(DDN.errorBox(err.message)); }
  }

  function show() {
    const [a, b] = DDN.route;
    pair = [a || "", b || ""];
    if (!a || !b) {
      // #compare alone: the first two backends (the pickers' defaults), at their own address.
      fillPickers();
      if ($("dash-a").value && $("dash-b").value) { DDN.selectTab("compare", [$("dash-a").value, $("dash-b").value]); return; }
    }
    fillPickers();
    loadPage();
    loadLive();
  }

  const pick = () => DDN.selectTab("compare", [$("dash-a").value, $("dash-b").value]);
  for (const id of ["dash-a", "dash-b"]) $(id).addEventListener("change", pick);
  $("dash-refresh").addEventListener("click", () => { loadPage(); loadLive(); });
  document.addEventListener("backends", () => { if (!$("panel-compare").hidden) show(); else fillPickers(); });
  document.addEventListener("tab", (e) => {
    if (timer) { clearInterval(timer); timer = null; }
    if (e.detail !== "compare") return;
    show();
    timer = setInterval(loadLive, 5000);
  });
})();
