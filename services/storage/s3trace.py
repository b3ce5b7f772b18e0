"""Trace spans for the storage service's S3 requests (kernel/tracing.py).

Inside a recording trace each attempt of an S3 request is a CLIENT span, current while the
request runs in its executor thread. The object store gets the span's context in a W3C
`traceparent` header, added after SigV4 signing (an unsigned header, which S3 ignores and a
tracing-aware store or proxy can join), and the store's request id (`x-amz-request-id`) is
recorded on the span as `aws.request_id`, so one slow GET can be found in the store's own logs.
Outside a recording trace nothing here runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TypeVar

from kernel import tracing
from kernel.tracing import SpanKind

from .model import Transfer

T = TypeVar("T")

# S3Store's blocking methods -> the S3 operation they send.
OPERATIONS = {
    "_put": "PutObject",
    "_get": "GetObject",
    "_head": "HeadObject",
    "_list": "ListObjectsV2",
    "_delete": "DeleteObjects",
    "_copy": "CopyObject",
    "_head_bucket": "HeadBucket",
    "_mpu_create": "CreateMultipartUpload",
    "_mpu_part": "UploadPart",
    "_mpu_complete": "CompleteMultipartUpload",
    "_mpu_abort": "AbortMultipartUpload",
    "_open_blocking": "GetObject",
    "_get_on_loop": "GetObject",
}


@contextmanager
def client_span(backend: str, bucket: str, key: str, op: str, transfer: Transfer | None) -> Iterator[None]:
    """The CLIENT span of one attempt of S3 operation `op`, current inside the block; a failure
    sets its status (and the store's request id and HTTP status, when the error carries them)."""
    attrs = {
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "rpc.method": op,
        "aws.s3.bucket": bucket,
        "ddnrag.backend": backend,
    }
    if key:
        attrs["aws.s3.key"] = key
    with tracing.span(f"S3.{op}", kind=SpanKind.CLIENT, attributes=attrs) as span:
        try:
            yield
        except Exception as exc:
            meta = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {})
            if meta.get("RequestId"):
                span.set_attribute("aws.request_id", meta["RequestId"])
            if meta.get("HTTPStatusCode"):
                span.set_attribute("http.response.status_code", meta["HTTPStatusCode"])
            span.set_error(type(exc).__name__)
            raise
        if transfer is not None:
            span.set_attributes({"ddnrag.ttfb_ns": transfer.ttfb_ns, "ddnrag.bytes": transfer.bytes})


def traced_call(backend: str, bucket: str, key: str, transfer: Transfer | None, fn: Callable[..., T], *args: Any) -> T:
    """Runs blocking `fn(*args)` (an S3Store method, in an executor thread) inside its span."""
    op = OPERATIONS.get(getattr(fn, "__name__", ""), getattr(fn, "__name__", "call").strip("_"))
    with client_span(backend, bucket, key, op, transfer):
        return fn(*args)


def add_traceparent(headers: MutableMapping[str, Any]) -> None:
    """The current span's `traceparent` in `headers`, when the span records."""
    if tracing.recording():
        tracing.inject_headers(headers)


def inject_traceparent(request: Any = None, **_: Any) -> None:
    """botocore `before-send` (after signing): `traceparent` on the outgoing request."""
    if request is not None:
        add_traceparent(request.headers)


def record_response(http_response: Any = None, parsed: Mapping[str, Any] | None = None, **_: Any) -> None:
    """botocore `after-call`: the store's request id and HTTP status on the current span."""
    span = tracing.current_span()
    if not span.recording:
        return
    meta = (parsed or {}).get("ResponseMetadata", {})
    request_id = meta.get("RequestId") or (http_response.headers.get("x-amz-request-id") if http_response else "")
    attrs: dict[str, Any] = {"aws.request_id": request_id} if request_id else {}
    if meta.get("HTTPStatusCode"):
        attrs["http.response.status_code"] = meta["HTTPStatusCode"]
    span.set_attributes(attrs)


def record_headers(headers: Mapping[str, str], status: int) -> None:
    """The same for a request sent without botocore (fastget.py)."""
    span = tracing.current_span()
    if span.recording:
        request_id = headers.get("x-amz-request-id")
        attrs: dict[str, Any] = {"aws.request_id": request_id} if request_id else {}
        attrs["http.response.status_code"] = status
        span.set_attributes(attrs)
