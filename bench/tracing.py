"""What tracing costs an answer. Writes bench/results/tracing.json.

    .venv/bin/python bench/tracing.py                  # 3 stacks, up to 400 rounds or 330 s of them
    .venv/bin/python bench/tracing.py --rounds 20      # a quick look

Three local stacks (`rag up` on free loopback ports) run side by side, differing only in their
OTEL_* variables (kernel/tracing.py):
- `traced`: every span exported over OTLP/gRPC to a real receiver in this process (the
  collector's TraceService, testkit/otlp.py), sampler always on, the default batching
  (every 5 s or 512 spans);
- `untraced`: no endpoint, the default: trace ids made and passed on, nothing recorded;
- `disabled`: OTEL_SDK_DISABLED=true: no tracing code runs at all.
Each round asks every stack the same question (no caches, so every stage runs), in a shuffled
order, one at a time, so load from anything else on the machine falls on all three alike. The
latency is the browser's: request sent -> `done` event received.

`traced_over_untraced_p50` = p50 traced / p50 untraced (the issue's goal: <= 1.05);
`untraced_over_disabled_p50` = p50 untraced / p50 disabled (what tracing costs when off).
The `paired_*` figures are the medians of the same ratios taken round by round (each round's
three answers ran back to back), which a loaded machine moves less.

How sure: each ratio comes with a 95% bootstrap interval (rounds resampled, the arms of a round
kept together), and `untraced_over_disabled` doubles as a near A/A check (ids-only costs next to
nothing), so its distance from 1 shows how far stack-to-stack noise alone moves a p50 ratio on
this machine. Beside the latency, `cpu_ms_per_answer` is each stack's CPU time (all its
processes, /proc, bench/_procstat.py) over the measured rounds per answer: what tracing costs in
work, which load moves far less than latency. The 1-minute load average is sampled every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _procstat as procstat  # noqa: E402
from bench._loadclient import QUESTIONS, percentile  # noqa: E402
from testkit.otlp import OtlpReceiver  # noqa: E402
from testkit.stack import RunningStack, start_stack  # noqa: E402

OUT = ROOT / "bench" / "results" / "tracing.json"
SCHEDULE_DELAY_MS = 5000  # the SDK's default OTEL_BSP_SCHEDULE_DELAY


async def ask(session: aiohttp.ClientSession, url: str, q: str) -> tuple[float, str]:
    """One question over SSE: (ms from request to the `done` event, the trace id it returned)."""
    t0 = time.perf_counter()
    async with session.get(f"{url}/api/rag/stream", params={"q": q, "no_cache": "1"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {await resp.text()}")
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("done", "error"):
                if event == "error":
                    raise RuntimeError(f"{url}: {line[6:]}")
                return (time.perf_counter() - t0) * 1000, json.loads(line[6:]).get("trace_id", "")
    raise RuntimeError(f"{url}: the stream ended without a terminal event")


async def measure(stacks: dict[str, RunningStack], rounds: int, warmup: int, max_s: float) -> dict[str, Any]:
    """`warmup` rounds, then up to `rounds` measured ones or as many as `max_s` seconds allow;
    each stack's CPU time is read around the measured rounds."""
    lat: dict[str, list[float]] = {arm: [] for arm in stacks}
    traced_ids: list[str] = []
    loads: list[float] = []
    rng = random.Random(15)
    timeout = aiohttp.ClientTimeout(total=120)
    procs = {arm: procstat.stack_processes(s.proc.pid) for arm, s in stacks.items()}
    cpu0: dict[str, dict[str, float]] = {}
    deadline = float("inf")
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(warmup + rounds):
            if i == warmup:
                cpu0 = {arm: procstat.cpu_by_name(p) for arm, p in procs.items()}
                deadline = time.monotonic() + max_s
            elif time.monotonic() > deadline:
                break
            q = QUESTIONS[i % len(QUESTIONS)]
            arms = list(stacks)
            rng.shuffle(arms)
            for arm in arms:
                ms, trace_id = await ask(session, stacks[arm].url, q)
                if i >= warmup:
                    lat[arm].append(ms)
                    if arm == "traced":
                        traced_ids.append(trace_id)
            if i >= warmup:
                loads.append(os.getloadavg()[0])
    cpu = {arm: procstat.cpu_delta(cpu0[arm], procstat.cpu_by_name(p)) for arm, p in procs.items()}
    return {"latency_ms": lat, "traced_ids": traced_ids, "cpu_s": cpu, "load_1m": loads}


def paired(a: list[float], b: list[float]) -> float:
    """The median over rounds of a[i] / b[i]."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return round(float(percentile(ratios, 50) or 0.0), 4)


def bootstrap_ci(a: list[float], b: list[float], iterations: int = 2000, seed: int = 15) -> dict[str, list[float]]:
    """95% percentile-bootstrap intervals of p50(a) / p50(b) and of the median of a[i] / b[i],
    resampling rounds (a round's answers stay together)."""
    x, y = np.asarray(a), np.asarray(b)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(iterations, len(x)))
    p50 = np.median(x[idx], axis=1) / np.median(y[idx], axis=1)
    per_round = np.median((x / y)[idx], axis=1)
    return {
        "p50_ratio": [round(float(v), 4) for v in np.quantile(p50, [0.025, 0.975])],
        "paired_median": [round(float(v), 4) for v in np.quantile(per_round, [0.025, 0.975])],
    }


def cpu_summary(cpu_s: dict[str, float], answers: int) -> dict[str, Any]:
    """A stack's CPU time per answer, in ms: in all and per process kind."""
    per = {k: round(1000 * v / max(1, answers), 2) for k, v in cpu_s.items() if v > 0}
    return {"total": round(sum(per.values()), 2), "by_process": per}


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--max-measure-s", type=float, default=330, help="stop measuring after this long (< 10 min in all)")
    args = ap.parse_args()
    t_start = time.monotonic()
    load_start = os.getloadavg()
    receiver = OtlpReceiver().start()
    envs = {
        "traced": receiver.env_with(schedule_delay_ms=SCHEDULE_DELAY_MS),
        "untraced": {},
        "disabled": {"OTEL_SDK_DISABLED": "true"},
    }
    # No OTEL_* from this shell may leak into an arm.
    for k in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[k]
    stacks: dict[str, RunningStack] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        try:
            with ThreadPoolExecutor(len(envs)) as pool:
                futs = {arm: pool.submit(start_stack, Path(tmp) / arm, extra_env=env) for arm, env in envs.items()}
                errors = []
                for arm, fut in futs.items():
                    try:
                        stacks[arm] = fut.result()
                    except Exception as err:  # noqa: BLE001 - stop the others, then report
                        logs = sorted((Path(tmp) / arm / "logs").glob("*.log"))
                        tails = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-1500:] for p in logs)
                        errors.append(f"{arm}: {err}{tails}")
                if errors:
                    raise RuntimeError("; ".join(errors))
            started_s = time.monotonic() - t_start
            t_measure = time.monotonic()
            got = asyncio.run(measure(stacks, args.rounds, args.warmup, args.max_measure_s))
            measure_s = time.monotonic() - t_measure
            load_end = os.getloadavg()
        finally:
            for s in stacks.values():
                s.stop()
        receiver.stop()
    lat = got["latency_ms"]
    p50 = {arm: percentile(v, 50) for arm, v in lat.items()}
    ids = got["traced_ids"]
    exported = {s.trace_id for s in receiver.snapshot()}
    n = len(lat["traced"])
    cpu = {arm: cpu_summary(got["cpu_s"][arm], n) for arm in lat}
    loads = got["load_1m"]
    result = {
        "traced_over_untraced_p50": round(p50["traced"] / p50["untraced"], 4),
        "traced_over_untraced_p50_ci95": bootstrap_ci(lat["traced"], lat["untraced"])["p50_ratio"],
        "untraced_over_disabled_p50": round(p50["untraced"] / p50["disabled"], 4),
        "untraced_over_disabled_p50_ci95": bootstrap_ci(lat["untraced"], lat["disabled"])["p50_ratio"],
        "paired_traced_over_untraced_median": paired(lat["traced"], lat["untraced"]),
        "paired_traced_over_untraced_median_ci95": bootstrap_ci(lat["traced"], lat["untraced"])["paired_median"],
        "paired_untraced_over_disabled_median": paired(lat["untraced"], lat["disabled"]),
        "cpu_ms_per_answer": cpu,
        "traced_over_untraced_cpu": round(cpu["traced"]["total"] / cpu["untraced"]["total"], 4),
        "untraced_over_disabled_cpu": round(cpu["untraced"]["total"] / cpu["disabled"]["total"], 4),
        "otel_bsp_schedule_delay_ms": SCHEDULE_DELAY_MS,
        "goal": "traced_over_untraced_p50 <= 1.05",
        "latency_ms": {arm: summary(v) for arm, v in lat.items()},
        "traced_answers_with_exported_trace": sum(1 for t in ids if t in exported),
        "traced_answers": len(ids),
        "spans_received": len(receiver.snapshot()),
        "rounds": n,
        "rounds_asked": args.rounds,
        "warmup_rounds": args.warmup,
        "load_avg_1m_start": round(load_start[0], 2),
        "load_avg_1m_end": round(load_end[0], 2),
        "load_avg_1m_during": {
            "mean": round(sum(loads) / len(loads), 2),
            "min": round(min(loads), 2),
            "max": round(max(loads), 2),
        },
        "load_average_1_5_15_start": [round(x, 2) for x in load_start],
        "load_average_1_5_15_end": [round(x, 2) for x in load_end],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "stacks_start_s": round(started_s, 1),
        "measure_s": round(measure_s, 1),
        "wall_s": round(time.monotonic() - t_start, 1),
        "method": "3 rag-up stacks side by side (traced: OTLP/gRPC to an in-process receiver; untraced: no endpoint; "
        "disabled: OTEL_SDK_DISABLED=true); each round asks all three the same question in shuffled order, "
        "no caches; latency = request -> done event; CIs: 2000 bootstrap resamples of rounds; CPU: /proc utime+stime "
        "of every process of each stack over the measured rounds, per answer",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
