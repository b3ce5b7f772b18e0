"use strict";
document.getElementById("ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = document.getElementById("q").value;
  const out = document.getElementById("answer");
  const cites = document.getElementById("citations");
  out.textContent = "";
  cites.textContent = "";
  const es = new EventSource("/api/rag/stream?q=" + encodeURIComponent(q));
  es.addEventListener("token", (ev) => { out.textContent += JSON.parse(ev.data).text; });
  es.addEventListener("done", (ev) => {
    es.close();
    for (const c of JSON.parse(ev.data).citations) {
      const li = document.createElement("li");
      li.textContent = c.document_name + " (" + c.chunk_id + ")";
      cites.appendChild(li);
    }
  });
  es.addEventListener("error", (ev) => {
    es.close();
    if (ev.data) out.textContent = JSON.parse(ev.data).message;
  });
});
