"""Named backends: the default one from the environment plus those added at run time.

Backends added through the API persist across restarts in `<state_dir>/backends.json` (no secret
values). Inline secrets given through PutBackend go to `<state_dir>/secrets.json`, created 0600
and never returned or logged. Both files are replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.common.errors import ErrorKind, ServiceError, not_found

from . import credentials
from .model import BackendSpec, Credentials, Kind, Shaping

log = logging.getLogger(__name__)


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


def _atomic_write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class BackendRegistry:
    """Thread-safe; its file I/O is blocking, so async callers run it in an executor."""

    def __init__(self, state_dir: str | Path, default: BackendSpec, default_creds: Credentials | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.default = default.with_(is_default=True)
        self._default_creds = default_creds
        self._lock = threading.Lock()
        self._specs: dict[str, BackendSpec] = {}
        self._secrets: dict[str, dict[str, str]] = {}
        self.backends_path = self.state_dir / "backends.json"
        self.secrets_path = self.state_dir / "secrets.json"
        self._load()

    def _load(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.backends_path.exists():
            raw = json.loads(self.backends_path.read_text() or "{}")
            for d in raw.get("backends", []):
                spec = spec_from_json(d)
                if spec.name != self.default.name:
                    self._specs[spec.name] = spec
        if self.secrets_path.exists():
            if self.secrets_path.stat().st_mode & 0o077:
                os.chmod(self.secrets_path, 0o600)
            self._secrets = json.loads(self.secrets_path.read_text() or "{}")

    def _save(self) -> None:
        body = {"backends": [spec_to_json(s) for s in sorted(self._specs.values(), key=lambda s: s.name)]}
        _atomic_write(self.backends_path, json.dumps(body, indent=2, sort_keys=True), 0o644)
        _atomic_write(self.secrets_path, json.dumps(self._secrets), 0o600)

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

    def put(self, spec: BackendSpec, inline: Credentials | None) -> BackendSpec:
        """Adds or replaces `spec`; `inline` secrets go to the 0600 secrets file."""
        spec.validate()
        if spec.name == self.default.name:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"backend {spec.name!r} is the default backend, configured by DDNRAG_STORAGE_DEFAULT_* variables; "
                "choose another name",
                reason="DEFAULT_BACKEND_READ_ONLY",
            )
        spec = spec.with_(inline_credentials=inline is not None, is_default=False)
        with self._lock:
            old_specs, old_secrets = dict(self._specs), dict(self._secrets)
            self._specs[spec.name] = spec
            if inline is not None:
                self._secrets[spec.name] = {
                    "access_key_id": inline.access_key_id,
                    "secret_access_key": inline.secret_access_key,
                }
            else:
                self._secrets.pop(spec.name, None)
            try:
                self._save()
            except OSError:
                self._specs, self._secrets = old_specs, old_secrets
                raise
        log.info("backend saved", extra={"backend": spec.name, "kind": spec.kind.value, "label": spec.label()})
        if spec.insecure_skip_verify:
            log.warning("TLS verification is OFF for this backend (explicit opt-out)", extra={"backend": spec.name})
        return spec

    def remove(self, name: str) -> None:
        if name == self.default.name:
            raise ServiceError(
                ErrorKind.FAILED_PRECONDITION,
                f"backend {name!r} is the default backend and cannot be removed",
                reason="DEFAULT_BACKEND_READ_ONLY",
            )
        with self._lock:
            if name not in self._specs:
                raise not_found(f"backend {name!r} is not configured", reason="BACKEND_NOT_FOUND", backend=name)
            old_specs, old_secrets = dict(self._specs), dict(self._secrets)
            self._specs.pop(name)
            self._secrets.pop(name, None)
            try:
                self._save()
            except OSError:
                self._specs, self._secrets = old_specs, old_secrets
                raise
        log.info("backend removed", extra={"backend": name})

    def credentials(self, spec: BackendSpec) -> Credentials | None:
        """The backend's credentials, or None (anonymous, or boto3's default chain for AWS S3)."""
        if spec.is_default:
            return self._default_creds
        if spec.inline_credentials:
            with self._lock:
                s = self._secrets.get(spec.name)
            if not s:
                raise ServiceError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"the inline credentials of backend {spec.name!r} are missing from the secrets file; "
                    "put the backend again with its credentials",
                    reason="CREDENTIALS_MISSING",
                )
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
