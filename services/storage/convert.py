"""protobuf <-> domain conversions for the storage service (used by the servicer only)."""

from __future__ import annotations

from ddnrag.storage.v1 import storage_service_pb2 as pb
from services.common.errors import invalid

from .model import BackendSpec, Credentials, Kind, ObjectMeta, Shaping, Transfer

KIND_FROM_PB = {
    pb.BACKEND_KIND_DDN_INFINIA: Kind.DDN_INFINIA,
    pb.BACKEND_KIND_AWS_S3: Kind.AWS_S3,
    pb.BACKEND_KIND_S3_COMPATIBLE: Kind.S3_COMPATIBLE,
}
KIND_TO_PB = {v: k for k, v in KIND_FROM_PB.items()}
STYLE_FROM_PB = {
    pb.ADDRESSING_STYLE_UNSPECIFIED: "",
    pb.ADDRESSING_STYLE_PATH: "path",
    pb.ADDRESSING_STYLE_VIRTUAL: "virtual",
}
STYLE_TO_PB = {v: k for k, v in STYLE_FROM_PB.items()}


def transfer_pb(t: Transfer) -> pb.Transfer:
    return pb.Transfer(ttfb_ns=t.ttfb_ns, total_ns=t.total_ns, bytes=t.bytes, retries=t.retries)


def info_pb(m: ObjectMeta) -> pb.ObjectInfo:
    return pb.ObjectInfo(
        key=m.key,
        size_bytes=m.size_bytes,
        etag=m.etag,
        content_type=m.content_type,
        last_modified_unix_ns=m.last_modified_unix_ns,
        metadata=m.metadata,
    )


def backend_pb(spec: BackendSpec, has_credentials: bool) -> pb.Backend:
    """The backend for a response: secrets left empty, `has_credentials` set."""
    return pb.Backend(
        name=spec.name,
        kind=KIND_TO_PB[spec.kind],
        endpoint=spec.endpoint,
        region=spec.region,
        bucket=spec.bucket,
        addressing_style=STYLE_TO_PB[spec.addressing_style],
        insecure_skip_verify=spec.insecure_skip_verify,
        ca_bundle_path=spec.ca_bundle_path,
        credentials_env_prefix=spec.credentials_env_prefix,
        credentials_file=spec.credentials_file,
        has_credentials=has_credentials,
        shaping=pb.Shaping(
            rtt_ms=spec.shaping.rtt_ms, jitter_ms=spec.shaping.jitter_ms, bandwidth_mbps=spec.shaping.bandwidth_mbps
        ),
        emulated=spec.emulated,
        allowed_prefixes=list(spec.allowed_prefixes),
        is_default=spec.is_default,
        label=spec.label(),
    )


def backend_from_pb(b: pb.Backend) -> tuple[BackendSpec, Credentials | None]:
    """The spec and, when given inline, the credentials (kept apart from the spec)."""
    if b.kind not in KIND_FROM_PB:
        raise invalid(
            f"backend {b.name!r} needs a kind: ddn_infinia, aws_s3 or s3_compatible", reason="INVALID_BACKEND"
        )
    if bool(b.access_key_id) != bool(b.secret_access_key):
        raise invalid(
            f"backend {b.name!r}: give both access_key_id and secret_access_key, or neither",
            reason="INVALID_BACKEND",
        )
    inline = Credentials(b.access_key_id, b.secret_access_key) if b.access_key_id else None
    spec = BackendSpec(
        name=b.name,
        kind=KIND_FROM_PB[b.kind],
        endpoint=b.endpoint.rstrip("/"),
        region=b.region or "us-east-1",
        bucket=b.bucket,
        addressing_style=STYLE_FROM_PB.get(b.addressing_style, ""),
        insecure_skip_verify=b.insecure_skip_verify,
        ca_bundle_path=b.ca_bundle_path,
        credentials_env_prefix=b.credentials_env_prefix,
        credentials_file=b.credentials_file,
        inline_credentials=inline is not None,
        shaping=Shaping(b.shaping.rtt_ms, b.shaping.jitter_ms, b.shaping.bandwidth_mbps),
        allowed_prefixes=tuple(b.allowed_prefixes),
    )
    return spec, inline
