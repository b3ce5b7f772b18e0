"""A benchmark run as a hand-written SVG chart (no chart library).

Two panels share the x axis (concurrency, log scale): throughput in MiB/s and p50 latency in ms.
One line per (backend, operation, object size); emulated backends say so in the legend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

PALETTE = ("#76b900", "#1f77b4", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
WIDTH, HEIGHT = 960, 460
PANEL_W, PANEL_H = 380, 300
TOP, LEFT_A, LEFT_B = 70, 70, 545


def op_name(r: dict[str, Any]) -> str:
    """A result's operation as people write it ("get"), as `to_dict` gives it; runs saved between
    the enum's arrival and the one walker carry the enum's full name (BENCHMARK_OPERATION_GET)."""
    return str(r.get("operation") or "").removeprefix("BENCHMARK_OPERATION_").lower()


def size_bytes(r: dict[str, Any]) -> int:
    """A result's object size; runs saved before the field gained its unit call it `object_size`."""
    return int(r["object_size_bytes"] if "object_size_bytes" in r else r["object_size"])


def _size_label(n: int) -> str:
    for unit, f in (("MiB", 1024**2), ("KiB", 1024)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


def series_of(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Groups level results into lines keyed by their legend label, points sorted by concurrency."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        kind = str(r.get("label") or "")
        note = f" ({kind})" if kind.startswith("emulated") else " (emulated)" if r.get("emulated") else ""
        label = f"{r['backend']}{note} · {op_name(r) or 'op'} · "
        label += _size_label(size_bytes(r))
        out.setdefault(label, []).append(r)
    for pts in out.values():
        pts.sort(key=lambda r: int(r["concurrency"]))
    return out


def nice_ticks(top: float, n: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    count = math.ceil(top / step)
    return [round(i * step, 10) for i in range(count + 1)]


def _fmt(v: float) -> str:
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.2g}"


def _panel(
    left: int, title: str, lines: dict[str, list[tuple[int, float]]], colors: dict[str, str], xs: list[int]
) -> list[str]:
    out = [f'<g class="panel"><text x="{left + PANEL_W / 2}" y="{TOP - 12}" class="ptitle">{escape(title)}</text>']
    top_val = max((v for pts in lines.values() for _, v in pts), default=0.0)
    ticks = nice_ticks(top_val)
    ymax = ticks[-1] or 1.0
    lo, hi = math.log2(min(xs)), math.log2(max(xs))
    span = hi - lo or 1.0

    def px(c: int) -> float:
        return left + (PANEL_W / 2 if hi == lo else (math.log2(c) - lo) / span * PANEL_W)

    def py(v: float) -> float:
        return TOP + PANEL_H - v / ymax * PANEL_H

    out.append(f'<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" class="frame"/>')
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + PANEL_W}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="ytick">{_fmt(t)}</text>')
    for c in xs:
        x = px(c)
        out.append(f'<line x1="{x:.1f}" y1="{TOP + PANEL_H}" x2="{x:.1f}" y2="{TOP + PANEL_H + 5}" class="axis"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + PANEL_H + 18}" class="xtick">{c}</text>')
    out.append(f'<text x="{left + PANEL_W / 2}" y="{TOP + PANEL_H + 36}" class="xlabel">concurrency</text>')
    for label, pts in lines.items():
        coords = " ".join(f"{px(c):.1f},{py(v):.1f}" for c, v in pts)
        color = colors[label]
        out.append(f'<polyline points="{coords}" stroke="{color}" class="series"><title>{escape(label)}</title>')
        out.append("</polyline>")
        for c, v in pts:
            out.append(
                f'<circle cx="{px(c):.1f}" cy="{py(v):.1f}" r="3" fill="{color}">'
                f"<title>{escape(label)}: {v:.3g} at concurrency {c}</title></circle>"
            )
    out.append("</g>")
    return out


def render_svg(run: dict[str, Any]) -> str:
    """The SVG document for a run as `to_dict(BenchmarkRun)` gives it (or the saved JSON)."""
    results = list(run.get("results") or [])
    series = series_of(results)
    colors = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(series)}
    xs = sorted({int(r["concurrency"]) for r in results}) or [1]
    tput = {k: [(int(r["concurrency"]), float(r["mib_per_s"])) for r in v] for k, v in series.items()}
    lat = {
        k: [(int(r["concurrency"]), (r.get("latency") or {}).get("p50_ns", 0) / 1e6) for r in v]
        for k, v in series.items()
    }
    label = run.get("request", {}).get("label") or ""
    title = f"Storage benchmark {run.get('run_id', '')}" + (f" — {label}" if label else "")
    legend_h = 18 * len(series)
    height = HEIGHT + legend_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        "<style>.frame{fill:none;stroke:#999}.grid{stroke:#e4e4e4}.axis{stroke:#999}"
        ".ytick{text-anchor:end;fill:#444}.xtick{text-anchor:middle;fill:#444}"
        ".xlabel,.ptitle{text-anchor:middle;fill:#222}.ptitle{font-weight:bold}"
        ".series{fill:none;stroke-width:2}.title{font-size:16px;font-weight:bold}</style>",
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
        f'<text x="20" y="28" class="title">{escape(title)}</text>',
    ]
    if not results:
        parts.append('<text x="20" y="60">no results in this run</text>')
    else:
        parts += _panel(LEFT_A, "throughput (MiB/s)", tput, colors, xs)
        parts += _panel(LEFT_B, "p50 latency (ms)", lat, colors, xs)
        y0 = TOP + PANEL_H + 60
        for i, lab in enumerate(series):
            y = y0 + 18 * i
            parts.append(f'<rect x="{LEFT_A}" y="{y - 9}" width="14" height="4" fill="{colors[lab]}"/>')
            parts.append(f'<text x="{LEFT_A + 22}" y="{y}" class="legend">{escape(lab)}</text>')
    missing = run.get("not_configured") or []
    if missing:
        parts.append(
            f'<text x="20" y="{height - 10}" fill="#b00">not configured (no numbers): {escape(", ".join(missing))}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
