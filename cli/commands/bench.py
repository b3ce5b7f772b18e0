"""`rag bench storage|list|cmp`: storage benchmarks through the storage service, as minio/warp does.

`bench storage` runs one operation over presets or custom concurrency levels and object sizes on
one or more backends (interleaved level by level), shows live progress, prints a results table
and saves the run as JSON, CSV and an SVG chart (the service also keeps JSON and CSV under
`bench/` in the object store). `bench cmp RUN_A RUN_B` compares two saved runs cell by cell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clients.protodict import from_dict
from ddnrag.storage.v1 import storage_service_pb2 as spb

from .chart import op_name, render_svg, size_bytes
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_common,
    console,
    data_dir,
    emit_json,
    enum_name,
    human_bytes,
    parse_size,
    rag_client,
    run,
    split_csv,
    to_dict,
)

OPERATIONS = {
    "get": spb.BENCHMARK_OPERATION_GET,
    "put": spb.BENCHMARK_OPERATION_PUT,
    "mixed": spb.BENCHMARK_OPERATION_MIXED,
    "stat": spb.BENCHMARK_OPERATION_STAT,
    "list": spb.BENCHMARK_OPERATION_LIST,
    "delete": spb.BENCHMARK_OPERATION_DELETE,
}
OP_NAMES = {v: k for k, v in OPERATIONS.items()}
PRESETS = {
    "standard": spb.BENCHMARK_PRESET_STANDARD,
    "extended": spb.BENCHMARK_PRESET_EXTENDED,
    "stress": spb.BENCHMARK_PRESET_STRESS,
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="storage benchmarks: run, list and compare")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="ACTION")

    q = bsub.add_parser("storage", help="benchmark one operation over concurrency levels, sizes and backends")
    q.add_argument("--backends", default="", help="comma-separated backends (default: the default backend)")
    q.add_argument("--op", choices=list(OPERATIONS), default="get", help="operation (default get)")
    levels = q.add_mutually_exclusive_group()
    levels.add_argument("--preset", choices=list(PRESETS), help="standard 1-50, extended 1-200, stress 1-500")
    levels.add_argument("--levels", help="custom concurrency levels, for example 1,4,16 (default 1,4,16)")
    q.add_argument("--sizes", default="1MiB", help="object sizes, for example 4KiB,1MiB (default 1MiB)")
    q.add_argument("--duration", type=float, default=3.0, help="seconds per level, warm-up excluded (default 3)")
    q.add_argument("--ops", type=int, default=0, help="operations per level instead of a duration")
    q.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per level (default 0.5)")
    q.add_argument("--read-ratio", type=float, default=0.7, help="reads share of the mixed operation (default 0.7)")
    q.add_argument("--label", default="", help="a label saved with the run")
    q.add_argument("--out", help="directory for the JSON, CSV and SVG (default <data dir>/bench)")
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_storage)

    q = bsub.add_parser("list", help="list saved runs, newest first")
    q.add_argument("--limit", type=int, default=20)
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_list)

    q = bsub.add_parser("cmp", help="compare two runs (run ids or saved JSON files), cell by cell")
    q.add_argument("run_a", metavar="RUN_A")
    q.add_argument("run_b", metavar="RUN_B")
    q.add_argument("--out", help="directory of saved runs to look in first (default <data dir>/bench)")
    add_common(q, services=("storage",))
    q.set_defaults(func=cmd_cmp)


def build_request(args: argparse.Namespace) -> spb.RunBenchmarkRequest:
    sizes = [parse_size(s) for s in split_csv(args.sizes)]
    if not sizes:
        raise UsageError("--sizes needs at least one size, for example 4KiB,1MiB")
    req = spb.RunBenchmarkRequest(
        backends=split_csv(args.backends),
        operation=OPERATIONS[args.op],
        object_sizes_bytes=sizes,
        duration_s=0.0 if args.ops else args.duration,
        ops_per_level=args.ops,
        warmup_s=args.warmup,
        read_ratio=args.read_ratio,
        label=args.label,
    )
    if args.preset:
        req.preset = PRESETS[args.preset]
    else:
        try:
            levels = [int(x) for x in split_csv(args.levels or "1,4,16")]
        except ValueError:
            raise UsageError(f"--levels {args.levels!r} must be whole numbers, for example 1,4,16") from None
        if not levels or min(levels) < 1:
            raise UsageError("--levels must be positive whole numbers, for example 1,4,16")
        req.concurrency_levels.extend(levels)
    return req


def _out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else data_dir(args) / "bench"


def save_run(run: dict[str, Any], out: Path, stored_csv: bytes) -> dict[str, str]:
    """Writes <run_id>.json, .csv and .svg under `out`; returns their paths. The CSV is the one the
    storage service stored beside the run (`csv_key`), the run's only CSV."""
    out.mkdir(parents=True, exist_ok=True)
    base = out / run["run_id"]
    paths = {"json": f"{base}.json", "csv": f"{base}.csv", "svg": f"{base}.svg"}
    Path(paths["json"]).write_text(json.dumps(run, indent=2) + "\n")
    Path(paths["csv"]).write_bytes(stored_csv)
    Path(paths["svg"]).write_text(render_svg(run))
    return paths


def results_table(results: list[dict[str, Any]], title: str = "results") -> Table:
    """Results grouped by backend, then size, then concurrency (the run interleaves backends)."""
    results = sorted(results, key=lambda r: (r["backend"], op_name(r), size_bytes(r), r["concurrency"]))
    t = Table(title=title, title_justify="left")
    for col in ("backend", "op", "size", "conc", "ops", "errors", "ops/s", "MiB/s", "p50", "p99", "TTFB p50"):
        t.add_column(col, justify="left" if col in ("backend", "op") else "right")
    for r in results:
        lat, ttfb = r.get("latency") or {}, r.get("ttfb") or {}
        name = escape(r["backend"]) + (" [dim](emulated)[/dim]" if r.get("emulated") else "")
        errs = str(r["errors"]) if not r["errors"] else f"[red]{r['errors']}[/red]"
        t.add_row(
            name,
            op_name(r),
            human_bytes(size_bytes(r)),
            str(r["concurrency"]),
            str(r["ops"]),
            errs,
            f"{r['ops_per_s']:.1f}",
            f"{r['mib_per_s']:.2f}",
            f"{lat.get('p50_ns', 0) / 1e6:.2f} ms",
            f"{lat.get('p99_ns', 0) / 1e6:.2f} ms",
            f"{ttfb.get('p50_ns', 0) / 1e6:.2f} ms" if ttfb.get("p50_ns") else "-",
        )
    return t


def cmd_storage(args: argparse.Namespace) -> int:
    async def work() -> int:
        req = build_request(args)
        final: spb.BenchmarkRun | None = None
        columns = (
            TextColumn("benchmark"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("levels"),
            TextColumn("{task.fields[now]}"),
            TimeElapsedColumn(),
        )
        async with rag_client(args) as rag:
            if not req.backends:
                req.backends.append((await rag.storage.list_backends()).default_backend)
            with Progress(*columns, console=console, disable=args.json, transient=True) as bar:
                task = bar.add_task("bench", total=None, now="starting")
                async for ev in rag.storage.run_benchmark(req):
                    kind = ev.WhichOneof("event")
                    if kind == "progress":
                        p = ev.progress
                        bar.update(
                            task,
                            completed=p.levels_done,
                            total=p.levels_total or None,
                            now=f"{escape(p.backend)} {human_bytes(p.object_size_bytes)} ×{p.concurrency}: "
                            f"{p.ops_done} ops, {p.errors} errors, p50 {p.p50_ns / 1e6:.1f} ms",
                        )
                    elif kind == "level" and not args.json:
                        lv = ev.level
                        bar.print(
                            f"  {escape(lv.backend)} {OP_NAMES.get(lv.operation, '?')} "
                            f"{human_bytes(lv.object_size_bytes)} ×{lv.concurrency}: "
                            f"{lv.ops_per_s:.1f} ops/s, {lv.mib_per_s:.2f} MiB/s, p50 {lv.latency.p50_ns / 1e6:.2f} ms"
                            + (f", {lv.errors} errors" if lv.errors else "")
                        )
                    elif kind == "run":
                        final = ev.run
            stored_csv = (await rag.storage.get(final.csv_key))[0] if final is not None and final.csv_key else b""
        if final is None:
            raise UsageError("the benchmark stream ended without a result; see the storage service's log")
        data = to_dict(final)
        paths = await asyncio.to_thread(save_run, data, _out_dir(args), stored_csv)
        if args.json:
            emit_json({"run": data, "files": paths})
        else:
            console.print(results_table(data["results"], title=f"run {final.run_id}"))
            if final.not_configured:
                console.print(f"[yellow]not configured, not run: {escape(', '.join(final.not_configured))}[/yellow]")
            console.print(f"saved {paths['json']}, {paths['csv']} and {paths['svg']}")
            if final.json_key:
                console.print(f"[dim]the storage service keeps {final.json_key} and {final.csv_key}[/dim]")
        failed = not final.results or any(r.errors and r.errors == r.ops for r in final.results)
        return EXIT_FAILED if failed or final.not_configured else EXIT_OK

    return run(args, work)


def cmd_list(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            resp = await rag.storage.list_benchmark_runs(page_size=max(1, min(args.limit, 1000)))
        if args.json:
            emit_json({"runs": [_run_summary(to_dict(r)) for r in resp.runs]})
            return EXIT_OK
        if not resp.runs:
            console.print("no benchmark runs yet; start one with `rag bench storage`")
            return EXIT_OK
        t = Table(title="benchmark runs (newest first)", title_justify="left")
        for col in ("run", "label", "operation", "backends", "levels", "best ops/s"):
            t.add_column(col)
        for r in resp.runs:
            s = _run_summary(to_dict(r))
            t.add_row(
                s["run_id"],
                escape(s["label"]),
                s["operation"],
                escape(", ".join(s["backends"])),
                str(s["levels"]),
                f"{s['best_ops_per_s']:.1f}",
            )
        console.print(t)
        return EXIT_OK

    return run(args, work)


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    results = run.get("results") or []
    req = run.get("request") or {}
    return {
        "run_id": run["run_id"],
        "label": req.get("label", ""),
        "operation": op_name(req),
        "backends": sorted({r["backend"] for r in results}) or list(req.get("backends") or []),
        "levels": len(results),
        "best_ops_per_s": max((r["ops_per_s"] for r in results), default=0.0),
        "started_unix_ns": run.get("started_unix_ns", 0),
    }


# ---- cmp ----------------------------------------------------------------------------------------
def comparison_view(resp: spb.CompareBenchmarkRunsResponse) -> dict[str, Any]:
    """The storage service's comparison (the one there is) for people and `--json`: the cells both
    runs measured, with each side's numbers and the service's b / a ratios, and the cells only one
    run has."""
    cells: list[dict[str, Any]] = []
    only: dict[str, list[dict[str, Any]]] = {"only_in_a": [], "only_in_b": []}
    for r in resp.rows:
        key = {
            "backend": r.backend,
            "operation": enum_name(spb.BenchmarkOperation.DESCRIPTOR, r.operation),
            "object_size_bytes": r.object_size_bytes,
            "concurrency": r.concurrency,
        }
        if not (r.HasField("a") and r.HasField("b")):
            only["only_in_a" if r.HasField("a") else "only_in_b"].append(key)
            continue
        a, b = r.a, r.b
        cells.append(
            {
                **key,
                "ops_per_s": [a.ops_per_s, b.ops_per_s],
                "ops_per_s_ratio": r.ops_per_s_ratio,
                "mib_per_s": [a.mib_per_s, b.mib_per_s],
                "p50_ns": [a.latency.p50_ns, b.latency.p50_ns],
                "latency_p50_ratio": r.latency_p50_ratio,
                "p99_ns": [a.latency.p99_ns, b.latency.p99_ns],
                "latency_p99_ratio": r.latency_p99_ratio,
                "ttfb_p50_ns": [a.ttfb.p50_ns, b.ttfb.p50_ns],
                "ttfb_p50_ratio": r.ttfb_p50_ratio,
                "errors": [a.errors, b.errors],
            }
        )
    return {"run_a": resp.a.run_id, "run_b": resp.b.run_id, "cells": cells, **only}


async def _run_ref(ref: str, out: Path) -> str | spb.BenchmarkRun:
    """A run file (a JSON path, or a saved <run_id>.json under `out`) as the run itself, else the
    id of a run the storage service saved."""
    local = await asyncio.to_thread(_read_local_run, ref, out)
    if local is None:
        return ref
    for r in local.get("results") or []:
        if "object_size" in r:  # saved before the size gained its unit in the name
            r["object_size_bytes"] = r.pop("object_size")
    try:
        return from_dict(local, spb.BenchmarkRun())
    except (ValueError, TypeError, AttributeError) as err:
        raise UsageError(f"{ref} is not a benchmark run ({err})") from None


def _read_local_run(ref: str, out: Path) -> dict[str, Any] | None:
    for p in (Path(ref), out / f"{ref}.json"):
        if p.suffix == ".json" and p.is_file():
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError as err:
                raise UsageError(f"{p} is not a benchmark run (invalid JSON: {err.msg})") from None
            data = data.get("run", data)
            if "run_id" not in data or "results" not in data:
                raise UsageError(f"{p} is not a benchmark run (no run_id/results)")
            return data
    return None


def _pct(ratio: float, higher_is_better: bool) -> str:
    """A b / a ratio as a coloured change ("-" when either side was zero or missing)."""
    if not ratio:
        return "-"
    v = (ratio - 1.0) * 100.0
    good = v >= 0 if higher_is_better else v <= 0
    color = "green" if good else "red"
    return f"[{color}]{v:+.1f}%[/{color}]"


def cmd_cmp(args: argparse.Namespace) -> int:
    async def work() -> int:
        out = _out_dir(args)
        a, b = await _run_ref(args.run_a, out), await _run_ref(args.run_b, out)
        async with rag_client(args) as rag:
            cmp = comparison_view(await rag.storage.compare_benchmark_runs(a, b))
        if args.json:
            emit_json(cmp)
            return EXIT_OK if cmp["cells"] else EXIT_FAILED
        t = Table(title=f"{cmp['run_a']} → {cmp['run_b']}", title_justify="left")
        for col in ("backend", "op", "size", "conc", "ops/s A → B", "Δ", "MiB/s A → B", "p50 A → B", "Δ", "p99 Δ"):
            t.add_column(col, justify="left" if col in ("backend", "op") else "right")
        for c in cmp["cells"]:
            t.add_row(
                escape(c["backend"]),
                c["operation"],
                human_bytes(c["object_size_bytes"]),
                str(c["concurrency"]),
                f"{c['ops_per_s'][0]:.1f} → {c['ops_per_s'][1]:.1f}",
                _pct(c["ops_per_s_ratio"], True),
                f"{c['mib_per_s'][0]:.2f} → {c['mib_per_s'][1]:.2f}",
                f"{c['p50_ns'][0] / 1e6:.2f} → {c['p50_ns'][1] / 1e6:.2f} ms",
                _pct(c["latency_p50_ratio"], False),
                _pct(c["latency_p99_ratio"], False),
            )
        console.print(t)
        for side in ("only_in_a", "only_in_b"):
            for c in cmp[side]:
                run_id = cmp["run_a"] if side == "only_in_a" else cmp["run_b"]
                console.print(
                    f"[dim]only in {run_id}: {escape(c['backend'])} {c['operation']} "
                    f"{human_bytes(c['object_size_bytes'])} ×{c['concurrency']}[/dim]"
                )
        if not cmp["cells"]:
            console.print("[yellow]the two runs share no (backend, operation, size, concurrency) cell[/yellow]")
            return EXIT_FAILED
        return EXIT_OK

    return run(args, work)
