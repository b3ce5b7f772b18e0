"""What every typed client shares: channels, deadlines, retries on UNAVAILABLE, and errors
turned into exceptions that carry the `ErrorInfo` reason and name the service and address.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_status import rpc_status

from kernel import deadline
from kernel.errors import HTTP_STATUS, ErrorKind, ServiceError, error_info
from kernel.metrics import client_attempt, method_of, stream_attempt
from kernel.tls import aio_channel

T = TypeVar("T")

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
# How long an idempotent call waits for a reconnecting channel (a peer restarting on the same
# address): longer than the longest reconnect backoff below (3 s, +-20 % jitter) plus a handshake.
RECONNECT_WAIT_S = 5.0


def channel_options(round_robin: bool = True) -> list[tuple[str, Any]]:
    """Options for every channel. `round_robin` spreads calls over every address a `dns:///`
    name resolves to (a headless Kubernetes Service), since a Service balances connections, not
    requests."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        # Transparent retries only (no retry policy is configured): gRPC resends a call the
        # server refused unseen, as when it raced the GOAWAY of a recycled connection (server.py's
        # max_connection_age). Off, such a call failed UNAVAILABLE: the one 5xx on an upload
        # (tests/integration/test_storage_goaway.py).
        ("grpc.enable_retries", 1),
        # Reconnect quickly after a peer restarts (the default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        # Not min_reconnect_backoff_ms: gRPC core uses it as the connect timeout too, and at 200 ms
        # a link with ~100 ms of latency could never finish its handshake (every call UNAVAILABLE;
        # tests/faults/test_links.py latency cases). Its default is 20 s.
        ("grpc.max_reconnect_backoff_ms", 3000),
    ]
    if round_robin:
        opts.append(("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})))
    return opts


class ServiceCallError(Exception):
    """A failed call: the gRPC code, the ErrorInfo reason, a message for people, the service and
    address called."""

    def __init__(
        self,
        service: str,
        address: str,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.address = address
        self.code = code
        self.message = message
        self.reason = reason or code.name
        self.metadata = dict(metadata or {})
        super().__init__(self.describe())

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def describe(self) -> str:
        if self.code in (grpc.StatusCode.UNAVAILABLE,) and self.reason in ("UNAVAILABLE", ""):
            return f"the {self.service} service at {self.address} is unavailable: {self.message}"
        if self.code == grpc.StatusCode.DEADLINE_EXCEEDED and self.reason == "DEADLINE_EXCEEDED":
            return f"the {self.service} service at {self.address} did not answer in time"
        return self.message

    def to_service_error(self) -> ServiceError:
        """This peer failure as the calling service's ServiceError, keeping the peer's code and
        reason (a peer's NOT_FOUND or DEADLINE_EXCEEDED is not this service being unavailable)."""
        try:
            kind = ErrorKind(self.code)
        except ValueError:
            kind = ErrorKind.UNAVAILABLE
        return ServiceError(kind, str(self), reason=self.reason, metadata={"service": self.service, **self.metadata})

    @classmethod
    def from_rpc_error(cls, service: str, address: str, err: grpc.aio.AioRpcError | grpc.RpcError) -> ServiceCallError:
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        message = err.details() or code.name
        reason, metadata = "", {}
        try:
            status = rpc_status.from_call(err)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - a malformed trailer must not hide the error
            status = None
        if status is not None:
            info = error_info(status)
            if info is not None:
                reason, metadata = info.reason, dict(info.metadata)
        return cls(service, address, code, message, reason, metadata)


class BaseClient:
    """One channel to one service. Subclasses wrap the generated stub with typed methods."""

    service = "service"

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.retries = retries
        self._reached = False  # a call has succeeded: waiting for a reconnect is worth it
        # Mutual TLS when DDNRAG_TLS_{CA,CERT,KEY}_FILE are set, plaintext otherwise.
        self.channel = channel or aio_channel(address, channel_options())

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> BaseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _timeout(self, timeout: float | None, scale: int = 1) -> float:
        """The call's timeout (`timeout_s` by default, times `scale`), never past the deadline of
        the call being served (kernel/deadline.py)."""
        return deadline.cap((self.timeout_s if timeout is None else timeout) * scale)

    async def unary(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        *,
        timeout: float | None = None,
        idempotent: bool = True,
    ) -> T:
        """Calls a unary RPC with a deadline. An idempotent call that fails UNAVAILABLE is retried
        with jittered backoff (`retries` times), and, once this client has reached its peer, for as
        long as the channel is reconnecting (the peer restarting: the reconnect backoff reaches 3 s)
        it keeps waiting for the channel, up to RECONNECT_WAIT_S and never past the deadline; then
        the last error is raised. An address that never answered (a wrong address, a stack that is
        down) still fails fast. A call that is not idempotent is sent once (gRPC's transparent
        retry still resends one the server never saw)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + self._timeout(timeout)
        attempt = 0
        while True:
            left = end - loop.time()
            if left <= 0:
                raise ServiceCallError(
                    self.service, self.address, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"
                )
            try:
                with client_attempt(method_of(method), self.address):
                    reply = await method(request, timeout=left)
                self._reached = True
                return reply
            except grpc.aio.AioRpcError as err:
                pause = min(left, 0.05 * 2 ** min(attempt, 3) * (1 + random.random()))
                if not (idempotent and self.retries > 0 and err.code() == grpc.StatusCode.UNAVAILABLE) or (
                    attempt >= self.retries
                    and (loop.time() + pause > min(end, start + RECONNECT_WAIT_S) or not self._reconnecting())
                ):
                    raise ServiceCallError.from_rpc_error(self.service, self.address, err) from None
            attempt += 1
            await asyncio.sleep(pause)

    def _reconnecting(self) -> bool:
        """Whether the channel to a peer this client has reached is between connections (in
        backoff or connecting), not READY: a READY channel's UNAVAILABLE came from the peer, which
        waiting on the channel does not fix."""
        if not self._reached:
            return False
        try:
            state = self.channel.get_state()
        except Exception:  # noqa: BLE001 - a channel stand-in without connectivity state
            return False
        return state in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.CONNECTING,
            grpc.ChannelConnectivity.IDLE,
        )

    async def stream(self, call: Any, method: str = "") -> AsyncIterator[Any]:
        """Iterates a server-streaming call, turning errors into ServiceCallError and cancelling
        the call if the consumer stops early. `method` (the full name, see `method_of`) labels the
        client-side duration metric."""
        try:
            async with stream_attempt(method or "unknown", self.address, call):
                async for item in call:
                    yield item
        except grpc.aio.AioRpcError as err:
            raise ServiceCallError.from_rpc_error(self.service, self.address, err) from None
        finally:
            call.cancel()


def remaining_timeout(context: grpc.aio.ServicerContext | None, default: float) -> float:
    """The deadline left on an incoming call, to pass on to the next hop (capped by `default`)."""
    if context is None:
        return default
    left = context.time_remaining()
    if left is None:
        return default
    return max(0.001, min(left, default))
