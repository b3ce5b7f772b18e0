"""Storage backends: list, add (or replace), test and remove. Secrets are write-only.

Responses show `has_credentials`, never a key: the storage service already blanks them, and this
module builds its JSON from an explicit list of fields that leaves them out, so a key cannot leak
even if a service returned one.

Over HTTP a backend brings its own keys or none: the fields that reach into the storage pod
(`credentials_env_prefix`, `credentials_file`, `ca_bundle_path`, `insecure_skip_verify`) and an
`aws_s3` backend without keys (boto3 would use the pod's own credential chain) are refused; they
stay in the operator's configuration. The endpoint itself is checked by the storage service
(services/storage/endpoint_policy.py), which resolves it as it will connect. Every route here but
the list needs the admin role (gateway/roles.py).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ddnrag.storage.v1 import storage_service_pb2 as spb
from kernel.ids import valid_name

from ..access import KEY_ID
from ..convert import enum_name, enum_value, ns_to_ms
from ..errors import ApiError
from ..state import UPSTREAMS
from ..views import field_num, field_str, json_body

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SECRET_FIELDS = ("access_key_id", "secret_access_key")


def backend_json(b: spb.Backend, default_name: str = "") -> dict[str, Any]:
    """A backend for people: every setting except the secrets, plus whether credentials are set."""
    return {
        "name": b.name,
        "kind": enum_name(spb.BackendKind.DESCRIPTOR, b.kind),
        "label": b.label,
        "endpoint": b.endpoint,
        "region": b.region,
        "bucket": b.bucket,
        "addressing_style": enum_name(spb.AddressingStyle.DESCRIPTOR, b.addressing_style),
        "insecure_skip_verify": b.insecure_skip_verify,
        "ca_bundle_path": b.ca_bundle_path,
        "credentials_env_prefix": b.credentials_env_prefix,
        "credentials_file": b.credentials_file,
        "has_credentials": b.has_credentials,
        "emulated": b.emulated,
        "shaping": {
            "rtt_ms": b.shaping.rtt_ms,
            "jitter_ms": b.shaping.jitter_ms,
            "bandwidth_mbps": b.shaping.bandwidth_mbps,
        }
        if b.HasField("shaping")
        else None,
        "allowed_prefixes": list(b.allowed_prefixes),
        "is_default": b.is_default or (bool(default_name) and b.name == default_name),
    }


# Fields that name files, variables or TLS trust inside the storage pod: an operator's, never a caller's.
OPERATOR_FIELDS = ("credentials_env_prefix", "credentials_file", "ca_bundle_path", "insecure_skip_verify")


def _refuse_operator_fields(body: dict[str, Any]) -> None:
    given = [f for f in OPERATOR_FIELDS if body.get(f) not in (None, "", False)]
    if given:
        raise ApiError(
            400,
            f"{', '.join(given)} can only be set in the operator's configuration (rag config backends add on the "
            "storage host, or DDNRAG_STORAGE_* variables), not over HTTP; give access_key_id/secret_access_key instead",
            "OPERATOR_ONLY_FIELD",
        )


def backend_from_json(body: dict[str, Any]) -> spb.Backend:
    _refuse_operator_fields(body)
    name = field_str(body, "name", max_len=63)
    if not valid_name(name):
        raise ApiError(400, "name must be 1-63 characters a-z, 0-9, '_' or '-', starting with a letter or digit")
    try:
        kind = enum_value(spb.BackendKind.DESCRIPTOR, field_str(body, "kind", "s3_compatible") or "s3_compatible")
        style = enum_value(
            spb.AddressingStyle.DESCRIPTOR, field_str(body, "addressing_style", "unspecified") or "unspecified"
        )
    except ValueError as err:
        raise ApiError(400, f"kind/addressing_style: {err}") from None
    endpoint = field_str(body, "endpoint", max_len=500)
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ApiError(400, "endpoint must be an http:// or https:// URL")
    bucket = field_str(body, "bucket", max_len=63)
    if not bucket:
        raise ApiError(400, "bucket is required")
    b = spb.Backend(
        name=name,
        kind=kind,
        endpoint=endpoint,
        region=field_str(body, "region", max_len=64),
        bucket=bucket,
        addressing_style=style,
        access_key_id=field_str(body, "access_key_id", max_len=256),
        secret_access_key=field_str(body, "secret_access_key", max_len=256),
    )
    if kind == spb.BACKEND_KIND_AWS_S3 and not (b.access_key_id and b.secret_access_key):
        raise ApiError(
            400,
            "an aws_s3 backend added over HTTP needs access_key_id and secret_access_key "
            "(without them the storage pod's own AWS credentials would be used)",
            "CREDENTIALS_REQUIRED",
        )
    prefixes = body.get("allowed_prefixes", [])
    if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
        raise ApiError(400, "allowed_prefixes must be a list of strings")
    b.allowed_prefixes.extend(prefixes)
    shaping = body.get("shaping")
    if shaping:
        if not isinstance(shaping, dict):
            raise ApiError(400, "shaping must be an object with rtt_ms, jitter_ms, bandwidth_mbps")
        b.shaping.CopyFrom(
            spb.Shaping(
                rtt_ms=field_num(shaping, "rtt_ms", 0, 0, 10_000),
                jitter_ms=field_num(shaping, "jitter_ms", 0, 0, 10_000),
                bandwidth_mbps=field_num(shaping, "bandwidth_mbps", 0, 0, 1_000_000),
            )
        )
    return b


@routes.get("/api/config/backends")
async def list_backends(request: web.Request) -> web.Response:
    """Lists the storage backends, every setting but the secrets (`has_credentials` says whether keys are set)."""
    resp = await request.app[UPSTREAMS].storage.list_backends()
    return web.json_response(
        {
            "backends": [backend_json(b, resp.default_backend) for b in resp.backends],
            "default_backend": resp.default_backend,
        }
    )


@routes.post("/api/config/backends")
async def put_backend(request: web.Request) -> web.Response:
    """Adds a backend, or replaces the one with the same name. Secrets go in, never come out."""
    backend = backend_from_json(await json_body(request))
    storage = request.app[UPSTREAMS].storage
    before = {b.name: b for b in (await storage.list_backends()).backends}.get(backend.name)
    if before is not None and before.endpoint != backend.endpoint:
        log.warning(
            "backend endpoint changed",
            extra={
                "backend": backend.name,
                "from": before.endpoint,
                "to": backend.endpoint,
                "key_id": request.get(KEY_ID, ""),
            },
        )
    resp = await storage.put_backend(backend)
    return web.json_response({"backend": backend_json(resp.backend)}, status=201)


@routes.delete("/api/config/backends/{name}")
async def remove_backend(request: web.Request) -> web.Response:
    """Removes a storage backend added at run time (admin)."""
    name = request.match_info["name"]
    await request.app[UPSTREAMS].storage.remove_backend(name)
    return web.json_response({"removed": name})


@routes.post("/api/config/backends/{name}/test")
async def test_backend(request: web.Request) -> web.Response:
    """Measures HeadBucket and a write/read probe on the backend."""
    name = request.match_info["name"]
    r = await request.app[UPSTREAMS].storage.test_connection(name)
    return web.json_response(
        {
            "backend": name,
            "ok": r.ok,
            "head_bucket_ms": ns_to_ms(r.head_bucket_ns),
            "can_read": r.can_read,
            "can_write": r.can_write,
            "message": r.message,
        }
    )
