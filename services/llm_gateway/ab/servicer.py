"""`ddnrag.llm.v1.AbTestService`: protobuf <-> the A/B engine and saved runs. A ServiceError
raised before the first event escapes to the shared interceptor, which maps it to its status."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from ddnrag.llm.v1 import ab_service_pb2 as pb
from ddnrag.llm.v1 import ab_service_pb2_grpc as pb_grpc
from kernel.errors import ErrorKind, ServiceError
from kernel.timing import Timer

from ..servicer import timings_from
from .engine import AbEngine, Event
from .model import AbRequest
from .report import render_html
from .runs import AbRuns
from .stats import BOOTSTRAP_SEED


def request_from_pb(m: pb.RunAbTestRequest) -> AbRequest:
    return AbRequest(
        backends=list(m.backends),
        questions=list(m.questions),
        collection=m.collection or "default",
        top_k=m.top_k or 5,
        repeat=m.repeat or 2,
        ttft=not m.skip_ttft,
        label=m.label,
        source=m.source,
        seed=m.seed or BOOTSTRAP_SEED,
    )


def run_pb(doc: dict[str, Any]) -> pb.AbRun:
    return pb.AbRun(
        run_id=doc["run_id"],
        status=doc.get("status", ""),
        started_unix_ns=int(doc.get("started_unix_ns", 0)),
        finished_unix_ns=int(doc.get("finished_unix_ns", 0)),
        backends=list(doc.get("request", {}).get("backends", [])),
        json_key=doc.get("json_key", ""),
        csv_key=doc.get("csv_key", ""),
        document_json=json.dumps(doc),
    )


def event_pb(run_id: str, ev: Event) -> pb.RunAbTestResponse:
    out = pb.RunAbTestResponse(run_id=run_id, seq=ev.seq)
    if ev.kind == "notice":
        out.notice.message = ev.data["message"]
    elif ev.kind == "progress":
        d = ev.data
        out.progress.CopyFrom(
            pb.AbProgress(
                done=d["done"],
                total=d["total"],
                phase=d["phase"],
                errors=d["errors"],
                last_fetch_ttfb_ns=d["last_fetch_ttfb_ns"],
            )
        )
    else:
        out.run.CopyFrom(run_pb(ev.data))
    return out


def _unavailable() -> ServiceError:
    return ServiceError(
        ErrorKind.FAILED_PRECONDITION,
        "A/B runs need the retriever and the storage service: set DDNRAG_LLM_GATEWAY_RETRIEVER_ADDR and "
        "DDNRAG_LLM_GATEWAY_STORAGE_ADDR",
        reason="AB_NOT_CONFIGURED",
    )


class AbTestServicer(pb_grpc.AbTestServiceServicer):
    def __init__(self, engine: AbEngine | None, runs: AbRuns | None) -> None:
        self.engine = engine
        self.runs = runs

    def _parts(self) -> tuple[AbEngine, AbRuns]:
        if self.engine is None or self.runs is None:
            raise _unavailable()
        return self.engine, self.runs

    async def RunAbTest(
        self, request: pb.RunAbTestRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunAbTestResponse]:
        engine, _ = self._parts()
        live = await engine.start(request_from_pb(request))
        async for ev in engine.follow(live.run_id):
            yield event_pb(live.run_id, ev)

    async def WatchAbTest(
        self, request: pb.WatchAbTestRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchAbTestResponse]:
        engine, _ = self._parts()
        async for ev in engine.follow(request.run_id, request.after_seq):
            # The same fields and numbers as RunAbTestResponse: the bytes are the same message.
            yield pb.WatchAbTestResponse.FromString(event_pb(request.run_id, ev).SerializeToString())

    async def ListAbTests(
        self, request: pb.ListAbTestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAbTestsResponse:
        _, runs = self._parts()
        timer = Timer()
        with timer.stage("storage"):
            docs, token = await runs.list(request.page.page_size, request.page.page_token)
        return pb.ListAbTestsResponse(
            runs=[run_pb(d) for d in docs], next_page_token=token, timings=timings_from(timer.stages, timer.total_ns())
        )

    async def GetAbTest(self, request: pb.GetAbTestRequest, context: grpc.aio.ServicerContext) -> pb.GetAbTestResponse:
        _, runs = self._parts()
        timer = Timer()
        with timer.stage("storage"):
            doc = await runs.get(request.run_id)
            csv = (await runs.csv(request.run_id)).decode() if request.include_csv else ""
        html = render_html(doc) if request.include_html else ""
        return pb.GetAbTestResponse(
            run=run_pb(doc), csv=csv, html=html, timings=timings_from(timer.stages, timer.total_ns())
        )
