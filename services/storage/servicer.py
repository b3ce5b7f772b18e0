"""StorageService: protobuf <-> core. Thin: converts, calls the core, lets ServiceError escape to
the shared interceptor (which maps it once, with ErrorInfo). Per-item failures of batches go in
the item's `google.rpc.Status`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from ddnrag.storage.v1 import storage_service_pb2 as pb
from ddnrag.storage.v1 import storage_service_pb2_grpc as pb_grpc
from kernel.errors import OK_STATUS, invalid
from kernel.pb import page_size, timings_pb
from kernel.timing import Timer

from .bench_engine import BenchmarkEngine
from .bench_model import LevelStats, Progress
from .bench_runs import BenchRuns
from .convert import (
    backend_from_pb,
    backend_pb,
    bench_request_from_pb,
    comparison_pb,
    info_pb,
    level_pb,
    progress_pb,
    run_from_pb,
    run_pb,
    transfer_pb,
)
from .core import StorageCore
from .s3 import DEADLINE
from .streams import check_size


def _deadline(context: grpc.aio.ServicerContext) -> None:
    """Passes the caller's deadline on to the retry loop (see s3.DEADLINE)."""
    left = context.time_remaining()
    DEADLINE.set(None if left is None else asyncio.get_running_loop().time() + left)


class StorageServicer(pb_grpc.StorageServiceServicer):
    def __init__(self, core: StorageCore) -> None:
        self.core = core
        self.engine = BenchmarkEngine(core)
        self.runs = BenchRuns(core)

    # --- backends ------------------------------------------------------------------------

    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBackendsResponse:
        timer = Timer(spans=False)  # the S3 requests have their own spans (s3trace.py)
        backends = [backend_pb(s, has) for s, has in await self.core.backends.list()]
        return pb.ListBackendsResponse(
            backends=backends, default_backend=self.core.default_backend, timings=timings_pb(timer)
        )

    async def PutBackend(
        self, request: pb.PutBackendRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutBackendResponse:
        timer = Timer(spans=False)
        spec, inline = backend_from_pb(request.backend)
        saved, has = await self.core.backends.put(spec, inline)
        return pb.PutBackendResponse(backend=backend_pb(saved, has), timings=timings_pb(timer))

    async def RemoveBackend(
        self, request: pb.RemoveBackendRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveBackendResponse:
        timer = Timer(spans=False)
        await self.core.backends.remove(request.name)
        return pb.RemoveBackendResponse(timings=timings_pb(timer))

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TestConnectionResponse:
        _deadline(context)
        timer = Timer(spans=False)
        with timer.stage("test_connection", backend=request.backend or self.core.default_backend):
            rep = await self.core.backends.test_connection(request.backend)
        return pb.TestConnectionResponse(
            ok=rep.ok,
            head_bucket_ns=rep.head_bucket_ns,
            can_write=rep.can_write,
            can_read=rep.can_read,
            message=rep.message,
            timings=timings_pb(timer),
        )

    # --- objects -------------------------------------------------------------------------

    async def Put(
        self, request_iterator: AsyncIterator[pb.PutRequest], context: grpc.aio.ServicerContext
    ) -> pb.PutResponse:
        _deadline(context)
        timer = Timer(spans=False)
        it = request_iterator.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            raise invalid("a Put stream must start with a header message", reason="MISSING_HEADER") from None
        if first.WhichOneof("part") != "header":
            raise invalid("a Put stream must start with a header message", reason="MISSING_HEADER")
        h = first.header

        async def data() -> AsyncIterator[bytes]:
            received = 0
            async for msg in it:
                part = msg.WhichOneof("part")
                if part == "end":
                    check_size(msg.end.size_bytes, received, zero_is_size=True)
                    return
                if part != "data":
                    raise invalid("only the first Put message may be a header", reason="DUPLICATE_HEADER")
                received += len(msg.data)
                yield msg.data
            if not h.size_bytes:
                # grpc.aio ends the request stream the same way for a client's half-close and for
                # its cancel, so an unmarked end may be a cut-off upload: never commit it.
                raise invalid(
                    "the Put stream ended without an `end` message and the header declared no size_bytes, "
                    "so it cannot be told from a cancelled upload; nothing was stored. Send "
                    "{end: {size_bytes: N}} last, or declare header.size_bytes",
                    reason="UNTERMINATED_STREAM",
                )

        if h.if_match or h.if_none_match:
            buf = bytearray()
            async for piece in data():
                buf += piece
                if len(buf) > self.core.cfg.multipart_threshold_bytes:
                    break  # put_conditional refuses it by size, without reading the rest
            out = await self.core.put_conditional(
                h.backend,
                h.key,
                bytes(buf),
                h.content_type,
                dict(h.metadata),
                if_match=h.if_match,
                if_none_match=h.if_none_match,
                timer=timer,
            )
        else:
            out = await self.core.put_stream(
                h.backend, h.key, data(), h.content_type, dict(h.metadata), h.size_bytes, timer
            )
        return pb.PutResponse(
            key=out.key,
            size_bytes=out.size_bytes,
            etag=out.etag,
            multipart=out.multipart,
            transfer=transfer_pb(out.transfer),
            timings=timings_pb(timer),
        )

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GetResponse]:
        _deadline(context)
        stream = await self.core.open_get(request.backend, request.key, request.range_start, request.range_end)
        try:
            assert stream.info is not None
            whole = stream.whole
            if whole is not None:
                yield pb.GetResponse(
                    whole=pb.WholeObject(info=info_pb(stream.info), data=whole, transfer=transfer_pb(stream.transfer))
                )
                return
            yield pb.GetResponse(info=info_pb(stream.info))
            async for chunk in stream.chunks():
                yield pb.GetResponse(data=chunk)
            yield pb.GetResponse(transfer=transfer_pb(stream.transfer))
        finally:
            stream.close()

    async def BatchPut(self, request: pb.BatchPutRequest, context: grpc.aio.ServicerContext) -> pb.BatchPutResponse:
        _deadline(context)
        timer = Timer(spans=False)
        items = [(i.key, i.data, i.content_type, dict(i.metadata)) for i in request.items]
        results = await self.core.batch_put(request.backend, items, timer)
        return pb.BatchPutResponse(
            results=[
                pb.PutResult(
                    key=r.key,
                    status=r.error.to_status_proto() if r.error else OK_STATUS,
                    transfer=transfer_pb(r.transfer),
                    etag=r.etag,
                )
                for r in results
            ],
            timings=timings_pb(timer),
        )

    async def BatchGet(self, request: pb.BatchGetRequest, context: grpc.aio.ServicerContext) -> pb.BatchGetResponse:
        _deadline(context)
        timer = Timer(spans=False)
        results = await self.core.batch_get(request.backend, list(request.keys), timer)
        out = []
        for r in results:
            if r.error is not None:
                out.append(pb.GetResult(key=r.key, status=r.error.to_status_proto()))
            else:
                assert r.meta is not None
                out.append(
                    pb.GetResult(
                        key=r.key, status=OK_STATUS, data=r.data, info=info_pb(r.meta), transfer=transfer_pb(r.transfer)
                    )
                )
        return pb.BatchGetResponse(results=out, timings=timings_pb(timer))

    async def Head(self, request: pb.HeadRequest, context: grpc.aio.ServicerContext) -> pb.HeadResponse:
        _deadline(context)
        timer = Timer(spans=False)
        meta, tr = await self.core.head(request.backend, request.key, timer)
        return pb.HeadResponse(info=info_pb(meta), transfer=transfer_pb(tr), timings=timings_pb(timer))

    async def List(self, request: pb.ListRequest, context: grpc.aio.ServicerContext) -> pb.ListResponse:
        _deadline(context)
        timer = Timer(spans=False)
        objs, nxt, tr = await self.core.list(
            request.backend, request.prefix, page_size(request.page), request.page.page_token, timer
        )
        return pb.ListResponse(
            objects=[info_pb(o) for o in objs], next_page_token=nxt, transfer=transfer_pb(tr), timings=timings_pb(timer)
        )

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        _deadline(context)
        timer = Timer(spans=False)
        n, tr = await self.core.delete(request.backend, list(request.keys), request.prefix, timer)
        return pb.DeleteResponse(deleted=n, transfer=transfer_pb(tr), timings=timings_pb(timer))

    async def Copy(self, request: pb.CopyRequest, context: grpc.aio.ServicerContext) -> pb.CopyResponse:
        _deadline(context)
        timer = Timer(spans=False)
        meta, tr = await self.core.copy(request.backend, request.source_key, request.destination_key, timer)
        return pb.CopyResponse(info=info_pb(meta), transfer=transfer_pb(tr), timings=timings_pb(timer))

    # --- benchmarks ----------------------------------------------------------------------

    async def RunBenchmark(
        self, request: pb.RunBenchmarkRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunBenchmarkResponse]:
        async for ev in self.engine.run(bench_request_from_pb(request)):
            if isinstance(ev, Progress):
                yield pb.RunBenchmarkResponse(progress=progress_pb(ev))
            elif isinstance(ev, LevelStats):
                yield pb.RunBenchmarkResponse(level=level_pb(ev))
            else:
                yield pb.RunBenchmarkResponse(run=run_pb(ev))

    async def ListBenchmarkRuns(
        self, request: pb.ListBenchmarkRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBenchmarkRunsResponse:
        timer = Timer(spans=False)
        runs, nxt = await self.runs.list(page_size(request.page, default=50, maximum=200), request.page.page_token)
        return pb.ListBenchmarkRunsResponse(
            runs=[run_pb(r) for r in runs], next_page_token=nxt, timings=timings_pb(timer)
        )

    async def GetBenchmarkRun(
        self, request: pb.GetBenchmarkRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBenchmarkRunResponse:
        timer = Timer(spans=False)
        run = await self.runs.get(request.run_id)
        return pb.GetBenchmarkRunResponse(run=run_pb(run), timings=timings_pb(timer))

    async def CompareBenchmarkRuns(
        self, request: pb.CompareBenchmarkRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareBenchmarkRunsResponse:
        timer = Timer(spans=False)
        a, b, rows = await self.runs.compare(
            run_from_pb(request.run_a) if request.HasField("run_a") else request.run_id_a,
            run_from_pb(request.run_b) if request.HasField("run_b") else request.run_id_b,
        )
        return pb.CompareBenchmarkRunsResponse(
            a=run_pb(a), b=run_pb(b), rows=[comparison_pb(r) for r in rows], timings=timings_pb(timer)
        )
