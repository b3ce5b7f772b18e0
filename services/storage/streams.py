"""Streaming transfers: multipart upload (aborted on any failure, so no partial object is ever
visible) and the streaming read behind Get (resumed with a ranged read after a mid-transfer
reset)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kernel.errors import invalid
from kernel.timing import Stage, Timer

from .errors import is_retryable, map_error
from .model import ObjectMeta, Transfer
from .s3 import S3Store, _meta_from_head

log = logging.getLogger(__name__)


@dataclass
class PutOutcome:
    key: str
    size_bytes: int
    etag: str
    multipart: bool
    transfer: Transfer


def check_size(announced: int, received: int, *, zero_is_size: bool = False) -> None:
    """A stream that carried other than the announced size stores nothing. An announced 0 means
    "unknown" in a header, but is a real count in a Put stream's `end` message (`zero_is_size`)."""
    if (announced or zero_is_size) and announced != received:
        raise invalid(
            f"the header announced {announced} bytes but the stream carried {received}; nothing was stored",
            reason="SIZE_MISMATCH",
        )


async def multipart_upload(
    store: S3Store,
    key: str,
    buf: bytearray,
    it: AsyncIterator[bytes],
    content_type: str,
    metadata: dict[str, str] | None,
    part_size: int,
    timer: Timer | None,
    size_hint: int = 0,
) -> PutOutcome:
    tr = Transfer()
    t0 = time.perf_counter_ns()
    upload_id = await store.run(store._mpu_create, key, content_type, dict(metadata or {}), key=key, transfer=tr)
    tr.ttfb_ns = time.perf_counter_ns() - t0
    parts: list[tuple[int, str]] = []
    total = 0
    try:
        ended = False
        while True:
            while not ended and len(buf) < part_size:
                try:
                    buf += await it.__anext__()
                except StopAsyncIteration:
                    ended = True
            if buf and (len(buf) >= part_size or ended):
                n = part_size if len(buf) >= part_size and not (ended and len(buf) < 2 * part_size) else len(buf)
                piece = bytes(buf[:n])
                del buf[:n]
                etag = await store.run(store._mpu_part, key, upload_id, len(parts) + 1, piece, key=key, transfer=tr)
                parts.append((len(parts) + 1, etag))
                total += len(piece)
            if ended and not buf:
                break
        check_size(size_hint, total)
        etag = await store.run(store._mpu_complete, key, upload_id, parts, key=key, transfer=tr)
    except BaseException:
        await _shielded_abort(store, key, upload_id)
        raise
    tr.total_ns = time.perf_counter_ns() - t0
    tr.bytes = total
    if timer:
        timer.add(Stage("s3_multipart_put", tr.total_ns, store.spec.name, tr.ttfb_ns, total, len(parts)))
    return PutOutcome(key, total, etag, True, tr)


async def _shielded_abort(store: S3Store, key: str, upload_id: str) -> None:
    """Aborts a multipart upload even when the calling task is being cancelled."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(store.executor, store._mpu_abort, key, upload_id)
    try:
        await asyncio.shield(fut)
        log.info("multipart upload aborted", extra={"backend": store.spec.name, "key": key})
    except asyncio.CancelledError:
        pass  # the abort still runs in its thread
    except Exception as exc:  # noqa: BLE001 - report, the original error wins
        log.warning(
            "multipart abort failed", extra={"backend": store.spec.name, "key": key, "error": type(exc).__name__}
        )


class GetStream:
    """A streaming read: `info` once open, then `chunks()`, then `transfer`.

    A transient failure in the middle of the body is resumed with a ranged read from the byte
    reached, pinned to the same ETag, and counted in `transfer.retries`.
    """

    def __init__(self, store: S3Store, key: str, start: int, end: int, chunk: int) -> None:
        self.store = store
        self.key = key
        self.start = start
        self.end = end
        self.chunk = max(1, chunk)
        self.transfer = Transfer()
        self.info: ObjectMeta | None = None
        self._body: Any = None
        self._first: bytes = b""
        self._done = False
        self._t_read = 0
        self._sent = 0
        self._t0 = 0

    def _open_blocking(self, rng: str, if_match: str) -> tuple[Any, dict[str, Any], bytes, int, int]:
        """GET, then the first body byte (stamped), then the rest of the first chunk, in one
        executor hop: a small object is whole after this call."""
        t0 = self.store._mark()
        body, resp = self.store.open_object(self.key, rng, if_match)
        sent = self.store.sent_ns(t0)
        try:
            first, t_first = self.store.first_byte(body)
            length = int(resp.get("ContentLength", 0) or 0)
            if first and length > 1:
                first += body.read(min(self.chunk, length) - 1)
        except BaseException:
            body.close()
            raise
        self._t_read = time.perf_counter_ns()
        if self.info is None:  # the first open (not a resume): its TTFB, for the store metrics
            self.transfer.ttfb_ns = t_first - sent  # open() then adds what retries cost
        return body, resp, first, sent, t_first

    def _take(self, body: Any, resp: dict[str, Any], first: bytes) -> bytes:
        self._body = body
        self._done = len(first) >= int(resp.get("ContentLength", 0) or 0)
        if self._done:
            self.close()
        return first

    async def open(self, rng: str) -> None:
        start = time.perf_counter_ns()
        body, resp, first, sent, t_first = await self.store.run(
            self._open_blocking, rng, "", key=self.key, transfer=self.transfer, operation="get"
        )
        self._t0 = sent if not self.transfer.retries else start
        self.transfer.ttfb_ns = t_first - self._t0
        self._first = self._take(body, resp, first)
        self.info = _meta_from_head(self.key, resp)
        if self._done:
            self.transfer.total_ns = self._t_read - self._t0
            self.transfer.bytes = len(self._first)

    @property
    def whole(self) -> bytes | None:
        """The whole object (or range) when it fit in the first chunk, else None."""
        return self._first if self._done and not self._sent else None

    def _read(self) -> bytes:
        return self._body.read(self.chunk)

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            data, self._first = self._first, b""
            while data:
                self._sent += len(data)
                yield data
                if self._done:
                    break
                try:
                    data = await loop.run_in_executor(self.store.executor, self._read)
                except Exception as exc:  # noqa: BLE001 - resumed or mapped
                    data = await self._resume(exc)
            self.transfer.total_ns = time.perf_counter_ns() - self._t0
            self.transfer.bytes = self._sent
        finally:
            self.close()

    async def _resume(self, exc: Exception) -> bytes:
        if not is_retryable(exc) or self.transfer.retries >= self.store.settings.max_retries or self.info is None:
            raise map_error(exc, self.store.spec.name, self.store.bucket, self.key, self.transfer.retries) from None
        self.close()
        self.transfer.retries += 1
        pos = self.start + self._sent
        end = f"{self.end}" if self.end else ""
        body, resp, first, _sent, _t = await self.store.run(
            self._open_blocking,
            f"bytes={pos}-{end}",
            self.info.etag and f'"{self.info.etag}"',
            key=self.key,
            operation="get",
        )
        return self._take(body, resp, first)

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: BLE001 - closing a dropped connection
                pass
