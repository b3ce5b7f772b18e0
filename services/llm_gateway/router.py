"""Which backend answers: failover order, per-backend concurrency limits, retries before the
first token, and cooldowns for backends that just failed.

Candidates are the pinned backend, or every backend in failover order with those in their
cooldown moved to the end. A candidate at its concurrency limit is skipped; RESOURCE_EXHAUSTED
when all are. Before the first token a retryable failure (connect error, HTTP 429/5xx,
first-token timeout) is retried with backoff up to `retries` times, then the next candidate is
tried. After the first token nothing is retried. A backend that failed (other than by rejecting
the request) is tried last by unpinned requests for its `cooldown_s`, so a dead first choice does
not cost every request a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from kernel.errors import ErrorKind, ServiceError, exhausted, not_found
from kernel.timing import Stage, Timer

from .backend import Backend, BackendError, BackendRequest, Delta
from .domain import GenParams, ModelInfo
from .prompt import Prompt

log = logging.getLogger(__name__)


@dataclass
class _Slots:
    """A non-blocking concurrency limit."""

    limit: int
    used: int = 0

    def try_acquire(self) -> bool:
        if self.used >= self.limit:
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used -= 1


class OpenStream:
    """A backend stream that has produced its first delta, holding the backend's slot."""

    def __init__(self, router: Router, backend: Backend, deltas: AsyncIterator[Delta], first: Delta | None) -> None:
        self.router = router
        self.backend = backend
        self.deltas = deltas
        self.first = first
        self._closed = False

    async def next(self) -> Delta | None:
        """The next delta, None at the end; BackendError after `idle_timeout_s` of silence."""
        return await _next(self.deltas, self.backend, self.backend.limits.idle_timeout_s, "between tokens")

    async def aclose(self) -> None:
        """Aborts the backend request if it is still running and frees the slot (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.router.slots[self.backend.name].release()
        await self.deltas.aclose()  # type: ignore[attr-defined]


class Router:
    """The backends in failover order and the state that picks one per request."""

    def __init__(self, backends: Sequence[Backend]) -> None:
        if not backends:
            raise ValueError("at least one backend is required")
        names = [b.name for b in backends]
        if len(set(names)) != len(names):
            raise ValueError(f"backend names must be unique: {names}")
        self.backends = list(backends)
        self.by_name = {b.name: b for b in backends}
        self.slots = {b.name: _Slots(b.limits.max_concurrency) for b in backends}
        # backend name -> time.monotonic() until which it counts as unhealthy.
        self.down_until: dict[str, float] = {}
        # Called as on_backend_failure(backend, reason) for each failed attempt (metrics).
        self.on_backend_failure: Callable[[str, str], None] | None = None

    def list_models(self) -> list[ModelInfo]:
        out = []
        now = time.monotonic()
        for prio, b in enumerate(self.backends):
            healthy = self.down_until.get(b.name, 0.0) <= now
            slots = self.slots[b.name]
            out.extend(ModelInfo(m, b.name, b.kind, prio, healthy, slots.used, slots.limit) for m in b.models())
        return out

    async def close(self) -> None:
        for b in self.backends:
            with contextlib.suppress(Exception):
                await b.close()

    def candidates(self, params: GenParams) -> list[Backend]:
        """The backends to try for `params`, in order; NOT_FOUND for an unknown backend/model."""
        if params.backend:
            b = self.by_name.get(params.backend)
            if b is None:
                raise not_found(
                    f"no backend named {params.backend!r}; configured: {', '.join(self.by_name)}",
                    reason="UNKNOWN_BACKEND",
                )
            if params.model and params.model not in b.models():
                raise not_found(
                    f"backend {b.name!r} does not serve model {params.model!r}; it serves: {', '.join(b.models())}",
                    reason="UNKNOWN_MODEL",
                )
            return [b]
        if params.model:
            cands = [b for b in self.backends if params.model in b.models()]
            if not cands:
                raise not_found(f"no backend serves model {params.model!r}", reason="UNKNOWN_MODEL")
            return self._healthy_first(cands)
        return self._healthy_first(self.backends)

    def _healthy_first(self, backends: Sequence[Backend]) -> list[Backend]:
        """Failover order with backends in their cooldown moved to the end (still tried last)."""
        now = time.monotonic()
        healthy = [b for b in backends if self.down_until.get(b.name, 0.0) <= now]
        return healthy + [b for b in backends if b not in healthy]

    async def open(self, candidates: list[Backend], prompt: Prompt, params: GenParams, timer: Timer) -> OpenStream:
        """Finds a backend that produces a first delta: its open stream, concurrency slot held
        until the stream is closed. Raises ServiceError when none does."""
        busy: list[str] = []
        failures: list[BackendError] = []
        for backend in candidates:
            slots = self.slots[backend.name]
            if not slots.try_acquire():
                busy.append(backend.name)
                continue
            ok = False
            try:
                req = BackendRequest(
                    prompt=prompt,
                    model=params.model or backend.default_model,
                    max_tokens=params.effective_max_tokens,
                    temperature=params.temperature,
                )
                for attempt in range(backend.limits.retries + 1):
                    agen = backend.stream(req)
                    t_first = time.perf_counter_ns()
                    try:
                        first = await _first(agen, backend)
                    except BackendError as err:
                        await agen.aclose()
                        timer.add(Stage("backend_attempt", time.perf_counter_ns() - t_first, backend=backend.name))
                        failures.append(err)
                        if self.on_backend_failure is not None:
                            self.on_backend_failure(backend.name, err.reason)
                        log.warning(
                            "backend attempt failed",
                            extra={"backend": backend.name, "attempt": attempt, "reason": err.reason},
                        )
                        if not err.retryable or attempt == backend.limits.retries:
                            break
                        await asyncio.sleep(backend.limits.backoff_s * 2**attempt)
                        continue
                    except BaseException:
                        await agen.aclose()
                        raise
                    timer.add(Stage("first_token", time.perf_counter_ns() - t_first, backend=backend.name))
                    self.down_until.pop(backend.name, None)
                    ok = True
                    return OpenStream(self, backend, agen, first)
            finally:
                if not ok:
                    slots.release()
                    last = failures[-1] if failures else None
                    if last is not None and last.backend == backend.name and last.kind != ErrorKind.INVALID_ARGUMENT:
                        # The backend is unwell (not the request): others go first for a while.
                        self.down_until[backend.name] = time.monotonic() + backend.limits.cooldown_s
        if not failures and busy:
            raise exhausted(
                f"every candidate backend is at its concurrency limit ({', '.join(busy)}); retry later",
                reason="BACKEND_BUSY",
                backends=",".join(busy),
            )
        last = failures[-1]
        if len(failures) == 1 and not busy:
            raise last
        tried = "; ".join(f"{f.backend}: {f.message}" for f in failures)
        if busy:
            tried += f"; busy: {', '.join(busy)}"
        raise ServiceError(
            last.kind if last.kind != ErrorKind.INVALID_ARGUMENT else ErrorKind.UNAVAILABLE,
            f"no backend could answer ({tried})",
            reason="ALL_BACKENDS_FAILED",
            metadata={"backends": ",".join(f.backend for f in failures)},
        )


async def _first(agen: AsyncIterator[Delta], backend: Backend) -> Delta | None:
    """The first delta with text or a finish (role-only deltas are skipped), within the first
    token timeout."""
    limit = backend.limits.first_token_timeout_s
    try:
        async with asyncio.timeout(limit):
            async for d in agen:
                if d.text or d.finish_reason:
                    return d
                if d.usage is not None:
                    return d
            return None
    except TimeoutError:
        raise BackendError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"backend {backend.name!r} sent no token within {limit:g} s",
            reason="BACKEND_FIRST_TOKEN_TIMEOUT",
            backend=backend.name,
            retryable=True,
        ) from None


async def _next(agen: AsyncIterator[Delta], backend: Backend, limit: float, where: str) -> Delta | None:
    try:
        async with asyncio.timeout(limit):
            return await anext(agen)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise BackendError(
            ErrorKind.DEADLINE_EXCEEDED,
            f"backend {backend.name!r} stalled: nothing for {limit:g} s {where}",
            reason="BACKEND_IDLE_TIMEOUT",
            backend=backend.name,
            retryable=False,
        ) from None
