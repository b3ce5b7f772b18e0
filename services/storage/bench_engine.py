"""The warp-grade benchmark engine.

For each object size and concurrency level, the backends run one after another in an order that
rotates from level to level, so machine drift favours none. Each (backend, size, level) cell:

1. prepares a fresh pool of objects under `bench/tmp/<run_id>/` (not timed);
2. starts `concurrency` worker threads, each with its own connection, looping over operations;
3. a warm-up (`warmup_s`) runs first and is excluded from every number except cold TTFB;
4. the measured phase runs for `duration_s`, or until `ops_per_level` operations were made;
5. it ends when the last in-flight operation finished, so every counted operation lies inside
   the measured window.

Timings are taken in the worker thread: a `before-send` hook stamps when the request left,
`ttfb` is -> the first body byte reaching the host (GET) or -> the first response byte (no
body), both from kernel receive stamps (see wire.py); latency is -> the last byte, parsed. A failed operation is an error, counted by kind, never a success; botocore retries are
off, so throttling shows as errors. Cold TTFB is the first access to each object of the pool,
warm TTFB every later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from kernel.errors import ServiceError, not_found
from kernel.percentiles import percentile

from .bench_lock import BenchLocks, busy_error
from .bench_model import MIB, BenchRequest, LevelStats, Pct, Progress, RunRecord, run_to_csv, run_to_json
from .core import StorageCore
from .errors import kind_name
from .keys import scoped
from .s3 import S3Store

log = logging.getLogger(__name__)

POOL_BYTES = 256 * MIB  # the most a cell's object pool may hold
PROGRESS_EVERY_S = 0.5
Event = Progress | LevelStats | RunRecord


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


@dataclass
class Sample:
    latency_ns: int
    ttfb_ns: int
    nbytes: int


@dataclass
class Cell:
    """Shared state of one running cell; workers write their own lists, the loop reads them."""

    store: S3Store
    operation: str
    size: int
    concurrency: int
    prefix: str
    pool: int
    read_ratio: float
    payload: bytes
    ops_limit: int
    phase: int = 0  # 0 warm-up, 1 measured, 2 stop
    lock: threading.Lock = field(default_factory=threading.Lock)
    tickets: int = 0
    next_delete: int = 0
    seen: set[int] = field(default_factory=set)
    samples: list[list[Sample]] = field(default_factory=list)
    cold: list[list[int]] = field(default_factory=list)
    warm: list[list[int]] = field(default_factory=list)
    errors: list[Counter[str]] = field(default_factory=list)
    put_seq: int = 0

    def key(self, idx: int) -> str:
        return f"{self.prefix}o{idx:06d}"

    def ops_done(self) -> int:
        return sum(len(s) for s in self.samples)

    def errors_done(self) -> int:
        return sum(sum(c.values()) for c in self.errors)


class BenchmarkEngine:
    def __init__(self, core: StorageCore) -> None:
        self.core = core
        self._busy: set[str] = set()  # backends a run holds: one benchmark at a time per backend
        self.locks = BenchLocks(core)  # ... and across replicas

    async def run(self, req: BenchRequest) -> AsyncIterator[Event]:
        """Yields progress and finished levels while it runs, and the saved run last."""
        req.validate(self.core.cfg.max_benchmark_concurrency)
        names = {s.name for s in self.core.backends.registry.list()}
        backends = [b for b in req.backends if b in names]
        not_configured = [b for b in req.backends if b not in names]
        if not backends:
            raise not_found(
                f"none of the backends asked for is configured: {not_configured}; no numbers are made up for them",
                reason="BACKEND_NOT_FOUND",
            )
        busy = sorted(set(backends) & self._busy)
        if busy:
            raise busy_error(busy)
        self._busy.update(backends)
        levels = req.resolved_levels()
        run = RunRecord(new_run_id(), time.time_ns(), 0, req, not_configured=not_configured)
        pool = max(levels)
        stores: dict[str, S3Store] = {}
        held: dict[str, str] = {}
        keeper: asyncio.Task[None] | None = None
        try:
            # And across replicas: a lock object per backend in the store (bench_lock.py).
            held = await self.locks.acquire(backends, run.run_id)
            keeper = asyncio.create_task(self.locks.keep(held, run.run_id))
            for b in backends:
                stores[b] = await self.core.backends.dedicated_store(b, pool)
            total = len(levels) * len(req.sizes) * len(backends)
            done = 0
            for size in req.sizes:
                payload = os.urandom(size)
                for li, conc in enumerate(levels):
                    order = backends[li % len(backends) :] + backends[: li % len(backends)]
                    for b in order:
                        stats: LevelStats | None = None
                        async for ev in self._cell(run, req, stores[b], size, conc, payload, done, total):
                            if isinstance(ev, LevelStats):
                                stats = ev
                            yield ev
                        done += 1
                        assert stats is not None
                        run.results.append(stats)
            run.finished_unix_ns = time.time_ns()
            await self._save(run)
            yield run
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            await self.locks.release(held)
            self._busy.difference_update(backends)
            for store in stores.values():
                with contextlib.suppress(ServiceError):
                    await store.delete_prefix(scoped(store.spec.allowed_prefixes, f"bench/tmp/{run.run_id}/"), _tr())
                store.close()
                store.executor.shutdown(wait=False, cancel_futures=True)

    async def _save(self, run: RunRecord) -> None:
        import json

        run.json_key, run.csv_key = f"bench/{run.run_id}.json", f"bench/{run.run_id}.csv"
        body = json.dumps(run_to_json(run), indent=1).encode()
        await self.core.put("", run.csv_key, run_to_csv(run).encode(), "text/csv")
        await self.core.put("", run.json_key, body, "application/json")

    # --- one cell ------------------------------------------------------------------------

    async def _cell(
        self,
        run: RunRecord,
        req: BenchRequest,
        store: S3Store,
        size: int,
        conc: int,
        payload: bytes,
        done: int,
        total: int,
    ) -> AsyncIterator[Progress | LevelStats]:
        op = req.operation
        cap = max(1, POOL_BYTES // size)
        if op == "delete":
            want = req.ops_per_level + 2 * conc if req.ops_per_level and not req.duration_s else 50 * conc
            pool_n = min(max(want, 8), cap, 50_000)
        elif op == "list":
            pool_n = min(100, cap)
        else:
            pool_n = min(max(2 * conc, 8), cap)
        # Under the backend's allowed prefix: a benchmark writes only where the backend allows keys.
        prefix = scoped(store.spec.allowed_prefixes, f"bench/tmp/{run.run_id}/{store.spec.name}/{size}/{conc}/")
        cell = Cell(
            store=store,
            operation=op,
            size=size,
            concurrency=conc,
            prefix=prefix,
            pool=pool_n if op != "put" else 0,
            read_ratio=req.read_ratio or 0.5,
            payload=payload,
            ops_limit=0 if req.duration_s else req.ops_per_level,
        )
        cell.tickets = cell.ops_limit
        cell.samples = [[] for _ in range(conc)]
        cell.cold = [[] for _ in range(conc)]
        cell.warm = [[] for _ in range(conc)]
        cell.errors = [Counter() for _ in range(conc)]
        if op != "put":
            await self._prepare(store, cell, pool_n, payload)
        # Without a warm-up every operation is measured: phase 1 from the first one (a worker
        # that started under phase 0 dropped its first result, and on a loaded machine a short
        # level at high concurrency could end with nothing measured at all).
        cell.phase = 0 if req.warmup_s else 1
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(store.executor, self._worker, cell, w) for w in range(conc)]
        all_done = asyncio.gather(*futures)

        def progress() -> Progress:
            lat = sorted(s.latency_ns for lst in cell.samples for s in lst[-2000:])
            return Progress(
                store.spec.name, size, conc, cell.ops_done(), cell.errors_done(), percentile(lat, 50), done, total
            )

        t_start = time.perf_counter()
        try:
            if req.warmup_s:
                yield progress()
                await _wait(all_done, req.warmup_s)
            cell.phase = 1
            t_measure = time.perf_counter()
            while not all_done.done():
                left = PROGRESS_EVERY_S
                if req.duration_s:
                    remaining = req.duration_s - (time.perf_counter() - t_measure)
                    if remaining <= 0:
                        cell.phase = 2  # no new operations; wait for those in flight
                    else:
                        left = min(left, remaining)
                await _wait(all_done, left)
                if not all_done.done() and cell.phase != 2:
                    yield progress()
            await all_done
            elapsed = time.perf_counter() - t_measure
        finally:
            cell.phase = 2
            with contextlib.suppress(Exception):
                await asyncio.shield(all_done)
            with contextlib.suppress(ServiceError):
                await store.delete_prefix(prefix, _tr())
        log.info(
            "benchmark level done",
            extra={"backend": store.spec.name, "size": size, "concurrency": conc, "s": time.perf_counter() - t_start},
        )
        yield _stats(cell, req.operation, elapsed)

    async def _prepare(self, store: S3Store, cell: Cell, n: int, payload: bytes) -> None:
        sem = asyncio.Semaphore(max(1, min(32, POOL_BYTES // 8 // max(cell.size, 1))))

        async def one(i: int) -> None:
            body = i.to_bytes(8, "big") + payload[8:] if len(payload) > 8 else payload
            async with sem:
                await store.put(cell.key(i), body)

        await asyncio.gather(*(one(i) for i in range(n)))

    # --- worker threads ------------------------------------------------------------------

    def _worker(self, cell: Cell, wid: int) -> None:
        rng = random.Random(wid)
        k = 0
        ops: dict[str, Callable[[Cell, int, int, random.Random], tuple[int, int, int, bool | None]]] = {
            "get": _op_get,
            "put": _op_put,
            "stat": _op_stat,
            "list": _op_list,
            "delete": _op_delete,
            "mixed": _op_mixed,
        }
        fn = ops[cell.operation]
        while True:
            phase = cell.phase
            if phase == 2:
                return
            if phase == 1 and cell.ops_limit:
                with cell.lock:
                    if cell.tickets <= 0:
                        return
                    cell.tickets -= 1
            idx = (wid + k * cell.concurrency) % cell.pool if cell.pool else 0
            k += 1
            try:
                latency, ttfb, nbytes, cold = fn(cell, wid, idx, rng)
            except _PoolExhausted:
                return
            except Exception as exc:  # noqa: BLE001 - every failure is an error, by kind
                if phase == 1:
                    cell.errors[wid][kind_name(exc)] += 1
                continue
            if cold is True:
                cell.cold[wid].append(ttfb)
            elif cold is False and phase == 1:
                cell.warm[wid].append(ttfb)
            if phase == 1:
                cell.samples[wid].append(Sample(latency, ttfb, nbytes))


class _PoolExhausted(Exception):
    pass


class ShortRead(Exception):
    """A GET returned fewer bytes than the object holds (an error, never a success)."""


class ListIncomplete(Exception):
    """A LIST returned fewer keys than the pool holds."""


def _first_access(cell: Cell, idx: int) -> bool:
    with cell.lock:
        if idx in cell.seen:
            return False
        cell.seen.add(idx)
        return True


def _op_get(cell: Cell, wid: int, idx: int, rng: random.Random) -> tuple[int, int, int, bool | None]:
    store = cell.store
    cold = _first_access(cell, idx)
    t0 = store._mark()
    body, _resp = store.open_object(cell.key(idx))
    sent = store.sent_ns(t0)
    try:
        first, t_first = store.first_byte(body)
        n = len(first)
        for chunk in body.iter_chunks(1 << 20):
            n += len(chunk)
    finally:
        body.close()
    end = time.perf_counter_ns()
    if n != cell.size:
        raise ShortRead
    return end - sent, t_first - sent, n, cold


def _op_put(cell: Cell, wid: int, idx: int, rng: random.Random) -> tuple[int, int, int, bool | None]:
    store = cell.store
    with cell.lock:
        cell.put_seq += 1
        seq = cell.put_seq
    t0 = store._mark()
    store.client.put_object(Bucket=store.bucket, Key=f"{cell.prefix}p{wid}-{seq}", Body=cell.payload)
    end = time.perf_counter_ns()
    sent = store.sent_ns(t0)
    return end - sent, store.response_ns(end) - sent, cell.size, None


def _op_stat(cell: Cell, wid: int, idx: int, rng: random.Random) -> tuple[int, int, int, bool | None]:
    store = cell.store
    cold = _first_access(cell, idx)
    t0 = store._mark()
    store.client.head_object(Bucket=store.bucket, Key=cell.key(idx))
    end = time.perf_counter_ns()
    sent = store.sent_ns(t0)
    return end - sent, store.response_ns(end) - sent, 0, cold


def _op_list(cell: Cell, wid: int, idx: int, rng: random.Random) -> tuple[int, int, int, bool | None]:
    store = cell.store
    t0 = store._mark()
    resp = store.client.list_objects_v2(Bucket=store.bucket, Prefix=cell.prefix, MaxKeys=1000)
    end = time.perf_counter_ns()
    sent = store.sent_ns(t0)
    if len(resp.get("Contents", [])) != cell.pool:
        raise ListIncomplete
    return end - sent, store.response_ns(end) - sent, 0, None


def _op_delete(cell: Cell, wid: int, idx: int, rng: random.Random) -> tuple[int, int, int, bool | None]:
    store = cell.store
    with cell.lock:
        i = cell.next_delete
        cell.next_delete += 1
    if i >= cell.pool:
        raise _PoolExhausted
    t0 = store._mark()
    store.client.delete_object(Bucket=store.bucket, Key=cell.key(i))
    end = time.perf_counter_ns()
    sent = store.sent_ns(t0)
    return end - sent, store.response_ns(end) - sent, 0, None


def _op_mixed(cell: Cell, wid: int, idx: int, rng: random.Random) -> tuple[int, int, int, bool | None]:
    if rng.random() < cell.read_ratio:
        return _op_get(cell, wid, idx, rng)
    return _op_put(cell, wid, idx, rng)


def _stats(cell: Cell, operation: str, elapsed: float) -> LevelStats:
    samples = [s for lst in cell.samples for s in lst]
    errors: Counter[str] = Counter()
    for c in cell.errors:
        errors.update(c)
    cold = sorted(x for lst in cell.cold for x in lst)
    warm = sorted(x for lst in cell.warm for x in lst)
    nbytes = sum(s.nbytes for s in samples)
    spec = cell.store.spec
    return LevelStats(
        backend=spec.name,
        label=spec.label(),
        emulated=spec.emulated,
        operation=operation,
        object_size_bytes=cell.size,
        concurrency=cell.concurrency,
        ops=len(samples),
        errors=sum(errors.values()),
        errors_by_kind=dict(errors),
        duration_s=elapsed,
        ops_per_s=len(samples) / elapsed if elapsed > 0 else 0.0,
        mib_per_s=nbytes / MIB / elapsed if elapsed > 0 else 0.0,
        bytes=nbytes,
        latency=Pct.of([s.latency_ns for s in samples]),
        ttfb=Pct.of([s.ttfb_ns for s in samples]),
        cold_ttfb_p50_ns=percentile(cold, 50),
        warm_ttfb_p50_ns=percentile(warm, 50),
        cold_samples=len(cold),
        warm_samples=len(warm),
    )


async def _wait(fut: asyncio.Future[Any], timeout: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(fut), timeout)


def _tr() -> Any:
    from .model import Transfer

    return Transfer()
