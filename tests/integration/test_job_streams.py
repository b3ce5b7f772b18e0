"""Job progress streams over real gRPC survive what ended `rag ingest` after 5.5 minutes (issue 17).

The cause: every server recycles its connections after `grpc.max_connection_age_ms` (300 s) plus
a 30 s grace (kernel/server.py), so a Ingest/WatchJob stream older than 330 s was cut
with UNAVAILABLE and the CLI reported a live retriever as unreachable. Here the age is shortened
to about a second and the job made to last several, so the same cut happens in seconds; a TCP
proxy cut stands for a real network drop. The retriever is the real service on 127.0.0.1:0; its
store and encoder are the in-memory doubles of the unit tests, to keep this fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from clients.retriever import RetrieverClient
from kernel import server as common_server
from testkit.faultproxy import FaultProxy
from tests.support.retriever_doubles import DOCS, DictStore, HashingEncoder, serve_retriever

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[dict[str, Any]]:
    # A test marked `full_connection_age` keeps the servers' own age (300 s), so that the only
    # thing that can break its stream is the cut it makes itself.
    if request.node.get_closest_marker("full_connection_age") is None:
        opts = [o for o in common_server.SERVER_OPTIONS if not o[0].startswith("grpc.max_connection_age")]
        monkeypatch.setattr(
            common_server,
            "SERVER_OPTIONS",
            [*opts, ("grpc.max_connection_age_ms", 1000), ("grpc.max_connection_age_grace_ms", 300)],
        )
    store, encoder = DictStore(), HashingEncoder()
    app, port = await serve_retriever(
        tmp_path,
        store,
        encoder,
        chunk_size_tokens=32,
        chunk_overlap_tokens=4,
        write_batch=2,
        embed_batch=2,
        heartbeat_s=0.3,
        lease_duration_s=3.0,
    )
    for i in range(24):
        key = f"docs/kb/d{i}/d{i}.txt"
        await store.put_many([(key, f"{DOCS['gpus']} Document {i} talks about topic {i}.".encode())])
    try:
        yield {"app": app, "port": port, "store": store, "encoder": encoder}
    finally:
        await app.stop(0)


def counting(client: RetrieverClient) -> list[int]:
    """Counts the WatchJob calls the client opens (each one a resume)."""
    opened: list[int] = []
    inner = client.stub.WatchJob

    def watch(req: Any, **kw: Any) -> Any:
        opened.append(req.after_sequence)
        return inner(req, **kw)

    client.stub.WatchJob = watch  # type: ignore[method-assign]
    return opened


SOURCES = [f"docs/kb/d{i}/d{i}.txt" for i in range(24)]


async def test_stream_outlives_the_servers_connection_age(service: dict[str, Any]) -> None:
    service["store"].delay_s = 0.25  # 12 batches: the job takes about 3 s, several connection ages
    client = RetrieverClient(f"127.0.0.1:{service['port']}")
    opened = counting(client)
    try:
        events = [ev async for ev in client.ingest("kb", SOURCES)]
    finally:
        await client.close()
    assert events[-1].terminal and events[-1].job.state == 3  # JOB_STATE_SUCCEEDED
    assert events[-1].job.documents_done == 24
    assert opened, "the stream never broke: the test did not exercise the connection age"
    assert all(a > 0 for a in opened)  # each resume asked for what came after the last event seen
    seqs = [e.sequence for e in events]
    assert seqs == sorted(seqs)


@pytest.mark.full_connection_age
async def test_stream_resumes_after_a_cut_connection(service: dict[str, Any]) -> None:
    # With the servers' connection age shortened (the other tests here), a slow event could come
    # after an age cut, so the first resume was sometimes the age's and not this test's cut: it
    # failed once on a fresh clone with the resumes at sequences 2, 4, 6, ... Here the cut is the
    # only break.
    service["store"].delay_s = 0.2
    proxy = await FaultProxy("127.0.0.1", service["port"]).start()
    client = RetrieverClient(proxy.addr)
    opened = counting(client)
    got: list[Any] = []
    try:
        async for ev in client.ingest("kb", SOURCES):
            got.append(ev)
            if len(got) == 3:
                proxy.cut_all()  # a network drop mid-job: the client reconnects and resumes
    finally:
        await client.close()
        await proxy.stop()
    assert got[-1].terminal and got[-1].job.state == 3 and got[-1].job.documents_done == 24
    assert len(opened) == 1 and opened[0] >= got[2].sequence  # one resume, from what was seen
    seqs = [e.sequence for e in got]
    assert seqs == sorted(seqs)  # in order across the resume (a heartbeat repeats the last one)


async def test_idle_stream_gets_heartbeats_and_a_twin_request_joins(service: dict[str, Any]) -> None:
    gate = service["encoder"].gate = asyncio.Event()  # embedding blocks: no progress at all
    client = RetrieverClient(f"127.0.0.1:{service['port']}")
    try:
        job = await client.start_ingest("kb", SOURCES)
        twin = await client.start_ingest("kb", list(reversed(SOURCES)))  # the same files, the same options
        assert twin.job_id == job.job_id
        other = await client.start_ingest("kb", SOURCES[:1])
        assert other.job_id != job.job_id

        events = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async for ev in client.watch_job(job.job_id):
            events.append(ev)
            if len(events) == 4:
                break
        # Nothing changed, yet the stream repeated the state about every 0.3 s.
        assert loop.time() - t0 < 3.0
        assert len({e.sequence for e in events[1:]}) == 1 and not events[-1].terminal
        gate.set()
        last = [ev async for ev in client.watch_job(job.job_id)][-1]
        assert last.terminal and last.job.state == 3
        listed = await client.list_jobs("kb")
        assert {j.job_id for j in listed.jobs} == {job.job_id, other.job_id}
    finally:
        gate.set()
        await client.close()
