"""Gateway load: N concurrent SSE chats (default 200) for D seconds (default 60) against a local
stack with the extractive generator. Writes bench/results/gateway_load.json.

    .venv/bin/python bench/gateway_load.py                  # starts `rag up` on free ports, then stops it
    .venv/bin/python bench/gateway_load.py --url http://127.0.0.1:8080   # uses a running stack

Each virtual user loops: GET /api/rag/stream?q=... and reads the stream to its terminal event.
TTFT is measured by the client: request sent -> first `token` event. An error is a non-200
status, an `error` event, a stream that ends without `done`, or a transport failure. The answer
cache is skipped (`no_cache=1`) so every chat runs retrieval and generation; the retrieval
cache stays as deployed. `gateway_rss_mb` is the gateway process's peak resident set size
(VmHWM) after the run, read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "What is DDN Infinia?",
    "How does chunking work?",
    "Why does time to first byte matter for RAG?",
    "What is AWS S3 used for?",
    "How are chunks stored in object storage?",
    "What does the retriever do?",
    "How is hybrid search fused?",
    "What limits GPU utilisation in RAG pipelines?",
    "How does the embedder batch requests?",
    "What is SeaweedFS?",
    "How are index segments versioned?",
    "What does the gateway stream to the browser?",
]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


class Stats:
    def __init__(self) -> None:
        self.ttft_ms: list[float] = []
        self.queue_ms: list[float] = []
        self.server_ttft_ms: list[float] = []
        self.total_ms: list[float] = []
        self.completed = 0
        self.errors = 0
        self.errors_by_kind: dict[str, int] = {}
        self.tokens = 0

    def error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1


async def one_chat(session: aiohttp.ClientSession, url: str, q: str, stats: Stats) -> None:
    t0 = time.perf_counter()
    first: float | None = None
    params = {"q": q, "no_cache": "1"}
    try:
        async with session.get(f"{url}/api/rag/stream", params=params) as resp:
            if resp.status != 200:
                stats.error(f"http_{resp.status}")
                await resp.read()
                return
            event = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "start":
                        stats.queue_ms.append(float(json.loads(line[6:]).get("queue_ms", 0)))
                    elif event == "token":
                        stats.tokens += 1
                        if first is None:
                            first = time.perf_counter()
                    elif event == "done":
                        stats.completed += 1
                        stats.server_ttft_ms.append(float(json.loads(line[6:]).get("ttft_ms") or 0))
                        stats.total_ms.append((time.perf_counter() - t0) * 1000)
                        if first is not None:
                            stats.ttft_ms.append((first - t0) * 1000)
                        else:
                            stats.error("done_without_tokens")
                        return
                    elif event == "error":
                        stats.error("error_" + json.loads(line[6:]).get("reason", "unknown"))
                        return
            stats.error("stream_ended_early")
    except (TimeoutError, aiohttp.ClientError) as err:
        stats.error(type(err).__name__)


async def user(session: aiohttp.ClientSession, url: str, i: int, deadline: float, stats: Stats) -> None:
    n = i
    while time.perf_counter() < deadline:
        await one_chat(session, url, QUESTIONS[n % len(QUESTIONS)], stats)
        n += 1


async def warm_up(url: str, timeout_s: float = 300) -> None:
    """Waits until a question gets a cited answer (the sample corpus is ingested)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            stats = Stats()
            await one_chat(s, url, QUESTIONS[0], stats)
            if stats.completed:
                return
            await asyncio.sleep(2)
    raise TimeoutError("the stack never answered a question")


async def run_load(url: str, users: int, duration_s: float) -> Stats:
    stats = Stats()
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        deadline = time.perf_counter() + duration_s
        await asyncio.gather(*(user(session, url, i, deadline, stats) for i in range(users)))
    return stats


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def gateway_pid(root_pid: int) -> int | None:
    """The `python -m gateway.server` process under `root_pid` (the `rag up` supervisor)."""
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gateway.server" in cmd:
            return pid
        todo.extend(_children(pid))
    return None


def listening_pid(port: int) -> int | None:
    """The process holding a listening TCP socket on `port` (for --url)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_mb(pid: int | None) -> tuple[float | None, float | None]:
    """(current RSS, peak RSS) in MiB from /proc/<pid>/status."""
    if pid is None:
        return None, None
    vals: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) / 1024
    return vals.get("VmRSS"), vals.get("VmHWM")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="", help="a running gateway; by default a stack is started on free ports")
    ap.add_argument("--users", type=int, default=200, help="concurrent SSE chats (default 200)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gateway_load.json"))
    args = ap.parse_args()

    stack = None
    if args.url:
        url = args.url.rstrip("/")
        pid = listening_pid(int(url.rsplit(":", 1)[1].split("/")[0]))
        how = f"a running stack at {url}"
    else:
        from testkit.stack import start_stack

        data = Path(tempfile.mkdtemp(prefix="ddnrag-load-")) / "data"
        print(f"starting the stack (rag up) in {data} ...", flush=True)
        stack = start_stack(data)
        url = stack.url
        pid = gateway_pid(stack.proc.pid)
        how = "rag up on free loopback ports (SeaweedFS, four services, gateway), extractive generator"
    try:
        print(f"warming up against {url} ...", flush=True)
        asyncio.run(warm_up(url))
        rss_before, _ = rss_mb(pid)
        print(f"{args.users} concurrent chats for {args.duration:g} s ...", flush=True)
        t0 = time.perf_counter()
        stats = asyncio.run(run_load(url, args.users, args.duration))
        wall = time.perf_counter() - t0
        rss_now, rss_peak = rss_mb(pid)
    finally:
        if stack is not None:
            stack.stop()
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
        "ttft_p50_ms": round(percentile(stats.ttft_ms, 50) or 0, 1) if stats.ttft_ms else None,
        "ttft_p90_ms": round(percentile(stats.ttft_ms, 90) or 0, 1) if stats.ttft_ms else None,
        "ttft_p99_ms": round(percentile(stats.ttft_ms, 99) or 0, 1) if stats.ttft_ms else None,
        "ttft_mean_ms": round(statistics.fmean(stats.ttft_ms), 1) if stats.ttft_ms else None,
        # Where the client's TTFT went: the wait for an answer slot in the gateway (admission
        # control), and request -> first token as the llm_gateway measured it (retrieval included).
        "gateway_queue_p50_ms": round(percentile(stats.queue_ms, 50) or 0, 1) if stats.queue_ms else None,
        "gateway_queue_p99_ms": round(percentile(stats.queue_ms, 99) or 0, 1) if stats.queue_ms else None,
        "server_ttft_p50_ms": round(percentile(stats.server_ttft_ms, 50) or 0, 1) if stats.server_ttft_ms else None,
        "server_ttft_p99_ms": round(percentile(stats.server_ttft_ms, 99) or 0, 1) if stats.server_ttft_ms else None,
        "max_concurrent_answers": "gateway default (DDNRAG_GATEWAY_MAX_CONCURRENT_ANSWERS)",
        "chat_p50_ms": round(percentile(stats.total_ms, 50) or 0, 1) if stats.total_ms else None,
        "gateway_rss_mb": round(rss_peak, 1) if rss_peak is not None else None,
        "gateway_rss_now_mb": round(rss_now, 1) if rss_now is not None else None,
        "gateway_rss_before_mb": round(rss_before, 1) if rss_before is not None else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
