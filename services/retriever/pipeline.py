"""The ingestion pipeline's stages: fetch → parse → chunk → embed and write, then hand each batch
to the job manager to commit.

Embedding is the bottleneck, so everything else is arranged to keep the embedder fed:
- files are fetched, parsed and chunked ahead of it (4 at a time; rich formats in the parser
  worker processes of sandbox.py, plain text in a thread);
- embedding requests carry exactly `embed_batch` texts, cut across file boundaries, and
  `embed_concurrency` of them are in flight, so one is queued at the embedder while another runs;
  with sentence vectors on, a batch's distinct sentences ride in the same requests as its chunks
  (embed_plan.py), so that pass keeps the embedder fed too;
- a batch's chunk objects are written as soon as its chunks are known (their text is all they
  need), concurrently with embedding, at most `WRITES_IN_FLIGHT` batches at once;
- the commit stage pairs each batch with its vectors and write, in order, writes its sentence
  records (they need the vectors), and commits it while later requests are still embedding.
The embedder's idle time inside the job (no request in flight between its first and last) is
measured (`Clock`) and reported with the other stage times, so a starved embedder shows.

The pipeline owns no job state: it reports through a `JobSink` (the job manager), which records
progress and commits batches to the shared job state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from kernel import sentences, tracing

from .chunking import Chunk, Chunker
from .core import Retriever, chunk_key
from .embed_plan import BatchPlan, Vectors
from .job_model import BackendStats, ChunkRow, FileErrorView, FileRow
from .live_job import JobSink, LiveJob
from .parsing import ParseError, parse_document
from .ports import ObjectNotFound, ObjectTooLarge
from .search import sentence_vectors_key
from .sentence_vectors import model_of

T = TypeVar("T")


def chunking_key(request: dict[str, Any], sentence_vectors: bool) -> str:
    """How a document's chunks were made, recorded in its index entry: "size/overlap", plus
    "+sv<format>" when its sentence vectors were stored. A document whose entry differs is
    processed again, so re-ingesting adds sentence vectors to documents ingested without them."""
    key = f"{request['chunk_size']}/{request['chunk_overlap']}"
    return f"{key}+sv{sentences.FORMAT}" if sentence_vectors else key


async def drain(queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
    """The items a stage's input queue carries, until the None that ends it."""
    while (item := await queue.get()) is not None:
        yield item


@dataclass
class _Parsed:
    file: FileRow
    chunks: list[Chunk]
    sentences: list[list[str]]  # each chunk's whole sentences (empty with sentence vectors off)


@dataclass
class _Batch:
    """Files committed together, and the write of their chunk objects (started at once)."""

    group: list[_Parsed]
    plan: BatchPlan
    write: asyncio.Task[None]


# Batches whose chunk objects may be written ahead of their commit, and writes in flight at once.
BATCHES_AHEAD = 4
WRITES_IN_FLIGHT = 2


class Pipeline:
    """Runs the stages of one job over its pending files."""

    def __init__(self, retriever: Retriever, sink: JobSink) -> None:
        self.r = retriever
        self.s = retriever.settings
        self.sink = sink

    async def run(self, lj: LiveJob, pending: list[FileRow]) -> None:
        parsed_q: asyncio.Queue[_Parsed | None] = asyncio.Queue(maxsize=64)
        # Embedding requests in chunk order; bounded by the batches below, which bound the chunks.
        vectors_q: asyncio.Queue[asyncio.Task[Vectors] | None] = asyncio.Queue()
        batch_q: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=BATCHES_AHEAD)
        tasks = [
            asyncio.create_task(self._parse_stage(lj, pending, parsed_q)),
            asyncio.create_task(self._feed_stage(lj, parsed_q, vectors_q, batch_q)),
            asyncio.create_task(self._commit_stage(lj, vectors_q, batch_q)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Requests and writes still queued when a stage failed: stop them and collect their
            # outcome, so that none ends as an exception nobody retrieved.
            left: list[asyncio.Task[Any]] = []
            while not vectors_q.empty():
                if (task := vectors_q.get_nowait()) is not None:
                    left.append(task)
            while not batch_q.empty():
                if (batch := batch_q.get_nowait()) is not None:
                    left.append(batch.write)
            for t in left:
                t.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            lj.clocks_to_view()

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
                    parsed = await asyncio.to_thread(self._parse_chunk, lj.view.collection, f, data, chunker)
                except ParseError as err:
                    _add(lj, "parse", f.parse_ns)
                    return await self._file_failed(lj, f, str(err))
                _add(lj, "parse", f.parse_ns)
                _add(lj, "chunk", f.chunk_ns)
                return parsed

        # Up to 8 files in the works (4 fetched at once), handed on in order, each as soon as it
        # and the files before it are chunked: the first request need not wait for a whole window.
        ahead: deque[asyncio.Task[_Parsed | None]] = deque()

        async def hand_on() -> None:
            if (p := await ahead.popleft()) is not None:
                lj.view.chunks_total += len(p.chunks)
                await out.put(p)

        try:
            for f in pending:
                ahead.append(asyncio.create_task(one(f)))
                if len(ahead) >= 8:
                    await hand_on()
            while ahead:
                await hand_on()
        finally:
            for t in ahead:
                t.cancel()
            await asyncio.gather(*ahead, return_exceptions=True)
        await out.put(None)

    def _parse_chunk(self, collection: str, f: FileRow, data: bytes, chunker: Chunker) -> _Parsed:
        t0 = time.perf_counter_ns()
        try:
            text = parse_document(
                f.name, data, max_bytes=self.s.max_file_bytes, max_unpacked_bytes=self.s.max_unpacked_bytes
            )
        finally:
            f.parse_ns = time.perf_counter_ns() - t0
        t1 = time.perf_counter_ns()
        chunks = chunker.chunks(collection, f.document_id, text)
        # Sentence splitting for the sentence vectors is counted as chunking (it happens here, in
        # the worker thread, off the event loop).
        per_chunk = [sentences.whole_sentences(c.text) for c in chunks] if self.s.sentence_vectors else []
        f.chunk_ns = time.perf_counter_ns() - t1
        if not chunks:
            raise ParseError("no text could be extracted")
        return _Parsed(f, chunks, per_chunk)

    async def _file_failed(self, lj: LiveJob, f: FileRow, reason: str) -> None:
        f.status, f.reason = "failed", reason
        lj.results.append(f)
        lj.view.file_errors.append(FileErrorView(f.name, f.object_key, reason))
        lj.view.documents_done += 1
        await self.sink.emit(lj)
        return None

    async def _feed_stage(
        self,
        lj: LiveJob,
        inp: asyncio.Queue[_Parsed | None],
        vectors_q: asyncio.Queue[asyncio.Task[Vectors] | None],
        batch_q: asyncio.Queue[_Batch | None],
    ) -> None:
        """Sends an embedding request as soon as `embed_batch` texts (a batch's chunks and, with
        sentence vectors on, its new sentences: `BatchPlan`) are ready, at most `embed_concurrency`
        in flight, and starts the write of a batch's chunk objects as soon as its files reach
        `write_batch` chunks."""
        size = max(1, self.s.embed_batch)
        slots = asyncio.Semaphore(max(1, self.s.embed_concurrency))
        writes = asyncio.Semaphore(WRITES_IN_FLIGHT)
        texts: list[str] = []
        group: list[_Parsed] = []
        plan = BatchPlan(self.s.sentence_vectors)

        def send(part: list[str]) -> None:
            # Never waits: the request queues for a slot on its own, so the feed goes on cutting
            # batches and starting their writes while the embedder is busy (bounded by batch_q).
            vectors_q.put_nowait(asyncio.create_task(self._embed(lj, part, slots)))

        async def close_batch() -> None:
            nonlocal plan
            if batch_q.full() and texts and self.s.write_batch < size:
                # Texts not yet sent may belong to a batch older than every queued one, which the
                # commit stage may be waiting for: send them first. (With write_batch >= embed_batch
                # every batch holds more texts than a request, so unsent texts are all this one's.)
                send(texts[:])
                texts.clear()
            batch = _Batch(group[:], plan, asyncio.create_task(self._write(lj, group[:], writes)))
            group.clear()
            plan = BatchPlan(self.s.sentence_vectors)
            await batch_q.put(batch)

        async for p in drain(inp):
            if lj.view.stage not in ("embed", "write"):
                await self.sink.emit(lj, stage="embed")
            texts.extend(plan.add(embedded_texts(p.chunks), p.sentences))
            while len(texts) >= size:
                send(texts[:size])
                del texts[:size]
            group.append(p)
            if plan.chunks >= self.s.write_batch:
                await close_batch()
        if texts:
            send(texts)
        if group:
            await close_batch()
        await vectors_q.put(None)
        await batch_q.put(None)

    async def _embed(self, lj: LiveJob, texts: list[str], slots: asyncio.Semaphore) -> Vectors:
        async with slots:  # requests take their slots in the order they were cut (FIFO)
            lj.embed_clock.start()
            t0 = time.perf_counter_ns()
            try:
                vectors = np.asarray(await self.r.encoder.encode(texts, timeout=self.s.embed_timeout_s), np.float32)
                lj.embedded += len(texts)
                return Vectors(vectors, np.full(len(texts), (time.perf_counter_ns() - t0) // max(1, len(texts))))
            finally:
                lj.embed_clock.stop()
                lj.clocks_to_view()

    async def _commit_stage(
        self,
        lj: LiveJob,
        vectors_q: asyncio.Queue[asyncio.Task[Vectors] | None],
        batch_q: asyncio.Queue[_Batch | None],
    ) -> None:
        """Pairs each batch, in order, with its texts' vectors and its write, writes its sentence
        records, then has it committed."""
        held: list[Vectors] = []
        have = 0
        model: str | None = None
        async for batch in drain(batch_q):
            chunks = [c for p in batch.group for c in p.chunks]
            while have < batch.plan.size:
                task = await vectors_q.get()
                assert task is not None, "the feed stage ended before every batch had its vectors"
                held.append(await task)
                have += len(held[-1].vectors)
            every = Vectors.join(held)
            mine, rest = every.split(batch.plan.size)
            held, have = ([rest], len(rest.vectors)) if len(rest.vectors) else ([], 0)
            at = 0
            for p, n in zip(batch.group, batch.plan.texts_per_file, strict=True):
                p.file.embed_ns += int(mine.ns[at : at + n].sum())  # its texts' share of their requests' time
                at += n
            records: list[bytes] = []
            if batch.plan.sentence_vectors:
                model = await model_of(self.r.encoder) if model is None else model
                records = await asyncio.to_thread(batch.plan.records, mine.vectors, model)
            await self._commit_batch(lj, batch, chunks, batch.plan.chunk_vectors(mine.vectors), records)

    async def _commit_batch(
        self, lj: LiveJob, batch: _Batch, chunks: list[Chunk], vectors: np.ndarray, records: list[bytes]
    ) -> None:
        v = lj.view
        if v.stage != "write":
            await self.sink.emit(lj, stage="write")
        with tracing.span(
            "ingest.batch",
            root=True,  # a trace per batch, linked to the job's span
            links=[lj.span],
            attributes={
                "ddnrag.job_id": v.job_id,
                "ddnrag.collection": v.collection,
                "ddnrag.documents": len(batch.group),
                "ddnrag.chunks": len(chunks),
            },
        ):
            await batch.write
            if records:  # the chunks' sentence vectors, stored before any index version names them
                items = [
                    (sentence_vectors_key(v.collection, c.chunk_id), r) for c, r in zip(chunks, records, strict=True)
                ]
                await self._put(lj, batch.group, items, None, count=False)
            rows = [ChunkRow(c.chunk_id, c.document_id, c.position, c.text, vectors[i]) for i, c in enumerate(chunks)]
            for p in batch.group:
                p.file.chunks, p.file.status = len(p.chunks), "done"
            await self.sink.commit(lj, [p.file for p in batch.group], rows)
            lj.uncommitted.difference_update(chunk_key(v.collection, c.chunk_id) for c in chunks)
            lj.uncommitted.difference_update(sentence_vectors_key(v.collection, c.chunk_id) for c in chunks)

    async def _write(self, lj: LiveJob, group: list[_Parsed], writes: asyncio.Semaphore) -> None:
        """Writes a batch's chunk objects to every target backend (one BatchPut per backend) at
        once; their sentence records follow at commit, once embedded (`_commit_batch`)."""
        coll = lj.view.collection
        items = [(chunk_key(coll, c.chunk_id), c.text.encode("utf-8")) for p in group for c in p.chunks]
        await self._put(lj, group, items, writes, count=True)

    async def _put(
        self,
        lj: LiveJob,
        group: list[_Parsed],
        items: list[tuple[str, bytes]],
        writes: asyncio.Semaphore | None,
        count: bool,
    ) -> None:
        lj.uncommitted.update(k for k, _ in items)
        async with writes or contextlib.nullcontext():
            lj.write_clock.start()
            t0 = time.perf_counter_ns()
            try:
                await asyncio.gather(
                    *(self._write_to(st, items, len(items) if count else 0) for st in lj.view.backends)
                )
            finally:
                lj.write_clock.stop()
            _share(group, "write_ns", time.perf_counter_ns() - t0)

    async def _write_to(self, st: BackendStats, items: list[tuple[str, bytes]], chunks: int) -> None:
        """Writes `items` (the first `chunks` of them chunk objects, the rest their sentence
        vectors) to one backend; its figures count the chunk objects."""
        backend = "" if st.backend == "default" else st.backend
        t0 = time.perf_counter_ns()
        outcomes = await self.r.store.put_many(items, backend=backend)
        st.busy_ns += time.perf_counter_ns() - t0
        bad = [o for o in outcomes if not o.ok]
        if bad:
            raise OSError(f"writing chunks to backend {st.backend!r} failed: {bad[0].key}: {bad[0].error}")
        st.objects_written += chunks
        st.latencies_ns.extend(o.total_ns for o in outcomes[:chunks] if o.total_ns)


def embedded_texts(chunks: Sequence[Chunk]) -> list[str]:
    """What a job sends the embedder for these chunks (bench/retriever.py embeds the same)."""
    return [c.text for c in chunks]


def _add(lj: LiveJob, stage: str, ns: int) -> None:
    lj.view.stage_ns[stage] = lj.view.stage_ns.get(stage, 0) + ns


def _share(group: list[_Parsed], attr: str, ns: int) -> None:
    """Splits one call's time over the files it served, by their share of its chunks."""
    total = sum(len(p.chunks) for p in group) or 1
    for p in group:
        setattr(p.file, attr, getattr(p.file, attr) + ns * len(p.chunks) // total)
