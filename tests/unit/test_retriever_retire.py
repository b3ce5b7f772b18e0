"""Segments a replica stops serving release their external dense index (a Milvus collection) only
after the grace period, as their files are; the live ones are never released."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from services.retriever.dense import DenseIndex
from services.retriever.lexical import Analyzer
from services.retriever.live import IndexOptions, LiveIndex
from services.retriever.merge import MergePolicy
from tests.unit.test_retriever_core import DictStore
from tests.unit.test_retriever_segments import batch, corpus


class DroppingDense(DenseIndex):
    """An in-process dense index that records when it is dropped (as a Milvus one would be)."""

    dropped: ClassVar[list[str]] = []

    def __init__(self, vectors: np.ndarray, seg_id: str) -> None:
        super().__init__(vectors)
        self.seg_id = seg_id

    def drop(self) -> None:
        DroppingDense.dropped.append(self.seg_id)


def live_index(grace_s: float) -> LiveIndex:
    opts = IndexOptions(
        merge=MergePolicy(factor=3, floor_chunks=1000), gc_grace_s=grace_s, dense_factory=lambda c: DroppingDense
    )
    return LiveIndex("kb", DictStore(), Analyzer(), opts)  # type: ignore[arg-type]


async def test_retired_dense_indexes_are_dropped_only_after_the_grace_period() -> None:
    DroppingDense.dropped = []
    live = live_index(grace_s=3600)
    docs = corpus(3, seed=2)
    for d in docs:
        await live.commit(*await batch({d: docs[d]}))
    merged_away = [e.id for e in live.manifest.segments]
    assert await live.merge_once()
    assert DroppingDense.dropped == []  # retired, but within the grace period: kept
    assert {e.id for e in live.manifest.segments}.isdisjoint(merged_away)

    DroppingDense.dropped = []
    live = live_index(grace_s=0)
    for d in docs:
        await live.commit(*await batch({d: docs[d]}))
    merged_away = [e.id for e in live.manifest.segments]
    assert await live.merge_once()
    assert sorted(DroppingDense.dropped) == sorted(merged_away)  # past the grace period: dropped
    assert all(e.id not in DroppingDense.dropped for e in live.manifest.segments)
