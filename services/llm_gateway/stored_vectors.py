"""Sentence vectors stored at ingestion, served to the extractive generator as an `Encoder`.

The retriever returns each passage's stored sentence vectors (kernel/sentences.py) with the
passage when asked. `StoredSentenceEncoder` answers the generator's `encode` from them and
sends only the rest (the question, and any sentence without a stored vector: a chunk written
before sentence vectors existed, a passage cut to fit the prompt) to the embedder, in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from kernel.sentences import sentence_key

from .domain import Passage


class Encoder(Protocol):
    async def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class StoredSentenceEncoder:
    """`encode` from the passages' stored vectors where one exists, else from `inner`.

    `stored` and `embedded` count the texts served each way (the question is one of the
    embedded ones)."""

    def __init__(self, inner: Encoder, passages: Sequence[Passage]) -> None:
        self.inner = inner
        self.known: dict[bytes, np.ndarray] = {}
        for p in passages:
            if p.sentence_vectors is not None:
                self.known.update(p.sentence_vectors.lookup())
        self.stored = 0
        self.embedded = 0

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self.known.get(sentence_key(t)) if self.known else None for t in texts]
        todo = [i for i, r in enumerate(rows) if r is None]
        if len(todo) == len(texts):
            self.embedded += len(texts)
            return await self.inner.encode(list(texts))
        out: np.ndarray | None = None
        if todo:
            got = await self.inner.encode([texts[i] for i in todo])
            dim = next(r for r in rows if r is not None).shape[0]
            if got.shape[1] != dim:  # vectors of another model: use none of the stored ones
                self.embedded += len(texts)
                return await self.inner.encode(list(texts))
            out = np.empty((len(texts), dim), dtype=np.float32)
            out[todo] = got
        else:
            dim = rows[0].shape[0]  # type: ignore[union-attr]
            out = np.empty((len(texts), dim), dtype=np.float32)
        for i, r in enumerate(rows):
            if r is not None:
                out[i] = r
        self.stored += len(texts) - len(todo)
        self.embedded += len(todo)
        return out
