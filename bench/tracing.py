"""What tracing costs an answer. Writes bench/results/tracing.json.

    .venv/bin/python bench/tracing.py                  # 3 stacks, 150 rounds (about 7 minutes on 2 busy cores)
    .venv/bin/python bench/tracing.py --rounds 20      # a quick look

Three local stacks (`rag up` on free loopback ports) run side by side, differing only in their
OTEL_* variables (kernel/tracing.py):
- `traced`: every span exported over OTLP/gRPC to a real receiver in this process (the
  collector's TraceService, testkit/otlp.py), sampler always on, the SDK's default batching
  (every 5 s or 512 spans);
- `untraced`: no endpoint, the default: trace ids made and passed on, nothing recorded;
- `disabled`: OTEL_SDK_DISABLED=true: no tracing code runs at all.
Each round asks every stack the same question (no caches, so every stage runs), in a shuffled
order, one at a time, so load from anything else on the machine falls on all three alike. The
latency is the browser's: request sent -> `done` event received.

`traced_over_untraced_p50` = p50 traced / p50 untraced (the issue's goal: <= 1.05);
`untraced_over_disabled_p50` = p50 untraced / p50 disabled (what tracing costs when off).
The `paired_*` figures are the medians of the same ratios taken round by round (each round's
three answers ran back to back), which a loaded machine moves less. The load average is recorded
beside the figures.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_load import QUESTIONS, percentile  # noqa: E402

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


async def measure(stacks: dict[str, RunningStack], rounds: int, warmup: int) -> dict[str, Any]:
    lat: dict[str, list[float]] = {arm: [] for arm in stacks}
    traced_ids: list[str] = []
    rng = random.Random(15)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i in range(warmup + rounds):
            q = QUESTIONS[i % len(QUESTIONS)]
            arms = list(stacks)
            rng.shuffle(arms)
            for arm in arms:
                ms, trace_id = await ask(session, stacks[arm].url, q)
                if i >= warmup:
                    lat[arm].append(ms)
                    if arm == "traced":
                        traced_ids.append(trace_id)
    return {"latency_ms": lat, "traced_ids": traced_ids}


def paired(a: list[float], b: list[float]) -> float:
    """The median over rounds of a[i] / b[i]."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return round(float(percentile(ratios, 50) or 0.0), 4)


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=8)
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
            got = asyncio.run(measure(stacks, args.rounds, args.warmup))
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
    result = {
        "traced_over_untraced_p50": round(p50["traced"] / p50["untraced"], 4),
        "untraced_over_disabled_p50": round(p50["untraced"] / p50["disabled"], 4),
        "paired_traced_over_untraced_median": paired(lat["traced"], lat["untraced"]),
        "paired_untraced_over_disabled_median": paired(lat["untraced"], lat["disabled"]),
        "otel_bsp_schedule_delay_ms": SCHEDULE_DELAY_MS,
        "goal": "traced_over_untraced_p50 <= 1.05",
        "latency_ms": {arm: summary(v) for arm, v in lat.items()},
        "traced_answers_with_exported_trace": sum(1 for t in ids if t in exported),
        "traced_answers": len(ids),
        "spans_received": len(receiver.snapshot()),
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "load_average_1_5_15_start": [round(x, 2) for x in load_start],
        "load_average_1_5_15_end": [round(x, 2) for x in load_end],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "stacks_start_s": round(started_s, 1),
        "measure_s": round(measure_s, 1),
        "wall_s": round(time.monotonic() - t_start, 1),
        "method": "3 rag-up stacks side by side (traced: OTLP/gRPC to an in-process receiver; untraced: no endpoint; "
        "disabled: OTEL_SDK_DISABLED=true); each round asks all three the same question in shuffled order, "
        "no caches; latency = request -> done event",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
