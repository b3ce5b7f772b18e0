"""Measured timings in plain Python; servicers turn them into `ddnrag.common.v1.Timings`.

The Timer is also the one place per-stage trace spans come from: inside a recording trace
(kernel/tracing.py) each stage becomes a span named after it, child of the span current when the
stage ran, with its figures (`ddnrag.backend`, `ddnrag.ttfb_ns`, `ddnrag.bytes`, `ddnrag.count`)
and the stage's own `attrs` as attributes. Outside one, stages cost what they always did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import tracing


@dataclass
class Stage:
    """Time spent inside one stage, in ns, with optional storage figures and span attributes."""

    name: str
    duration_ns: int
    backend: str = ""
    ttfb_ns: int = 0
    bytes: int = 0
    count: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)

    def span_attributes(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.attrs.items() if v is not None}
        if self.backend:
            out["ddnrag.backend"] = self.backend
        if self.ttfb_ns:
            out["ddnrag.ttfb_ns"] = self.ttfb_ns
        if self.bytes:
            out["ddnrag.bytes"] = self.bytes
        if self.count:
            out["ddnrag.count"] = self.count
        return out


@dataclass
class Timer:
    """Records stages of one request. `total_ns()` is wall time since creation."""

    start_ns: int = field(default_factory=time.perf_counter_ns)
    stages: list[Stage] = field(default_factory=list)
    # False where other spans already cover each stage (storage: one span per S3 request).
    spans: bool = True

    @contextmanager
    def stage(self, name: str, **extra: object) -> Iterator[Stage]:
        st = Stage(name, 0, **extra)  # type: ignore[arg-type]
        span = tracing.start_span(name) if self.spans and tracing.recording() else None
        t0 = time.perf_counter_ns()
        try:
            if span is None:
                yield st
            else:
                token = tracing.activate(span)
                try:
                    yield st
                finally:
                    tracing.deactivate(token)
        finally:
            st.duration_ns = time.perf_counter_ns() - t0
            self.stages.append(st)
            if span is not None:
                span.set_attributes(st.span_attributes())
                span.end()

    def add(self, stage: Stage, end_ns: int | None = None) -> None:
        """Adds a stage measured elsewhere, which ended at `end_ns` (perf_counter) or now."""
        self.stages.append(stage)
        if self.spans and tracing.recording():
            now = time.perf_counter_ns()
            end = time.time_ns() - (now - (end_ns or now))
            span = tracing.start_span(stage.name, start_ns=end - stage.duration_ns, attributes=stage.span_attributes())
            span.end(end)

    def total_ns(self) -> int:
        return time.perf_counter_ns() - self.start_ns
