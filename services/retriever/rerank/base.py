"""The reranker port: score (query, text) pairs; higher is more relevant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class RerankError(Exception):
    """A reranker could not score: down, slow, or its reply was malformed. The message is for
    people and never holds a credential."""


class Reranker(Protocol):
    """One backend. `score` returns one float per text, in the order given."""

    name: str

    async def score(self, query: str, texts: Sequence[str]) -> list[float]: ...

    async def close(self) -> None: ...
