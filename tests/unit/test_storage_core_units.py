"""Plain-Python parts of the storage service: keys, credentials, backend specs, the registry's
files, error mapping, ranges, benchmark statistics and files, the shaping link. No network."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, SSLError

from kernel.config import env_vars, load_env
from kernel.errors import ErrorKind, ServiceError
from services.storage.backends import default_spec
from services.storage.bench_model import (
    BenchRequest,
    LevelStats,
    Pct,
    RunRecord,
    compare_runs,
    percentile,
    run_from_json,
    run_to_csv,
    run_to_json,
)
from services.storage.config import StorageConfig
from services.storage.convert import run_from_pb, run_pb
from services.storage.core import range_header
from services.storage.credentials import from_env_prefix, from_path
from services.storage.emulated_link import ShapingProxy, _Link
from services.storage.errors import is_retryable, kind_name, map_error
from services.storage.keys import check_key, check_prefix
from services.storage.model import BackendSpec, Credentials, Kind, Shaping

SECRET = "s3cr3t-VALUE-never-shown"


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "/a", "a/../b", "../a", "a/..", ".", "a/./b", "a\x00b", "a\nb", "a\x7fb", "x" * 1025, "é" * 513]
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(ServiceError) as ei:
        check_key(key)
    assert ei.value.kind is ErrorKind.INVALID_ARGUMENT and ei.value.reason == "INVALID_KEY"


@pytest.mark.parametrize("key", ["a", "docs/c/d/file name.pdf", "a..b/c", ".hidden/x", "x" * 1024, "é" * 512, "a/"])
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


def test_prefix_may_be_empty_but_not_bad() -> None:
    assert check_prefix("") == ""
    with pytest.raises(ServiceError):
        check_prefix("../")


# --- ranges -------------------------------------------------------------------------------


def test_range_header() -> None:
    assert range_header(0, 0) == ""
    assert range_header(5, 0) == "bytes=5-"
    assert range_header(5, 9) == "bytes=5-9"
    for a, b in ((-1, 0), (0, -1), (9, 5)):
        with pytest.raises(ServiceError) as ei:
            range_header(a, b)
        assert ei.value.kind is ErrorKind.INVALID_ARGUMENT


# --- credentials --------------------------------------------------------------------------


def test_credentials_from_json_ini_env_file_and_secret_dir(tmp_path: Path) -> None:
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"access_key_id": "AK", "secret_access_key": SECRET}))
    assert from_path(str(j)) == Credentials("AK", SECRET)
    ini = tmp_path / "credentials"
    ini.write_text(f"[default]\naws_access_key_id = AK2\naws_secret_access_key = {SECRET}\n")
    assert from_path(str(ini)).access_key_id == "AK2"
    env = tmp_path / "c.env"
    env.write_text(f"# comment\nexport AWS_ACCESS_KEY_ID=AK3\nAWS_SECRET_ACCESS_KEY='{SECRET}'\n")
    assert from_path(str(env)) == Credentials("AK3", SECRET)
    d = tmp_path / "secret"
    (d / "..2026_01_01").mkdir(parents=True)
    (d / "..2026_01_01" / "access_key_id").write_text("AK4\n")
    (d / "..2026_01_01" / "secret_access_key").write_text(SECRET + "\n")
    os.symlink("..2026_01_01", d / "..data")
    os.symlink("..data/access_key_id", d / "access_key_id")
    os.symlink("..data/secret_access_key", d / "secret_access_key")
    assert from_path(str(d)) == Credentials("AK4", SECRET)
    assert from_env_prefix("X", {"X_ACCESS_KEY_ID": "AK5", "X_SECRET_ACCESS_KEY": SECRET}).access_key_id == "AK5"


def test_credential_errors_name_the_source_never_a_value(tmp_path: Path) -> None:
    half = tmp_path / "half.json"
    half.write_text(json.dumps({"secret_access_key": SECRET}))
    for call in (
        lambda: from_path(str(half)),
        lambda: from_path(str(tmp_path / "missing")),
        lambda: from_env_prefix("NOPE", {"NOPE_SECRET_ACCESS_KEY": SECRET}),
    ):
        with pytest.raises(ServiceError) as ei:
            call()
        assert ei.value.kind is ErrorKind.FAILED_PRECONDITION and SECRET not in ei.value.message
    assert SECRET not in repr(Credentials("AK", SECRET))


# --- backend specs ------------------------------------------------------------------------


def spec(**kw: object) -> BackendSpec:
    base: dict[str, object] = dict(name="b1", kind=Kind.S3_COMPATIBLE, endpoint="http://h:1", bucket="bk")
    base.update(kw)
    return BackendSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"name": "UPPER"}, "INVALID_BACKEND_NAME"),
        ({"name": "-x"}, "INVALID_BACKEND_NAME"),
        ({"bucket": ""}, "INVALID_BACKEND"),
        ({"endpoint": ""}, "INVALID_BACKEND"),
        ({"endpoint": "ftp://h"}, "INVALID_BACKEND"),
        ({"endpoint": "http://h:1/path"}, "INVALID_BACKEND"),
        ({"shaping": Shaping(rtt_ms=5)}, "EMULATED_NAME"),
        ({"shaping": Shaping(rtt_ms=-1)}, "INVALID_BACKEND"),
        ({"credentials_file": "/x", "credentials_env_prefix": "Y"}, "INVALID_BACKEND"),
    ],
)
def test_backend_validation(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(ServiceError) as ei:
        spec(**kw).validate()
    assert ei.value.reason == reason


def test_backend_defaults_and_labels() -> None:
    spec().validate()
    BackendSpec("aws", Kind.AWS_S3, bucket="b").validate()  # AWS needs no endpoint
    assert spec().effective_addressing == "path"
    assert BackendSpec("aws", Kind.AWS_S3, bucket="b").effective_addressing == "virtual"
    em = spec(name="aws-emulated", shaping=Shaping(20, 5, 100))
    em.validate()
    assert em.emulated and em.label() == "emulated: RTT 20 ms, jitter 5 ms, 100 Mbit/s"
    assert spec().label() == "s3_compatible"


def test_default_spec_from_config(tmp_path: Path) -> None:
    creds = tmp_path / "c.json"
    creds.write_text(json.dumps({"access_key_id": "AK", "secret_access_key": SECRET}))
    cfg = load_env(
        StorageConfig,
        {
            "DDNRAG_STORAGE_DEFAULT_ENDPOINT": "http://127.0.0.1:9",
            "DDNRAG_STORAGE_DEFAULT_BUCKET": "bkt",
            "DDNRAG_STORAGE_DEFAULT_CREDENTIALS_FILE": str(creds),
        },
    )
    s, c = default_spec(cfg)
    assert s.name == "local" and s.is_default and s.bucket == "bkt" and c == Credentials("AK", SECRET)
    assert all(v.startswith("DDNRAG_STORAGE_") for v in env_vars(StorageConfig))


# --- error mapping ------------------------------------------------------------------------


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": SECRET}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


@pytest.mark.parametrize(
    ("exc", "kind", "retry"),
    [
        (client_error("NoSuchKey", 404), ErrorKind.NOT_FOUND, False),
        (client_error("NoSuchBucket", 404), ErrorKind.NOT_FOUND, False),
        (client_error("InvalidAccessKeyId", 403), ErrorKind.UNAUTHENTICATED, False),
        (client_error("SignatureDoesNotMatch", 403), ErrorKind.UNAUTHENTICATED, False),
        (client_error("AccessDenied", 403), ErrorKind.PERMISSION_DENIED, False),
        (client_error("SlowDown", 503), ErrorKind.UNAVAILABLE, True),
        (client_error("RequestTimeout", 400), ErrorKind.UNAVAILABLE, True),
        (client_error("InternalError", 500), ErrorKind.UNAVAILABLE, True),
        (client_error("InvalidRange", 416), ErrorKind.INVALID_ARGUMENT, False),
        (EndpointConnectionError(endpoint_url="http://x"), ErrorKind.UNAVAILABLE, True),
        (ReadTimeoutError(endpoint_url="http://x"), ErrorKind.UNAVAILABLE, True),
        (SSLError(endpoint_url="https://x", error="bad cert"), ErrorKind.UNAVAILABLE, False),
    ],
)
def test_map_error(exc: Exception, kind: ErrorKind, retry: bool) -> None:
    err = map_error(exc, "infinia", "bkt", "docs/a")
    assert err.kind is kind and is_retryable(exc) is retry
    assert "infinia" in err.message and SECRET not in err.message and SECRET not in str(err.metadata)


def test_kind_name() -> None:
    assert kind_name(client_error("SlowDown", 503)) == "SlowDown"
    assert kind_name(EndpointConnectionError(endpoint_url="http://x")) == "EndpointConnectionError"


# --- benchmark statistics and files -------------------------------------------------------


def test_percentiles_nearest_rank() -> None:
    v = list(range(1, 101))
    assert (percentile(v, 50), percentile(v, 90), percentile(v, 99), percentile(v, 100)) == (50, 90, 99, 100)
    assert percentile([], 50) == 0 and percentile([7], 99) == 7
    p = Pct.of([5, 1, 3])
    assert (p.p50_ns, p.max_ns, p.mean_ns) == (3, 5, 3)


@pytest.mark.parametrize(
    "kw",
    [
        {"backends": []},
        {"operation": "scan"},
        {"preset": "huge"},
        {"levels": []},
        {"levels": [0]},
        {"levels": [501]},
        {"sizes": [1023]},
        {"sizes": [64 * 1024 * 1024 + 1]},
        {"ops_per_level": 0},
        {"read_ratio": 2.0},
        {"duration_s": 3000, "ops_per_level": 0, "preset": "stress"},
        {"backends": ["a", "a"]},
    ],
)
def test_bench_request_validation(kw: dict[str, object]) -> None:
    base: dict[str, object] = dict(backends=["local"], levels=[1], ops_per_level=10)
    base.update(kw)
    with pytest.raises(ServiceError) as ei:
        BenchRequest(**base).validate(500)  # type: ignore[arg-type]
    assert ei.value.kind is ErrorKind.INVALID_ARGUMENT


def test_presets() -> None:
    assert BenchRequest(["x"], preset="stress").resolved_levels() == [1, 10, 50, 100, 250, 500]
    assert BenchRequest(["x"], preset="standard").resolved_levels() == [1, 5, 10, 20, 50]
    assert BenchRequest(["x"], preset="extended").resolved_levels() == [1, 10, 50, 100, 200]


def level(backend: str, conc: int, ops_s: float, p50: int) -> LevelStats:
    return LevelStats(
        backend,
        "s3_compatible",
        False,
        "get",
        4096,
        conc,
        ops=10,
        errors=1,
        errors_by_kind={"SlowDown": 1},
        ops_per_s=ops_s,
        latency=Pct(p50, p50, p50, p50, p50),
        ttfb=Pct(p50 // 2, 0, 0, 0, 0),
    )


def test_run_json_csv_round_trip_and_compare() -> None:
    a = RunRecord(
        "20260101T000000Z-00000001",
        1,
        2,
        BenchRequest(["local", "ddn"], levels=[1, 10]),
        [level("local", 1, 100.0, 1000), level("ddn", 1, 400.0, 250)],
        ["aws"],
    )
    b = RunRecord(
        "20260101T000001Z-00000002", 3, 4, BenchRequest(["local"], levels=[1]), [level("local", 1, 200.0, 500)]
    )
    assert run_from_json(json.loads(json.dumps(run_to_json(a)))) == a
    # A run saved before the size gained its unit in the name reads the same.
    old = json.loads(json.dumps(run_to_json(a)))
    for r in old["results"]:
        r["object_size"] = r.pop("object_size_bytes")
    assert run_from_json(old) == a
    rows = run_to_csv(a).splitlines()
    assert ",object_size_bytes," in rows[0]
    assert len(rows) == 3 and "errors_by_kind" in rows[0] and "SlowDown=1" in rows[1]
    cmp = compare_runs(a, b)
    by = {(r.backend, r.concurrency): r for r in cmp}
    assert by[("local", 1)].ops_per_s_ratio == pytest.approx(2.0)
    assert by[("local", 1)].latency_p50_ratio == pytest.approx(0.5)
    assert by[("local", 1)].latency_p99_ratio == pytest.approx(0.5)
    assert by[("ddn", 1)].b is None and by[("ddn", 1)].ops_per_s_ratio == 0.0
    # A run given whole to CompareBenchmarkRuns (a file `rag bench` saved) reads back the same.
    assert run_from_pb(run_pb(a)) == a


# --- network shaping ----------------------------------------------------------------------


def test_link_caps_bandwidth_shared_across_connections() -> None:
    link = _Link(8.0)  # 1 MB/s
    t1 = link.reserve(500_000, 10.0)
    t2 = link.reserve(500_000, 10.0)  # queued behind the first
    assert t1 == pytest.approx(10.5) and t2 == pytest.approx(11.0)
    assert _Link(0).reserve(10**9, 3.0) == 3.0


async def test_shaping_proxy_adds_rtt_and_caps_rate() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = ShapingProxy("127.0.0.1", port, Shaping(rtt_ms=40, bandwidth_mbps=16))
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        t0 = time.perf_counter()
        writer.write(b"ping")
        await writer.drain()
        assert await reader.readexactly(4) == b"ping"
        rtt = time.perf_counter() - t0
        assert 0.04 <= rtt < 0.5
        payload = os.urandom(200_000)  # 200 kB at 2 MB/s each way: >= 0.1 s
        t0 = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload
        assert time.perf_counter() - t0 >= 0.1
        writer.close()
        await writer.wait_closed()
    finally:
        await proxy.stop()
        server.close()
        await server.wait_closed()


def test_batch_get_results_are_capped_to_one_message() -> None:
    from services.storage.core import ItemResult, cap_batch_bytes

    err = ServiceError(ErrorKind.NOT_FOUND, "missing")
    rs = [
        ItemResult("a", data=b"x" * 60),
        ItemResult("b", error=err),
        ItemResult("c", data=b"y" * 50),
        ItemResult("d", data=b"z" * 30),
    ]
    out = cap_batch_bytes(rs, 100)
    assert [r.key for r in out] == ["a", "b", "c", "d"]
    assert out[0].data == b"x" * 60 and out[1].error is err and out[3].data == b"z" * 30
    assert out[2].error is not None and out[2].error.kind is ErrorKind.RESOURCE_EXHAUSTED and out[2].data == b""
