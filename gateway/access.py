"""Protection for `/api` and `/v1`: Bearer API keys with roles, cross-site request refusal, a CORS
allowlist, a per-key rate limit.

- Authentication: `auth_mode(cfg)` decides once, at start, between `keys` and `open`. Once a keys
  file or variable is configured, an empty key set is an error: the gateway refuses to start, and
  a reload that finds no keys keeps the previous ones (logged). Running open is always an explicit
  setting (`DDNRAG_GATEWAY_AUTH=open`, which `rag up` sets for its loopback stack when no keys are
  given), printed at start; with neither keys nor that setting the gateway refuses to start.
- API keys: every `/api` and `/v1` request must carry `Authorization: Bearer <key>`; `/api/health`,
  `/healthz`, `/metrics` and the static demo stay open (probes and the page itself). Keys are held
  only as SHA-256 digests (the keys file may hold `sha256:<hex>` instead of the key), compared in
  constant time and never logged. A keys-file line may give the key a role and its own limit:
  `<key or sha256:hex> role=admin rps=2 burst=10`; a key without `role=` gets
  `DDNRAG_GATEWAY_API_KEYS_DEFAULT_ROLE` (reader unless set). The file is re-read when it changes (a
  rotated Secret), so keys are added and revoked without a restart. `roles.py` says what each
  role may call.
- Cross-site requests: a state-changing request whose `Origin` is neither this gateway nor in the
  CORS allowlist is refused (403), and so is one whose body is not JSON or multipart (415), so a
  web page cannot post a "simple request" to a gateway without keys. Without keys, the `Host`
  header must name this gateway (`DDNRAG_GATEWAY_ALLOWED_HOSTS`), which defeats DNS rebinding.
- CORS: only origins in the allowlist get `Access-Control-Allow-Origin`; a preflight from any
  other origin is refused with 403. A `*` entry is answered with a literal `*` and no credentials.
- Rate limit: a token bucket per API key (per client address without keys, loopback callers of
  the local stack exempt); over it -> 429 with `Retry-After`. The same identity holds at most
  `max_streams_per_key` SSE streams at once (sse.py), and `/api/health` has its own per-address
  limit.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import OrderedDict
from urllib.parse import urlsplit

from aiohttp import web

from .apikeys import ApiKeys, KeyPolicy, api_keys_ctx, auth_mode, is_loopback_host, load_api_keys, parse_keys_file
from .errors import ApiError, Handler, json_error
from .roles import OPEN_ROUTES, Role, required_role
from .state import API_KEYS, CONFIG, HEALTH_LIMITER, RATE_LIMITER

__all__ = ["ApiKeys", "KeyPolicy", "api_keys_ctx", "auth_mode", "load_api_keys", "parse_keys_file"]

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/api/health", "/healthz", "/metrics"})
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_TYPES = ("application/json", "multipart/form-data")
# Paths probes and scrapers reach by pod address, so no Host check applies to them.
HOSTLESS_PATHS = frozenset({"/healthz", "/metrics"})
ROLE = web.RequestKey("role", Role)
KEY_ID = web.RequestKey("key_id", str)
CALLER = web.RequestKey("caller", str)  # the rate-limit and stream-cap identity: a key, else an address


class RateLimiter:
    """Token buckets keyed by caller; `rps` 0 disables. Holds at most `max_keys` buckets (LRU)."""

    def __init__(self, rps: float, burst: int, max_keys: int = 10_000) -> None:
        self.rps = rps
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None, *, rps: float | None = None, burst: int | None = None) -> float:
        """Takes one token; returns 0 when allowed, else the seconds until one is available.
        `rps`/`burst` override the defaults for this key (a per-key limit)."""
        rps = self.rps if rps is None else rps
        cap = float(self.burst if burst is None else max(1, burst))
        if rps <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (cap, now))
        tokens = min(cap, tokens + (now - last) * rps)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rps
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


def _cors_headers(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin", "")
    allowed = request.app[CONFIG].cors_origins
    if origin and origin in allowed:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Access-Control-Expose-Headers": "Retry-After",
            "Vary": "Origin",
        }
    if origin and "*" in allowed:
        # A wildcard never comes with credentials (browsers refuse the pair, and it would let
        # any site act with the user's cookies or key).
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Retry-After"}
    return {}


def _pattern(request: web.Request) -> str:
    """The route pattern (`/api/documents/{document_id}`); static files map to `/static/`."""
    info = request.match_info.route.resource
    if info is None:
        return request.path
    canonical = info.canonical
    return "/static/" if canonical.startswith("/static") else canonical


def _host_name(host: str) -> str:
    """`example.org:8080` -> `example.org`; `[::1]:8080` -> `::1`."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@functools.cache
def _host_names(allowed: tuple[str, ...], bind_host: str) -> frozenset[str]:
    names = {h.strip().lower() for h in allowed if h.strip()}
    if bind_host not in ("0.0.0.0", "::", ""):
        names.add(bind_host.lower())
    return frozenset(names)


def allowed_hosts(request: web.Request) -> frozenset[str]:
    """The Host names accepted without keys (computed once per configuration, not per request)."""
    cfg = request.app[CONFIG]
    return _host_names(cfg.allowed_hosts, cfg.host)


def _cross_site(request: web.Request, required: Role) -> ApiError | None:
    """A refusal for a request a web page on another site could have sent, else None."""
    if request.method in SAFE_METHODS and required <= Role.READER:
        return None
    origin = request.headers.get("Origin")
    if origin is not None:
        allowed = request.app[CONFIG].cors_origins
        same = urlsplit(origin).netloc.lower() == request.host.lower()
        if not same and origin not in allowed and "*" not in allowed:
            return ApiError(
                403,
                f"requests that change state are refused from the web origin {origin!r}; "
                "add it to DDNRAG_GATEWAY_CORS_ORIGINS to allow it",
                "ORIGIN_DENIED",
            )
    # A bodyless POST (cancel, purge) carries no content to smuggle; a browser still sends its
    # Origin with it, which the check above judged.
    if request.method not in SAFE_METHODS and request.body_exists and request.content_length != 0:
        ctype = request.headers.get("Content-Type", "")
        if not ctype.split(";", 1)[0].strip().lower().startswith(BODY_TYPES):
            return ApiError(
                415,
                f"Content-Type {ctype.split(';', 1)[0]!r} is refused for requests that change state; "
                "send application/json or multipart/form-data",
                "UNSUPPORTED_MEDIA",
            )
    return None


def _limited(request: web.Request, keys: ApiKeys) -> bool:
    """Whether rate limits and stream caps apply: always with keys; without keys, to callers
    from other machines only (on the local loopback stack every caller is the one user, and the
    load benchmarks run there)."""
    return bool(keys) or not is_loopback_host(request.remote or "")


def _deny(err: ApiError, cors: dict[str, str], **headers: str) -> web.Response:
    resp = json_error(err)
    resp.headers.update({**cors, **headers})
    return resp


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
    keys = request.app[API_KEYS]
    if not keys and request.path not in HOSTLESS_PATHS:
        # Without keys, anything that can make a browser connect could reach the API; only the
        # names of this gateway are accepted (DNS rebinding points another name at it).
        if _host_name(request.host).lower() not in allowed_hosts(request):
            return _deny(
                ApiError(
                    403,
                    f"the Host {request.host!r} is not a name of this gateway; add it to DDNRAG_GATEWAY_ALLOWED_HOSTS",
                    "HOST_DENIED",
                ),
                cors,
            )
    pattern = _pattern(request)
    if ("GET" if request.method == "HEAD" else request.method, pattern) in OPEN_ROUTES:
        if pattern == "/api/health" and _limited(request, keys):  # open, but each check fans out to 4 services
            wait = request.app[HEALTH_LIMITER].take(request.remote or "unknown")
            if wait > 0:
                return _deny(
                    ApiError(429, f"health checks are rate-limited; retry in {wait:.1f} s", "RATE_LIMITED"),
                    cors,
                    **{"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return await handler(request)
    if not _protected(request.path) and request.match_info.http_exception is not None:
        return await handler(request)  # 404/405 outside the API
    required = required_role(request.method, pattern)
    caller = request.remote or "unknown"
    policy: KeyPolicy | None = None
    role = Role.ADMIN  # open mode: the local, explicit, no-keys setting
    if keys:
        token = _bearer(request)
        policy = keys.match(token) if token else None
        if policy is None:
            return _deny(
                ApiError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "UNAUTHENTICATED"),
                cors,
                **{"WWW-Authenticate": "Bearer"},
            )
        caller, role = "key:" + policy.digest[:16], policy.role
        request[KEY_ID] = policy.digest[:12]
    request[ROLE] = role
    if _limited(request, keys):
        request[CALLER] = caller
    refusal = _cross_site(request, required)
    if refusal is not None:
        return _deny(refusal, cors)
    if role < required and request.match_info.http_exception is None:
        return _deny(
            ApiError(
                403,
                f"this key has the {role.label} role; {request.method} {pattern} needs {required.label}. "
                "Ask an operator for a key with that role (role= in the keys file)",
                "ROLE_FORBIDDEN",
                role=role.label,
                required=required.label,
            ),
            cors,
        )
    wait = (
        request.app[RATE_LIMITER].take(
            caller, rps=policy.rps if policy else None, burst=policy.burst if policy else None
        )
        if _limited(request, keys)
        else 0.0
    )
    if wait > 0:
        return _deny(
            ApiError(429, f"rate limit exceeded; retry in {wait:.1f} s", "RATE_LIMITED"),
            cors,
            **{"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return await handler(request)


async def cors_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Adds the CORS headers to every response of an allowed origin, streams included (their
    headers go out before the handler returns, so a middleware would be too late)."""
    cors = _cors_headers(request)
    for k, v in cors.items():
        response.headers.setdefault(k, v)
