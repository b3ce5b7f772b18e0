"use strict";
// The summary of an ended ingestion job: files, bytes, chunks, time per stage (fetch, parse,
// chunk, embed, write, index) as bars, the embedder's device and throughput, and one row per file
// with its stage times and error. Loaded from GET /api/ingestion/jobs/{id}?files=1.
(function jobSummary() {
  const { h, num, ms, bytes } = DDN;
  const STAGES = [
    ["fetch", "fetch", "reading sources from storage (summed over files)"],
    ["parse", "parse", "extracting text (summed over files)"],
    ["chunk", "chunk", "splitting into chunks (summed over files)"],
    ["embed", "embed", "wall time with an embedding call in flight"],
    ["write", "write", "wall time writing chunk objects to the target backends"],
    ["index", "index", "committing the index version"],
  ];
  DDN.jobSummary = function render(job) {
    const took = job.updated_unix_ns && job.created_unix_ns ? (job.updated_unix_ns - job.created_unix_ns) / 1e9 : 0;
    const out = h("div", { class: "job-summary", "data-testid": "job-summary" }, h("h3", { text: "Summary" }));
    out.appendChild(h("div", { class: "stats" },
      h("div", { class: "stat" }, h("b", { text: num(job.documents_total, 0) }), "files"),
      h("div", { class: "stat" }, h("b", { text: bytes(job.bytes_total) }), "read"),
      h("div", { class: "stat" }, h("b", { text: num(job.chunks_done, 0) }), "chunks"),
      h("div", { class: "stat" }, h("b", { text: took ? num(took, 2) + " s" : "-" }), "total"),
      h("div", { class: "stat" }, h("b", { text: num(job.embeddings_per_s, 1) }), "chunks/s embedded"),
      h("div", { class: "stat" }, h("b", { text: took ? bytes(Math.round(job.bytes_total / took)) + "/s" : "-" }), "ingested"),
      h("div", { class: "stat", "data-testid": "job-device" }, h("b", { text: job.embedder_device || "unknown" }), "embedder device")));
    const vals = STAGES.map(([k]) => (job[k + "_ns"] || 0) / 1e6);
    const max = Math.max(...vals, 0.001);
    const bars = h("div", { class: "stage-bars", "data-testid": "stage-bars" });
    STAGES.forEach(([k, label, tip], i) => {
      bars.appendChild(h("div", { class: "hbar", title: tip, "data-stage": k },
        h("div", { class: "hbar-head" }, h("span", { text: label }), h("span", { class: "muted", text: ms(vals[i]) })),
        h("div", { class: "bar" }, h("span", { style: "width:" + Math.round((vals[i] / max) * 100) + "%" }))));
    });
    out.appendChild(bars);
    if (job.files && job.files.length) {
      const tb = h("tbody");
      for (const f of job.files) {
        tb.appendChild(h("tr", { "data-file": f.name }, h("td", { text: f.name }), h("td", {}, DDN.state(f.status)),
          h("td", { text: bytes(f.size_bytes) }), h("td", { text: num(f.chunks, 0) }),
          ...["fetch", "parse", "chunk", "embed", "write"].map((k) => h("td", { text: ms(f[k + "_ns"] / 1e6) })),
          h("td", { class: "error-text", text: f.reason || "" })));
      }
      out.appendChild(h("table", { class: "tbl", "data-testid": "job-files" }, h("thead", {}, h("tr", {},
        ["File", "Status", "Size", "Chunks", "Fetch", "Parse", "Chunk", "Embed", "Write", "Error"].map((t) => h("th", { text: t })))), tb));
    }
    return out;
  };
})();
