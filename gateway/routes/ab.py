"""A/B runs of two storage backends over real questions (the llm_gateway's AbTestService).

`POST /api/ab/runs` starts a run and answers 202 with its id; `GET /api/ab/runs/{id}/stream`
follows it as SSE (`notice`, `progress`, then `done` with the saved run), resuming after the
`Last-Event-ID` a reconnecting client sends: the run goes on when a client goes away. Saved runs
are listed, fetched, exported (JSON or CSV) and shown as their self-contained HTML report.
The comparison dashboard's live per-backend TTFB comes from the Metrics page's scrape of the
storage service (`/api/metrics/window`, `storage_backend_ttfb_seconds`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from clients.llm import AbTestClient
from ddnrag.llm.v1 import ab_service_pb2 as ab_pb

from ..errors import ApiError
from ..sse import Event, stream_events
from ..state import CONFIG, UPSTREAMS
from ..uploads import check_collection
from ..views import field_num, field_str, json_body, last_event_id, query_int

routes = web.RouteTableDef()

# Query parameters, for the OpenAPI description.
PARAMS = {
    ("GET", "/api/ab/runs"): {
        "page_size": "runs per page, 1-100 (default 20)",
        "page_token": "next_page_token of the previous page",
    },
    ("GET", "/api/ab/runs/{run_id}"): {"samples": "1 to include every sample (default: the summary only)"},
    ("GET", "/api/ab/runs/{run_id}/stream"): {"after": "resume after this event number (or send Last-Event-ID)"},
    ("GET", "/api/ab/runs/{run_id}/report"): {"download": "1 to download the HTML instead of showing it"},
    ("GET", "/api/ab/runs/{run_id}/export"): {"format": "json (default) or csv"},
}

AB_CLIENT = web.AppKey("ab_client", AbTestClient)
MAX_QUESTIONS = 5000
# The report is static HTML: no script may run, nothing may load.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


async def ab_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """The A/B client rides on the llm_gateway's channel (opened and closed with the upstreams)."""
    llm = app[UPSTREAMS].llm
    app[AB_CLIENT] = AbTestClient(llm.address, timeout_s=app[CONFIG].request_timeout_s, channel=llm.channel)
    yield


def _doc(run: ab_pb.AbRun) -> dict[str, Any]:
    return json.loads(run.document_json) if run.document_json else {"run_id": run.run_id}


def _questions(body: dict[str, Any]) -> list[str]:
    raw = body.get("questions")
    if isinstance(raw, str):
        items = [line.strip() for line in raw.splitlines()]
    elif isinstance(raw, list) and all(isinstance(q, str) for q in raw):
        items = [q.strip() for q in raw]
    else:
        raise ApiError(400, "questions must be a list of strings, or one text with a question per line")
    items = [q for q in items if q and not q.startswith("#")]
    if not items:
        raise ApiError(400, "there are no questions: give at least one (one per line)", "NO_QUESTIONS")
    n = int(field_num(body, "n", 300, 1, MAX_QUESTIONS))
    return items[:n]


@routes.post("/api/ab/runs")
async def start_run(request: web.Request) -> web.Response:
    """Starts a run: {"backends": [A, B] or "A,B", "questions": [...] or text, "n", "repeat",
    "collection", "top_k", "skip_ttft", "label", "source"}; 202 {"run_id"}."""
    body = await json_body(request)
    raw = body.get("backends")
    backends = [
        b.strip() for b in (raw.split(",") if isinstance(raw, str) else raw or []) if isinstance(b, str) and b.strip()
    ]
    if len(backends) != 2:
        raise ApiError(400, "name two backends to compare: backends=[A, B]", "INVALID_AB_BACKENDS")
    cfg = request.app[CONFIG]
    questions = _questions(body)
    req = ab_pb.RunAbTestRequest(
        backends=backends,
        questions=questions,
        collection=check_collection(field_str(body, "collection", cfg.default_collection) or cfg.default_collection),
        top_k=int(field_num(body, "top_k", 5, 1, 100)),
        repeat=int(field_num(body, "repeat", 2, 1, 10)),
        skip_ttft=bool(body.get("skip_ttft", False)),
        label=field_str(body, "label", max_len=200),
        source=field_str(body, "source", "questions given in the browser", max_len=500),
    )
    # The first event names the run; leaving the stream then does not stop it (it runs in the
    # llm_gateway), and the browser follows it at /api/ab/runs/{id}/stream.
    async with contextlib.aclosing(request.app[AB_CLIENT].run(req)) as events:
        async for ev in events:
            return web.json_response({"run_id": ev.run_id, "questions": len(questions)}, status=202)
    raise ApiError(502, "the llm_gateway started no run", "AB_NOT_STARTED")


def _event(ev: ab_pb.RunAbTestResponse | ab_pb.WatchAbTestResponse) -> Event:
    kind = ev.WhichOneof("event")
    if kind == "notice":
        return Event("notice", {"message": ev.notice.message}, id=str(ev.seq))
    if kind == "progress":
        p = ev.progress
        data = {"done": p.done, "total": p.total, "phase": p.phase, "errors": p.errors}
        data["last_fetch_ttfb_ms"] = {k: v / 1e6 for k, v in p.last_fetch_ttfb_ns.items()}
        return Event("progress", data, id=str(ev.seq))
    doc = _doc(ev.run)
    doc.pop("samples", None)
    return Event("done", {"run": doc}, id=str(ev.seq))


@routes.get("/api/ab/runs/{run_id}/stream")
async def follow_run(request: web.Request) -> web.StreamResponse:
    """SSE of a running run, from the event after `Last-Event-ID` (or `?after=`)."""
    after = last_event_id(request)
    client = request.app[AB_CLIENT]

    async def events() -> AsyncIterator[Event]:
        async for ev in client.watch(request.match_info["run_id"], after):
            yield _event(ev)

    return await stream_events(request, events())


@routes.get("/api/ab/runs")
async def list_runs(request: web.Request) -> web.Response:
    """Saved runs, newest first, with their summaries (no samples)."""
    resp = await request.app[AB_CLIENT].list(
        query_int(request, "page_size", 20, 1, 100), request.query.get("page_token", "")
    )
    return web.json_response({"runs": [_doc(r) for r in resp.runs], "next_page_token": resp.next_page_token})


@routes.get("/api/ab/runs/{run_id}")
async def get_run(request: web.Request) -> web.Response:
    """One saved run: {"run": the request, backends, machine, notes and per-phase summary}."""
    doc = _doc((await request.app[AB_CLIENT].get(request.match_info["run_id"])).run)
    if request.query.get("samples", "") not in ("1", "true"):
        doc.pop("samples", None)
    return web.json_response({"run": doc})


@routes.get("/api/ab/runs/{run_id}/report")
async def report(request: web.Request) -> web.Response:
    """The self-contained HTML report (inline SVG; readable offline and printable)."""
    run_id = request.match_info["run_id"]
    got = await request.app[AB_CLIENT].get(run_id, include_html=True)
    headers = {"Content-Security-Policy": REPORT_CSP}
    if request.query.get("download", "") in ("1", "true"):
        headers["Content-Disposition"] = f'attachment; filename="ab-{run_id}.html"'
    return web.Response(text=got.html, content_type="text/html", headers=headers)


@routes.get("/api/ab/runs/{run_id}/export")
async def export_run(request: web.Request) -> web.Response:
    """Downloads a saved run: its JSON document (every sample) or its CSV (one row per sample)."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "format must be json or csv")
    run_id = request.match_info["run_id"]
    got = await request.app[AB_CLIENT].get(run_id, include_csv=fmt == "csv")
    disposition = {"Content-Disposition": f'attachment; filename="ab-{run_id}.{fmt}"'}
    if fmt == "csv":
        return web.Response(text=got.csv, content_type="text/csv", headers=disposition)
    return web.Response(text=got.run.document_json, content_type="application/json", headers=disposition)
