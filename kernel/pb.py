"""Conversions between common plain-Python types and `ddnrag.common.v1` messages."""

from __future__ import annotations

import numpy as np

from ddnrag.common.v1 import common_pb2

from .sentences import KEY_BYTES, SentenceVectors
from .timing import Stage, Timer


def timings_pb(timer: Timer, total_ns: int | None = None) -> common_pb2.Timings:
    stages = [stage_pb(s) for s in timer.stages]
    return common_pb2.Timings(
        total_ns=timer.total_ns() if total_ns is None else total_ns,
        stages=stages,
        stages_sum_ns=sum(s.duration_ns for s in timer.stages),
    )


def stage_pb(s: Stage) -> common_pb2.StageTiming:
    return common_pb2.StageTiming(
        name=s.name, duration_ns=s.duration_ns, backend=s.backend, ttfb_ns=s.ttfb_ns, bytes=s.bytes, count=s.count
    )


def stage_from_pb(m: common_pb2.StageTiming) -> Stage:
    return Stage(m.name, m.duration_ns, m.backend, m.ttfb_ns, m.bytes, m.count)


def page_size(page: common_pb2.PageRequest, default: int = 100, maximum: int = 1000) -> int:
    n = page.page_size or default
    return max(1, min(n, maximum))


def sentence_vectors_pb(sv: SentenceVectors | None) -> common_pb2.SentenceVectors | None:
    if sv is None:
        return None
    return common_pb2.SentenceVectors(
        model=sv.model,
        dimension=int(sv.vectors.shape[1]),
        sentence_keys=b"".join(sv.keys),
        vectors_f16=np.ascontiguousarray(sv.vectors, dtype="<f2").tobytes(),
    )


def sentence_vectors_from_pb(m: common_pb2.SentenceVectors) -> SentenceVectors | None:
    """None when the message's sizes do not agree (the caller embeds those sentences instead)."""
    n, dim = len(m.sentence_keys) // KEY_BYTES, m.dimension
    if dim <= 0 or len(m.sentence_keys) % KEY_BYTES or len(m.vectors_f16) != n * dim * 2:
        return None
    keys = tuple(m.sentence_keys[i * KEY_BYTES : (i + 1) * KEY_BYTES] for i in range(n))
    return SentenceVectors(m.model, keys, np.frombuffer(m.vectors_f16, dtype="<f2").reshape(n, dim))
