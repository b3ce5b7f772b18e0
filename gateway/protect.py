"""Protection for `/api` and `/v1`: optional Bearer API keys, a CORS allowlist, a per-key rate limit.

- API keys: when any are configured, every `/api` and `/v1` request must carry
  `Authorization: Bearer <key>`; `/api/health`, `/healthz`, `/metrics` and the static demo stay
  open (probes and the page itself). Keys are compared in constant time and never logged.
- CORS: only origins in the allowlist get `Access-Control-Allow-Origin`; a preflight from any
  other origin is refused with 403.
- Rate limit: a token bucket per API key (per client address without keys); over it -> 429 with
  `Retry-After`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from pathlib import Path

from aiohttp import web

from .config import GatewayConfig
from .errors import ApiError, Handler, json_error
from .state import API_KEYS, CONFIG, RATE_LIMITER

OPEN_PATHS = frozenset({"/api/health", "/healthz", "/metrics"})
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"


def load_api_keys(cfg: GatewayConfig) -> frozenset[str]:
    keys = set(cfg.api_keys)
    if cfg.api_keys_file:
        for line in Path(cfg.api_keys_file).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                keys.add(line.strip())
    return frozenset(keys)


class RateLimiter:
    """Token buckets keyed by caller; `rps` 0 disables. Holds at most `max_keys` buckets (LRU)."""

    def __init__(self, rps: float, burst: int, max_keys: int = 10_000) -> None:
        self.rps = rps
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """Takes one token; returns 0 when allowed, else the seconds until one is available."""
        if self.rps <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rps)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rps
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def _protected(path: str) -> bool:
    return (path.startswith("/api/") or path.startswith("/v1/")) and path not in OPEN_PATHS


def _bearer(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _key_ok(token: str, keys: frozenset[str]) -> bool:
    ok = False
    for k in keys:  # constant time per key, and every key is checked
        ok |= hmac.compare_digest(token.encode(), k.encode())
    return ok


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin", "")
    allowed = request.app[CONFIG].cors_origins
    if origin and (origin in allowed or "*" in allowed):
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }
    return {}


@web.middleware
async def protect_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cors = _cors_headers(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not cors:
            return json_error(ApiError(403, "this origin is not in the gateway's CORS allowlist", "CORS_DENIED"))
        return web.Response(
            status=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )
    if _protected(request.path):
        keys = request.app[API_KEYS]
        caller = request.remote or "unknown"
        if keys:
            token = _bearer(request)
            if not token or not _key_ok(token, keys):
                resp = json_error(
                    ApiError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "UNAUTHENTICATED")
                )
                resp.headers.update({**cors, "WWW-Authenticate": "Bearer"})
                return resp
            caller = "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        wait = request.app[RATE_LIMITER].take(caller)
        if wait > 0:
            resp = json_error(ApiError(429, f"rate limit exceeded; retry in {wait:.1f} s", "RATE_LIMITED"))
            resp.headers.update({**cors, "Retry-After": str(max(1, math.ceil(wait)))})
            return resp
    return await handler(request)


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Adds the CORS headers to every response of an allowed origin, streams included (their
    headers go out before the handler returns, so a middleware would be too late)."""
    cors = _cors_headers(request)
    for k, v in cors.items():
        response.headers.setdefault(k, v)
