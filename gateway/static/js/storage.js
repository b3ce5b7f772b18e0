"use strict";
// The Storage tab: collections with "Clear" (a confirmation names what goes), and the bucket
// browser: objects by prefix with size and time, page by page, one-click download, and clearing a
// prefix after a confirmation that counts its objects. Everything goes through the gateway's API,
// which goes through the storage service.
(function storage() {
  const { h, $, clear, num, bytes } = DDN;
  let token = "";
  let shown = 0;

  // --- collections ------------------------------------------------------------------------------
  function renderCollections(cols) {
    const tb = clear($("cols-table").querySelector("tbody"));
    for (const c of cols) {
      tb.appendChild(h("tr", { "data-collection": c.name }, h("td", {}, h("strong", { text: c.name })),
        h("td", { text: num(c.documents, 0) }), h("td", { text: num(c.chunks, 0) }),
        h("td", { class: "mono small", text: c.version ? c.version.slice(0, 16) : "-" }), h("td", { text: DDN.date(c.updated_unix_ns) }),
        h("td", {}, h("button", { class: "ghost", type: "button", onclick: () => browse("docs/" + c.name + "/") }, DDN.icon("folder"), "Files"),
          h("button", { class: "ghost danger", type: "button", "aria-label": "Clear collection " + c.name, onclick: () => clearCollection(c.name) },
            DDN.icon("trash"), "Clear"))));
    }
    if (!cols.length) tb.appendChild(h("tr", {}, h("td", { colspan: "6", class: "muted", text: "No collections yet." })));
  }
  document.addEventListener("collections", (e) => renderCollections(e.detail));
  async function clearCollection(name) {
    const msg = clear($("cols-msg"));
    try {
      if (!(await DDN.confirmClearCollection(name))) return;
      const r = await DDN.api("DELETE", "/api/collections/" + encodeURIComponent(name));
      msg.appendChild(h("div", { "data-testid": "cleared" }, DDN.icon("check"), " Cleared " + r.cleared + ": " + num(r.documents, 0) + " document(s), " +
        num(r.chunks, 0) + " chunk(s), " + num(r.objects_deleted, 0) + " object(s) deleted" +
        (r.jobs_cancelled ? ", " + r.jobs_cancelled + " running job(s) cancelled" : "") + "."));
    } catch (err) { msg.appendChild(DDN.errorBox(err.message)); }
    DDN.loadCollections().catch(() => {});
    if (!$("panel-storage").hidden && $("obj-prefix").value) list(false);
  }
  $("cols-refresh").addEventListener("click", () => DDN.loadCollections().catch((err) => $("cols-msg").appendChild(DDN.errorBox(err.message))));

  // --- bucket browser ------------------------------------------------------------------------------
  document.addEventListener("backends", (e) => {
    const sel = $("obj-backend"), keep = sel.value;
    clear(sel).appendChild(h("option", { value: "", text: "default" }));
    for (const b of e.detail.backends) if (!b.is_default) sel.appendChild(h("option", { value: b.name, text: b.name + (b.emulated ? " (emulated)" : "") }));
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : "";
  });
  function query(extra) {
    const q = new URLSearchParams({ prefix: $("obj-prefix").value, ...extra });
    if ($("obj-backend").value) q.set("backend", $("obj-backend").value);
    return q;
  }
  function crumbs(prefix) {
    const nav = clear($("obj-crumbs"));
    nav.appendChild(h("button", { type: "button", class: "link", onclick: () => browse(""), text: "bucket" }));
    let acc = "";
    for (const seg of prefix.split("/").filter(Boolean)) {
      acc += seg + "/";
      const to = acc;
      nav.append(" / ", h("button", { type: "button", class: "link", onclick: () => browse(to), text: seg }));
    }
  }
  function browse(prefix) {
    $("obj-prefix").value = prefix;
    if ($("panel-storage").hidden) DDN.selectTab("storage");
    list(false);
  }
  async function list(more) {
    const tb = $("obj-table").querySelector("tbody");
    const msg = clear($("obj-msg"));
    if (!more) { clear(tb); token = ""; shown = 0; }
    const prefix = $("obj-prefix").value;
    crumbs(prefix);
    $("obj-table").dataset.state = "loading";
    try {
      const r = await DDN.api("GET", "/api/objects?" + query(more && token ? { page_token: token } : {}));
      if (!more) {
        for (const f of r.folders) {
          tb.appendChild(h("tr", { class: "folder" }, h("td", {}, h("button", { type: "button", class: "link", onclick: () => browse(f) },
            DDN.icon("folder"), f.slice(prefix.length))), h("td", { class: "muted", text: "folder" }), h("td"), h("td")));
        }
      }
      for (const o of r.objects) {
        tb.appendChild(h("tr", { "data-key": o.key }, h("td", { class: "mono", text: o.key.slice(prefix.length) || o.key, title: o.key }),
          h("td", { text: bytes(o.size_bytes) }), h("td", { text: DDN.date(o.last_modified_unix_ns) }),
          h("td", {}, h("button", { class: "ghost", type: "button", "aria-label": "Download " + o.key, onclick: () => download(o.key) },
            DDN.icon("download"), "Download"))));
      }
      shown += r.objects.length;
      token = r.next_page_token;
      $("obj-more").hidden = !token;
      $("obj-count").textContent = shown + " object(s) shown" + (token ? "; more on the next page" : "");
      if (!shown && !r.folders.length) tb.appendChild(h("tr", {}, h("td", { colspan: "4", class: "muted", text: "No objects under \u201c" + (prefix || "(bucket root)") + "\u201d." })));
      $("obj-table").dataset.state = "done";
    } catch (err) {
      msg.appendChild(DDN.errorBox(err.message));
      $("obj-table").dataset.state = "error";
    }
  }
  async function download(key) {
    try { await DDN.download("/api/objects/download?" + query({ key }), key.split("/").pop()); }
    catch (err) { $("obj-msg").appendChild(DDN.errorBox(err.message)); }
  }
  $("obj-form").addEventListener("submit", (e) => { e.preventDefault(); list(false); });
  $("obj-more").addEventListener("click", () => list(true));
  $("obj-clear").addEventListener("click", async () => {
    const msg = clear($("obj-msg"));
    const prefix = $("obj-prefix").value;
    try {
      const s = await DDN.api("GET", "/api/objects/summary?" + query({}));
      if (s.managed) { msg.appendChild(DDN.errorBox("\u201c" + prefix + "\u201d holds " + s.managed + "; it is not cleared object by object. Clear a collection in the table above instead.")); return; }
      if (!s.objects) { msg.textContent = "Nothing to clear under \u201c" + prefix + "\u201d."; return; }
      const ok = await DDN.confirmBox("Clear \u201c" + prefix + "\u201d?", [
        "This deletes " + (s.complete ? "" : "at least ") + num(s.objects, 0) + " object(s), " + bytes(s.size_bytes) + ", under \u201c" + prefix +
          "\u201d in backend " + ($("obj-backend").value || "default") + ".", "This cannot be undone."], "Delete " + num(s.objects, 0) + " object(s)");
      if (!ok) return;
      const r = await DDN.api("DELETE", "/api/objects?" + query({}));
      await list(false); // (clears the message area first)
      msg.appendChild(h("div", {}, DDN.icon("check"), " Deleted " + num(r.deleted, 0) + " object(s) under " + r.prefix + "."));
    } catch (err) { msg.appendChild(DDN.errorBox(err.message)); }
  });
  DDN.browse = browse;

  document.addEventListener("tab", (e) => {
    if (e.detail === "storage") { DDN.loadCollections().catch((err) => $("cols-msg").appendChild(DDN.errorBox(err.message))); list(false); }
  });
})();
