"use strict";
// Chat: a conversation of turns that stay on the page, each a streamed answer with clickable
// citations, live TTFT and tokens/s badges, a per-stage timing waterfall and the question that was
// searched; a backend selector with a side-by-side compare mode (a single question, kept out of
// the conversation); model, temperature and answer cache controls. conversations.js keeps the
// conversation (create, reopen, list) through DDN.conv.
(function chat() {
  const { h, svg, $, clear, ms, num } = DDN;
  let abort = null;

  document.addEventListener("backends", (e) => {
    const sel = $("chat-backend"), selA = $("chat-backend-a"), selB = $("chat-backend-b");
    const keep = sel.value;
    clear(sel).appendChild(h("option", { value: "", text: "default" }));
    clear(selA);
    clear(selB);
    for (const b of e.detail.backends) {
      const label = b.name + (b.emulated ? " (emulated)" : "");
      sel.appendChild(h("option", { value: b.name, text: label }));
      selA.appendChild(h("option", { value: b.name, text: label }));
      selB.appendChild(h("option", { value: b.name, text: label }));
    }
    if (e.detail.backends.length >= 2) {
      sel.appendChild(h("option", { value: "__compare__", text: "Both, side by side" }));
      if (selB.options.length > 1) selB.selectedIndex = 1;
    }
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    $("compare-b-wrap").hidden = sel.value !== "__compare__";
  });
  $("chat-backend").addEventListener("change", () => {
    $("compare-b-wrap").hidden = $("chat-backend").value !== "__compare__";
  });

  // Models for the picker: "default" (the first healthy backend) and each model of each backend.
  let models = [];
  async function loadModels() {
    try {
      models = (await DDN.api("GET", "/api/models")).models || [];
    } catch (e) { models = []; }
    const sel = $("chat-model"), keep = sel.value;
    clear(sel).appendChild(h("option", { value: "", text: "default (first healthy)" }));
    models.forEach((m, i) => sel.appendChild(h("option", { value: String(i), text: m.id + " (" + m.backend + ")" })));
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }
  window.addEventListener("DOMContentLoaded", loadModels);
  document.addEventListener("auth", loadModels);

  function makeLane(title, emulated, question) {
    const el = {};
    el.root = h("article", { class: "card lane", "aria-live": "polite" },
      question ? h("div", { class: "turn-q", "data-testid": "turn-question", text: question }) : null,
      h("h3", {}, DDN.icon("chat"), h("span", { text: title }), emulated ? h("span", { class: "badge emu", text: "emulated" }) : null),
      (el.searched = h("div", { class: "searched", "data-testid": "searched", hidden: true })),
      (el.note = h("div", { class: "note", hidden: true })),
      (el.badges = h("div", { class: "badges" },
        (el.ttft = h("span", { class: "badge live", "data-testid": "ttft-badge" }, "TTFT ", h("strong", { text: "-" }))),
        (el.tps = h("span", { class: "badge live", "data-testid": "tps-badge" }, "tokens/s ", h("strong", { text: "-" }))),
        (el.model = h("span", { class: "badge", text: "model -" })),
        (el.cache = h("span", { class: "badge", text: "" })))),
      (el.answer = h("div", { class: "answer", "data-testid": "answer" })),
      (el.error = h("div", {})),
      (el.cites = h("ol", { class: "cites", "data-testid": "citations" })),
      (el.wf = h("div", { class: "waterfall", "data-testid": "waterfall" })));
    el.cache.hidden = true;
    el.text = "";
    el.tokens = 0;
    el.t0 = performance.now();
    el.tFirst = null;
    el.chunks = [];
    el.citations = [];
    return el;
  }

  function setBadge(badge, value) { badge.querySelector("strong").textContent = value; }

  // Renders the answer text with each [n] as a button that opens the cited chunk.
  function renderAnswer(lane) {
    clear(lane.answer);
    const parts = lane.text.split(/(\[\d+\])/);
    for (const p of parts) {
      const m = /^\[(\d+)\]$/.exec(p);
      if (m) {
        const n = Number(m[1]);
        lane.answer.appendChild(h("button", { class: "cite", type: "button", "aria-label": "Show source " + n,
          onclick: () => openSource(lane, n) }, p));
      } else if (p) lane.answer.appendChild(document.createTextNode(p));
    }
  }

  function sourceFor(lane, n) {
    const c = lane.citations.find((x) => x.number === n);
    if (c) return c;
    const ch = lane.chunks[n - 1];
    return ch ? Object.assign({ number: n }, ch) : null;
  }

  function openSource(lane, n) {
    const c = sourceFor(lane, n);
    if (!c) return;
    const dl = clear($("chunk-meta"));
    const rows = [["Citation", "[" + n + "]"], ["Document", c.document_name], ["Document id", c.document_id],
      ["Chunk id", c.chunk_id], ["Object key", c.object_key], ["Score", num(c.score, 4)]];
    for (const [k, v] of rows) { dl.appendChild(h("dt", { text: k })); dl.appendChild(h("dd", { text: v || "-" })); }
    $("chunk-title").textContent = c.document_name || "Source";
    $("chunk-text").textContent = c.text || (lane.chunks.find((x) => x.chunk_id === c.chunk_id) || {}).text || "";
    $("chunk-dialog").hidden = false;
    $("chunk-close").focus();
  }
  $("chunk-close").addEventListener("click", () => { $("chunk-dialog").hidden = true; });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("chunk-dialog").hidden = true; });

  function renderCitations(lane) {
    clear(lane.cites);
    for (const c of lane.citations) {
      lane.cites.appendChild(h("li", { value: c.number },
        h("button", { type: "button", onclick: () => openSource(lane, c.number) },
          c.document_name + "  ·  chunk " + String(c.chunk_id).slice(0, 12) + "  ·  " + c.object_key)));
    }
  }

  // The waterfall: retrieval stages one after another (fetch split into TTFB and transfer),
  // then the LLM's first token and the generation, each bar labelled with its measured time.
  function renderWaterfall(lane, done) {
    const stages = [];
    let t = 0;
    const rt = done.retrieval_timings;
    if (rt) {
      for (const s of rt.stages) {
        stages.push({ name: s.name + (s.backend ? " (" + s.backend + ")" : ""), start: t, dur: s.ms, ttfb: s.ttfb_ms });
        t += s.ms;
      }
    }
    const firstTokenAt = done.ttft_ms || t + done.llm_ttft_ms;
    stages.push({ name: "LLM first token", start: Math.max(t, firstTokenAt - done.llm_ttft_ms), dur: done.llm_ttft_ms });
    stages.push({ name: "generation", start: firstTokenAt, dur: done.generation_ms });
    const total = Math.max(...stages.map((s) => s.start + s.dur), 0.001);
    const W = 860, left = 170, rowH = 22, H = stages.length * rowH + 30;
    const x = (v) => left + (v / total) * (W - left - 70);
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "Per-stage timing waterfall" });
    stages.forEach((s, i) => {
      const y = 8 + i * rowH;
      g.appendChild(svg("text", { x: 4, y: y + 13 }, s.name));
      g.appendChild(svg("rect", { x: x(s.start), y, width: Math.max(1.5, x(s.start + s.dur) - x(s.start)), height: 15, rx: 3,
        fill: i >= stages.length - 2 ? "#2364c9" : "#d4202c", opacity: 0.85 }));
      if (s.ttfb) {
        g.appendChild(svg("rect", { x: x(s.start), y, width: Math.max(1, x(s.start + s.ttfb) - x(s.start)), height: 15, rx: 3,
          fill: "#7a0c12" }, svg("title", {}, "time to first byte " + ms(s.ttfb))));
      }
      g.appendChild(svg("text", { x: x(s.start + s.dur) + 4, y: y + 13 }, ms(s.dur) + (s.ttfb ? "  (TTFB " + ms(s.ttfb) + ")" : "")));
    });
    const sum = stages.reduce((a, s) => a + s.dur, 0);
    g.appendChild(svg("text", { x: 4, y: H - 6 },
      "sum of stages " + ms(sum) + "   ·   retrieval total " + (rt ? ms(rt.total_ms) : "-") + "   ·   first token at " + ms(firstTokenAt)));
    clear(lane.wf).appendChild(g);
    // The answer's trace id (docs/observability.md), linked when the gateway knows a trace viewer.
    if (done.trace_id) {
      const link = done.trace_url && /^https?:\/\//.test(done.trace_url)
        ? h("a", { href: done.trace_url, target: "_blank", rel: "noopener noreferrer", text: done.trace_id })
        : h("code", { text: done.trace_id });
      lane.wf.appendChild(h("p", { class: "trace-id", "data-testid": "trace-id" }, "trace ", link));
    }
  }

  function showSearched(lane, query, how) {
    clear(lane.searched).append("Searched: ", h("q", { text: query }), how ? " (" + how + ")" : "");
    lane.searched.hidden = false;
  }

  function onEvent(lane, name, d) {
    if (name === "retrieval") {
      if (d.rewrite && d.rewrite !== "none") {
        showSearched(lane, d.search_query, d.rewrite === "llm" ? "rewritten by the model from the conversation" :
          "rewritten from the conversation");
      }
      if (d.history_turns_trimmed > 0) {
        lane.note.textContent = "The " + d.history_turns_trimmed + " oldest turns were left out of the history to stay within its token budget.";
        lane.note.hidden = false;
      }
    } else if (name === "start") {
      lane.model.textContent = d.backend + " / " + d.model;
      if (d.retrieval) {
        lane.chunks = d.retrieval.chunks;
        if (d.retrieval.cache_hit) { lane.cache.hidden = false; lane.cache.textContent = "retrieval cache hit"; }
      }
      if (d.cache_hit) { lane.cache.hidden = false; lane.cache.textContent = "answer cache hit"; }
    } else if (name === "token") {
      if (lane.tFirst === null) {
        lane.tFirst = performance.now();
        setBadge(lane.ttft, ms(lane.tFirst - lane.t0));
      }
      lane.tokens++;
      lane.text += d.text;
      renderAnswer(lane);
      const secs = (performance.now() - lane.tFirst) / 1000;
      if (secs > 0.05) setBadge(lane.tps, num(lane.tokens / secs, 0));
    } else if (name === "done") {
      lane.text = d.text || lane.text;
      renderAnswer(lane);
      setBadge(lane.ttft, ms(d.ttft_ms));
      lane.ttft.title = "measured by the llm_gateway: request to first token, retrieval included";
      setBadge(lane.tps, num(d.tokens_per_s, 0));
      lane.ttft.classList.remove("live");
      lane.tps.classList.remove("live");
      lane.citations = d.citations || [];
      renderCitations(lane);
      renderWaterfall(lane, d);
      DDN.renderGuards(lane, d.guards);
      lane.root.dataset.state = "done";
      if (d.conversation_id && DDN.conv) DDN.conv.stored(d.conversation_id);
    } else if (name === "verify") {
      DDN.renderVerify(lane, d);
    } else if (name === "refused") {
      DDN.renderRefused(lane, d);
    } else if (name === "error") {
      lane.error.appendChild(DDN.errorBox(d.message + (d.reason ? " (" + d.reason + ")" : "")));
      lane.root.dataset.state = "error";
    }
  }

  // Side by side: what differs between the two backends on this same question, measured.
  function fetchStage(done) {
    const st = ((done.retrieval_timings || {}).stages || []).filter((x) => x.name.startsWith("fetch"));
    return st.length ? { ms: st.reduce((a, x) => a + x.ms, 0), ttfb: Math.max(...st.map((x) => x.ttfb_ms)) } : null;
  }
  function compareSummary(d) {
    const [a, b] = d.backends;
    const la = d.lanes[a] || {}, lb = d.lanes[b] || {};
    const card = h("div", { class: "card", style: "grid-column: 1 / -1", "data-testid": "compare-summary" });
    if (la.error || lb.error) {
      card.appendChild(h("div", { class: "muted", text: "One side failed, so there is nothing to compare." }));
      return card;
    }
    const fa = fetchStage(la), fb = fetchStage(lb);
    const faster = la.ttft_ms <= lb.ttft_ms ? a : b;
    card.appendChild(h("div", {}, h("strong", { text: faster }), " answered first: TTFT " + ms(la.ttft_ms) + " (" + a + ") vs " +
      ms(lb.ttft_ms) + " (" + b + "), a difference of " + ms(Math.abs(la.ttft_ms - lb.ttft_ms)) + "."));
    if (fa && fb) {
      card.appendChild(h("div", { class: "muted", text: "Chunk fetch: " + ms(fa.ms) + " (TTFB " + ms(fa.ttfb) + ") on " + a + " vs " +
        ms(fb.ms) + " (TTFB " + ms(fb.ttfb) + ") on " + b + ". Measured on this question, one sample each." }));
    }
    return card;
  }

  // A turn read back from a stored conversation: its question, answer, citations, what was
  // searched and its groundedness check, as the live answer showed them.
  function renderStoredTurn(turn) {
    const lane = makeLane(turn.backend || "answer", false, turn.question);
    lane.text = turn.answer;
    lane.citations = turn.citations || [];
    lane.model.textContent = (turn.backend || "-") + " / " + (turn.model || "-");
    lane.ttft.hidden = true;
    lane.tps.hidden = true;
    lane.cache.hidden = false;
    lane.cache.textContent = "from the conversation history";
    if (turn.search_query && turn.search_query !== turn.question) showSearched(lane, turn.search_query, "rewritten from the conversation");
    renderAnswer(lane);
    renderCitations(lane);
    if (turn.verify) DDN.renderVerify(lane, turn.verify);
    lane.root.dataset.state = "done";
    $("lanes").appendChild(lane.root);
  }
  DDN.chat = { renderStoredTurn, clear: () => clear($("lanes")) };

  $("ask-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const q = $("q").value.trim();
    if (!q) return;
    if (abort) abort.abort();
    abort = new AbortController();
    const lanesEl = $("lanes");
    const params = new URLSearchParams({ q, collection: $("chat-collection").value || "default", top_k: $("chat-topk").value || "5" });
    const model = models[Number($("chat-model").value)];
    if ($("chat-model").value !== "" && model) { params.set("llm_backend", model.backend); params.set("model", model.id); }
    const temp = Number($("chat-temp").value);
    if (temp > 0 && temp <= 2) params.set("temperature", String(temp));
    if (!$("chat-cache").checked) params.set("no_cache", "1");
    const backend = $("chat-backend").value;
    const lanes = {};
    const emulated = (name) => (DDN.backends.find((b) => b.name === name) || {}).emulated;
    $("ask-btn").disabled = true;
    if (backend === "__compare__") {
      const a = $("chat-backend-a").value, b = $("chat-backend-b").value;
      if (a === b) { lanesEl.appendChild(DDN.errorBox("Pick two different backends to compare.")); $("ask-btn").disabled = false; return; }
      params.set("compare", a + "," + b);
      const group = h("div", { class: "turn-group" });
      for (const n of [a, b]) { lanes[n] = makeLane(n, emulated(n), q + "  (compare, not part of the conversation)"); group.appendChild(lanes[n].root); }
      lanesEl.appendChild(group);
    } else {
      if (backend) params.set("backend", backend);
      const cid = DDN.conv ? await DDN.conv.ensure(q, $("chat-collection").value || "default") : "";
      if (cid) params.set("conversation", cid);
      lanes[""] = makeLane(backend || "default backend", emulated(backend), q);
      lanesEl.appendChild(lanes[""].root);
    }
    Object.values(lanes)[0].root.scrollIntoView({ block: "nearest" });
    $("q").value = "";
    $("stop-btn").hidden = false;
    try {
      await DDN.sse("/api/rag/stream?" + params, (name, d) => {
        if (params.has("compare")) {
          if (name === "done") { lanesEl.prepend(compareSummary(d)); return; }
          if (name === "compare") return;
          if (name === "error" && !d.lane) {  // the whole stream failed (for example a shutdown)
            for (const l of Object.values(lanes)) if (!l.root.dataset.state) onEvent(l, "error", d);
            return;
          }
          const lane = lanes[d.lane];
          if (!lane) return;
          onEvent(lane, name === "lane_done" ? "done" : name === "lane_error" ? "error" : name, d);
        } else onEvent(lanes[""], name, d);
      }, { signal: abort.signal, retries: 0 });
    } catch (err) {
      if (!abort.signal.aborted) {
        const lane = Object.values(lanes)[0];
        lane.error.appendChild(DDN.errorBox(err.message));
        lane.root.dataset.state = "error";
      }
    } finally {
      $("ask-btn").disabled = false;
      $("stop-btn").hidden = true;
    }
  });
  $("stop-btn").addEventListener("click", () => abort && abort.abort());
})();
