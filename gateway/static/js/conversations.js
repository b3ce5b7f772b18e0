"use strict";
// Conversations: the list (reopen, rename, export as JSON, delete), "New chat", and the current
// conversation, whose id is kept in localStorage so it survives a reload (its turns come back from
// the llm_gateway, which stores them in object storage). chat.js asks DDN.conv.ensure() for the
// conversation to put a question in, and tells DDN.conv.stored() when a turn was saved.
(function conversations() {
  const { h, $, clear } = DDN;
  const KEY = "ddnrag-conversation";
  let current = localStorage.getItem(KEY) || "";
  let available = true;

  function note(text) { $("conv-msg").textContent = text || ""; }

  function setCurrent(id, title) {
    current = id || "";
    if (current) localStorage.setItem(KEY, current); else localStorage.removeItem(KEY);
    $("conv-title").textContent = title || (current ? "Untitled conversation" : "New conversation");
    for (const li of $("conv-list").children) li.classList.toggle("current", li.dataset.id === current);
  }

  async function refresh() {
    let items;
    try {
      items = (await DDN.api("GET", "/api/conversations")).conversations;
      available = true;
    } catch (e) {
      available = e.status !== 501 && e.status !== 503;
      note("Conversations are not available: " + e.message);
      return;
    }
    const list = clear($("conv-list"));
    if (!items.length) list.appendChild(h("li", { class: "muted small", text: "No conversations yet." }));
    for (const c of items) list.appendChild(item(c));
    for (const li of list.children) li.classList.toggle("current", li.dataset.id === current);
  }

  function item(c) {
    const li = h("li", { "data-id": c.id, "data-testid": "conversation" });
    const title = c.title || "Untitled conversation";
    const open = h("button", { type: "button", class: "conv-open", title: "Reopen this conversation", onclick: () => openConv(c.id) },
      title, h("div", { class: "conv-meta", text: c.turn_count + (c.turn_count === 1 ? " turn" : " turns") + " - " + DDN.date(c.updated_unix_ns) }));
    const del = h("button", { type: "button", class: "danger", "aria-label": "Delete " + title, text: "Delete" });
    del.addEventListener("click", async () => {
      if (del.dataset.armed !== "1") {
        del.dataset.armed = "1";
        del.textContent = "Confirm delete";
        del.setAttribute("aria-label", "Confirm delete " + title);
        return;
      }
      try {
        await DDN.api("DELETE", "/api/conversations/" + encodeURIComponent(c.id));
        if (c.id === current) newChat();
        note("Deleted \"" + title + "\".");
      } catch (e) { note(e.message); }
      refresh();
    });
    const actions = h("div", { class: "conv-actions" },
      h("button", { type: "button", "aria-label": "Rename " + title, text: "Rename", onclick: () => rename(li, c) }),
      h("button", { type: "button", "aria-label": "Export " + title, text: "Export", onclick: () => exportConv(c) }),
      del);
    li.append(open, actions);
    return li;
  }

  function rename(li, c) {
    const input = h("input", { value: c.title || "", maxlength: "200", "aria-label": "New title" });
    const form = h("form", { class: "conv-rename" }, input, h("button", { type: "submit", text: "Save" }));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const r = await DDN.api("PATCH", "/api/conversations/" + encodeURIComponent(c.id), { title: input.value });
        if (c.id === current) $("conv-title").textContent = r.title;
        note("Renamed.");
      } catch (err) { note(err.message); }
      refresh();
    });
    clear(li).appendChild(form);
    input.focus();
  }

  async function exportConv(c) {
    try {
      await DDN.download("/api/conversations/" + encodeURIComponent(c.id) + "?download=1", "conversation-" + c.id + ".json");
    } catch (e) { note(e.message); }
  }

  async function openConv(id) {
    let c;
    try {
      c = await DDN.api("GET", "/api/conversations/" + encodeURIComponent(id));
    } catch (e) {
      if (e.status === 404) { setCurrent(""); note("That conversation no longer exists."); refresh(); }
      else note(e.message);
      return;
    }
    DDN.chat.clear();
    setCurrent(c.id, c.title);
    if (c.collection) $("chat-collection").value = c.collection;
    for (const t of c.turns) DDN.chat.renderStoredTurn(t);
    note("");
  }

  function newChat() {
    DDN.chat.clear();
    setCurrent("");
    note("");
    $("q").focus();
  }
  $("new-chat").addEventListener("click", newChat);

  DDN.conv = {
    // The conversation a new question goes into, created on the first question; "" when
    // conversations are unavailable (the question is then answered on its own).
    async ensure(question, collection) {
      if (current) return current;
      if (!available) return "";
      try {
        const c = await DDN.api("POST", "/api/conversations", { collection });
        setCurrent(c.id, question.length > 80 ? question.slice(0, 77) + "..." : question);
        return c.id;
      } catch (e) {
        available = e.status !== 501 && e.status !== 503;
        note("Conversations are not available (" + e.message + "); this question is answered on its own.");
        return "";
      }
    },
    stored() { refresh(); },
  };

  async function start() {
    await refresh();
    if (current) await openConv(current);
  }
  window.addEventListener("DOMContentLoaded", start);
  document.addEventListener("auth", start);
})();
