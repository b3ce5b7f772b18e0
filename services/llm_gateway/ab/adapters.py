"""The A/B engine's ports over the real peers: the retriever's Search, the storage service's
BatchGet / List / BatchPut / ListBackends (each naming the backend), the generator in this
process, and the saved runs in the object store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clients.base import ServiceCallError
from kernel.errors import ErrorKind, ServiceError

from ..domain import ErrorEvent, GenParams, Passage, TokenEvent
from .engine import ChunkRef, Fetched, Hit
from .model import BackendInfo
from .runs import AbRuns

if TYPE_CHECKING:
    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient

    from ..core import LlmGateway

KINDS = {1: "ddn_infinia", 2: "aws_s3", 3: "s3_compatible"}
BATCH = 1000


def _peer(err: ServiceCallError) -> ServiceError:
    return err.to_service_error()


class PeerPorts:
    def __init__(self, retriever: RetrieverClient, storage: StorageClient, core: LlmGateway, runs: AbRuns) -> None:
        self.retriever = retriever
        self.storage = storage
        self.core = core
        self.runs = runs

    async def describe_backends(self, names: Sequence[str]) -> dict[str, BackendInfo]:
        """Every configured backend (the empty name stands for the default one too)."""
        try:
            resp = await self.storage.list_backends()
        except ServiceCallError as err:
            raise _peer(err) from None
        out = {}
        for b in resp.backends:
            sh = b.shaping
            out[b.name] = BackendInfo(
                name=b.name,
                label=b.label,
                emulated=b.emulated,
                kind=KINDS.get(b.kind, ""),
                endpoint=b.endpoint,
                bucket=b.bucket,
                shaping={"rtt_ms": sh.rtt_ms, "jitter_ms": sh.jitter_ms, "bandwidth_mbps": sh.bandwidth_mbps}
                if b.emulated
                else {},
            )
        return out

    async def search(self, collection: str, question: str, top_k: int) -> Hit:
        """The ranking only (`no_fetch`): the retriever reads no chunk, so no backend is warmed
        for these keys before the run's own first fetch."""
        t0 = time.perf_counter_ns()
        try:
            resp = await self.retriever.search(
                collection, question, top_k=top_k, no_cache=True, no_fetch=True, timeout=30.0
            )
        except ServiceCallError as err:
            raise _peer(err) from None
        took = time.perf_counter_ns() - t0
        fetch_ns = sum(s.duration_ns for s in resp.timings.stages if s.name == "fetch")  # 0: none ran
        ok = [c for c in resp.chunks if c.status.code == 0]
        refs = [ChunkRef(c.chunk_id, c.collection, c.document_id, c.position) for c in ok]
        return Hit([c.object_key for c in ok], refs, took, fetch_ns)

    async def fetch(self, backend: str, keys: Sequence[str]) -> Fetched:
        t0 = time.perf_counter_ns()
        try:
            resp = await self.storage.batch_get(list(keys), backend=backend, timeout=30.0)
        except ServiceCallError as err:
            raise _peer(err) from None
        took = time.perf_counter_ns() - t0
        got = Fetched(0, took, 0, [])
        ttfbs = []
        for r in resp.results:
            if r.status.code != 0:
                if not got.error:
                    got.error = ErrorKind.NOT_FOUND.name if r.status.code == 5 else _kind_name(r.status.code)
                    got.error_message = f"{r.key}: {r.status.message}"
                continue
            ttfbs.append(r.transfer.ttfb_ns)
            got.nbytes += len(r.data)
            got.texts.append(r.data.decode("utf-8", errors="replace"))
        # The median chunk TTFB, as the retriever's own `fetch` stage reports it.
        got.ttfb_ns = sorted(ttfbs)[len(ttfbs) // 2] if ttfbs else 0
        return got

    async def missing(self, backend: str, keys: Sequence[str], prefix: str) -> list[str]:
        want = set(keys)
        try:
            have = {o.key async for o in self.storage.list_all(prefix, backend=backend) if o.key in want}
        except ServiceCallError as err:
            raise _peer(err) from None
        return sorted(want - have)

    async def copy_to(self, backend: str, keys: Sequence[str]) -> int:
        """Reads `keys` from the default backend and writes them to `backend`."""
        written = 0
        for i in range(0, len(keys), BATCH):
            part = list(keys[i : i + BATCH])
            try:
                got = await self.storage.batch_get(part, timeout=120.0)
                items = [(r.key, r.data) for r in got.results if r.status.code == 0]
                put = await self.storage.batch_put(items, backend=backend, timeout=120.0)
            except ServiceCallError as err:
                raise _peer(err) from None
            written += sum(1 for r in put.results if r.status.code == 0)
        return written

    async def first_token_ns(self, question: str, texts: Sequence[str]) -> int:
        passages = [Passage(text=t) for t in texts if t.strip()]
        t0 = time.perf_counter_ns()
        async for ev in self.core.generate(question, passages, GenParams(no_cache=True)):
            if isinstance(ev, TokenEvent):
                return time.perf_counter_ns() - t0
            if isinstance(ev, ErrorEvent):
                raise ev.error
        return time.perf_counter_ns() - t0  # no token at all: the whole call

    async def save(self, doc: dict[str, Any]) -> None:
        await self.runs.save(doc)


def _kind_name(code: int) -> str:
    for k in ErrorKind:
        if k.value.value[0] == code:
            return k.name
    return f"CODE_{code}"
