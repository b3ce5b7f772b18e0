"""botocore/urllib3 exceptions -> the domain `ServiceError`, and which of them to retry.

Messages name the backend, bucket and key, never a credential. Raw store messages are not passed
through (some echo request headers), only the store's error code.
"""

from __future__ import annotations

import ssl

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError

from kernel.errors import ErrorKind, ServiceError

THROTTLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "RequestTimeout",
    "ServiceUnavailable",
    "InternalError",
    "503",
    "500",
    "502",
    "504",
    "429",
}
UNAUTHENTICATED_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
}
TLS_EXC = (SSLError, Urllib3SSLError, ssl.SSLError)
TRANSIENT_EXC = (
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
    Urllib3Error,
    ConnectionError,
    TimeoutError,
)


def client_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code") or "")
        if not code:
            code = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        return code
    return ""


def http_status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def is_retryable(exc: BaseException) -> bool:
    """Throttling (503 SlowDown, RequestTimeout, 5xx) and transient network failures."""
    if isinstance(exc, TLS_EXC):
        return False
    if isinstance(exc, ClientError):
        return client_code(exc) in THROTTLE_CODES or http_status(exc) in (429, 500, 502, 503, 504)
    return isinstance(exc, TRANSIENT_EXC)


def kind_name(exc: BaseException) -> str:
    """A short error kind for benchmark tallies: the S3 error code or the exception class."""
    if isinstance(exc, ServiceError):
        return exc.reason
    return client_code(exc) or type(exc).__name__


def condition_not_met(backend: str, key: str, if_match: str, if_none_match: bool) -> ServiceError:
    """A conditional PUT whose condition did not hold: another writer got there first."""
    want = "did not exist" if if_none_match else f"still had ETag {if_match!r}"
    return ServiceError(
        ErrorKind.FAILED_PRECONDITION,
        f"object {key[:120]!r} in backend {backend!r} was not written: the write was conditional on it {want}, "
        "and another writer changed it first; read it again and decide",
        reason="CONDITION_NOT_MET",
        metadata={"backend": backend, "key": key[:120]},
    )


def map_error(exc: BaseException, backend: str, bucket: str, key: str = "", retries: int = 0) -> ServiceError:
    """The domain error for `exc`, raised while working on `key` in `backend`."""
    if isinstance(exc, ServiceError):
        return exc
    meta = {"backend": backend, "bucket": bucket}
    if key:
        meta["key"] = key
    shown = key if len(key) <= 120 else key[:117] + "..."
    what = f"object {shown!r} in backend {backend!r}" if key else f"backend {backend!r}"
    after = f" after {retries} retries" if retries else ""
    if isinstance(exc, ClientError):
        code, status = client_code(exc), http_status(exc)
        meta["store_code"] = code
        if code == "NoSuchBucket":
            return ServiceError(
                ErrorKind.NOT_FOUND,
                f"bucket {bucket!r} of backend {backend!r} does not exist; create it or fix the backend",
                reason="BUCKET_NOT_FOUND",
                metadata=meta,
            )
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return ServiceError(
                ErrorKind.NOT_FOUND,
                f"{what} was not found (bucket {bucket!r})",
                reason="OBJECT_NOT_FOUND" if key else "BUCKET_NOT_FOUND",
                metadata=meta,
            )
        if code in UNAUTHENTICATED_CODES:
            return ServiceError(
                ErrorKind.UNAUTHENTICATED,
                f"backend {backend!r} rejected its credentials ({code}); check the access key id and secret "
                "configured for it",
                reason="BACKEND_UNAUTHENTICATED",
                metadata=meta,
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return ServiceError(
                ErrorKind.PERMISSION_DENIED,
                f"backend {backend!r} denied access to {what if key else f'bucket {bucket!r}'} ({code or status})",
                reason="BACKEND_PERMISSION_DENIED",
                metadata=meta,
            )
        if code == "InvalidRange" or status == 416:
            return ServiceError(
                ErrorKind.INVALID_ARGUMENT,
                f"the range asked for is outside {what}",
                reason="INVALID_RANGE",
                metadata=meta,
            )
        if code in ("PreconditionFailed",) or status == 412:
            return ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"{what} changed while it was being read; retry",
                reason="OBJECT_CHANGED",
                metadata=meta,
            )
        if is_retryable(exc):
            return ServiceError(
                ErrorKind.UNAVAILABLE,
                f"backend {backend!r} is throttling or failing ({code or status}){after}; retry later",
                reason="BACKEND_THROTTLED"
                if code in ("SlowDown", "Throttling", "TooManyRequests")
                else "BACKEND_UNAVAILABLE",
                metadata=meta,
            )
        if code == "KeyTooLongError":
            return ServiceError(
                ErrorKind.INVALID_ARGUMENT,
                f"backend {backend!r} rejects the key of {what} as too long; some stores (SeaweedFS) limit each "
                "'/'-separated segment to 255 bytes",
                reason="KEY_TOO_LONG_FOR_STORE",
                metadata=meta,
            )
        if status == 400 or code in ("InvalidArgument", "InvalidRequest", "KeyTooLongError", "InvalidBucketName"):
            return ServiceError(
                ErrorKind.INVALID_ARGUMENT,
                f"backend {backend!r} rejected the request for {what} ({code or status})",
                reason="BACKEND_REJECTED",
                metadata=meta,
            )
        return ServiceError(
            ErrorKind.INTERNAL,
            f"backend {backend!r} failed on {what} ({code or status})",
            reason="BACKEND_ERROR",
            metadata=meta,
        )
    if isinstance(exc, TLS_EXC):
        return ServiceError(
            ErrorKind.UNAVAILABLE,
            f"TLS to backend {backend!r} failed; if the appliance has its own CA set the backend's CA bundle",
            reason="BACKEND_TLS_ERROR",
            metadata=meta,
        )
    if isinstance(exc, NoCredentialsError):
        return ServiceError(
            ErrorKind.UNAUTHENTICATED,
            f"backend {backend!r} has no credentials configured",
            reason="BACKEND_NO_CREDENTIALS",
            metadata=meta,
        )
    if isinstance(exc, TRANSIENT_EXC) or isinstance(exc, BotoCoreError):
        return ServiceError(
            ErrorKind.UNAVAILABLE,
            f"backend {backend!r} is unreachable or dropped the connection ({type(exc).__name__}){after}",
            reason="BACKEND_UNAVAILABLE",
            metadata=meta,
        )
    return ServiceError(
        ErrorKind.INTERNAL,
        f"unexpected failure talking to backend {backend!r} ({type(exc).__name__})",
        reason="BACKEND_ERROR",
        metadata=meta,
    )
