"""One domain error type, mapped once to gRPC status codes and once to HTTP codes.

Cores raise `ServiceError` (or a per-service subclass); servicers turn it into a gRPC status with
a `google.rpc.ErrorInfo` detail; the gateway turns the gRPC status into an HTTP code. Messages
are for people and never contain secrets.
"""

from __future__ import annotations

import enum
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .tracing import TRACE_ID_KEY, current_trace_id


class ErrorKind(enum.Enum):
    """What went wrong, independent of transport. Values are gRPC status codes."""

    INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
    NOT_FOUND = grpc.StatusCode.NOT_FOUND
    ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
    PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
    UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
    RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
    FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
    UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
    DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED
    CANCELLED = grpc.StatusCode.CANCELLED
    DATA_LOSS = grpc.StatusCode.DATA_LOSS
    INTERNAL = grpc.StatusCode.INTERNAL


# gRPC status code -> HTTP status, as in STYLE.md (TEI router, AIP-193).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
}


class ServiceError(Exception):
    """A domain error: a kind, an UPPER_SNAKE_CASE reason, a message for people, metadata."""

    domain = "ddnrag"

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.reason = reason or kind.name
        self.metadata = dict(metadata or {})

    @property
    def code(self) -> grpc.StatusCode:
        return self.kind.value

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_status_proto(self) -> status_pb2.Status:
        """The error as a `google.rpc.Status` with an `ErrorInfo` detail (for per-item errors)."""
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=self.domain, metadata=self.metadata)
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=[detail])

    def to_grpc_status(self) -> grpc.Status:
        """The status to abort with; its trailers keep the trace id (kernel/tracing.py), which
        aborting with a status would otherwise replace."""
        status = rpc_status.to_status(self.to_status_proto())
        trace_id = current_trace_id()
        if not trace_id:
            return status
        return status._replace(trailing_metadata=(*status.trailing_metadata, (TRACE_ID_KEY, trace_id)))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind.name}, {self.reason}, {self.message!r})"


def invalid(message: str, reason: str = "INVALID_ARGUMENT", **metadata: Any) -> ServiceError:
    return ServiceError(ErrorKind.INVALID_ARGUMENT, message, reason=reason, metadata=_str(metadata))


def not_found(message: str, reason: str = "NOT_FOUND", **metadata: Any) -> ServiceError:
    return ServiceError(ErrorKind.NOT_FOUND, message, reason=reason, metadata=_str(metadata))


def unavailable(message: str, reason: str = "UNAVAILABLE", **metadata: Any) -> ServiceError:
    return ServiceError(ErrorKind.UNAVAILABLE, message, reason=reason, metadata=_str(metadata))


def exhausted(message: str, reason: str = "RESOURCE_EXHAUSTED", **metadata: Any) -> ServiceError:
    return ServiceError(ErrorKind.RESOURCE_EXHAUSTED, message, reason=reason, metadata=_str(metadata))


def _str(metadata: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in metadata.items()}


OK_STATUS = status_pb2.Status(code=code_pb2.OK)


async def abort(context: grpc.aio.ServicerContext, err: ServiceError) -> None:
    """Ends the RPC with `err` as its status, ErrorInfo attached."""
    await context.abort_with_status(err.to_grpc_status())


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a `google.rpc.Status`, if it has one."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
