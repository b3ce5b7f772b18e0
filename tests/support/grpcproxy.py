"""A recording gRPC pass-through proxy on loopback: every call to it is forwarded, bytes as they
are, to the target service, with the caller's metadata and remaining deadline.

Point a service's `*_ADDR` at `proxy.addr` to watch its downstream calls: each call's method,
the deadline it arrived with (`time_remaining`), how it ended (ok, a status code, or cancelled)
and how many are in flight now. `delay_s[method]` holds a method's calls before forwarding them,
so a caller's deadline can expire while its downstream work is still running. Works for every
method of every ddnrag service (the streaming shape comes from the descriptor pool).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool

# The generated modules register their services in the default pool.
from ddnrag.embedder.v1 import embedder_service_pb2  # noqa: F401
from ddnrag.llm.v1 import llm_service_pb2  # noqa: F401
from ddnrag.retriever.v1 import retriever_service_pb2  # noqa: F401
from ddnrag.storage.v1 import storage_service_pb2  # noqa: F401


@dataclass
class Seen:
    """One forwarded call."""

    method: str
    time_remaining: float | None
    started: float
    ended: float = 0.0
    outcome: str = "running"  # "OK", a status code name, or "CANCELLED" when the caller left


@dataclass
class Record:
    calls: list[Seen] = field(default_factory=list)
    in_flight: int = 0

    def running(self) -> list[Seen]:
        return [c for c in self.calls if c.outcome == "running"]


class RecordingProxy(grpc.GenericRpcHandler):
    def __init__(self, target: str) -> None:
        self.target = target
        self.record = Record()
        self.delay_s: dict[str, float] = {}
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> RecordingProxy:
        self._channel = grpc.aio.insecure_channel(self.target)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((self,))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
        if self._channel is not None:
            await self._channel.close()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        path: str = details.method  # type: ignore[attr-defined]
        svc_name, _, name = path.lstrip("/").partition("/")
        try:
            m = descriptor_pool.Default().FindServiceByName(svc_name).methods_by_name[name]
        except KeyError:
            return None
        assert self._channel is not None
        ch = self._channel
        if m.client_streaming and m.server_streaming:
            return grpc.stream_stream_rpc_method_handler(self._streaming(name, ch.stream_stream(path)))
        if m.client_streaming:
            return grpc.stream_unary_rpc_method_handler(self._unary(name, ch.stream_unary(path)))
        if m.server_streaming:
            return grpc.unary_stream_rpc_method_handler(self._streaming(name, ch.unary_stream(path)))
        return grpc.unary_unary_rpc_method_handler(self._unary(name, ch.unary_unary(path)))

    def _begin(self, name: str, context: grpc.aio.ServicerContext) -> Seen:
        seen = Seen(name, context.time_remaining(), time.monotonic())
        self.record.calls.append(seen)
        self.record.in_flight += 1
        return seen

    def _end(self, seen: Seen, outcome: str) -> None:
        seen.outcome, seen.ended = outcome, time.monotonic()
        self.record.in_flight -= 1

    async def _hold(self, name: str, context: grpc.aio.ServicerContext) -> dict[str, Any]:
        """Waits the method's delay; returns what the forwarded call carries."""
        await asyncio.sleep(self.delay_s.get(name, 0.0))
        md = [(k, v) for k, v in context.invocation_metadata() or () if not k.startswith(":")]
        return {"timeout": context.time_remaining(), "metadata": md}

    def _unary(self, name: str, fwd: Any) -> Any:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            seen = self._begin(name, context)
            try:
                out = await fwd(request, **await self._hold(name, context))
            except asyncio.CancelledError:
                self._end(seen, "CANCELLED")
                raise
            except grpc.aio.AioRpcError as err:
                self._end(seen, err.code().name)
                await context.abort(err.code(), err.details() or "")
            self._end(seen, "OK")
            return out

        return handler

    def _streaming(self, name: str, fwd: Any) -> Any:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            seen = self._begin(name, context)
            call = None
            try:
                call = fwd(request, **await self._hold(name, context))
                async for msg in call:
                    yield msg
            except (asyncio.CancelledError, GeneratorExit):
                self._end(seen, "CANCELLED")
                raise
            except grpc.aio.AioRpcError as err:
                self._end(seen, err.code().name)
                await context.abort(err.code(), err.details() or "")
            finally:
                if call is not None:
                    call.cancel()
            self._end(seen, "OK")

        return handler
