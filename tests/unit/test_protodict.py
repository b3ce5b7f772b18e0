"""The one protobuf -> dict walker (clients/protodict.py): what the CLI's `--json` and the gateway's
HTTP bodies both print, so an enum or a bytes field reads the same in both. No network."""

from __future__ import annotations

import pytest

import cli.commands.common as cli_common
import gateway.convert as gateway_convert
from clients.protodict import enum_name, enum_value, from_dict, to_dict
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from ddnrag.storage.v1 import storage_service_pb2 as spb


def test_the_cli_and_the_gateway_print_with_the_same_walker() -> None:
    assert cli_common.to_dict is gateway_convert.to_dict is to_dict
    assert cli_common.enum_name is gateway_convert.enum_name is enum_name


def test_enums_are_short_lower_names_both_ways() -> None:
    lv = spb.LevelResult(backend="local", operation=spb.BENCHMARK_OPERATION_GET, object_size_bytes=4096)
    assert to_dict(lv)["operation"] == "get"
    assert to_dict(rpb.Job(state=rpb.JOB_STATE_CANCELLED))["state"] == "cancelled"
    assert enum_name(spb.BenchmarkOperation.DESCRIPTOR, 42) == "42"  # a value this build does not know
    for name in ("get", "GET", "BENCHMARK_OPERATION_GET"):
        assert enum_value(spb.BenchmarkOperation.DESCRIPTOR, name) == spb.BENCHMARK_OPERATION_GET
    with pytest.raises(ValueError, match="get, put"):
        enum_value(spb.BenchmarkOperation.DESCRIPTOR, "teleport")


def test_bytes_become_their_length_and_unset_parts_are_marked() -> None:
    whole = spb.WholeObject(data=b"\xff\x00binary")
    d = to_dict(whole)
    assert d["data"] == 8  # never raw bytes (nor undecodable text) in JSON
    get = spb.GetResponse(data=b"abc")  # a oneof: only the member that is set appears
    assert to_dict(get) == {"data": 3}
    assert to_dict(spb.PutResponse())["transfer"] is None  # an unset message field is null


def test_from_dict_reads_back_what_to_dict_wrote() -> None:
    run = spb.BenchmarkRun(run_id="r1", started_unix_ns=2**62, not_configured=["gone"])
    run.request.operation = spb.BENCHMARK_OPERATION_PUT
    run.request.object_sizes_bytes.extend([4096, 1 << 20])
    lv = run.results.add(backend="local", operation=spb.BENCHMARK_OPERATION_PUT, concurrency=4, ops_per_s=12.5)
    lv.errors_by_kind["SlowDown"] = 2
    lv.latency.p99_ns = 7
    assert from_dict(to_dict(run), spb.BenchmarkRun()) == run
    # Unknown keys and nulls (a file from another version) are skipped, not refused.
    assert from_dict({"run_id": "r2", "retired": 1, "request": None}, spb.BenchmarkRun()) == spb.BenchmarkRun(
        run_id="r2"
    )
