"""A job this replica runs, as the job manager and the pipeline see it: its view and stored record,
its progress stream's state, and the clocks that time the embed and write stages.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernel import tracing

from .job_model import ChunkRow, FileRow, JobRecord, JobView


@dataclass
class Clock:
    """Wall time during which at least one call of a stage was in flight (`busy_s`), and the
    gaps between its first call and its last (`gaps_s`): for the embedder, the time it waited on
    fetch, parse or storage."""

    active: int = 0
    since: float = 0.0
    busy_s: float = 0.0
    first: float = -1.0
    last: float = -1.0

    def start(self) -> None:
        if self.active == 0:
            self.since = time.perf_counter()
            if self.first < 0:
                self.first = self.since
        self.active += 1

    def stop(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.last = time.perf_counter()
            self.busy_s += self.last - self.since

    def gaps_s(self) -> float:
        """Idle time between the first call's start and now (or the last call's end when idle)."""
        if self.first < 0:
            return 0.0
        end = time.perf_counter() if self.active else self.last
        busy = self.busy_s + (end - self.since if self.active else 0.0)
        return max(0.0, end - self.first - busy)


@dataclass
class LiveJob:
    """A job this replica runs: its view, its stored record, and the progress stream's state."""

    view: JobView
    record: JobRecord
    seq: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    # Set by the job's task at its first step. A task cancelled before that never runs its body
    # (so it could record nothing): JobManager.cancel cancels only a task that has begun.
    running: bool = False
    # Set when this replica stops running the job (finished, cancelled, or lost to a new holder).
    gone: bool = False
    started: float = field(default_factory=time.perf_counter)
    # Wall time with an embedding request (a chunk-object write) in flight, over this run.
    embed_clock: Clock = field(default_factory=Clock)
    write_clock: Clock = field(default_factory=Clock)
    embedded: int = 0
    # Chunk objects this run has written (or is writing) that no committed batch names yet: a
    # cancelled job deletes them with the committed ones no index version uses.
    uncommitted: set[str] = field(default_factory=set)
    # Stage times recorded by earlier runs of the job (another replica, before a restart).
    base_ns: dict[str, int] = field(default_factory=dict)
    # Failed and unchanged files not yet committed (they go with the next batch).
    results: list[FileRow] = field(default_factory=list)
    dirty: bool = False
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # This replica's run of the job, as a trace span (kernel/tracing.py); each written batch is
    # a trace of its own that links to it.
    span: tracing.Span = tracing.INVALID_SPAN

    def __post_init__(self) -> None:
        self.base_ns = {k: self.view.stage_ns.get(k, 0) for k in ("embed", "write", "embed_idle", "run")}

    @property
    def request(self) -> dict[str, Any]:
        return self.record.request

    def clocks_to_view(self) -> None:
        """Puts this run's wall-clock stage times (embed, write, embedder idle, run) in the view."""
        st, b = self.view.stage_ns, self.base_ns
        st["embed"] = b["embed"] + int(self.embed_clock.busy_s * 1e9)
        st["write"] = b["write"] + int(self.write_clock.busy_s * 1e9)
        st["embed_idle"] = b["embed_idle"] + int(self.embed_clock.gaps_s() * 1e9)
        st["run"] = b["run"] + int((time.perf_counter() - self.started) * 1e9)


class JobSink(Protocol):
    async def emit(self, lj: LiveJob, **changes: Any) -> None:
        """Publishes a change of the job's view to its followers."""
        ...

    async def commit(self, lj: LiveJob, files: list[FileRow], chunks: list[ChunkRow]) -> None:
        """Commits a written batch: these files are finished and these chunks are theirs."""
        ...
