"""Two retriever replicas (two cores, two job managers) over one store: job calls work on either,
only the lease holder runs jobs, a cancel sent to the other replica is honoured, and a job whose
holder dies is finished by the other from its last committed batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.retriever.catalog import Catalog
from services.retriever.core import Retriever, Settings
from services.retriever.jobs import JobManager, JobTiming
from services.retriever.lease import LeaseKeeper, StoreLeaseBackend
from tests.support.retriever_doubles import DictStore, HashingEncoder, upload

pytestmark = pytest.mark.asyncio


async def replica(store: DictStore, name: str, tmp: Path, timing: JobTiming | None = None) -> JobManager:
    s = Settings(state_dir=tmp / name, chunk_size_tokens=32, chunk_overlap_tokens=4, write_batch=2, embed_batch=2)
    r = Retriever(store, HashingEncoder(), s, Catalog(store))
    await r.start()
    keeper = LeaseKeeper(StoreLeaseBackend(store), name, 0.5)
    timing = timing or JobTiming(progress_write_s=0.05, follow_poll_s=0.02, adopt_poll_s=0.05, heartbeat_s=5)
    jobs = JobManager(r, keeper, timing)
    await jobs.start()
    return jobs


async def idle_holder(store: DictStore, tmp: Path) -> JobManager:
    """The lease holder, with its adoption loop and progress poll an hour apart: it runs only the
    jobs a test hands it."""
    timing = JobTiming(progress_write_s=3600, follow_poll_s=0.02, adopt_poll_s=3600, heartbeat_s=5)
    a = await replica(store, "a", tmp, timing)
    await asyncio.sleep(0.1)  # the adoption loop's first pass runs now (and finds nothing), then sleeps
    return a


def corpus(n: int) -> dict[str, str]:
    return {f"d{i}": f"Document {i} is about topic {i} and nothing else. " * 5 for i in range(n)}


async def test_any_replica_answers_and_cancels(tmp_path: Path) -> None:
    store = DictStore()
    a = await replica(store, "a", tmp_path)
    b = await replica(store, "b", tmp_path)
    try:
        assert a.keeper.held and not b.keeper.held
        specs = await upload(store, "kb", corpus(6))
        a.r.encoder.gate = asyncio.Event()  # the holder's embedding blocks: the job stays running
        job = await b.start_ingest("kb", specs)  # through the replica that does not run jobs
        while job.job_id not in a.live:
            await asyncio.sleep(0.01)
        assert job.job_id not in b.live
        assert (await b.get(job.job_id)).state in ("queued", "running")
        twin = await b.start_ingest("kb", specs)
        assert twin.job_id == job.job_id  # an identical request joins, through any replica
        listed, _ = await b.list("kb", 10, "")
        assert [v.job_id for v in listed] == [job.job_id]
        view = await b.cancel(job.job_id)  # recorded in the store, honoured by the holder
        assert view.state == "cancelled"
        assert (await a.get(job.job_id)).state == "cancelled"
        assert "index/kb/CURRENT" not in store.data[""]  # nothing published
    finally:
        a.r.encoder.gate.set()
        await a.stop()
        await b.stop()


async def test_holder_dies_and_the_other_finishes_exactly(tmp_path: Path) -> None:
    store = DictStore()
    a = await replica(store, "a", tmp_path)
    b = await replica(store, "b", tmp_path)
    docs = corpus(16)
    specs = await upload(store, "kb", docs)
    store.delay_s = 0.03
    job = await a.start_ingest("kb", specs)
    while (await b.get(job.job_id)).documents_done < 4:
        await asyncio.sleep(0.01)
    # A "dies": no more renewals, its tasks stop, nothing is released or marked.
    assert a.keeper._task is not None
    a.keeper._task.cancel()
    await a._stop_all()
    events = [ev async for ev in b.follow(job.job_id)]
    last = events[-1][1]
    assert last.state == "succeeded" and last.documents_done == 16
    assert b.keeper.held and b.keeper.token == 2
    resumed = next(v for seq, v, _ in events if seq >= 10_000)
    assert resumed.documents_done >= 4  # from the last committed batch, not from scratch
    snap = b.r.collections["kb"].snapshot
    ids = [r.chunk_id for r in snap.records]
    assert len(ids) == len(set(ids)) and {r.document_id for r in snap.records} == set(docs)
    assert {k.rsplit("/", 1)[-1] for k in store.data[""] if k.startswith("chunks/kb/")} == set(ids)
    assert not [k for k in store.data[""] if k.startswith(("jobs/active/", f"jobs/{job.job_id}/batches/"))]
    await a.stop()
    await b.stop()


async def test_a_cancel_that_arrives_while_the_job_is_being_adopted_stops_it(tmp_path: Path) -> None:
    """The job is stored but not yet running on the holder when the cancel arrives; the holder's
    progress poll (which also reads cancel requests) is an hour away. The cancel must still stop
    the job as soon as this replica starts it, not wait for that poll (seen as a CLI cancel that
    answered RUNNING on a loaded machine)."""
    store = DictStore()
    a = await idle_holder(store, tmp_path)
    r = a.r
    b = await replica(store, "b", tmp_path)
    try:
        assert a.keeper.held and not b.keeper.held
        specs = await upload(store, "kb", corpus(6))
        r.encoder.gate = asyncio.Event()  # once running, the job blocks in embedding
        job = await b.start_ingest("kb", specs)  # stored; the holder has not adopted it yet
        assert job.job_id not in a.live
        cancel = asyncio.create_task(a.cancel(job.job_id, wait_s=30))
        while not await a.state.cancel_requested(job.job_id):
            await asyncio.sleep(0.01)
        await a._adopt(job.job_id)  # the holder's adoption loop takes its turn
        view = await cancel
        assert view.state == "cancelled"
        assert "index/kb/CURRENT" not in store.data[""]
    finally:
        r.encoder.gate.set()
        await a.stop()
        await b.stop()


async def test_a_cancel_before_the_jobs_task_first_runs_stops_it(tmp_path: Path) -> None:
    """The holder has just adopted the job: its task exists but has not run a step. Cancelling a
    task then means its body never runs, so nothing recorded the cancellation and the job stayed
    `queued` on this replica for good (a fresh-clone run failed the test above this way, its cancel
    answering `queued` after 30 s). Here nothing yields between the adoption and the cancel."""
    store = DictStore()
    a = await idle_holder(store, tmp_path)
    b = await replica(store, "b", tmp_path)
    try:
        specs = await upload(store, "kb", corpus(6))
        job = await b.start_ingest("kb", specs)  # stored; the holder has not adopted it yet
        assert job.job_id not in a.live
        await a._adopt(job.job_id)
        assert a.live[job.job_id].task is not None and not a.live[job.job_id].task.done()
        view = await a.cancel(job.job_id, wait_s=5)
        assert view.state == "cancelled"
        assert job.job_id not in a.live  # nothing left behind on this replica
        assert (await b.get(job.job_id)).state == "cancelled"  # and recorded for every replica
        assert "index/kb/CURRENT" not in store.data[""]
    finally:
        await a.stop()
        await b.stop()
