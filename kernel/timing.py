"""Measured timings in plain Python; servicers turn them into `ddnrag.common.v1.Timings`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Stage:
    """Time spent inside one stage, in ns, with optional storage figures."""

    name: str
    duration_ns: int
    backend: str = ""
    ttfb_ns: int = 0
    bytes: int = 0
    count: int = 0


@dataclass
class Timer:
    """Records stages of one request. `total_ns()` is wall time since creation."""

    start_ns: int = field(default_factory=time.perf_counter_ns)
    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str, **extra: object) -> Iterator[Stage]:
        st = Stage(name, 0, **extra)  # type: ignore[arg-type]
        t0 = time.perf_counter_ns()
        try:
            yield st
        finally:
            st.duration_ns = time.perf_counter_ns() - t0
            self.stages.append(st)

    def add(self, stage: Stage) -> None:
        self.stages.append(stage)

    def total_ns(self) -> int:
        return time.perf_counter_ns() - self.start_ns
