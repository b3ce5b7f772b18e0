"""Operations: caches (stats, purge), models, collections, continuous-ingestion watches, the
metrics summary and Prometheus `/metrics`."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..convert import to_dict
from ..errors import ApiError, error_payload
from ..state import CONFIG, METRICS, OPEN_STREAMS, UPSTREAMS
from ..uploads import check_collection
from ..views import field_num, field_str, json_body
from .health import check_all

routes = web.RouteTableDef()

CACHES = {"embedder": "embedding", "retriever": "retrieval", "llm_gateway": "answer"}


def _cache_json(service: str, r: Any) -> dict[str, Any]:
    lookups = r.hits + r.misses
    return {
        "service": service,
        "cache": CACHES[service],
        "entries": r.entries,
        "size_bytes": r.size_bytes,
        "max_size_bytes": r.max_size_bytes,
        "hits": r.hits,
        "misses": r.misses,
        "hit_rate": round(r.hits / lookups, 4) if lookups else None,
    }


def _cache_clients(request: web.Request) -> dict[str, Any]:
    up = request.app[UPSTREAMS]
    return {"embedder": up.embedder, "retriever": up.retriever, "llm_gateway": up.llm}


async def _gather_caches(request: web.Request) -> dict[str, Any]:
    clients = _cache_clients(request)
    results = await asyncio.gather(*(c.cache_stats() for c in clients.values()), return_exceptions=True)
    out: dict[str, Any] = {}
    for name, r in zip(clients, results, strict=True):
        if isinstance(r, BaseException):
            if not isinstance(r, Exception):
                raise r
            out[name] = {"service": name, "cache": CACHES[name], "error": error_payload(r)}
        else:
            out[name] = _cache_json(name, r)
    return out


@routes.get("/api/cache")
async def cache_stats(request: web.Request) -> web.Response:
    """The embedding, retrieval and answer caches; a service that does not answer shows its error."""
    return web.json_response({"caches": await _gather_caches(request)})


@routes.post("/api/cache/purge")
async def purge(request: web.Request) -> web.Response:
    """Empties one cache (`?service=embedder|retriever|llm_gateway`) or all of them."""
    which = request.query.get("service", "all")
    clients = _cache_clients(request)
    if which != "all" and which not in clients:
        raise ApiError(400, f"service must be one of {', '.join(clients)} or all")
    names = list(clients) if which == "all" else [which]
    removed = {}
    for name in names:
        removed[name] = (await clients[name].purge_cache()).removed
    return web.json_response({"removed": removed})


@routes.get("/api/models")
async def models(request: web.Request) -> web.Response:
    """The language models the llm_gateway can route to, with their health."""
    resp = await request.app[UPSTREAMS].llm.list_models()
    return web.json_response({"models": [to_dict(m) for m in resp.models]})


@routes.get("/api/collections")
async def collections(request: web.Request) -> web.Response:
    """Lists the collections: documents, chunks, live index version, last change."""
    cols = await request.app[UPSTREAMS].retriever.list_collections()
    return web.json_response({"collections": [to_dict(c) for c in cols]})


@routes.get("/api/embedder")
async def embedder_info(request: web.Request) -> web.Response:
    """The embedder's model, device (GPU name or CPU), dtype and backend."""
    info = await request.app[UPSTREAMS].embedder.info()
    return web.json_response(to_dict(info))


@routes.get("/api/metrics/summary")
async def metrics_summary(request: web.Request) -> web.Response:
    """What the demo's Metrics page shows: health, device, cache hit rates, gateway counters."""
    health, caches, device = await asyncio.gather(check_all(request.app), _gather_caches(request), _device(request))
    return web.json_response(
        {
            "health": health,
            "caches": caches,
            "embedder": device,
            "gateway": {**request.app[METRICS].summary(), "open_streams": len(request.app[OPEN_STREAMS])},
        }
    )


async def _device(request: web.Request) -> dict[str, Any]:
    try:
        info = await request.app[UPSTREAMS].embedder.info(timeout=request.app[CONFIG].health_timeout_s)
    except Exception as err:  # noqa: BLE001 - a down embedder is shown, not fatal to the summary
        return {"error": error_payload(err)}
    return {"device": info.device, "model_id": info.model_id, "dtype": info.dtype, "backend": info.backend}


@routes.get("/metrics")
async def prometheus(request: web.Request) -> web.Response:
    """The gateway's Prometheus metrics (text exposition format)."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/api/watches")
async def list_prefix_watches(request: web.Request) -> web.Response:
    """Lists the continuous-ingestion watches of bucket prefixes and the files each saw."""
    watches = await request.app[UPSTREAMS].retriever.list_prefix_watches()
    return web.json_response({"watches": [to_dict(w) for w in watches]})


@routes.post("/api/watches")
async def start_prefix_watch(request: web.Request) -> web.Response:
    """Starts continuous ingestion of a bucket prefix: {"prefix", "collection", "backend", "interval_s"}."""
    body = await json_body(request)
    cfg = request.app[CONFIG]
    prefix = field_str(body, "prefix", max_len=500).strip()
    if not prefix:
        raise ApiError(400, "prefix is required, for example auto_ingest/")
    watch = await request.app[UPSTREAMS].retriever.start_prefix_watch(
        check_collection(field_str(body, "collection", cfg.default_collection) or cfg.default_collection),
        prefix,
        backend=field_str(body, "backend", max_len=63),
        interval_s=field_num(body, "interval_s", 0, 0, 86400),
    )
    return web.json_response({"watch": to_dict(watch)}, status=201)


@routes.post("/api/watches/{watch_id}/stop")
async def stop_prefix_watch(request: web.Request) -> web.Response:
    """Stops a continuous-ingestion watch (admin)."""
    watch = await request.app[UPSTREAMS].retriever.stop_prefix_watch(request.match_info["watch_id"])
    return web.json_response({"watch": to_dict(watch)})
