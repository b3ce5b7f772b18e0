"""The walking-skeleton API against real gRPC test doubles: upload, ingestion SSE, answer SSE,
health, disconnect and shutdown. Exact SSE bytes are asserted where the contract fixes them."""

from __future__ import annotations

import asyncio
import io
import json
import re

import aiohttp
from aiohttp import web

from gateway.sse import close_open_streams
from gateway.state import OPEN_STREAMS
from gateway.uploads import document_id
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app, parse_sse

__all__ = ["doubles"]


def form(*files: tuple[str, bytes], collection: str | None = None) -> aiohttp.FormData:
    fd = aiohttp.FormData()
    if collection is not None:
        fd.add_field("collection", collection)
    for name, data in files:
        fd.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
    return fd


async def test_upload_streams_to_storage_and_starts_ingestion(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    body = b"# Storage\n\nObject storage keeps chunks.\n" * 1000
    resp = await client.post("/api/documents", data=form(("notes.md", body), collection="kb"))
    assert resp.status == 202, await resp.text()
    out = await resp.json()
    doc_id = document_id("kb", "notes.md")
    key = f"docs/kb/{doc_id}/notes.md"
    assert out["job_id"] == "job-1"
    assert out["document_id"] == doc_id
    assert out["documents"][0]["object_key"] == key
    assert out["documents"][0]["size_bytes"] == len(body)
    assert doubles.storage.objects[key] == body
    started = doubles.retriever.started[0]
    assert started.collection == "kb"
    assert [(s.object_key, s.name, s.document_id) for s in started.sources] == [(key, "notes.md", doc_id)]


async def test_reupload_replaces_same_document(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    r1 = await (await client.post("/api/documents", data=form(("a.txt", b"one")))).json()
    r2 = await (await client.post("/api/documents", data=form(("a.txt", b"two")))).json()
    assert r1["document_id"] == r2["document_id"]
    assert list(doubles.storage.objects.values()) == [b"two"]


async def test_multi_file_upload_one_job(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/documents", data=form(("a.md", b"alpha"), ("b.csv", b"x,y\n1,2\n")))
    assert resp.status == 202
    out = await resp.json()
    assert [d["name"] for d in out["documents"]] == ["a.md", "b.csv"]
    assert len(doubles.retriever.started) == 1
    assert len(doubles.retriever.started[0].sources) == 2


async def test_bad_uploads_are_refused_and_leave_nothing(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    cases = [
        (("empty.txt", b""), 422, "EMPTY_FILE"),
        (("tool.exe", b"MZ\x90\x00"), 415, "UNSUPPORTED_TYPE"),
        (("noext", b"hello"), 415, "UNSUPPORTED_TYPE"),
        (("fake.txt", b"text\x00\x01\x02binary"), 422, "BINARY_CONTENT"),
        (("latin.txt", "caf\u00e9".encode("latin-1")), 422, "BINARY_CONTENT"),
        (("doc.pdf", b"not a pdf at all"), 422, "BAD_CONTENT"),
        (("doc.docx", b"plain text"), 422, "BAD_CONTENT"),
    ]
    for (name, data), status, reason in cases:
        resp = await client.post("/api/documents", data=form((name, data)))
        assert resp.status == status, (name, await resp.text())
        err = (await resp.json())["error"]
        assert err["reason"] == reason, name
        assert "pdf, docx, pptx, xlsx, csv, html, md, txt" in err["message"] or reason in (
            "BINARY_CONTENT",
            "BAD_CONTENT",
        )
    assert doubles.storage.objects == {}
    assert doubles.retriever.started == []


async def test_binary_in_the_middle_of_a_large_text_upload_leaves_nothing(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    data = b"plain text line\n" * 100_000 + b"\x00\xff binary tail"
    resp = await client.post("/api/documents", data=form(("big.txt", data)))
    assert resp.status == 422
    assert doubles.storage.objects == {}


async def test_second_file_bad_removes_the_first(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/documents", data=form(("good.md", b"fine"), ("bad.exe", b"MZ")))
    assert resp.status == 415
    assert doubles.storage.objects == {}


async def test_ingestion_start_failure_removes_uploaded_objects(aiohttp_client, doubles: Doubles) -> None:
    doubles.retriever.fail_start = True
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/documents", data=form(("good.md", b"fine")))
    assert resp.status == 503
    err = (await resp.json())["error"]
    assert err["service"] == "retriever"
    assert err["reason"] == "EMBEDDER_UNAVAILABLE"
    assert doubles.storage.objects == {}


async def test_upload_size_limit_is_413_and_leaves_nothing(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, max_upload_bytes=1000))
    resp = await client.post("/api/documents", data=form(("big.txt", b"a" * 5000)))
    assert resp.status == 413
    assert doubles.storage.objects == {}


async def test_upload_not_multipart_is_415(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/documents", data=b"hello", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert "multipart/form-data" in (await resp.json())["error"]["message"]


EXPECTED_RAG = (
    'id: 1\r\nevent: start\r\ndata: {"backend":"extractive","model":"extractive-v1","cache_hit":false,'
    '"storage_backend":"","collection":"default","queue_ms":0,"retrieval":{"index_version":"v1","cache_hit":false,"search_query":"what keeps chunks?",'
    '"rewrite":"none","history_turns":0,"history_turns_trimmed":0,"conversation_id":"",'
    '"timings":{"total_ms":5.001,"stages_sum_ms":5.0,"stages":[{"name":"embed","ms":2.0,"backend":"",'
    '"ttfb_ms":0.0,"bytes":0,"count":0},{"name":"fetch","ms":3.0,"backend":"default","ttfb_ms":1.0,'
    '"bytes":0,"count":0}]},"chunks":[{"chunk_id":"c1","document_id":"d1","document_name":"storage.md",'
    '"collection":"default","object_key":"chunks/default/c1","text":"passage 1","score":1.0,"bm25_rank":0,'
    '"dense_rank":0,"position":0,"ok":true},{"chunk_id":"c2","document_id":"d1","document_name":"storage.md",'
    '"collection":"default","object_key":"chunks/default/c2","text":"passage 2","score":0.5,"bm25_rank":0,'
    '"dense_rank":0,"position":0,"ok":true}]}}\r\n\r\n'
    'id: 2\r\nevent: retrieval\r\ndata: {"index_version":"v1","cache_hit":false,"search_query":"what keeps chunks?",'
    '"rewrite":"none","history_turns":0,"history_turns_trimmed":0,"conversation_id":"","timings":{"total_ms":5.001,'
    '"stages_sum_ms":5.0,"stages":[{"name":"embed","ms":2.0,"backend":"","ttfb_ms":0.0,"bytes":0,"count":0},'
    '{"name":"fetch","ms":3.0,"backend":"default","ttfb_ms":1.0,"bytes":0,"count":0}]},"chunks":[{"chunk_id":"c1",'
    '"document_id":"d1","document_name":"storage.md","collection":"default","object_key":"chunks/default/c1",'
    '"text":"passage 1","score":1.0,"bm25_rank":0,"dense_rank":0,"position":0,"ok":true},{"chunk_id":"c2",'
    '"document_id":"d1","document_name":"storage.md","collection":"default","object_key":"chunks/default/c2",'
    '"text":"passage 2","score":0.5,"bm25_rank":0,"dense_rank":0,"position":0,"ok":true}]}\r\n\r\n'
    'id: 3\r\nevent: token\r\ndata: {"text":"Object ","index":0}\r\n\r\n'
    'id: 4\r\nevent: token\r\ndata: {"text":"storage ","index":1}\r\n\r\n'
    'id: 5\r\nevent: token\r\ndata: {"text":"keeps ","index":2}\r\n\r\n'
    'id: 6\r\nevent: token\r\ndata: {"text":"chunks ","index":3}\r\n\r\n'
    'id: 7\r\nevent: token\r\ndata: {"text":"[1].","index":4}\r\n\r\n'
    'id: 8\r\nevent: done\r\ndata: {"text":"Object storage keeps chunks [1].","finish_reason":"stop",'
    '"ttft_ms":6.0,"llm_ttft_ms":1.0,"generation_ms":2.0,"tokens_per_s":2500.0,"inter_token_p50_ms":0.0,'
    '"inter_token_p99_ms":0.0,"usage":{"prompt_tokens":40,"completion_tokens":5,"source":"tokenizer"},'
    '"citations":[{"number":1,"collection":"default","document_id":"d1","document_name":"storage.md",'
    '"chunk_id":"c1","object_key":"chunks/default/c1","score":1.0,"text":"passage 1"}],'
    '"timings":{"total_ms":7.001,"stages_sum_ms":7.0,"stages":[{"name":"retrieve","ms":5.0,"backend":"",'
    '"ttfb_ms":0.0,"bytes":0,"count":0},{"name":"generate","ms":2.0,"backend":"","ttfb_ms":0.0,"bytes":0,'
    '"count":0}]},"retrieval_timings":{"total_ms":5.001,"stages_sum_ms":5.0,"stages":[{"name":"embed",'
    '"ms":2.0,"backend":"","ttfb_ms":0.0,"bytes":0,"count":0},{"name":"fetch","ms":3.0,"backend":"default",'
    '"ttfb_ms":1.0,"bytes":0,"count":0}]},"search_query":"what keeps chunks?",'
    '"conversation_id":"","turn_index":0}\r\n\r\n'
)


async def test_rag_stream_exact_bytes(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/rag/stream", params={"q": "what keeps chunks?"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert (await resp.read()).decode() == EXPECTED_RAG
    req = doubles.llm.requests[0]
    assert (req.question, req.collection, req.top_k) == ("what keeps chunks?", "default", 5)


async def test_rag_stream_passes_backend_and_collection(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/rag/stream", params={"q": "x", "backend": "s3", "collection": "kb", "top_k": "3"})
    events = parse_sse(await resp.read())
    assert events[0]["data"]["storage_backend"] == "s3"
    req = doubles.llm.requests[0]
    assert (req.storage_backend, req.collection, req.top_k) == ("s3", "kb", 3)


async def test_rag_stream_bad_input_is_400_json(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    for params in (
        {"q": ""},
        {"q": "   "},
        {},
        {"q": "x", "top_k": "0"},
        {"q": "x" * 5000},
        {"q": "x", "collection": "Bad!"},
    ):
        resp = await client.get("/api/rag/stream", params=params)
        assert resp.status == 400, params
        assert resp.content_type == "application/json"
    resp = await client.get("/api/rag/stream", params={"q": ""})
    assert "question is empty" in (await resp.json())["error"]["message"]
    assert doubles.llm.requests == []


async def test_rag_stream_upstream_refusal_keeps_its_status(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/rag/stream", params={"q": "refuse please"})
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err == {
        "status": 400,
        "reason": "COLLECTION_EMPTY",
        "message": "the collection has no index yet",
        "service": "llm_gateway",
    }


async def test_rag_stream_error_after_start_is_an_event(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/rag/stream", params={"q": "broken answer"})
    assert resp.status == 200
    raw = (await resp.read()).decode()
    assert raw.endswith(
        'id: 3\r\nevent: error\r\ndata: {"status":503,"reason":"BACKEND_DOWN",'
        '"message":"the LLM backend went away"}\r\n\r\n'
    )


async def test_error_as_first_event_keeps_its_status(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/rag/stream", params={"q": "busy now"})
    assert resp.status == 429
    assert (await resp.json())["error"]["reason"] == "BACKEND_BUSY"


async def test_overload_is_429_with_retry_after(aiohttp_client, doubles: Doubles) -> None:
    # The llm_gateway's admission refuses at entry (RESOURCE_EXHAUSTED, OVERLOADED, retry_after_s
    # in ErrorInfo) or after retrieval (an error event first): both are a 429 with Retry-After,
    # sent before any SSE byte; on the JSON route too.
    client = await aiohttp_client(make_app(doubles))
    for q, wait, reason in (("overloaded now", "3", "OVERLOADED"), ("busy, retry later", "2", "BACKEND_BUSY")):
        resp = await client.get("/api/rag/stream", params={"q": q})
        assert resp.status == 429 and resp.content_type == "application/json"
        assert resp.headers["Retry-After"] == wait
        err = (await resp.json())["error"]
        assert err["reason"] == reason and err["retry_after_s"] == int(wait)
        resp = await client.post("/api/rag/query", json={"question": q})
        assert resp.status == 429 and resp.headers["Retry-After"] == wait


async def test_gateway_ceiling_refuses_at_once_by_default(aiohttp_client, doubles: Doubles) -> None:
    # No queue by default: past the ceiling the answer is 429 + Retry-After at once.
    client = await aiohttp_client(make_app(doubles, max_concurrent_answers=1))
    first = await client.get("/api/rag/stream", params={"q": "slow question"})
    await first.content.readuntil(b"\r\n\r\n")  # holds the only slot
    refused = await client.get("/api/rag/stream", params={"q": "second"})
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    first.close()


async def test_answer_admission_queue(aiohttp_client, doubles: Doubles) -> None:
    app = make_app(doubles, max_concurrent_answers=1, answer_queue_timeout_s=0.3)
    client = await aiohttp_client(app)
    first = await client.get("/api/rag/stream", params={"q": "slow question"})
    await first.content.readuntil(b"\r\n\r\n")  # holds the only slot
    refused = await client.get("/api/rag/stream", params={"q": "second"})
    assert refused.status == 429
    assert (await refused.json())["error"]["reason"] == "GATEWAY_BUSY"
    assert refused.headers["Retry-After"] == "1"
    assert len(doubles.llm.requests) == 1  # the refused one never reached the llm_gateway
    queued = asyncio.create_task(client.get("/api/rag/stream", params={"q": "third"}))
    await asyncio.sleep(0.1)
    first.close()  # frees the slot: the queued request goes through
    resp = await queued
    assert resp.status == 200
    events = parse_sse(await resp.read())
    assert events[-1]["event"] == "done"
    assert events[0]["data"]["queue_ms"] >= 50


async def test_llm_down_is_503_naming_the_service(aiohttp_client, doubles: Doubles) -> None:
    await doubles.servers["llm_gateway"].stop(0)
    client = await aiohttp_client(make_app(doubles, request_timeout_s=2.0, answer_timeout_s=2.0))
    resp = await client.get("/api/rag/stream", params={"q": "anyone there?"})
    assert resp.status == 503
    err = (await resp.json())["error"]
    assert err["service"] == "llm_gateway"
    assert "llm_gateway" in err["message"] and "unavailable" in err["message"]


async def test_health_all_serving_then_one_down(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/health")
    assert resp.status == 200
    body = await resp.json()
    assert set(body["services"]) == {"storage", "retriever", "llm_gateway", "embedder"}
    assert all(s["status"] == "serving" for s in body["services"].values())
    await doubles.servers["retriever"].set_serving(False)
    resp = await client.get("/api/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["down"] == ["retriever"]
    assert body["services"]["retriever"]["status"] == "not_serving"
    assert "retriever" in body["message"]
    await doubles.servers["embedder"].stop(0)
    body = await (await client.get("/api/health")).json()
    assert body["down"] == ["retriever", "embedder"]
    assert body["services"]["embedder"]["status"] == "unavailable"


async def test_client_disconnect_cancels_the_upstream_answer(aiohttp_client, doubles: Doubles) -> None:
    app = make_app(doubles)
    client = await aiohttp_client(app)
    resp = await client.get("/api/rag/stream", params={"q": "slow question"})
    assert resp.status == 200
    first = await resp.content.readuntil(b"\r\n\r\n")
    assert b"event: start" in first
    resp.close()  # the browser tab goes away
    await asyncio.wait_for(doubles.llm.answer_cancelled.wait(), 5)
    for _ in range(50):
        if not app[OPEN_STREAMS]:
            break
        await asyncio.sleep(0.05)
    assert len(app[OPEN_STREAMS]) == 0


async def test_client_disconnect_cancels_the_upstream_watch(aiohttp_client, doubles: Doubles) -> None:
    from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

    doubles.retriever.jobs["job-slow"] = rpb.Job(job_id="job-slow", collection="default")
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/ingestion/stream?job_id=job-slow")
    first = await resp.content.readuntil(b"\r\n\r\n")
    assert first.startswith(b"id: 1\r\nevent: progress")
    resp.close()
    await asyncio.wait_for(doubles.retriever.watch_cancelled.wait(), 5)


async def test_ping_comments_keep_the_stream_alive(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, ping_interval_s=0.2))
    resp = await client.get("/api/rag/stream", params={"q": "slow question"})
    raw = b""
    while b": ping\r\n\r\n" not in raw:
        raw += await asyncio.wait_for(resp.content.readuntil(b"\r\n\r\n"), 5)
    resp.close()


async def test_shutdown_ends_open_streams_with_a_terminal_event(aiohttp_client, doubles: Doubles) -> None:
    app = make_app(doubles)
    client = await aiohttp_client(app)
    resp = await client.get("/api/rag/stream", params={"q": "slow question"})
    await resp.content.readuntil(b"\r\n\r\n")
    await close_open_streams(app)
    rest = (await resp.read()).decode()
    assert rest.endswith(
        'event: error\r\ndata: {"status":503,"reason":"SHUTTING_DOWN","message":"the gateway is shutting down"}\r\n\r\n'
    )
    await asyncio.wait_for(doubles.llm.answer_cancelled.wait(), 5)


async def test_index_page_is_served(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/")
    assert resp.status == 200
    html = await resp.text()
    assert "<html" in html
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    scripts = re.findall(r'<script src="([^"]+)"', html) + re.findall(r'href="(/static/[^"]+)"', html)
    assert len(scripts) >= 6
    for src in scripts:
        assert src.startswith("/static/"), src  # everything the page loads is served by the gateway
        asset = await client.get(src)
        assert asset.status == 200, src
        body = await asset.text()
        assert not re.search(r"(src|href|url)\s*[=(]\s*[\"']?https?://", body), src
    chat = await (await client.get("/static/js/chat.js")).text()
    assert "/api/rag/stream" in chat


async def test_unknown_api_path_is_json_404(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/nope")
    assert resp.status == 404
    assert json.loads(await resp.text())["error"]["status"] == 404


def test_app_has_no_module_level_clients() -> None:
    import gateway.app

    assert not [v for v in vars(gateway.app).values() if isinstance(v, web.Application)]
