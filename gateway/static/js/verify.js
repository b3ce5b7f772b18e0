"use strict";
// Groundedness and guardrails in the chat: `verify` lists each answer sentence with its support
// score and marks the unsupported ones (and shows the repair); `refused` says which guard refused
// and why. A guard that was down and let the answer through (fail mode open) is shown on `done`.
(function () {
  const { h } = DDN;
  const pct = (x) => Math.round(x * 100) + "%";

  function box(lane) {
    if (!lane.verifyEl) {
      lane.verifyEl = h("div", { class: "verify", "data-testid": "verify" });
      lane.answer.after(lane.verifyEl);
    }
    lane.verifyEl.textContent = "";
    return lane.verifyEl;
  }

  function sentences(list) {
    const ol = h("ol", { class: "verify-sentences" });
    for (const s of list) {
      ol.appendChild(h("li", { class: s.supported ? "supported" : "unsupported",
        title: (s.supported ? "supported" : "not supported by its passages") + " · score " + s.score.toFixed(2) },
        h("span", { class: "verify-mark", text: s.supported ? "✓" : "✗" }), " ",
        h("span", { text: s.text + (s.citations.length ? " [" + s.citations.join("][") + "]" : "") }),
        h("span", { class: "muted", text: "  " + s.score.toFixed(2) })));
    }
    return ol;
  }

  DDN.renderVerify = function renderVerify(lane, d) {
    const el = box(lane);
    const c = d.check || { sentences: [], answer_score: 1, method: "" };
    if (c.method.includes("(failed")) {  // the check could not run (a judge that is down)
      el.appendChild(h("span", { class: "badge warn", "data-testid": "groundedness", text: "Not verified: " + c.method }));
      return;
    }
    const n = c.sentences.length, ok = c.sentences.filter((s) => s.supported).length;
    const low = c.answer_score < d.threshold;
    el.appendChild(h("div", { class: "badges" },
      h("span", { class: "badge " + (low ? "warn" : "ok"), "data-testid": "groundedness" },
        "Groundedness ", h("strong", { text: pct(c.answer_score) })),
      h("span", { class: "muted", text: n ? ok + " of " + n + " sentences supported by the passages they cite (" + c.method + ")"
        : "no claim to check (" + c.method + ")" })));
    if (c.sentences.some((s) => !s.supported)) el.appendChild(sentences(c.sentences));
    const r = d.repair;
    if (r) {
      const after = r.verification ? " → " + pct(r.verification.answer_score) : "";
      el.appendChild(h("div", { class: "verify-repair", "data-testid": "repair" },
        h("strong", { text: "Repaired (" + r.kind + (r.message ? ", " + r.message : "") + ")" + after + ": " }),
        h("span", { text: r.text })));
    }
  };

  DDN.renderRefused = function renderRefused(lane, d) {
    lane.error.appendChild(DDN.errorBox("Refused by the " + d.guard + " guard (" + d.reason + "): " + d.message));
    lane.root.dataset.state = "refused";
  };

  DDN.renderGuards = function renderGuards(lane, guards) {
    if (!guards || !guards.failed_open) return;
    const down = guards.verdicts.filter((v) => v.status === "failed_open").map((v) => v.guard + ": " + v.message);
    box(lane).appendChild(h("div", { class: "badge warn", "data-testid": "guard-failed-open",
      text: "Guard down, answered without it (fail mode open): " + down.join("; ") }));
  };
})();
