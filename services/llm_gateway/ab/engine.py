"""The A/B run: search once per question (ranking only: the retriever reads no chunk, so the
run's first read of each chunk is cold on both backends), fetch the same chunk ids from both
backends in an interleaved order (A,B then B,A, alternating per question and pass, so drift hits both sides
evenly), time the generator's first token on each side's chunks, and save the run.

It runs as a background task, so a client that goes away loses nothing: its events are kept in
memory with sequence numbers and any client can follow them again from a given number
(`follow`). One run at a time per llm_gateway replica, since two runs would time each other."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernel.errors import ErrorKind, ServiceError, invalid, not_found
from kernel.ids import chunk_id

from .model import AbRequest, BackendInfo, Sample, run_document

log = logging.getLogger(__name__)

SEARCH_TIMEOUT_S = 30.0
FETCH_TIMEOUT_S = 30.0
KEEP_FINISHED = 8  # finished runs whose events stay followable in memory


@dataclass(frozen=True)
class ChunkRef:
    """What a chunk's body must hash to (kernel.ids.chunk_id): its id and the id's other inputs."""

    chunk_id: str
    collection: str
    document_id: str
    position: int

    def matches(self, text: str) -> bool:
        return chunk_id(self.collection, self.document_id, self.position, text) == self.chunk_id


@dataclass
class Hit:
    """The retriever's ranking for one question (no texts: it read none): the chunks' object keys
    and content checks, and its timings."""

    keys: list[str]
    refs: list[ChunkRef]
    retrieval_ns: int
    retrieval_fetch_ns: int


@dataclass
class Fetched:
    ttfb_ns: int
    total_ns: int
    nbytes: int
    texts: list[str]
    # The first failed key's error kind and message; "" when every chunk came back.
    error: str = ""
    error_message: str = ""


class AbPorts(Protocol):
    """What an A/B run needs from the retriever, the storage service and the generator."""

    async def describe_backends(self, names: Sequence[str]) -> dict[str, BackendInfo]: ...

    async def search(self, collection: str, question: str, top_k: int) -> Hit: ...

    async def fetch(self, backend: str, keys: Sequence[str]) -> Fetched: ...

    async def missing(self, backend: str, keys: Sequence[str], prefix: str) -> list[str]: ...

    async def copy_to(self, backend: str, keys: Sequence[str]) -> int: ...

    async def first_token_ns(self, question: str, texts: Sequence[str]) -> int: ...

    async def save(self, doc: dict[str, Any]) -> None: ...


@dataclass
class Event:
    """One streamed event: `kind` is "notice", "progress" or "run" (the last)."""

    seq: int
    kind: str
    data: dict[str, Any]


@dataclass
class LiveRun:
    run_id: str
    events: list[Event] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    done: bool = False
    task: asyncio.Task[None] | None = None

    async def emit(self, kind: str, data: dict[str, Any]) -> None:
        async with self.changed:
            self.events.append(Event(len(self.events) + 1, kind, data))
            self.changed.notify_all()


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count() or 0,
        "load_avg_1m_start": round(load[0], 2),
    }


def order(question: int, pass_no: int, a: str, b: str) -> tuple[str, str]:
    """A,B for even (question + pass), B,A for odd: A,B,B,A,A,B... along the run."""
    return (a, b) if (question + pass_no) % 2 == 0 else (b, a)


class AbEngine:
    def __init__(self, ports: AbPorts) -> None:
        self.ports = ports
        self.live: dict[str, LiveRun] = {}

    def running(self) -> list[str]:
        return [r.run_id for r in self.live.values() if not r.done]

    async def start(self, req: AbRequest) -> LiveRun:
        """Validates, checks the backends exist, and starts the run in the background."""
        req.validate()
        if self.running():
            raise ServiceError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"an A/B run is already running ({self.running()[0]}); two at once would time each other. "
                "Follow it or retry when it ends",
                reason="AB_BUSY",
            )
        infos = await self.ports.describe_backends(req.backends)
        unknown = [b for b in req.backends if b not in infos]
        if unknown:
            raise not_found(
                f"backend {', '.join(map(repr, unknown))} is not configured; configured: "
                f"{', '.join(sorted(k for k in infos if k)) or 'none'} (see `rag config backends`)",
                reason="BACKEND_NOT_FOUND",
            )
        live = LiveRun(new_run_id())
        self._remember(live)
        live.task = asyncio.create_task(self._run(live, req, infos), name=f"ab-{live.run_id}")
        return live

    def _remember(self, live: LiveRun) -> None:
        self.live[live.run_id] = live
        finished = [r for r in self.live.values() if r.done]
        for r in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            self.live.pop(r.run_id, None)

    async def follow(self, run_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The run's events with seq > `after`, then new ones as they come, until the last."""
        live = self.live.get(run_id)
        if live is None:
            raise not_found(f"no A/B run {run_id!r} is running on this replica", reason="AB_RUN_NOT_LIVE")
        if after < 0:
            raise invalid("after_seq must be 0 or more", reason="INVALID_AFTER_SEQ")
        seen = after
        while True:
            async with live.changed:
                await live.changed.wait_for(lambda seen=seen: len(live.events) > seen or live.done)
                new = live.events[seen:]
                finished = live.done
            for ev in new:
                yield ev
            seen += len(new)
            if finished and seen >= len(live.events):
                return

    async def close(self) -> None:
        for live in self.live.values():
            if live.task is not None and not live.task.done():
                live.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await live.task

    # ---- the run --------------------------------------------------------------------------------
    async def _run(self, live: LiveRun, req: AbRequest, infos: dict[str, BackendInfo]) -> None:
        started = time.time_ns()
        mach = machine()
        notes: list[str] = []
        samples: list[Sample] = []
        status = "complete"
        a, b = req.backends
        try:
            await live.emit(
                "notice",
                {
                    "message": f"A/B run {live.run_id}: {a} vs {b}, {len(req.questions)} questions x {req.repeat} pass(es)"
                },
            )
            hits = await self._retrieve(live, req, notes)
            await self._seed(live, req, hits, notes)
            total = len(req.questions) * req.repeat
            for pass_no in range(req.repeat):
                phase = "cold" if pass_no == 0 else "warm"
                for qi, question in enumerate(req.questions):
                    hit = hits[qi]
                    for slot, backend in enumerate(order(qi, pass_no, a, b)):
                        samples.append(await self._sample(req, qi, pass_no, phase, slot, backend, question, hit))
                    done = pass_no * len(req.questions) + qi + 1
                    if done == total or done % 5 == 0:
                        await live.emit("progress", self._progress(samples, done, total, phase, a, b))
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except Exception as err:  # the run ends, with what it measured, and says why
            status = "failed"
            notes.append(f"the run stopped early: {getattr(err, 'message', None) or err}")
            log.exception("A/B run %s failed", live.run_id)
        finally:
            mach["load_avg_1m_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0
            doc = run_document(
                run_id=live.run_id,
                started_unix_ns=started,
                finished_unix_ns=time.time_ns(),
                status=status,
                req=req,
                backends=infos,
                machine=mach,
                notes=notes,
                samples=samples,
            )
            try:
                await asyncio.shield(self.ports.save(doc))
            except ServiceError as err:
                doc["notes"].append(f"the run could not be saved: {getattr(err, 'message', None) or err}")
                doc["json_key"] = doc["csv_key"] = ""
            await live.emit("run", doc)
            async with live.changed:
                live.done = True
                live.changed.notify_all()

    async def _retrieve(self, live: LiveRun, req: AbRequest, notes: list[str]) -> list[Hit]:
        """One search per question (no retrieval cache, no chunk read): the chunk ids both sides
        will fetch."""
        hits: list[Hit] = []
        for qi, q in enumerate(req.questions):
            try:
                hits.append(await self.ports.search(req.collection, q, req.top_k))
            except ServiceError as err:
                if err.kind in (ErrorKind.NOT_FOUND, ErrorKind.INVALID_ARGUMENT) and qi == 0:
                    raise
                hits.append(Hit([], [], 0, 0))
                notes.append(f"question {qi + 1}: search failed ({err.reason}): {err.message}")
            if (qi + 1) % 25 == 0 or qi + 1 == len(req.questions):
                await live.emit("notice", {"message": f"retrieved {qi + 1} of {len(req.questions)} questions"})
        return hits

    async def _seed(self, live: LiveRun, req: AbRequest, hits: list[Hit], notes: list[str]) -> None:
        """Writes the chunks a backend lacks (read from the default backend) before timing."""
        keys = sorted({k for h in hits for k in h.keys})
        prefix = f"chunks/{req.collection}/"
        for backend in req.backends:
            missing = await self.ports.missing(backend, keys, prefix)
            if not missing:
                continue
            msg = f"backend {backend!r} lacked {len(missing)} of the {len(keys)} chunks; writing them there first"
            await live.emit("notice", {"message": msg})
            written = await self.ports.copy_to(backend, missing)
            notes.append(
                f"{written} chunks were written to backend {backend!r} before the run (they were missing); "
                "the copy read them from the default backend, so their cold-pass reads are not cold"
            )
            await live.emit("notice", {"message": notes[-1]})

    async def _sample(
        self, req: AbRequest, qi: int, pass_no: int, phase: str, slot: int, backend: str, question: str, hit: Hit
    ) -> Sample:
        s = Sample(
            qi, pass_no, phase, backend, slot, retrieval_ns=hit.retrieval_ns, retrieval_fetch_ns=hit.retrieval_fetch_ns
        )
        if not hit.keys:
            s.error, s.error_message = "NO_RETRIEVAL", "the search returned no chunks (or failed) for this question"
            return s
        try:
            f = await self.ports.fetch(backend, hit.keys)
        except ServiceError as err:
            s.error, s.error_message = err.kind.name, err.message
            return s
        s.chunks, s.bytes, s.fetch_ttfb_ns, s.fetch_total_ns = len(hit.keys), f.nbytes, f.ttfb_ns, f.total_ns
        if f.error:
            s.error, s.error_message = f.error, f.error_message
            return s
        bad = next((k for k, ref, t in zip(hit.keys, hit.refs, f.texts, strict=True) if not ref.matches(t)), None)
        if bad is not None:
            s.error = "CHUNK_MISMATCH"
            s.error_message = f"backend {backend!r} returned a body for {bad} that does not hash to its chunk id"
            return s
        if req.ttft:
            try:
                s.gen_ttft_ns = await self.ports.first_token_ns(question, f.texts)
            except ServiceError as err:
                s.error, s.error_message = f"GENERATOR_{err.kind.name}", err.message
                return s
            s.ttft_ns = max(0, s.retrieval_ns - s.retrieval_fetch_ns) + s.fetch_total_ns + s.gen_ttft_ns
        return s

    @staticmethod
    def _progress(samples: list[Sample], done: int, total: int, phase: str, a: str, b: str) -> dict[str, Any]:
        last = {s.backend: s for s in samples[-2:]}
        errors = sum(1 for s in samples if s.error)
        return {
            "done": done,
            "total": total,
            "phase": phase,
            "errors": errors,
            "last_fetch_ttfb_ns": {n: last[n].fetch_ttfb_ns for n in (a, b) if n in last},
        }
