"use strict";
// A/B runs over real questions (run, follow with resume, result, report, export) and the
// comparison dashboard per pair of backends: latest A/B runs and storage benchmark runs with
// trends, "A faster by X% (CI ...)" only when the interval excludes zero, and live GET TTFB per
// backend from the storage service's metrics. Inline SVG, no library.
(function ab() {
  const { h, svg, $, clear, ms } = DDN;
  const COLORS = ["#2364c9", "#c27b00"];
  let current = null; // the run shown in the result card

  const label = (name, emulated) => name + (emulated ? " (emulated)" : "");
  const isEmulated = (name) => (DDN.backends.find((b) => b.name === name) || {}).emulated;
  const nsMs = (ns) => ms(ns / 1e6);

  document.addEventListener("backends", (e) => {
    for (const [id, pick] of [["ab-a", 0], ["ab-b", 1], ["dash-a", 0], ["dash-b", 1]]) {
      const sel = $(id), keep = sel.value;
      clear(sel);
      for (const b of e.detail.backends) sel.appendChild(h("option", { value: b.name, text: label(b.name, b.emulated) }));
      if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
      else if (sel.options.length > pick) sel.selectedIndex = pick;
    }
  });

  $("ab-file").addEventListener("change", async () => {
    const f = $("ab-file").files[0];
    if (!f) return;
    const text = await f.text();
    let lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
    if (f.name.endsWith(".jsonl")) lines = lines.map((l) => { try { const d = JSON.parse(l); return typeof d === "string" ? d : d.text || d.question || ""; } catch (err) { return ""; } }).filter(Boolean);
    if (f.name.endsWith(".json")) { try { lines = JSON.parse(text).map((d) => (typeof d === "string" ? d : d.text || d.question || "")).filter(Boolean); } catch (err) { lines = []; } }
    $("ab-questions").value = lines.join("\n");
    $("ab-questions").dataset.source = f.name;
  });

  $("ab-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const status = clear($("ab-status"));
    const notices = clear($("ab-notices"));
    $("ab-bar").style.width = "0%";
    $("ab-run").disabled = true;
    try {
      const body = {
        backends: [$("ab-a").value, $("ab-b").value],
        questions: $("ab-questions").value,
        n: Number($("ab-n").value), repeat: Number($("ab-repeat").value), top_k: Number($("ab-topk").value),
        collection: $("ab-collection").value, skip_ttft: $("ab-skip-ttft").checked, label: $("ab-label").value,
        source: $("ab-questions").dataset.source || "questions given in the browser",
      };
      const started = await DDN.api("POST", "/api/ab/runs", body);
      status.textContent = "Run " + started.run_id + " started with " + started.questions + " questions";
      await DDN.sse("/api/ab/runs/" + encodeURIComponent(started.run_id) + "/stream", (name, data) => {
        if (name === "notice") notices.appendChild(h("li", { text: data.message }));
        else if (name === "progress") {
          $("ab-bar").style.width = Math.round((100 * data.done) / Math.max(1, data.total)) + "%";
          status.textContent = data.phase + " pass: " + data.done + " of " + data.total + " question-passes, " + data.errors + " errors";
        } else if (name === "done") { $("ab-bar").style.width = "100%"; status.textContent = "Run " + data.run.run_id + ": " + data.run.status; showRun(data.run); loadDashboard(); }
        else if (name === "error") status.appendChild(DDN.errorBox(data.message || "the run failed"));
      }, { retries: 5 });
    } catch (err) {
      status.appendChild(DDN.errorBox(err.message));
    } finally {
      $("ab-run").disabled = false;
    }
  });

  function sideName(run, n) {
    const b = (run.backends || []).find((x) => x.name === n) || {};
    return label(n, b.emulated);
  }

  function showRun(run) {
    current = run;
    $("ab-result-card").hidden = false;
    const [a, b] = run.request.backends;
    $("ab-result-title").textContent = "Run " + run.run_id + ": A = " + sideName(run, a) + ", B = " + sideName(run, b);
    const out = clear($("ab-result"));
    for (const note of run.notes || []) out.appendChild(h("div", { class: "muted small", text: "Note: " + note }));
    for (const phase of ["cold", "warm"]) {
      const s = run.summary[phase];
      if (!s) continue;
      out.appendChild(h("h3", { text: phase + " (" + s.pairs + " paired questions)" }));
      for (const [key, name] of [["fetch_ttfb", "Fetch TTFB"], ["fetch_total", "Fetch total"], ["ttft", "TTFT"]]) {
        const p = s.paired[key];
        if (!p) continue;
        out.appendChild(h("div", { class: "verdict" + (p.significant ? "" : " none"), "data-testid": "ab-verdict-" + phase + "-" + key },
          name + ": " + p.verdict + "; B - A mean " + nsMs(p.mean_diff_ns) + " (95% CI " + nsMs(p.ci_low_ns) + " .. " + nsMs(p.ci_high_ns) + "), A won " + Math.round(100 * p.a_win_rate) + "%"));
      }
      const tbody = h("tbody");
      for (const n of [a, b]) {
        const bs = s.backends[n];
        for (const [key, name] of [["fetch_ttfb", "fetch TTFB"], ["fetch_total", "fetch total"], ["ttft", "TTFT"]]) {
          const d = bs[key];
          if (!d.n) continue;
          tbody.appendChild(h("tr", {}, h("td", { text: sideName(run, n) }), h("td", { text: name }), h("td", { text: nsMs(d.p50_ns) }),
            h("td", { text: nsMs(d.p90_ns) }), h("td", { text: nsMs(d.p99_ns) }),
            h("td", { text: bs.errors + (bs.errors ? " (" + Object.entries(bs.errors_by_kind).map(([k, v]) => k + " " + v).join(", ") + ")" : "") })));
        }
      }
      tbody.appendChild(h("tr", {}, h("td", { text: "both" }), h("td", { text: "retrieval total" }), h("td", { text: nsMs(s.retrieval.p50_ns) }),
        h("td", { text: nsMs(s.retrieval.p90_ns) }), h("td", { text: nsMs(s.retrieval.p99_ns) }), h("td", { text: "" })));
      out.appendChild(h("table", { class: "tbl", "data-testid": "ab-table-" + phase },
        h("thead", {}, h("tr", {}, ...["Backend", "Stage", "p50", "p90", "p99", "Errors"].map((t) => h("th", { text: t })))), tbody));
    }
  }

  $("ab-open-report").addEventListener("click", async () => {
    if (!current) return;
    try {
      const resp = await fetch("/api/ab/runs/" + encodeURIComponent(current.run_id) + "/report", { headers: DDN.headers() });
      if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
      const url = URL.createObjectURL(new Blob([await resp.text()], { type: "text/html" }));
      window.open(url, "_blank");
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) { $("ab-result").prepend(DDN.errorBox(err.message)); }
  });
  for (const fmt of ["csv", "json"]) {
    $("ab-export-" + fmt).addEventListener("click", () => current && DDN.download("/api/ab/runs/" + encodeURIComponent(current.run_id) + "/export?format=" + fmt, "ab-" + current.run_id + "." + fmt).catch((err) => $("ab-result").prepend(DDN.errorBox(err.message))));
  }

  // --- the comparison dashboard ---------------------------------------------------------------------
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
      for (const [i, v] of pts) g.appendChild(svg("circle", { cx: xs(i), cy: ys(v), r: 3.5, fill: COLORS[j] }, svg("title", {}, label(n, isEmulated(n)) + " " + points[i].x + ": " + ms(v))));
      g.appendChild(svg("text", { x: W - R - 220, y: T + 12 + 14 * j, fill: COLORS[j] }, label(n, isEmulated(n))));
    });
    return g;
  }

  let dashGen = 0, liveGen = 0;
  async function loadDashboard() {
    const a = $("dash-a").value, b = $("dash-b").value;
    const gen = ++dashGen; // several triggers may overlap: only the latest one draws
    if (!a || !b || a === b) { clear($("dash-verdict")).appendChild(h("div", { class: "muted", text: "Pick two different backends." })); return; }
    try {
      const [abRuns, bench] = await Promise.all([DDN.api("GET", "/api/ab/runs?page_size=50"), DDN.api("GET", "/api/benchmarks?page_size=50")]);
      if (gen !== dashGen) return;
      const verdictEl = clear($("dash-verdict")), tbody = clear($("dash-runs").tBodies[0]);
      const pair = abRuns.runs.filter((r) => r.request && r.summary && [a, b].every((n) => r.request.backends.includes(n)));
      const latest = pair[0];
      if (!latest) verdictEl.appendChild(h("div", { class: "muted", text: "No A/B run of " + label(a, isEmulated(a)) + " and " + label(b, isEmulated(b)) + " yet: run one above." }));
      else {
        for (const phase of ["cold", "warm"]) {
          const p = latest.summary[phase] && latest.summary[phase].paired.fetch_ttfb;
          if (p) verdictEl.appendChild(h("div", { class: "verdict" + (p.significant ? "" : " none") }, phase + " fetch TTFB: " + p.verdict + " (run " + latest.run_id + ")"));
        }
      }
      const points = pair.slice().reverse().map((r) => ({ x: r.run_id, values: Object.fromEntries([a, b].map((n) => [n, ((r.summary.cold || {}).backends || {})[n] ? r.summary.cold.backends[n].fetch_ttfb.p50_ns / 1e6 : 0])) }));
      clear($("dash-trend")).appendChild(trendSvg(points, [a, b], "A/B runs"));
      for (const r of pair.slice(0, 10)) {
        const cold = r.summary.cold || { backends: {}, paired: {} }, warm = r.summary.warm || { paired: {} };
        const c = (n) => (cold.backends[n] ? nsMs(cold.backends[n].fetch_ttfb.p50_ns) : "-");
        tbody.appendChild(h("tr", {}, h("td", { text: r.run_id }), h("td", { text: String(r.request.questions_count || "") }), h("td", { text: c(a) }), h("td", { text: c(b) }),
          h("td", { text: (cold.paired.fetch_ttfb || {}).verdict || "-" }), h("td", { text: (warm.paired.fetch_ttfb || {}).verdict || "-" }),
          h("td", {}, h("button", { class: "ghost", text: "Show", onclick: () => DDN.api("GET", "/api/ab/runs/" + encodeURIComponent(r.run_id)).then((x) => showRun(x.run)) }))));
      }
      const benchPoints = bench.runs.slice().reverse().map((run) => {
        const values = {};
        for (const n of [a, b]) {
          const rows = run.results.filter((l) => l.backend === n && l.operation === "get" && l.ops > l.errors).sort((p, q) => p.concurrency - q.concurrency);
          if (rows.length) values[n] = rows[0].ttfb.p50_ms;
        }
        return { x: run.run_id, values };
      }).filter((p) => Object.keys(p.values).length);
      clear($("dash-bench-trend")).appendChild(trendSvg(benchPoints, [a, b], "benchmark runs"));
    } catch (err) { if (gen === dashGen) clear($("dash-verdict")).appendChild(DDN.errorBox(err.message)); }
  }

  async function loadLive() {
    // The storage service's storage_backend_ttfb_seconds over the last 5 minutes, as the Metrics
    // page scrapes it: real traffic, per backend, GET operations.
    const el = $("dash-live");
    const pair = [$("dash-a").value, $("dash-b").value];
    const gen = ++liveGen;
    try {
      const w = await DDN.api("GET", "/api/metrics/window?minutes=5");
      if (gen !== liveGen) return;
      clear(el);
      for (const n of pair) {
        const row = (w.storage_ttfb || []).find((r) => r.backend === n && r.operation === "get");
        el.appendChild(h("div", { "data-backend": n }, label(n, isEmulated(n)) + ": " + (row && row.count
          ? "GET TTFB p50 " + ms(row.p50_ms) + ", p99 " + ms(row.p99_ms) + " over " + row.count + " reads in the last " + Math.round((w.measured_s || 0) / 60 * 10) / 10 + " min"
          : "no reads through this backend in the last 5 minutes")));
      }
    } catch (err) { if (gen === liveGen) clear(el).appendChild(DDN.errorBox(err.message)); }
  }

  // --- Business impact from an A/B run ---------------------------------------------------------------
  // The impact page's run picker also lists A/B runs (value "ab:<run id>"); this draws the figures
  // an A/B run measures (fetch of the run's top-k chunks, TTFT) and says what it does not measure.
  let abRuns = [];
  let abPicked = ""; // the A/B run the user picked: kept when the benchmark options are rebuilt
  function addAbOptions() {
    const sel = $("im-run");
    for (const g of [...sel.querySelectorAll("optgroup.ab")]) g.remove();
    if (!abRuns.length) return;
    const group = h("optgroup", { class: "ab", label: "A/B runs" });
    for (const r of abRuns) group.appendChild(h("option", { value: "ab:" + r.run_id, text: "A/B " + r.run_id + "  " + r.request.backends.join(" vs ") + "  " + (r.request.label || "") }));
    sel.appendChild(group);
    if (abPicked && [...sel.options].some((o) => o.value === abPicked) && sel.value !== abPicked) {
      sel.value = abPicked;
      if (DDN.renderImpact) DDN.renderImpact();
    }
  }
  $("im-run").addEventListener("input", () => { abPicked = $("im-run").value.startsWith("ab:") ? $("im-run").value : ""; });
  document.addEventListener("runs", addAbOptions); // after pages.js rebuilt the benchmark options
  document.addEventListener("tab", async (e) => {
    if (e.detail !== "impact") return;
    try { abRuns = (await DDN.api("GET", "/api/ab/runs?page_size=20")).runs.filter((r) => r.summary); } catch (err) { abRuns = []; }
    addAbOptions();
    if (DDN.renderImpact) DDN.renderImpact();
  });
  DDN.abImpact = function abImpact(out) {
    const value = $("im-run").value || "";
    if (!value.startsWith("ab:")) return false;
    const run = abRuns.find((r) => "ab:" + r.run_id === value);
    if (!run) { out.appendChild(h("div", { class: "card muted", text: "That A/B run is not loaded; pick another." })); return true; }
    const phase = run.summary.warm ? "warm" : "cold";
    const s = run.summary[phase];
    const qpd = Number($("im-qpd").value), gpus = Number($("im-gpus").value), cost = Number($("im-cost").value);
    const trace = "A/B run " + run.run_id + ", " + phase + " pass" + (phase === "warm" ? "es" : "") + ", " + s.pairs + " paired questions, top " + run.request.top_k + " chunks";
    for (const n of run.request.backends) {
      const b = s.backends[n];
      const card = h("div", { class: "card", "data-testid": "impact-" + n }, h("h3", { text: label(n, b.emulated) }));
      if (b.fetch_total.n) {
        const gpuHours = (qpd * (b.fetch_total.p50_ns / 1e9) * gpus) / 3600;
        card.appendChild(h("div", {}, h("div", { class: "big-num", text: DDN.num(gpuHours, 2) + " GPU-h/day" }),
          h("div", { text: "GPU time waiting on the chunk fetch, " + DDN.num(gpuHours * cost, 2) + " USD/day" }),
          h("div", { class: "trace", text: "= queries/day x fetch total p50 " + nsMs(b.fetch_total.p50_ns) + " x GPUs / 3600; from " + trace })));
      }
      card.appendChild(h("div", { class: "muted", text: "Ingest time not computed: an A/B run measures reads only (run a PUT benchmark)." }));
      if (b.errors) card.appendChild(h("div", { class: "muted", text: b.errors + " failed samples (" + Object.entries(b.errors_by_kind).map(([k, v]) => k + " " + v).join(", ") + "), counted apart" }));
      out.appendChild(card);
    }
    const p = s.paired.ttft || s.paired.fetch_total;
    const what = s.paired.ttft ? "TTFT" : "fetch total";
    out.appendChild(h("div", { class: "card", "data-testid": "impact-ttft" }, h("h3", { text: what + " difference users feel" }),
      h("div", { class: "big-num", text: p.significant ? nsMs(Math.abs(p.mean_diff_ns)) : "no significant difference" }),
      h("div", { text: p.verdict }),
      h("div", { class: "trace", text: "= mean of B - A per question " + nsMs(p.mean_diff_ns) + " (95% CI " + nsMs(p.ci_low_ns) + " .. " + nsMs(p.ci_high_ns) + "); from " + trace })));
    return true;
  };

  $("dash-refresh").addEventListener("click", () => { loadDashboard(); loadLive(); });
  for (const id of ["dash-a", "dash-b"]) $(id).addEventListener("change", () => { loadDashboard(); loadLive(); });
  let timer = null;
  document.addEventListener("tab", (e) => {
    if (timer) { clearInterval(timer); timer = null; }
    if (e.detail === "ab") { loadDashboard(); loadLive(); timer = setInterval(loadLive, 5000); }
  });
})();
