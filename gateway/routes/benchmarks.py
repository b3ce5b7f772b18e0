"""Storage benchmarks: run one (SSE progress and results), list past runs, fetch, export, compare.

The storage service runs the benchmark and saves each run in object storage; this module streams
its events and reshapes saved runs (ns -> ms, CSV export, per-cell comparison).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ddnrag.storage.v1 import storage_service_pb2 as spb

from ..convert import enum_name, enum_value, ns_to_ms, to_dict
from ..errors import ApiError
from ..sse import Event, stream_events
from ..state import UPSTREAMS
from ..views import query_float, query_int

routes = web.RouteTableDef()

PRESETS = {
    "standard": spb.BENCHMARK_PRESET_STANDARD,
    "extended": spb.BENCHMARK_PRESET_EXTENDED,
    "stress": spb.BENCHMARK_PRESET_STRESS,
    "custom": spb.BENCHMARK_PRESET_UNSPECIFIED,
}


def pct_json(p: spb.Percentiles) -> dict[str, float]:
    return {
        "p50_ms": ns_to_ms(p.p50_ns),
        "p90_ms": ns_to_ms(p.p90_ns),
        "p99_ms": ns_to_ms(p.p99_ns),
        "max_ms": ns_to_ms(p.max_ns),
        "mean_ms": ns_to_ms(p.mean_ns),
    }


def level_json(lv: spb.LevelResult) -> dict[str, Any]:
    return {
        "backend": lv.backend,
        "label": lv.label,
        "emulated": lv.emulated,
        "operation": enum_name(spb.BenchmarkOperation.DESCRIPTOR, lv.operation),
        "object_size_bytes": lv.object_size_bytes,
        "concurrency": lv.concurrency,
        "ops": lv.ops,
        "errors": lv.errors,
        "errors_by_kind": dict(lv.errors_by_kind),
        "duration_s": round(lv.duration_s, 3),
        "ops_per_s": round(lv.ops_per_s, 2),
        "mib_per_s": round(lv.mib_per_s, 3),
        "latency": pct_json(lv.latency),
        "ttfb": pct_json(lv.ttfb),
        "cold_ttfb_p50_ms": ns_to_ms(lv.cold_ttfb_p50_ns),
        "warm_ttfb_p50_ms": ns_to_ms(lv.warm_ttfb_p50_ns),
    }


def _iso(unix_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_ns / 1e9)) if unix_ns else ""


def run_json(run: spb.BenchmarkRun) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "label": run.request.label,
        "started": _iso(run.started_unix_ns),
        "finished": _iso(run.finished_unix_ns),
        "started_unix_ms": run.started_unix_ns // 1_000_000,
        "request": to_dict(run.request),
        "results": [level_json(lv) for lv in run.results],
        "not_configured": list(run.not_configured),
        "json_key": run.json_key,
        "csv_key": run.csv_key,
    }


def _csv_list(raw: str, what: str) -> list[int]:
    try:
        return [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise ApiError(400, f"{what} must be comma-separated integers") from None


def benchmark_request(request: web.Request) -> spb.RunBenchmarkRequest:
    q = request.query
    backends = [b.strip() for b in q.get("backends", "").split(",") if b.strip()]
    if not backends:
        raise ApiError(400, "name at least one backend: backends=ddn,s3")
    preset_name = q.get("preset", "standard").lower()
    if preset_name not in PRESETS:
        raise ApiError(400, f"preset must be one of {', '.join(PRESETS)}")
    try:
        operation = enum_value(spb.BenchmarkOperation.DESCRIPTOR, q.get("operation", "get") or "get")
    except ValueError as err:
        raise ApiError(400, f"operation: {err}") from None
    levels = _csv_list(q.get("levels", ""), "levels")
    if preset_name == "custom" and not levels:
        raise ApiError(400, "a custom benchmark needs levels=1,4,16 (concurrency levels)")
    if any(not 1 <= c <= 1000 for c in levels):
        raise ApiError(400, "concurrency levels must be between 1 and 1000")
    sizes = _csv_list(q.get("sizes", "") or q.get("object_size", ""), "sizes") or [64 * 1024]
    if any(not 1024 <= s <= 64 * 1024 * 1024 for s in sizes):
        raise ApiError(400, "object sizes must be between 1024 bytes (1 KiB) and 67108864 (64 MiB)")
    return spb.RunBenchmarkRequest(
        backends=backends,
        operation=operation,
        preset=PRESETS[preset_name],
        concurrency_levels=levels if preset_name == "custom" else [],
        object_sizes_bytes=sizes,
        duration_s=query_float(request, "duration_s", 0.0, 0.0, 3600.0),
        ops_per_level=query_int(request, "ops_per_level", 0 if q.get("duration_s") else 50, 0, 1_000_000),
        warmup_s=query_float(request, "warmup_s", 0.0, 0.0, 600.0),
        read_ratio=query_float(request, "read_ratio", 0.8, 0.0, 1.0),
        label=q.get("label", "")[:200],
    )


@routes.get("/api/benchmarks/stream")
async def run_stream(request: web.Request) -> web.StreamResponse:
    """SSE: `progress` while a level runs, `level` for each finished level, then `done` with the
    saved run. Closing the stream cancels the run."""
    req = benchmark_request(request)
    storage = request.app[UPSTREAMS].storage

    async def events() -> AsyncIterator[Event]:
        async for msg in storage.run_benchmark(req):
            kind = msg.WhichOneof("event")
            if kind == "progress":
                p = msg.progress
                data = to_dict(p)
                data["p50_ms"] = ns_to_ms(p.p50_ns)
                yield Event("progress", data)
            elif kind == "level":
                yield Event("level", level_json(msg.level))
            elif kind == "run":
                yield Event("done", {"run": run_json(msg.run)})
                return

    return await stream_events(request, events())


@routes.get("/api/benchmarks")
async def list_runs(request: web.Request) -> web.Response:
    """Lists the saved benchmark runs, newest first."""
    resp = await request.app[UPSTREAMS].storage.list_benchmark_runs(
        page_size=query_int(request, "page_size", 50, 1, 1000), page_token=request.query.get("page_token", "")
    )
    runs = []
    for r in resp.runs:
        d = run_json(r)
        d["backends"] = sorted({lv["backend"] for lv in d["results"]}) or list(r.request.backends)
        runs.append(d)
    return web.json_response({"runs": runs, "next_page_token": resp.next_page_token})


@routes.get("/api/benchmarks/compare")
async def compare(request: web.Request) -> web.Response:
    """Two saved runs lined up by the storage service, cell by cell (backend, operation, size,
    concurrency): p50/p99 latency, TTFB p50 and ops/s of each side and B relative to A, the ratio
    as the service computed it (the one comparison; null where it is 0: a side missing or zero).
    A cell only one run measured shows the other side as null."""
    a_id, b_id = request.query.get("a", ""), request.query.get("b", "")
    if not a_id or not b_id:
        raise ApiError(400, "give two run ids: /api/benchmarks/compare?a=RUN&b=RUN")
    resp = await request.app[UPSTREAMS].storage.compare_benchmark_runs(a_id, b_id)
    rows = []
    for r in resp.rows:
        a = level_json(r.a) if r.HasField("a") else None
        b = level_json(r.b) if r.HasField("b") else None

        def side(get: Any, ratio: float, a: Any = a, b: Any = b) -> dict[str, Any]:
            va, vb = (get(a) if a else None), (get(b) if b else None)
            return {"a": va, "b": vb, "ratio": round(ratio, 3) or None}

        rows.append(
            {
                "backend": r.backend,
                "operation": enum_name(spb.BenchmarkOperation.DESCRIPTOR, r.operation),
                "object_size_bytes": r.object_size_bytes,
                "concurrency": r.concurrency,
                "latency_p50_ms": side(lambda x: x["latency"]["p50_ms"], r.latency_p50_ratio),
                "latency_p99_ms": side(lambda x: x["latency"]["p99_ms"], r.latency_p99_ratio),
                "ttfb_p50_ms": side(lambda x: x["ttfb"]["p50_ms"], r.ttfb_p50_ratio),
                "ops_per_s": side(lambda x: x["ops_per_s"], r.ops_per_s_ratio),
            }
        )
    return web.json_response({"a": run_json(resp.a), "b": run_json(resp.b), "rows": rows})


@routes.get("/api/benchmarks/{run_id}")
async def get_run(request: web.Request) -> web.Response:
    """One saved benchmark run with every level's results."""
    run = (await request.app[UPSTREAMS].storage.get_benchmark_run(request.match_info["run_id"])).run
    return web.json_response({"run": run_json(run)})


@routes.get("/api/benchmarks/{run_id}/export")
async def export_run(request: web.Request) -> web.Response:
    """Downloads a saved run as `?format=csv` or `json`."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "format must be json or csv")
    run_id = request.match_info["run_id"]
    storage = request.app[UPSTREAMS].storage
    stored = (await storage.get_benchmark_run(run_id)).run
    disposition = {"Content-Disposition": f'attachment; filename="benchmark-{run_id}.{fmt}"'}
    if fmt == "csv":
        # The one CSV of a run is the one the storage service stored beside it (`csv_key`).
        if not stored.csv_key:
            raise ApiError(404, f"benchmark run {run_id} has no stored CSV", "NO_CSV")
        data, _info, _transfer = await storage.get(stored.csv_key)
        return web.Response(body=data, content_type="text/csv", charset="utf-8", headers=disposition)
    return web.json_response(run_json(stored), headers=disposition)
