"""Soak: 200 concurrent SSE chats with an ingestion running beside them, on a local stack.
Writes bench/results/soak.json.

    .venv/bin/python bench/soak.py                      # 540 s of load (the bench rule: < 10 min in all)
    .venv/bin/python bench/soak.py --duration-s 600     # the issue's full 10 minutes
    .venv/bin/python bench/soak.py --users 50 --duration-s 60   # a quick look

It starts `rag up` on free loopback ports, waits for a cited answer, then runs `--users` virtual
users, each looping GET /api/rag/stream?q=...&no_cache=1 to its terminal event (TTFT, errors: see
bench/gateway_load.py, whose chat client, bench/_loadclient.py, this reuses). Beside them, ingestion jobs run back to
back: 40 fresh documents per job written to the bucket and ingested through the retriever.
Every 10 s the RSS of every process of the stack (supervisor, SeaweedFS, each service, the
gateway) is sampled from /proc. The growth trend of each is the least-squares slope of RSS over
time after the first minute (start-up caches filling), in MiB per minute; TTFT p50/p99 and errors
are reported per 60 s window, so a drift over time is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _loadclient import QUESTIONS, Stats, one_chat, percentile, warm_up  # noqa: E402
from _procstat import rss_mb  # noqa: E402

from testkit.faults import harness  # noqa: E402
from testkit.faults.scenarios import start_job  # noqa: E402
from testkit.stack import RunningStack, start_stack  # noqa: E402

OUT = ROOT / "bench" / "results" / "soak.json"
WINDOW_S = 60.0
SAMPLE_S = 10.0
WARMUP_S = 60.0


class Windows:
    """Per-window chat stats: each chat is booked in the window it ended in."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.windows: dict[int, Stats] = {}

    def stats(self) -> Stats:
        return self.windows.setdefault(int((time.perf_counter() - self.t0) // WINDOW_S), Stats())


async def user(session: aiohttp.ClientSession, url: str, i: int, deadline: float, w: Windows, total: Stats) -> None:
    n = i
    while time.perf_counter() < deadline:
        s = Stats()
        wait = await one_chat(session, url, QUESTIONS[n % len(QUESTIONS)], s)
        for target in (w.stats(), total):
            target.ttft_ms += s.ttft_ms
            target.completed += s.completed
            target.tokens += s.tokens
            target.shed += s.shed  # refused with 429 + Retry-After: not an error, the user waits
            for k, v in s.errors_by_kind.items():
                target.errors += v
                target.errors_by_kind[k] = target.errors_by_kind.get(k, 0) + v
        if wait:
            await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
        n += 1


async def ingestion(stack: RunningStack, deadline: float) -> dict[str, Any]:
    """Back-to-back ingestion jobs of 40 fresh documents each until the deadline."""
    s3 = harness.s3_client(stack)
    jobs, failed, docs, n = 0, 0, 0, 0
    states: dict[str, int] = {}
    while time.perf_counter() < deadline:
        corpus = harness.make_corpus(40, seed=f"soak-{n}")
        prefix = await asyncio.to_thread(harness.put_corpus, s3, f"soak{n % 4}", corpus)
        job_id = await start_job(stack, f"soak{n % 4}", prefix)
        left = max(30.0, deadline - time.perf_counter() + 120)
        job = await harness.wait_job(stack, job_id, timeout_s=left)
        from ddnrag.retriever.v1 import retriever_service_pb2 as pb

        state = pb.JobState.Name(job.state)
        states[state] = states.get(state, 0) + 1
        jobs += 1
        docs += len(corpus)
        failed += state != "JOB_STATE_SUCCEEDED"
        n += 1
    return {"jobs": jobs, "failed": failed, "documents": docs, "states": states}


def stack_pids(stack: RunningStack) -> dict[str, int]:
    return {"supervisor": stack.proc.pid, **harness.child_pids(stack.output())}


async def sampler(stack: RunningStack, t0: float, deadline: float, out: dict[str, list[tuple[float, float]]]) -> None:
    while True:
        now = time.perf_counter()
        for name, pid in stack_pids(stack).items():
            try:
                cur, _peak = rss_mb(pid)
            except OSError:
                continue
            if cur is not None:
                out.setdefault(name, []).append((round(now - t0, 1), round(cur, 1)))
        if now >= deadline:
            return
        await asyncio.sleep(min(SAMPLE_S, max(0.0, deadline - now)))


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    pts = [(t, v) for t, v in samples if t >= WARMUP_S]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    var = sum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        return None
    return round(sum((t - mt) * (v - mv) for t, v in pts) / var * 60, 3)


async def soak(stack: RunningStack, users: int, duration_s: float) -> dict[str, Any]:
    await warm_up(stack.url)
    pids_before = stack_pids(stack)
    t0 = time.perf_counter()
    deadline = t0 + duration_s
    windows, total = Windows(t0), Stats()
    rss: dict[str, list[tuple[float, float]]] = {}
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        sample_task = asyncio.create_task(sampler(stack, t0, deadline, rss))
        ingest_task = asyncio.create_task(ingestion(stack, deadline))
        await asyncio.gather(*(user(session, stack.url, i, deadline, windows, total) for i in range(users)))
        ingest = await ingest_task
        await sample_task
    wall = time.perf_counter() - t0
    over_time = [
        {
            "window_start_s": k * WINDOW_S,
            "chats": s.completed,
            "errors": s.errors,
            "ttft_p50_ms": _r(percentile(s.ttft_ms, 50)),
            "ttft_p99_ms": _r(percentile(s.ttft_ms, 99)),
        }
        for k, s in sorted(windows.windows.items())
    ]
    pids_after = stack_pids(stack)
    return {
        "users": users,
        "duration_s": round(wall, 1),
        "chats_completed": total.completed,
        "errors": total.errors,
        "shed_429": total.shed,
        "errors_by_kind": total.errors_by_kind,
        "ttft_p50_ms": _r(percentile(total.ttft_ms, 50)),
        "ttft_p99_ms": _r(percentile(total.ttft_ms, 99)),
        "ttft_over_time": over_time,
        "rss_growth_mb_per_min": {name: slope_mb_per_min(v) for name, v in sorted(rss.items())},
        "rss_first_last_mb": {name: [v[0][1], v[-1][1]] for name, v in sorted(rss.items()) if v},
        "rss_samples": rss,
        "process_restarts": sorted(n for n in pids_after if pids_before.get(n) != pids_after[n]),
        "ingestion": ingest,
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--duration-s", type=float, default=540.0, help="seconds of load (600 for the full 10 minutes)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ddnrag-soak-") as tmp:
        stack = start_stack(Path(tmp) / "data")
        try:
            result = asyncio.run(soak(stack, args.users, args.duration_s))
        finally:
            stack.stop()
    report = {
        "benchmark": "soak",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stack": "rag up on free loopback ports (SeaweedFS, four services, gateway), extractive generator",
        "answer_cache": "skipped (no_cache=1)",
        "rss_growth_method": f"least-squares slope of RSS samples every {SAMPLE_S:.0f} s after the first {WARMUP_S:.0f} s",
        **result,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: report[k] for k in ("errors", "ttft_p50_ms", "ttft_p99_ms", "rss_growth_mb_per_min", "duration_s")}
    print(json.dumps({**summary, "ingestion": report["ingestion"]}, indent=2))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
