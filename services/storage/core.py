"""The storage service's object operations in plain Python, with measured transfers: streaming
Put (multipart above a threshold, aborted on failure), streaming Get (resumed with a ranged read
after a mid-transfer reset), batches, listing, deletes and copies. Named backends (the shared
registry, clients, adding and testing them) are backends.py's.

No grpc or protobuf types here; the servicer converts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kernel.errors import ErrorKind, ServiceError, invalid
from kernel.timing import Stage, Timer

from .backends import Backends, build_registry
from .config import StorageConfig
from .keys import check_key, check_prefix, require_allowed
from .model import ObjectMeta, Transfer
from .registry import BackendRegistry
from .s3 import S3Store
from .streams import GetStream, PutOutcome, check_size, multipart_upload

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024 * 1024


@dataclass
class ItemResult:
    """One item of a batch: either `error` or the data/meta/etag, with its transfer."""

    key: str
    transfer: Transfer = field(default_factory=Transfer)
    data: bytes = b""
    meta: ObjectMeta | None = None
    etag: str = ""
    error: ServiceError | None = None


def range_header(start: int, end: int) -> str:
    if start < 0 or end < 0:
        raise invalid("range_start and range_end must be >= 0", reason="INVALID_RANGE")
    if start == 0 and end == 0:
        return ""
    if end and end < start:
        raise invalid(f"range_end {end} is before range_start {start}", reason="INVALID_RANGE")
    return f"bytes={start}-{end if end else ''}"


class StorageCore:
    """Object operations over the named backends of `backends.py`."""

    def __init__(self, cfg: StorageConfig, registry: BackendRegistry | None = None) -> None:
        self.cfg = cfg
        self.executor = ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="s3")
        self.backends = Backends(cfg, registry if registry is not None else build_registry(cfg), self.executor)

    @property
    def default_backend(self) -> str:
        return self.backends.default_name

    async def close(self) -> None:
        await self.backends.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # --- objects -------------------------------------------------------------------------

    async def _open(self, backend: str, *keys: str) -> S3Store:
        for k in keys:
            check_key(k)
        store = await self.backends.store(backend)
        for k in keys:
            require_allowed(store.spec.name, store.spec.allowed_prefixes, k)
        return store

    async def put(
        self,
        backend: str,
        key: str,
        data: bytes,
        content_type: str = "",
        metadata: dict[str, str] | None = None,
        timer: Timer | None = None,
    ) -> PutOutcome:
        async def once() -> AsyncIterator[bytes]:
            yield data

        return await self.put_stream(backend, key, once(), content_type, metadata, len(data), timer)

    async def put_stream(
        self,
        backend: str,
        key: str,
        chunks: AsyncIterable[bytes],
        content_type: str = "",
        metadata: dict[str, str] | None = None,
        size_hint: int = 0,
        timer: Timer | None = None,
    ) -> PutOutcome:
        """Stores the bytes of `chunks`. Up to the threshold they go up in one PUT once the stream
        ended; above it as a multipart upload that is aborted if anything fails (the client's
        stream included), so no partial object is ever visible."""
        store = await self._open(backend, key)
        _check_metadata(metadata)
        threshold = max(self.cfg.multipart_threshold_bytes, 1)
        part_size = max(self.cfg.multipart_part_bytes, MIN_PART_BYTES)
        buf = bytearray()
        it = chunks.__aiter__()
        ended = False
        while len(buf) <= threshold:
            try:
                buf += await it.__anext__()
            except StopAsyncIteration:
                ended = True
                break
        if ended:
            check_size(size_hint, len(buf))
            etag, tr = await store.put(key, bytes(buf), content_type, metadata)
            if timer:
                timer.add(Stage("s3_put", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
            return PutOutcome(key, len(buf), etag, False, tr)
        return await multipart_upload(store, key, buf, it, content_type, metadata, part_size, timer, size_hint)

    async def put_conditional(
        self,
        backend: str,
        key: str,
        data: bytes,
        content_type: str = "",
        metadata: dict[str, str] | None = None,
        *,
        if_match: str = "",
        if_none_match: bool = False,
        timer: Timer | None = None,
    ) -> PutOutcome:
        """One PUT that holds only if the object still has ETag `if_match` (or, with
        `if_none_match`, does not exist): compare-and-swap for small state objects (leases, job
        state). Raises FAILED_PRECONDITION / CONDITION_NOT_MET when another writer got there first."""
        if len(data) > max(self.cfg.multipart_threshold_bytes, 1):
            raise invalid(
                f"a conditional write holds at most {self.cfg.multipart_threshold_bytes} bytes; got {len(data)}",
                reason="CONDITIONAL_TOO_LARGE",
            )
        store = await self._open(backend, key)
        _check_metadata(metadata)
        etag, tr = await store.put(key, data, content_type, metadata, if_match=if_match, if_none_match=if_none_match)
        if timer:
            timer.add(Stage("s3_put", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
        return PutOutcome(key, len(data), etag, False, tr)

    async def get(
        self, backend: str, key: str, start: int = 0, end: int = 0, timer: Timer | None = None
    ) -> tuple[bytes, ObjectMeta, Transfer]:
        rng = range_header(start, end)
        store = await self._open(backend, key)
        data, meta, tr = await store.get(key, rng)
        if timer:
            timer.add(Stage("s3_get", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
        return data, meta, tr

    async def open_get(self, backend: str, key: str, start: int = 0, end: int = 0) -> GetStream:
        rng = range_header(start, end)
        store = await self._open(backend, key)
        stream = GetStream(store, key, start, end, self.cfg.get_chunk_bytes)
        await stream.open(rng)
        return stream

    async def batch_get(self, backend: str, keys: Sequence[str], timer: Timer | None = None) -> list[ItemResult]:
        self._check_batch(len(keys))
        store = await self.backends.store(backend)
        t0 = time.perf_counter_ns()

        async def one(k: str) -> ItemResult:
            try:
                await self._open(backend, k)
                data, meta, tr = await store.get(k)
                return ItemResult(k, tr, data, meta)
            except ServiceError as err:
                return ItemResult(k, error=err)

        results = cap_batch_bytes(list(await asyncio.gather(*(one(k) for k in keys))), BATCH_GET_BUDGET_BYTES)
        if timer:
            ok = [r for r in results if r.error is None]
            ttfbs = sorted(r.transfer.ttfb_ns for r in ok)
            timer.add(
                Stage(
                    "s3_batch_get",
                    time.perf_counter_ns() - t0,
                    store.spec.name,
                    ttfbs[len(ttfbs) // 2] if ttfbs else 0,
                    sum(r.transfer.bytes for r in ok),
                    len(ok),
                )
            )
        return results

    async def batch_put(
        self,
        backend: str,
        items: Sequence[tuple[str, bytes, str, dict[str, str]]],
        timer: Timer | None = None,
    ) -> list[ItemResult]:
        self._check_batch(len(items))
        store = await self.backends.store(backend)
        t0 = time.perf_counter_ns()

        async def one(k: str, data: bytes, ctype: str, meta: dict[str, str]) -> ItemResult:
            try:
                await self._open(backend, k)
                if len(data) > self.cfg.max_batch_item_bytes:
                    raise invalid(
                        f"item {k[:80]!r} is {len(data)} bytes, over the BatchPut limit of "
                        f"{self.cfg.max_batch_item_bytes}; use Put for large objects",
                        reason="ITEM_TOO_LARGE",
                    )
                _check_metadata(meta)
                etag, tr = await store.put(k, data, ctype, meta)
                return ItemResult(k, tr, etag=etag)
            except ServiceError as err:
                return ItemResult(k, error=err)

        results = list(await asyncio.gather(*(one(*it) for it in items)))
        if timer:
            ok = [r for r in results if r.error is None]
            timer.add(
                Stage(
                    "s3_batch_put",
                    time.perf_counter_ns() - t0,
                    store.spec.name,
                    0,
                    sum(r.transfer.bytes for r in ok),
                    len(ok),
                )
            )
        return results

    def _check_batch(self, n: int) -> None:
        if n > self.cfg.max_batch_items:
            raise invalid(
                f"a batch carries at most {self.cfg.max_batch_items} items; got {n}", reason="BATCH_TOO_LARGE"
            )

    async def head(self, backend: str, key: str, timer: Timer | None = None) -> tuple[ObjectMeta, Transfer]:
        store = await self._open(backend, key)
        meta, tr = await store.head(key)
        if timer:
            timer.add(Stage("s3_head", tr.total_ns, store.spec.name, tr.ttfb_ns, 0, 1))
        return meta, tr

    async def list(
        self, backend: str, prefix: str, page_size: int, token: str, timer: Timer | None = None
    ) -> tuple[list[ObjectMeta], str, Transfer]:
        check_prefix(prefix)
        store = await self.backends.store(backend)
        require_allowed(store.spec.name, store.spec.allowed_prefixes, prefix, "listing prefix")
        objs, nxt, tr = await store.list(prefix, page_size, token)
        if timer:
            timer.add(Stage("s3_list", tr.total_ns, store.spec.name, tr.ttfb_ns, 0, len(objs)))
        return objs, nxt, tr

    async def delete(
        self, backend: str, keys: Sequence[str], prefix: str = "", timer: Timer | None = None
    ) -> tuple[int, Transfer]:
        self._check_batch(len(keys))
        check_prefix(prefix)
        if not keys and not prefix:
            raise invalid("give keys to delete or a prefix", reason="NOTHING_TO_DELETE")
        store = await self._open(backend, *keys)
        if prefix:
            require_allowed(store.spec.name, store.spec.allowed_prefixes, prefix, "deletion prefix")
        tr = Transfer()
        t0 = time.perf_counter_ns()
        n = await store.delete_keys(list(dict.fromkeys(keys)), tr) if keys else 0
        if prefix:
            n += await store.delete_prefix(prefix, tr)
        if timer:
            timer.add(Stage("s3_delete", time.perf_counter_ns() - t0, store.spec.name, tr.ttfb_ns, 0, n))
        return n, tr

    async def copy(self, backend: str, src: str, dst: str, timer: Timer | None = None) -> tuple[ObjectMeta, Transfer]:
        check_key(src, "source key")
        check_key(dst, "destination key")
        store = await self._open(backend, src, dst)
        meta, tr = await store.copy(src, dst)
        if timer:
            timer.add(Stage("s3_copy", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
        return meta, tr


# A BatchGet response must fit in one gRPC message (256 MiB), with room for the envelope.
BATCH_GET_BUDGET_BYTES = 240 * 1024 * 1024


def cap_batch_bytes(results: list[ItemResult], budget: int) -> list[ItemResult]:
    """Keeps results in order until their data would pass `budget`; later successes become
    RESOURCE_EXHAUSTED (their data dropped), so the response never exceeds the message limit."""
    used = 0
    for i, r in enumerate(results):
        if r.error is not None:
            continue
        if used + len(r.data) > budget:
            results[i] = ItemResult(
                r.key,
                error=ServiceError(
                    ErrorKind.RESOURCE_EXHAUSTED,
                    f"the batch's objects pass {budget >> 20} MiB; fetch {r.key[:80]!r} with Get or in a smaller batch",
                    reason="BATCH_TOO_LARGE",
                ),
            )
        else:
            used += len(r.data)
    return results


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if not metadata:
        return
    size = 0
    for k, v in metadata.items():
        if not k or not all(c.isalnum() or c in "-_" for c in k):
            raise invalid(f"metadata key {k[:40]!r} must be non-empty [A-Za-z0-9_-]", reason="INVALID_METADATA")
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in v):
            raise invalid(f"metadata value of {k!r} must be printable ASCII", reason="INVALID_METADATA")
        size += len(k) + len(v)
    if size > 2048:
        raise invalid("user metadata is limited to 2 KiB", reason="INVALID_METADATA")
