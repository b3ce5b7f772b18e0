"""What the retriever's core needs from the outside world, as small Protocols.

The core never imports gRPC: `adapters.py` implements these over the storage and embedder
clients, and unit tests pass in-process implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class PutOutcome:
    """The outcome of writing one object."""

    key: str
    ok: bool
    error: str = ""
    total_ns: int = 0


@dataclass(frozen=True)
class GetOutcome:
    """The outcome of reading one object: its bytes, or why not (`missing` for NOT_FOUND)."""

    key: str
    data: bytes = b""
    ok: bool = True
    missing: bool = False
    error: str = ""
    ttfb_ns: int = 0
    total_ns: int = 0


@dataclass(frozen=True)
class ObjectMeta:
    key: str
    size_bytes: int = 0
    etag: str = ""
    last_modified_unix_ns: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    """Object storage through the storage service (any backend by name; "" is the default)."""

    async def put_many(self, items: Sequence[tuple[str, bytes]], *, backend: str = "") -> list[PutOutcome]: ...

    async def get_many(self, keys: Sequence[str], *, backend: str = "") -> list[GetOutcome]: ...

    async def get(self, key: str, *, backend: str = "", max_bytes: int = 0) -> bytes:
        """The object's bytes; raises `ObjectNotFound` when missing and `ObjectTooLarge` as soon
        as its declared size or the bytes received pass `max_bytes` (0: no limit)."""
        ...

    async def list(self, prefix: str, *, backend: str = "") -> list[ObjectMeta]: ...

    async def delete(self, keys: Sequence[str] = (), *, prefix: str = "", backend: str = "") -> int: ...

    async def read(self, key: str, *, backend: str = "") -> tuple[bytes, str]:
        """The object's bytes and its ETag; raises `ObjectNotFound` when missing."""
        ...

    async def put_if(
        self, key: str, data: bytes, *, if_match: str = "", if_none_match: bool = False, backend: str = ""
    ) -> str:
        """A compare-and-swap write: stores `data` only while the object still has ETag `if_match`
        (or, with `if_none_match`, does not exist). Returns the new ETag; raises
        `PreconditionFailed` when another writer changed the object first."""
        ...


class ObjectNotFound(KeyError):
    """The object does not exist."""


class ObjectTooLarge(Exception):
    """The object is over the size the caller accepts; the message says so for people."""


class PreconditionFailed(Exception):
    """A conditional write found the object changed (or present, for a create)."""


class Encoder(Protocol):
    """Turns texts into L2-normalised float32 vectors, shape (len(texts), dim)."""

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        """`timeout`: seconds for this call (the encoder's default when None; an inbound
        request's deadline still caps it)."""
        ...

    async def dimension(self) -> int: ...
