"use strict";
// A/B runs over real questions (run, follow with resume, result, report, export), and an A/B run
// as the source of Business impact. The page per pair of backends is compare.js.
(function ab() {
  const { h, $, clear, ms } = DDN;
  let current = null; // the run shown in the result card

  const label = (name, emulated) => name + (emulated ? " (emulated)" : "");
  const isEmulated = (name) => (DDN.backends.find((b) => b.name === name) || {}).emulated;
  const nsMs = (ns) => ms(ns / 1e6);

  document.addEventListener("backends", (e) => {
    for (const [id, pick] of [["ab-a", 0], ["ab-b", 1]]) {
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
        } else if (name === "done") { $("ab-bar").style.width = "100%"; status.textContent = "Run " + data.run.run_id + ": " + data.run.status; showRun(data.run); pairLink(data.run); }
        else if (name === "error") status.appendChild(DDN.errorBox(data.message || "the run failed"));
      }, { retries: 5 });
    } catch (err) {
      status.appendChild(DDN.errorBox(err.message));
    } finally {
      $("ab-run").disabled = false;
    }
  });

  function pairLink(run) {
    const [a, b] = run.request.backends;
    $("ab-status").appendChild(h("a", { href: "#compare/" + encodeURIComponent(a) + "/" + encodeURIComponent(b), class: "pair-link", text: " Compare " + label(a, isEmulated(a)) + " and " + label(b, isEmulated(b)) + " across runs" }));
  }

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

  DDN.showAbRun = showRun; // the comparison pages (compare.js) open a run here
})();
