"""Errors as the HTTP API shows them: one JSON shape, one middleware.

A failed upstream call arrives as `clients.base.ServiceCallError` whose `http_status` is the
mapping of STYLE.md; the gateway's own validation raises `ApiError`. Both become
`{"error": {"status", "reason", "message", "service"}}`. Messages are for people and never carry
secrets: upstream services already keep secrets out of theirs, and the gateway never echoes a
request header or a backend's credentials.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from clients.base import ServiceCallError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the gateway refuses itself: bad input, too large, not allowed."""

    def __init__(self, status: int, message: str, reason: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or _default_reason(status)
        self.extra = extra

    def payload(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "message": self.message, **self.extra}


def _default_reason(status: int) -> str:
    return {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        409: "FAILED_PRECONDITION",
        413: "TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
        422: "UNPROCESSABLE",
        429: "RATE_LIMITED",
        503: "UNAVAILABLE",
    }.get(status, "ERROR")


def error_payload(err: BaseException) -> dict[str, Any]:
    """The `error` object for any exception a handler lets escape."""
    if isinstance(err, ApiError):
        return err.payload()
    if isinstance(err, ServiceCallError):
        out = {
            "status": err.http_status,
            "reason": err.reason,
            "message": err.describe(),
            "service": err.service,
        }
        return with_retry_after(out, err.metadata)
    return {"status": 500, "reason": "INTERNAL", "message": "internal error in the gateway; see its log"}


def with_retry_after(payload: dict[str, Any], metadata: Any) -> dict[str, Any]:
    """Adds `retry_after_s` from an upstream ErrorInfo's metadata (an overloaded service says when
    to come back); `json_error` sends it as the `Retry-After` header too."""
    raw = metadata.get("retry_after_s", "") if metadata else ""
    if raw.isdigit():
        payload["retry_after_s"] = int(raw)
    return payload


def json_error(err: BaseException) -> web.Response:
    return json_error_payload(error_payload(err))


def json_error_payload(payload: dict[str, Any]) -> web.Response:
    """`{"error": payload}` with its status, and `Retry-After` when the payload names one."""
    headers = {"Retry-After": str(payload["retry_after_s"])} if "retry_after_s" in payload else None
    return web.json_response({"error": payload}, status=payload["status"], dumps=dumps, headers=headers)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns escaped errors into the JSON error shape (after the first byte, streams send events)."""
    try:
        return await handler(request)
    except (ApiError, ServiceCallError) as err:
        return json_error(err)
    except web.HTTPRequestEntityTooLarge as err:
        return json_error(ApiError(413, f"the request body is larger than the limit: {err.text}", "TOO_LARGE"))
    except web.HTTPException as err:
        if err.status < 400 or not request.path.startswith(("/api", "/v1")):
            raise
        return json_error(ApiError(err.status, err.reason))
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return json_error(RuntimeError())
