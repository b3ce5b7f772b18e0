"""Deadlines travel on every hop, and an expired call leaves no work running downstream.

A retriever and an llm_gateway run in this process; each reaches its peers (the stack's embedder
and storage, and that retriever) only through recording gRPC proxies (tests/support/grpcproxy.py),
which hold the slow link's calls past the caller's deadline. After a Search or an Answer given
50 ms has expired, every downstream call must have arrived with at most that deadline and must
have ended (cancelled or expired) -- none may still be running. `deadline_leaks` counts the
calls that broke either rule; bench/reliability.py reports it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from clients.llm import LlmClient
from clients.retriever import RetrieverClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from kernel.config import load_env
from kernel.server import GrpcApp
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server as create_llm
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server as create_retriever
from testkit.faults import harness
from testkit.stack import RunningStack
from tests.support.grpcproxy import RecordingProxy, Seen

pytestmark = [pytest.mark.e2e]

DEADLINE_S = 0.05
HOLD_S = 1.0  # how long the slow link holds a call: far past the deadline
SETTLE_S = 0.5  # after expiry, by when every downstream call must have ended
ROUNDS = 10 if os.environ.get("DDNRAG_FAULTS_FULL") == "1" else 2
COLLECTION = "deadlines"
PATH = {"Embed", "EmbedStream", "BatchGet", "Search"}  # what a Search or an Answer calls downstream


@dataclass
class Hops:
    retriever: RetrieverClient
    llm: LlmClient
    embedder_link: RecordingProxy
    storage_link: RecordingProxy
    retriever_link: RecordingProxy
    apps: list[GrpcApp]

    @property
    def links(self) -> list[RecordingProxy]:
        return [self.embedder_link, self.storage_link, self.retriever_link]


@pytest.fixture
async def hops(stack: RunningStack, tmp_path: Path) -> AsyncIterator[Hops]:
    embedder = await RecordingProxy(stack.addr("DDNRAG_EMBEDDER_PORT")).start()
    storage = await RecordingProxy(stack.addr("DDNRAG_STORAGE_PORT")).start()
    rcfg = load_env(
        RetrieverConfig,
        {},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "retriever"),
        storage_addr=storage.addr,
        embedder_addr=embedder.addr,
    )
    rapp, rport = await create_retriever(rcfg)
    retriever = await RecordingProxy(f"127.0.0.1:{rport}").start()
    lcfg = load_env(
        LlmGatewayConfig,
        {},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "llm"),
        retriever_addr=retriever.addr,
        embedder_addr=stack.addr("DDNRAG_EMBEDDER_PORT"),
        cache_max_bytes=0,
    )
    lapp, lport = await create_llm(lcfg)
    h = Hops(
        RetrieverClient(f"127.0.0.1:{rport}", retries=0),
        LlmClient(f"127.0.0.1:{lport}", retries=0),
        embedder,
        storage,
        retriever,
        [lapp, rapp],
    )
    try:
        yield h
    finally:
        await h.retriever.close()
        await h.llm.close()
        for app in h.apps:
            await app.stop(0)
        for link in h.links:
            await link.stop()


async def _ingest(h: Hops, stack: RunningStack) -> None:
    docs = harness.make_corpus(4, seed=COLLECTION)
    prefix = await asyncio.to_thread(harness.put_corpus, harness.s3_client(stack), COLLECTION, docs)
    job = await h.retriever.start_ingest(COLLECTION, [], source_prefix=prefix, timeout=30)
    end = time.monotonic() + 180
    while time.monotonic() < end:
        job = await h.retriever.get_job(job.job_id, timeout=10)
        if pb.JobState.Name(job.state) in harness.TERMINAL:
            break
        await asyncio.sleep(0.2)
    assert pb.JobState.Name(job.state) == "JOB_STATE_SUCCEEDED", job
    # Replicas follow the index's CURRENT: wait until this one serves the new version.
    while not (await h.retriever.search(COLLECTION, "turbine glycol", top_k=3, no_cache=True, timeout=10)).chunks:
        assert time.monotonic() < end, "the ingested collection never became searchable"
        await asyncio.sleep(0.2)


def _leaks(calls: list[Seen], expired_at: float) -> list[str]:
    """Calls that arrived with more than the caller's deadline, or still ran after it plus SETTLE_S."""
    out = []
    for c in calls:
        if c.time_remaining is None or c.time_remaining > DEADLINE_S + 0.005:
            out.append(f"{c.method} arrived with deadline {c.time_remaining}")
        if c.outcome == "running" or c.ended > expired_at + SETTLE_S:
            out.append(f"{c.method} still ran {c.ended - expired_at:.2f} s after the deadline ({c.outcome})")
    return out


async def _expire(h: Hops, call: str, query: str, mode: str) -> tuple[list[Seen], float]:
    marks = [len(link.record.calls) for link in h.links]
    t0 = time.monotonic()
    with pytest.raises(ServiceCallError) as err:
        if call == "search":
            await h.retriever.search(COLLECTION, query, top_k=3, mode=mode, no_cache=True, timeout=DEADLINE_S)
        else:
            async for _ in h.llm.answer(query, collection=COLLECTION, top_k=3, timeout=DEADLINE_S):
                pass
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
    expired_at = t0 + DEADLINE_S
    await asyncio.sleep(max(0.0, expired_at + SETTLE_S - time.monotonic()) + 0.05)
    # Only the request's own calls: the retriever also polls the index's CURRENT (List, Get) on
    # its own schedule, with its own deadlines.
    calls = [c for link, m in zip(h.links, marks, strict=True) for c in link.record.calls[m:] if c.method in PATH]
    return calls, expired_at


async def test_expired_calls_leave_no_work_downstream(hops: Hops, stack: RunningStack) -> None:
    await _ingest(hops, stack)
    # A hybrid Search first reaches the embedder (query vector), a BM25 one goes straight to
    # storage (chunk texts): hold each in turn. An Answer first reaches the retriever.
    cases = [
        ("search", "hybrid", hops.embedder_link, ("Embed", "EmbedStream")),
        ("search", "bm25", hops.storage_link, ("BatchGet",)),
        ("answer", "", hops.retriever_link, ("Search",)),
    ]
    leaks: list[str] = []
    seen = 0
    for r in range(ROUNDS):
        for call, mode, link, methods in cases:
            # On a loaded machine 50 ms can run out before the request reaches the held link;
            # such an attempt still counts its leaks, and the case is tried again until it did.
            for attempt in range(5):
                for m in methods:
                    link.delay_s[m] = HOLD_S
                try:
                    calls, expired_at = await _expire(
                        hops, call, f"turbine glycol {r} {attempt} {call} {link.target}", mode
                    )
                finally:
                    link.delay_s.clear()
                seen += len(calls)
                leaks += _leaks(calls, expired_at)
                if any(c.method in methods for c in calls):
                    break
            else:
                pytest.fail(f"the {call} never reached the held link {methods} in 5 tries")
    # The retriever's own index polls (List, Get on storage) may be in flight at any moment; only
    # the requests' calls must all have ended.
    running = [f"{link.target} {c.method}" for link in hops.links for c in link.record.running() if c.method in PATH]
    assert running == [], running
    harness.record(
        "deadlines", {"scenarios": len(cases) * ROUNDS, "downstream_calls": seen, "deadline_leaks": len(leaks)}
    )
    assert leaks == [], leaks
