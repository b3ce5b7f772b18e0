"""TLS to a backend: verified against a CA bundle, refused without it, and the explicit
opt-out (logged as a warning). A TLS-terminating proxy with a generated CA fronts the real
SeaweedFS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

cryptography = pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from clients.base import ServiceCallError  # noqa: E402
from clients.storage import StorageClient  # noqa: E402
from ddnrag.storage.v1 import storage_service_pb2 as pb  # noqa: E402
from kernel.config import load_env  # noqa: E402
from services.storage.config import StorageConfig  # noqa: E402
from services.storage.server import create_server  # noqa: E402


def make_ca_and_cert(d: Path) -> tuple[Path, Path, Path]:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ddnrag test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = d / "ca.pem", d / "server.pem", d / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_pem, cert_pem, key_pem


@pytest.fixture
async def tls_endpoint(seaweed, tmp_path) -> AsyncIterator[tuple[str, Path]]:
    ca, cert, key = make_ca_and_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    target = int(seaweed.endpoint.rsplit(":", 1)[1])
    writers: set[asyncio.StreamWriter] = set()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.close()
            return
        writers.add(uw)
        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}", ca
    finally:
        server.close()
        for w in writers:
            w.close()
        await asyncio.sleep(0.05)


async def test_tls_with_ca_bundle_without_it_and_opt_out(seaweed, s3_bucket, tmp_path, tls_endpoint, caplog) -> None:
    endpoint, ca = tls_endpoint
    cfg = load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path / "state"),
        default_endpoint=seaweed.endpoint,
        default_bucket=s3_bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        max_retries=0,
        endpoint_allowlist=("127.0.0.1/32",),  # moto, TLS and fault proxies on loopback
    )
    app, port = await create_server(cfg)
    try:
        async with StorageClient(f"127.0.0.1:{port}", timeout_s=30) as c:

            def backend(name: str, **kw: object) -> pb.Backend:
                return pb.Backend(
                    name=name,
                    kind=pb.BACKEND_KIND_DDN_INFINIA,
                    endpoint=endpoint,
                    bucket=s3_bucket,
                    access_key_id=seaweed.access_key_id,
                    secret_access_key=seaweed.secret_access_key,
                    **kw,  # type: ignore[arg-type]
                )

            await c.put_backend(backend("infinia-ca", ca_bundle_path=str(ca)))
            rep = await c.test_connection("infinia-ca")
            assert rep.ok, rep.message
            await c.put("tls/a", b"over tls", backend="infinia-ca")
            assert (await c.get("tls/a", backend="infinia-ca"))[0] == b"over tls"
            assert (await c.batch_get(["tls/a"], backend="infinia-ca")).results[0].data == b"over tls"

            await c.put_backend(backend("infinia-noca"))
            rep = await c.test_connection("infinia-noca")
            assert not rep.ok and "CA bundle" in rep.message
            with pytest.raises(ServiceCallError) as ei:
                await c.get("tls/a", backend="infinia-noca")
            assert ei.value.code == grpc.StatusCode.UNAVAILABLE and ei.value.reason == "BACKEND_TLS_ERROR"

            # An emulated backend in front of an https store: a CONNECT tunnel, TLS still verified.
            await c.put_backend(backend("infinia-emulated", ca_bundle_path=str(ca), shaping=pb.Shaping(rtt_ms=30)))
            data, _, tr = await c.get("tls/a", backend="infinia-emulated")
            assert data == b"over tls" and tr.ttfb_ns >= 30_000_000

            with caplog.at_level(logging.WARNING):
                await c.put_backend(backend("infinia-insecure", insecure_skip_verify=True))
            assert any("TLS verification is OFF" in r.getMessage() for r in caplog.records)
            assert (await c.get("tls/a", backend="infinia-insecure"))[0] == b"over tls"
    finally:
        await app.stop(0)
