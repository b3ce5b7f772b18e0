"""Ingestion fail-over: `.venv/bin/python bench/scale_failover.py` -> bench/results/scale_failover.json.

Two retriever processes share one SeaweedFS through one storage service. Replica A holds the
ingestion lease; the job is started and followed through replica B (not the holder: B reads the
job's state from the store). Once A has committed some batches it is killed with SIGKILL. B takes
the lease when A's expires, adopts the job and finishes it from the last committed batch.

Then the bucket is listed with boto3 and compared with the chunk ids the documents must give
(parsed and chunked here with the retriever's own parser and chunker):
- `failover_job_lost_chunks`: expected chunks missing from the bucket or from the collection;
- `failover_duplicated_chunks`: chunk objects no document explains, plus collection chunks beyond
  the expected count.
`run()` returns the figures (`bench/retriever_scale.py` calls it); about a minute on a laptop.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli.seaweed import SeaweedPorts, SeaweedProcess, port_in_use  # noqa: E402
from clients.retriever import RetrieverClient  # noqa: E402
from clients.storage import StorageClient  # noqa: E402
from kernel.config import load_env  # noqa: E402

OUT = ROOT / "bench" / "results" / "scale_failover.json"
SERVICE = "ddnrag.retriever.v1.RetrieverService"
WORDS = (
    "storage object bucket tensor matrix latency throughput replica lease segment manifest vector "
    "query document chunk index merge commit fence holder failover cluster network packet kernel"
).split()


def log(msg: str) -> None:
    print(f"[scale_failover] {msg}", file=sys.stderr, flush=True)


def corpus(n: int, seed: int = 7) -> dict[str, str]:
    rng = random.Random(seed)
    return {
        f"doc{i:04d}": " ".join(
            f"Section {j} of document {i}: " + " ".join(rng.choice(WORDS) for _ in range(60)) + "." for j in range(3)
        )
        for i in range(n)
    }


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    port: int = 0
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


class FailoverHarness:
    """SeaweedFS, storage and embedder in this process; retriever replicas as child processes."""

    def __init__(self, workdir: Path, *, lease_s: float = 3.0, chunk_tokens: int = 64, write_batch: int = 16) -> None:
        self.workdir = workdir
        self.lease_s = lease_s
        self.chunk_tokens = chunk_tokens
        self.write_batch = write_batch
        self.replicas: list[Replica] = []

    async def start(self, seaweed: Any = None) -> None:
        from services.embedder.config import EmbedderConfig
        from services.embedder.server import create_server as create_embedder
        from services.storage.config import StorageConfig
        from services.storage.server import create_server as create_storage

        self.own_seaweed = seaweed is None
        if seaweed is None:
            for _ in range(50):
                base = random.randrange(20000, 29000, 10)
                ports = SeaweedPorts.from_base(base, base + 1)
                if not any(port_in_use(p) for p in ports.all().values()):
                    break
            seaweed = SeaweedProcess(self.workdir / "seaweed", ports)
            await asyncio.to_thread(seaweed.start, 60)
        self.seaweed = seaweed
        scfg = load_env(
            StorageConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(self.workdir / "storage"),
            default_endpoint=seaweed.endpoint,
            default_bucket=seaweed.bucket,
            default_access_key_id=seaweed.creds.access_key_id,
            default_secret_access_key=seaweed.creds.secret_access_key,
        )
        self.sapp, sport = await create_storage(scfg)
        ecfg = load_env(
            EmbedderConfig, environ={}, port=0, metrics_port=0, backend="torch", state_dir=str(self.workdir / "emb")
        )
        self.eapp, eport = await create_embedder(ecfg)
        self.storage_addr, self.embedder_addr = f"127.0.0.1:{sport}", f"127.0.0.1:{eport}"
        self.storage = StorageClient(self.storage_addr, timeout_s=60)

    def boto3(self) -> Any:
        import boto3
        from botocore.config import Config

        c = self.seaweed.creds
        return boto3.client(
            "s3",
            endpoint_url=self.seaweed.endpoint,
            aws_access_key_id=c.access_key_id,
            aws_secret_access_key=c.secret_access_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    async def start_replica(self, name: str) -> Replica:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DDNRAG_")}
        p = "DDNRAG_RETRIEVER_"
        env.update(
            {
                p + "HOST": "127.0.0.1",
                p + "PORT": "0",
                p + "METRICS_PORT": "0",
                p + "STATE_DIR": str(self.workdir / f"retriever-{name}"),
                p + "EMBEDDER_ADDR": self.embedder_addr,
                p + "STORAGE_ADDR": self.storage_addr,
                p + "LEASE": "store",
                p + "LEASE_DURATION_S": str(self.lease_s),
                p + "REPLICA_ID": name,
                p + "WRITE_BATCH": str(self.write_batch),
                p + "EMBED_BATCH": str(self.write_batch),
                p + "CHUNK_SIZE_TOKENS": str(self.chunk_tokens),
                p + "CHUNK_OVERLAP_TOKENS": "8",
                p + "HEARTBEAT_S": "1",
            }
        )
        proc = await asyncio.to_thread(
            lambda: subprocess.Popen(
                [sys.executable, "-m", "services.retriever.server"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        rep = Replica(name, proc)
        found = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                rep.lines.append(line)
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                port = rec.get("fields", {}).get("port")
                if rec.get("message") == "serving" and port:
                    rep.port = int(port)
                    found.set()

        rep.reader = threading.Thread(target=read, daemon=True)
        rep.reader.start()
        if not await asyncio.to_thread(found.wait, 120):
            raise RuntimeError(f"replica {name} did not start:\n" + "\n".join(rep.lines[-30:]))
        await wait_serving(rep.addr, 180)
        self.replicas.append(rep)
        return rep

    async def lease_holder(self) -> str:
        try:
            data, _info, _t = await self.storage.get("leases/retriever-ingest.json")
        except Exception:  # noqa: BLE001 - not written yet
            return ""
        return str(json.loads(data).get("holder", ""))

    async def stop(self) -> None:
        for r in self.replicas:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in self.replicas:
            try:
                await asyncio.to_thread(r.proc.wait, 20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                await asyncio.to_thread(r.proc.wait)
            if r.reader is not None:
                await asyncio.to_thread(r.reader.join, 10)
            if r.proc.stdout is not None:
                r.proc.stdout.close()
        await self.storage.close()
        await self.sapp.stop(0)
        await self.eapp.stop(0)
        if self.own_seaweed:
            await asyncio.to_thread(self.seaweed.stop)


async def wait_serving(addr: str, timeout_s: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                r = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the retriever at {addr} did not become SERVING")


def expected_chunk_ids(collection: str, docs: dict[str, str], size: int, overlap: int) -> set[str]:
    from services.retriever.chunking import Chunker
    from services.retriever.parsing import parse_document

    chunker = Chunker(size, overlap)
    out: set[str] = set()
    for doc_id, text in docs.items():
        parsed = parse_document(f"{doc_id}.txt", text.encode())
        out |= {c.chunk_id for c in chunker.chunks(collection, doc_id, parsed)}
    return out


async def failover(h: FailoverHarness, docs: dict[str, str], collection: str = "failover") -> dict[str, Any]:
    """Runs the scenario on a started harness; returns the figures."""
    for doc_id, text in docs.items():
        await h.storage.put(f"docs/{collection}/{doc_id}/{doc_id}.txt", text.encode())
    a = await h.start_replica("replica-a")
    while not (await h.lease_holder()).startswith("replica-a"):
        await asyncio.sleep(0.1)
    b = await h.start_replica("replica-b")
    client = RetrieverClient(b.addr, timeout_s=60)
    sources = [f"docs/{collection}/{d}/{d}.txt" for d in docs]
    t0 = time.monotonic()
    job = await client.start_ingest(collection, sources)
    killed_at, kill_index = -1, 0
    events: list[Any] = []

    async def kill_mid_job() -> None:
        nonlocal killed_at, kill_index
        while True:
            view = await client.get_job(job.job_id)
            if view.documents_done >= len(docs) // 4 and view.chunks_done:
                a.proc.send_signal(signal.SIGKILL)
                killed_at, kill_index = view.documents_done, len(events)
                log(f"SIGKILL replica A at {view.documents_done}/{len(docs)} documents")
                return
            if view.state not in (1, 2):  # no longer queued/running
                return
            await asyncio.sleep(0.05)

    killer = asyncio.create_task(kill_mid_job())
    async for ev in client.watch_job(job.job_id):
        events.append(ev)
    await killer
    t_kill_done = time.monotonic() - t0
    # A new holder's sequence numbers start 10000 above the record it adopted (jobs.py `_adopt`):
    # the first such jump after the kill is B taking the job over, with what it resumed from.
    jump = next(
        (i for i in range(max(kill_index, 1), len(events)) if events[i].sequence - events[i - 1].sequence >= 5_000),
        len(events),
    )
    resumed = events[jump].job.documents_done if jump < len(events) else -1
    around = [(e.sequence, e.job.stage, e.job.documents_done) for e in events[max(0, jump - 2) : jump + 2]]
    log(f"events around the take-over (sequence, stage, documents done): {around}")
    holder = await h.lease_holder()
    for r in (a, b):
        for line in r.lines:
            if "lease" in line or "taken over" in line or "job failed" in line or "no longer write" in line:
                log(f"{r.name}: {line[:300]}")
    final = events[-1].job
    cols = {c.name: c for c in await client.list_collections()}
    await client.close()

    expected = expected_chunk_ids(collection, docs, h.chunk_tokens, 8)
    s3 = h.boto3()
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=h.seaweed.bucket, Prefix=f"chunks/{collection}/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    in_bucket = {k.rsplit("/", 1)[-1] for k in keys}
    indexed = cols[collection].chunks if collection in cols else 0
    lost = max(len(expected - in_bucket), len(expected) - indexed)
    duplicated = len(in_bucket - expected) + (len(keys) - len(in_bucket)) + max(0, indexed - len(expected))
    return {
        "failover_job_lost_chunks": lost,
        "failover_duplicated_chunks": duplicated,
        "failover_job_state": final.state,
        "failover_documents": len(docs),
        "failover_expected_chunks": len(expected),
        "failover_indexed_chunks": indexed,
        "failover_killed_at_documents_done": killed_at,
        "failover_resumed_at_documents_done": resumed,
        "failover_new_holder": holder,
        "failover_job_seconds": round(t_kill_done, 2),
        "failover_progress_events_seen_by_b": len(events),
        "failover_lease_duration_s": h.lease_s,
    }


async def run_async(n_docs: int = 160) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ddnrag-failover-") as tmp:
        h = FailoverHarness(Path(tmp))
        await h.start()
        try:
            return await failover(h, corpus(n_docs))
        finally:
            await h.stop()


def run() -> dict[str, Any]:
    """SIGKILLs the lease holder mid-job and counts lost and duplicated chunks (both must be 0)."""
    return asyncio.run(run_async())


def main() -> int:
    t0 = time.monotonic()
    out = run()
    out["wall_s"] = round(time.monotonic() - t0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    ok = out["failover_job_lost_chunks"] == 0 and out["failover_duplicated_chunks"] == 0
    return 0 if ok and out["failover_killed_at_documents_done"] > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
