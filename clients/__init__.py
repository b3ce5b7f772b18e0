"""Typed async clients of the Build.DDN.RAG services, and `RagClient`, one facade over the four.

    async with RagClient(storage="127.0.0.1:50052", retriever="127.0.0.1:50053",
                         llm_gateway="127.0.0.1:50054", embedder="127.0.0.1:50051") as rag:
        async for ev in rag.ingest_files("default", [Path("notes.md")]):
            ...
        async for ev in rag.answer("What is TTFB?"):
            ...

Each per-service client lives in its own module (`clients.storage.StorageClient`, ...). Every
failure raises `clients.base.ServiceCallError`, which names the service and address and carries
the ErrorInfo reason. The per-service modules are imported when first used, so importing
`clients.base` stays light.
"""

from __future__ import annotations

import asyncio
import mimetypes
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kernel.filetypes import CONTENT_TYPES, kind_of
from kernel.ids import document_id, document_key

if TYPE_CHECKING:
    from ddnrag.llm.v1 import llm_service_pb2 as llm_pb
    from ddnrag.retriever.v1 import retriever_service_pb2 as ret_pb

    from .embedder import EmbedderClient
    from .llm import LlmClient
    from .retriever import RetrieverClient
    from .storage import StorageClient

__all__ = ["CacheReport", "RagClient", "UploadedDocument"]

UPLOAD_PIECE = 1024 * 1024


def content_type_of(name: str) -> str:
    kind = kind_of(name)
    return CONTENT_TYPES[kind] if kind else mimetypes.guess_type(name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class UploadedDocument:
    """A raw document stored at `docs/<collection>/<document_id>/<name>`."""

    name: str
    document_id: str
    object_key: str
    size_bytes: int
    upload_ns: int


@dataclass(frozen=True)
class CacheReport:
    """One service's cache figures (`error` set instead when the service could not be asked)."""

    service: str
    address: str
    entries: int = 0
    size_bytes: int = 0
    max_size_bytes: int = 0
    hits: int = 0
    misses: int = 0
    error: str = ""
    # The gRPC status code name of the failure ("UNAVAILABLE", ...), empty when there was none.
    error_code: str = ""


class RagClient:
    """One object for an application that talks to the whole platform.

    The per-service clients are created on first use (`rag.storage`, `rag.retriever`, ...), so
    a command that only searches never opens a channel to the storage service. Close with
    `await rag.close()` or `async with`."""

    def __init__(
        self,
        *,
        storage: str = "127.0.0.1:50052",
        embedder: str = "127.0.0.1:50051",
        retriever: str = "127.0.0.1:50053",
        llm_gateway: str = "127.0.0.1:50054",
        timeout_s: float = 60.0,
    ) -> None:
        self.addresses = {"storage": storage, "embedder": embedder, "retriever": retriever, "llm_gateway": llm_gateway}
        self.timeout_s = timeout_s
        self._clients: dict[str, Any] = {}

    # ---- the per-service clients ---------------------------------------------------------------
    def _client(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            if service == "storage":
                from .storage import StorageClient as cls
            elif service == "embedder":
                from .embedder import EmbedderClient as cls  # type: ignore[assignment]
            elif service == "retriever":
                from .retriever import RetrieverClient as cls  # type: ignore[assignment]
            else:
                from .llm import LlmClient as cls  # type: ignore[assignment]
            client = cls(self.addresses[service], timeout_s=self.timeout_s)
            self._clients[service] = client
        return client

    @property
    def storage(self) -> StorageClient:
        return self._client("storage")

    @property
    def embedder(self) -> EmbedderClient:
        return self._client("embedder")

    @property
    def retriever(self) -> RetrieverClient:
        return self._client("retriever")

    @property
    def llm(self) -> LlmClient:
        return self._client("llm_gateway")

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()

    async def __aenter__(self) -> RagClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- documents -----------------------------------------------------------------------------
    async def upload_file(
        self, collection: str, path: Path, *, name: str | None = None, backend: str = ""
    ) -> UploadedDocument:
        """Streams the file at `path` to `docs/<collection>/<document_id>/<name>` (1 MiB pieces,
        never whole in memory); the id is stable, so uploading the same name again replaces it."""
        name = name or path.name
        size = (await asyncio.to_thread(path.stat)).st_size
        doc = document_id(collection, name)
        key = document_key(collection, doc, name)

        async def pieces() -> AsyncIterator[bytes]:
            f = await asyncio.to_thread(path.open, "rb")
            try:
                while piece := await asyncio.to_thread(f.read, UPLOAD_PIECE):
                    yield piece
            finally:
                f.close()

        t0 = time.perf_counter_ns()
        await self.storage.put_stream(
            key, pieces(), backend=backend, content_type=content_type_of(name), size_bytes=size
        )
        return UploadedDocument(name, doc, key, size, time.perf_counter_ns() - t0)

    def ingest(
        self,
        collection: str,
        documents: Sequence[UploadedDocument] = (),
        *,
        source_prefix: str = "",
        source_backend: str = "",
        target_backends: Sequence[str] = (),
    ) -> AsyncIterator[ret_pb.IngestProgress]:
        """Ingests stored documents (and/or everything under `source_prefix`), streaming the job's
        progress until it ends. The job goes on if the caller stops listening."""
        from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

        sources = [rpb.SourceObject(object_key=d.object_key, name=d.name, document_id=d.document_id) for d in documents]
        return self.retriever.ingest(
            collection,
            sources,
            source_prefix=source_prefix,
            source_backend=source_backend,
            target_backends=list(target_backends),
        )

    async def start_ingest(
        self,
        collection: str,
        documents: Sequence[UploadedDocument] = (),
        *,
        source_prefix: str = "",
        source_backend: str = "",
        target_backends: Sequence[str] = (),
    ) -> ret_pb.Job:
        """As `ingest`, but returns the queued job at once (follow it with `retriever.watch_job`)."""
        from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

        sources = [rpb.SourceObject(object_key=d.object_key, name=d.name, document_id=d.document_id) for d in documents]
        return await self.retriever.start_ingest(
            collection,
            sources,
            source_prefix=source_prefix,
            source_backend=source_backend,
            target_backends=list(target_backends),
        )

    # ---- questions -----------------------------------------------------------------------------
    def answer(
        self,
        question: str,
        *,
        collection: str = "default",
        storage_backend: str = "",
        top_k: int = 5,
        llm_backend: str = "",
        model: str = "",
        max_tokens: int = 0,
        no_cache: bool = False,
        filters: Mapping[str, str] | None = None,
        conversation_id: str = "",
    ) -> AsyncIterator[llm_pb.AnswerResponse]:
        """Retrieve-then-generate in one call: retrieval, start, token..., citation..., done.
        With `conversation_id` the question continues that conversation and is stored in it."""
        from ddnrag.llm.v1 import llm_service_pb2 as lpb

        params = lpb.GenerationParams(backend=llm_backend, model=model, max_tokens=max_tokens, no_cache=no_cache)
        return self.llm.answer(
            question,
            collection=collection,
            storage_backend=storage_backend,
            top_k=top_k,
            params=params,
            filters=filters,
            conversation_id=conversation_id,
        )

    # ---- caches --------------------------------------------------------------------------------
    async def cache_stats(
        self, services: Sequence[str] = ("embedder", "retriever", "llm_gateway")
    ) -> list[CacheReport]:
        """The cache figures of each service; a service that cannot be asked gets `error` set, so
        one service down does not hide the others."""
        from .base import ServiceCallError

        out = []
        for svc in services:
            try:
                r = await self._client(svc).cache_stats()
                out.append(
                    CacheReport(svc, self.addresses[svc], r.entries, r.size_bytes, r.max_size_bytes, r.hits, r.misses)
                )
            except ServiceCallError as err:
                out.append(CacheReport(svc, self.addresses[svc], error=err.describe(), error_code=err.code.name))
        return out

    async def purge_cache(self, service: str) -> int:
        """Empties one service's cache; returns the entries removed."""
        return int((await self._client(service).purge_cache()).removed)
