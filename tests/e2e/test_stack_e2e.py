"""The whole stack as a user runs it: `rag up --replicas 2` (SeaweedFS, two storage and two
retriever processes behind client-side round robin, the other services and the gateway), then
upload -> ingestion SSE -> question SSE with citations, a question answered with one replica of
each killed, then a clean stop. tests/e2e/test_cli_e2e.py runs the default, one process each."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import boto3
import grpc
import pytest
from botocore.config import Config

from cli.seaweed import port_in_use
from testkit.otlp import OtlpReceiver, ReceivedSpan
from testkit.sse import iter_sse
from testkit.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e]

DOC_NAME = "zephyr-cooling.md"
DOC = b"""# Project Zephyr cooling loop

Project Zephyr is the liquid cooling loop of the Oslo data hall. The Zephyr loop keeps every
GPU rack below 30 degrees Celsius using a glycol mixture pumped at 120 litres per minute.
The loop was commissioned in March 2024 by the facilities team led by Ingrid Solberg.
"""


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[RunningStack]:
    # Tracing on, exported to the in-process receiver: every test here runs traced.
    s = start_stack(tmp_path_factory.mktemp("stack") / "data", replicas=2, extra_env=otlp.env)
    try:
        yield s
    finally:
        s.stop()


async def _upload(
    session: aiohttp.ClientSession, url: str, name: str, body: bytes, ctype: str
) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("file", body, filename=name, content_type=ctype)
    return await session.post(f"{url}/api/documents", data=form)


async def test_upload_ingest_ask_with_citations(stack: RunningStack) -> None:
    async with aiohttp.ClientSession() as session:
        resp = await _upload(session, stack.url, DOC_NAME, DOC, "text/markdown")
        assert resp.status in (200, 201, 202), await resp.text()
        job_id = (await resp.json())["job_id"]

        events = []
        async with session.get(f"{stack.url}/api/ingestion/stream", params={"job_id": job_id}) as sse:
            assert sse.status == 200
            assert sse.headers["Content-Type"].startswith("text/event-stream")
            async for ev in iter_sse(sse):
                events.append(ev)
                if ev.event in ("done", "error"):
                    break
        names = [e.event for e in events]
        assert names[-1] == "done", f"ingestion ended with {events[-1].event}: {events[-1].data}"
        assert "progress" in names

        # Two retriever replicas: the one that did not run the job sees the commit once it has
        # followed CURRENT (within 2 s, bench/retriever_scale.py measures it). Round robin may
        # send the question there first, so ask until both have it, with a loose bound for a
        # loaded machine.
        t0 = time.monotonic()
        while True:
            async with session.get(
                f"{stack.url}/api/rag/stream",
                params={"q": "What temperature does the Zephyr loop keep GPU racks below?", "no_cache": "true"},
            ) as sse:
                assert sse.status == 200
                got = [ev async for ev in iter_sse(sse)]
            kinds = [e.event for e in got]
            assert kinds[0] == "start", kinds
            # The extractive answer is made at once: its pieces leave together (coalesce.py).
            assert kinds.count("token") >= 1
            assert kinds[-1] == "done", got[-1].data
            done = got[-1].json()
            answer = "".join(e.json()["text"] for e in got if e.event == "token")
            if "30" in answer or time.monotonic() - t0 > 10:
                break
            await asyncio.sleep(0.2)
        assert "30" in answer, answer
        docs = {c["document_name"] for c in done["citations"]}
        assert DOC_NAME in docs, done["citations"]
        cited = next(c for c in done["citations"] if c["document_name"] == DOC_NAME)
        assert cited["object_key"].startswith("chunks/") and cited["chunk_id"]
        assert "timings" in done


SERVER, CLIENT = 2, 3  # OTLP span kinds
TRACED = {"gateway", "llm_gateway", "retriever", "embedder", "storage"}


def _answer_traced(spans: list[ReceivedSpan]) -> bool:
    """The whole answer has arrived: each service's server span, and the S3 reads."""
    served = {s.service for s in spans if s.kind == SERVER}
    ended = any("ddnrag.sse.events" in s.attributes for s in spans)  # the gateway's span, ended
    return TRACED <= served and any(s.name == "S3.GetObject" for s in spans) and ended


async def test_one_question_is_one_connected_trace_across_every_service(
    stack: RunningStack, otlp: OtlpReceiver
) -> None:
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    # A question no cache has seen, so every stage runs.
    question = f"How is the Zephyr loop cooled? ({os.urandom(4).hex()})"
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{stack.url}/api/rag/stream",
            params={"q": question},
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        ) as sse:
            assert sse.status == 200
            assert sse.headers["X-Trace-Id"] == trace_id
            got = [ev async for ev in iter_sse(sse)]
    assert got[-1].event == "done", got[-1].data
    assert got[-1].json()["trace_id"] == trace_id

    spans = await asyncio.to_thread(otlp.wait_for, _answer_traced, trace_id)
    by_id = {s.span_id: s for s in spans}
    # One connected trace: the gateway's request span is the one child of the caller's span,
    # and every other span's parent is in the trace.
    roots = [s for s in spans if s.parent_span_id == parent]
    assert [(r.service, r.kind) for r in roots] == [("gateway", SERVER)], roots
    orphans = [s for s in spans if s.parent_span_id != parent and s.parent_span_id not in by_id]
    assert not orphans, [(s.service, s.name) for s in orphans]
    # Parented correctly: each service's server span is the child of a span in the calling
    # process (the stage or request span the call was made in), and the answer's hops are there.
    hops = set()
    for s in spans:
        if s.kind == SERVER and s.service != "gateway":
            up = by_id[s.parent_span_id]
            assert up.service != s.service, (s.service, s.name, up.name)
            hops.add((up.service, s.service, s.name.rsplit("/", 1)[-1]))
    assert {
        ("gateway", "llm_gateway", "Answer"),
        ("llm_gateway", "retriever", "Search"),
        ("retriever", "embedder", "Embed"),
        ("retriever", "storage", "BatchGet"),
    } <= hops, hops
    # Spans per stage, with their attributes.
    stage = {s.name: s for s in spans if s.kind not in (SERVER, CLIENT)}
    for name in ("retrieve", "prompt", "generate", "bm25", "dense", "fusion", "fetch"):
        assert name in stage, (name, sorted(stage))
    assert stage["bm25"].attributes["ddnrag.candidates"] >= 1
    assert stage["fetch"].attributes["ddnrag.bytes"] > 0 and stage["fetch"].attributes["ddnrag.object_keys"]
    gen = stage["generate"].attributes
    assert gen["gen_ai.usage.output_tokens"] > 0 and gen["gen_ai.response.finish_reasons"]
    assert gen["ddnrag.llm.ttft_ns"] > 0
    embed = next(s for s in spans if s.service == "embedder" and s.kind == SERVER and s.name.endswith("/Embed"))
    assert embed.attributes["ddnrag.embed.texts"] == 1 and embed.attributes["ddnrag.embed.tokens"] > 0
    # The storage service's S3 requests are in the trace, with the object key and TTFB.
    gets = [s for s in spans if s.name == "S3.GetObject"]
    assert all(g.service == "storage" and g.kind == CLIENT and g.attributes.get("aws.request_id") for g in gets)
    # The chunks, and the stored sentence vectors of each (services/retriever/sentence_vectors.py).
    keys = [g.attributes["aws.s3.key"] for g in gets]
    assert any(k.startswith("chunks/") for k in keys) and all(k.startswith(("chunks/", "sentences/")) for k in keys)
    assert all(g.attributes["ddnrag.ttfb_ns"] > 0 for g in gets)
    # The gateway's request span was still open when the stream's terminal event went out (a
    # span takes no attributes once ended).
    assert roots[0].attributes["ddnrag.sse.terminal_event"] == "done" and roots[0].attributes["ddnrag.sse.events"] >= 3


async def test_grpc_trailers_carry_the_trace_id_even_on_errors(stack: RunningStack) -> None:
    from ddnrag.storage.v1 import storage_service_pb2 as spb
    from ddnrag.storage.v1 import storage_service_pb2_grpc as spb_grpc

    trace_id = os.urandom(16).hex()
    md = (("traceparent", f"00-{trace_id}-{os.urandom(8).hex()}-01"),)
    async with grpc.aio.insecure_channel(stack.addr("DDNRAG_STORAGE_PORT")) as ch:
        stub = spb_grpc.StorageServiceStub(ch)
        ok = stub.ListBackends(spb.ListBackendsRequest(), metadata=md, timeout=30)
        await ok
        assert ("x-trace-id", trace_id) in tuple(await ok.trailing_metadata())
        missing = stub.Head(spb.HeadRequest(key=f"no/such/{trace_id}"), metadata=md, timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await missing
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("x-trace-id", trace_id) in tuple(err.value.trailing_metadata() or ())


def test_chunk_objects_really_are_in_seaweedfs(stack: RunningStack) -> None:
    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}",
        aws_access_key_id=creds["access_key_id"],
        aws_secret_access_key=creds["secret_access_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ddnrag", Prefix="chunks/default/").get("Contents", [])]
    assert keys, "no chunk objects in the bucket"
    docs = [o["Key"] for o in s3.list_objects_v2(Bucket="ddnrag", Prefix="docs/default/").get("Contents", [])]
    assert any(k.endswith("/ttfb-and-latency.md") for k in docs), docs  # the sample corpus


async def test_bad_input_is_refused_and_leaves_nothing(stack: RunningStack) -> None:
    async with aiohttp.ClientSession() as session:
        empty = await _upload(session, stack.url, "empty.txt", b"", "text/plain")
        assert empty.status in (415, 422)
        assert "accepted" in (await empty.text()).lower() or "empty" in (await empty.text()).lower()
        binary = await _upload(session, stack.url, "blob.txt", bytes(range(256)) * 4, "text/plain")
        assert binary.status in (415, 422), await binary.text()
        exe = await _upload(session, stack.url, "tool.exe", b"MZ\x90\x00", "application/octet-stream")
        assert exe.status == 415, await exe.text()
        assert "pdf" in (await exe.text()).lower()
        q = await session.get(f"{stack.url}/api/rag/stream", params={"q": "   "})
        assert q.status == 400
        docs = await session.get(f"{stack.url}/api/documents")
        if docs.status == 200:
            names = json.dumps(await docs.json())
            assert "blob.txt" not in names and "tool.exe" not in names and "empty.txt" not in names


SERVICES = {
    "DDNRAG_EMBEDDER_PORT": "ddnrag.embedder.v1.EmbedderService",
    "DDNRAG_STORAGE_PORT": "ddnrag.storage.v1.StorageService",
    "DDNRAG_RETRIEVER_PORT": "ddnrag.retriever.v1.RetrieverService",
    "DDNRAG_LLM_GATEWAY_PORT": "ddnrag.llm.v1.LlmService",
}


@pytest.mark.parametrize("port_var", list(SERVICES))
def test_grpcurl_lists_service_and_health_says_serving(stack: RunningStack, port_var: str) -> None:
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    addr = stack.addr(port_var)
    listed = subprocess.run([grpcurl, "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert SERVICES[port_var] in names and "grpc.health.v1.Health" in names, names
    described = subprocess.run(
        [grpcurl, "-plaintext", addr, "describe", SERVICES[port_var]], capture_output=True, text=True, timeout=30
    )
    assert described.returncode == 0 and "rpc " in described.stdout, described.stderr
    health = subprocess.run(
        [grpcurl, "-plaintext", "-d", "{}", addr, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_rag_status_reports_serving(stack: RunningStack) -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "rag"), "status", "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    status = json.loads(out.stdout)
    assert all(s["serving"] for s in status["services"].values()), status


def test_port_in_use_names_port_and_variable(stack: RunningStack, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "rag"), "up"],
        env={**stack.env, "DDNRAG_DATA_DIR": str(tmp_path / "other")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"port {stack.ports['DDNRAG_GATEWAY_PORT']} is already in use" in out.stdout
    assert "DDNRAG_GATEWAY_PORT" in out.stdout


def _child_pids(output: str) -> dict[str, int]:
    """The latest pid of each child, from the supervisor's output."""
    pids: dict[str, int] = {}
    for name, pid in re.findall(r"^\s+([\w-]+)\s+(?:healthy in .*|restarted .*)\(pid (\d+)\)", output, re.M):
        pids[name] = int(pid)
    return pids


def test_dead_child_is_restarted(stack: RunningStack) -> None:
    import requests

    before = _child_pids(stack.output())["llm_gateway"]
    subprocess.run(["kill", "-9", str(before)], check=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "llm_gateway restarted" not in stack.output():
        time.sleep(0.5)
    assert "llm_gateway restarted" in stack.output(), stack.output()[-3000:]
    after = _child_pids(stack.output())["llm_gateway"]
    assert after != before
    # The gateway's channel reconnects within its (short) reconnect backoff.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and requests.get(f"{stack.url}/api/health", timeout=10).status_code != 200:
        time.sleep(0.5)
    assert requests.get(f"{stack.url}/api/health", timeout=10).status_code == 200


async def _ask(url: str, question: str) -> tuple[list[str], str]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/api/rag/stream", params={"q": question}) as sse:
        assert sse.status == 200
        got = [ev async for ev in iter_sse(sse)]
    return [e.event for e in got], "".join(e.json()["text"] for e in got if e.event == "token")


async def test_every_replica_serves_and_losing_one_of_each_loses_no_question(stack: RunningStack) -> None:
    """Both replicas of storage and of the retriever answer on their own ports; with one of each
    SIGKILLed, questions are still answered (round robin routes around the dead replica)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    for var in ("DDNRAG_STORAGE_PORT", "DDNRAG_RETRIEVER_PORT"):
        for port in (stack.ports[var], stack.all_ports()[f"{var}#1"]):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, var
    pids = _child_pids(stack.output())
    for child in ("storage-1", "retriever-1"):
        os.kill(pids[child], signal.SIGKILL)
    for _ in range(3):
        kinds, answer = await _ask(stack.url, "What temperature does the Zephyr loop keep GPU racks below?")
        assert kinds[-1] == "done" and "30" in answer, (kinds, answer)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        f"{c} restarted" in stack.output() for c in ("storage-1", "retriever-1")
    ):
        await asyncio.sleep(0.5)
    assert "storage-1 restarted" in stack.output() and "retriever-1 restarted" in stack.output(), stack.output()[-3000:]


def test_sigterm_stops_every_child_and_frees_ports(stack: RunningStack) -> None:
    child_pids = list(_child_pids(stack.output()).values())
    assert len(child_pids) == 8, stack.output()  # SeaweedFS, 2 storage, embedder, 2 retriever, llm, gateway
    code = stack.stop()
    assert code == 0, stack.output()[-3000:]
    assert "stopped" in stack.output()
    time.sleep(0.5)
    for var, port in stack.all_ports().items():
        assert not port_in_use(port), f"{var}={port} still bound after stop"
    alive = [pid for pid in child_pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"orphaned children: {alive}"
