"""Tiered merging: which segments to merge, and the merged segment's contents.

The policy is Lucene's tiered one, simplified: segments are grouped in tiers by live size (a tier
spans a factor of `factor`, from `floor_chunks` up), and when a tier holds `factor` segments they
are merged into one of the next tier. A segment whose rows are more than half deleted is merged
too, so deletes do not pile up. Merging keeps each document's rows in order, segment after segment,
so the merged view ranks exactly as the segments it replaces.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from .index import ChunkRecord, DocumentInfo, Segment
from .lexical import Postings


@dataclass(frozen=True)
class MergePolicy:
    """`factor` segments of one tier merge into one (0 turns merging off)."""

    factor: int = 8
    floor_chunks: int = 1000

    def tier(self, live_chunks: int) -> int:
        return int(math.log(max(live_chunks, self.floor_chunks) / self.floor_chunks, self.factor))

    def pick(self, sizes: Sequence[tuple[str, int, int]]) -> list[str]:
        """Segment ids to merge next, from (id, live chunks, rows) in manifest order; [] for none.

        Only neighbours merge (`factor` consecutive segments of one tier, the smallest such run
        first), so rows keep their order and ties rank as before (Lucene's log merge policy)."""
        if self.factor < 2:
            return []
        runs = []
        for i in range(len(sizes) - self.factor + 1):
            window = sizes[i : i + self.factor]
            if len({self.tier(live) for _, live, _ in window}) == 1:
                runs.append((sum(live for _, live, _ in window), i))
        if runs:
            _, i = min(runs)
            return [sid for sid, _, _ in sizes[i : i + self.factor]]
        sparse = [sid for sid, live, rows in sizes if rows and live * 2 < rows]
        return sparse[:1]  # rewritten alone, without its deleted rows


@dataclass
class Merged:
    records: list[ChunkRecord]
    vectors: np.ndarray
    documents: dict[str, DocumentInfo]
    postings: Postings


@dataclass
class Source:
    """What a merge needs of one segment, as plain data (it crosses to the merge process)."""

    records: list[ChunkRecord]
    vectors: np.ndarray
    documents: dict[str, DocumentInfo]
    postings: Postings
    deleted: frozenset[str]
    live: np.ndarray

    @classmethod
    def of(cls, seg: Segment, deleted: frozenset[str]) -> Source:
        return cls(seg.records, seg.vectors, seg.documents, seg.postings, deleted, seg.live_mask(deleted))


def merge_segments(sources: Sequence[Source], dim: int) -> Merged:
    """The live rows of `sources`, in order, as one segment's contents; postings are merged,
    never re-analysed."""
    records: list[ChunkRecord] = []
    vecs: list[np.ndarray] = []
    docs: dict[str, DocumentInfo] = {}
    for s in sources:
        records.extend(r for r, ok in zip(s.records, s.live, strict=True) if ok)
        vecs.append(s.vectors[s.live])
        docs.update({d: info for d, info in s.documents.items() if d not in s.deleted})
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    postings = Postings.merge([(s.postings, s.live) for s in sources])
    return Merged(records, vectors.reshape(len(records), dim), docs, postings)


def merge_and_encode(sources: Sequence[Source], dim: int) -> tuple[Merged, dict[str, bytes]]:
    """The merged contents and the new segment's files. Runs in the merge process (see
    `merge_executor`), so a merge's CPU work never holds the serving process's GIL."""
    from .segments import encode_segment

    merged = merge_segments(sources, dim)
    return merged, encode_segment(merged.records, merged.vectors, merged.documents, merged.postings)


def merge_executor() -> ProcessPoolExecutor:
    """One worker process, started on first use with `spawn` (no fork of a gRPC process)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
