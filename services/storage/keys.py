"""Validation of object keys and prefixes (bad input -> INVALID_ARGUMENT, nothing sent)."""

from __future__ import annotations

from collections.abc import Sequence

from kernel.errors import ErrorKind, ServiceError, invalid

MAX_KEY_BYTES = 1024


def _control(s: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in s)


def check_key(key: str, what: str = "key") -> str:
    """Returns `key` if it is a safe object key, else raises INVALID_ARGUMENT saying why."""
    if not key:
        raise invalid(f"the object {what} is empty; give a relative key such as 'docs/a.txt'", reason="INVALID_KEY")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise invalid(f"the object {what} is over {MAX_KEY_BYTES} bytes", reason="INVALID_KEY")
    if key.startswith("/"):
        raise invalid(f"the object {what} {key[:80]!r} is absolute; drop the leading '/'", reason="INVALID_KEY")
    if _control(key):
        raise invalid(f"the object {what} contains control characters", reason="INVALID_KEY")
    if any(seg in (".", "..") for seg in key.split("/")):
        raise invalid(f"the object {what} {key[:80]!r} contains a '.' or '..' segment", reason="INVALID_KEY")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"the object {what} is not valid UTF-8", reason="INVALID_KEY") from None
    return key


def check_prefix(prefix: str) -> str:
    """A listing/deletion prefix: may be empty, otherwise the same rules as a key."""
    if prefix:
        check_key(prefix, "prefix")
    return prefix


def key_error(key: str, what: str = "key") -> ServiceError | None:
    try:
        check_key(key, what)
    except ServiceError as err:
        return err
    return None


def require_allowed(backend: str, allowed: Sequence[str], key: str, what: str = "key") -> None:
    """PERMISSION_DENIED unless `key` (an object key, or a listing/deletion prefix) lies under one
    of the backend's `allowed_prefixes` (none: everything is allowed). A prefix must itself start
    with an allowed prefix, so listing or deleting "" or a parent is refused too."""
    if allowed and not any(key.startswith(p) for p in allowed):
        raise ServiceError(
            ErrorKind.PERMISSION_DENIED,
            f"backend {backend!r} only allows {what}s under {list(allowed)}; {key[:80]!r} is not",
            reason="PREFIX_NOT_ALLOWED",
        )


def scoped(allowed: Sequence[str], key: str) -> str:
    """`key` under the backend's first allowed prefix (the place for the service's own scratch
    objects: connection probes, benchmark objects)."""
    return f"{allowed[0]}{key}" if allowed else key
