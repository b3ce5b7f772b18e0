"""Request parsing helpers and the JSON shapes the API returns for shared messages."""

from __future__ import annotations

import json
from typing import Any

import grpc
from aiohttp import web
from google.rpc import status_pb2

from ddnrag.common.v1 import common_pb2
from kernel.errors import HTTP_STATUS, error_info

from .convert import ns_to_ms, to_dict
from .errors import ApiError, with_retry_after
from .state import CONFIG

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def timings_json(t: common_pb2.Timings | None) -> dict[str, Any] | None:
    """Timings in milliseconds, every stage with its backend and TTFB."""
    if t is None:
        return None
    return {
        "total_ms": ns_to_ms(t.total_ns),
        "stages_sum_ms": ns_to_ms(t.stages_sum_ns),
        "stages": [
            {
                "name": s.name,
                "ms": ns_to_ms(s.duration_ns),
                "backend": s.backend,
                "ttfb_ms": ns_to_ms(s.ttfb_ns),
                "bytes": s.bytes,
                "count": s.count,
            }
            for s in t.stages
        ],
    }


def citation_json(c: common_pb2.Citation) -> dict[str, Any]:
    return to_dict(c)


def status_json(st: status_pb2.Status) -> dict[str, Any]:
    """A `google.rpc.Status` carried inside a stream, as the `error` event's data."""
    code = _CODES.get(st.code, grpc.StatusCode.UNKNOWN)
    info = error_info(st)
    out = {
        "status": HTTP_STATUS.get(code, 500),
        "reason": info.reason if info is not None else code.name,
        "message": st.message or code.name.lower().replace("_", " "),
    }
    return with_retry_after(out, info.metadata if info is not None else None)


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}")
    return value


# The largest event id a stream can resume after: the wire fields are int64 (`after_sequence`,
# `after_seq`), and a larger number would fail in protobuf, not as the client's mistake.
MAX_EVENT_ID = 2**63 - 1


def last_event_id(request: web.Request) -> int:
    """Where a resumed SSE stream starts: the `Last-Event-ID` header (EventSource sends it) or
    `?after=`; 0 (from the start) when neither is given."""
    raw = request.headers.get("Last-Event-ID", "") or request.query.get("after", "")
    if not raw:
        return 0
    # The length check comes first: int() refuses strings of over 4,300 digits with a ValueError.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_EVENT_ID)) or int(raw) > MAX_EVENT_ID:
        raise ApiError(
            400,
            f"Last-Event-ID (or ?after=) must be the id of an event this stream sent, a whole number; got {raw[:40]!r}",
        )
    return int(raw)


def query_float(request: web.Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a number between {lo} and {hi}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def query_bool(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes", "on")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; 413 over the size limit, 400 when it is not a JSON object."""
    limit = request.app[CONFIG].max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes", "TOO_LARGE")
    buf = bytearray()
    while chunk := await request.content.read(64 * 1024):  # read() returns what has arrived so far
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes", "TOO_LARGE")
    raw = bytes(buf)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
        # A "\ud800" escape decodes to a lone surrogate that no later step can encode.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    except UnicodeEncodeError:
        raise ApiError(400, "the request body holds an unpaired surrogate (\\ud800-\\udfff escape)") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def field_str(body: dict[str, Any], name: str, default: str = "", *, max_len: int = 4096) -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    if len(value) > max_len:
        raise ApiError(400, f"{name} is longer than {max_len} characters")
    return value


def field_num(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be a number between {lo} and {hi}")
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def question_text(raw: str | None) -> str:
    q = (raw or "").strip()
    if not q:
        raise ApiError(400, "the question is empty: pass it as q=... (1 to 4096 characters)", "EMPTY_QUESTION")
    if len(q) > 4096:
        raise ApiError(400, f"the question is {len(q)} characters; the limit is 4096", "QUESTION_TOO_LONG")
    return q
