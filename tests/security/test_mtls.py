"""Optional mutual TLS between services (kernel/tls.py), with certificates generated
here: a server built by `build_server` accepts only clients holding a certificate from its CA,
and `clients.base` channels present theirs when the shared DDNRAG_TLS_* variables are set."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.base import BaseClient
from kernel.config import ConfigError
from kernel.server import GrpcApp, build_server
from kernel.tls import load_tls
from tests.security.certs import TestCA

CHECK = health_pb2.HealthCheckRequest()


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
async def tls_server(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[GrpcApp]:
    srv = ca.issue("server")
    monkeypatch.setenv("DDNRAG_TLS_CA_FILE", str(ca.ca_file))
    monkeypatch.setenv("DDNRAG_TLS_CERT_FILE", str(srv.cert))
    monkeypatch.setenv("DDNRAG_TLS_KEY_FILE", str(srv.key))
    app = await build_server("tlstest", [], "127.0.0.1", 0)
    try:
        yield app
    finally:
        await app.stop(0)


async def _check(channel: grpc.aio.Channel) -> int:
    async with channel:
        return (await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=5)).status


async def test_client_with_a_certificate_from_the_ca_is_served(
    tls_server: GrpcApp, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = ca.issue("retriever")
    monkeypatch.setenv("DDNRAG_TLS_CERT_FILE", str(cli.cert))
    monkeypatch.setenv("DDNRAG_TLS_KEY_FILE", str(cli.key))
    client = BaseClient(f"127.0.0.1:{tls_server.port}")  # picks up the shared variables
    try:
        resp = await health_pb2_grpc.HealthStub(client.channel).Check(CHECK, timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await client.close()


async def test_plaintext_client_is_refused(tls_server: GrpcApp) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _check(grpc.aio.insecure_channel(f"127.0.0.1:{tls_server.port}"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_without_a_certificate_is_refused(tls_server: GrpcApp, ca: TestCA) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=ca.ca_file.read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _check(grpc.aio.secure_channel(f"127.0.0.1:{tls_server.port}", creds))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificate_from_another_ca_is_refused(tls_server: GrpcApp, ca: TestCA, tmp_path: Path) -> None:
    rogue = TestCA(tmp_path / "rogue", name="rogue-ca").issue("intruder")
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.ca_file.read_bytes(),
        private_key=rogue.key.read_bytes(),
        certificate_chain=rogue.cert.read_bytes(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _check(grpc.aio.secure_channel(f"127.0.0.1:{tls_server.port}", creds))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_server_not_signed_by_the_ca_is_not_trusted(ca: TestCA, tmp_path: Path) -> None:
    """The client verifies the server too: a server with a rogue certificate is refused."""
    rogue = TestCA(tmp_path / "rogue", name="rogue-ca").issue("server")
    server = grpc.aio.server()
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(rogue.key.read_bytes(), rogue.cert.read_bytes())])
    )
    await server.start()
    try:
        cli = ca.issue("client")
        env = {
            "DDNRAG_TLS_CA_FILE": str(ca.ca_file),
            "DDNRAG_TLS_CERT_FILE": str(cli.cert),
            "DDNRAG_TLS_KEY_FILE": str(cli.key),
        }
        from kernel.tls import aio_channel

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _check(aio_channel(f"127.0.0.1:{port}", [], env))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_half_configured_tls_fails_at_start_naming_the_variable(ca: TestCA) -> None:
    assert load_tls({}) is None
    with pytest.raises(ConfigError, match="DDNRAG_TLS_KEY_FILE"):
        load_tls({"DDNRAG_TLS_CA_FILE": str(ca.ca_file), "DDNRAG_TLS_CERT_FILE": str(ca.ca_file)})
    with pytest.raises(ConfigError, match="DDNRAG_TLS_CERT_FILE=/nonexistent"):
        load_tls(
            {"DDNRAG_TLS_CA_FILE": str(ca.ca_file), "DDNRAG_TLS_CERT_FILE": "/nonexistent", "DDNRAG_TLS_KEY_FILE": "/x"}
        )


async def test_plaintext_health_port_serves_only_health(ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDNRAG_TLS_HEALTH_PORT: kubelet's probes get health in plaintext, and nothing else."""
    import socket

    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with socket.socket() as s:  # the health port is configured, not 0, so find one free now
        s.bind(("127.0.0.1", 0))
        health_port = s.getsockname()[1]
    srv = ca.issue("server")
    monkeypatch.setenv("DDNRAG_TLS_CA_FILE", str(ca.ca_file))
    monkeypatch.setenv("DDNRAG_TLS_CERT_FILE", str(srv.cert))
    monkeypatch.setenv("DDNRAG_TLS_KEY_FILE", str(srv.key))
    monkeypatch.setenv("DDNRAG_TLS_HEALTH_PORT", str(health_port))
    app = await build_server("tlstest", [], "127.0.0.1", 0)
    try:
        assert (
            await _check(grpc.aio.insecure_channel(f"127.0.0.1:{health_port}"))
            == health_pb2.HealthCheckResponse.SERVING
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as ch:
            call = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        await app.set_serving(False)
        assert (
            await _check(grpc.aio.insecure_channel(f"127.0.0.1:{health_port}"))
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
    finally:
        await app.stop(0)


def _replace(src: Path, dst: Path) -> None:
    """Writes `dst` atomically, as a Kubernetes Secret volume (or cert-manager's csi driver) does."""
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def _install(live: Path, monkeypatch: pytest.MonkeyPatch, ca_file: Path, cert: Path, key: Path) -> dict[str, Path]:
    """Copies a CA, a certificate and its key into `live`, as a mounted Secret holds them, and
    points the DDNRAG_TLS_* variables at the copies."""
    live.mkdir()
    files = {"ca": live / "ca.pem", "cert": live / "tls.crt", "key": live / "tls.key"}
    for name, src in (("ca", ca_file), ("cert", cert), ("key", key)):
        _replace(src, files[name])
    monkeypatch.setenv("DDNRAG_TLS_CA_FILE", str(files["ca"]))
    monkeypatch.setenv("DDNRAG_TLS_CERT_FILE", str(files["cert"]))
    monkeypatch.setenv("DDNRAG_TLS_KEY_FILE", str(files["key"]))
    return files


async def test_renewed_certificates_are_used_without_a_restart(
    ca: TestCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cert-manager rotates the CA and the server's certificate under the running service: new
    connections get the new ones (clients of the new CA are served), and clients holding only the
    old CA's certificate are refused -- no restart in between."""
    srv = ca.issue("server")
    files = _install(tmp_path / "live", monkeypatch, ca.ca_file, srv.cert, srv.key)
    app = await build_server("tlsrotate", [], "127.0.0.1", 0)
    new_ca = TestCA(tmp_path / "new", name="ddnrag-test-ca-2")

    def client_env(authority: TestCA) -> dict[str, str]:
        cli = authority.issue("retriever")
        return {
            "DDNRAG_TLS_CA_FILE": str(authority.ca_file),
            "DDNRAG_TLS_CERT_FILE": str(cli.cert),
            "DDNRAG_TLS_KEY_FILE": str(cli.key),
        }

    from kernel.tls import aio_channel

    addr = f"127.0.0.1:{app.port}"
    try:
        assert await _check(aio_channel(addr, [], client_env(ca))) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await _check(aio_channel(addr, [], client_env(new_ca)))
        # A half-done rotation (a new certificate beside the old key) keeps the old set in use.
        renewed = new_ca.issue("server")
        _replace(renewed.cert, files["cert"])
        assert await _check(aio_channel(addr, [], client_env(ca))) == health_pb2.HealthCheckResponse.SERVING
        _replace(renewed.key, files["key"])
        _replace(new_ca.ca_file, files["ca"])
        assert await _check(aio_channel(addr, [], client_env(new_ca))) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError):
            await _check(aio_channel(addr, [], client_env(ca)))
    finally:
        await app.stop(0)


async def test_a_client_picks_up_its_renewed_certificate_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cert-manager renews a client's certificate (here under a new CA) while the client runs,
    and its peer comes back trusting only the new CA: the client's next call presents the renewed
    certificate. Before, a client kept the certificate it was created with until restarted."""
    old_ca, new_ca = TestCA(tmp_path / "old"), TestCA(tmp_path / "new", name="ddnrag-test-ca-2")

    def serve_with(authority: TestCA, name: str, port: int) -> Any:
        srv = authority.issue("server")
        monkeypatch.setenv("DDNRAG_TLS_CA_FILE", str(authority.ca_file))
        monkeypatch.setenv("DDNRAG_TLS_CERT_FILE", str(srv.cert))
        monkeypatch.setenv("DDNRAG_TLS_KEY_FILE", str(srv.key))
        return build_server(name, [], "127.0.0.1", port)

    app = await serve_with(old_ca, "tls-old", 0)
    cli = old_ca.issue("retriever")
    files = _install(tmp_path / "client", monkeypatch, old_ca.ca_file, cli.cert, cli.key)
    client = BaseClient(f"127.0.0.1:{app.port}")
    client.channel.check_every_s = 0  # type: ignore[attr-defined] - look at the files at every call
    stub = health_pb2_grpc.HealthStub(client.channel)
    try:
        assert (await stub.Check(CHECK, timeout=5)).status == health_pb2.HealthCheckResponse.SERVING
        port = app.port
        await app.stop(0)
        app = await serve_with(new_ca, "tls-new", port)  # the peer restarts with the new CA only
        renewed = new_ca.issue("retriever")
        _replace(renewed.cert, files["cert"])  # half a rotation: keeps the old set
        client.channel.current()  # type: ignore[attr-defined] - looks at the files now
        assert client.channel.reloads == 0  # type: ignore[attr-defined]
        _replace(renewed.key, files["key"])
        _replace(new_ca.ca_file, files["ca"])
        resp = await client.unary(stub.Check, CHECK, timeout=30)  # the stub made before the renewal
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert client.channel.reloads == 1  # type: ignore[attr-defined]
    finally:
        await client.close()
        await app.stop(0)
