"""The boto3 S3 client of one backend: its settings (pool, timeouts, retries counted by
`s3.S3Store`, not botocore), signing, addressing style, checksums and TLS verification."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import boto3
import urllib3
from botocore import UNSIGNED
from botocore.config import Config

from .model import BackendSpec, Credentials, Kind


@dataclass(frozen=True)
class ClientSettings:
    max_pool_connections: int = 64
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 30.0
    max_retries: int = 4
    retry_base_ms: float = 50.0


def build_client(
    spec: BackendSpec,
    creds: Credentials | None,
    settings: ClientSettings,
    *,
    endpoint_override: str = "",
    proxies: dict[str, str] | None = None,
) -> Any:
    """A boto3 S3 client for `spec`. Blocking (loads botocore's models): call it in an executor."""
    checksum = "when_supported" if spec.kind is Kind.AWS_S3 else "when_required"
    config = Config(
        region_name=spec.region or "us-east-1",
        signature_version=UNSIGNED if creds is None and spec.kind is not Kind.AWS_S3 else "s3v4",
        s3={"addressing_style": spec.effective_addressing},
        retries={"total_max_attempts": 1},
        max_pool_connections=settings.max_pool_connections,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        tcp_keepalive=True,
        # The OCI quirk: OCI Object Storage (and older S3-compatible stores) reject the CRC
        # trailers boto3 sends by default; only send/validate checksums where an API needs them.
        request_checksum_calculation=checksum,
        response_checksum_validation=checksum,
        proxies=proxies,
    )
    if spec.insecure_skip_verify:
        # The opt-out was logged once as a warning when the backend was configured; urllib3
        # would otherwise warn on every request.
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        verify: bool | str = False
    elif spec.ca_bundle_path:
        verify = spec.ca_bundle_path
    else:
        verify = True
    session = boto3.session.Session()
    kwargs: dict[str, Any] = {}
    if creds is not None:
        kwargs.update(aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key)
        if creds.session_token:
            kwargs["aws_session_token"] = creds.session_token
    return session.client(
        "s3", endpoint_url=endpoint_override or spec.endpoint or None, verify=verify, config=config, **kwargs
    )
