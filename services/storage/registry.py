"""Named backends: the default one from the environment plus those added at run time.

Backends added through the API live in one shared document, the registry object in the default
backend's bucket (`DDNRAG_STORAGE_REGISTRY_KEY`, see registry_store.py), so every storage replica
serves the same list. Each change is a conditional write of a whole new version: a partly
written registry never exists, and two replicas changing it at once both land. Replicas follow it
by polling (backends.py). Inline secrets are in the document only sealed with AES-256-GCM
(sealing.py); they are never returned or logged.

A state directory from before (backends.json plus a plaintext secrets.json) is imported once, when
the store holds no registry yet; secrets.json is then deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kernel.errors import ErrorKind, ServiceError, not_found

from . import credentials
from .model import BackendSpec, Credentials, Kind, Shaping
from .registry_store import RegistryConflict, RegistryStore
from .sealing import SecretBox

log = logging.getLogger(__name__)

FORMAT = 2
WRITE_ATTEMPTS = 10
BACKOFF_BASE_S = 0.005
BACKOFF_MAX_S = 0.5

Specs = dict[str, BackendSpec]
Sealed = dict[str, dict[str, str]]


def spec_to_json(spec: BackendSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["kind"] = spec.kind.value
    d["allowed_prefixes"] = list(spec.allowed_prefixes)
    d.pop("is_default", None)
    return d


def spec_from_json(d: dict[str, Any]) -> BackendSpec:
    d = dict(d)
    d["kind"] = Kind(d["kind"])
    d["shaping"] = Shaping(**(d.get("shaping") or {}))
    d["allowed_prefixes"] = tuple(d.get("allowed_prefixes") or ())
    known = set(BackendSpec.__dataclass_fields__)
    return BackendSpec(**{k: v for k, v in d.items() if k in known})


def encode(specs: Specs, sealed: Sealed, revision: int) -> bytes:
    body = {
        "format": FORMAT,
        "revision": revision,
        "backends": [spec_to_json(s) for s in sorted(specs.values(), key=lambda s: s.name)],
        "sealed_secrets": {k: sealed[k] for k in sorted(sealed)},
    }
    return json.dumps(body, indent=2, sort_keys=True).encode()


def decode(body: bytes, default_name: str) -> tuple[Specs, Sealed, int]:
    """The registry document; ValueError (with a reason for people) when it is not one."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("it is not JSON (truncated or overwritten?)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"it is not a format-{FORMAT} registry document")
    specs: Specs = {}
    try:
        for d in doc["backends"]:
            spec = spec_from_json(d)
            spec.validate()
            if spec.name != default_name:
                specs[spec.name] = spec
        sealed = {str(k): dict(v) for k, v in doc["sealed_secrets"].items()}
        revision = int(doc["revision"])
    except (KeyError, TypeError, ValueError, AttributeError, ServiceError) as err:
        raise ValueError(f"an entry is malformed ({type(err).__name__})") from None
    return specs, sealed, revision


class BackendRegistry:
    """Thread-safe; reading and writing the store blocks, so async callers use an executor.
    Lookups (`get`, `list`) only read memory."""

    def __init__(
        self,
        default: BackendSpec,
        default_creds: Credentials | None,
        store: RegistryStore,
        box: SecretBox,
        legacy_dir: str | Path | None = None,
    ) -> None:
        self.default = default.with_(is_default=True)
        self._default_creds = default_creds
        self.store = store
        self.box = box
        self.legacy_dir = Path(legacy_dir) if legacy_dir else None
        self._lock = threading.Lock()  # guards the in-memory view
        self._io = threading.Lock()  # one read-modify-write at a time per replica
        self._specs: Specs = {}
        self._sealed: Sealed = {}
        self._etag = ""  # the version of the store's object last read (valid or not)
        self._revision = 0
        self._changed: set[str] = set()
        self.loaded = False

    # --- following the shared document -----------------------------------------------------

    def refresh(self) -> None:
        """Reads the registry if it changed since the last read. A document that does not
        parse is refused: the version loaded before stays live, and the error says why."""
        with self._io:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        got = self.store.read(self._etag if self.loaded else "")
        if got is False:
            return
        if got is None:
            if not self.loaded and self._import_legacy():
                return
            self._install({}, {}, "", 0)
            return
        body, etag = got
        try:
            specs, sealed, revision = decode(body, self.default.name)
        except ValueError as err:
            first = not self.loaded
            self._etag, self.loaded = etag, True  # refuse this version once, not on every poll
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"the backend registry {getattr(self.store, 'key', '')!r} in the default backend is not valid: {err}; "
                + ("no backend added at run time is loaded" if first else "the version loaded before stays live")
                + ". The next PutBackend or RemoveBackend writes a valid one",
                reason="REGISTRY_INVALID",
            ) from None
        self._install(specs, sealed, etag, revision)

    def _install(self, specs: Specs, sealed: Sealed, etag: str, revision: int) -> None:
        with self._lock:
            names = set(specs) | set(self._specs) | set(sealed) | set(self._sealed)
            self._changed |= {
                n for n in names if specs.get(n) != self._specs.get(n) or sealed.get(n) != self._sealed.get(n)
            }
            self._specs, self._sealed, self._etag, self._revision = specs, sealed, etag, revision
            self.loaded = True

    def take_changed(self) -> set[str]:
        """Names whose spec or secret changed since the last call (their clients are stale)."""
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def _update(self, change: Callable[[Specs, Sealed], None]) -> None:
        """Applies `change` to the newest version and writes the result conditionally; redone
        on top of a concurrent write."""
        with self._io:
            for attempt in range(WRITE_ATTEMPTS):
                self._refresh_locked_lenient()
                with self._lock:
                    specs, sealed, revision = dict(self._specs), dict(self._sealed), self._revision
                change(specs, sealed)
                try:
                    etag = self.store.write(encode(specs, sealed, revision + 1), self._etag)
                except RegistryConflict:
                    # Jittered exponential backoff: writers that collided retry at different
                    # moments (without it, four replicas writing at once could starve one of them
                    # through every attempt).
                    time.sleep(random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)))
                    continue
                self._install(specs, sealed, etag, revision + 1)
                return
        raise ServiceError(
            ErrorKind.UNAVAILABLE,
            f"the backend registry changed {WRITE_ATTEMPTS} times while this change was being written; try again",
            reason="REGISTRY_BUSY",
        )

    def _refresh_locked_lenient(self) -> None:
        """A write may replace an invalid document (keeping the valid list it had before)."""
        try:
            self._refresh_locked()
        except ServiceError as err:
            if err.reason != "REGISTRY_INVALID":
                raise
            log.warning("replacing an invalid backend registry", extra={"reason": err.reason})

    def _import_legacy(self) -> bool:
        """Imports `<legacy_dir>/backends.json` and its secrets.json (from before the shared
        registry) when the store has none yet. True when the store now holds a registry."""
        if self.legacy_dir is None or not (self.legacy_dir / "backends.json").exists():
            return False
        backends_path, secrets_path = self.legacy_dir / "backends.json", self.legacy_dir / "secrets.json"
        try:
            raw = json.loads(backends_path.read_text() or "{}")
            plain = json.loads(secrets_path.read_text() or "{}") if secrets_path.exists() else {}
        except FileNotFoundError:  # a replica sharing the directory imported it a moment ago
            return False
        except (OSError, ValueError) as err:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"the backends of an older release in {str(self.legacy_dir)!r} cannot be imported "
                f"({type(err).__name__}); fix or move backends.json and secrets.json away",
                reason="REGISTRY_IMPORT_FAILED",
            ) from None
        specs = {s.name: s for s in map(spec_from_json, raw.get("backends", [])) if s.name != self.default.name}
        sealed = {n: self.box.seal(n, dict(v)) for n, v in plain.items() if n in specs}
        try:
            etag = self.store.write(encode(specs, sealed, 1), "")
        except RegistryConflict:  # another replica imported (or added) first: follow it
            self._refresh_locked()
        else:
            self._install(specs, sealed, etag, 1)
        with contextlib.suppress(FileNotFoundError):
            os.replace(backends_path, backends_path.with_name("backends.json.imported"))
        secrets_path.unlink(missing_ok=True)
        log.info("imported backends from the state directory into the shared registry", extra={"count": len(specs)})
        return True

    # --- lookups ---------------------------------------------------------------------------

    def list(self) -> list[BackendSpec]:
        with self._lock:
            return [self.default, *sorted(self._specs.values(), key=lambda s: s.name)]

    def get(self, name: str) -> BackendSpec:
        if not name or name == self.default.name:
            return self.default
        with self._lock:
            spec = self._specs.get(name)
        if spec is None:
            raise not_found(
                f"backend {name!r} is not configured; ListBackends shows the configured ones",
                reason="BACKEND_NOT_FOUND",
                backend=name,
            )
        return spec

    # --- changes ---------------------------------------------------------------------------

    def _refuse_default(self, name: str, what: str) -> None:
        if name == self.default.name:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"backend {name!r} is the default backend, configured by DDNRAG_STORAGE_DEFAULT_* variables; {what}",
                reason="DEFAULT_BACKEND_READ_ONLY",
            )

    def put(self, spec: BackendSpec, inline: Credentials | None) -> BackendSpec:
        """Adds or replaces `spec`; `inline` secrets are sealed into the registry."""
        spec.validate()
        self._refuse_default(spec.name, "choose another name")
        spec = spec.with_(inline_credentials=inline is not None, is_default=False)
        sealed = None
        if inline is not None:
            sealed = self.box.seal(
                spec.name, {"access_key_id": inline.access_key_id, "secret_access_key": inline.secret_access_key}
            )

        def change(specs: Specs, secrets: Sealed) -> None:
            specs[spec.name] = spec
            if sealed is not None:
                secrets[spec.name] = sealed
            else:
                secrets.pop(spec.name, None)

        self._update(change)
        log.info("backend saved", extra={"backend": spec.name, "kind": spec.kind.value, "label": spec.label()})
        if spec.insecure_skip_verify:
            log.warning("TLS verification is OFF for this backend (explicit opt-out)", extra={"backend": spec.name})
        return spec

    def remove(self, name: str) -> None:
        self._refuse_default(name, "it cannot be removed")

        def change(specs: Specs, secrets: Sealed) -> None:
            if name not in specs:
                raise not_found(f"backend {name!r} is not configured", reason="BACKEND_NOT_FOUND", backend=name)
            specs.pop(name)
            secrets.pop(name, None)

        self._update(change)
        log.info("backend removed", extra={"backend": name})

    # --- credentials -----------------------------------------------------------------------

    def credentials(self, spec: BackendSpec) -> Credentials | None:
        """The backend's credentials, or None (anonymous, or boto3's default chain for AWS S3)."""
        if spec.is_default:
            return self._default_creds
        if spec.inline_credentials:
            with self._lock:
                sealed = self._sealed.get(spec.name)
            if not sealed:
                raise ServiceError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"the inline credentials of backend {spec.name!r} are missing from the registry; "
                    "put the backend again with its credentials",
                    reason="CREDENTIALS_MISSING",
                )
            s = self.box.open(spec.name, sealed)
            return Credentials(s["access_key_id"], s["secret_access_key"])
        if spec.credentials_env_prefix:
            return credentials.from_env_prefix(spec.credentials_env_prefix)
        if spec.credentials_file:
            return credentials.from_path(spec.credentials_file)
        return None

    def has_credentials(self, spec: BackendSpec) -> bool:
        try:
            return self.credentials(spec) is not None
        except ServiceError:
            return False
