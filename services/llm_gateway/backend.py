"""What every generation backend provides, how one is configured, and the error it raises.

A backend turns a built prompt into a stream of `Delta`s (text pieces, then a finish reason and,
where the server reports it, usage). Timeouts, retries, failover and concurrency limits are
applied around backends by `core.LlmGateway`, from each backend's `BackendLimits`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kernel.errors import ErrorKind, ServiceError

from .domain import Usage
from .prompt import Prompt


@dataclass(frozen=True)
class BackendLimits:
    """Per-backend robustness settings (seconds; counts)."""

    # TCP connect (and TLS) to the backend.
    connect_timeout_s: float = 5.0
    # Request sent -> first generated text.
    first_token_timeout_s: float = 60.0
    # Longest silence between two chunks once text flows.
    idle_timeout_s: float = 30.0
    # Streams open at once; past it the backend is skipped, and RESOURCE_EXHAUSTED when every
    # candidate is full.
    max_concurrency: int = 16
    # Extra attempts on a retryable failure before the first token (then failover).
    retries: int = 1
    # First backoff between attempts; doubles each time.
    backoff_s: float = 0.2
    # After failing before its first token, the backend counts as unhealthy this long: unpinned
    # requests try the healthy backends first and this one last.
    cooldown_s: float = 10.0


@dataclass(frozen=True)
class BackendSpec:
    """One configured backend. `options` holds the kind-specific keys."""

    name: str
    kind: str
    limits: BackendLimits
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendRequest:
    prompt: Prompt
    model: str
    max_tokens: int
    temperature: float


@dataclass(frozen=True)
class Delta:
    """One piece of a backend's stream: text, and/or the end (finish reason, usage). `count` is
    how many backend tokens `text` joins (tokens that arrived in one network read)."""

    text: str = ""
    finish_reason: str = ""
    usage: Usage | None = None
    count: int = 1


class BackendError(ServiceError):
    """A backend failed. `retryable` failures before the first token are retried on the same
    backend; any failure before the first token moves on to the next backend."""

    domain = "ddnrag.llm"

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        reason: str,
        backend: str,
        retryable: bool,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(kind, message, reason=reason, metadata={"backend": backend, **(metadata or {})})
        self.backend = backend
        self.retryable = retryable


class Backend(Protocol):
    """A generation backend."""

    name: str
    kind: str
    default_model: str
    limits: BackendLimits

    def models(self) -> list[str]:
        """The models it serves, the default first."""
        ...

    def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        """Streams the answer. Raises BackendError; closing the iterator aborts the request."""
        ...

    async def close(self) -> None: ...
