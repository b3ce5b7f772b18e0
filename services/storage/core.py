"""The storage service's work in plain Python: named backends, object operations with measured
transfers, streaming Put (multipart above a threshold, aborted on failure) and streaming Get
(resumed with a ranged read after a mid-transfer reset).

No grpc or protobuf types here; the servicer converts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from services.common.errors import ErrorKind, ServiceError, invalid
from services.common.timing import Stage, Timer

from .config import StorageConfig
from .credentials import from_path
from .endpoint_policy import EndpointPolicy
from .fastget import FastGetter
from .keys import check_key, check_prefix, require_allowed, scoped
from .model import BackendSpec, Credentials, Kind, ObjectMeta, Transfer
from .registry import BackendRegistry
from .s3 import ClientSettings, S3Store, build_client
from .shaping import ShapingProxy
from .streams import GetStream, PutOutcome, check_size, multipart_upload

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * 1024 * 1024


@dataclass
class ItemResult:
    """One item of a batch: either `error` or the data/meta/etag, with its transfer."""

    key: str
    transfer: Transfer = field(default_factory=Transfer)
    data: bytes = b""
    meta: ObjectMeta | None = None
    etag: str = ""
    error: ServiceError | None = None


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


def range_header(start: int, end: int) -> str:
    if start < 0 or end < 0:
        raise invalid("range_start and range_end must be >= 0", reason="INVALID_RANGE")
    if start == 0 and end == 0:
        return ""
    if end and end < start:
        raise invalid(f"range_end {end} is before range_start {start}", reason="INVALID_RANGE")
    return f"bytes={start}-{end if end else ''}"


class StorageCore:
    def __init__(self, cfg: StorageConfig, registry: BackendRegistry | None = None) -> None:
        self.cfg = cfg
        if registry is None:
            spec, creds = default_spec(cfg)
            registry = BackendRegistry(cfg.state_dir, spec, creds)
        self.registry = registry
        # SSRF guard for backends added at run time (endpoint_policy.py says why it lives here).
        self.endpoints = EndpointPolicy.build(cfg.endpoint_allowlist, registry.default.endpoint)
        self.settings = ClientSettings(
            max_pool_connections=cfg.max_concurrency,
            connect_timeout_s=cfg.connect_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            max_retries=cfg.max_retries,
            retry_base_ms=cfg.retry_base_ms,
        )
        self.executor = ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="s3")
        self._stores: dict[str, tuple[BackendSpec, S3Store]] = {}
        self._proxies: dict[str, ShapingProxy] = {}
        self._routes: dict[str, tuple[str, dict[str, str] | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        if registry.default.insecure_skip_verify:
            log.warning("TLS verification is OFF for the default backend (explicit opt-out)")

    # --- backends ------------------------------------------------------------------------

    @property
    def default_backend(self) -> str:
        return self.registry.default.name

    async def store(self, name: str) -> S3Store:
        """The client for backend `name` (built once, in the executor; rebuilt when it changes)."""
        spec = self.registry.get(name)
        cached = self._stores.get(spec.name)
        if cached is not None and cached[0] == spec:
            return cached[1]
        lock = self._locks.setdefault(spec.name, asyncio.Lock())
        async with lock:
            cached = self._stores.get(spec.name)
            if cached is not None and cached[0] == spec:
                return cached[1]
            await self._drop(spec.name)
            loop = asyncio.get_running_loop()
            if not spec.is_default:  # resolved again at each build: a rebound name is caught here
                await loop.run_in_executor(self.executor, self.endpoints.check, spec.endpoint)
            creds = await loop.run_in_executor(self.executor, self.registry.credentials, spec)
            endpoint_override, proxies = "", None
            if spec.emulated:
                endpoint_override, proxies = await self._start_proxy(spec)
            client = await loop.run_in_executor(
                self.executor,
                lambda: build_client(spec, creds, self.settings, endpoint_override=endpoint_override, proxies=proxies),
            )
            store = S3Store(spec, client, self.executor, self.settings)
            store.fast = self._fast(spec, creds, endpoint_override, proxies, self.settings.max_pool_connections)
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
        loop = asyncio.get_running_loop()
        creds = await loop.run_in_executor(self.executor, self.registry.credentials, spec)
        settings = ClientSettings(
            max_pool_connections=pool,
            connect_timeout_s=self.settings.connect_timeout_s,
            read_timeout_s=self.settings.read_timeout_s,
            max_retries=0,
            retry_base_ms=self.settings.retry_base_ms,
        )
        client = await loop.run_in_executor(
            self.executor,
            lambda: build_client(spec, creds, settings, endpoint_override=endpoint_override, proxies=proxies),
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

    async def _start_proxy(self, spec: BackendSpec) -> tuple[str, dict[str, str] | None]:
        from urllib.parse import urlsplit

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

    async def list_backends(self) -> list[tuple[BackendSpec, bool]]:
        """Each backend with whether it has credentials (values never leave). Resolving them may
        read files, so it runs in the executor."""

        def resolve() -> list[tuple[BackendSpec, bool]]:
            return [(s, self.registry.has_credentials(s)) for s in self.registry.list()]

        return await asyncio.get_running_loop().run_in_executor(self.executor, resolve)

    async def put_backend(self, spec: BackendSpec, inline: Credentials | None) -> tuple[BackendSpec, bool]:
        loop = asyncio.get_running_loop()
        spec.validate()  # its own errors first, then where it points
        await loop.run_in_executor(self.executor, self.endpoints.check, spec.endpoint)
        saved = await loop.run_in_executor(self.executor, self.registry.put, spec, inline)
        await self._drop(saved.name)
        has = await loop.run_in_executor(self.executor, self.registry.has_credentials, saved)
        return saved, has

    async def remove_backend(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self.registry.remove, name)
        await self._drop(name)

    async def test_connection(self, name: str) -> ConnectionReport:
        """HeadBucket latency, then write, read back and delete a probe object. An unknown
        backend is NOT_FOUND (raised), not a failed test."""
        self.registry.get(name)
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
        for name in list(self._stores):
            await self._drop(name)
        for name in list(self._proxies):
            proxy = self._proxies.pop(name)
            await proxy.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # --- objects -------------------------------------------------------------------------

    async def _open(self, backend: str, *keys: str) -> S3Store:
        for k in keys:
            check_key(k)
        store = await self.store(backend)
        for k in keys:
            require_allowed(store.spec.name, store.spec.allowed_prefixes, k)
        return store

    async def put(
        self,
        backend: str,
        key: str,
        data: bytes,
        content_type: str = "",
        metadata: dict[str, str] | None = None,
        timer: Timer | None = None,
    ) -> PutOutcome:
        async def once() -> AsyncIterator[bytes]:
            yield data

        return await self.put_stream(backend, key, once(), content_type, metadata, len(data), timer)

    async def put_stream(
        self,
        backend: str,
        key: str,
        chunks: AsyncIterable[bytes],
        content_type: str = "",
        metadata: dict[str, str] | None = None,
        size_hint: int = 0,
        timer: Timer | None = None,
    ) -> PutOutcome:
        """Stores the bytes of `chunks`. Up to the threshold they go up in one PUT once the stream
        ended; above it as a multipart upload that is aborted if anything fails (the client's
        stream included), so no partial object is ever visible."""
        store = await self._open(backend, key)
        _check_metadata(metadata)
        threshold = max(self.cfg.multipart_threshold_bytes, 1)
        part_size = max(self.cfg.multipart_part_bytes, MIN_PART_BYTES)
        buf = bytearray()
        it = chunks.__aiter__()
        ended = False
        while len(buf) <= threshold:
            try:
                buf += await it.__anext__()
            except StopAsyncIteration:
                ended = True
                break
        if ended:
            check_size(size_hint, len(buf))
            etag, tr = await store.put(key, bytes(buf), content_type, metadata)
            if timer:
                timer.add(Stage("s3_put", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
            return PutOutcome(key, len(buf), etag, False, tr)
        return await multipart_upload(store, key, buf, it, content_type, metadata, part_size, timer, size_hint)

    async def get(
        self, backend: str, key: str, start: int = 0, end: int = 0, timer: Timer | None = None
    ) -> tuple[bytes, ObjectMeta, Transfer]:
        rng = range_header(start, end)
        store = await self._open(backend, key)
        data, meta, tr = await store.get(key, rng)
        if timer:
            timer.add(Stage("s3_get", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
        return data, meta, tr

    async def open_get(self, backend: str, key: str, start: int = 0, end: int = 0) -> GetStream:
        rng = range_header(start, end)
        store = await self._open(backend, key)
        stream = GetStream(store, key, start, end, self.cfg.get_chunk_bytes)
        await stream.open(rng)
        return stream

    async def batch_get(self, backend: str, keys: Sequence[str], timer: Timer | None = None) -> list[ItemResult]:
        self._check_batch(len(keys))
        store = await self.store(backend)
        t0 = time.perf_counter_ns()

        async def one(k: str) -> ItemResult:
            try:
                await self._open(backend, k)
                data, meta, tr = await store.get(k)
                return ItemResult(k, tr, data, meta)
            except ServiceError as err:
                return ItemResult(k, error=err)

        results = cap_batch_bytes(list(await asyncio.gather(*(one(k) for k in keys))), BATCH_GET_BUDGET_BYTES)
        if timer:
            ok = [r for r in results if r.error is None]
            ttfbs = sorted(r.transfer.ttfb_ns for r in ok)
            timer.add(
                Stage(
                    "s3_batch_get",
                    time.perf_counter_ns() - t0,
                    store.spec.name,
                    ttfbs[len(ttfbs) // 2] if ttfbs else 0,
                    sum(r.transfer.bytes for r in ok),
                    len(ok),
                )
            )
        return results

    async def batch_put(
        self,
        backend: str,
        items: Sequence[tuple[str, bytes, str, dict[str, str]]],
        timer: Timer | None = None,
    ) -> list[ItemResult]:
        self._check_batch(len(items))
        store = await self.store(backend)
        t0 = time.perf_counter_ns()

        async def one(k: str, data: bytes, ctype: str, meta: dict[str, str]) -> ItemResult:
            try:
                await self._open(backend, k)
                if len(data) > self.cfg.max_batch_item_bytes:
                    raise invalid(
                        f"item {k[:80]!r} is {len(data)} bytes, over the BatchPut limit of "
                        f"{self.cfg.max_batch_item_bytes}; use Put for large objects",
                        reason="ITEM_TOO_LARGE",
                    )
                _check_metadata(meta)
                etag, tr = await store.put(k, data, ctype, meta)
                return ItemResult(k, tr, etag=etag)
            except ServiceError as err:
                return ItemResult(k, error=err)

        results = list(await asyncio.gather(*(one(*it) for it in items)))
        if timer:
            ok = [r for r in results if r.error is None]
            timer.add(
                Stage(
                    "s3_batch_put",
                    time.perf_counter_ns() - t0,
                    store.spec.name,
                    0,
                    sum(r.transfer.bytes for r in ok),
                    len(ok),
                )
            )
        return results

    def _check_batch(self, n: int) -> None:
        if n > self.cfg.max_batch_items:
            raise invalid(
                f"a batch carries at most {self.cfg.max_batch_items} items; got {n}", reason="BATCH_TOO_LARGE"
            )

    async def head(self, backend: str, key: str, timer: Timer | None = None) -> tuple[ObjectMeta, Transfer]:
        store = await self._open(backend, key)
        meta, tr = await store.head(key)
        if timer:
            timer.add(Stage("s3_head", tr.total_ns, store.spec.name, tr.ttfb_ns, 0, 1))
        return meta, tr

    async def list(
        self, backend: str, prefix: str, page_size: int, token: str, timer: Timer | None = None
    ) -> tuple[list[ObjectMeta], str, Transfer]:
        check_prefix(prefix)
        store = await self.store(backend)
        require_allowed(store.spec.name, store.spec.allowed_prefixes, prefix, "listing prefix")
        objs, nxt, tr = await store.list(prefix, page_size, token)
        if timer:
            timer.add(Stage("s3_list", tr.total_ns, store.spec.name, tr.ttfb_ns, 0, len(objs)))
        return objs, nxt, tr

    async def delete(
        self, backend: str, keys: Sequence[str], prefix: str = "", timer: Timer | None = None
    ) -> tuple[int, Transfer]:
        self._check_batch(len(keys))
        check_prefix(prefix)
        if not keys and not prefix:
            raise invalid("give keys to delete or a prefix", reason="NOTHING_TO_DELETE")
        store = await self._open(backend, *keys)
        if prefix:
            require_allowed(store.spec.name, store.spec.allowed_prefixes, prefix, "deletion prefix")
        tr = Transfer()
        t0 = time.perf_counter_ns()
        n = await store.delete_keys(list(dict.fromkeys(keys)), tr) if keys else 0
        if prefix:
            n += await store.delete_prefix(prefix, tr)
        if timer:
            timer.add(Stage("s3_delete", time.perf_counter_ns() - t0, store.spec.name, tr.ttfb_ns, 0, n))
        return n, tr

    async def copy(self, backend: str, src: str, dst: str, timer: Timer | None = None) -> tuple[ObjectMeta, Transfer]:
        check_key(src, "source key")
        check_key(dst, "destination key")
        store = await self._open(backend, src, dst)
        meta, tr = await store.copy(src, dst)
        if timer:
            timer.add(Stage("s3_copy", tr.total_ns, store.spec.name, tr.ttfb_ns, tr.bytes, 1))
        return meta, tr


# A BatchGet response must fit in one gRPC message (256 MiB), with room for the envelope.
BATCH_GET_BUDGET_BYTES = 240 * 1024 * 1024


def cap_batch_bytes(results: list[ItemResult], budget: int) -> list[ItemResult]:
    """Keeps results in order until their data would pass `budget`; later successes become
    RESOURCE_EXHAUSTED (their data dropped), so the response never exceeds the message limit."""
    used = 0
    for i, r in enumerate(results):
        if r.error is not None:
            continue
        if used + len(r.data) > budget:
            results[i] = ItemResult(
                r.key,
                error=ServiceError(
                    ErrorKind.RESOURCE_EXHAUSTED,
                    f"the batch's objects pass {budget >> 20} MiB; fetch {r.key[:80]!r} with Get or in a smaller batch",
                    reason="BATCH_TOO_LARGE",
                ),
            )
        else:
            used += len(r.data)
    return results


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if not metadata:
        return
    size = 0
    for k, v in metadata.items():
        if not k or not all(c.isalnum() or c in "-_" for c in k):
            raise invalid(f"metadata key {k[:40]!r} must be non-empty [A-Za-z0-9_-]", reason="INVALID_METADATA")
        if any(ord(c) < 0x20 or ord(c) > 0x7E for c in v):
            raise invalid(f"metadata value of {k!r} must be printable ASCII", reason="INVALID_METADATA")
        size += len(k) + len(v)
    if size > 2048:
        raise invalid("user metadata is limited to 2 KiB", reason="INVALID_METADATA")
