"""API keys: parsing the keys file, holding keys as digests with their roles, reloading on rotation,
and deciding once whether the gateway runs with keys or open.

Once keys are configured (`DDNRAG_GATEWAY_API_KEYS` or `DDNRAG_GATEWAY_API_KEYS_FILE`), an empty
key set is an error, never "authentication off": at start the gateway refuses to start; at run
time a reload that finds no keys keeps the previous ones and logs the problem.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from kernel.config import ConfigError
from kernel.targets import is_loopback_host

from .config import GatewayConfig
from .roles import Role
from .state import API_KEYS, CONFIG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPolicy:
    """One accepted key, by digest, with its role and its own rate limit (None: the default)."""

    digest: str
    role: Role = Role.READER
    rps: float | None = None
    burst: int | None = None


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_keys_file(text: str, default_role: Role = Role.READER) -> list[KeyPolicy]:
    """Lines of `<key | sha256:<hex>> [role=reader|writer|admin] [rps=F] [burst=N]`; '#' comments
    and blank lines skipped. A line without `role=` gets `default_role`."""
    out: list[KeyPolicy] = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        first, opts = parts[0], dict(p.partition("=")[::2] for p in parts[1:])
        if first.startswith("sha256:"):
            digest = first[7:].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"API keys file line {n}: sha256: needs 64 hex digits")
        else:
            digest = _digest(first)
        unknown = set(opts) - {"role", "rps", "burst"}
        if unknown:
            raise ValueError(f"API keys file line {n}: unknown option {sorted(unknown)[0]!r}; use role=, rps=, burst=")
        try:
            role = Role.parse(opts["role"]) if "role" in opts else default_role
            rps = float(opts["rps"]) if "rps" in opts else None
            burst = int(opts["burst"]) if "burst" in opts else None
        except ValueError as err:
            raise ValueError(
                f"API keys file line {n}: rps must be a number, burst an integer, role reader|writer|admin ({err})"
                if "role" in str(err)
                else f"API keys file line {n}: rps must be a number and burst an integer"
            ) from None
        out.append(KeyPolicy(digest, role, rps, burst))
    return out


class EmptyKeysError(ValueError):
    """Keys are configured but none was found: never a reason to run open."""


class ApiKeys:
    """The accepted keys as SHA-256 digests; `reload()` re-reads the keys file (rotation).

    `env_keys` entries use the keys-file syntax too (`key role=admin`), one per entry."""

    def __init__(self, env_keys: tuple[str, ...] = (), path: str = "", default_role: Role = Role.READER) -> None:
        self.default_role = default_role
        self._env = parse_keys_file("\n".join(k for k in env_keys if k), default_role)
        self.path = path
        self.configured = bool(self._env) or bool(path) or any(env_keys)
        self.mtime_ns = 0
        self._keys: dict[str, KeyPolicy] = {}
        self.reload()

    def reload(self) -> bool:
        """Re-reads the file when it changed; True when the key set was replaced. A malformed,
        missing or empty file keeps the previous keys (logged, without values); at start (no
        previous keys) it raises."""
        file_keys: list[KeyPolicy] = []
        if self.path:
            try:
                st = os.stat(self.path)
                if st.st_mtime_ns == self.mtime_ns and self._keys:
                    return False
                file_keys = parse_keys_file(Path(self.path).read_text(), self.default_role)
                if not file_keys and not self._env:
                    raise EmptyKeysError(
                        f"the API keys file {self.path} holds no key; an empty key set never turns "
                        "authentication off (set DDNRAG_GATEWAY_AUTH=open to run without keys)"
                    )
                self.mtime_ns = st.st_mtime_ns
            except (OSError, ValueError) as err:
                if self._keys:
                    log.error("API keys file not reloaded; keeping the current keys", extra={"error": str(err)})
                    return False
                raise
        self._keys = {k.digest: k for k in [*self._env, *file_keys]}
        return True

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, token: str) -> KeyPolicy | None:
        """The key's policy, comparing the token's digest with every stored digest in constant time."""
        want = _digest(token).encode()
        found: KeyPolicy | None = None
        for digest, policy in self._keys.items():
            if hmac.compare_digest(want, digest.encode()):
                found = policy
        return found


def auth_mode(cfg: GatewayConfig) -> str:
    """`keys` or `open`, decided at start; raises ConfigError for a setting that would run open
    by accident (no keys and no explicit `DDNRAG_GATEWAY_AUTH=open`, on any host) or contradicts
    itself. `rag up` sets `open` for its loopback-only stack when no keys are given."""
    configured = bool(cfg.api_keys) or bool(cfg.api_keys_file)
    mode = cfg.auth.strip().lower()
    if mode not in ("", "keys", "open"):
        raise ConfigError(f"DDNRAG_GATEWAY_AUTH={cfg.auth!r}: use keys or open")
    if mode == "open":
        if configured:
            raise ConfigError(
                "DDNRAG_GATEWAY_AUTH=open but API keys are configured; remove the keys or the open setting"
            )
        return "open"
    if configured:
        return "keys"
    if mode == "keys":
        raise ConfigError("DDNRAG_GATEWAY_AUTH=keys needs DDNRAG_GATEWAY_API_KEYS or DDNRAG_GATEWAY_API_KEYS_FILE")
    where = "loopback" if is_loopback_host(cfg.host) else "not loopback"
    raise ConfigError(
        f"the gateway has no API keys and binds {cfg.host} ({where}); it never runs open by default: set "
        "DDNRAG_GATEWAY_API_KEYS_FILE (see k8s/README.md), or DDNRAG_GATEWAY_AUTH=open to run without "
        "authentication on purpose (`rag up` sets it for its loopback stack when no keys are given)"
    )


def load_api_keys(cfg: GatewayConfig) -> ApiKeys:
    """The key set for `cfg`; raises ConfigError when keys are configured but none is usable."""
    mode = auth_mode(cfg)
    if mode == "open":
        log.warning(
            "AUTHENTICATION IS OFF (DDNRAG_GATEWAY_AUTH=open): every caller is admin",
            extra={"auth": "open", "host": cfg.host, "loopback": is_loopback_host(cfg.host)},
        )
        return ApiKeys()
    try:
        keys = ApiKeys(cfg.api_keys, cfg.api_keys_file, Role.parse(cfg.api_keys_default_role))
    except (OSError, ValueError) as err:
        raise ConfigError(f"API keys: {err}") from None
    if not keys:
        raise ConfigError("API keys are configured but none was found; the gateway does not start open")
    log.info("authentication on", extra={"auth": "keys", "keys": len(keys)})
    return keys


async def api_keys_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watches the API keys file (a mounted Secret) and swaps the key set when it changes."""
    keys = app[API_KEYS]
    interval = app[CONFIG].api_keys_reload_s
    task = None
    if keys.path and interval > 0:

        async def watch() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    if await asyncio.to_thread(keys.reload):
                        log.info("API keys reloaded", extra={"keys": len(keys)})
                except Exception:
                    log.exception("API keys reload failed")

        task = asyncio.create_task(watch())
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
