"""Secrets of backends added at run time, sealed at rest with AES-256-GCM.

The data key is 32 random bytes, read from `DDNRAG_STORAGE_REGISTRY_KEY_FILE` (in Kubernetes, a
mounted Secret) or, when that variable is empty, from `<state_dir>/registry.key`, generated 0600
on first start. Every storage replica must hold the same key: the sealed secrets live in the
shared registry object, and a replica with another key says so instead of using garbage.

Each sealed value carries the id of the key that sealed it (the first 8 hex digits of the key's
SHA-256, which reveals nothing useful about the key) and is bound to its backend's name as
associated data, so a ciphertext copied to another backend's entry does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.errors import ErrorKind, ServiceError

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12


def _key_error(message: str) -> ServiceError:
    return ServiceError(ErrorKind.FAILED_PRECONDITION, message, reason="REGISTRY_KEY_UNUSABLE")


def parse_key(raw: bytes, source: str) -> bytes:
    """32 raw bytes, or their base64 or hex text (`openssl rand -base64 32`)."""
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    for decode in (base64.b64decode, binascii.unhexlify):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise _key_error(f"{source} must hold a 32-byte key (raw, base64 or hex), e.g. from `openssl rand -base64 32`")


def load_or_create_key(path: Path, create: bool) -> bytes:
    """The key in `path`; with `create`, a missing file is generated first (0600, written whole
    before it appears, so replicas starting together all end up with the one that won)."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64encode(os.urandom(KEY_BYTES)) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if another process created it first: theirs wins
                log.info("generated the registry data key", extra={"path": str(path)})
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise _key_error(
            f"the registry data key {str(path)!r} cannot be read ({err.strerror or type(err).__name__})"
        ) from None
    if create and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return parse_key(raw, f"the registry data key {str(path)!r}")


class SecretBox:
    """Seals and opens small JSON values with one AES-256-GCM data key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise _key_error("the registry data key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"SecretBox(key_id={self.key_id})"

    @staticmethod
    def _aad(name: str) -> bytes:
        return f"ddnrag.storage.backend:{name}".encode()

    def seal(self, name: str, value: dict[str, str]) -> dict[str, str]:
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aead.encrypt(nonce, json.dumps(value, sort_keys=True).encode(), self._aad(name))
        return {
            "alg": "AES-256-GCM",
            "key_id": self.key_id,
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ct).decode(),
        }

    def open(self, name: str, sealed: dict[str, str]) -> dict[str, str]:
        if sealed.get("key_id") != self.key_id:
            raise _key_error(
                f"the secret of backend {name!r} was sealed with registry key {sealed.get('key_id')!r}, and this "
                f"replica holds key {self.key_id!r}; give every storage replica the same "
                "DDNRAG_STORAGE_REGISTRY_KEY_FILE, or put the backend again with its credentials"
            )
        try:
            nonce = base64.b64decode(sealed["nonce"])
            plain = self._aead.decrypt(nonce, base64.b64decode(sealed["ciphertext"]), self._aad(name))
            value = json.loads(plain)
        except (KeyError, ValueError, binascii.Error, InvalidTag):
            raise _key_error(
                f"the sealed secret of backend {name!r} does not open (altered or truncated); "
                "put the backend again with its credentials"
            ) from None
        if not isinstance(value, dict):
            raise _key_error(f"the sealed secret of backend {name!r} is not an object")
        return {str(k): str(v) for k, v in value.items()}
