"""Optional mutual TLS between services, driven by three shared variables.

When `DDNRAG_TLS_CA_FILE`, `DDNRAG_TLS_CERT_FILE` and `DDNRAG_TLS_KEY_FILE` are all set, every
gRPC server (`build_server`) listens with TLS and requires a client certificate signed by the CA,
and every client channel (`clients.base`) presents its own certificate and verifies the server's
against the same CA. The files come from a mounted Kubernetes Secret (see k8s/components/mtls) or
from disk. None set: plaintext, as in the local stack. Some but not all set: a start-up error
naming the missing variable, so a half-configured pod never falls back to plaintext silently.

`DDNRAG_TLS_SERVER_NAME` overrides the name checked in server certificates (for addresses that
are IPs or differ from the certificate's DNS names). `DDNRAG_TLS_HEALTH_PORT` opens a second,
plaintext port that serves only the health service, because kubelet's native gRPC probes cannot
do TLS; nothing else is reachable on it.

Renewed files are picked up without a restart on both sides: a server asks `CertReloader` at each
handshake, and a client channel (`ReloadingChannel`) checks the files at most once a second and,
once they changed and form a usable set, sends its next calls over a new channel holding the new
certificate; calls already running finish on the old one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from . import grpc_patches
from .config import ConfigError, env_field, load_env
from .targets import grpc_target
from .trace_grpc import traced_channel

# Every process that makes a gRPC channel or server imports this module: a refused upload or
# stream then reads the server's status, not INTERNAL (kernel/grpc_patches.py says why).
grpc_patches.install()

P = "DDNRAG_TLS_"


@dataclass(frozen=True)
class TlsConfig:
    """Mutual TLS material shared by every service (all three files, or none)."""

    ca_file: str = env_field(P + "CA_FILE", "", "PEM CA bundle that signs every service's certificate (mTLS)")
    cert_file: str = env_field(P + "CERT_FILE", "", "PEM certificate this process presents (server and client)")
    key_file: str = env_field(P + "KEY_FILE", "", "PEM private key of CERT_FILE")
    server_name: str = env_field(P + "SERVER_NAME", "", "Name expected in server certificates (default: the host)")
    health_port: int = env_field(
        P + "HEALTH_PORT",
        0,
        "Plaintext port serving only grpc.health.v1 beside the mTLS port, for kubelet's native gRPC probes "
        "(which cannot present a certificate); 0: none",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.key_file)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(CA, certificate chain, private key) as bytes; errors name the variable, not the key."""
        out = []
        for var, path in (
            (P + "CA_FILE", self.ca_file),
            (P + "CERT_FILE", self.cert_file),
            (P + "KEY_FILE", self.key_file),
        ):
            if not path:
                raise ConfigError(f"{var} is required when mutual TLS is configured (set all of CA, CERT and KEY)")
            try:
                out.append(Path(path).read_bytes())
            except OSError as err:
                raise ConfigError(f"{var}={path}: cannot read it ({err.strerror})") from None
        return out[0], out[1], out[2]


def load_tls(environ: Mapping[str, str] | None = None) -> TlsConfig | None:
    """The TLS config from the environment, or None when mTLS is off."""
    cfg = load_env(TlsConfig, os.environ if environ is None else environ)
    if not cfg.enabled:
        return None
    cfg.read()  # fail at start, naming the variable, when a file is missing
    return cfg


def server_credentials(cfg: TlsConfig) -> grpc.ServerCredentials:
    """TLS with a required, CA-verified client certificate, reloaded from disk when renewed.

    cert-manager (or any rotation) rewrites the three files under a running pod; gRPC asks
    `CertReloader` at each new handshake, so new connections get the new certificate and CA
    without a restart, while established ones keep theirs."""
    reloader = CertReloader(cfg)
    return grpc.dynamic_ssl_server_credentials(reloader.initial(), reloader.fetch, require_client_authentication=True)


class CertReloader:
    """Watches the three files (size, mtime, inode: a Kubernetes Secret volume swaps a symlink)
    and hands gRPC a new certificate configuration once they changed and form a usable set: a
    key that matches its certificate. A half-written rotation keeps the previous set and is
    tried again at the next handshake."""

    def __init__(self, cfg: TlsConfig) -> None:
        self.cfg = cfg
        self.stamp = files_stamp(cfg)
        self.reloads = 0

    def initial(self) -> Any:
        ca, cert, key = self.cfg.read()
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> Any:
        """Called by gRPC at each handshake: None keeps the current configuration."""
        stamp = files_stamp(self.cfg)
        if stamp == self.stamp:
            return None
        material = usable_material(self.cfg)
        if material is None:
            return None
        ca, cert, key = material
        self.stamp = stamp
        self.reloads += 1
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def files_stamp(cfg: TlsConfig) -> tuple[tuple[int, int, int], ...]:
    """(size, mtime, inode) of the three files: a Kubernetes Secret volume swaps a symlink."""
    out = []
    for path in (cfg.ca_file, cfg.cert_file, cfg.key_file):
        try:
            st = os.stat(path)
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            out.append((-1, -1, -1))
    return tuple(out)


def usable_material(cfg: TlsConfig) -> tuple[bytes, bytes, bytes] | None:
    """(CA, certificate, key) when the files form a usable set (the key matches the certificate),
    None mid-rotation."""
    try:
        ca, cert, key = cfg.read()
        return (ca, cert, key) if _key_matches(cert, key) else None
    except Exception:  # noqa: BLE001 - a half-written rotation: keep the previous set
        return None


def _key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_pub = x509.load_pem_x509_certificate(cert_pem).public_key()
    key_pub = serialization.load_pem_private_key(key_pem, password=None).public_key()
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert_pub.public_bytes(*fmt) == key_pub.public_bytes(*fmt)


def channel_credentials(cfg: TlsConfig) -> grpc.ChannelCredentials:
    ca, cert, key = cfg.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def secure_options(cfg: TlsConfig) -> list[tuple[str, Any]]:
    return [("grpc.ssl_target_name_override", cfg.server_name)] if cfg.server_name else []


def aio_channel(
    address: str, options: list[tuple[str, Any]], environ: Mapping[str, str] | None = None
) -> grpc.aio.Channel:
    """A grpc.aio channel to `address` (one address or a comma-separated list of replicas, see
    targets.py): mutual TLS when configured, plaintext otherwise."""
    address = grpc_target(address)
    cfg = load_tls(environ)
    if cfg is None:  # traced_channel: traceparent on every call (kernel/trace_grpc.py)
        return traced_channel(grpc.aio.insecure_channel(address, options=options))
    opts = [*options, *secure_options(cfg)]
    return traced_channel(ReloadingChannel(cfg, lambda creds: grpc.aio.secure_channel(address, creds, options=opts)))


class ReloadingChannel(grpc.aio.Channel):
    """A mutual-TLS client channel that follows renewed certificate files.

    gRPC Python has no dynamic channel credentials, so this holds one real channel and, when the
    files changed (checked at most every `check_every_s`, three stat calls) and form a usable set,
    opens a new one with the new material for the calls that follow. Multi-callables (what stubs
    hold) pick the current channel at each call; calls already running finish on the old channel,
    which is closed with this one."""

    def __init__(
        self,
        cfg: TlsConfig,
        factory: Callable[[grpc.ChannelCredentials], grpc.aio.Channel],
        check_every_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.factory = factory
        self.check_every_s = check_every_s
        self.reloads = 0
        self._stamp = files_stamp(cfg)
        self._checked = time.monotonic()
        self._channel = factory(channel_credentials(cfg))
        self._retired: list[grpc.aio.Channel] = []

    def current(self) -> grpc.aio.Channel:
        """The channel for the next call, renewed first when the files changed."""
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            stamp = files_stamp(self.cfg)
            if stamp != self._stamp:
                material = usable_material(self.cfg)
                if material is not None:
                    ca, cert, key = material
                    self._stamp = stamp
                    self._retired.append(self._channel)
                    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
                    self._channel = self.factory(creds)
                    self.reloads += 1
        return self._channel

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Following(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self.current().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        for ch in [*self._retired, self._channel]:
            await ch.close(grace)
        self._retired.clear()

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Following:
    """A multi-callable bound to a ReloadingChannel: each call goes to its current channel."""

    def __init__(self, owner: ReloadingChannel, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.owner, self.kind, self.args, self.kwargs = owner, kind, args, kwargs
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self.owner.current()
        if self._bound is None or self._bound[0] is not channel:
            self._bound = (channel, getattr(channel, self.kind)(*self.args, **self.kwargs))
        return self._bound[1](*args, **kwargs)
