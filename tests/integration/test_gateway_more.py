"""The rest of the gateway's API (issue 7) against real gRPC test doubles: backends with write-only
secrets, documents, jobs and the all-jobs dashboard, compare mode, JSON query, benchmarks, caches,
metrics, watches, and protection (API keys, CORS, size limits, rate limit)."""

from __future__ import annotations

import asyncio
import json

from gateway.state import OPEN_STREAMS
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app, parse_sse

__all__ = ["doubles"]

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


async def test_backends_secrets_are_write_only(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post(
        "/api/config/backends",
        json={
            "name": "ddn",
            "kind": "ddn_infinia",
            "endpoint": "https://infinia.example:8111",
            "bucket": "rag",
            "access_key_id": "AKIAEXAMPLEID",
            "secret_access_key": SECRET,
        },
    )
    assert resp.status == 201, await resp.text()
    text = await resp.text()
    assert SECRET not in text and "AKIAEXAMPLEID" not in text
    body = json.loads(text)["backend"]
    assert body["has_credentials"] is True
    assert body["kind"] == "ddn_infinia"
    assert "secret_access_key" not in body and "access_key_id" not in body
    assert doubles.storage.secrets_seen == [SECRET]  # it did reach the storage service
    listing = await (await client.get("/api/config/backends")).text()
    assert SECRET not in listing and "AKIAEXAMPLEID" not in listing
    names = [b["name"] for b in json.loads(listing)["backends"]]
    assert names == ["default", "ddn"]
    test = await (await client.post("/api/config/backends/ddn/test")).json()
    assert test == {
        "backend": "ddn",
        "ok": True,
        "head_bucket_ms": 1.5,
        "can_read": True,
        "can_write": True,
        "message": "",
    }
    assert (await client.delete("/api/config/backends/ddn")).status == 200
    missing = await client.delete("/api/config/backends/ddn")
    assert missing.status == 404
    assert "ddn" in (await missing.json())["error"]["message"]


async def test_backend_validation(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    for body, needle in [
        ({"name": "Bad Name", "bucket": "b"}, "name must be"),
        ({"name": "x", "bucket": "b", "kind": "floppy"}, "kind"),
        ({"name": "x"}, "bucket is required"),
        ({"name": "x", "bucket": "b", "endpoint": "ftp://h"}, "endpoint"),
    ]:
        resp = await client.post("/api/config/backends", json=body)
        assert resp.status == 400, body
        assert needle in (await resp.json())["error"]["message"]
    resp = await client.post("/api/config/backends", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]["message"]
    assert set(doubles.storage.backends) == {"default"}


async def test_documents_list_count_delete(aiohttp_client, doubles: Doubles) -> None:
    import aiohttp

    client = await aiohttp_client(make_app(doubles))
    fd = aiohttp.FormData()
    fd.add_field("file", b"alpha", filename="a.md")
    fd.add_field("file", b"beta", filename="b.txt")
    up = await (await client.post("/api/documents", data=fd)).json()
    listing = await (await client.get("/api/documents")).json()
    assert sorted(d["name"] for d in listing["documents"]) == ["a.md", "b.txt"]
    assert listing["total"] == 2
    assert (await (await client.get("/api/documents/count")).json()) == {"collection": "default", "count": 2}
    doc = up["documents"][0]["document_id"]
    assert (await client.delete(f"/api/documents/{doc}")).status == 200
    assert (await (await client.get("/api/documents/count")).json())["count"] == 1
    assert (await client.delete(f"/api/documents/{doc}")).status == 404


async def test_jobs_start_list_get_cancel(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/ingestion/jobs", json={"object_keys": ["docs/default/x/a.md"], "collection": "kb"})
    assert resp.status == 202
    job_id = (await resp.json())["job_id"]
    assert doubles.retriever.started[0].sources[0].object_key == "docs/default/x/a.md"
    jobs = (await (await client.get("/api/ingestion/jobs")).json())["jobs"]
    assert [j["job_id"] for j in jobs] == [job_id]
    job = (await (await client.get(f"/api/ingestion/jobs/{job_id}")).json())["job"]
    assert job["state"] == "queued" and job["terminal"] is False
    cancelled = (await (await client.post(f"/api/ingestion/jobs/{job_id}/cancel")).json())["job"]
    assert cancelled["state"] == "cancelled" and cancelled["terminal"] is True
    assert (await client.get("/api/ingestion/jobs/none")).status == 404
    assert (await client.post("/api/ingestion/jobs", json={})).status == 400


async def test_all_jobs_stream_snapshot_then_changes(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    await client.post("/api/ingestion/jobs", json={"object_keys": ["docs/a"]})
    resp = await client.get("/api/ingestion/stream/all?interval=0.2")
    assert resp.status == 200
    first = parse_sse(await resp.content.readuntil(b"\r\n\r\n"))[0]
    assert first["event"] == "snapshot" and first["id"] == "t1"
    assert [j["job_id"] for j in first["data"]["jobs"]] == ["job-1"]
    await client.post("/api/ingestion/jobs/job-1/cancel")
    doubles.retriever.jobs["job-1"].updated_unix_ns = 5
    while True:
        block = parse_sse(await asyncio.wait_for(resp.content.readuntil(b"\r\n\r\n"), 5))[0]
        if block.get("event") == "job":
            break
    assert block["data"]["job_id"] == "job-1" and block["data"]["state"] == "cancelled"
    resp.close()


async def test_compare_mode_streams_two_lanes(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/rag/stream", params={"q": "which is faster?", "compare": "ddn,s3"})
    assert resp.status == 200
    events = parse_sse(await resp.read())
    assert events[0]["event"] == "compare" and events[0]["data"]["backends"] == ["ddn", "s3"]
    assert events[-1]["event"] == "done"
    assert set(events[-1]["data"]["lanes"]) == {"ddn", "s3"}
    for lane in ("ddn", "s3"):
        mine = [e for e in events if e["data"].get("lane") == lane]
        assert mine[0]["event"] == "start"
        assert sum(1 for e in mine if e["event"] == "token") == 5
        assert mine[-1]["event"] == "lane_done"
        assert mine[0]["data"]["retrieval"]["timings"]["stages"][1]["backend"] == lane
    assert sorted(r.storage_backend for r in doubles.llm.requests) == ["ddn", "s3"]
    bad = await client.get("/api/rag/stream", params={"q": "x", "compare": "ddn"})
    assert bad.status == 400


async def test_rag_query_json(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/rag/query", json={"question": "what keeps chunks?", "backend": "ddn"})
    assert resp.status == 200
    body = await resp.json()
    assert body["answer"] == "Object storage keeps chunks [1]."
    assert body["citations"][0]["document_name"] == "storage.md"
    assert body["ttft_ms"] == 6.0
    assert body["start"]["retrieval"]["chunks"][0]["chunk_id"] == "c1"
    assert (await client.post("/api/rag/query", json={"question": ""})).status == 400
    assert (await client.post("/api/rag/query", json={"question": "x", "top_k": "many"})).status == 400
    broken = await client.post("/api/rag/query", json={"question": "broken"})
    assert broken.status == 503
    assert (await broken.json())["error"]["reason"] == "BACKEND_DOWN"


async def test_benchmark_stream_list_get_export_compare(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    q = {"backends": "ddn,s3", "preset": "custom", "levels": "1,4", "sizes": "4096", "ops_per_level": "10"}
    resp = await client.get("/api/benchmarks/stream", params=q)
    assert resp.status == 200
    events = parse_sse(await resp.read())
    assert [e["event"] for e in events].count("level") == 4
    assert events[0]["event"] == "progress"
    assert events[-1]["event"] == "done"
    run = events[-1]["data"]["run"]
    assert run["run_id"] == "run-1"
    lvl = run["results"][1]
    assert (lvl["backend"], lvl["concurrency"], lvl["latency"]["p50_ms"], lvl["ttfb"]["p99_ms"]) == ("s3", 1, 1.0, 1.2)
    # The names the browser reads: the operation as a word, the size with its unit.
    assert (lvl["operation"], lvl["object_size_bytes"]) == ("get", 4096)
    req = doubles.storage.runs["run-1"].request
    assert list(req.backends) == ["ddn", "s3"] and list(req.concurrency_levels) == [1, 4]
    # The second run is stored when its stream ends: read it to the end before listing (the
    # response's headers arrive first; listing then raced the stream's last event).
    assert parse_sse(await (await client.get("/api/benchmarks/stream", params=q)).read())[-1]["event"] == "done"
    runs = (await (await client.get("/api/benchmarks")).json())["runs"]
    assert [r["run_id"] for r in runs] == ["run-2", "run-1"]
    assert runs[0]["backends"] == ["ddn", "s3"]
    got = (await (await client.get("/api/benchmarks/run-1")).json())["run"]
    assert got["results"] == run["results"]
    csv_resp = await client.get("/api/benchmarks/run-1/export?format=csv")
    assert csv_resp.headers["Content-Type"].startswith("text/csv")
    # The export is the CSV the storage service stored beside the run (`csv_key`), byte for byte.
    assert await csv_resp.read() == doubles.storage.objects["bench/run-1.csv"]
    lines = (await csv_resp.text()).strip().splitlines()
    assert lines[1].split(",")[2:4] == ["get", "4096"] and len(lines) == 5
    assert "attachment" in csv_resp.headers["Content-Disposition"]
    cmp = await (await client.get("/api/benchmarks/compare?a=run-1&b=run-2")).json()
    assert len(cmp["rows"]) == 4
    assert cmp["rows"][0]["latency_p50_ms"] == {"a": 1.0, "b": 1.0, "ratio": 1.0}
    assert (cmp["rows"][0]["operation"], cmp["rows"][0]["object_size_bytes"]) == ("get", 4096)
    assert (await client.get("/api/benchmarks/nope")).status == 404
    assert (await client.get("/api/benchmarks/stream", params={"backends": ""})).status == 400
    assert (await client.get("/api/benchmarks/stream", params={"backends": "a", "preset": "huge"})).status == 400


async def test_benchmark_disconnect_cancels_the_run(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.get("/api/benchmarks/stream", params={"backends": "ddn", "label": "slow"})
    await resp.content.readuntil(b"\r\n\r\n")
    resp.close()
    await asyncio.wait_for(doubles.storage.bench_cancelled.wait(), 5)


async def test_cache_models_metrics_watches(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    caches = (await (await client.get("/api/cache")).json())["caches"]
    assert caches["embedder"]["hit_rate"] == 0.75 and caches["llm_gateway"]["hit_rate"] == 0.2
    assert caches["retriever"]["cache"] == "retrieval"
    purged = await (await client.post("/api/cache/purge?service=retriever")).json()
    assert purged == {"removed": {"retriever": 3}}
    assert (await client.post("/api/cache/purge?service=nope")).status == 400
    models = (await (await client.get("/api/models")).json())["models"]
    assert models[0]["id"] == "extractive-v1"
    # Read to its end: an answer is counted when its stream ends (a fresh-clone run under load read
    # the summary while the unread stream was still open: answers 0).
    await (await client.get("/api/rag/stream", params={"q": "hello"})).read()
    summary = await (await client.get("/api/metrics/summary")).json()
    assert summary["health"]["status"] == "ok"
    assert summary["embedder"]["device"] == "cpu"
    assert summary["gateway"]["answers"] == 1
    assert summary["gateway"]["ttft_mean_ms"] == 6.0
    prom = await (await client.get("/metrics")).text()
    assert 'gateway_requests_total{code="200",method="GET",route="/api/rag/stream"} 1.0' in prom
    assert 'gateway_sse_events_total{event="token"} 5.0' in prom
    w = await client.post("/api/watches", json={"prefix": "auto_ingest/", "interval_s": 5})
    assert w.status == 201
    watch = (await w.json())["watch"]
    assert watch["active"] is True and watch["files"][0]["status"] == "ingested"
    stopped = (await (await client.post(f"/api/watches/{watch['watch_id']}/stop")).json())["watch"]
    assert stopped["active"] is False
    assert len((await (await client.get("/api/watches")).json())["watches"]) == 1
    assert (await client.post("/api/watches", json={})).status == 400


async def test_metrics_summary_survives_a_down_embedder(aiohttp_client, doubles: Doubles) -> None:
    await doubles.servers["embedder"].stop(0)
    client = await aiohttp_client(make_app(doubles, health_timeout_s=1.0, request_timeout_s=1.0))
    summary = await (await client.get("/api/metrics/summary")).json()
    assert summary["health"]["down"] == ["embedder"]
    assert summary["embedder"]["error"]["service"] == "embedder"
    assert summary["caches"]["embedder"]["error"]["status"] in (503, 504)


async def test_api_keys(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, api_keys=("k-123",)))
    resp = await client.get("/api/documents")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/api/documents", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/api/documents", headers={"Authorization": "Bearer k-123"})).status == 200
    assert (await client.get("/v1/models")).status == 401
    assert (await client.get("/api/health")).status == 200  # probes stay open
    assert (await client.get("/")).status == 200  # the page itself loads; it asks for the key


async def test_cors_allowlist(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, cors_origins=("https://app.example",)))
    ok = await client.get("/api/models", headers={"Origin": "https://app.example"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await client.get("/api/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    pre = await client.options(
        "/api/rag/query", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert pre.status == 204
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    denied = await client.options(
        "/api/rag/query", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert denied.status == 403


async def test_request_size_limit_413(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, max_request_bytes=1000))
    resp = await client.post("/api/rag/query", json={"question": "x" * 2000})
    assert resp.status == 413
    assert (await resp.json())["error"]["reason"] == "TOO_LARGE"
    assert doubles.llm.requests == []


async def test_large_json_body_is_read_whole(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    body = '{"question": "what keeps chunks?"' + " " * 600_000 + "}"
    resp = await client.post("/api/rag/query", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["answer"] == "Object storage keeps chunks [1]."


async def test_rate_limit_429_per_key(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles, api_keys=("a", "b"), rate_limit_rps=0.5, rate_limit_burst=2))
    ha, hb = {"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}
    codes = [(await client.get("/api/models", headers=ha)).status for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = await client.get("/api/models", headers=ha)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert (await client.get("/api/models", headers=hb)).status == 200  # another key has its own bucket


async def test_streams_are_released_after_completion(aiohttp_client, doubles: Doubles) -> None:
    app = make_app(doubles)
    client = await aiohttp_client(app)
    for _ in range(3):
        await (await client.get("/api/rag/stream", params={"q": "hi"})).read()
    assert len(app[OPEN_STREAMS]) == 0


async def test_small_read_endpoints(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    assert await (await client.get("/healthz")).json() == {"status": "ok"}
    formats = await (await client.get("/api/documents/formats")).json()
    assert formats["accepted"] == ["pdf", "docx", "pptx", "xlsx", "csv", "html", "md", "txt"]
    cols = (await (await client.get("/api/collections")).json())["collections"]
    assert cols[0]["name"] == "default"
    emb = await (await client.get("/api/embedder")).json()
    assert (emb["model_id"], emb["device"], emb["dimension"]) == ("double", "cpu", 4)
    await client.post("/api/ingestion/jobs", json={"object_keys": ["docs/a"]})
    events = parse_sse(await (await client.get("/api/ingestion/jobs/job-1/stream")).read())
    assert [e["event"] for e in events] == ["progress", "progress", "progress", "done"]
