"""JSON over HTTP for the optional model servers the services call (rerankers, guardrails,
judges): one pooled aiohttp session per client, a deadline per call, and failures turned into one
exception whose message says what went wrong for a person, without credentials.

Credentials come from a variable (`api_key_env`) or a file (`api_key_file`), read once when the
client is built, sent as `Authorization: Bearer ...`, and never logged or echoed.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from .config import ConfigError

# Bytes of an error reply quoted in the message (a server's explanation, not its whole page).
ERROR_SNIPPET_BYTES = 300
# A reply larger than this is refused as malformed.
MAX_REPLY_BYTES = 16 * 1024 * 1024


class HttpJsonError(Exception):
    """The call failed: connect error, timeout, HTTP error status, or a body that is not JSON.
    `status` is the HTTP status (0 when none came back); `timeout` is set for a deadline."""

    def __init__(self, message: str, *, status: int = 0, timeout: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.timeout = timeout


def read_api_key(api_key_env: str = "", api_key_file: str = "", *, what: str) -> str:
    """The key named by a variable or a file; empty when neither is given. A key named but
    missing is a start-up error naming the variable or path (never the key)."""
    if api_key_env:
        key = os.environ.get(api_key_env, "")
        if not key:
            raise ConfigError(f"{what}: api_key_env names {api_key_env}, which is not set")
        return key.strip()
    if api_key_file:
        try:
            return Path(api_key_file).read_text().strip()
        except OSError as err:
            raise ConfigError(f"{what}: cannot read api_key_file {api_key_file}: {err.strerror}") from None
    return ""


class JsonClient:
    """POSTs JSON to one base URL. `close()` releases the pooled connections."""

    def __init__(self, base_url: str, *, api_key: str = "", headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def post(self, path: str, body: Any, *, timeout_s: float) -> Any:
        """The decoded JSON reply of `POST base_url + path`. Raises HttpJsonError."""
        url = self.base_url + path
        try:
            async with asyncio.timeout(timeout_s):
                async with self._http().post(url, data=json.dumps(body)) as resp:
                    raw = await resp.content.read(MAX_REPLY_BYTES + 1)
                    status = resp.status
        except TimeoutError:
            raise HttpJsonError(f"{url} did not answer within {timeout_s:g} s", timeout=True) from None
        except aiohttp.ClientError as err:
            raise HttpJsonError(f"{url} could not be reached: {type(err).__name__}: {err}") from None
        if status >= 400:
            snippet = raw[:ERROR_SNIPPET_BYTES].decode("utf-8", errors="replace").strip()
            raise HttpJsonError(f"{url} answered HTTP {status}: {snippet}", status=status)
        if len(raw) > MAX_REPLY_BYTES:
            raise HttpJsonError(f"{url} sent a reply over {MAX_REPLY_BYTES} bytes", status=status)
        try:
            return json.loads(raw)
        except ValueError:
            snippet = raw[:80].decode("utf-8", errors="replace")
            raise HttpJsonError(f"{url} sent a reply that is not JSON: {snippet!r}", status=status) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
