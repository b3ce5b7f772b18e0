"""OpenAI-compatible chat-completions backends over aiohttp: vLLM, NVIDIA NIM and the NVIDIA API
catalog, Ollama's /v1, OpenAI.

One pooled `aiohttp.ClientSession` per backend (keep-alive connections reused across requests).
The request asks for a stream (`stream: true`) with usage in it (`stream_options.include_usage`);
the reply is parsed as server-sent events: each `data:` payload is a `chat.completion.chunk`, and
`data: [DONE]` ends it. Closing the stream before `[DONE]` closes the connection at once, which is
how a caller's cancel reaches the server (vLLM aborts the request when its client goes away).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from kernel.errors import ErrorKind

from .backend import BackendError, BackendLimits, BackendRequest, BackendSpec, Delta
from .domain import Usage

# An SSE line longer than this without a newline is not a chat.completion.chunk.
MAX_LINE_BYTES = 1 << 20
ERROR_BODY_BYTES = 4096


class SSEDecoder:
    """Incremental server-sent-events decoder: feed bytes, get the `data` of each complete event
    (multi-line data joined with "\\n"; comments, `event:`, `id:` and `retry:` ignored)."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        buf = self._buf + chunk
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_LINE_BYTES:
            raise ValueError(f"an event line exceeds {MAX_LINE_BYTES} bytes")
        out: list[str] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
                continue
            if line[:1] == b":":
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                if value[:1] == b" ":
                    value = value[1:]
                self._data.append(value.decode("utf-8"))
        return out

    def pending(self) -> bool:
        return bool(self._data or self._buf.strip())


def parse_chunk(data: str) -> Delta:
    """One `chat.completion.chunk` JSON payload -> Delta. Raises ValueError when malformed."""
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("the chunk is not a JSON object")
    if obj.get("error"):
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else str(err)
        raise _StreamReportedError(str(msg))
    usage = None
    u = obj.get("usage")
    if u:
        if not isinstance(u, dict):
            raise ValueError("'usage' is not an object")
        usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0), "backend")
    choices = obj.get("choices")
    if choices is None and usage is None:
        raise ValueError("the chunk has no 'choices'")
    if choices is not None and not isinstance(choices, list):
        raise ValueError("'choices' is not a list")
    text, finish = "", ""
    if choices:
        choice = choices[0]
        if not isinstance(choice, dict):
            raise ValueError("a choice is not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise ValueError("'delta' is not an object")
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError("'delta.content' is not a string")
        text = content or ""
        finish = choice.get("finish_reason") or ""
        if not isinstance(finish, str):
            raise ValueError("'finish_reason' is not a string")
    return Delta(text=text, finish_reason=finish, usage=usage)


class _StreamReportedError(Exception):
    """The server put an `error` object in the stream."""


def _error_message(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:300] or "(empty body)"
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        if isinstance(err, str):
            return err[:300]
        if "detail" in obj:
            return str(obj["detail"])[:300]
    return text[:300]


class OpenAIBackend:
    """An OpenAI-compatible server reached at `base_url` (".../v1")."""

    kind = "openai"

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        models: tuple[str, ...] = (),
        api_key: str = "",
        headers: dict[str, str] | None = None,
        include_usage: bool = True,
        limits: BackendLimits | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        parts = urlsplit(self.base_url)
        # Where it is, for messages: scheme, host and port only (never userinfo or query).
        self.where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self.default_model = model
        self._models = [model, *(m for m in models if m != model)]
        self._api_key = api_key
        self._headers = {"Accept": "text/event-stream", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.include_usage = include_usage
        self.limits = limits or BackendLimits()
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(name={self.name!r}, where={self.where!r}, model={self.default_model!r})"

    @classmethod
    def from_spec(cls, spec: BackendSpec, *, api_key: str) -> OpenAIBackend:
        o = spec.options
        return cls(
            spec.name,
            o["base_url"],
            o["model"],
            models=tuple(o.get("models") or ()),
            api_key=api_key,
            headers={str(k): str(v) for k, v in (o.get("headers") or {}).items()},
            include_usage=bool(o.get("include_usage", True)),
            limits=spec.limits,
        )

    def models(self) -> list[str]:
        return list(self._models)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_concurrency + 4, limit_per_host=0, keepalive_timeout=30
            )
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.limits.connect_timeout_s, sock_connect=self.limits.connect_timeout_s
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _err(self, kind: ErrorKind, message: str, reason: str, *, retryable: bool, **meta: str) -> BackendError:
        return BackendError(
            kind, self._scrub(message), reason=reason, backend=self.name, retryable=retryable, metadata=meta
        )

    def _http_error(self, status: int, body: bytes) -> BackendError:
        msg = f"backend {self.name!r} answered HTTP {status}: {_error_message(body)}"
        if status in (408, 429):
            return self._err(ErrorKind.RESOURCE_EXHAUSTED, msg, "BACKEND_BUSY", retryable=True, status=str(status))
        if status >= 500:
            return self._err(ErrorKind.UNAVAILABLE, msg, "BACKEND_HTTP_ERROR", retryable=True, status=str(status))
        if status in (401, 403):
            return self._err(
                ErrorKind.UNAVAILABLE,
                msg + " (check the backend's API key setting)",
                "BACKEND_AUTH",
                retryable=False,
                status=str(status),
            )
        return self._err(ErrorKind.INVALID_ARGUMENT, msg, "BACKEND_REJECTED", retryable=False, status=str(status))

    async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": list(request.prompt.messages),
            "stream": True,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        session = self._get_session()
        try:
            resp = await session.post(self.url, json=body)
        except (aiohttp.ServerTimeoutError, TimeoutError):
            raise self._err(
                ErrorKind.UNAVAILABLE,
                f"cannot connect to backend {self.name!r} at {self.where} within {self.limits.connect_timeout_s:g} s",
                "BACKEND_UNREACHABLE",
                retryable=True,
            ) from None
        except aiohttp.ClientConnectorError as err:
            why = err.os_error.strerror if err.os_error and err.os_error.strerror else type(err).__name__
            raise self._err(
                ErrorKind.UNAVAILABLE,
                f"cannot connect to backend {self.name!r} at {self.where}: {why}",
                "BACKEND_UNREACHABLE",
                retryable=True,
            ) from None
        except aiohttp.ClientError as err:
            raise self._err(
                ErrorKind.UNAVAILABLE,
                f"backend {self.name!r} at {self.where} failed: {type(err).__name__}",
                "BACKEND_UNREACHABLE",
                retryable=True,
            ) from None
        finished = False
        try:
            if resp.status != 200:
                raw = await resp.content.read(ERROR_BODY_BYTES)
                raise self._http_error(resp.status, raw)
            ctype = resp.headers.get("Content-Type", "")
            if "text/event-stream" not in ctype:
                raise self._err(
                    ErrorKind.UNAVAILABLE,
                    f"backend {self.name!r} answered {ctype or 'no content type'}, not an event stream",
                    "BACKEND_MALFORMED",
                    retryable=False,
                )
            decoder = SSEDecoder()
            finish = ""
            async for raw in resp.content.iter_any():
                try:
                    events = decoder.feed(raw)
                except (ValueError, UnicodeDecodeError) as err:
                    raise self._malformed(str(err)) from None
                # Tokens that arrived in one read go out as one Delta: when the reader is slower
                # than the backend, batches grow by themselves instead of messages piling up.
                texts: list[str] = []
                failure: BackendError | None = None
                for data in events:
                    if data.strip() == "[DONE]":
                        finished = True
                        break
                    try:
                        delta = parse_chunk(data)
                    except _StreamReportedError as err:
                        failure = self._err(
                            ErrorKind.UNAVAILABLE,
                            f"backend {self.name!r} reported an error in the stream: {err}",
                            "BACKEND_STREAM_ERROR",
                            retryable=False,
                        )
                        break
                    except (ValueError, TypeError) as err:
                        failure = self._malformed(f"{err}: {data[:120]!r}")
                        break
                    if delta.text:
                        texts.append(delta.text)
                    if delta.finish_reason or delta.usage is not None:
                        if texts:
                            yield Delta(text="".join(texts), count=len(texts))
                            texts = []
                        finish = delta.finish_reason or finish
                        yield Delta(finish_reason=delta.finish_reason, usage=delta.usage)
                if texts:
                    yield Delta(text="".join(texts), count=len(texts))
                if failure is not None:
                    raise failure
                if finished:
                    return
            if finish:
                # Some servers end after the finish reason without [DONE]; the answer is complete.
                finished = True
                return
            raise self._err(
                ErrorKind.UNAVAILABLE,
                f"backend {self.name!r} ended the stream before it finished (no finish reason, no [DONE])",
                "BACKEND_STREAM_ENDED",
                retryable=True,
            )
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as err:
            raise self._err(
                ErrorKind.UNAVAILABLE,
                f"backend {self.name!r} closed the connection mid-stream ({type(err).__name__})",
                "BACKEND_STREAM_ENDED",
                retryable=True,
            ) from None
        finally:
            if finished:
                resp.release()
            else:
                # Not read to the end: close the connection now, so the server sees the abort.
                resp.close()

    def _malformed(self, detail: str) -> BackendError:
        return self._err(
            ErrorKind.UNAVAILABLE,
            f"backend {self.name!r} sent a malformed chunk: {detail}",
            "BACKEND_MALFORMED",
            retryable=False,
        )
