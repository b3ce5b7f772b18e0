"""The dynamic batcher with a deterministic stand-in model (vector = [len(ids), first id, ...])."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from kernel.errors import ServiceError
from services.embedder.batcher import Batcher, plan_batches

DIM = 3


class Recorder:
    """Runs "inference" by describing each input; records every batch it saw."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[tuple[int, ...]]] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def __call__(self, items: list[tuple[int, ...]]) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.array([[len(x), x[0], sum(x)] for x in items], dtype=np.float32)


def ids(n: int, tag: int) -> tuple[int, ...]:
    return (tag,) * n


def test_plan_batches_sorts_by_length_and_respects_budget() -> None:
    lengths = [10, 200, 12, 190, 11, 5]
    batches = plan_batches(lengths, max_batch_tokens=400, max_batch_texts=100)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 400
    # Short texts travel together, long ones together: sorted order.
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_plan_batches_lone_text_over_budget_and_text_cap() -> None:
    assert plan_batches([900], 400, 100) == [[0]]
    assert [len(b) for b in plan_batches([1] * 10, 1000, 4)] == [4, 4, 2]


async def test_results_come_back_in_input_order() -> None:
    rec = Recorder()
    b = Batcher(rec, DIM, max_batch_tokens=64, max_wait_s=0.001)
    b.start()
    try:
        items = [ids(n, tag) for tag, n in enumerate([7, 1, 30, 3, 3, 12], start=1)]
        stats = await b.submit(items)
        assert stats.vectors[:, 0].tolist() == [7, 1, 30, 3, 3, 12]
        assert stats.vectors[:, 1].tolist() == [1, 2, 3, 4, 5, 6]
        assert stats.compute_tokens == 56
        assert stats.batches >= 2  # 6 texts x 30 tokens > 64
        assert all(len(batch) * max(map(len, batch)) <= 64 or len(batch) == 1 for batch in rec.batches)
        assert rec.threads == {next(iter(rec.threads))} and "embedder-infer" in next(iter(rec.threads))
    finally:
        await b.close()


async def test_concurrent_requests_share_batches() -> None:
    rec = Recorder(delay_s=0.01)
    b = Batcher(rec, DIM, max_batch_tokens=4096, max_wait_s=0.005)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit([ids(5, k)]) for k in range(1, 33)))
        assert [int(r.vectors[0, 1]) for r in results] == list(range(1, 33))
        # 32 single-text requests ran in far fewer model calls than 32.
        assert len(rec.batches) <= 4
        assert max(len(x) for x in rec.batches) >= 8
        assert all(r.inference_time_ns > 0 for r in results)
    finally:
        await b.close()


async def test_batching_off_runs_each_request_alone() -> None:
    rec = Recorder(delay_s=0.002)
    b = Batcher(rec, DIM, max_batch_tokens=4096, max_wait_s=0.005, dynamic=False)
    b.start()
    try:
        await asyncio.gather(*(b.submit([ids(5, k), ids(4, k)]) for k in range(1, 9)))
        assert len(rec.batches) == 8
        assert all(len({x[0] for x in batch}) == 1 for batch in rec.batches)
    finally:
        await b.close()


async def test_full_queue_refuses_whole_request() -> None:
    rec = Recorder(delay_s=0.05)
    b = Batcher(rec, DIM, max_batch_tokens=16, max_wait_s=0.0, max_queue_texts=4)
    b.start()
    try:
        first = asyncio.create_task(b.submit([ids(8, 1)]))
        await asyncio.sleep(0.01)  # the worker took it; the queue is empty again
        second = asyncio.create_task(b.submit([ids(8, 2)] * 3))
        await asyncio.sleep(0)
        with pytest.raises(ServiceError) as err:
            await b.submit([ids(8, 3)] * 2)
        assert err.value.reason == "EMBEDDER_QUEUE_FULL"
        assert err.value.code.name == "RESOURCE_EXHAUSTED"
        assert "4" in err.value.message
        assert b.queued_texts == 3  # nothing of the refused request was queued
        await asyncio.gather(first, second)
        assert b.queued_texts == 0
    finally:
        await b.close()


async def test_cancelled_request_is_skipped() -> None:
    rec = Recorder(delay_s=0.05)
    b = Batcher(rec, DIM, max_batch_tokens=8, max_wait_s=0.0)
    b.start()
    try:
        busy = asyncio.create_task(b.submit([ids(8, 1)]))
        await asyncio.sleep(0.01)
        doomed = asyncio.create_task(b.submit([ids(8, 2)]))
        await asyncio.sleep(0)
        doomed.cancel()
        await busy
        assert (await b.submit([ids(8, 3)])).vectors[0, 1] == 3
        assert all(batch[0][0] != 2 for batch in rec.batches)
    finally:
        await b.close()


async def test_inference_error_reaches_the_caller_and_worker_survives() -> None:
    calls = {"n": 0}

    def flaky(items: list[tuple[int, ...]]) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return np.ones((len(items), DIM), np.float32)

    b = Batcher(flaky, DIM, max_batch_tokens=64, max_wait_s=0.0)
    b.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit([ids(3, 1)])
        assert (await b.submit([ids(3, 1)])).vectors.shape == (1, DIM)
    finally:
        await b.close()


async def test_close_fails_queued_requests_with_unavailable() -> None:
    rec = Recorder(delay_s=0.1)
    b = Batcher(rec, DIM, max_batch_tokens=8, max_wait_s=0.0)
    b.start()
    busy = asyncio.create_task(b.submit([ids(8, 1)]))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(b.submit([ids(8, 2)]))
    await asyncio.sleep(0)
    await b.close()
    for task in (queued, busy):
        with pytest.raises(ServiceError) as err:
            await task
        assert err.value.code.name == "UNAVAILABLE"


async def test_wait_for_room_queues_once_there_is_space() -> None:
    rec = Recorder(delay_s=0.02)
    b = Batcher(rec, DIM, max_batch_tokens=16, max_wait_s=0.0, max_queue_texts=4)
    b.start()
    try:
        tasks = [asyncio.create_task(b.submit([ids(8, k)] * 4, wait_for_room=True)) for k in range(1, 6)]
        results = await asyncio.gather(*tasks)
        assert [int(r.vectors[0, 1]) for r in results] == [1, 2, 3, 4, 5]
        assert b.queued_texts == 0
    finally:
        await b.close()
