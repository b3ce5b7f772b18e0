"""Hostile input on every gRPC request message of the four services, on the real stack.

Every RPC of every service gets random and boundary messages built from its descriptor (huge
strings, traversal keys, NUL, boundary numbers, unknown enum values, nested junk). A call may
succeed (the input was valid) or fail with a client-error code; it must never fail with
INTERNAL, UNKNOWN or UNAVAILABLE (a crash or an unmapped error), nor hang past its deadline, and
health must still be SERVING afterwards. Object keys the calls wrote must stay inside their
collection's prefix.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings

from ddnrag.embedder.v1 import embedder_service_pb2
from ddnrag.llm.v1 import llm_service_pb2
from ddnrag.retriever.v1 import retriever_service_pb2
from ddnrag.storage.v1 import storage_service_pb2
from testkit.faults import harness
from testkit.stack import RunningStack
from tests.fuzz.strategies import message

pytestmark = [pytest.mark.e2e]

SERVICES = {
    "DDNRAG_EMBEDDER_PORT": embedder_service_pb2.DESCRIPTOR.services_by_name["EmbedderService"],
    "DDNRAG_STORAGE_PORT": storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"],
    "DDNRAG_RETRIEVER_PORT": retriever_service_pb2.DESCRIPTOR.services_by_name["RetrieverService"],
    "DDNRAG_LLM_GATEWAY_PORT": llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
}
# The default run keeps to the CI budget; bench/reliability.py sets DDNRAG_FUZZ_FULL=1 (1,000+ cases).
CASES_PER_RPC = 25 if os.environ.get("DDNRAG_FUZZ_FULL") == "1" else 6
BAD = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
TIMEOUT_S = 20.0

COLLECTION = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
METHODS = [(var, svc, m) for var, svc in SERVICES.items() for m in svc.methods]
CODES: Counter[str] = Counter()
FAILURES: list[str] = []


def _call(channel: grpc.Channel, svc: Any, m: Any, req: Any) -> grpc.StatusCode:
    path = f"/{svc.full_name}/{m.name}"
    resp_cls = message_factory.GetMessageClass(m.output_type)
    ser, de = (lambda x: x.SerializeToString()), resp_cls.FromString
    try:
        if m.client_streaming and m.server_streaming:
            call = channel.stream_stream(path, request_serializer=ser, response_deserializer=de)
            for _ in call(iter([req, req]), timeout=TIMEOUT_S):
                pass
        elif m.client_streaming:
            channel.stream_unary(path, request_serializer=ser, response_deserializer=de)(
                iter([req, req]), timeout=TIMEOUT_S
            )
        elif m.server_streaming:
            call = channel.unary_stream(path, request_serializer=ser, response_deserializer=de)(req, timeout=TIMEOUT_S)
            for i, _ in enumerate(call):
                if i > 200:  # a long valid stream (a benchmark, a watch) proves nothing more
                    call.cancel()
                    break
        else:
            channel.unary_unary(path, request_serializer=ser, response_deserializer=de)(req, timeout=TIMEOUT_S)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return,attr-defined]


@pytest.mark.parametrize(("port_var", "svc", "method"), METHODS, ids=[f"{s.name}.{m.name}" for _, s, m in METHODS])
def test_every_rpc_refuses_hostile_messages_cleanly(stack: RunningStack, port_var: str, svc: Any, method: Any) -> None:
    if method.name in ("RemoveBackend", "PutBackend"):
        pytest.skip("changes the shared backend registry (and PutBackend endpoints could leave loopback)")
    strat = message(method.input_type, message_factory.GetMessageClass)
    seen: Counter[str] = Counter()

    with grpc.insecure_channel(stack.addr(port_var)) as channel:

        @settings(max_examples=CASES_PER_RPC, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(req=strat)
        def run(req: Any) -> None:
            code = _call(channel, svc, method, req)
            seen[code.name] += 1
            CODES[code.name] += 1
            assert code not in BAD, f"{svc.name}.{method.name} answered {code.name} to {req!r:.400}"

        run()
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(stack.addr(port_var)))
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    harness.record(
        f"fuzz_grpc_{svc.name}_{method.name}",
        {"fuzz_cases": sum(seen.values()), "grpc_internal": seen["INTERNAL"] + seen["UNKNOWN"], "codes": dict(seen)},
    )


def test_keys_never_escape_their_collection_prefix(stack: RunningStack) -> None:
    """After the fuzzing, every collection-scoped object (docs/, chunks/, index/) sits under a
    well-formed collection segment, and no key has a '.'/'..' segment, a NUL or a leading '/'.
    (The storage service's own Put takes any relative key: it is the internal object API, and
    its fuzzed keys land at the bucket root, which is allowed.)"""
    s3 = harness.s3_client(stack)
    keys = harness.list_keys(s3, "")
    assert keys
    bad = []
    for k in keys:
        parts = k.split("/")
        if k.startswith("/") or "\x00" in k or any(p in (".", "..") for p in parts):
            bad.append(k)
        elif parts[0] in ("docs", "chunks", "index") and (len(parts) < 3 or not COLLECTION.match(parts[1])):
            bad.append(k)  # a collection-scoped key outside a well-formed collection prefix
    assert not bad, bad[:20]
