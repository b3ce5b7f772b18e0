"""Reliability report: the long fault scenarios plus the counts of the fault, fuzz and security
suites. Writes bench/results/reliability.json.

    .venv/bin/python bench/reliability.py --skip-suites      # phase 1: the long scenarios (~8 min)
    .venv/bin/python bench/reliability.py --skip-scenarios --suites tests/faults               # ~5 min
    .venv/bin/python bench/reliability.py --skip-scenarios --suites tests/fuzz,tests/security  # ~7 min
    .venv/bin/python bench/reliability.py --skip-scenarios --skip-suites --fresh-clone          # one suite run
    make soak-stream   # = bench/reliability.py --long-stream: one >= 20-minute job (~30 min)

A skipped phase (or suite) keeps its figures from the previous bench/results/reliability.json, so
the runs, each within the 10-minute bench rule, make one report.

Phase 1 starts `rag up` on free loopback ports and, for each of the retriever, the embedder, the
storage service and SeaweedFS, ingests a fresh `--docs`-document corpus and SIGKILLs that child
mid-ingestion; the supervisor restarts it. The chunk set is then audited by listing the bucket
with boto3 against the live index and the chunk set computed from the corpus with the retriever's
own chunker: lost and duplicated chunks are counted. It then SIGKILLs the llm_gateway and the
retriever while answers stream and counts hung streams.

Phase 2 runs the suites (tests/faults, tests/fuzz, tests/security) with DDNRAG_RELIABILITY_DIR
set; each test that measures something writes its figures there (fuzz cases, 5xx, crashes,
secret hits, hung streams, raw HTTP cases/5xx/hangs, downstream calls left running after a
deadline, objects left by 1,000 forced upload failures), and they are summed here.

`--long-stream` (only through `make soak-stream`: it runs 25-35 minutes, so it is a soak, not one
of the 10-minute phases) starts its own `rag up`, runs one ingestion job of at least 20 minutes
watched by `rag ingest` through real disconnects (testkit/faults/stream_soak.py says how the job
is made long and which disconnects hit it) and records `stream_drops_long_jobs` and its details
under `long_stream`. Every other figure is kept from the last report.

`--fresh-clone` clones this checkout's HEAD into a temporary directory and runs the whole test
suite there once (with this venv), recording its time, result, failed tests and the load average
beside it; `flaky_failures` sums the failures over every recorded fresh-clone run. On a loaded
2-core machine one run can take longer than 10 minutes: it is a flakiness probe, not a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.faults import harness, scenarios, stream_soak  # noqa: E402
from testkit.stack import start_stack  # noqa: E402

OUT = ROOT / "bench" / "results" / "reliability.json"
CHILDREN = ("retriever", "embedder", "storage", "seaweedfs")


async def long_scenarios(docs: int, data: Path) -> list[dict[str, Any]]:
    stack = await asyncio.to_thread(start_stack, data)
    out: list[dict[str, Any]] = []
    try:
        for child in CHILDREN:
            corpus = harness.make_corpus(docs, seed=f"bench-{child}")
            r = await scenarios.kill_mid_ingestion(stack, child, corpus, f"bench-{child}")
            print(json.dumps(r), flush=True)
            out.append(r)
        for child in ("llm_gateway", "retriever"):
            r = await scenarios.kill_mid_answer(stack, child, streams=16, timeout_s=120)
            print(json.dumps(r), flush=True)
            out.append(r)
    finally:
        await asyncio.to_thread(stack.stop)
    return out


SUITES = ("tests/faults", "tests/fuzz", "tests/security")
SECURITY_FIGURES = ("authz_matrix_violations", "ssrf_accepted", "parser_bomb_crashes", "open_when_keys_configured")


async def long_stream(data: Path, settings: stream_soak.SoakSettings) -> dict[str, Any]:
    stack = await asyncio.to_thread(start_stack, data)
    try:
        return await stream_soak.long_stream(stack, settings)
    finally:
        await asyncio.to_thread(stack.stop)


def run_suite(path: str, figures_dir: Path) -> dict[str, Any]:
    """Runs one suite with every scenario and the full fuzz counts; collects its figures."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DDNRAG_RELIABILITY_DIR": str(figures_dir),
        "DDNRAG_FAULTS_FULL": "1",  # every child's SIGKILL, storage and SeaweedFS included
        "DDNRAG_FUZZ_FULL": "1",  # 25 messages per RPC, 22 requests per endpoint, 120 uploads
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [ln for ln in proc.stdout.splitlines() if " passed" in ln or " failed" in ln or " error" in ln]
    tail = lines[-1].strip("= ") if lines else proc.stderr[-500:]
    figures = [json.loads(p.read_text()) for p in sorted(figures_dir.glob("*.json"))]
    return {
        "command": f"DDNRAG_FAULTS_FULL=1 DDNRAG_FUZZ_FULL=1 pytest -q {path}",
        "exit_code": proc.returncode,
        "summary": tail,
        "seconds": round(time.monotonic() - t0, 1),
        "figures": figures,
    }


def fresh_clone_run() -> dict[str, Any]:
    """One full `pytest -q` on a fresh clone of HEAD (the suite CI runs), with the machine's load."""
    with tempfile.TemporaryDirectory(prefix="ddnrag-fresh-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True)
        env = {**os.environ, "PYTHONPATH": str(clone)}
        load_before = os.getloadavg()
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - t0
    lines = proc.stdout.splitlines()
    failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in lines if ln.startswith(("FAILED tests/", "ERROR tests/"))]
    summary = next((ln.strip("= ") for ln in reversed(lines) if " passed" in ln or " failed" in ln), "")
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": head.stdout.strip(),
        "seconds": round(seconds, 1),
        "exit_code": proc.returncode,
        "summary": summary,
        "failed": failed,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=500, help="documents per SIGKILL-mid-ingestion run")
    ap.add_argument("--skip-suites", action="store_true", help="only the long scenarios")
    ap.add_argument("--skip-scenarios", action="store_true", help="only the suites")
    ap.add_argument("--suites", default=",".join(SUITES), help="comma-separated suites to run (others kept)")
    ap.add_argument("--fresh-clone", action="store_true", help="also run the whole suite once on a fresh clone")
    ap.add_argument("--long-stream", action="store_true", help="only the >= 20-minute stream soak (make soak-stream)")
    ap.add_argument("--long-stream-files", type=int, default=stream_soak.SoakSettings.files, help="its corpus size")
    ap.add_argument("--long-stream-rtt-ms", type=float, default=stream_soak.SoakSettings.rtt_ms, help="its source RTT")
    args = ap.parse_args()
    if args.long_stream:
        args.skip_scenarios = args.skip_suites = True
    t0 = time.monotonic()
    # A phase that is skipped keeps its figures from the last report, so the two phases (each
    # under 10 minutes) can run as two invocations and still give one report.
    prev = json.loads(OUT.read_text()) if OUT.exists() else {}
    with tempfile.TemporaryDirectory(prefix="ddnrag-reliability-") as tmp:
        if args.skip_scenarios:
            long = prev.get("long_scenarios", [])
        else:
            long = asyncio.run(long_scenarios(args.docs, Path(tmp) / "data"))
        suites: dict[str, Any] = dict(prev.get("suites") or {})
        if not args.skip_suites:
            for path in [p for p in args.suites.split(",") if p]:
                suites[path] = run_suite(path, Path(tmp) / "figures" / path.replace("/", "_"))
                print(json.dumps({path: suites[path]["summary"]}), flush=True)
        stream = prev.get("long_stream")
        if args.long_stream:
            settings = stream_soak.SoakSettings(files=args.long_stream_files, rtt_ms=args.long_stream_rtt_ms)
            stream = asyncio.run(long_stream(Path(tmp) / "stream-data", settings))
            print(json.dumps({k: v for k, v in stream.items() if k != "timeline"}), flush=True)
    fresh = list(prev.get("fresh_clone_runs_detail") or [])
    if args.fresh_clone:
        fresh.append(fresh_clone_run())
        print(json.dumps(fresh[-1]), flush=True)
    # One figure per test name: a suite run later (a single file of a package, say) replaces the
    # same test's figure from an earlier, wider run instead of counting it twice.
    figures = list({f["name"]: f for s in suites.values() for f in s["figures"]}.values())
    ingest = [r for r in long if r["scenario"].endswith("mid_ingestion")]
    answer = [r for r in long if r["scenario"].endswith("mid_answer")]
    total = {
        "scenarios_run": len(long) + sum(int(f.get("scenarios", 0)) for f in figures),
        "chunks_lost": sum(r["lost"] for r in ingest) + sum(int(f.get("chunks_lost", 0)) for f in figures),
        "chunks_duplicated": sum(r["duplicated"] for r in ingest)
        + sum(int(f.get("chunks_duplicated", 0)) for f in figures),
        "hung_streams": sum(r["hung"] for r in answer) + sum(int(f.get("hung_streams", 0)) for f in figures),
        "fuzz_cases": sum(int(f.get("fuzz_cases", 0)) for f in figures),
        "http_5xx": sum(int(f.get("http_5xx", 0)) for f in figures),
        "grpc_crashes": sum(int(f.get("grpc_internal", 0)) for f in figures),
        "secret_hits": sum(int(f.get("secret_hits", 0)) for f in figures),
        "raw_http_cases": sum(int(f.get("raw_http_cases", 0)) for f in figures),
        "raw_http_5xx": sum(int(f.get("raw_http_5xx", 0)) for f in figures),
        "raw_http_hangs": sum(int(f.get("raw_http_hangs", 0)) for f in figures),
        "deadline_leaks": sum(int(f.get("deadline_leaks", 0)) for f in figures),
        "forced_put_failures": sum(int(f.get("forced_put_failures", 0)) for f in figures),
        "truncated_objects": sum(int(f.get("truncated_objects", 0)) for f in figures),
        "fresh_clone_runs": len(fresh),
        "flaky_failures": sum(len(r["failed"]) for r in fresh),
        # None until a stream soak long enough to count has run (make soak-stream).
        "stream_drops_long_jobs": stream["drops"] if stream and stream["long_enough"] else None,
        # tests/security (issue 21): role matrix, SSRF suite, office bombs, empty key sets. None
        # when no test measured it (a suite that did not run is not a zero).
        **{
            k: sum(int(f[k]) for f in figures if k in f) if any(k in f for f in figures) else None
            for k in SECURITY_FIGURES
        },
    }
    report = {
        "benchmark": "reliability",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "documents_per_kill_run": prev.get("documents_per_kill_run", args.docs) if args.skip_scenarios else args.docs,
        **total,
        "long_scenarios": long,
        "fresh_clone_runs_detail": fresh,
        "long_stream": stream,
        "suites": suites,
        "wall_s": round(time.monotonic() - t0, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(total, indent=2))
    zero = ("chunks_lost", "chunks_duplicated", "hung_streams", "http_5xx", "grpc_crashes", "secret_hits")
    zero += ("raw_http_5xx", "raw_http_hangs", "deadline_leaks", "truncated_objects", "flaky_failures")
    zero += SECURITY_FIGURES
    if args.long_stream:  # `make soak-stream` answers for its own figure only
        return 0 if total["stream_drops_long_jobs"] == 0 else 1
    ok = all(total[k] == 0 for k in zero) and total["stream_drops_long_jobs"] in (0, None)
    return 0 if ok and all(s["exit_code"] == 0 for s in suites.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
