"""Typed async client of the storage service (`ddnrag.storage.v1.StorageService`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence

import grpc

from ddnrag.common.v1 import common_pb2
from ddnrag.storage.v1 import storage_service_pb2 as pb
from ddnrag.storage.v1 import storage_service_pb2_grpc as pb_grpc
from kernel.metrics import client_attempt, method_of

from .base import BaseClient, ServiceCallError

PutResponse = pb.PutResponse
ObjectInfo = pb.ObjectInfo
Transfer = pb.Transfer
PutItem = pb.PutItem
BatchPutResponse = pb.BatchPutResponse
BatchGetResponse = pb.BatchGetResponse

STREAM_CHUNK = 1024 * 1024


class StorageClient(BaseClient):
    """One channel to the storage service. Methods return the generated messages; failures raise
    `ServiceCallError` carrying the gRPC code and ErrorInfo reason."""

    service = "storage"

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 3,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        super().__init__(address, timeout_s=timeout_s, retries=retries, channel=channel)
        self.stub = pb_grpc.StorageServiceStub(self.channel)

    # --- objects -------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        backend: str = "",
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> pb.PutResponse:
        """Stores `data` under `key` (sent in 1 MiB messages)."""

        async def chunks() -> AsyncIterator[bytes]:
            view = memoryview(data)
            for i in range(0, len(data), STREAM_CHUNK):
                yield bytes(view[i : i + STREAM_CHUNK])

        return await self.put_stream(
            key,
            chunks(),
            backend=backend,
            content_type=content_type,
            metadata=metadata,
            size_bytes=len(data),
            timeout=timeout,
        )

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        backend: str = "",
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        size_bytes: int = 0,
        timeout: float | None = None,
    ) -> pb.PutResponse:
        """Client-streaming Put. `size_bytes` (when known) is declared in the header, and the
        stream ends with an `end` message carrying the count sent, so the server commits only a
        complete upload. If `chunks` raises, the request stream raises too: gRPC cancels the call
        (it never half-closes it), the server stores nothing and aborts any multipart upload, and
        the iterator's exception is re-raised here."""
        failure: list[BaseException] = []

        async def requests() -> AsyncIterator[pb.PutRequest]:
            yield pb.PutRequest(
                header=pb.PutHeader(
                    backend=backend, key=key, content_type=content_type, metadata=metadata or {}, size_bytes=size_bytes
                )
            )
            sent = 0
            try:
                async for chunk in chunks:
                    if chunk:
                        sent += len(chunk)
                        yield pb.PutRequest(data=bytes(chunk))
            except GeneratorExit:
                # grpc.aio closed the request stream (the server answered, a refusal say, before
                # the upload ended): the call's own outcome is what the caller gets.
                raise
            except BaseException as exc:
                # Never end the stream normally after a failure: a half-close would read on the
                # server as a finished upload. Raising makes grpc.aio cancel the call instead.
                failure.append(exc)
                raise
            yield pb.PutRequest(end=pb.PutEnd(size_bytes=sent))

        call = self.stub.Put(requests(), timeout=self._timeout(timeout))
        try:
            with client_attempt(method_of(self.stub.Put), self.address):
                return await call
        except asyncio.CancelledError:
            if failure and not isinstance(failure[0], asyncio.CancelledError):
                raise failure[0] from None
            raise
        except grpc.aio.AioRpcError as err:
            if failure and not isinstance(failure[0], asyncio.CancelledError):
                raise failure[0] from None
            raise ServiceCallError.from_rpc_error(self.service, self.address, err) from None
        finally:
            call.cancel()

    async def put_if(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str = "",
        if_none_match: bool = False,
        backend: str = "",
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> pb.PutResponse:
        """A conditional write of a small object: stored only while the object still has ETag
        `if_match`, or (with `if_none_match`) does not exist yet. Another writer's change raises
        ServiceCallError FAILED_PRECONDITION, reason CONDITION_NOT_MET. Not retried: a retry of
        a write that landed would see its own change and fail."""
        if not if_match and not if_none_match:
            raise ValueError("put_if needs if_match or if_none_match")
        header = pb.PutHeader(
            backend=backend,
            key=key,
            content_type=content_type,
            size_bytes=len(data),
            if_match=if_match,
            if_none_match=if_none_match,
        )
        reqs = [
            pb.PutRequest(header=header),
            pb.PutRequest(data=data),
            pb.PutRequest(end=pb.PutEnd(size_bytes=len(data))),
        ]

        async def requests() -> AsyncIterator[pb.PutRequest]:
            for r in reqs:
                yield r

        try:
            with client_attempt(method_of(self.stub.Put), self.address):
                return await self.stub.Put(requests(), timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as err:
            raise ServiceCallError.from_rpc_error(self.service, self.address, err) from None

    async def get(
        self, key: str, *, backend: str = "", range_start: int = 0, range_end: int = 0, timeout: float | None = None
    ) -> tuple[bytes, pb.ObjectInfo, pb.Transfer]:
        """Reads an object (or an inclusive byte range of it): (data, info, measured transfer)."""
        info, transfer, parts = pb.ObjectInfo(), pb.Transfer(), []
        call = self.stub.Get(
            pb.GetRequest(backend=backend, key=key, range_start=range_start, range_end=range_end),
            timeout=self._timeout(timeout),
        )
        async for msg in self.stream(call, method_of(self.stub.Get)):
            which = msg.WhichOneof("part")
            if which == "info":
                info = msg.info
            elif which == "data":
                parts.append(msg.data)
            elif which == "transfer":
                transfer = msg.transfer
            elif which == "whole":
                return msg.whole.data, msg.whole.info, msg.whole.transfer
        return b"".join(parts), info, transfer

    async def get_stream(
        self, key: str, *, backend: str = "", range_start: int = 0, range_end: int = 0, timeout: float | None = None
    ) -> AsyncIterator[pb.GetResponse]:
        """The raw Get stream: info, data messages, then the transfer; or one `whole` message
        for an object that fits in one data message."""
        call = self.stub.Get(
            pb.GetRequest(backend=backend, key=key, range_start=range_start, range_end=range_end),
            timeout=self._timeout(timeout),
        )
        async for msg in self.stream(call, method_of(self.stub.Get)):
            yield msg

    async def batch_put(
        self,
        items: Sequence[tuple[str, bytes]] | Sequence[pb.PutItem],
        *,
        backend: str = "",
        timeout: float | None = None,
    ) -> pb.BatchPutResponse:
        """Stores many small objects in parallel; each result has its own status (check them)."""
        msgs = [i if isinstance(i, pb.PutItem) else pb.PutItem(key=i[0], data=i[1]) for i in items]
        return await self.unary(self.stub.BatchPut, pb.BatchPutRequest(backend=backend, items=msgs), timeout=timeout)

    async def batch_get(
        self, keys: Sequence[str], *, backend: str = "", timeout: float | None = None
    ) -> pb.BatchGetResponse:
        """Reads many small objects in parallel; each result has its own status (NOT_FOUND etc.)."""
        return await self.unary(
            self.stub.BatchGet, pb.BatchGetRequest(backend=backend, keys=list(keys)), timeout=timeout
        )

    async def head(self, key: str, *, backend: str = "", timeout: float | None = None) -> pb.HeadResponse:
        return await self.unary(self.stub.Head, pb.HeadRequest(backend=backend, key=key), timeout=timeout)

    async def list(
        self,
        prefix: str = "",
        *,
        backend: str = "",
        page_size: int = 1000,
        page_token: str = "",
        timeout: float | None = None,
    ) -> pb.ListResponse:
        return await self.unary(
            self.stub.List,
            pb.ListRequest(
                backend=backend, prefix=prefix, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)
            ),
            timeout=timeout,
        )

    async def list_all(self, prefix: str = "", *, backend: str = "") -> AsyncIterator[pb.ObjectInfo]:
        """Every object under `prefix`, following pages."""
        token = ""
        while True:
            page = await self.list(prefix, backend=backend, page_token=token)
            for obj in page.objects:
                yield obj
            token = page.next_page_token
            if not token:
                return

    async def delete(
        self, keys: Sequence[str] = (), *, prefix: str = "", backend: str = "", timeout: float | None = None
    ) -> pb.DeleteResponse:
        """Deletes `keys` and/or everything under `prefix`. Missing keys are not an error."""
        return await self.unary(
            self.stub.Delete, pb.DeleteRequest(backend=backend, keys=list(keys), prefix=prefix), timeout=timeout
        )

    async def copy(
        self, source_key: str, destination_key: str, *, backend: str = "", timeout: float | None = None
    ) -> pb.CopyResponse:
        return await self.unary(
            self.stub.Copy,
            pb.CopyRequest(backend=backend, source_key=source_key, destination_key=destination_key),
            timeout=timeout,
        )

    # --- backends ------------------------------------------------------------------------

    async def list_backends(self) -> pb.ListBackendsResponse:
        return await self.unary(self.stub.ListBackends, pb.ListBackendsRequest())

    async def put_backend(self, backend: pb.Backend) -> pb.PutBackendResponse:
        return await self.unary(self.stub.PutBackend, pb.PutBackendRequest(backend=backend))

    async def remove_backend(self, name: str) -> pb.RemoveBackendResponse:
        return await self.unary(self.stub.RemoveBackend, pb.RemoveBackendRequest(name=name))

    async def test_connection(self, name: str = "", *, timeout: float | None = None) -> pb.TestConnectionResponse:
        return await self.unary(
            self.stub.TestConnection, pb.TestConnectionRequest(backend=name), timeout=timeout, idempotent=False
        )

    # --- benchmarks ----------------------------------------------------------------------

    async def run_benchmark(
        self, request: pb.RunBenchmarkRequest, *, timeout: float | None = 3600.0
    ) -> AsyncIterator[pb.RunBenchmarkResponse]:
        """Progress events, finished levels, then the saved run (the last message)."""
        call = self.stub.RunBenchmark(request, timeout=timeout)
        async for msg in self.stream(call, method_of(self.stub.RunBenchmark)):
            yield msg

    async def list_benchmark_runs(self, page_size: int = 50, page_token: str = "") -> pb.ListBenchmarkRunsResponse:
        return await self.unary(
            self.stub.ListBenchmarkRuns,
            pb.ListBenchmarkRunsRequest(page=common_pb2.PageRequest(page_size=page_size, page_token=page_token)),
        )

    async def get_benchmark_run(self, run_id: str) -> pb.GetBenchmarkRunResponse:
        return await self.unary(self.stub.GetBenchmarkRun, pb.GetBenchmarkRunRequest(run_id=run_id))

    async def compare_benchmark_runs(
        self, run_a: str | pb.BenchmarkRun, run_b: str | pb.BenchmarkRun
    ) -> pb.CompareBenchmarkRunsResponse:
        """Both runs lined up cell by cell, with b / a ratios. Each run is a saved run's id, or a
        run given whole (a file `rag bench` saved), which is compared and not stored."""
        req = pb.CompareBenchmarkRunsRequest()
        for ref, id_field, run_field in ((run_a, "run_id_a", "run_a"), (run_b, "run_id_b", "run_b")):
            if isinstance(ref, pb.BenchmarkRun):
                getattr(req, run_field).CopyFrom(ref)
            else:
                setattr(req, id_field, ref)
        return await self.unary(self.stub.CompareBenchmarkRuns, req)
