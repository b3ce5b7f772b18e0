"""Where the backend registry lives: one object in the default backend's bucket, replaced whole.

An S3 PUT is atomic (readers see the old object or the new one, never a part), and every write
is conditional: `If-None-Match: *` creates it, `If-Match: <etag>` replaces exactly the version the
writer read. Two replicas changing the registry at once cannot lose each other's change: the
second write is refused (412) and redone on top of the first. Followers poll with
`If-None-Match: <etag>`, which costs a 304 and no body while nothing changed.

SeaweedFS (4.48), AWS S3 (since 2024) and DDN Infinia honour these conditions. A store that
ignored them would still never expose a partial registry, but could lose one of two concurrent
changes; say so if you point the default backend at one.
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import ClientError

from .errors import client_code, http_status, map_error
from .model import BackendSpec


class RegistryConflict(Exception):
    """The registry changed since it was read (the conditional write was refused)."""


class RegistryStore(Protocol):
    def read(self, etag: str) -> tuple[bytes, str] | bool | None:
        """The body and ETag; False when it still has `etag`; None when there is none."""

    def write(self, body: bytes, if_match: str) -> str:
        """Replaces the version `if_match` (or creates it, when ""); the new ETag.
        Raises RegistryConflict when another version is there."""


class S3RegistryStore:
    """The registry object `key` in the default backend. Blocking: call it from an executor."""

    def __init__(self, spec: BackendSpec, client: Any, key: str) -> None:
        self.spec = spec
        self.client = client
        self.key = key

    def _error(self, exc: Exception) -> Exception:
        return map_error(exc, self.spec.name, self.spec.bucket, self.key)

    def read(self, etag: str) -> tuple[bytes, str] | bool | None:
        kwargs: dict[str, Any] = {"Bucket": self.spec.bucket, "Key": self.key}
        if etag:
            kwargs["IfNoneMatch"] = etag
        try:
            resp = self.client.get_object(**kwargs)
            body = resp["Body"].read()
        except ClientError as exc:
            if http_status(exc) == 304 or client_code(exc) in ("304", "NotModified"):
                return False
            if client_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
                return None  # nothing added yet (a missing bucket fails writes, with its own message)
            raise self._error(exc) from None
        except Exception as exc:  # noqa: BLE001 - connection errors, mapped to UNAVAILABLE
            raise self._error(exc) from None
        return body, str(resp.get("ETag", ""))

    def write(self, body: bytes, if_match: str) -> str:
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            resp = self.client.put_object(
                Bucket=self.spec.bucket, Key=self.key, Body=body, ContentType="application/json", **condition
            )
        except ClientError as exc:
            if http_status(exc) in (409, 412) or client_code(exc) in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                raise RegistryConflict(self.key) from None
            raise self._error(exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc) from None
        return str(resp.get("ETag", ""))
