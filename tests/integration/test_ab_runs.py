"""A/B runs over the real services (SeaweedFS, storage, embedder, retriever, llm_gateway on
127.0.0.1:0): the same chunk ids fetched from the default backend and from an emulated one,
interleaved, saved as JSON + CSV, listed, followed again, reported in HTML; bad input refused."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import grpc
import pytest
import pytest_asyncio

from clients.base import ServiceCallError
from clients.llm import AbTestClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.llm.v1 import ab_service_pb2 as ab_pb
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from ddnrag.storage.v1 import storage_service_pb2 as spb
from testkit.faultproxy import S3FaultProxy
from testkit.services import rag_services
from tests.conftest import S3Server
from tests.integration.test_llm_stack import GPUS, STORAGE

pytestmark = pytest.mark.asyncio(loop_scope="module")

QUESTIONS = [
    "Which hardware multiplies matrices with tensor cores?",
    "What decides how fast a small object comes back?",
    "How do GPUs run threads?",
]


@dataclass
class AbStack:
    seaweed: S3Server
    bucket: str
    storage: StorageClient
    retriever: RetrieverClient
    ab: AbTestClient
    # The default backend reaches SeaweedFS through this proxy, "cold-emulated" through the
    # other: their request logs show every object the store itself was asked for.
    default_proxy: S3FaultProxy
    emulated_proxy: S3FaultProxy


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(seaweed: S3Server, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AbStack]:
    tmp: Path = tmp_path_factory.mktemp("ab")
    bucket = f"ab-{random.randrange(10**6)}"
    seaweed.boto3_client().create_bucket(Bucket=bucket)
    clients = []
    creds = (seaweed.access_key_id, seaweed.secret_access_key)
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    proxies = [S3FaultProxy("127.0.0.1", port), S3FaultProxy("127.0.0.1", port)]
    for p in proxies:
        await p.start()
    others = (f"127.0.0.1:{port}", f"127.0.0.1:{proxies[1].port}")  # backends added below
    async with rag_services(
        proxies[0].endpoint, bucket, *creds, tmp, llm_storage=True, endpoint_allowlist=others
    ) as ports:
        sport, rport, lport = ports.storage, ports.retriever, ports.llm_gateway
        try:
            storage = StorageClient(f"127.0.0.1:{sport}", timeout_s=30)
            retriever = RetrieverClient(f"127.0.0.1:{rport}", timeout_s=60)
            ab = AbTestClient(f"127.0.0.1:{lport}", timeout_s=60)
            clients += [storage, retriever, ab]
            await storage.put("docs/abc/gpus/gpus.md", GPUS.encode())
            await storage.put("docs/abc/store/storage.txt", STORAGE.encode())
            keys = ["docs/abc/gpus/gpus.md", "docs/abc/store/storage.txt"]
            job = [e async for e in retriever.ingest("abc", keys)][-1].job
            assert job.state == rpb.JOB_STATE_SUCCEEDED, job
            keys_kw = {"access_key_id": seaweed.access_key_id, "secret_access_key": seaweed.secret_access_key}
            # The same bucket behind a shaping proxy: labelled emulated.
            await storage.put_backend(
                spb.Backend(
                    name="slow-emulated",
                    kind=spb.BACKEND_KIND_S3_COMPATIBLE,
                    endpoint=seaweed.endpoint,
                    bucket=bucket,
                    shaping=spb.Shaping(rtt_ms=2),
                    **keys_kw,
                )
            )
            await storage.put_backend(
                spb.Backend(
                    name="cold-emulated",
                    kind=spb.BACKEND_KIND_S3_COMPATIBLE,
                    endpoint=proxies[1].endpoint,
                    bucket=bucket,
                    shaping=spb.Shaping(rtt_ms=1),
                    **keys_kw,
                )
            )
            yield AbStack(seaweed, bucket, storage, retriever, ab, *proxies)
        finally:
            for c in clients:
                await c.close()
    for p in proxies:
        await p.stop()


def request(*backends: str, questions: list[str] | None = None, **kw: object) -> ab_pb.RunAbTestRequest:
    kw.setdefault("top_k", 2)
    return ab_pb.RunAbTestRequest(
        backends=list(backends), questions=QUESTIONS if questions is None else questions, collection="abc", **kw
    )


async def default_name(stack: AbStack) -> str:
    return (await stack.storage.list_backends()).default_backend


async def test_ab_run_interleaves_saves_lists_and_reports(stack: AbStack) -> None:
    a = await default_name(stack)
    events = [e async for e in stack.ab.run(request(a, "slow-emulated", repeat=2, label="t"))]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "run" and "progress" in kinds, kinds
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    run = events[-1].run
    doc = json.loads(run.document_json)
    assert doc["status"] == "complete", doc["notes"]
    assert run.json_key == f"bench/ab/{run.run_id}.json" and run.csv_key == f"bench/ab/{run.run_id}.csv"
    # Every question and pass fetched from both sides, A,B then B,A alternating.
    samples = doc["samples"]
    assert len(samples) == len(QUESTIONS) * 2 * 2
    firsts = [s["backend"] for s in samples if s["slot"] == 0]
    b = "slow-emulated"
    assert firsts == [a, b, a, b, a, b], firsts  # fetch order: A,B B,A A,B | B,A A,B B,A
    assert all(s["error"] == "" for s in samples), [s for s in samples if s["error"]]
    for phase in ("cold", "warm"):
        summ = doc["summary"][phase]
        assert summ["pairs"] == len(QUESTIONS)  # one pass each
        assert set(summ["paired"]) == {"fetch_ttfb", "fetch_total", "ttft"}
        p = summ["paired"]["fetch_ttfb"]
        assert p["ci_low_ns"] <= p["mean_diff_ns"] <= p["ci_high_ns"]
        assert summ["backends"]["slow-emulated"]["emulated"] is True
        assert summ["backends"]["slow-emulated"]["fetch_ttfb"]["n"] == len(QUESTIONS)
    emu = next(b for b in doc["backends"] if b["name"] == "slow-emulated")
    assert emu["emulated"] and emu["label"].startswith("emulated")
    # Listed (without samples), fetched with CSV and HTML.
    listed = await stack.ab.list()
    mine = [r for r in listed.runs if r.run_id == run.run_id]
    assert mine and "samples" not in json.loads(mine[0].document_json)
    got = await stack.ab.get(run.run_id, include_csv=True, include_html=True)
    rows = list(csv.DictReader(io.StringIO(got.csv)))
    assert len(rows) == len(samples) and {r["emulated"] for r in rows if r["backend"] == "slow-emulated"} == {"True"}
    assert (
        "<svg" in got.html
        and "slow-emulated (emulated)" in got.html
        and "http" not in got.html.split("<h2>Backends")[0]
    )
    # Followed again from a sequence number (the run's events stay on this replica).
    again = [e async for e in stack.ab.watch(run.run_id, after_seq=2)]
    assert [e.seq for e in again] == list(range(3, len(events) + 1)) and again[-1].WhichOneof("event") == "run"


async def test_missing_chunks_are_written_to_the_other_backend_first(stack: AbStack) -> None:
    other = f"ab2-{random.randrange(10**6)}"
    stack.seaweed.boto3_client().create_bucket(Bucket=other)
    await stack.storage.put_backend(
        spb.Backend(
            name="second",
            kind=spb.BACKEND_KIND_S3_COMPATIBLE,
            endpoint=stack.seaweed.endpoint,
            bucket=other,
            access_key_id=stack.seaweed.access_key_id,
            secret_access_key=stack.seaweed.secret_access_key,
        )
    )
    a = await default_name(stack)
    events = [e async for e in stack.ab.run(request(a, "second", questions=QUESTIONS[:1], repeat=1, skip_ttft=True))]
    notices = [e.notice.message for e in events if e.WhichOneof("event") == "notice"]
    assert any("'second' lacked" in m for m in notices), notices
    doc = json.loads(events[-1].run.document_json)
    assert any("written to backend 'second'" in n for n in doc["notes"])
    assert all(s["error"] == "" for s in doc["samples"]) and "ttft" not in doc["summary"]["cold"]["paired"]


def chunk_gets(proxy: S3FaultProxy, since: int) -> list[str]:
    """The chunk objects of collection "abc" the store was asked for (GET) since log entry `since`."""
    return [unquote(p.split("?")[0]) for m, p in proxy.log[since:] if m == "GET" and "/chunks/abc/" in unquote(p)]


async def test_the_cold_pass_is_the_first_read_of_each_chunk_on_both_backends(stack: AbStack) -> None:
    # The search ranks without reading any chunk (SearchRequest.no_fetch), so every fetch of the
    # run, the cold pass's first one included, is a read the store itself serves: each backend's
    # store sees exactly the GETs of the run's own fetches, none before them.
    a, b = await default_name(stack), "cold-emulated"
    since = len(stack.default_proxy.log), len(stack.emulated_proxy.log)
    events = [e async for e in stack.ab.run(request(a, b, repeat=2, skip_ttft=True))]
    doc = json.loads(events[-1].run.document_json)
    assert doc["status"] == "complete" and all(s["error"] == "" for s in doc["samples"]), doc["notes"]
    for name, proxy, start in ((a, stack.default_proxy, since[0]), (b, stack.emulated_proxy, since[1])):
        mine = [s for s in doc["samples"] if s["backend"] == name]
        gets = chunk_gets(proxy, start)
        assert len(gets) == sum(s["chunks"] for s in mine), (name, gets)
        # The cold pass asked the store for every chunk it timed, for the first time.
        cold = sum(s["chunks"] for s in mine if s["phase"] == "cold")
        assert cold > 0 and len(set(gets[:cold])) == len(set(gets)), (name, gets)
    assert all(s["retrieval_fetch_ns"] == 0 for s in doc["samples"])  # the search read no chunk


@pytest.mark.parametrize(
    ("req", "code", "reason"),
    [
        (request("nosuch", "slow-emulated"), grpc.StatusCode.NOT_FOUND, "BACKEND_NOT_FOUND"),
        (request("slow-emulated", questions=[]), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_AB_BACKENDS"),
        (request("a1", "b1", questions=[]), grpc.StatusCode.INVALID_ARGUMENT, "NO_QUESTIONS"),
        (request("a1", "b1", questions=["  "]), grpc.StatusCode.INVALID_ARGUMENT, "BAD_QUESTION"),
        (request("a1", "b1", repeat=11), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REPEAT"),
        (request("a1", "b1", top_k=101), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TOP_K"),
    ],
)
async def test_bad_requests_are_refused_with_a_reason(stack: AbStack, req, code, reason: str) -> None:
    with pytest.raises(ServiceCallError) as ei:
        [e async for e in stack.ab.run(req)]
    assert ei.value.code == code and ei.value.reason == reason, ei.value
    assert ei.value.message


async def test_unknown_runs_are_not_found(stack: AbStack) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await stack.ab.get("20200101T000000Z-00000000")
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and ei.value.reason == "RUN_NOT_FOUND"
    with pytest.raises(ServiceCallError) as ei:
        await stack.ab.get("../etc")
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServiceCallError) as ei:
        [e async for e in stack.ab.watch("20200101T000000Z-00000000")]
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and ei.value.reason == "AB_RUN_NOT_LIVE"
    await asyncio.sleep(0)


def ab_cli(stack: AbStack, *argv: str) -> tuple[int, str, str]:
    """`rag ab ...` against this stack's llm_gateway, with its output."""
    import contextlib

    from cli.commands import common
    from cli.main import main

    out, err = io.StringIO(), io.StringIO()
    # Rich's `file` property falls back to sys.stdout when unset: restore the unset state itself,
    # not the stream it returned, or later tests' captured output would go to that old stream.
    saved = common.console._file, common.err_console._file
    common.console.file, common.err_console.file = out, err
    try:
        with contextlib.redirect_stdout(out):
            code = main(["ab", *argv, "--llm-gateway-addr", stack.ab.address])
    finally:
        common.console._file, common.err_console._file = saved
    return code, out.getvalue(), err.getvalue()


async def test_cli_runs_an_ab_and_exports_the_report(stack: AbStack, tmp_path: Path) -> None:
    qfile = tmp_path / "q.txt"
    qfile.write_text("# questions\n" + "\n".join(QUESTIONS) + "\n")
    a = await default_name(stack)
    html, csv_path = tmp_path / "r.html", tmp_path / "r.csv"
    code, out, err = await asyncio.to_thread(
        ab_cli,
        stack,
        "--backends",
        f"{a},slow-emulated",
        "--questions",
        str(qfile),
        "--n",
        "2",
        "--repeat",
        "1",
        "--collection",
        "abc",
        "--top-k",
        "2",
        "--html",
        str(html),
        "--csv",
        str(csv_path),
        "--json",
    )
    assert code == 0, (out, err)
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["request"]["questions_count"] == 2 and doc["request"]["source"] == "q.txt, first 2 of 3"
    assert "<svg" in html.read_text() and len(csv_path.read_text().splitlines()) == 1 + 2 * 2
    code, out, _ = await asyncio.to_thread(ab_cli, stack, "--list")
    assert code == 0 and doc["run_id"] in out and "slow-emulated (emulated)" in out
    code, out, _ = await asyncio.to_thread(ab_cli, stack, "--cmp", doc["run_id"], doc["run_id"], "--json")
    cmp = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and cmp["rows"] and all(r["b_over_a"] == 1.0 for r in cmp["rows"]), cmp


async def test_cli_bad_input_gets_clear_errors(stack: AbStack, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    a = await default_name(stack)
    cases = [
        (["--backends", f"{a},slow-emulated", "--questions", str(empty)], "holds no questions"),
        (["--backends", f"{a},slow-emulated", "--questions", str(empty), "--n", "0"], "--n must be 1 or more"),
        (["--backends", a, "--questions", str(empty)], "give two backends"),
        (["--backends", f"{a},nosuch", "--questions", __file__, "--n", "1"], "'nosuch' is not configured"),
        (["--backends", f"{a},slow-emulated", "--questions", str(tmp_path / "none")], "neither a question file"),
    ]
    for argv, want in cases:
        code, out, err = await asyncio.to_thread(ab_cli, stack, *argv)
        assert code != 0 and want in err, (argv, code, out, err)


async def test_http_runs_follows_with_resume_and_serves_report_and_exports(stack: AbStack) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import create_app
    from gateway.config import GatewayConfig
    from tests.integration.test_gateway_doubles import parse_sse

    storage_addr = stack.storage.address
    cfg = GatewayConfig(
        port=0,
        auth="open",
        storage_addr=storage_addr,
        retriever_addr=stack.retriever.address,
        llm_gateway_addr=stack.ab.address,
        embedder_addr=storage_addr,  # not called here
    )
    a = await default_name(stack)
    async with TestClient(TestServer(create_app(cfg))) as http:
        bad = [
            ({"backends": [a], "questions": "q?"}, 400, "INVALID_AB_BACKENDS"),
            ({"backends": [a, "slow-emulated"], "questions": "\n# only a comment\n"}, 400, "NO_QUESTIONS"),
            ({"backends": [a, "slow-emulated"], "questions": "q?", "n": 0}, 400, ""),
            ({"backends": [a, "nosuch"], "questions": "q?", "collection": "abc"}, 404, "BACKEND_NOT_FOUND"),
        ]
        for body, status, reason in bad:
            r = await http.post("/api/ab/runs", json=body)
            err = (await r.json())["error"]
            assert r.status == status and err["message"] and (not reason or err["reason"] == reason), (body, err)
        body = {
            "backends": f"{a},slow-emulated",
            "questions": "\n".join(QUESTIONS[:2]),
            "repeat": 1,
            "collection": "abc",
        }
        r = await http.post("/api/ab/runs", json={**body, "top_k": 2})
        assert r.status == 202, await r.text()
        run_id = (await r.json())["run_id"]
        events = parse_sse(await (await http.get(f"/api/ab/runs/{run_id}/stream")).read())
        named = [e for e in events if "event" in e]
        assert named[-1]["event"] == "done" and named[-1]["data"]["run"]["status"] == "complete"
        assert "samples" not in named[-1]["data"]["run"]
        # Resumed after event 1: the same events from 2 on.
        again = parse_sse(
            await (await http.get(f"/api/ab/runs/{run_id}/stream", headers={"Last-Event-ID": "1"})).read()
        )
        assert [e["id"] for e in again if "event" in e] == [e["id"] for e in named[1:]]
        report = await http.get(f"/api/ab/runs/{run_id}/report")
        assert report.status == 200 and "default-src 'none'" in report.headers["Content-Security-Policy"]
        assert "<svg" in await report.text()
        csv_r = await http.get(f"/api/ab/runs/{run_id}/export?format=csv")
        assert csv_r.status == 200 and len((await csv_r.text()).strip().splitlines()) == 1 + 2 * 2
        listed = await (await http.get("/api/ab/runs")).json()
        assert run_id in [r["run_id"] for r in listed["runs"]]
        assert (await http.get("/api/ab/runs/nope")).status == 400
