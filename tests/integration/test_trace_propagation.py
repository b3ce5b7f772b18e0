"""Trace context across gRPC, for every call type, in a real process exporting over OTLP to a
real receiver in this one (tests/support/trace_probe.py, testkit/otlp.py): each call's server span
is the child of the span the call was made in; the trace id comes back in the trailing metadata,
errors included. Seconds, no stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.otlp import OtlpReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[2]
SERVER = 2
METHODS = ("Unary", "ServerStream", "ClientStream", "Bidi")


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def _probe(env: dict[str, str], traceparent: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-m", "tests.support.trace_probe", traceparent],
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


def test_every_call_type_carries_the_trace_and_parents_correctly(otlp: OtlpReceiver) -> None:
    trace_id, parent = os.urandom(16).hex(), os.urandom(8).hex()
    trailers = _probe(otlp.env, f"00-{trace_id}-{parent}-01")
    assert trailers == {**dict.fromkeys(METHODS, trace_id), "error_code": "NOT_FOUND", "error": trace_id}

    def complete(spans: list[ReceivedSpan]) -> bool:  # four calls, the failing one, the probe's own
        return sum(1 for s in spans if s.kind == SERVER) >= len(METHODS) + 1 and any(s.name == "probe" for s in spans)

    spans = otlp.wait_for(complete, trace_id)
    probe = next(s for s in spans if s.name == "probe")
    assert probe.parent_span_id == parent and probe.service == "probe"
    for method in METHODS:
        name = f"probe.v1.EchoService/{method}"
        [server] = [
            s for s in spans if s.name == name and s.kind == SERVER and s.attributes["rpc.grpc.status_code"] == 0
        ]
        assert server.parent_span_id == probe.span_id
        assert server.attributes["rpc.system"] == "grpc" and server.attributes["rpc.method"] == method
    failed = next(s for s in spans if s.kind == SERVER and s.attributes["rpc.grpc.status_code"] == 5)
    assert failed.parent_span_id == probe.span_id  # NOT_FOUND: a client's fault, not the span's error


def test_without_an_endpoint_trace_ids_still_travel() -> None:
    trace_id = os.urandom(16).hex()
    trailers = _probe({}, f"00-{trace_id}-{os.urandom(8).hex()}-01")
    assert trailers == {**dict.fromkeys(METHODS, trace_id), "error_code": "NOT_FOUND", "error": trace_id}


def test_disabled_means_no_tracing_at_all() -> None:
    trailers = _probe({"OTEL_SDK_DISABLED": "true"}, f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01")
    assert trailers == {**dict.fromkeys(METHODS, ""), "error_code": "NOT_FOUND", "error": ""}
