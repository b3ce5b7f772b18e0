"""Prefix limits hold for every operation (finding 7), work is bounded (8) and CSV cells cannot run
as formulas (9). The storage core over the real SeaweedFS; watches over the retriever core."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kernel.errors import ServiceError
from services.retriever.prefix_watch import MAX_WATCHES, PrefixWatchManager
from services.storage.bench_engine import BenchmarkEngine
from services.storage.bench_model import BenchRequest, LevelStats, RunRecord, run_to_csv
from services.storage.core import StorageCore
from services.storage.model import BackendSpec, Credentials, Kind
from tests.security.test_ssrf import _cfg
from tests.support.retriever_doubles import close, make


@pytest.fixture
async def core(seaweed, s3_bucket, tmp_path: Path) -> AsyncIterator[StorageCore]:
    c = StorageCore(_cfg(seaweed, s3_bucket, tmp_path))
    scoped = BackendSpec(
        name="scoped",
        kind=Kind.S3_COMPATIBLE,
        endpoint=seaweed.endpoint,
        bucket=s3_bucket,
        allowed_prefixes=("tenant-a/",),
    )
    await c.backends.put(scoped, Credentials(seaweed.access_key_id, seaweed.secret_access_key))
    await c.put("", "tenant-b/secret.txt", b"another tenant's object", "text/plain")
    await c.put("scoped", "tenant-a/mine.txt", b"mine", "text/plain")
    try:
        yield c
    finally:
        await c.close()


async def _denied(coro) -> str:
    with pytest.raises(ServiceError) as err:
        await coro
    return err.value.reason


async def test_allowed_prefixes_hold_for_list_and_prefix_delete(core: StorageCore) -> None:
    assert await _denied(core.list("scoped", "", 100, "")) == "PREFIX_NOT_ALLOWED"
    assert await _denied(core.list("scoped", "tenant-b/", 100, "")) == "PREFIX_NOT_ALLOWED"
    assert await _denied(core.delete("scoped", [], prefix="tenant-b/")) == "PREFIX_NOT_ALLOWED"
    assert await _denied(core.delete("scoped", [], prefix="tenant")) == "PREFIX_NOT_ALLOWED"
    objs, _, _ = await core.list("scoped", "tenant-a/", 100, "")
    assert [o.key for o in objs] == ["tenant-a/mine.txt"]
    objs, _, _ = await core.list("", "tenant-b/", 100, "")
    assert [o.key for o in objs] == ["tenant-b/secret.txt"]  # untouched


async def test_benchmarks_write_under_the_allowed_prefix_one_at_a_time(core: StorageCore) -> None:
    engine = BenchmarkEngine(core)
    req = BenchRequest(backends=["scoped"], operation="put", levels=[2], sizes=[1024], ops_per_level=20)
    first = engine.run(req)
    await anext(first)  # the run holds the backend now
    busy = engine.run(BenchRequest(backends=["scoped"], operation="get", levels=[1], sizes=[1024], ops_per_level=5))
    assert await _denied(anext(busy)) == "BENCHMARK_BUSY"
    async for _ in first:
        pass
    objs, _, _ = await core.list("", "", 1000, "")
    stray = [o.key for o in objs if o.key.startswith("bench/tmp/")]
    assert not stray, stray  # nothing written outside tenant-a/
    again = engine.run(BenchRequest(backends=["scoped"], operation="get", levels=[1], sizes=[1024], ops_per_level=5))
    async for _ in again:  # free again once the first run ended
        pass


def test_csv_cells_cannot_start_a_formula() -> None:
    stats = LevelStats(
        backend="b",
        label='=HYPERLINK("http://evil")',
        emulated=False,
        operation="get",
        object_size_bytes=1,
        concurrency=1,
        errors_by_kind={"=cmd|' /C calc'!A0": 2, "SlowDown": 1},
    )
    run = RunRecord("r1", 0, 0, BenchRequest(backends=["b"]), results=[stats])
    rows = list(csv.reader(io.StringIO(run_to_csv(run))))
    cells = [c for row in rows[1:] for c in row]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))], cells
    assert '\'=HYPERLINK("http://evil")' in cells


async def test_watches_need_an_interval_of_a_second_and_are_capped(tmp_path: Path) -> None:
    r, jobs = await make(tmp_path)
    watches = PrefixWatchManager(jobs, r.catalog)
    try:
        for bad in (0.001, 0.5):
            assert await _denied(watches.start_watch("auto", "in/", interval_s=bad)) == "BAD_INTERVAL"
        for i in range(MAX_WATCHES):
            await watches.start_watch("auto", f"in{i}/", interval_s=3600)
        assert await _denied(watches.start_watch("auto", "one-more/", interval_s=3600)) == "TOO_MANY_WATCHES"
    finally:
        await watches.stop()
        await close(r, jobs)
