"use strict";
// Small pieces shared by several tabs: the confirmation dialog, collection pickers (a <select>
// filled from /api/collections wherever a collection is chosen), the embedder's device badge, the
// accepted upload formats (from the gateway's one list), and "Test all connections".
(function extras() {
  const { h, $, clear, num } = DDN;

  // --- confirmation dialog: says what goes; resolves true only on the explicit button ----------
  DDN.confirmBox = function confirmBox(title, lines, action) {
    const dlg = $("confirm-dialog");
    $("confirm-title").textContent = title;
    const text = clear($("confirm-text"));
    for (const line of lines) text.appendChild(h("p", { text: line }));
    const ok = $("confirm-ok"), cancel = $("confirm-cancel");
    ok.textContent = action;
    ok.classList.add("danger-fill");
    dlg.hidden = false;
    cancel.focus();
    return new Promise((resolve) => {
      function done(value) {
        dlg.hidden = true;
        ok.removeEventListener("click", yes);
        cancel.removeEventListener("click", no);
        dlg.removeEventListener("keydown", esc);
        resolve(value);
      }
      const yes = () => done(true), no = () => done(false);
      const esc = (e) => { if (e.key === "Escape") done(false); };
      ok.addEventListener("click", yes);
      cancel.addEventListener("click", no);
      dlg.addEventListener("keydown", esc);
    });
  };

  // Asks before a collection is cleared, naming its documents and chunks (GET /api/collections/{name}).
  DDN.confirmClearCollection = async function confirmClearCollection(name) {
    let c = null;
    try { c = (await DDN.api("GET", "/api/collections/" + encodeURIComponent(name))).collection; }
    catch (err) { if (err.status !== 404) throw err; }
    if (!c) return true; // nothing there yet: nothing to lose
    return DDN.confirmBox("Clear collection " + name + "?", [
      "This deletes " + num(c.documents, 0) + " document(s) and " + num(c.chunks, 0) + " chunk(s) of \u201c" + name +
        "\u201d: their stored files, the chunk objects, the index and the collection's ingestion job records.",
      "Every retriever replica stops serving it. This cannot be undone.",
    ], "Clear " + name);
  };

  // --- collection pickers --------------------------------------------------------------------
  const NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;
  DDN.collections = [];
  function fillPicker(sel) {
    const keep = sel.value || "default";
    clear(sel);
    const names = DDN.collections.map((c) => c.name);
    if (!names.includes(keep)) names.push(keep); // a name chosen (or new) but not ingested yet
    for (const n of names.sort()) {
      const c = DDN.collections.find((x) => x.name === n);
      sel.appendChild(h("option", { value: n, text: c ? n + " (" + num(c.documents, 0) + " docs)" : n }));
    }
    if (sel.hasAttribute("data-allow-new")) sel.appendChild(h("option", { value: "\u0000new", text: "New collection\u2026" }));
    sel.value = keep;
    sel.dataset.last = keep;
  }
  DDN.loadCollections = async function loadCollections() {
    const r = await DDN.api("GET", "/api/collections");
    DDN.collections = r.collections;
    for (const sel of document.querySelectorAll("select[data-collection-picker]")) fillPicker(sel);
    document.dispatchEvent(new CustomEvent("collections", { detail: r.collections }));
    return r.collections;
  };
  for (const sel of document.querySelectorAll("select[data-collection-picker]")) {
    sel.addEventListener("change", (e) => {
      if (sel.value !== "\u0000new") { sel.dataset.last = sel.value; return; }
      e.stopImmediatePropagation();
      const name = (prompt("Name of the new collection (a-z, 0-9, '_' or '-'):") || "").trim();
      if (!NAME.test(name)) {
        sel.value = sel.dataset.last || "default";
        if (name) alert("\u201c" + name + "\u201d is not a valid collection name: use 1-63 characters a-z, 0-9, '_' or '-', starting with a letter or digit.");
        return;
      }
      sel.insertBefore(h("option", { value: name, text: name + " (new)" }), sel.lastChild);
      sel.value = sel.dataset.last = name;
      sel.dispatchEvent(new Event("change"));
    }, true);
  }

  // --- the embedder's device badge ---------------------------------------------------------------
  async function deviceBadge() {
    const badge = $("device-badge");
    try {
      const e = await DDN.api("GET", "/api/embedder");
      const gpu = (e.device || "").startsWith("cuda");
      clear(badge).append(DDN.icon("chip"), (gpu ? "GPU " : "CPU ") + (e.device_name || e.device) + " \u00b7 " + e.model_id.split("/").pop());
      badge.title = "embedder: " + [e.model_id, e.device, e.device_name, e.dtype, e.backend].filter(Boolean).join(", ");
      badge.dataset.device = gpu ? "gpu" : "cpu";
      badge.hidden = false;
    } catch (err) {
      badge.hidden = true; // loading or no access: the health pill says why
    }
  }

  // --- accepted formats (the gateway's one list) ----------------------------------------------
  async function formats() {
    try {
      const r = await DDN.api("GET", "/api/documents/formats");
      $("accepted-formats").textContent = r.accepted.join(", ") + " (up to " + DDN.bytes(r.max_upload_bytes) + " each)";
      $("file-input").setAttribute("accept", r.accepted.map((x) => "." + x).join(",") + ",.htm,.markdown");
    } catch (err) { /* the static list stays */ }
  }

  // --- Configuration: test every backend at once (each row's own Test button) -------------------
  $("be-test-all").addEventListener("click", () => {
    for (const b of $("be-table").querySelectorAll("tbody button")) if (b.textContent.trim() === "Test") b.click();
  });

  function refresh() {
    deviceBadge();
    formats();
    DDN.loadCollections().catch(() => {});
  }
  window.addEventListener("DOMContentLoaded", refresh);
  document.addEventListener("auth", refresh);
  document.addEventListener("tab", (e) => { if (["chat", "documents", "watch", "storage", "ab"].includes(e.detail)) DDN.loadCollections().catch(() => {}); });
})();
