"""Plain-Python types of the storage service: backends, objects, measured transfers.

No protobuf here; the servicer converts. `BackendSpec` holds no secret values, only where the
secrets come from; `Credentials` is resolved when a client is built and never leaves the process.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from kernel.errors import invalid
from kernel.ids import valid_name


class Kind(enum.Enum):
    """What kind of store a backend is."""

    DDN_INFINIA = "ddn_infinia"
    AWS_S3 = "aws_s3"
    S3_COMPATIBLE = "s3_compatible"


@dataclass(frozen=True)
class Shaping:
    """Network shaping of an emulated backend: added RTT, jitter (uniform 0..jitter) and a cap."""

    rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_mbps: float = 0.0

    @property
    def active(self) -> bool:
        return self.rtt_ms > 0 or self.jitter_ms > 0 or self.bandwidth_mbps > 0

    def label(self) -> str:
        """For example "emulated: RTT 20 ms, jitter 5 ms, 100 Mbit/s"."""
        parts = [f"RTT {self.rtt_ms:g} ms", f"jitter {self.jitter_ms:g} ms"]
        parts.append(f"{self.bandwidth_mbps:g} Mbit/s" if self.bandwidth_mbps > 0 else "uncapped")
        return "emulated: " + ", ".join(parts)


@dataclass(frozen=True)
class Credentials:
    """Resolved S3 credentials. `repr` hides the secret so a stray log line cannot leak it."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)


@dataclass(frozen=True)
class BackendSpec:
    """One configured object store, without secret values.

    `inline_credentials` says the secrets were given through the API and live in the 0600
    secrets file of the state directory; `credentials_env_prefix` and `credentials_file` name
    other sources. With none set, AWS S3 uses boto3's default chain (instance role, env).
    """

    name: str
    kind: Kind
    endpoint: str = ""
    region: str = "us-east-1"
    bucket: str = ""
    addressing_style: str = ""  # "", "path" or "virtual"
    insecure_skip_verify: bool = False
    ca_bundle_path: str = ""
    credentials_env_prefix: str = ""
    credentials_file: str = ""
    inline_credentials: bool = False
    shaping: Shaping = field(default_factory=Shaping)
    allowed_prefixes: tuple[str, ...] = ()
    is_default: bool = False

    @property
    def emulated(self) -> bool:
        return self.shaping.active

    @property
    def effective_addressing(self) -> str:
        if self.addressing_style:
            return self.addressing_style
        return "virtual" if self.kind is Kind.AWS_S3 else "path"

    def label(self) -> str:
        return self.shaping.label() if self.emulated else self.kind.value

    def validate(self) -> None:
        if not valid_name(self.name):
            raise invalid(
                f"backend name {self.name!r} is not valid: use 1-63 characters [a-z0-9_-], starting with a letter "
                "or digit",
                reason="INVALID_BACKEND_NAME",
            )
        if not self.bucket:
            raise invalid(f"backend {self.name!r} needs a bucket", reason="INVALID_BACKEND")
        if self.kind is not Kind.AWS_S3 and not self.endpoint:
            raise invalid(
                f"backend {self.name!r} ({self.kind.value}) needs an endpoint URL such as https://host:port",
                reason="INVALID_BACKEND",
            )
        if self.endpoint and not re.match(r"^https?://[^/\s]+/?$", self.endpoint):
            raise invalid(
                f"backend {self.name!r}: endpoint {self.endpoint!r} must be http(s)://host[:port] with no path",
                reason="INVALID_BACKEND",
            )
        if self.endpoint and not _endpoint_parses(self.endpoint):
            raise invalid(
                f"backend {self.name!r}: endpoint {self.endpoint!r} is not a valid URL (host or port)",
                reason="INVALID_BACKEND",
            )
        for prefix in self.allowed_prefixes:
            if not prefix or prefix.startswith("/") or ".." in prefix.split("/") or "\x00" in prefix:
                raise invalid(
                    f"backend {self.name!r}: allowed prefix {prefix[:80]!r} must be a relative key prefix "
                    "such as 'docs/' (not empty, no leading '/', no '..')",
                    reason="INVALID_BACKEND",
                )
        if self.addressing_style not in ("", "path", "virtual"):
            raise invalid(f"backend {self.name!r}: unknown addressing style", reason="INVALID_BACKEND")
        s = self.shaping
        if min(s.rtt_ms, s.jitter_ms, s.bandwidth_mbps) < 0 or s.rtt_ms > 10_000 or s.jitter_ms > 10_000:
            raise invalid(
                f"backend {self.name!r}: shaping needs 0 <= rtt_ms, jitter_ms <= 10000 and bandwidth_mbps >= 0",
                reason="INVALID_BACKEND",
            )
        if self.emulated and "emulated" not in self.name:
            raise invalid(
                f"backend {self.name!r} has network shaping, so its name must say so: include 'emulated' "
                f"(for example {self.name + '-emulated'!r})",
                reason="EMULATED_NAME",
            )
        sources = sum(bool(x) for x in (self.inline_credentials, self.credentials_env_prefix, self.credentials_file))
        if sources > 1:
            raise invalid(
                f"backend {self.name!r}: give credentials one way only (inline, env prefix or file)",
                reason="INVALID_BACKEND",
            )

    def with_(self, **changes: object) -> BackendSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class Transfer:
    """Measured timings of one object operation: request sent -> first body byte (or response
    headers for operations with no body), -> last byte; bytes moved; retries made."""

    ttfb_ns: int = 0
    total_ns: int = 0
    bytes: int = 0
    retries: int = 0


@dataclass
class ObjectMeta:
    key: str
    size_bytes: int = 0
    etag: str = ""
    content_type: str = ""
    last_modified_unix_ns: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


def _endpoint_parses(endpoint: str) -> bool:
    """True when the URL's host and port parse (the regex above lets "http://[::1" through, which
    boto3 refuses only at the first request)."""
    try:
        parts = urlsplit(endpoint)
        _ = parts.port
    except ValueError:
        return False
    return bool(parts.hostname)
