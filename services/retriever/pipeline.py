"""The ingestion pipeline's stages: fetch → parse → chunk → embed → write, then hand each written
batch to the job manager to commit.

Stages run as concurrent tasks joined by bounded queues, so while one batch is being written the
next is being embedded and the one after that parsed; embedding is the bottleneck. The pipeline
owns no job state: it reports through a `JobSink` (the job manager), which records progress and
commits batches to the shared job state.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link

from kernel import sentences
from kernel.tracing import TRACER

from .chunking import Chunk, Chunker
from .core import Retriever, chunk_key
from .job_model import BackendStats, ChunkRow, FileErrorView, FileRow, JobRecord, JobView
from .parsing import ParseError, parse_document
from .ports import ObjectNotFound, ObjectTooLarge
from .search import sentence_vectors_key
from .sentence_vectors import model_of, sentence_records

T = TypeVar("T")


async def drain(queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
    """The items a stage's input queue carries, until the None that ends it."""
    while (item := await queue.get()) is not None:
        yield item


async def batched(items: AsyncIterator[T], size: Callable[[T], int], limit: int) -> AsyncIterator[list[T]]:
    """`items` in groups whose `size` reaches `limit` (the last group may be smaller): the one
    batching rule of the embed and write stages."""
    group: list[T] = []
    n = 0
    async for item in items:
        group.append(item)
        n += size(item)
        if n >= limit:
            yield group
            group, n = [], 0
    if group:
        yield group


def chunking_key(request: dict[str, Any], sentence_vectors: bool) -> str:
    """How a document's chunks were made, recorded in its index entry: "size/overlap", plus
    "+sv<format>" when its sentence vectors were stored. A document whose entry differs is
    processed again, so re-ingesting adds sentence vectors to documents ingested without them."""
    key = f"{request['chunk_size']}/{request['chunk_overlap']}"
    return f"{key}+sv{sentences.FORMAT}" if sentence_vectors else key


@dataclass
class LiveJob:
    """A job this replica runs: its view, its stored record, and the progress stream's state."""

    view: JobView
    record: JobRecord
    seq: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    # Set when this replica stops running the job (finished, cancelled, or lost to a new holder).
    gone: bool = False
    started: float = field(default_factory=time.perf_counter)
    embed_busy_s: float = 0.0
    embedded: int = 0
    # Failed and unchanged files not yet committed (they go with the next batch).
    results: list[FileRow] = field(default_factory=list)
    dirty: bool = False
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # This replica's run of the job, as a trace span (kernel/tracing.py); each written batch is
    # a trace of its own that links to it.
    span: trace.Span = trace.INVALID_SPAN

    @property
    def request(self) -> dict[str, Any]:
        return self.record.request


class JobSink(Protocol):
    async def emit(self, lj: LiveJob, **changes: Any) -> None:
        """Publishes a change of the job's view to its followers."""
        ...

    async def commit(self, lj: LiveJob, files: list[FileRow], chunks: list[ChunkRow]) -> None:
        """Commits a written batch: these files are finished and these chunks are theirs."""
        ...


@dataclass
class _Parsed:
    file: FileRow
    chunks: list[Chunk]
    # The stored sentence-vector record of each chunk (sentence_vectors.py), when made.
    records: list[bytes] = field(default_factory=list)


class Pipeline:
    """Runs the stages of one job over its pending files."""

    def __init__(self, retriever: Retriever, sink: JobSink) -> None:
        self.r = retriever
        self.s = retriever.settings
        self.sink = sink

    async def run(self, lj: LiveJob, pending: list[FileRow]) -> None:
        parsed_q: asyncio.Queue[_Parsed | None] = asyncio.Queue(maxsize=64)
        embedded_q: asyncio.Queue[tuple[list[_Parsed], asyncio.Task[np.ndarray]] | None] = asyncio.Queue(
            maxsize=max(2, self.s.write_batch // max(1, self.s.embed_batch) + self.s.embed_concurrency)
        )
        tasks = [
            asyncio.create_task(self._parse_stage(lj, pending, parsed_q)),
            asyncio.create_task(self._embed_stage(lj, parsed_q, embedded_q)),
            asyncio.create_task(self._write_stage(lj, embedded_q)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Embedding requests still queued when a stage failed: stop them and collect their
            # outcome, so that none ends as an exception nobody retrieved.
            while not embedded_q.empty():
                item = embedded_q.get_nowait()
                if item is not None:
                    item[1].cancel()
                    await asyncio.gather(item[1], return_exceptions=True)

    async def fetch(self, lj: LiveJob, f: FileRow) -> bytes:
        """Reads a source object (the one place the pipeline reads source bytes); the stream stops
        as soon as the object is known to be over max_file_bytes (ObjectTooLarge)."""
        return await self.r.store.get(
            f.object_key, backend=lj.request["source_backend"], max_bytes=self.s.max_file_bytes
        )

    async def _parse_stage(self, lj: LiveJob, pending: list[FileRow], out: asyncio.Queue[_Parsed | None]) -> None:
        req = lj.request
        chunker = Chunker(req["chunk_size"], req["chunk_overlap"])
        chunking = chunking_key(req, self.s.sentence_vectors)
        sem = asyncio.Semaphore(4)

        async def one(f: FileRow) -> _Parsed | None:
            async with sem:
                t0 = time.perf_counter_ns()
                try:
                    data = await self.fetch(lj, f)
                except ObjectNotFound:
                    return await self._file_failed(lj, f, "the object does not exist")
                except ObjectTooLarge as err:
                    return await self._file_failed(lj, f, str(err))
                f.fetch_ns = time.perf_counter_ns() - t0
                _add(lj, "fetch", f.fetch_ns)
                lj.view.bytes_total += len(data)
                f.size_bytes, f.sha256 = len(data), hashlib.sha256(data).hexdigest()
                state = self.r.collections.get(lj.view.collection)
                known = state.snapshot.documents.get(f.document_id) if state and not state.error else None
                if known and known.sha256 == f.sha256 and known.chunking == chunking and known.name == f.name:
                    f.status, f.chunks = "unchanged", known.chunks
                    lj.results.append(f)
                    lj.view.documents_done += 1
                    await self.sink.emit(lj)
                    return None
                try:
                    chunks = await asyncio.to_thread(self._parse_chunk, lj.view.collection, f, data, chunker)
                except ParseError as err:
                    _add(lj, "parse", f.parse_ns)
                    return await self._file_failed(lj, f, str(err))
                _add(lj, "parse", f.parse_ns)
                _add(lj, "chunk", f.chunk_ns)
                return _Parsed(f, chunks)

        window = 8
        for i in range(0, len(pending), window):
            for p in await asyncio.gather(*(one(f) for f in pending[i : i + window])):
                if p is not None:
                    lj.view.chunks_total += len(p.chunks)
                    await out.put(p)
        await out.put(None)

    def _parse_chunk(self, collection: str, f: FileRow, data: bytes, chunker: Chunker) -> list[Chunk]:
        t0 = time.perf_counter_ns()
        try:
            text = parse_document(
                f.name, data, max_bytes=self.s.max_file_bytes, max_unpacked_bytes=self.s.max_unpacked_bytes
            )
        finally:
            f.parse_ns = time.perf_counter_ns() - t0
        t1 = time.perf_counter_ns()
        chunks = chunker.chunks(collection, f.document_id, text)
        f.chunk_ns = time.perf_counter_ns() - t1
        if not chunks:
            raise ParseError("no text could be extracted")
        return chunks

    async def _file_failed(self, lj: LiveJob, f: FileRow, reason: str) -> None:
        f.status, f.reason = "failed", reason
        lj.results.append(f)
        lj.view.file_errors.append(FileErrorView(f.name, f.object_key, reason))
        lj.view.documents_done += 1
        await self.sink.emit(lj)
        return None

    async def _embed_stage(
        self,
        lj: LiveJob,
        inp: asyncio.Queue[_Parsed | None],
        out: asyncio.Queue[tuple[list[_Parsed], asyncio.Task[np.ndarray]] | None],
    ) -> None:
        """Sends a request as soon as `embed_batch` chunks are ready, with at most
        `embed_concurrency` in flight, so the embedder never waits for a whole write batch."""
        slots = asyncio.Semaphore(max(1, self.s.embed_concurrency))
        active = [0, 0.0]  # requests in flight, when the current busy period began

        async def embed(group: list[_Parsed], texts: list[str]) -> np.ndarray:
            t0 = time.perf_counter_ns()
            try:
                if active[0] == 0:
                    active[1] = time.perf_counter()
                active[0] += 1
                b = self.s.embed_batch
                parts = [
                    await self.r.encoder.encode(texts[i : i + b], timeout=self.s.embed_timeout_s)
                    for i in range(0, len(texts), b)
                ]
                if self.s.sentence_vectors:
                    await self._sentence_records(group)
                lj.embedded += len(texts)
                _share(group, "embed_ns", time.perf_counter_ns() - t0)
                return np.concatenate(parts).astype(np.float32)
            finally:
                active[0] -= 1
                if active[0] == 0:
                    lj.embed_busy_s += time.perf_counter() - active[1]
                    lj.view.stage_ns["embed"] = int(lj.embed_busy_s * 1e9)
                slots.release()

        async for group in batched(drain(inp), lambda p: len(p.chunks), self.s.embed_batch):
            if lj.view.stage not in ("embed", "write"):
                await self.sink.emit(lj, stage="embed")
            await slots.acquire()
            task = asyncio.create_task(embed(group, [c.text for p in group for c in p.chunks]))
            await out.put((group, task))
        await out.put(None)

    async def _sentence_records(self, group: list[_Parsed]) -> None:
        """Embeds the group's sentences and keeps each chunk's stored record on its `_Parsed`."""
        chunks = [c for p in group for c in p.chunks]
        model = await model_of(self.r.encoder)
        records = await sentence_records(
            self.r.encoder,
            [c.text for c in chunks],
            batch=self.s.embed_batch,
            timeout=self.s.embed_timeout_s,
            model=model,
        )
        at = 0
        for p in group:
            p.records, at = records[at : at + len(p.chunks)], at + len(p.chunks)

    async def _write_stage(
        self, lj: LiveJob, inp: asyncio.Queue[tuple[list[_Parsed], asyncio.Task[np.ndarray]] | None]
    ) -> None:
        """Collects embedded groups up to `write_batch` chunks, writes them to every target backend
        (one BatchPut per backend) and has the batch committed."""

        async def embedded() -> AsyncIterator[tuple[list[_Parsed], np.ndarray]]:
            async for group, task in drain(inp):
                try:
                    vectors = await task
                except BaseException:
                    task.cancel()
                    raise
                yield group, vectors

        async for batch in batched(embedded(), lambda item: len(item[1]), self.s.write_batch):
            await self._write_batch(lj, batch)

    async def _write_batch(self, lj: LiveJob, batch: list[tuple[list[_Parsed], np.ndarray]]) -> None:
        v = lj.view
        coll = v.collection
        group = [p for g, _ in batch for p in g]
        vectors = np.concatenate([vec for _, vec in batch])
        chunks = [c for p in group for c in p.chunks]
        items = [(chunk_key(coll, c.chunk_id), c.text.encode("utf-8")) for c in chunks]
        # Sentence vectors go in the same BatchPut, after the chunks (`_write` counts the chunks).
        items += [
            (sentence_vectors_key(coll, c.chunk_id), rec)
            for p in group
            for c, rec in zip(p.chunks, p.records, strict=False)
        ]
        await self.sink.emit(lj, stage="write")
        job = lj.span.get_span_context()
        with TRACER.start_as_current_span(
            "ingest.batch",
            context=otel_context.Context(),  # a trace per batch, linked to the job's span
            links=[Link(job)] if job.is_valid else None,
            attributes={
                "ddnrag.job_id": v.job_id,
                "ddnrag.collection": coll,
                "ddnrag.documents": len(group),
                "ddnrag.chunks": len(chunks),
            },
        ):
            t0 = time.perf_counter_ns()
            await asyncio.gather(*(self._write(st, items, len(chunks)) for st in v.backends))
            took = time.perf_counter_ns() - t0
            _add(lj, "write", took)
            _share(group, "write_ns", took)
            rows = [ChunkRow(c.chunk_id, c.document_id, c.position, c.text, vectors[i]) for i, c in enumerate(chunks)]
            for p in group:
                p.file.chunks, p.file.status = len(p.chunks), "done"
            await self.sink.commit(lj, [p.file for p in group], rows)

    async def _write(self, st: BackendStats, items: list[tuple[str, bytes]], chunks: int) -> None:
        """Writes `items` (the first `chunks` of them chunk objects, the rest their sentence
        vectors) to one backend; the backend's figures count the chunk objects."""
        backend = "" if st.backend == "default" else st.backend
        t0 = time.perf_counter_ns()
        outcomes = await self.r.store.put_many(items, backend=backend)
        st.busy_ns += time.perf_counter_ns() - t0
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise OSError(f"writing chunks to backend {st.backend!r} failed: {bad[0].key}: {bad[0].error}")
        st.objects_written += chunks
        st.latencies_ns.extend(o.total_ns for o in outcomes[:chunks] if o.total_ns)


def _add(lj: LiveJob, stage: str, ns: int) -> None:
    lj.view.stage_ns[stage] = lj.view.stage_ns.get(stage, 0) + ns


def _share(group: list[_Parsed], attr: str, ns: int) -> None:
    """Splits one call's time over the files it served, by their share of its chunks."""
    total = sum(len(p.chunks) for p in group) or 1
    for p in group:
        setattr(p.file, attr, getattr(p.file, attr) + ns * len(p.chunks) // total)


class NullCounter:
    """A token counter for validating chunking options without loading the tokenizer."""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [0] * len(texts)

    def starts(self, text: str) -> list[int]:
        return []
