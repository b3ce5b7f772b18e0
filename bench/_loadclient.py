"""The load client of bench/gateway_load.py: virtual users asking questions over SSE, and their
figures. Each user loops: GET /api/rag/stream?q=... and reads the stream to its terminal event
(see gateway_load.py's docstring for what is counted)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

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
        self.shed = 0
        self.cache_hits = 0
        self.retry_after_s: list[float] = []
        # Request sent -> the 429 read (how early overload is answered), and -> response headers.
        self.shed_ms: list[float] = []
        self.headers_ms: list[float] = []

    def merge(self, other: Stats) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(value, dict):
                for k, v in value.items():
                    mine[k] = mine.get(k, 0) + v
            else:
                setattr(self, name, mine + value)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1


async def one_chat(session: aiohttp.ClientSession, url: str, q: str, stats: Stats, *, no_cache: bool = True) -> float:
    """One chat; returns the seconds a 429 asked to wait (0 otherwise)."""
    t0 = time.perf_counter()
    first: float | None = None
    params = {"q": q, "no_cache": "1"} if no_cache else {"q": q}
    try:
        async with session.get(f"{url}/api/rag/stream", params=params) as resp:
            if resp.status == 429:
                stats.shed += 1
                await resp.read()
                stats.shed_ms.append((time.perf_counter() - t0) * 1000)
                wait = float(resp.headers.get("Retry-After") or 1)
                stats.retry_after_s.append(wait)
                return wait
            if resp.status != 200:
                stats.error(f"http_{resp.status}")
                await resp.read()
                return 0.0
            stats.headers_ms.append((time.perf_counter() - t0) * 1000)
            # The stream is read in whatever pieces arrive and split into events here (one await
            # per piece, not per line: the client shares the machine's 2 cores with the stack).
            buf = b""
            async for piece in resp.content.iter_any():
                now = time.perf_counter()
                buf += piece
                *events, buf = buf.split(b"\r\n\r\n")
                for raw in events:
                    event, data = "", ""
                    for line in raw.decode().split("\r\n"):
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: "):
                            data = line[6:]
                    if event == "token":
                        stats.tokens += 1
                        if first is None:
                            first = now
                    elif event == "start":
                        start = json.loads(data)
                        stats.queue_ms.append(float(start.get("queue_ms", 0)))
                        stats.cache_hits += bool(start.get("cache_hit"))
                    elif event == "done":
                        stats.completed += 1
                        stats.server_ttft_ms.append(float(json.loads(data).get("ttft_ms") or 0))
                        stats.total_ms.append((now - t0) * 1000)
                        if first is not None:
                            stats.ttft_ms.append((first - t0) * 1000)
                        else:
                            stats.error("done_without_tokens")
                        return 0.0
                    elif event == "error":
                        stats.error("error_" + json.loads(data).get("reason", "unknown"))
                        return 0.0
            stats.error("stream_ended_early")
    except (TimeoutError, aiohttp.ClientError) as err:
        stats.error(type(err).__name__)
    return 0.0


async def user(session: aiohttp.ClientSession, url: str, i: int, deadline: float, stats: Stats, no_cache: bool) -> None:
    n = i
    while time.perf_counter() < deadline:
        wait = await one_chat(session, url, QUESTIONS[n % len(QUESTIONS)], stats, no_cache=no_cache)
        if wait:
            await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))
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


async def run_load(url: str, users: int, duration_s: float, *, no_cache: bool = True) -> Stats:
    stats = Stats()
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        deadline = time.perf_counter() + duration_s
        await asyncio.gather(*(user(session, url, i, deadline, stats, no_cache) for i in range(users)))
    return stats


async def prime_cache(url: str) -> None:
    """Asks every question once with the answer cache on, so the cached run only hits."""
    async with aiohttp.ClientSession() as s:
        for q in QUESTIONS:
            await one_chat(s, url, q, Stats(), no_cache=False)


def ms(values: list[float], q: float) -> float | None:
    return round(percentile(values, q) or 0, 1) if values else None
