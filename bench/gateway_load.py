"""Gateway load: N concurrent SSE chats (default 200) for D seconds (default 60) against a local
stack with the extractive generator, then the same users for C seconds (default 30) with every
answer a cache hit. Writes bench/results/gateway_load.json.

    .venv/bin/python bench/gateway_load.py                  # starts `rag up` on free ports, then stops it
    .venv/bin/python bench/gateway_load.py --url http://127.0.0.1:8080   # uses a running stack
    .venv/bin/python bench/gateway_load.py --profile bench/results/gateway_load_profile.txt  # + py-spy
    .venv/bin/python bench/gateway_load.py --baseline 2e3aa82   # + that commit's stack, side by side

With `--baseline REF` a second stack runs the code of REF (a detached git worktree, this
environment) and the cache-off load alternates between the two in rounds of duration/2 (ours,
REF, ours, REF), so the machine's other load hits both alike; REF's figures go under `baseline`
and `cpu_ms_per_answer_over_baseline` compares the two. It starts two stacks and loads each for the
full time, so it takes about twice as long (10 minutes at load average 25-30 on 2 cores; the plain
run 6-7).

Each virtual user loops: GET /api/rag/stream?q=... and reads the stream to its terminal event.
TTFT is measured by the client: request sent -> first `token` event. An error is a non-200
status, an `error` event, a stream that ends without `done`, or a transport failure; a 429 (the
gateway shedding load, with `Retry-After`) is counted apart in `shed_429` and the user waits the
time it names before its next question, as a well-behaved client does. In the main run the
answer cache is skipped (`no_cache=1`) so every chat runs retrieval and generation; the
retrieval cache stays as deployed. The cached run first asks each question once, then every
answer is a cache hit (`cached_hit_ratio` says how many were).

`cpu_ms_per_answer`: the CPU seconds (utime + stime from /proc/<pid>/stat) of every process of
the stack -- SeaweedFS, the supervisor, the four services, the gateway and anything they started
-- during the main run, divided by the answers completed in it. It does not depend on how busy
the machine is with other work, unlike the latencies: `load_avg_1m_before`/`_after` say how busy
it was. `gateway_rss_mb` is the gateway process's peak resident set size (VmHWM) after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _procstat as procstat  # noqa: E402
from bench._loadclient import Stats, ms, prime_cache, run_load, warm_up  # noqa: E402

IDLE_S = 10.0  # seconds of the idle CPU reading before the run


def measure(url: str, procs: list[procstat.Proc], users: int, duration_s: float) -> tuple[Stats, float, dict]:
    """One cache-off round: its stats, wall seconds and CPU seconds per process."""
    cpu0 = procstat.cpu_by_name(procs)
    t0 = time.perf_counter()
    stats = asyncio.run(run_load(url, users, duration_s))
    wall = time.perf_counter() - t0
    return stats, wall, procstat.cpu_delta(cpu0, procstat.cpu_by_name(procs))


class Baseline:
    """A stack of another commit (a detached git worktree), loaded in alternation with ours."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.dir = Path(tempfile.mkdtemp(prefix="ddnrag-baseline-")) / "tree"
        self.commit = subprocess.run(
            ["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        self.stack: Any = None
        self.stats, self.wall, self.cpu = Stats(), 0.0, {}
        self.cached: Stats | None = None
        self.cached_wall = 0.0

    def start(self) -> None:
        from testkit.stack import start_stack

        subprocess.run(["git", "worktree", "add", "--detach", str(self.dir), self.ref], cwd=ROOT, check=True)
        print(f"starting the baseline stack ({self.ref} = {self.commit}) ...", flush=True)
        self.stack = start_stack(self.dir.parent / "data", root=self.dir)
        asyncio.run(warm_up(self.stack.url))
        self.procs = procstat.stack_processes(self.stack.proc.pid)

    def round(self, users: int, duration_s: float) -> None:
        print(f"baseline: {users} concurrent chats for {duration_s:g} s ...", flush=True)
        s_, w_, c_ = measure(self.stack.url, self.procs, users, duration_s)
        self.stats.merge(s_)
        self.wall += w_
        self.cpu = {k: round(self.cpu.get(k, 0.0) + c_.get(k, 0.0), 3) for k in set(self.cpu) | set(c_)}

    def cached_round(self, users: int, duration_s: float) -> None:
        asyncio.run(prime_cache(self.stack.url))
        t0 = time.perf_counter()
        self.cached = asyncio.run(run_load(self.stack.url, users, duration_s, no_cache=False))
        self.cached_wall = time.perf_counter() - t0

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(self.dir)], cwd=ROOT, check=False)

    def result(self) -> dict[str, Any]:
        st, c = self.stats, self.cached
        total = sum(self.cpu.values())
        return {
            "ref": self.ref,
            "commit": self.commit,
            "chats_completed": st.completed,
            "chats_per_s": round(st.completed / self.wall, 2) if self.wall else None,
            "errors": st.errors,
            "shed_429": st.shed,
            "shed_ms_p50": ms(st.shed_ms, 50),
            "ttft_p50_ms": ms(st.ttft_ms, 50),
            "ttft_p99_ms": ms(st.ttft_ms, 99),
            "server_ttft_p50_ms": ms(st.server_ttft_ms, 50),
            "gateway_queue_p50_ms": ms(st.queue_ms, 50),
            "tokens_streamed": st.tokens,
            "cpu_ms_per_answer": round(1000 * total / st.completed, 2) if st.completed else None,
            "cpu_s_by_process": self.cpu,
            "cached_chats_per_s": round(c.completed / self.cached_wall, 2) if c and self.cached_wall else None,
            "cached_ttft_p50_ms": ms(c.ttft_ms, 50) if c else None,
            "cached_ttft_p99_ms": ms(c.ttft_ms, 99) if c else None,
            "cached_shed_429": c.shed if c else None,
            "cached_shed_ms_p50": ms(c.shed_ms, 50) if c else None,
        }


def spy_version() -> str:
    exe = procstat.py_spy()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout if exe else ""
    return out.strip() or "py-spy"


def admission_state(url: str) -> dict[str, float]:
    """`gateway_admission_*{pool=...}` from the gateway's /metrics, as `name.pool` -> value."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("gateway_admission_") and "{" in line:
            name, rest = line[len("gateway_admission_") :].split("{", 1)
            pool = rest.split('"')[1]
            out[f"{name}.{pool}"] = round(float(rest.rsplit(" ", 1)[1]), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="", help="a running gateway; by default a stack is started on free ports")
    ap.add_argument("--users", type=int, default=200, help="concurrent SSE chats (default 200)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load, cache off (default 60)")
    ap.add_argument("--cached-duration", type=float, default=30.0, help="seconds of cache-hit load; 0 skips it")
    ap.add_argument("--profile", default="", help="py-spy every service during the main run; text summary here")
    ap.add_argument(
        "--baseline",
        default="",
        help="a git ref: also start a stack of that commit (git worktree) and alternate 2 rounds each of "
        "duration/2 between the two stacks, same load on both; its figures go under `baseline`",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gateway_load.json"))
    args = ap.parse_args()

    stack = None
    if args.url:
        url = args.url.rstrip("/")
        gw = procstat.listening_pid(int(url.rsplit(":", 1)[1].split("/")[0]))
        root = procstat.stack_root(gw) if gw is not None else None
        how = f"a running stack at {url}"
    else:
        from testkit.stack import start_stack

        data = Path(tempfile.mkdtemp(prefix="ddnrag-load-")) / "data"
        print(f"starting the stack (rag up) in {data} ...", flush=True)
        stack = start_stack(data)
        url = stack.url
        root = stack.proc.pid
        how = "rag up on free loopback ports (SeaweedFS, four services, gateway), extractive generator"
    base = None
    if args.baseline:
        base = Baseline(args.baseline)
    try:
        if base is not None:
            base.start()
        print(f"warming up against {url} ...", flush=True)
        asyncio.run(warm_up(url))
        procs = procstat.stack_processes(root) if root is not None else []
        pid = procstat.gateway_pid(procs)
        rss_before, _ = procstat.rss_mb(pid)
        # What the stack burns with nothing asked (health checks, index polls, metrics scrapes).
        idle0 = procstat.cpu_by_name(procs)
        time.sleep(IDLE_S)
        idle_cpu = sum(procstat.cpu_delta(idle0, procstat.cpu_by_name(procs)).values())
        spies = []
        spy_dir = Path(tempfile.mkdtemp(prefix="ddnrag-pyspy-")) if args.profile else Path()
        if args.profile:
            spies = procstat.profile(procs, args.duration, spy_dir)
        print(f"{args.users} concurrent chats for {args.duration:g} s, answer cache off ...", flush=True)
        load_before = os.getloadavg()[0]
        rounds = 2 if base is not None else 1
        stats, wall, cpu = Stats(), 0.0, {}
        for _ in range(rounds):  # with a baseline: new, baseline, new, baseline
            s_, w_, c_ = measure(url, procs, args.users, args.duration / rounds)
            stats.merge(s_)
            wall += w_
            cpu = {k: round(cpu.get(k, 0.0) + c_.get(k, 0.0), 3) for k in set(cpu) | set(c_)}
            if base is not None:
                base.round(args.users, args.duration / rounds)
        load_after = os.getloadavg()[0]
        rss_now, rss_peak = procstat.rss_mb(pid)
        admission = admission_state(url)
        for sp in spies:
            sp.wait(timeout=120)
        cached = None
        if args.cached_duration > 0:
            asyncio.run(prime_cache(url))
            print(f"{args.users} concurrent chats for {args.cached_duration:g} s, every answer cached ...", flush=True)
            load_cached = os.getloadavg()[0]
            tc = time.perf_counter()
            cached = asyncio.run(run_load(url, args.users, args.cached_duration, no_cache=False))
            cached_wall = time.perf_counter() - tc
            if base is not None:
                base.cached_round(args.users, args.cached_duration)
    finally:
        if stack is not None:
            stack.stop()
        if base is not None:
            base.stop()
    cpu_total = sum(cpu.values())
    result = {
        "benchmark": "gateway_load",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stack": how,
        "users": args.users,
        "duration_s": args.duration,
        "wall_s": round(wall, 2),
        "answer_cache": "skipped (no_cache=1)",
        "chats_completed": stats.completed,
        "chats_per_s": round(stats.completed / wall, 2),
        "tokens_streamed": stats.tokens,
        "errors": stats.errors,
        "errors_by_kind": stats.errors_by_kind,
        # Requests the gateway shed with 429 + Retry-After (not errors: the user waits and asks again).
        "shed_429": stats.shed,
        "retry_after_p50_s": ms(stats.retry_after_s, 50),
        # How early overload is answered: request sent -> the 429 read, at the client.
        "shed_ms_p50": ms(stats.shed_ms, 50),
        "shed_ms_p99": ms(stats.shed_ms, 99),
        "ttft_p50_ms": ms(stats.ttft_ms, 50),
        "ttft_p90_ms": ms(stats.ttft_ms, 90),
        "ttft_p99_ms": ms(stats.ttft_ms, 99),
        "ttft_mean_ms": round(statistics.fmean(stats.ttft_ms), 1) if stats.ttft_ms else None,
        # Where the client's TTFT went: the wait for an answer slot in the gateway (admission
        # control), and request -> first token as the llm_gateway measured it (retrieval included).
        "gateway_queue_p50_ms": ms(stats.queue_ms, 50),
        "gateway_queue_p99_ms": ms(stats.queue_ms, 99),
        "server_ttft_p50_ms": ms(stats.server_ttft_ms, 50),
        "server_ttft_p99_ms": ms(stats.server_ttft_ms, 99),
        "max_concurrent_answers": "gateway default (DDNRAG_GATEWAY_MAX_CONCURRENT_ANSWERS)",
        "chat_p50_ms": ms(stats.total_ms, 50),
        # CPU of every stack process during the main run, per answer and per service.
        "cpu_ms_per_answer": round(1000 * cpu_total / stats.completed, 2) if stats.completed else None,
        "cpu_s_total": round(cpu_total, 2),
        "cpu_s_by_process": cpu,
        # The stack's own CPU with no question asked, per minute (in cpu_ms_per_answer too).
        "idle_cpu_s_per_min": round(idle_cpu * 60 / IDLE_S, 2),
        # The same, less that idle burn over the run's wall time: what the answers themselves cost.
        "cpu_ms_per_answer_less_idle": round(1000 * (cpu_total - idle_cpu * wall / IDLE_S) / stats.completed, 2)
        if stats.completed
        else None,
        "load_avg_1m_before": round(load_before, 2),
        "load_avg_1m_after": round(load_after, 2),
        # The gateway's admission pools after the cache-off run (its /metrics): limit, baseline...
        "admission_after_main_run": admission,
        "gateway_rss_mb": round(rss_peak, 1) if rss_peak is not None else None,
        "gateway_rss_now_mb": round(rss_now, 1) if rss_now is not None else None,
        "gateway_rss_before_mb": round(rss_before, 1) if rss_before is not None else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "note": "latencies depend on the machine's other load (load_avg_1m_*); cpu_ms_per_answer does not",
    }
    if cached is not None:
        result.update(
            {
                "cached_duration_s": args.cached_duration,
                "cached_chats_completed": cached.completed,
                "cached_chats_per_s": round(cached.completed / cached_wall, 2),
                "cached_hit_ratio": round(cached.cache_hits / cached.completed, 4) if cached.completed else None,
                "cached_errors": cached.errors,
                "cached_shed_429": cached.shed,
                "cached_shed_ms_p50": ms(cached.shed_ms, 50),
                "cached_ttft_p50_ms": ms(cached.ttft_ms, 50),
                "cached_ttft_p99_ms": ms(cached.ttft_ms, 99),
                "cached_load_avg_1m_before": round(load_cached, 2),
            }
        )
    if base is not None:
        result["baseline"] = base.result()
        if result["baseline"].get("cpu_ms_per_answer") and result["cpu_ms_per_answer"]:
            result["cpu_ms_per_answer_over_baseline"] = round(
                result["cpu_ms_per_answer"] / result["baseline"]["cpu_ms_per_answer"], 3
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.profile:
        summary = procstat.summarize(spy_dir)
        header = (
            f"{spy_version()} over the {args.duration:g} s cache-off run of bench/gateway_load.py, "
            f"{result['date']}: {stats.completed} answers, cpu_ms_per_answer {result['cpu_ms_per_answer']}, "
            f"load_avg_1m {result['load_avg_1m_before']} -> {result['load_avg_1m_after']}\n"
            f"CPU seconds per process in the run: {json.dumps(cpu)}"
        )
        Path(args.profile).write_text(procstat.summary_text(summary, header))
        print(f"profile summary: {args.profile}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
