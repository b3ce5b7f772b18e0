"""Named backends at run time against the real SeaweedFS: add, test, use, persist across a
restart, remove; credentials from inline/env/file/Secret dir never leave; the emulated backend."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server


def cfg_for(seaweed, bucket: str, state: Path) -> StorageConfig:
    return load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(state),
        default_endpoint=seaweed.endpoint,
        default_bucket=bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        max_retries=1,
        retry_base_ms=5.0,
        endpoint_allowlist=("127.0.0.1/32",),  # moto, TLS and fault proxies on loopback
    )


class Running:
    def __init__(self, cfg: StorageConfig) -> None:
        self.cfg = cfg

    async def __aenter__(self) -> StorageClient:
        self.app, port = await create_server(self.cfg)
        self.client = StorageClient(f"127.0.0.1:{port}", timeout_s=30)
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await self.app.stop(0)


@pytest.fixture
async def storage(seaweed, s3_bucket, tmp_path) -> AsyncIterator[StorageClient]:
    async with Running(cfg_for(seaweed, s3_bucket, tmp_path / "state")) as c:
        yield c


def s3_backend(seaweed, bucket: str, name: str, **kw: object) -> pb.Backend:
    return pb.Backend(
        name=name,
        kind=pb.BACKEND_KIND_S3_COMPATIBLE,
        endpoint=seaweed.endpoint,
        bucket=bucket,
        **kw,  # type: ignore[arg-type]
    )


async def test_inline_backend_persists_secret_apart_and_survives_restart(seaweed, s3_bucket, tmp_path) -> None:
    state = tmp_path / "state"
    cfg = cfg_for(seaweed, s3_bucket, state)
    b = s3_backend(
        seaweed, s3_bucket, "second", access_key_id=seaweed.access_key_id, secret_access_key=seaweed.secret_access_key
    )
    async with Running(cfg) as c:
        saved = (await c.put_backend(b)).backend
        assert saved.has_credentials and saved.secret_access_key == "" and saved.access_key_id == ""
        await c.put("x/1", b"via default")
        data, _, _ = await c.get("x/1", backend="second")
        assert data == b"via default"
    # The registry is one object in the default backend, its secret sealed (AES-256-GCM) with the
    # data key generated 0600 in the state directory.
    s3 = seaweed.boto3_client()
    plain = s3.get_object(Bucket=s3_bucket, Key=cfg.registry_key)["Body"].read().decode()
    assert seaweed.secret_access_key not in plain and seaweed.access_key_id not in plain
    doc = json.loads(plain)
    assert doc["backends"][0]["name"] == "second" and doc["sealed_secrets"]["second"]["alg"] == "AES-256-GCM"
    assert stat.S_IMODE((state / "registry.key").stat().st_mode) == 0o600
    assert not (state / "backends.json").exists() and not (state / "secrets.json").exists()
    async with Running(cfg) as c:
        names = [x.name for x in (await c.list_backends()).backends]
        assert names == ["local", "second"]
        assert (await c.get("x/1", backend="second"))[0] == b"via default"
        resp = await c.list_backends()
        assert seaweed.secret_access_key not in str(resp)
        await c.remove_backend("second")
        with pytest.raises(ServiceCallError) as ei:
            await c.get("x/1", backend="second")
        assert ei.value.code == grpc.StatusCode.NOT_FOUND
    doc = json.loads(s3.get_object(Bucket=s3_bucket, Key=cfg.registry_key)["Body"].read())
    assert doc["backends"] == [] and doc["sealed_secrets"] == {}


async def test_credentials_from_env_prefix_file_and_secret_dir(
    storage, seaweed, s3_bucket, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MYSTORE_ACCESS_KEY_ID", seaweed.access_key_id)
    monkeypatch.setenv("MYSTORE_SECRET_ACCESS_KEY", seaweed.secret_access_key)
    f = tmp_path / "creds.json"
    f.write_text(json.dumps({"access_key_id": seaweed.access_key_id, "secret_access_key": seaweed.secret_access_key}))
    d = tmp_path / "secret-mount"
    d.mkdir()
    (d / "AWS_ACCESS_KEY_ID").write_text(seaweed.access_key_id + "\n")
    (d / "AWS_SECRET_ACCESS_KEY").write_text(seaweed.secret_access_key + "\n")
    await storage.put("k/1", b"one")
    for name, extra in (
        ("by-env", {"credentials_env_prefix": "MYSTORE"}),
        ("by-file", {"credentials_file": str(f)}),
        ("by-dir", {"credentials_file": str(d)}),
    ):
        saved = (await storage.put_backend(s3_backend(seaweed, s3_bucket, name, **extra))).backend
        assert saved.has_credentials, name
        assert (await storage.get("k/1", backend=name))[0] == b"one"
        rep = await storage.test_connection(name)
        assert rep.ok and rep.can_read and rep.can_write and rep.head_bucket_ns > 0, rep.message


async def test_wrong_inline_credentials_fail_test_and_calls_without_leaking(storage, seaweed, s3_bucket) -> None:
    secret = "not-the-secret-0123456789"
    b = s3_backend(seaweed, s3_bucket, "wrong", access_key_id=seaweed.access_key_id, secret_access_key=secret)
    await storage.put_backend(b)
    rep = await storage.test_connection("wrong")
    assert not rep.ok and "wrong" in rep.message and secret not in rep.message
    with pytest.raises(ServiceCallError) as ei:
        await storage.put("a/b", b"x", backend="wrong")
    assert ei.value.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
    assert "wrong" in ei.value.message and secret not in str(ei.value) and secret not in str(ei.value.metadata)


async def test_test_connection_default_and_unknown(storage) -> None:
    rep = await storage.test_connection()
    assert rep.ok and rep.can_write and rep.can_read and rep.head_bucket_ns > 0
    assert [o async for o in storage.list_all("_ddnrag/probe/")] == []  # the probe is cleaned up
    with pytest.raises(ServiceCallError) as ei:
        await storage.test_connection("nosuch")
    assert ei.value.code == grpc.StatusCode.NOT_FOUND and "nosuch" in ei.value.message


@pytest.mark.parametrize(
    ("backend", "reason"),
    [
        (
            pb.Backend(name="Bad Name", kind=pb.BACKEND_KIND_S3_COMPATIBLE, endpoint="http://x:1", bucket="b"),
            "INVALID_BACKEND_NAME",
        ),
        (pb.Backend(name="nokind", endpoint="http://x:1", bucket="b"), "INVALID_BACKEND"),
        (pb.Backend(name="nobucket", kind=pb.BACKEND_KIND_DDN_INFINIA, endpoint="http://x:1"), "INVALID_BACKEND"),
        (pb.Backend(name="noendpoint", kind=pb.BACKEND_KIND_DDN_INFINIA, bucket="b"), "INVALID_BACKEND"),
        (
            pb.Backend(name="halfcreds", kind=pb.BACKEND_KIND_AWS_S3, bucket="b", access_key_id="AKIA"),
            "INVALID_BACKEND",
        ),
        (
            pb.Backend(
                name="fast",
                kind=pb.BACKEND_KIND_S3_COMPATIBLE,
                endpoint="http://x:1",
                bucket="b",
                shaping=pb.Shaping(rtt_ms=20),
            ),
            "EMULATED_NAME",
        ),
    ],
)
async def test_bad_backends_are_rejected_and_not_saved(storage, backend: pb.Backend, reason: str) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await storage.put_backend(backend)
    assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT and ei.value.reason == reason
    assert [b.name for b in (await storage.list_backends()).backends] == ["local"]


async def test_default_backend_cannot_be_replaced_or_removed(storage, seaweed, s3_bucket) -> None:
    with pytest.raises(ServiceCallError) as ei:
        await storage.put_backend(s3_backend(seaweed, s3_bucket, "local"))
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(ServiceCallError) as ei:
        await storage.remove_backend("local")
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_allowed_prefixes_are_enforced(storage, seaweed, s3_bucket) -> None:
    await storage.put_backend(
        s3_backend(
            seaweed,
            s3_bucket,
            "scoped",
            credentials_env_prefix="",
            allowed_prefixes=["chunks/"],
            access_key_id=seaweed.access_key_id,
            secret_access_key=seaweed.secret_access_key,
        )
    )
    await storage.put("chunks/a", b"a", backend="scoped")
    with pytest.raises(ServiceCallError) as ei:
        await storage.put("docs/a", b"a", backend="scoped")
    assert ei.value.code == grpc.StatusCode.PERMISSION_DENIED and ei.value.reason == "PREFIX_NOT_ALLOWED"


async def test_emulated_backend_adds_rtt_and_says_so(storage, seaweed, s3_bucket) -> None:
    b = s3_backend(
        seaweed,
        s3_bucket,
        "aws-emulated",
        shaping=pb.Shaping(rtt_ms=40, jitter_ms=5, bandwidth_mbps=80),
        access_key_id=seaweed.access_key_id,
        secret_access_key=seaweed.secret_access_key,
    )
    saved = (await storage.put_backend(b)).backend
    assert saved.emulated and saved.shaping.rtt_ms == 40
    await storage.put("e/small", b"s" * 1024)
    await storage.put("e/big", b"b" * 1_000_000)
    _, _, fast = await storage.get("e/small")
    _, _, slow = await storage.get("e/small", backend="aws-emulated")
    assert slow.ttfb_ns >= 40_000_000 > fast.ttfb_ns
    # 1 MB at 80 Mbit/s takes at least 100 ms on the wire.
    t0 = time.perf_counter()
    data, _, big = await storage.get("e/big", backend="aws-emulated")
    assert data == b"b" * 1_000_000
    assert big.total_ns >= 100_000_000 and time.perf_counter() - t0 >= 0.1
    listed = {x.name: x for x in (await storage.list_backends()).backends}
    assert listed["aws-emulated"].emulated and not listed["local"].emulated


async def test_aws_s3_kind_against_moto(storage) -> None:
    """The aws_s3 kind (CRC checksums as AWS expects them) against moto's S3 server."""
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="AKIDMOTO",
            aws_secret_access_key="moto-secret",
            region_name="us-east-1",
        ).create_bucket(Bucket="awsbucket")
        await storage.put_backend(
            pb.Backend(
                name="aws",
                kind=pb.BACKEND_KIND_AWS_S3,
                endpoint=endpoint,
                region="us-east-1",
                bucket="awsbucket",
                addressing_style=pb.ADDRESSING_STYLE_PATH,
                access_key_id="AKIDMOTO",
                secret_access_key="moto-secret",
            )
        )
        rep = await storage.test_connection("aws")
        assert rep.ok, rep.message
        await storage.put("a/b", b"to aws", backend="aws", metadata={"k": "v"})
        data, info, _ = await storage.get("a/b", backend="aws")
        assert data == b"to aws" and info.metadata["k"] == "v"
        assert [o.key async for o in storage.list_all("a/", backend="aws")] == ["a/b"]
        with pytest.raises(ServiceCallError) as ei:
            await storage.get("a/missing", backend="aws")
        assert ei.value.code == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()
