"""Network faults on the links test_network.py leaves out: gateway -> llm_gateway,
llm_gateway -> retriever, and storage -> the object store (SeaweedFS's S3 port).

Each link runs through a loopback fault proxy (testkit/faultproxy.py) with, in turn,
latency, connection resets and a black hole. The caller of that link runs in this process (a
gateway, an llm_gateway, a storage service), its other peers are the stack's. Every answer stream
must end -- a `done` or an `error` event, or a gRPC status -- within its deadline plus a little;
latency must not break anything; and every object a Put reported stored must be in the bucket
whole, while one that failed must be absent or whole (nothing half-written, nothing twice).

The default run does one fault per link (resets: the fault most likely to leave something half
done); DDNRAG_FAULTS_FULL=1 (bench/reliability.py) runs all three faults on every link.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from clients.base import ServiceCallError
from clients.llm import LlmClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from gateway.config import GatewayConfig
from gateway.server import start as start_gateway
from kernel.config import load_env
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.server import create_server as create_llm
from services.storage.config import StorageConfig
from services.storage.server import create_server as create_storage
from testkit.faultproxy import FaultProxy
from testkit.faults import harness
from testkit.sse import iter_sse
from testkit.stack import RunningStack

pytestmark = [pytest.mark.e2e]

FULL = os.environ.get("DDNRAG_FAULTS_FULL") == "1"
FAULTS: dict[str, dict[str, Any]] = {
    "latency": {"latency_s": 0.2},
    "reset": {"reset": True},
    "blackhole": {"blackhole": True},
}
RUN = list(FAULTS) if FULL else ["reset"]
DEADLINE_S = 15.0  # generous: the healthy answer after a fault must fit on a loaded CI machine
COLLECTION = "links"


@pytest.fixture(scope="module")
def corpus(stack: RunningStack) -> str:
    """A small collection in the stack, searchable before any link test runs."""

    async def ingest() -> None:
        client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"))
        try:
            docs = harness.make_corpus(4, seed=COLLECTION)
            prefix = await asyncio.to_thread(harness.put_corpus, harness.s3_client(stack), COLLECTION, docs)
            job = await client.start_ingest(COLLECTION, [], source_prefix=prefix, timeout=30)
            end = time.monotonic() + 240
            while rpb.JobState.Name((await client.get_job(job.job_id)).state) not in harness.TERMINAL:
                assert time.monotonic() < end
                await asyncio.sleep(0.3)
            while not (await client.search(COLLECTION, "turbine glycol", top_k=3, no_cache=True)).chunks:
                assert time.monotonic() < end
                await asyncio.sleep(0.3)
        finally:
            await client.close()

    asyncio.run(ingest())
    return COLLECTION


@dataclass
class Outcome:
    ended: bool
    how: str
    seconds: float


def _proxy_to(addr: str) -> FaultProxy:
    host, port = addr.rsplit(":", 1)
    return FaultProxy(host, int(port))


async def _under(proxy: FaultProxy, fault: str, attempt: Callable[[], Any]) -> list[Outcome]:
    """Runs `attempt` twice under `fault` (existing connections cut first), then once healthy."""
    proxy.set(**FAULTS[fault])
    if fault != "latency":  # a slow link keeps its connections; broken ones are cut
        proxy.cut_all()
    out = [await attempt(), await attempt()]
    proxy.set()
    proxy.cut_all()
    end = time.monotonic() + 60
    while True:  # the link is back: the caller recovers (channels reconnect within seconds)
        healthy = await attempt()
        if healthy.how in ("done", "ok") or time.monotonic() > end:
            break
        await asyncio.sleep(0.5)
    assert healthy.how in ("done", "ok"), f"no recovery after {fault}: {healthy}"
    return out


def _check(outcomes: list[Outcome], fault: str) -> None:
    for o in outcomes:
        assert o.ended, f"{fault}: a stream never ended ({o})"
        assert o.seconds < DEADLINE_S + 3, f"{fault}: ended only after {o.seconds:.1f} s ({o})"
        if fault == "latency":
            assert o.how in ("done", "ok"), f"latency broke a call: {o}"


@pytest.mark.parametrize("fault", RUN)
async def test_gateway_to_llm_gateway(stack: RunningStack, corpus: str, fault: str) -> None:
    proxy = await _proxy_to(stack.addr("DDNRAG_LLM_GATEWAY_PORT")).start()
    cfg = load_env(
        GatewayConfig,
        {},
        port=0,
        auth="open",
        storage_addr=stack.addr("DDNRAG_STORAGE_PORT"),
        retriever_addr=stack.addr("DDNRAG_RETRIEVER_PORT"),
        llm_gateway_addr=proxy.addr,
        embedder_addr=stack.addr("DDNRAG_EMBEDDER_PORT"),
        answer_timeout_s=DEADLINE_S,
    )
    runner, port = await start_gateway(cfg)

    async def ask() -> Outcome:
        t0 = time.monotonic()
        url = f"http://127.0.0.1:{port}/api/rag/stream"
        params = {"q": f"what about turbine glycol {time.monotonic()}", "collection": corpus, "no_cache": "1"}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DEADLINE_S + 10)) as s:
                async with s.get(url, params=params) as resp:
                    if resp.status != 200:
                        return Outcome(
                            resp.status < 500 or resp.status in (503, 504), f"http {resp.status}", time.monotonic() - t0
                        )
                    async for ev in iter_sse(resp):
                        if ev.event in ("done", "error"):
                            return Outcome(True, ev.event, time.monotonic() - t0)
            return Outcome(False, "stream closed without a terminal event", time.monotonic() - t0)
        except TimeoutError:
            return Outcome(False, "hang", time.monotonic() - t0)

    try:
        _check(await _under(proxy, fault, ask), fault)
    finally:
        await runner.cleanup()
        await proxy.stop()


@pytest.mark.parametrize("fault", RUN)
async def test_llm_gateway_to_retriever(stack: RunningStack, corpus: str, fault: str, tmp_path: Path) -> None:
    proxy = await _proxy_to(stack.addr("DDNRAG_RETRIEVER_PORT")).start()
    cfg = load_env(
        LlmGatewayConfig,
        {},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "llm"),
        retriever_addr=proxy.addr,
        embedder_addr=stack.addr("DDNRAG_EMBEDDER_PORT"),
        cache_max_bytes=0,
    )
    app, port = await create_llm(cfg)
    client = LlmClient(f"127.0.0.1:{port}", retries=0)

    async def ask() -> Outcome:
        t0 = time.monotonic()
        how = "closed without done"
        try:
            async for msg in client.answer(f"turbine glycol {time.monotonic()}", collection=corpus, timeout=DEADLINE_S):
                kind = msg.WhichOneof("event")
                if kind in ("done", "error"):
                    how = kind
        except ServiceCallError as err:
            how = err.code.name
        return Outcome(True, how, time.monotonic() - t0)  # the stream returned: it ended

    try:
        outcomes = await asyncio.wait_for(_under(proxy, fault, ask), 4 * (DEADLINE_S + 10) + 25)
        _check(outcomes, fault)
    finally:
        await client.close()
        await app.stop(0)
        await proxy.stop()


@pytest.mark.parametrize("fault", RUN)
async def test_storage_to_object_store(stack: RunningStack, fault: str, tmp_path: Path) -> None:
    """Puts through a storage service whose S3 link is faulty: each reported success is in the
    bucket whole; each failure left nothing, or the whole object (never a part, never garbage)."""
    s3 = harness.s3_client(stack)
    proxy = await _proxy_to(f"127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}").start()
    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    cfg = load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "storage"),
        default_endpoint=f"http://{proxy.addr}",
        default_bucket=harness.BUCKET,
        default_access_key_id=creds["access_key_id"],
        default_secret_access_key=creds["secret_access_key"],
        max_retries=2,
        retry_base_ms=20.0,
    )
    app, port = await create_storage(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=DEADLINE_S, retries=0)
    prefix = f"links/{fault}/{time.monotonic_ns()}/"
    sent: dict[str, bytes] = {}
    stored: set[str] = set()
    n = 0

    async def put() -> Outcome:
        nonlocal n
        key, data = f"{prefix}{n}", os.urandom(1000 + n * 997)
        n += 1
        sent[key] = data
        t0 = time.monotonic()
        try:
            await client.put(key, data)
            stored.add(key)
            return Outcome(True, "ok", time.monotonic() - t0)
        except ServiceCallError as err:
            assert err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err
            return Outcome(True, err.code.name, time.monotonic() - t0)

    try:
        _check(await _under(proxy, fault, put), fault)
    finally:
        await client.close()
        await app.stop(0)
        await proxy.stop()
    await asyncio.sleep(1.0)  # a write the store accepted after the caller gave up lands by now
    listed = await asyncio.to_thread(s3.list_objects_v2, Bucket=harness.BUCKET, Prefix=prefix)
    keys = {o["Key"] for o in listed.get("Contents", [])}
    assert stored <= keys, f"lost: {sorted(stored - keys)}"
    for key in keys:
        body = (await asyncio.to_thread(s3.get_object, Bucket=harness.BUCKET, Key=key))["Body"].read()
        assert body == sent[key], f"{key} is not what was sent ({len(body)} of {len(sent[key])} bytes)"
    harness.record(
        f"link_faults_storage_{fault}",
        {"scenarios": 1, "chunks_lost": len(stored - keys), "chunks_duplicated": 0},
    )
