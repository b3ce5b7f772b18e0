"""Fault scenarios on a running `rag up` stack, shared by the CI suite and bench/reliability.py.

Each scenario returns a plain dict of what it measured, so the bench can write it to JSON and the
tests can assert on it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from clients.base import ServiceCallError
from clients.retriever import RetrieverClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from testkit.faults import harness
from testkit.sse import iter_sse
from testkit.stack import RunningStack


async def start_job(stack: RunningStack, collection: str, prefix: str) -> str:
    client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"))
    try:
        job = await client.start_ingest(collection, [], source_prefix=prefix, timeout=30)
    finally:
        await client.close()
    return job.job_id


async def kill_mid_ingestion(
    stack: RunningStack, child: str, docs: dict[str, bytes], collection: str
) -> dict[str, Any]:
    """SIGKILLs `child` once the job has committed some chunks but not all; waits for the job to
    end (resubmitting it once if it failed while its peer was down, as an operator would) and
    audits the bucket against the index and the chunk set computed from the corpus."""
    s3 = harness.s3_client(stack)
    prefix = harness.put_corpus(s3, collection, docs)
    t0 = time.monotonic()
    job_id = await start_job(stack, collection, prefix)
    killed_mid = False
    killed_at = ""
    client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"), retries=0)
    try:
        # Until the first commit (a write batch of chunks and their sentence vectors embedded), or
        # the job's end: on a loaded 2-core machine the first commit can take minutes, and a fixed
        # 120 s window ended before it, so the kill never happened (a fresh-clone run at load 6-15).
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            job = await harness.job_state(client, job_id)
            if job is not None and pb.JobState.Name(job.state) in harness.TERMINAL:
                break
            if (
                job is not None
                and pb.JobState.Name(job.state) == "JOB_STATE_RUNNING"
                and job.documents_total > 0
                and job.documents_done < job.documents_total
                and job.chunks_done > 0
            ):
                killed_mid = True
                killed_at = f"{job.stage}: {job.documents_done}/{job.documents_total} documents"
                break
            await asyncio.sleep(0.02)
    finally:
        await client.close()
    old = harness.sigkill(stack, child) if killed_mid else 0
    if killed_mid:
        await asyncio.to_thread(harness.wait_restarted, stack, child, old)
    job = await harness.wait_job(stack, job_id)
    first_state = pb.JobState.Name(job.state)
    first_error = job.error
    resubmitted = False
    if first_state != "JOB_STATE_SUCCEEDED":
        # The retriever records a job whose peer stayed away past its retries as failed; running
        # the same ingestion again must converge on the same chunk set (content-addressed ids).
        resubmitted = True
        job = await harness.wait_job(stack, await start_job(stack, collection, prefix))
    a = harness.audit(s3, collection, harness.expected_chunks(collection, docs))
    return {
        "scenario": f"sigkill_{child}_mid_ingestion",
        "documents": len(docs),
        "killed_mid_ingestion": killed_mid,
        "first_job_state": first_state,
        "first_job_error": first_error,
        "resubmitted": resubmitted,
        "final_job_state": pb.JobState.Name(job.state),
        "killed_at": killed_at,
        "seconds": round(time.monotonic() - t0, 1),
        **a.as_dict(),
    }


async def ask(session: aiohttp.ClientSession, url: str, q: str, timeout_s: float) -> dict[str, Any]:
    """One SSE answer: its events, whether it ended with a terminal event, and how long it took."""
    t0 = time.monotonic()
    kinds: list[str] = []
    status = 0
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(f"{url}/api/rag/stream", params={"q": q}) as resp:
                status = resp.status
                if resp.status == 200:
                    async for ev in iter_sse(resp):
                        kinds.append(ev.event)
                        if ev.event in ("done", "error"):
                            break
    except TimeoutError:
        return {"status": status, "events": kinds, "hung": True, "seconds": time.monotonic() - t0}
    except aiohttp.ClientError as err:
        return {"status": status, "events": kinds, "hung": False, "client_error": str(err), "seconds": 0.0}
    return {"status": status, "events": kinds, "hung": False, "seconds": time.monotonic() - t0}


async def kill_mid_answer(stack: RunningStack, child: str, streams: int = 8, timeout_s: float = 90) -> dict[str, Any]:
    """Opens `streams` answers, SIGKILLs `child` once tokens flow, then asks once more after the
    restart. Every stream must end (error event, done, or a 4xx/5xx status), none may hang."""
    q = "What does the Zephyr loop keep below 30 degrees?"
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(ask(session, stack.url, f"{q} ({i})", timeout_s)) for i in range(streams)]
        await asyncio.sleep(1.0)
        old = harness.sigkill(stack, child)
        results = await asyncio.gather(*tasks)
        await asyncio.to_thread(harness.wait_restarted, stack, child, old)
        after: dict[str, Any] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            after = await ask(session, stack.url, q, 60)
            if after["events"] and after["events"][-1] == "done":
                break
            await asyncio.sleep(1.0)
    hung = sum(r["hung"] for r in results)
    ended = sum((bool(r["events"]) and r["events"][-1] in ("done", "error")) or r["status"] >= 400 for r in results)
    return {
        "scenario": f"sigkill_{child}_mid_answer",
        "streams": streams,
        "hung": hung,
        "ended_with_terminal_event_or_status": ended,
        "errors": sum(bool(r["events"]) and r["events"][-1] == "error" for r in results),
        "done": sum(bool(r["events"]) and r["events"][-1] == "done" for r in results),
        "statuses": sorted({r["status"] for r in results}),
        "next_question_ok": bool(after.get("events")) and after["events"][-1] == "done",
    }


async def retriever_reachable(stack: RunningStack) -> bool:
    client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"), retries=0)
    try:
        await client.list_collections(timeout=5)
        return True
    except ServiceCallError:
        return False
    finally:
        await client.close()
