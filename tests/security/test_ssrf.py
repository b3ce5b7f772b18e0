"""SSRF: a backend added at run time may not point the storage service at loopback, link-local
(cloud metadata), private or otherwise internal addresses, however they are written, nor at a
name that rebinds to one later; over HTTP it may not reach the storage pod's own credentials or
TLS trust either. The count of endpoints accepted is `ssrf_accepted`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as spb
from kernel.config import load_env
from kernel.errors import ServiceError
from services.storage.config import StorageConfig
from services.storage.core import StorageCore
from services.storage.endpoint_policy import EndpointPolicy
from services.storage.model import BackendSpec, Kind
from services.storage.server import create_server
from testkit.faults.harness import record
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app

__all__ = ["doubles"]

PUBLIC = "93.184.215.14"
# name -> what the fake resolver returns for it
DNS = {
    "public.example": [PUBLIC],
    "metadata.example": ["169.254.169.254"],
    "internal.example": ["10.0.0.7"],
    "mixed.example": [PUBLIC, "127.0.0.1"],  # one bad address is enough
    "mapped.example": ["::ffff:169.254.169.254"],
}

REFUSED = [
    "http://127.0.0.1:9000",
    "http://127.8.9.1",
    "http://localhost:8333",
    "http://[::1]:9000",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.example",
    "http://10.0.0.1",
    "http://172.16.5.4:9000",
    "http://192.168.1.10",
    "http://100.64.0.1",  # CGNAT
    "http://0.0.0.0:9000",
    "http://[fd00::1]",  # IPv6 unique-local
    "http://[fe80::1]",  # IPv6 link-local
    "http://[::ffff:127.0.0.1]:9000",  # IPv6-mapped IPv4
    "http://[::ffff:a9fe:a9fe]",  # the metadata address, mapped and in hex
    "http://[64:ff9b::a9fe:a9fe]",  # NAT64
    "http://[2002:7f00:1::]",  # 6to4 around 127.0.0.1
    "http://2130706433:9000",  # 127.0.0.1 as one decimal number
    "http://0x7f000001",  # ... in hex
    "http://0177.0.0.1",  # ... in octal
    "http://127.1",  # ... in short form
    "http://2852039166",  # 169.254.169.254 as one number
    "http://internal.example",
    "http://mixed.example",
    "http://mapped.example",
    "http://does-not-resolve.example",
    "ftp://public.example",
]
ALLOWED = ["https://public.example", f"http://{PUBLIC}:9000", "https://s3.us-east-1.amazonaws.com", ""]


def fake_resolver(host: str, port: int) -> list[str]:
    if host == "localhost":
        return ["127.0.0.1", "::1"]
    if host not in DNS and not host.endswith("amazonaws.com"):
        raise OSError(-2, "Name or service not known")
    return DNS.get(host, [PUBLIC])


def _accepted(policy: EndpointPolicy, endpoint: str) -> bool:
    try:
        policy.check(endpoint)
    except ServiceError as err:
        assert err.reason == "ENDPOINT_NOT_ALLOWED" and err.message
        return False
    return True


def test_internal_endpoints_are_refused() -> None:
    policy = EndpointPolicy.build((), "http://127.0.0.1:8333", resolver=fake_resolver)
    accepted = [e for e in REFUSED if _accepted(policy, e)]
    record("ssrf_policy", {"ssrf_accepted": len(accepted), "ssrf_endpoints_tried": len(REFUSED)})
    assert not accepted, accepted
    assert all(_accepted(policy, e) for e in ALLOWED)


def test_the_operator_allowlist_and_the_default_backend() -> None:
    policy = EndpointPolicy.build(
        ("10.20.0.0/16", "infinia.lab", "127.0.0.1:9100"), "http://127.0.0.1:8333", resolver=fake_resolver
    )
    assert _accepted(policy, "http://127.0.0.1:8333")  # the default backend (the local SeaweedFS)
    assert _accepted(policy, "http://127.0.0.1:9100") and not _accepted(policy, "http://127.0.0.1:9101")
    assert _accepted(policy, "http://10.20.3.4") and not _accepted(policy, "http://10.21.0.1")
    assert _accepted(policy, "http://infinia.lab:9000")
    assert not _accepted(policy, "http://[::ffff:10.21.0.1]")
    assert _accepted(policy, "http://[::ffff:10.20.0.1]")


class Rebinding:
    """A name that resolves to a public address first and to the metadata address afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [PUBLIC] if self.calls == 1 else ["169.254.169.254"]


async def test_dns_rebinding_is_caught_when_the_client_is_built(seaweed, s3_bucket, tmp_path: Path) -> None:
    core = StorageCore(_cfg(seaweed, s3_bucket, tmp_path))
    try:
        core.backends.endpoints = EndpointPolicy.build((), seaweed.endpoint, resolver=Rebinding())
        spec = BackendSpec(name="rebinder", kind=Kind.S3_COMPATIBLE, endpoint="http://rebind.example", bucket="b")
        await core.backends.put(spec, None)  # resolved public: accepted for now
        with pytest.raises(ServiceError) as err:
            await core.backends.store("rebinder")  # resolved again before any connection
        assert err.value.reason == "ENDPOINT_NOT_ALLOWED" and "169.254.169.254" in err.value.message
        record("ssrf_rebinding", {"ssrf_accepted": 0})
    finally:
        await core.close()


def _cfg(seaweed, bucket: str, tmp_path: Path) -> StorageConfig:
    return load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "state"),
        default_endpoint=seaweed.endpoint,
        default_bucket=bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
    )


@pytest.fixture
async def storage(seaweed, s3_bucket, tmp_path: Path) -> Iterator[StorageClient]:
    app, port = await create_server(_cfg(seaweed, s3_bucket, tmp_path))
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=30)
    try:
        yield client
    finally:
        await client.close()
        await app.stop(0)


async def test_the_storage_service_refuses_internal_endpoints_over_grpc(storage: StorageClient, seaweed) -> None:
    accepted = []
    for endpoint in ("http://127.0.0.1:1", "http://169.254.169.254", "http://[::ffff:127.0.0.1]:8333", "http://0x7f.1"):
        try:
            await storage.put_backend(
                spb.Backend(name="probe", kind=spb.BACKEND_KIND_S3_COMPATIBLE, endpoint=endpoint, bucket="b")
            )
            accepted.append(endpoint)
        except ServiceCallError as err:
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT and "ENDPOINT_NOT_ALLOWED" in (err.reason or "")
    record("ssrf_grpc", {"ssrf_accepted": len(accepted)})
    assert not accepted
    names = [b.name for b in (await storage.list_backends()).backends]
    assert "probe" not in names  # nothing half-saved
    # The operator's own SeaweedFS (the default backend's endpoint) stays usable for more buckets.
    await storage.put_backend(
        spb.Backend(name="second", kind=spb.BACKEND_KIND_S3_COMPATIBLE, endpoint=seaweed.endpoint, bucket="another")
    )


async def test_http_refuses_operator_only_fields(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    base = {"name": "x", "endpoint": "https://s3.example.com", "bucket": "b"}
    for extra in (
        {"credentials_env_prefix": "DDNRAG_STORAGE_DEFAULT"},
        {"credentials_file": "/var/run/secrets/ddnrag/s3"},
        {"ca_bundle_path": "/etc/ssl/evil.pem"},
        {"insecure_skip_verify": True},
    ):
        r = await client.post("/api/config/backends", json={**base, **extra})
        assert r.status == 400 and (await r.json())["error"]["reason"] == "OPERATOR_ONLY_FIELD", extra
    r = await client.post("/api/config/backends", json={**base, "kind": "aws_s3", "endpoint": ""})
    assert r.status == 400 and (await r.json())["error"]["reason"] == "CREDENTIALS_REQUIRED"
    ok = {**base, "kind": "aws_s3", "access_key_id": "AKIA", "secret_access_key": "s"}
    assert (await client.post("/api/config/backends", json=ok)).status == 201


async def test_pointing_a_backend_elsewhere_is_logged(aiohttp_client, doubles: Doubles, caplog) -> None:
    import logging

    client = await aiohttp_client(make_app(doubles))
    body = {"name": "s3", "endpoint": "https://s3.example.com", "bucket": "b"}
    assert (await client.post("/api/config/backends", json=body)).status == 201
    with caplog.at_level(logging.WARNING, logger="gateway.routes.backends"):
        moved = {**body, "endpoint": "https://elsewhere.example.net"}
        assert (await client.post("/api/config/backends", json=moved)).status == 201
    changed = [r for r in caplog.records if r.getMessage() == "backend endpoint changed"]
    assert changed and changed[0].__dict__["to"] == "https://elsewhere.example.net"
    assert changed[0].__dict__["from"] == "https://s3.example.com"
