"""The gateway's ingestion progress streams against real gRPC test doubles: the exact SSE bytes,
resuming with Last-Event-ID or ?after=, the resume position's range, failed and unknown jobs."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.integration.test_gateway_api import form
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app, parse_sse

__all__ = ["doubles"]


async def test_ingestion_stream_exact_bytes(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    job = (await (await client.post("/api/documents", data=form(("a.md", b"alpha")))).json())["job_id"]
    resp = await client.get(f"/api/ingestion/stream?job_id={job}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    raw = await resp.read()
    blocks = raw.split(b"\r\n\r\n")
    assert blocks[0].startswith(b'id: 1\r\nevent: progress\r\ndata: {"sequence":1,"job":{"job_id":"job-1",')
    events = parse_sse(raw)
    assert [e["event"] for e in events] == ["progress", "progress", "progress", "done"]
    assert [e["id"] for e in events] == ["1", "2", "3", "4"]
    assert events[1]["data"]["job"]["chunks_done"] == 2
    assert events[1]["data"]["job"]["progress"] == 0.5
    assert events[-1]["data"]["job"]["state"] == "succeeded"
    assert events[-1]["data"]["job"]["progress"] == 1.0


async def test_ingestion_stream_resumes_from_last_event_id(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    job = (await (await client.post("/api/documents", data=form(("a.md", b"alpha")))).json())["job_id"]
    resp = await client.get(f"/api/ingestion/stream?job_id={job}", headers={"Last-Event-ID": "2"})
    events = parse_sse(await resp.read())
    assert [(e["id"], e["event"]) for e in events] == [("3", "progress"), ("4", "done")]
    bad = await client.get(f"/api/ingestion/stream?job_id={job}", headers={"Last-Event-ID": "x"})
    assert bad.status == 400


@pytest.mark.parametrize(
    "route", ["/api/ingestion/stream?job_id={job}", "/api/ingestion/jobs/{job}/stream", "/api/ab/runs/{job}/stream"]
)
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("raw", ["-1", "1.5", "\u00b2", str(2**63), "9" * 40, "9" * 5000])
async def test_a_resume_position_out_of_range_is_400_not_500(
    aiohttp_client, doubles: Doubles, route: str, header: bool, raw: str
) -> None:
    # The resume position goes to an int64 wire field: 2**63 or a 40-digit id once failed in protobuf
    # and answered 500 (the fuzz suite found `?after=999...9`); a superscript two passed isdigit().
    client = await aiohttp_client(make_app(doubles))
    job = (await (await client.post("/api/documents", data=form(("a.md", b"alpha")))).json())["job_id"]
    url = route.format(job=job)
    if header:
        resp = await client.get(url, headers={"Last-Event-ID": raw})
    else:
        resp = await client.get(url + ("&" if "?" in url else "?") + "after=" + urllib.parse.quote(raw))
    assert resp.status == 400, await resp.text()
    assert "Last-Event-ID" in (await resp.json())["error"]["message"]


async def test_the_largest_resume_position_is_accepted(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    job = (await (await client.post("/api/documents", data=form(("a.md", b"alpha")))).json())["job_id"]
    resp = await client.get(f"/api/ingestion/jobs/{job}/stream", headers={"Last-Event-ID": str(2**63 - 1)})
    assert resp.status == 200
    await resp.read()


async def test_ingestion_stream_failed_job_ends_with_error(aiohttp_client, doubles: Doubles) -> None:
    from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

    doubles.retriever.jobs["job-bad"] = rpb.Job(job_id="job-bad", collection="default")
    client = await aiohttp_client(make_app(doubles))
    events = parse_sse(await (await client.get("/api/ingestion/stream?job_id=job-bad")).read())
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["reason"] == "JOB_FAILED"
    assert "EOF marker" in events[-1]["data"]["message"]


async def test_ingestion_stream_unknown_job_is_404_before_streaming(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/ingestion/stream?job_id=nope")
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert "nope" in (await resp.json())["error"]["message"]
    assert (await client.get("/api/ingestion/stream")).status == 400
