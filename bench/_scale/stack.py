"""The services `bench/retriever_scale.py` runs against: SeaweedFS, the storage service and the
embedder in the bench process (ports from the OS or probed), retrievers as processes of their own
from any source tree (the baseline runs from a `git worktree` of an older commit)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from cli.seaweed import SeaweedPorts, SeaweedProcess, port_in_use
from clients.embedder import EmbedderClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from kernel.config import load_env
from testkit.services import wait_serving


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


SERVICE = "ddnrag.retriever.v1.RetrieverService"

# Runs a retriever from whichever tree is on sys.path[0]; writes its port to fd PORT_FD.
LAUNCH = """
import asyncio, json, os, sys
sys.path.insert(0, os.getcwd())
from kernel.config import load_env
from kernel.logs import setup_logging
from kernel.server import run_forever
from services.retriever.config import RetrieverConfig
from services.retriever.server import create_server
async def main():
    cfg = load_env(RetrieverConfig)
    setup_logging("retriever", "INFO")
    app, port = await create_server(cfg)
    with os.fdopen(int(os.environ["PORT_FD"]), "w") as f:
        f.write(json.dumps({"port": port}) + "\\n")
    await run_forever(app, 5)
asyncio.run(main())
"""

# Writes a 100k-chunk collection with the old code's own snapshot writer (format 1).


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        from services.embedder.config import EmbedderConfig
        from services.embedder.server import create_server as create_embedder
        from services.storage.config import StorageConfig
        from services.storage.server import create_server as create_storage

        for _ in range(50):
            base = random.randrange(20000, 29000, 10)
            ports = SeaweedPorts.from_base(base, base + 1)
            if not any(port_in_use(p) for p in ports.all().values()):
                break
        self.seaweed = SeaweedProcess(self.work / "seaweed", ports)
        await asyncio.to_thread(self.seaweed.start, 60)
        scfg = load_env(
            StorageConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(self.work / "storage"),
            default_endpoint=self.seaweed.endpoint,
            default_bucket=self.seaweed.bucket,
            default_access_key_id=self.seaweed.creds.access_key_id,
            default_secret_access_key=self.seaweed.creds.secret_access_key,
        )
        self.sapp, sport = await create_storage(scfg)
        # torch: no figure here depends on the embedder's variant, and no start-up choice of one.
        ecfg = load_env(
            EmbedderConfig, environ={}, port=0, metrics_port=0, backend="torch", state_dir=str(self.work / "embedder")
        )
        self.eapp, eport = await create_embedder(ecfg)
        self.storage_addr, self.embedder_addr = f"127.0.0.1:{sport}", f"127.0.0.1:{eport}"
        self.storage = StorageClient(self.storage_addr, timeout_s=300)
        await wait_serving(eport, "ddnrag.embedder.v1.EmbedderService", 300)
        self.dim = int((await EmbedderClient(self.embedder_addr).info()).dimension)
        import boto3
        from botocore.config import Config

        self.s3 = boto3.client(
            "s3",
            endpoint_url=self.seaweed.endpoint,
            aws_access_key_id=self.seaweed.creds.access_key_id,
            aws_secret_access_key=self.seaweed.creds.secret_access_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    async def retriever(self, tree: Path, name: str) -> tuple[subprocess.Popen[bytes], RetrieverClient]:
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "DDNRAG_RETRIEVER_PORT": "0",
            "DDNRAG_RETRIEVER_METRICS_PORT": "0",
            "DDNRAG_RETRIEVER_STATE_DIR": str(self.work / name),
            "DDNRAG_RETRIEVER_EMBEDDER_ADDR": self.embedder_addr,
            "DDNRAG_RETRIEVER_STORAGE_ADDR": self.storage_addr,
            "DDNRAG_RETRIEVER_HNSW_THRESHOLD": "1000000000",
            "DDNRAG_RETRIEVER_GC_GRACE_S": "3600",
        }
        proc, line = await asyncio.to_thread(self._spawn, tree, name, env)
        if not line:
            raise RuntimeError(f"retriever {name} exited: {(self.work / f'{name}.log').read_text()[-3000:]}")
        self.procs.append(proc)
        port = int(json.loads(line)["port"])
        t0 = time.perf_counter()
        await wait_serving(port, SERVICE, 900)
        log(f"{name}: serving after {time.perf_counter() - t0:.0f}s (index loaded)")
        return proc, RetrieverClient(f"127.0.0.1:{port}", timeout_s=600)

    def _spawn(self, tree: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], bytes]:
        """Starts the launcher; returns the process and the line with its port (blocking)."""
        read_fd, write_fd = os.pipe()
        env["PORT_FD"] = str(write_fd)
        with open(self.work / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH],
                cwd=tree,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            return proc, f.readline()

    async def stop_proc(self, proc: subprocess.Popen[bytes]) -> None:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 60)

    async def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                await self.stop_proc(p)
        await self.storage.close()
        await self.sapp.stop(0)
        await self.eapp.stop(0)
        await asyncio.to_thread(self.seaweed.stop)

    def bytes_since(self, t0: float) -> int:
        total = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.seaweed.bucket):
            for o in page.get("Contents", []):
                if o["LastModified"].timestamp() >= t0:
                    total += int(o["Size"])
        return total

    async def ingest(self, client: RetrieverClient, coll: str, docs: list[tuple[str, str]]) -> tuple[float, int, str]:
        """One ingestion job of `docs`: (wall seconds, bytes written, index version)."""
        keys = [f"docs/{coll}/{d}/{d}.txt" for d, _ in docs]
        await self.storage.batch_put([(k, t.encode()) for k, (_, t) in zip(keys, docs, strict=True)])
        await asyncio.sleep(1.1 - time.time() % 1)  # LastModified has 1 s resolution: start on a fresh second
        t0 = time.time()
        p0 = time.perf_counter()
        job = [e async for e in client.ingest(coll, keys)][-1].job
        wall = time.perf_counter() - p0
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"ingest into {coll} ended {pb.JobState.Name(job.state)}: {job.error}")
        await asyncio.sleep(0.2)
        return wall, self.bytes_since(int(t0)), job.index_version
