"""What the streaming path adds to an LLM's tokens: llm_gateway (gRPC) + the HTTP gateway (SSE)
against reading the LLM server directly.

A local OpenAI-compatible server (testkit/openai_server.py, its own process) emits tokens
that carry their emission time (`time.monotonic_ns()`, one clock for every process on the
machine). In one run this script reads the same kind of answer three ways:

- direct:  the client reads the server's SSE itself (POST /v1/chat/completions, stream=true);
- grpc:    through llm_gateway's `Answer` RPC (its own process);
- sse:     through the HTTP gateway's `GET /api/rag/stream` (its own process) -> llm_gateway -> server.

`Answer` retrieves first: a retriever test double (a real gRPC RetrieverService in this process that
returns one fixed chunk) stands in for the retriever, so the retrieval part of TTFT is near zero
and what is measured is the streaming path, not search.

Two workloads, each run `--repeat` times per path:
- paced: `--paced-tokens` tokens at `--rate` tokens/s; per-token latency = arrival - emission.
  added_latency_p50_ms = p50(latency via sse) - p50(latency direct).
- flood: `--flood-tokens` tokens as fast as the server can write; tokens/s = tokens after the
  first / (last token read - first token emitted). max_tokens_per_s = the best sse run; the direct
  path's figure is the server's own limit, which the other paths cannot exceed.
ttft_added_ms = p50 TTFT via sse - p50 TTFT direct (request sent -> first token read).

Writes bench/results/llm_stream.json. Runs in about a minute: `.venv/bin/python bench/llm_stream.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import grpc  # noqa: E402

from clients.llm import GenerationParams, LlmClient  # noqa: E402
from ddnrag.common.v1 import common_pb2  # noqa: E402
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb  # noqa: E402
from ddnrag.retriever.v1 import retriever_service_pb2_grpc as rpb_grpc  # noqa: E402
from services.llm_gateway.openai_backend import SSEDecoder  # noqa: E402

STAMP = re.compile(r"(\d+)@(\d+)")
QUESTION = "How does object storage keep data?"


class RetrieverDouble(rpb_grpc.RetrieverServiceServicer):
    """Benchmark double of the retriever: one fixed chunk, at once."""

    async def Search(self, request: rpb.SearchRequest, context: grpc.aio.ServicerContext) -> rpb.SearchResponse:
        chunk = common_pb2.ScoredChunk(
            chunk_id="bench",
            document_id="bench",
            document_name="bench.md",
            collection=request.collection,
            object_key=f"chunks/{request.collection}/bench",
            text="Object storage keeps data as objects in flat buckets.",
            score=1.0,
        )
        return rpb.SearchResponse(chunks=[chunk], index_version="bench", timings=common_pb2.Timings())


# ---- processes ----------------------------------------------------------------------------------
def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=open(log, "wb"), cwd=ROOT)


async def read_until(proc: subprocess.Popen[bytes], pattern: str, timeout: float = 60) -> re.Match[str]:
    """Reads the child's stdout lines until one matches `pattern` (in a thread: blocking reads)."""
    rx = re.compile(pattern)

    def scan() -> re.Match[str]:
        assert proc.stdout is not None
        for raw in proc.stdout:
            m = rx.search(raw.decode("utf-8", "replace"))
            if m:
                return m
        raise RuntimeError(f"{proc.args} exited before printing {pattern!r}")

    return await asyncio.wait_for(asyncio.to_thread(scan), timeout)


def drain(proc: subprocess.Popen[bytes]) -> None:
    """Keeps reading the child's stdout so its logging never blocks on a full pipe."""

    def run() -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    import threading

    threading.Thread(target=run, daemon=True).start()


# ---- readers ---------------------------------------------------------------------------------------
class Run:
    """One read of one answer: arrival times and stamps of every token."""

    def __init__(self) -> None:
        self.sent_ns = time.monotonic_ns()
        self.arrivals: list[int] = []
        self.latencies: list[int] = []
        self.first_emitted_ns = 0

    def tokens(self, text: str) -> None:
        now = time.monotonic_ns()
        for m in STAMP.finditer(text):
            emitted = int(m.group(2))
            if not self.first_emitted_ns:
                self.first_emitted_ns = emitted
            self.arrivals.append(now)
            self.latencies.append(now - emitted)

    def summary(self) -> dict[str, float]:
        n = len(self.arrivals)
        # From the server emitting the first token to the reader having the last one: the path
        # cannot look faster than the server (tokens sent together still count from emission).
        span = (self.arrivals[-1] - self.first_emitted_ns) / 1e9 if n > 1 else 0.0
        lat = sorted(self.latencies)
        return {
            "tokens": n,
            "ttft_ms": (self.arrivals[0] - self.sent_ns) / 1e6 if n else 0.0,
            "tokens_per_s": (n - 1) / span if span else 0.0,
            "latency_p50_ms": lat[len(lat) // 2] / 1e6 if lat else 0.0,
            "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6 if lat else 0.0,
        }


async def read_direct(session: aiohttp.ClientSession, base_url: str) -> Run:
    body = {
        "model": "test-model",
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "max_tokens": 8192,  # what llm_gateway allows at most: every path reads the same stream
    }
    run = Run()
    async with session.post(f"{base_url}/chat/completions", json=body) as resp:
        resp.raise_for_status()
        dec = SSEDecoder()
        async for raw in resp.content.iter_any():
            for data in dec.feed(raw):
                if data == "[DONE]":
                    return run
                obj = json.loads(data)
                if obj.get("choices"):
                    run.tokens(obj["choices"][0]["delta"].get("content") or "")
    return run


async def read_grpc(client: LlmClient, backend: str) -> Run:
    run = Run()
    params = GenerationParams(backend=backend, no_cache=True, max_tokens=8192)
    async for ev in client.answer(QUESTION, params=params, timeout=120):
        kind = ev.WhichOneof("event")
        if kind == "token":
            run.tokens(ev.token.text)
        elif kind == "error":
            raise RuntimeError(f"llm_gateway error: {ev.error.message}")
    return run


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) of each SSE event."""
    buf = b""
    name, data = "message", []
    async for raw in resp.content.iter_any():
        buf += raw
        *lines, buf = buf.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    yield name, "\n".join(data)
                name, data = "message", []
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip().decode())


async def read_sse(session: aiohttp.ClientSession, gateway_url: str, backend: str) -> Run:
    run = Run()
    q = {"q": QUESTION, "llm_backend": backend, "no_cache": "1", "max_tokens": "8192"}
    async with session.get(f"{gateway_url}/api/rag/stream", params=q) as resp:
        resp.raise_for_status()
        async for name, data in sse_events(resp):
            if name == "token":
                run.tokens(json.loads(data)["text"])
            elif name == "error":
                raise RuntimeError(f"gateway error: {data}")
            elif name == "done":
                break
    return run


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# ---- main ------------------------------------------------------------------------------------------
async def bench(args: argparse.Namespace) -> dict[str, Any]:
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    retriever = grpc.aio.server()
    rpb_grpc.add_RetrieverServiceServicer_to_server(RetrieverDouble(), retriever)
    rport = retriever.add_insecure_port("127.0.0.1:0")
    await retriever.start()
    try:
        server = [py, "-m", "testkit.openai_server", "--stamp"]
        paced = spawn([*server, "--tokens", str(args.paced_tokens), "--rate", str(args.rate)], {}, tmp / "paced.log")
        flood = spawn([*server, "--tokens", str(args.flood_tokens), "--rate", "0"], {}, tmp / "flood.log")
        procs += [paced, flood]
        paced_port = (await read_until(paced, r"PORT (\d+)")).group(1)
        flood_port = (await read_until(flood, r"PORT (\d+)")).group(1)
        paced_url, flood_url = f"http://127.0.0.1:{paced_port}/v1", f"http://127.0.0.1:{flood_port}/v1"
        backends = [
            {"name": "paced", "kind": "openai", "base_url": paced_url, "model": "test-model"},
            {"name": "flood", "kind": "openai", "base_url": flood_url, "model": "test-model"},
        ]
        llm = spawn(
            [py, "-m", "services.llm_gateway.server"],
            {
                "DDNRAG_LLM_GATEWAY_PORT": "0",
                "DDNRAG_LLM_GATEWAY_METRICS_PORT": "0",
                "DDNRAG_LLM_GATEWAY_STATE_DIR": str(tmp / "llm"),
                "DDNRAG_LLM_GATEWAY_RETRIEVER_ADDR": f"127.0.0.1:{rport}",
                "DDNRAG_LLM_GATEWAY_BACKENDS": json.dumps(backends),
                "DDNRAG_LLM_GATEWAY_EXTRACTIVE_FALLBACK": "false",
                "DDNRAG_LLM_GATEWAY_CACHE_MAX_BYTES": "0",
                "DDNRAG_LLM_GATEWAY_LOG_LEVEL": "INFO",
            },
            tmp / "llm.log",
        )
        procs.append(llm)
        llm_port = int((await read_until(llm, r'"port": (\d+)')).group(1))
        drain(llm)
        gw = spawn(
            [py, "-m", "gateway.server"],
            {
                "DDNRAG_GATEWAY_PORT": "0",
                "DDNRAG_GATEWAY_LLM_GATEWAY_ADDR": f"127.0.0.1:{llm_port}",
                "DDNRAG_GATEWAY_RETRIEVER_ADDR": f"127.0.0.1:{rport}",
                "DDNRAG_GATEWAY_STATE_DIR": str(tmp / "gw"),
                "DDNRAG_GATEWAY_LOG_LEVEL": "INFO",
                "DDNRAG_GATEWAY_AUTH": "open",  # loopback, no keys: open on purpose
            },
            tmp / "gw.log",
        )
        procs.append(gw)
        gateway_url = (await read_until(gw, r'"url": "(http://[^"]+?)/?"')).group(1)
        drain(gw)
        for p in (paced, flood):
            drain(p)

        results: dict[str, dict[str, list[dict[str, float]]]] = {
            p: {"paced": [], "flood": []} for p in ("direct", "grpc", "sse")
        }
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(timeout=timeout) as session, LlmClient(f"127.0.0.1:{llm_port}") as client:
            # Warm-up: connections, imports, JIT-free but first-call costs.
            await read_direct(session, paced_url)
            await read_grpc(client, "paced")
            await read_sse(session, gateway_url, "paced")
            for _ in range(args.repeat):
                for workload, backend, url in (("paced", "paced", paced_url), ("flood", "flood", flood_url)):
                    results["direct"][workload].append((await read_direct(session, url)).summary())
                    results["grpc"][workload].append((await read_grpc(client, backend)).summary())
                    results["sse"][workload].append((await read_sse(session, gateway_url, backend)).summary())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        await retriever.stop(0)

    def agg(path: str, workload: str, key: str, how: Any = p50) -> float:
        return round(how([r[key] for r in results[path][workload]]), 4)

    paths: dict[str, Any] = {}
    for path in results:
        paths[path] = {
            "paced_latency_p50_ms": agg(path, "paced", "latency_p50_ms"),
            "paced_latency_p99_ms": agg(path, "paced", "latency_p99_ms"),
            "paced_ttft_ms": agg(path, "paced", "ttft_ms"),
            "paced_tokens_per_s": agg(path, "paced", "tokens_per_s"),
            "flood_tokens_per_s_best": agg(path, "flood", "tokens_per_s", max),
            "flood_tokens_per_s_p50": agg(path, "flood", "tokens_per_s"),
            "flood_ttft_ms": agg(path, "flood", "ttft_ms"),
            "runs": results[path],
        }
    d, g, s = paths["direct"], paths["grpc"], paths["sse"]
    return {
        "added_latency_p50_ms": round(s["paced_latency_p50_ms"] - d["paced_latency_p50_ms"], 4),
        "max_tokens_per_s": s["flood_tokens_per_s_best"],
        "ttft_added_ms": round(s["paced_ttft_ms"] - d["paced_ttft_ms"], 4),
        "added_latency_p50_ms_grpc_only": round(g["paced_latency_p50_ms"] - d["paced_latency_p50_ms"], 4),
        "max_tokens_per_s_grpc_only": g["flood_tokens_per_s_best"],
        "ttft_added_ms_grpc_only": round(g["paced_ttft_ms"] - d["paced_ttft_ms"], 4),
        "goals": {"added_latency_p50_ms": "<= 0.5", "max_tokens_per_s": ">= 20000", "ttft_added_ms": "reported"},
        "workload": {
            "paced_tokens": args.paced_tokens,
            "paced_rate_tps": args.rate,
            "flood_tokens": args.flood_tokens,
            "repeat": args.repeat,
            "retrieval": "retriever test double, one fixed chunk (near-zero retrieval time)",
            "cache": "llm_gateway answer cache off (no_cache and CACHE_MAX_BYTES=0)",
        },
        "notes": [
            "added_latency_p50_ms is per token at a paced rate: p50(arrival - emission) via the gateway's SSE "
            "minus the same for a direct reader; it is two extra processes and hops (gRPC, then SSE).",
            "The direct reader parses one JSON chunk per token in Python; llm_gateway sends tokens that arrive "
            "in one network read as one event (Token.count), so under flood the full path can outrun it.",
            "Numbers from a shared 2-core machine; see machine.loadavg_1m for how busy it was.",
        ],
        "paths": paths,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paced-tokens", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=500.0, help="paced workload, tokens per second")
    ap.add_argument("--flood-tokens", type=int, default=8000, help="at most 8192 (the max_tokens limit)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_stream.json")
    args = ap.parse_args()
    out = asyncio.run(bench(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    brief = {k: out[k] for k in ("added_latency_p50_ms", "max_tokens_per_s", "ttft_added_ms")}
    print(json.dumps({**brief, "grpc_only": {k: v for k, v in out.items() if k.endswith("_grpc_only")}}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
