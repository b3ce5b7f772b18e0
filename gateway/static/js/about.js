"use strict";
// The About tab's architecture diagram, drawn as inline SVG from what is running: the services
// the gateway's health check reports (each box green when serving, red when not, with its check
// latency) and the storage backends configured now. A service the layout does not know yet still
// gets a box (on the bottom row), so the picture never hides a part of the system.
(function about() {
  const { svg, $, clear } = DDN;
  const W = 1000, BW = 150, BH = 46;
  // Where each known service sits, and who calls whom (DESIGN.md, "Who calls whom").
  const PLACE = {
    browser: [10, 150], gateway: [215, 150], llm_gateway: [425, 50], retriever: [425, 170], embedder: [640, 120],
    storage: [640, 250], llm: [640, 20],
  };
  const EDGES = [
    ["browser", "gateway", "HTTP/SSE"], ["gateway", "llm_gateway", "gRPC"], ["gateway", "retriever", "gRPC"],
    ["gateway", "storage", "gRPC"], ["llm_gateway", "retriever", "gRPC"], ["llm_gateway", "llm", "OpenAI HTTP"],
    ["retriever", "embedder", "gRPC"], ["retriever", "storage", "gRPC"],
  ];

  function box(g, x, y, title, sub, cls, tip) {
    const node = svg("g", { class: "node " + cls, "data-node": title, transform: "translate(" + x + "," + y + ")" },
      svg("title", {}, tip || title),
      svg("rect", { width: BW, height: BH, rx: 8 }),
      svg("text", { x: BW / 2, y: 19, "text-anchor": "middle", class: "node-title" }, title),
      svg("text", { x: BW / 2, y: 36, "text-anchor": "middle", class: "node-sub" }, sub));
    g.appendChild(node);
  }
  function edge(g, a, b, label) {
    const [x1, y1] = [a[0] + BW, a[1] + BH / 2], [x2, y2] = [b[0], b[1] + BH / 2];
    const back = x2 <= a[0]; // same column: go down instead
    const d = back ? "M" + (a[0] + BW / 2) + " " + (a[1] + BH) + " L" + (b[0] + BW / 2) + " " + b[1]
      : "M" + x1 + " " + y1 + " C" + (x1 + 30) + " " + y1 + "," + (x2 - 30) + " " + y2 + "," + x2 + " " + y2;
    g.appendChild(svg("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
    const mx = back ? a[0] + BW / 2 + 6 : (x1 + x2) / 2, my = back ? (a[1] + BH + b[1]) / 2 : Math.min(y1, y2) - 6;
    g.appendChild(svg("text", { x: mx, y: my, class: "edge-label", "text-anchor": back ? "start" : "middle" }, label));
  }

  async function draw() {
    const out = clear($("about-diagram"));
    let health = null, backends = [];
    try { health = await (await fetch("/api/health", { headers: DDN.headers() })).json(); } catch (e) { health = null; }
    try { backends = (await DDN.api("GET", "/api/config/backends")).backends; } catch (e) { backends = []; }
    if (!health || !health.services) { out.appendChild(DDN.errorBox("The gateway did not answer its health check, so the diagram cannot be drawn.")); return; }
    const services = Object.values(health.services);
    const spare = services.filter((s) => !PLACE[s.service]);
    const H = Math.max(330, 250 + backends.length * 56, spare.length ? 400 : 0);
    const g = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", "data-testid": "architecture-svg" },
      svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M0 0 L10 5 L0 10 z", class: "arrow" }))));
    const at = { browser: PLACE.browser, gateway: PLACE.gateway, llm: PLACE.llm };
    for (const s of services) at[s.service] = PLACE[s.service] || [20 + spare.indexOf(s) * (BW + 20), H - BH - 10];
    backends.forEach((b, i) => { at["backend:" + b.name] = [845, 200 + i * 56]; });
    for (const [a, b, label] of EDGES) if (at[a] && at[b]) edge(g, at[a], at[b], label);
    for (const b of backends) if (at.storage) edge(g, at.storage, at["backend:" + b.name], "S3");
    box(g, ...at.browser, "browser", "this page", "ok", "you");
    box(g, ...at.gateway, "gateway", "HTTP :8080", "ok", "the gateway answered this page");
    box(g, ...at.llm, "LLM server", "vLLM / NIM / Ollama", "ext", "an OpenAI-compatible server, or the local model");
    for (const s of services) {
      const sub = s.serving ? "serving" + (s.latency_ms !== undefined ? ", " + DDN.ms(s.latency_ms) : "") : s.status.replace(/_/g, " ");
      box(g, ...at[s.service], s.service, sub, s.serving ? "ok" : "bad", s.message || s.service + " is serving");
    }
    for (const b of backends) {
      box(g, ...at["backend:" + b.name], b.name, (b.label || b.kind) + (b.emulated ? " (emulated)" : ""), "store" + (b.emulated ? " emu" : ""),
        b.name + ": bucket " + b.bucket + (b.endpoint ? " at " + b.endpoint : ""));
    }
    out.appendChild(g);
  }
  document.addEventListener("tab", (e) => { if (e.detail === "about") draw(); });
})();
