"""One S3 bucket behind a boto3 client, driven from asyncio through a bounded executor.

Every blocking boto3 call runs in the executor; the connection pool is sized to the executor so
parallel BatchGet items really run in parallel. botocore's own retries are off: throttling and
transient failures are retried here with jittered exponential backoff, so each `Transfer`
counts its retries and the backoff shows in its latency.

Timing: a `before-send` hook stamps, per thread, the moment the HTTP request leaves. For a GET,
a `before-parse` hook waits (without consuming anything) until the first body byte is in the
socket buffer and stamps it, so botocore's own response parsing never inflates the TTFB.
`ttfb_ns` is send -> first body byte (or -> the response for calls with no body); `total_ns`
-> the last byte. With retries both run from the first attempt's send, so the time
a retry cost the caller is never hidden.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from kernel import tracing
from kernel.errors import ServiceError

from . import s3trace, wire
from .aioget import AsyncGetter, Unsupported
from .errors import condition_not_met, is_retryable, map_error
from .fastget import FastGetter
from .metrics import StoreMetrics
from .model import BackendSpec, ObjectMeta, Transfer
from .s3_client import ClientSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# The calling RPC's deadline on the event loop's clock (`loop.time()`), set by the servicer; retries
# stop when the next backoff would pass it.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("storage_deadline", default=None)


def _meta_from_head(key: str, h: dict[str, Any]) -> ObjectMeta:
    lm = h.get("LastModified")
    return ObjectMeta(
        key=key,
        size_bytes=int(h.get("ContentLength", 0) or 0),
        etag=str(h.get("ETag", "")).strip('"'),
        content_type=str(h.get("ContentType", "") or ""),
        last_modified_unix_ns=int(lm.timestamp() * 1e9) if lm else 0,
        metadata=dict(h.get("Metadata") or {}),
    )


class S3Store:
    """A bucket of one backend. Async methods return results plus a measured `Transfer`."""

    def __init__(self, spec: BackendSpec, client: Any, executor: Executor, settings: ClientSettings) -> None:
        self.spec = spec
        self.client = client
        self.executor = executor
        self.settings = settings
        self._tls = threading.local()
        self.fast: FastGetter | None = None
        # Whole-object GETs on the event loop (aioget.py), where the backend allows; set by backends.py.
        self.aio: AsyncGetter | None = None
        # Set by the backend manager: every operation's duration, TTFB and errors (metrics.py).
        self.metrics: StoreMetrics | None = None
        wire.install()
        client.meta.events.register("before-send.s3", self._on_send)
        client.meta.events.register("before-parse.s3.GetObject", self._on_get_headers)
        client.meta.events.register("before-send.s3", s3trace.inject_traceparent)
        client.meta.events.register("after-call.s3", s3trace.record_response)

    @property
    def bucket(self) -> str:
        return self.spec.bucket

    def _on_send(self, **_: Any) -> None:
        self._tls.sent_ns = time.perf_counter_ns()

    def _on_get_headers(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        """Stamps the arrival of a GET's first body byte. If it came with the headers, that is
        when the response became readable on the socket (see wire.py); otherwise peek the
        buffered reader (blocks until a byte is there, consumes nothing) and stamp then."""
        self._tls.first_ns = 0
        if not response_dict or response_dict.get("status_code") not in (200, 206):
            return
        try:
            if int(response_dict["headers"].get("content-length", "0")) <= 0:
                return
            body = response_dict["body"]
            fp = getattr(body, "_raw_stream", body)._fp.fp
            if wire.body_came_with_headers() and wire.response_ns():
                self._tls.first_ns = wire.response_ns()
            elif fp.peek(1):
                self._tls.first_ns = time.perf_counter_ns()
        except Exception:  # noqa: BLE001 - a client without these internals falls back to read(1)
            return

    def sent_ns(self, fallback: int) -> int:
        """When the current thread's request was written to the socket (else when botocore
        was about to send it, else `fallback`)."""
        return wire.sent_ns() or getattr(self._tls, "sent_ns", 0) or fallback

    def response_ns(self, fallback: int) -> int:
        """When the current thread's response became readable on the socket, or `fallback`."""
        return wire.response_ns() or fallback

    def first_byte_ns(self, fallback: int) -> int:
        """When the current thread's last GET's first body byte arrived, or `fallback`."""
        return getattr(self._tls, "first_ns", 0) or fallback

    def _mark(self) -> int:
        wire.reset()
        self._tls.sent_ns = 0
        self._tls.first_ns = 0
        return time.perf_counter_ns()

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        if self.aio is not None:
            self.aio.close()
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing must not fail shutdown
            pass

    # --- the retry loop -------------------------------------------------------------------

    async def run(
        self, fn: Callable[..., T], *args: Any, key: str = "", transfer: Transfer | None = None, operation: str = ""
    ) -> T:
        """Runs blocking `fn(*args)` in the executor, retrying throttling/transient errors with
        full-jitter exponential backoff; failures come out as `ServiceError`. The operation is
        recorded in the store metrics as `operation` (default: `fn`'s name without its `_`)."""
        loop = asyncio.get_running_loop()

        def attempt() -> Awaitable[T]:
            if tracing.recording():  # one span per attempt (s3trace.py)
                traced = (s3trace.traced_call, self.spec.name, self.bucket, key, transfer, fn, *args)
                return loop.run_in_executor(self.executor, contextvars.copy_context().run, *traced)
            return loop.run_in_executor(self.executor, fn, *args)

        return await self._retrying(attempt, operation or fn.__name__.lstrip("_"), key, transfer)

    async def run_on_loop(
        self, fn: Callable[..., Awaitable[T]], *args: Any, key: str, transfer: Transfer, operation: str
    ) -> T:
        """`run` for a coroutine function that does its I/O on the event loop (no thread)."""

        async def attempt() -> T:
            if not tracing.recording():
                return await fn(*args)
            op = s3trace.OPERATIONS.get(fn.__name__, operation)
            with s3trace.client_span(self.spec.name, self.bucket, key, op, transfer):
                return await fn(*args)

        return await self._retrying(attempt, operation, key, transfer)

    async def _retrying(
        self, attempt: Callable[[], Awaitable[T]], operation: str, key: str, transfer: Transfer | None
    ) -> T:
        loop = asyncio.get_running_loop()
        deadline = DEADLINE.get()
        tries = 0
        start = time.perf_counter_ns()
        while True:
            try:
                result = await attempt()
                self._record(operation, start, transfer)
                return result
            except Exception as exc:  # noqa: BLE001 - mapped below
                if tries < self.settings.max_retries and is_retryable(exc):
                    cap = self.settings.retry_base_ms * (2**tries) / 1000.0
                    pause = random.uniform(cap / 2, cap)
                    # No retry the caller's deadline leaves no time for.
                    if deadline is None or loop.time() + pause < deadline:
                        tries += 1
                        if transfer is not None:
                            transfer.retries += 1  # cumulative over the calls of one transfer
                        await asyncio.sleep(pause)
                        continue
                err = map_error(exc, self.spec.name, self.bucket, key, tries)
                self._record(operation, start, transfer, err.reason)
                raise err from None

    def _record(self, operation: str, start_ns: int, transfer: Transfer | None, error: str = "") -> None:
        if self.metrics is not None:
            ttfb = transfer.ttfb_ns / 1e9 if transfer is not None else 0.0
            seconds = (time.perf_counter_ns() - start_ns) / 1e9
            self.metrics.record(self.spec.name, operation, seconds, ttfb, error)

    # --- blocking operations (executor threads) ------------------------------------------

    def _put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str],
        tr: Transfer,
        conditions: dict[str, str] | None = None,
    ) -> str:
        t0 = self._mark()
        resp = self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type or "application/octet-stream",
            Metadata=metadata,
            **(conditions or {}),
        )
        end = time.perf_counter_ns()
        sent = self.sent_ns(t0)
        tr.ttfb_ns, tr.total_ns, tr.bytes = self.response_ns(end) - sent, end - sent, len(data)
        return str(resp.get("ETag", "")).strip('"')

    def open_object(self, key: str, rng: str = "", if_match: str = "") -> tuple[Any, dict[str, Any]]:
        """Sends a GET (blocking; call `_mark()` first): the body (`read`, `iter_chunks`,
        `close`) and boto3-style response fields. Small-object fast path when available."""
        if self.fast is not None:
            return self.fast.open(self.bucket, key, rng, if_match)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if rng:
            kwargs["Range"] = rng
        if if_match:
            kwargs["IfMatch"] = if_match
        resp = self.client.get_object(**kwargs)
        return resp["Body"], resp

    def first_byte(self, body: Any) -> tuple[bytes, int]:
        """Reads the first body byte; returns it with when it reached the host."""
        b = body.read(1)
        now = time.perf_counter_ns()
        stamped = getattr(self._tls, "first_ns", 0)
        if not stamped and wire.body_came_with_headers():
            stamped = wire.response_ns()
        return b, stamped or now

    def _get(self, key: str, range_header: str, tr: Transfer) -> tuple[bytes, ObjectMeta]:
        t0 = self._mark()
        body, resp = self.open_object(key, range_header)
        sent = self.sent_ns(t0)
        try:
            first, t_first = self.first_byte(body)
            rest = body.read() if first else b""
        finally:
            body.close()
        end = time.perf_counter_ns()
        data = first + rest
        tr.ttfb_ns, tr.total_ns, tr.bytes = t_first - sent, end - sent, len(data)
        return data, _meta_from_head(key, resp)

    def _head(self, key: str, tr: Transfer) -> ObjectMeta:
        t0 = self._mark()
        resp = self.client.head_object(Bucket=self.bucket, Key=key)
        end = time.perf_counter_ns()
        sent = self.sent_ns(t0)
        tr.ttfb_ns, tr.total_ns = self.response_ns(end) - sent, end - sent
        return _meta_from_head(key, resp)

    def _list(self, prefix: str, max_keys: int, token: str, tr: Transfer) -> tuple[list[ObjectMeta], str]:
        t0 = self._mark()
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if token:
            kwargs["ContinuationToken"] = token
        resp = self.client.list_objects_v2(**kwargs)
        end = time.perf_counter_ns()
        sent = self.sent_ns(t0)
        tr.ttfb_ns, tr.total_ns = self.response_ns(end) - sent, tr.total_ns + (end - sent)
        out = [
            ObjectMeta(
                key=o["Key"],
                size_bytes=int(o.get("Size", 0)),
                etag=str(o.get("ETag", "")).strip('"'),
                last_modified_unix_ns=int(o["LastModified"].timestamp() * 1e9) if o.get("LastModified") else 0,
            )
            for o in resp.get("Contents", [])
        ]
        nxt = resp.get("NextContinuationToken", "") if resp.get("IsTruncated") else ""
        return out, nxt or ""

    def _delete(self, keys: list[str], tr: Transfer) -> int:
        t0 = self._mark()
        resp = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True}
        )
        end = time.perf_counter_ns()
        sent = self.sent_ns(t0)
        tr.ttfb_ns, tr.total_ns = self.response_ns(end) - sent, tr.total_ns + (end - sent)
        errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            from botocore.exceptions import ClientError

            first = errors[0]
            raise ClientError(
                {"Error": {"Code": first.get("Code", ""), "Message": ""}, "ResponseMetadata": {}}, "DeleteObjects"
            )
        return len(keys)

    def _copy(self, src: str, dst: str, tr: Transfer) -> ObjectMeta:
        t0 = self._mark()
        self.client.copy_object(Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src})
        end = time.perf_counter_ns()
        sent = self.sent_ns(t0)
        tr.ttfb_ns, tr.total_ns = self.response_ns(end) - sent, end - sent
        h = self.client.head_object(Bucket=self.bucket, Key=dst)
        meta = _meta_from_head(dst, h)
        tr.bytes = meta.size_bytes
        return meta

    def _head_bucket(self) -> int:
        t0 = self._mark()
        self.client.head_bucket(Bucket=self.bucket)
        end = time.perf_counter_ns()
        return self.response_ns(end) - self.sent_ns(t0)

    # multipart
    def _mpu_create(self, key: str, content_type: str, metadata: dict[str, str]) -> str:
        resp = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type or "application/octet-stream", Metadata=metadata
        )
        return str(resp["UploadId"])

    def _mpu_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        resp = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)
        return str(resp["ETag"])

    def _mpu_complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        resp = self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
        )
        return str(resp.get("ETag", "")).strip('"')

    def _mpu_abort(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    # --- async API -----------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "",
        metadata: dict[str, str] | None = None,
        *,
        if_match: str = "",
        if_none_match: bool = False,
    ) -> tuple[str, Transfer]:
        """One PUT. `if_match` (an ETag) / `if_none_match` make it conditional (HTTP If-Match /
        If-None-Match: *); a condition that does not hold raises CONDITION_NOT_MET."""
        tr = Transfer()
        start = time.perf_counter_ns()
        cond = {"IfMatch": f'"{if_match.strip(chr(34))}"'} if if_match else {}
        if if_none_match:
            cond["IfNoneMatch"] = "*"
        try:
            etag = await self.run(
                self._put, key, data, content_type, dict(metadata or {}), tr, cond, key=key, transfer=tr
            )
        except ServiceError as err:
            if cond and err.reason in ("OBJECT_CHANGED", "OBJECT_NOT_FOUND"):
                raise condition_not_met(self.spec.name, key, if_match, if_none_match) from None
            raise
        _span_retries(tr, start)
        return etag, tr

    async def _get_on_loop(self, key: str, range_header: str, tr: Transfer) -> tuple[bytes, ObjectMeta]:
        """`_get` through the event-loop client (aioget.py), same measurements."""
        assert self.aio is not None
        try:
            r = await self.aio.get(self.bucket, key, range_header)
        except Unsupported:  # a response it does not parse: this once through the thread path
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._get, key, range_header, tr)
        tr.ttfb_ns, tr.total_ns, tr.bytes = r.first_ns - r.sent_ns, r.end_ns - r.sent_ns, len(r.body)
        return r.body, _meta_from_head(key, r.fields())

    async def get(self, key: str, range_header: str = "") -> tuple[bytes, ObjectMeta, Transfer]:
        tr = Transfer()
        start = time.perf_counter_ns()
        if self.aio is not None:
            data, meta = await self.run_on_loop(
                self._get_on_loop, key, range_header, tr, key=key, transfer=tr, operation="get"
            )
        else:
            data, meta = await self.run(self._get, key, range_header, tr, key=key, transfer=tr)
        _span_retries(tr, start)
        return data, meta, tr

    async def head(self, key: str) -> tuple[ObjectMeta, Transfer]:
        tr = Transfer()
        start = time.perf_counter_ns()
        meta = await self.run(self._head, key, tr, key=key, transfer=tr)
        _span_retries(tr, start)
        return meta, tr

    async def list(self, prefix: str, max_keys: int, token: str = "") -> tuple[list[ObjectMeta], str, Transfer]:
        tr = Transfer()
        objs, nxt = await self.run(self._list, prefix, max_keys, token, tr, transfer=tr)
        return objs, nxt, tr

    async def delete_keys(self, keys: list[str], tr: Transfer) -> int:
        done = 0
        for i in range(0, len(keys), 1000):
            batch = keys[i : i + 1000]
            done += await self.run(self._delete, batch, tr, key=batch[0], transfer=tr)
        return done

    async def delete_prefix(self, prefix: str, tr: Transfer) -> int:
        done = 0
        while True:
            objs, _nxt, ltr = await self.list(prefix, 1000)
            tr.total_ns += ltr.total_ns
            if not objs:
                return done
            done += await self.delete_keys([o.key for o in objs], tr)

    async def copy(self, src: str, dst: str) -> tuple[ObjectMeta, Transfer]:
        tr = Transfer()
        start = time.perf_counter_ns()
        meta = await self.run(self._copy, src, dst, tr, key=src, transfer=tr)
        _span_retries(tr, start)
        return meta, tr

    async def head_bucket(self) -> int:
        return await self.run(self._head_bucket)


def _span_retries(tr: Transfer, start_ns: int) -> None:
    """With retries, time runs from the first attempt: add what earlier attempts and backoff cost."""
    if tr.retries:
        extra = max(0, (time.perf_counter_ns() - start_ns) - tr.total_ns)
        tr.ttfb_ns += extra
        tr.total_ns += extra
