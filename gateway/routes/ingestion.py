"""Ingestion jobs: start, list, status, cancel, and live SSE dashboards per job and for all jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

from ..convert import to_dict
from ..errors import ApiError
from ..sse import Event, stream_events
from ..state import CONFIG, UPSTREAMS
from ..uploads import check_collection
from ..views import field_str, json_body, last_event_id, query_bool, query_float, query_int

routes = web.RouteTableDef()

PARAMS = {("GET", "/api/ingestion/jobs/{job_id}"): {"files": "1 to include every file with its result and stage times"}}

_OK_END = (rpb.JOB_STATE_SUCCEEDED, rpb.JOB_STATE_PARTIAL)
_ENDED = (*_OK_END, rpb.JOB_STATE_FAILED, rpb.JOB_STATE_CANCELLED)


def job_json(job: rpb.Job) -> dict[str, Any]:
    d = to_dict(job)
    d["terminal"] = job.state in _ENDED
    d["progress"] = (
        round(job.chunks_done / job.chunks_total, 4) if job.chunks_total else (1.0 if d["terminal"] else 0.0)
    )
    return d


def terminal_event(job: rpb.Job, event_id: str) -> Event:
    """`done` for a job that finished (fully or partly), `error` for one that failed or was cancelled."""
    data = {"job": job_json(job)}
    if job.state in _OK_END:
        return Event("done", data, event_id)
    if job.state == rpb.JOB_STATE_CANCELLED:
        data.update(status=409, reason="JOB_CANCELLED", message=f"job {job.job_id} was cancelled")
    else:
        data.update(status=500, reason="JOB_FAILED", message=job.error or f"job {job.job_id} failed")
    return Event("error", data, event_id)


@routes.get("/api/ingestion/stream")
async def job_stream(request: web.Request) -> web.StreamResponse:
    """SSE: `progress` events (id = the job's event sequence) until `done` or `error`."""
    job_id = request.query.get("job_id", "").strip()
    if not job_id:
        raise ApiError(400, "job_id is required: /api/ingestion/stream?job_id=...")
    return await _follow_job(request, job_id)


@routes.get("/api/ingestion/jobs/{job_id}/stream")
async def job_stream_path(request: web.Request) -> web.StreamResponse:
    """SSE: one job's `progress` events until `done` or `error` (resumable with Last-Event-ID)."""
    return await _follow_job(request, request.match_info["job_id"])


async def _follow_job(request: web.Request, job_id: str) -> web.StreamResponse:
    after = last_event_id(request)
    retriever = request.app[UPSTREAMS].retriever

    async def events() -> AsyncIterator[Event]:
        async for p in retriever.watch_job(job_id, after_sequence=after):
            if p.terminal or p.job.state in _ENDED:
                yield terminal_event(p.job, str(p.sequence))
                return
            yield Event("progress", {"sequence": p.sequence, "job": job_json(p.job)}, str(p.sequence))

    return await stream_events(request, events())


@routes.post("/api/ingestion/jobs")
async def start_job(request: web.Request) -> web.Response:
    """JSON: {"collection", "object_keys": [...], "source_prefix", "source_backend", "target_backends"}:
    ingests objects already in storage."""
    body = await json_body(request)
    cfg = request.app[CONFIG]
    collection = check_collection(field_str(body, "collection", cfg.default_collection) or cfg.default_collection)
    keys = body.get("object_keys", [])
    targets = body.get("target_backends", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ApiError(400, "object_keys must be a list of object keys")
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise ApiError(400, "target_backends must be a list of backend names")
    prefix = field_str(body, "source_prefix")
    if not keys and not prefix:
        raise ApiError(400, "give object_keys or a source_prefix to ingest")
    job = await request.app[UPSTREAMS].retriever.start_ingest(
        collection,
        [rpb.SourceObject(object_key=k) for k in keys],
        source_prefix=prefix,
        source_backend=field_str(body, "source_backend"),
        target_backends=targets,
    )
    return web.json_response({"job_id": job.job_id, "job": job_json(job)}, status=202)


@routes.get("/api/ingestion/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Lists ingestion jobs, newest first (`?collection=`, `page_size`, `page_token`)."""
    collection = request.query.get("collection", "")
    if collection:
        check_collection(collection)
    resp = await request.app[UPSTREAMS].retriever.list_jobs(
        collection=collection,
        page_size=query_int(request, "page_size", 50, 1, 1000),
        page_token=request.query.get("page_token", ""),
    )
    return web.json_response({"jobs": [job_json(j) for j in resp.jobs], "next_page_token": resp.next_page_token})


@routes.get("/api/ingestion/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    """One ingestion job: state, stage, progress, per-backend writes, file errors.

    Its summary too: bytes, time per stage (`fetch_ns` … `index_ns`), the embedder's device; with
    `?files=1`, every file with its result and stage times (`files`)."""
    job = await request.app[UPSTREAMS].retriever.get_job(
        request.match_info["job_id"], include_files=query_bool(request, "files")
    )
    return web.json_response({"job": job_json(job)})


@routes.post("/api/ingestion/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Cancels a queued or running job; the collection keeps its last committed index."""
    job = await request.app[UPSTREAMS].retriever.cancel_job(request.match_info["job_id"])
    return web.json_response({"job": job_json(job)})


@routes.get("/api/ingestion/stream/all")
async def all_jobs_stream(request: web.Request) -> web.StreamResponse:
    """SSE dashboard of every job: a `snapshot` first, then a `job` event whenever a job changes.

    The retriever has no all-jobs stream, so this lists jobs every `interval` seconds (default 1)
    and sends only what changed; the stream ends on shutdown with a terminal event. A resumed
    stream (Last-Event-ID) starts with a fresh snapshot, which is complete by construction."""
    interval = query_float(request, "interval", 1.0, 0.2, 30.0)
    collection = request.query.get("collection", "")
    if collection:
        check_collection(collection)
    retriever = request.app[UPSTREAMS].retriever

    async def events() -> AsyncIterator[Event]:
        seen: dict[str, int] = {}
        tick = 0
        while True:
            resp = await retriever.list_jobs(collection=collection, page_size=100)
            tick += 1
            if tick == 1:
                seen = {j.job_id: j.updated_unix_ns for j in resp.jobs}
                yield Event("snapshot", {"jobs": [job_json(j) for j in resp.jobs]}, f"t{tick}")
            else:
                for j in reversed(resp.jobs):
                    if seen.get(j.job_id) != j.updated_unix_ns:
                        seen[j.job_id] = j.updated_unix_ns
                        yield Event("job", job_json(j), f"t{tick}-{j.job_id}")
            await asyncio.sleep(interval)

    return await stream_events(request, events())
