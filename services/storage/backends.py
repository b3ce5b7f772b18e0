"""The lifecycle of named backends: the registry every replica shares, one client per backend
(built once in the executor, rebuilt when its spec or secret changes), the emulation proxies,
and adding, removing and testing backends.

Replicas follow the shared registry by polling it every `registry_poll_s` (a conditional GET
that costs a 304 while nothing changed), so a change made through one replica is served by every
replica within that interval. A name that is not known yet is looked up in the store once
before NOT_FOUND, so a backend added through another replica a moment ago already works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from kernel.errors import ServiceError, invalid

from .aioget import AsyncGetter
from .config import StorageConfig
from .credentials import from_path
from .emulated_link import ShapingProxy
from .endpoint_policy import EndpointPolicy
from .fastget import FastGetter
from .keys import scoped
from .metrics import StoreMetrics
from .model import BackendSpec, Credentials, Kind, Transfer
from .registry import BackendRegistry
from .registry_store import S3RegistryStore
from .s3 import S3Store
from .s3_client import ClientSettings, build_client
from .sealing import SecretBox, load_or_create_key

log = logging.getLogger(__name__)

# The least time between two store lookups made because a backend name was unknown.
MISS_REFRESH_S = 0.1


@dataclass
class ConnectionReport:
    ok: bool
    head_bucket_ns: int = 0
    can_write: bool = False
    can_read: bool = False
    message: str = ""


def default_spec(cfg: StorageConfig) -> tuple[BackendSpec, Credentials | None]:
    """The embedded default backend and its credentials, from DDNRAG_STORAGE_DEFAULT_* variables."""
    try:
        kind = Kind(cfg.default_kind)
    except ValueError:
        raise invalid(
            f"DDNRAG_STORAGE_DEFAULT_KIND={cfg.default_kind!r} is not one of {[k.value for k in Kind]}"
        ) from None
    spec = BackendSpec(
        name=cfg.default_backend_name,
        kind=kind,
        endpoint=cfg.default_endpoint,
        region=cfg.default_region,
        bucket=cfg.default_bucket,
        insecure_skip_verify=cfg.default_insecure_skip_verify,
        ca_bundle_path=cfg.default_ca_bundle,
        credentials_file=cfg.default_credentials_file,
        is_default=True,
    )
    spec.validate()
    creds: Credentials | None = None
    if cfg.default_access_key_id and cfg.default_secret_access_key:
        creds = Credentials(cfg.default_access_key_id, cfg.default_secret_access_key)
    elif cfg.default_credentials_file:
        creds = from_path(cfg.default_credentials_file)
    return spec, creds


def settings_of(cfg: StorageConfig) -> ClientSettings:
    return ClientSettings(
        max_pool_connections=cfg.max_concurrency,
        connect_timeout_s=cfg.connect_timeout_s,
        read_timeout_s=cfg.read_timeout_s,
        max_retries=cfg.max_retries,
        retry_base_ms=cfg.retry_base_ms,
    )


def build_registry(cfg: StorageConfig) -> BackendRegistry:
    """The shared registry in the default backend, with the data key from
    DDNRAG_STORAGE_REGISTRY_KEY_FILE (or the generated `<state_dir>/registry.key`). Blocking."""
    spec, creds = default_spec(cfg)
    key_path = Path(cfg.registry_key_file) if cfg.registry_key_file else Path(cfg.state_dir) / "registry.key"
    box = SecretBox(load_or_create_key(key_path, create=not cfg.registry_key_file))
    settings = ClientSettings(4, cfg.connect_timeout_s, cfg.read_timeout_s, 0, cfg.retry_base_ms)
    store = S3RegistryStore(spec, build_client(spec, creds, settings), cfg.registry_key)
    return BackendRegistry(spec, creds, store, box, legacy_dir=cfg.state_dir)


class Backends:
    """Named backends of one replica: lookups, clients, changes, and following the registry."""

    def __init__(self, cfg: StorageConfig, registry: BackendRegistry, executor: ThreadPoolExecutor) -> None:
        self.cfg = cfg
        self.registry = registry
        self.executor = executor
        self.settings = settings_of(cfg)
        # SSRF guard for backends added at run time (endpoint_policy.py says why it lives here).
        self.endpoints = EndpointPolicy.build(cfg.endpoint_allowlist, registry.default.endpoint)
        self._stores: dict[str, tuple[BackendSpec, S3Store]] = {}
        self._proxies: dict[str, ShapingProxy] = {}
        self._routes: dict[str, tuple[str, dict[str, str] | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._miss_lock = asyncio.Lock()
        self._last_miss_refresh = 0.0
        self._follower: asyncio.Task[None] | None = None
        self.metrics: StoreMetrics | None = None
        if registry.default.insecure_skip_verify:
            log.warning("TLS verification is OFF for the default backend (explicit opt-out)")

    def record_to(self, metrics: StoreMetrics) -> None:
        """Every store of the service's own traffic, built or to be built, reports to `metrics`."""
        self.metrics = metrics
        for _spec, store in self._stores.values():
            store.metrics = metrics

    @property
    def default_name(self) -> str:
        return self.registry.default.name

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    # --- following the shared registry ----------------------------------------------------

    async def refresh(self) -> None:
        """Reads the registry if it changed, and drops the clients of changed backends."""
        try:
            await self._run(self.registry.refresh)
        finally:
            await self._drop_changed()

    async def _drop_changed(self) -> None:
        for name in self.registry.take_changed():
            await self._drop(name)

    async def follow(self, on_loaded: asyncio.Future[None] | None = None) -> None:
        """Polls the registry until cancelled; logs a failure once until it recovers."""
        failing = ""
        while True:
            try:
                await self.refresh()
                if failing:
                    log.info("the backend registry is readable again")
                failing = ""
                if on_loaded is not None and not on_loaded.done():
                    on_loaded.set_result(None)
            except Exception as err:  # noqa: BLE001 - the follower must outlive any one failure
                message = err.message if isinstance(err, ServiceError) else f"{type(err).__name__}: {err}"
                if message != failing:
                    log.error("cannot read the backend registry: %s", message)
                failing = message
            if self.cfg.registry_poll_s <= 0 and self.registry.loaded:
                return
            await asyncio.sleep(self.cfg.registry_poll_s if self.cfg.registry_poll_s > 0 else 1.0)

    async def start(self) -> bool:
        """Loads the registry (one try here, then in the background) and starts following it.
        True when it is loaded."""
        loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._follower = asyncio.create_task(self.follow(loaded))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(loaded), timeout=self.cfg.connect_timeout_s + 2)
        return self.registry.loaded

    async def wait_loaded(self) -> None:
        while not self.registry.loaded:
            await asyncio.sleep(0.2)

    async def spec(self, name: str) -> BackendSpec:
        """The spec of `name`; an unknown name is looked up in the store first (rate-limited)."""
        try:
            return self.registry.get(name)
        except ServiceError:
            async with self._miss_lock:
                if time.monotonic() - self._last_miss_refresh >= MISS_REFRESH_S:
                    self._last_miss_refresh = time.monotonic()
                    with contextlib.suppress(ServiceError):
                        await self.refresh()
            return self.registry.get(name)

    # --- clients ---------------------------------------------------------------------------

    async def store(self, name: str) -> S3Store:
        """The client for backend `name` (built once, in the executor; rebuilt when it changes)."""
        spec = await self.spec(name)
        cached = self._stores.get(spec.name)
        if cached is not None and cached[0] == spec:
            return cached[1]
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            cached = self._stores.get(spec.name)
            if cached is not None and cached[0] == spec:
                return cached[1]
            await self._drop(spec.name)
            if not spec.is_default:  # resolved again at each build: a rebound name is caught here
                await self._run(self.endpoints.check, spec.endpoint)
            creds = await self._run(self.registry.credentials, spec)
            endpoint_override, proxies = "", None
            if spec.emulated:
                endpoint_override, proxies = await self._start_proxy(spec)
            client = await self._run(
                lambda: build_client(spec, creds, self.settings, endpoint_override=endpoint_override, proxies=proxies)
            )
            store = S3Store(spec, client, self.executor, self.settings)
            store.fast = self._fast(spec, creds, endpoint_override, proxies, self.settings.max_pool_connections)
            store.aio = self._on_loop(spec, creds, endpoint_override, proxies, self.settings.max_pool_connections)
            store.metrics = self.metrics
            self._stores[spec.name] = (spec, store)
            self._routes[spec.name] = (endpoint_override, proxies)
            return store

    async def dedicated_store(self, name: str, pool: int) -> S3Store:
        """A separate client for `name` (same route, emulation proxy included) with its own
        executor of `pool` threads and `pool` connections: the benchmark engine's, so a run at
        concurrency 500 neither starves nor is starved by the service's own traffic. The caller
        shuts its executor down."""
        main = await self.store(name)
        spec = main.spec
        endpoint_override, proxies = self._routes.get(spec.name, ("", None))
        creds = await self._run(self.registry.credentials, spec)
        settings = ClientSettings(
            max_pool_connections=pool,
            connect_timeout_s=self.settings.connect_timeout_s,
            read_timeout_s=self.settings.read_timeout_s,
            max_retries=0,
            retry_base_ms=self.settings.retry_base_ms,
        )
        client = await self._run(
            lambda: build_client(spec, creds, settings, endpoint_override=endpoint_override, proxies=proxies)
        )
        executor = ThreadPoolExecutor(max_workers=pool, thread_name_prefix=f"bench-{spec.name}")
        store = S3Store(spec, client, executor, settings)
        store.fast = self._fast(spec, creds, endpoint_override, proxies, pool)
        return store

    def _fast(
        self,
        spec: BackendSpec,
        creds: Credentials | None,
        endpoint_override: str,
        proxies: dict[str, str] | None,
        pool: int,
    ) -> FastGetter | None:
        endpoint = endpoint_override or spec.endpoint
        if not self.cfg.fast_get or not FastGetter.supports(spec, creds, endpoint, proxies):
            return None
        return FastGetter(spec, creds, endpoint, pool, self.settings.connect_timeout_s, self.settings.read_timeout_s)

    def _on_loop(
        self,
        spec: BackendSpec,
        creds: Credentials | None,
        endpoint_override: str,
        proxies: dict[str, str] | None,
        pool: int,
    ) -> AsyncGetter | None:
        endpoint = endpoint_override or spec.endpoint
        if not (self.cfg.fast_get and self.cfg.loop_get) or not AsyncGetter.supports(spec, creds, endpoint, proxies):
            return None
        return AsyncGetter(spec, creds, endpoint, pool, self.settings.connect_timeout_s, self.settings.read_timeout_s)

    async def _start_proxy(self, spec: BackendSpec) -> tuple[str, dict[str, str] | None]:
        u = urlsplit(spec.endpoint or f"https://s3.{spec.region}.amazonaws.com")
        tls = u.scheme == "https"
        port = u.port or (443 if tls else 80)
        proxy = ShapingProxy(u.hostname or "", port, spec.shaping, tunnel=tls)
        await proxy.start()
        self._proxies[spec.name] = proxy
        if tls:
            # TLS stays end to end: boto3 tunnels through the proxy with CONNECT.
            return "", {"https": f"http://127.0.0.1:{proxy.port}"}
        return f"http://127.0.0.1:{proxy.port}", None

    async def _drop(self, name: str) -> None:
        cached = self._stores.pop(name, None)
        self._routes.pop(name, None)
        if cached is not None:
            cached[1].close()
        proxy = self._proxies.pop(name, None)
        if proxy is not None:
            await proxy.stop()

    # --- the API's backend operations ------------------------------------------------------

    async def list(self) -> list[tuple[BackendSpec, bool]]:
        """Each backend with whether it has credentials (values never leave). Resolving them may
        read files, so it runs in the executor."""
        return await self._run(lambda: [(s, self.registry.has_credentials(s)) for s in self.registry.list()])

    async def put(self, spec: BackendSpec, inline: Credentials | None) -> tuple[BackendSpec, bool]:
        """Adds or replaces a backend (PutBackend): validated, its endpoint checked against the
        SSRF policy, written to the shared registry."""
        spec.validate()  # its own errors first, then where it points
        await self._run(self.endpoints.check, spec.endpoint)
        saved = await self._run(self.registry.put, spec, inline)
        await self._drop_changed()
        return saved, await self._run(self.registry.has_credentials, saved)

    async def remove(self, name: str) -> None:
        await self._run(self.registry.remove, name)
        await self._drop_changed()

    async def test_connection(self, name: str) -> ConnectionReport:
        """HeadBucket latency, then write, read back and delete a probe object. An unknown
        backend is NOT_FOUND (raised), not a failed test."""
        await self.spec(name)
        try:
            store = await self.store(name)
            head_ns = await store.head_bucket()
        except ServiceError as err:
            return ConnectionReport(False, message=err.message)
        rep = ConnectionReport(False, head_bucket_ns=head_ns)
        probe = self._probe_key(store.spec)
        payload = uuid.uuid4().bytes
        try:
            await store.put(probe, payload, "application/octet-stream")
            rep.can_write = True
            data, _, _ = await store.get(probe)
            rep.can_read = data == payload
            if not rep.can_read:
                rep.message = "the probe object read back differs from what was written"
        except ServiceError as err:
            rep.message = err.message
        finally:
            if rep.can_write:
                try:
                    await store.delete_keys([probe], Transfer())
                except ServiceError as err:
                    rep.message = rep.message or f"the probe object {probe!r} could not be deleted: {err.message}"
        rep.ok = rep.can_write and rep.can_read and not rep.message
        if rep.ok:
            rep.message = f"backend {store.spec.name!r} ({store.spec.label()}) is reachable and writable"
        return rep

    @staticmethod
    def _probe_key(spec: BackendSpec) -> str:
        return scoped(spec.allowed_prefixes, f"_ddnrag/probe/{uuid.uuid4().hex}")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for name in list(self._stores):
            await self._drop(name)
        for name in list(self._proxies):
            await self._proxies.pop(name).stop()
