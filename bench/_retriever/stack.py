"""The processes bench/retriever.py measures: SeaweedFS, then the storage, embedder and retriever
services, each its own process as `rag up` runs them, in a fresh work directory per run."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bench._scale.stack import wait_serving
from cli.seaweed import SeaweedPorts, SeaweedProcess, port_in_use
from clients.embedder import EmbedderClient
from clients.retriever import RetrieverClient
from clients.storage import StorageClient
from kernel.config import load_env
from services.retriever.config import RetrieverConfig

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Stack:
    """SeaweedFS, the storage service and the embedder, each its own process as `rag up` runs them
    (the retriever is started later, once the query collection is written)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self.seaweed: SeaweedProcess | None = None
        self.storage: StorageClient | None = None
        self.embedder: EmbedderClient | None = None

    async def start(self, workdir: Path, wait_embedder: bool = True) -> None:
        """Starts everything but the retriever; returns once storage serves and, unless told not
        to wait, the embedder too (else `embedder_ready()` waits for it later)."""
        for _ in range(50):
            base = random.randrange(20000, 29000, 10)
            ports = SeaweedPorts.from_base(base, base + 1)
            sport, eport, self.rport = base + 6, base + 7, base + 8
            if not any(port_in_use(p) for p in [*ports.all().values(), sport, eport, self.rport]):
                break
        # Everything lives in this run's work directory: nothing is reused across runs.
        self.seaweed = SeaweedProcess(workdir / "seaweed", ports)
        await asyncio.to_thread(self.seaweed.start, 60)
        self.spawn(
            workdir,
            "storage",
            port=sport,
            state_dir=workdir / "storage",
            default_endpoint=self.seaweed.endpoint,
            default_bucket=self.seaweed.bucket,
            default_access_key_id=self.seaweed.creds.access_key_id,
            default_secret_access_key=self.seaweed.creds.secret_access_key,
        )
        # No embedding cache: both sides of each ratio must run the model for every text. The
        # OpenVINO float IR is exported into this run's directory at start (seconds); pinned rather
        # than `auto` so the variant is the same on every run and needs no quality gate first.
        self.spawn(
            workdir, "embedder", port=eport, state_dir=workdir / "embedder", cache_max_bytes=0, backend="openvino"
        )
        self.storage_addr, self.embedder_addr = f"127.0.0.1:{sport}", f"127.0.0.1:{eport}"
        self.rcfg = load_env(  # the retriever's defaults, as start_retriever runs it
            RetrieverConfig,
            environ={},
            state_dir=str(workdir / "retriever"),
            embedder_addr=self.embedder_addr,
            storage_addr=self.storage_addr,
        )
        self.storage = StorageClient(self.storage_addr, timeout_s=600)
        self.embedder = EmbedderClient(self.embedder_addr, timeout_s=600)
        self.eport, self.workdir = eport, workdir
        await wait_serving(sport, "ddnrag.storage.v1.StorageService", 120)
        if wait_embedder:
            await self.embedder_ready()

    async def embedder_ready(self) -> None:
        """Waits until the embedder serves (its model exported and loaded) and reads its Info."""
        await wait_serving(self.eport, "ddnrag.embedder.v1.EmbedderService", 300)
        self.info = await self.embedder.info()  # type: ignore[union-attr]
        log(f"embedder ready: {self.info.backend} {self.info.dtype} on {self.info.device}")

    def spawn(self, workdir: Path, svc: str, **settings: object) -> None:
        """`python -m services.<svc>.server` with its settings as DDNRAG_<SVC>_* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DDNRAG_")}
        env.update({f"DDNRAG_{svc.upper()}_{k.upper()}": str(v) for k, v in settings.items()})
        env.update({f"DDNRAG_{svc.upper()}_METRICS_PORT": "0", f"DDNRAG_{svc.upper()}_LOG_LEVEL": "WARNING"})
        out = (workdir / f"{svc}.log").open("wb")
        self.children.append(
            subprocess.Popen(
                [sys.executable, "-m", f"services.{svc}.server"], cwd=ROOT, env=env, stdout=out, stderr=out
            )
        )

    async def start_retriever(self) -> RetrieverClient:
        """The retriever as its own process too: searches and jobs reach it as they would in a
        deployment, never through this process's event loop."""
        state = self.workdir / "retriever"
        t0 = time.perf_counter()
        self.spawn(
            self.workdir,
            "retriever",
            port=self.rport,
            state_dir=state,
            embedder_addr=self.embedder_addr,
            storage_addr=self.storage_addr,
        )
        await wait_serving(self.rport, "ddnrag.retriever.v1.RetrieverService", 600)
        self.load_s = time.perf_counter() - t0
        return RetrieverClient(f"127.0.0.1:{self.rport}", timeout_s=600)

    async def stop(self) -> None:
        for client in (self.storage, self.embedder):
            if client is not None:
                await client.close()
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                await asyncio.to_thread(child.wait, 30)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.seaweed is not None:
            await asyncio.to_thread(self.seaweed.stop)
