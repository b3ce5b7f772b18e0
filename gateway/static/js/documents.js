"use strict";
// Documents: drag-and-drop upload (streamed by the browser as multipart), a live ingestion panel
// (chunks x/N, embeddings/s, writes/s and average latency per backend), the all-jobs dashboard,
// and the document list with delete.
(function documents() {
  const { h, $, clear, num, ms, bytes } = DDN;
  let jobsAbort = null;

  document.addEventListener("backends", (e) => {
    const fs = $("doc-targets");
    for (const el of [...fs.querySelectorAll("label")]) el.remove();
    for (const b of e.detail.backends) {
      fs.appendChild(h("label", {}, h("input", { type: "checkbox", value: b.name, checked: b.is_default ? true : null }),
        b.name + (b.emulated ? " (emulated)" : "")));
    }
  });

  const drop = $("drop"), input = $("file-input");
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) upload([...e.dataTransfer.files]);
  });
  input.addEventListener("change", () => { if (input.files.length) upload([...input.files]); input.value = ""; });

  async function upload(files) {
    const msg = clear($("upload-msg"));
    const collection = $("doc-collection").value.trim() || "default";
    const targets = [...$("doc-targets").querySelectorAll("input:checked")].map((i) => i.value);
    const clearFirst = $("doc-clear").checked;
    if (clearFirst && !(await DDN.confirmClearCollection(collection))) { msg.textContent = "Upload cancelled; nothing was cleared."; return; }
    const fd = new FormData();
    fd.append("collection", collection);
    for (const f of files) fd.append("file", f, f.name);
    msg.appendChild(h("div", { class: "muted", text: "Uploading " + files.length + " file(s), " + bytes(files.reduce((a, f) => a + f.size, 0)) + "..." }));
    const q = new URLSearchParams();
    if (targets.length) q.set("backends", targets.join(","));
    if (clearFirst) q.set("clear", "1");
    const qs = q.toString() ? "?" + q : "";
    try {
      const r = await DDN.api("POST", "/api/documents" + qs, fd);
      clear(msg).appendChild(h("div", {}, DDN.icon("check"), " Stored " + r.documents.map((d) => d.name).join(", ") + " in " + r.collection + "; ingestion job " + r.job_id + " started."));
      watchJob(r.job_id);
    } catch (err) {
      clear(msg).appendChild(DDN.errorBox(err.message));
    }
  }

  function renderJob(panel, job) {
    clear(panel);
    const pct = Math.round((job.progress || 0) * 100);
    panel.appendChild(h("div", { class: "card-head" }, h("strong", { text: "Job " + job.job_id }), DDN.state(job.state),
      h("span", { class: "muted small", text: "stage: " + job.stage })));
    panel.appendChild(h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct),
      "aria-label": "Ingestion progress" }, h("span", { style: "width:" + pct + "%" })));
    panel.appendChild(h("div", { class: "stats" },
      h("div", { class: "stat", "data-testid": "chunks-progress" }, h("b", { text: job.chunks_done + " / " + (job.chunks_total || "?") }), "chunks (" + pct + "%)"),
      h("div", { class: "stat" }, h("b", { text: job.documents_done + " / " + job.documents_total }), "documents"),
      h("div", { class: "stat" }, h("b", { text: num(job.embeddings_per_s, 1) }), "embeddings/s"),
      h("div", { class: "stat" }, h("b", { text: job.eta_s >= 0 && !job.terminal ? num(job.eta_s, 0) + " s" : "-" }), "ETA")));
    if (job.backends && job.backends.length) {
      const t = h("table", { class: "tbl" }, h("thead", {}, h("tr", {}, h("th", { text: "Backend" }), h("th", { text: "Objects written" }),
        h("th", { text: "Writes/s" }), h("th", { text: "Avg latency" }), h("th", { text: "p50" }))));
      const tb = h("tbody");
      for (const b of job.backends) {
        tb.appendChild(h("tr", {}, h("td", { text: b.backend }), h("td", { text: num(b.objects_written, 0) }),
          h("td", { text: num(b.write_ops_per_s, 1) }), h("td", { text: ms(b.write_avg_ns / 1e6) }), h("td", { text: ms(b.write_p50_ns / 1e6) })));
      }
      t.appendChild(tb);
      panel.appendChild(t);
    }
    for (const fe of job.file_errors || []) panel.appendChild(DDN.errorBox(fe.name + ": " + fe.reason));
    if (job.error) panel.appendChild(DDN.errorBox(job.error));
  }

  async function watchJob(jobId) {
    const panel = $("ingest-panel");
    panel.dataset.state = "running";
    try {
      await DDN.sse("/api/ingestion/stream?job_id=" + encodeURIComponent(jobId), (name, d) => {
        if (d.job) renderJob(panel, d.job);
        if (name === "done") panel.dataset.state = "done";
        if (name === "error") { panel.dataset.state = "error"; if (!d.job) panel.appendChild(DDN.errorBox(d.message)); }
      }, { retries: 5 });
    } catch (err) {
      panel.dataset.state = "error";
      panel.appendChild(DDN.errorBox(err.message));
    }
    if (panel.dataset.state !== "running") {
      try {
        const r = await DDN.api("GET", "/api/ingestion/jobs/" + encodeURIComponent(jobId) + "?files=1");
        panel.appendChild(DDN.jobSummary(r.job));
      } catch (err) { panel.appendChild(DDN.errorBox(err.message)); }
    }
    loadDocs();
    DDN.loadCollections().catch(() => {});
  }
  DDN.watchJob = watchJob;

  const jobs = new Map();
  function renderJobs() {
    const el = clear($("jobs-list"));
    const list = [...jobs.values()].sort((a, b) => b.created_unix_ns - a.created_unix_ns).slice(0, 30);
    if (!list.length) { el.appendChild(h("div", { class: "muted", text: "No jobs yet." })); return; }
    const t = h("table", { class: "tbl" });
    const tb = h("tbody");
    for (const j of list) {
      tb.appendChild(h("tr", {}, h("td", {}, h("button", { class: "ghost", type: "button", onclick: () => watchJob(j.job_id), text: j.job_id })),
        h("td", { text: j.collection }), h("td", {}, DDN.state(j.state)),
        h("td", { text: j.chunks_done + "/" + j.chunks_total + " chunks" }),
        h("td", {}, j.terminal ? null : h("button", { class: "ghost danger", type: "button", onclick: () => cancelJob(j.job_id) }, DDN.icon("stop"), "Cancel"))));
    }
    t.appendChild(tb);
    el.appendChild(t);
  }
  async function cancelJob(id) {
    try { const r = await DDN.api("POST", "/api/ingestion/jobs/" + encodeURIComponent(id) + "/cancel"); jobs.set(id, r.job); renderJobs(); }
    catch (err) { $("upload-msg").appendChild(DDN.errorBox(err.message)); }
  }
  // The all-jobs dashboard stays open while the tab is shown; it reconnects after a drop or a
  // gateway restart (which ends streams with SHUTTING_DOWN), and stops when the tab is left.
  async function followAllJobs() {
    if (jobsAbort) return;
    const ctl = (jobsAbort = new AbortController());
    while (!ctl.signal.aborted) {
      try {
        await DDN.sse("/api/ingestion/stream/all?interval=1", (name, d) => {
          if (name === "snapshot") { jobs.clear(); for (const j of d.jobs) jobs.set(j.job_id, j); renderJobs(); }
          else if (name === "job") { jobs.set(d.job_id, d); renderJobs(); }
        }, { signal: ctl.signal, retries: 1000 });
      } catch (e) {
        if (e instanceof DDN.ApiError) break; // refused (for example 401): do not hammer
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
    if (jobsAbort === ctl) jobsAbort = null;
  }

  async function loadDocs() {
    const collection = $("doc-collection").value.trim() || "default";
    const tb = clear($("docs-table").querySelector("tbody"));
    try {
      const r = await DDN.api("GET", "/api/documents?collection=" + encodeURIComponent(collection));
      $("doc-count").textContent = r.total + " document(s) in " + collection;
      for (const d of r.documents) {
        tb.appendChild(h("tr", {}, h("td", { text: d.name }), h("td", { text: num(d.chunks, 0) }), h("td", { text: bytes(d.size_bytes) }),
          h("td", { text: DDN.date(d.ingested_unix_ns) }),
          h("td", {}, h("button", { class: "ghost danger", type: "button", "aria-label": "Delete " + d.name, onclick: async () => {
            if (!confirm("Delete " + d.name + " and its chunks?")) return;
            try { await DDN.api("DELETE", "/api/documents/" + encodeURIComponent(d.document_id) + "?collection=" + encodeURIComponent(collection)); loadDocs(); }
            catch (err) { $("upload-msg").appendChild(DDN.errorBox(err.message)); }
          } }, DDN.icon("trash"), "Delete"))));
      }
      if (!r.documents.length) tb.appendChild(h("tr", {}, h("td", { colspan: "5", class: "muted", text: "No documents yet: drop some files above." })));
    } catch (err) {
      $("doc-count").textContent = "";
      tb.appendChild(h("tr", {}, h("td", { colspan: "5" }, DDN.errorBox(err.message))));
    }
  }
  $("docs-refresh").addEventListener("click", loadDocs);
  $("doc-collection").addEventListener("change", loadDocs);
  document.addEventListener("tab", (e) => {
    if (e.detail === "documents") { loadDocs(); followAllJobs(); }
    else if (jobsAbort) { jobsAbort.abort(); jobsAbort = null; }
  });
})();
