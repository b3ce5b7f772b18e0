"""The self-contained HTML report of an A/B run: inline SVG charts (fetch TTFB distribution per
backend, paired differences with their interval, per-stage bars), the machine and backend
descriptions and every setting. No script, no external resource: it reads offline and prints."""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any

COLORS = ("#2563eb", "#d97706")
STAGE_NAMES = {"fetch_ttfb": "fetch TTFB", "fetch_total": "fetch total", "ttft": "TTFT", "gen_ttft": "generator TTFT"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#111;background:#fff}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.verdict{font-weight:600}.muted{color:#555}
.emu{color:#9a3412;font-weight:600}svg{max-width:100%;height:auto}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}svg,table{break-inside:avoid}}
"""


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.2f} ms"


def _name(b: dict[str, Any]) -> str:
    return f"{b['name']} (emulated)" if b.get("emulated") else b["name"]


def _when(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ns else ""


def _cdf_svg(series: list[tuple[str, list[int]]], title: str) -> str:
    """Empirical CDF per backend of a stage's values (ms on x)."""
    w, h, pad = 640, 240, 44
    vals = [v for _, vs in series for v in vs]
    if not vals:
        return f"<p class=muted>{escape(title)}: no samples.</p>"
    hi = sorted(vals)[max(0, int(len(vals) * 0.99) - 1)] or 1
    parts = [f'<svg viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">']
    parts.append(f'<text x="{pad}" y="14" font-size="12">{escape(title)} (cumulative share of samples)</text>')
    parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#888"/>')
    parts.append(f'<line x1="{pad}" y1="20" x2="{pad}" y2="{h - pad}" stroke="#888"/>')
    for i in range(5):
        x = pad + (w - pad - 10) * i / 4
        parts.append(
            f'<text x="{x:.0f}" y="{h - pad + 16}" font-size="10" text-anchor="middle">{hi * i / 4 / 1e6:.1f}</text>'
        )
    parts.append(f'<text x="{w / 2:.0f}" y="{h - 6}" font-size="11" text-anchor="middle">ms</text>')
    for j, (label, vs) in enumerate(series):
        if not vs:
            continue
        s = sorted(vs)
        pts = " ".join(
            f"{pad + (w - pad - 10) * min(v, hi) / hi:.1f},{(h - pad) - (h - pad - 20) * (k + 1) / len(s):.1f}"
            for k, v in enumerate(s)
        )
        parts.append(f'<polyline fill="none" stroke="{COLORS[j % 2]}" stroke-width="2" points="{pts}"/>')
        parts.append(
            f'<text x="{w - 200}" y="{h - pad - 14 - 14 * j}" font-size="11" fill="{COLORS[j % 2]}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _diff_svg(diffs: list[float], ci: tuple[float, float], title: str) -> str:
    """Histogram of the paired differences B - A (ms), with zero and the 95% interval of the mean."""
    w, h, pad = 640, 200, 40
    if not diffs:
        return f"<p class=muted>{escape(title)}: no pairs.</p>"
    s = sorted(diffs)
    lo = min(s[int(len(s) * 0.01)], ci[0], 0.0)
    hi = max(s[max(0, int(len(s) * 0.99) - 1)], ci[1], 0.0)
    if hi <= lo:
        hi = lo + 1.0
    bins = 30
    counts = [0] * bins
    for d in s:
        counts[min(bins - 1, max(0, int((d - lo) / (hi - lo) * bins)))] += 1
    top = max(counts) or 1

    def x(v: float) -> float:
        return pad + (w - pad - 10) * (v - lo) / (hi - lo)

    parts = [f'<svg viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">']
    parts.append(f'<text x="{pad}" y="14" font-size="12">{escape(title)}</text>')
    bw = (w - pad - 10) / bins
    for i, c in enumerate(counts):
        bh = (h - pad - 24) * c / top
        parts.append(
            f'<rect x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" fill="#94a3b8"/>'
        )
    parts.append(
        f'<rect x="{x(ci[0]):.1f}" y="20" width="{max(1.0, x(ci[1]) - x(ci[0])):.1f}" height="{h - pad - 20}" fill="#16a34a" opacity="0.25"/>'
    )
    parts.append(
        f'<line x1="{x(0):.1f}" y1="20" x2="{x(0):.1f}" y2="{h - pad}" stroke="#dc2626" stroke-dasharray="4 3"/>'
    )
    parts.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#888"/>')
    for v in (lo, 0.0, hi):
        parts.append(
            f'<text x="{x(v):.0f}" y="{h - pad + 14}" font-size="10" text-anchor="middle">{v / 1e6:.2f}</text>'
        )
    parts.append(
        f'<text x="{w / 2:.0f}" y="{h - 6}" font-size="11" text-anchor="middle">B - A, ms (green: 95% CI of the mean; red: zero)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _bars_svg(phase: dict[str, Any], names: list[tuple[str, str]], title: str) -> str:
    """p50 per stage, one bar per backend."""
    stages = [
        st
        for st in ("fetch_ttfb", "fetch_total", "gen_ttft", "ttft")
        if any(phase["backends"][n][st]["n"] for n, _ in names)
    ]
    w, row = 640, 44
    h = 30 + row * max(1, len(stages))
    top = max([phase["backends"][n][st]["p50_ns"] for st in stages for n, _ in names] + [1])
    parts = [f'<svg viewBox="0 0 {w} {h}" role="img" aria-label="{escape(title)}">']
    parts.append(f'<text x="4" y="14" font-size="12">{escape(title)}</text>')
    for i, st in enumerate(stages):
        y = 26 + i * row
        parts.append(f'<text x="4" y="{y + 16}" font-size="11">{escape(STAGE_NAMES[st])}</text>')
        for j, (n, label) in enumerate(names):
            v = phase["backends"][n][st]["p50_ns"]
            bw = (w - 260) * v / top
            yy = y + j * 18
            parts.append(f'<rect x="120" y="{yy}" width="{bw:.1f}" height="15" fill="{COLORS[j % 2]}"/>')
            parts.append(f'<text x="{124 + bw:.1f}" y="{yy + 12}" font-size="10">{escape(label)} {_ms(v)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _dist_table(phase: dict[str, Any], names: list[tuple[str, str]]) -> str:
    rows = [
        "<table><tr><th class=l>backend</th><th class=l>stage</th><th>n</th><th>p50</th><th>p90</th><th>p99</th><th>mean</th></tr>"
    ]
    for n, label in names:
        b = phase["backends"][n]
        for st in ("fetch_ttfb", "fetch_total", "gen_ttft", "ttft"):
            d = b[st]
            if not d["n"]:
                continue
            rows.append(
                f"<tr><td class=l>{escape(label)}</td><td class=l>{STAGE_NAMES[st]}</td><td>{d['n']}</td>"
                f"<td>{_ms(d['p50_ns'])}</td><td>{_ms(d['p90_ns'])}</td><td>{_ms(d['p99_ns'])}</td><td>{_ms(d['mean_ns'])}</td></tr>"
            )
    r = phase["retrieval"]
    rows.append(
        f"<tr><td class=l>both (shared)</td><td class=l>retrieval total</td><td>{r['n']}</td><td>{_ms(r['p50_ns'])}</td>"
        f"<td>{_ms(r['p90_ns'])}</td><td>{_ms(r['p99_ns'])}</td><td>{_ms(r['mean_ns'])}</td></tr></table>"
    )
    return "".join(rows)


def _paired_table(phase: dict[str, Any]) -> str:
    rows = [
        "<table><tr><th class=l>stage</th><th>pairs</th><th>mean B - A</th><th>95% CI</th><th>A win rate</th><th class=l>verdict</th></tr>"
    ]
    for st, p in phase["paired"].items():
        rows.append(
            f"<tr><td class=l>{STAGE_NAMES[st]}</td><td>{p['n']}</td><td>{_ms(p['mean_diff_ns'])}</td>"
            f"<td>{_ms(p['ci_low_ns'])} .. {_ms(p['ci_high_ns'])}</td><td>{100 * p['a_win_rate']:.1f}%</td>"
            f"<td class='l verdict'>{escape(p['verdict'])}</td></tr>"
        )
    return "".join(rows) + "</table>"


def _errors(phase: dict[str, Any], names: list[tuple[str, str]]) -> str:
    items = []
    for n, label in names:
        b = phase["backends"][n]
        kinds = ", ".join(f"{escape(k)}: {v}" for k, v in b["errors_by_kind"].items()) or "none"
        items.append(f"<li>{escape(label)}: {b['errors']} of {b['samples']} samples failed ({kinds})</li>")
    return "<ul>" + "".join(items) + "</ul>"


def render_html(doc: dict[str, Any]) -> str:
    req = doc["request"]
    bk = {b["name"]: b for b in doc["backends"]}
    a, b = req["backends"]
    names = [(a, "A: " + _name(bk.get(a, {"name": a}))), (b, "B: " + _name(bk.get(b, {"name": b})))]
    samples = doc.get("samples", [])
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>A/B run {escape(doc['run_id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>A/B run {escape(doc['run_id'])}: {escape(names[0][1])} vs {escape(names[1][1])}</h1>",
        f"<p>Status: <b>{escape(doc.get('status', ''))}</b>. Started {_when(doc['started_unix_ns'])}, finished "
        f"{_when(doc['finished_unix_ns'])}. {len(req['questions'])} questions from {escape(req.get('source') or 'the request')}, "
        f"collection {escape(req['collection'])}, top {req['top_k']} chunks, {req['repeat']} pass(es). Every number "
        "below was measured in this run; B - A is positive when A was faster.</p>",
    ]
    for note in doc.get("notes", []):
        out.append(f"<p class=muted>Note: {escape(note)}</p>")
    for phase_name in ("cold", "warm"):
        phase = doc["summary"].get(phase_name)
        if not phase:
            continue
        ss = [s for s in samples if s["phase"] == phase_name]
        out.append(
            f"<h2>{phase_name.capitalize()} pass{'es' if phase_name == 'warm' else ''} ({phase['pairs']} paired questions)</h2>"
        )
        out.append(_paired_table(phase))
        out.append(_dist_table(phase, names))
        out.append(_errors(phase, names))
        out.append(_bars_svg(phase, names, f"p50 per stage, {phase_name}"))
        series = [
            (label, [s["fetch_ttfb_ns"] for s in ss if s["backend"] == n and not s["error"]]) for n, label in names
        ]
        out.append(_cdf_svg(series, f"Fetch TTFB distribution per backend, {phase_name}"))
        by: dict[tuple[int, int], dict[str, Any]] = {}
        for s in ss:
            by.setdefault((s["question"], s["pass_no"]), {})[s["backend"]] = s
        diffs = [
            float(d[b]["fetch_ttfb_ns"] - d[a]["fetch_ttfb_ns"])
            for d in by.values()
            if a in d and b in d and not d[a]["error"] and not d[b]["error"]
        ]
        p = phase["paired"].get("fetch_ttfb", {})
        out.append(
            _diff_svg(
                diffs,
                (p.get("ci_low_ns", 0.0), p.get("ci_high_ns", 0.0)),
                f"Paired fetch TTFB difference, {phase_name}",
            )
        )
    out.append(
        "<h2>Backends</h2><table><tr><th class=l>side</th><th class=l>name</th><th class=l>label</th><th class=l>kind</th><th class=l>endpoint</th><th class=l>bucket</th><th class=l>shaping</th></tr>"
    )
    for side, n in (("A", a), ("B", b)):
        d = bk.get(n, {"name": n})
        emu = " class=emu" if d.get("emulated") else ""
        shaping = ", ".join(f"{k} {v:g}" for k, v in (d.get("shaping") or {}).items()) or "none"
        out.append(
            f"<tr><td class=l>{side}</td><td class=l{emu}>{escape(_name(d))}</td><td class=l{emu}>{escape(d.get('label', ''))}</td>"
            f"<td class=l>{escape(d.get('kind', ''))}</td><td class=l>{escape(d.get('endpoint', '') or 'default')}</td>"
            f"<td class=l>{escape(d.get('bucket', ''))}</td><td class=l>{escape(shaping)}</td></tr>"
        )
    out.append("</table><h2>Machine</h2><table>")
    for k, v in doc.get("machine", {}).items():
        out.append(f"<tr><th class=l>{escape(k)}</th><td class=l>{escape(str(v))}</td></tr>")
    out.append("</table><h2>Settings</h2><table>")
    for k, v in req.items():
        if k != "questions":
            out.append(f"<tr><th class=l>{escape(k)}</th><td class=l>{escape(json.dumps(v))}</td></tr>")
    out.append(
        "</table><h2>How the numbers are taken</h2><p>Each question is searched once (retrieval cache off); the chunk "
        "ids it returned are fetched from A and from B in one BatchGet each, in the order A,B then B,A, alternating by "
        "question and pass. Fetch TTFB is the median of the chunks' TTFB as the storage service measured each (as the retriever's fetch stage reports it); "
        "fetch total is the BatchGet call's wall time. TTFT = retrieval without its own fetch stage + this side's fetch "
        "total + the generator's first token over this side's chunks. The first pass is cold, later passes warm. "
        "Paired differences are B - A per question; the interval is a seeded percentile bootstrap (2000 resamples) of "
        "their mean. Failed samples are counted by kind and left out of distributions and pairs.</p>"
    )
    out.append(f"<details><summary>The {len(req['questions'])} questions</summary><ol>")
    out.extend(f"<li>{escape(q)}</li>" for q in req["questions"])
    out.append("</ol></details></body></html>")
    return "\n".join(out)
