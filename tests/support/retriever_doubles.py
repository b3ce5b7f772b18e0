"""The retriever's test doubles (tests only): `DictStore`, an in-memory ObjectStore;
`HashingEncoder`, a deterministic bag-of-words hashing encoder standing in for the model so tests
are fast; and helpers that make a core with its job manager, upload a corpus and finish a job."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.retriever.catalog import Catalog
from services.retriever.core import Retriever, Settings
from services.retriever.job_model import SourceSpec
from services.retriever.jobs import JobManager, JobTiming
from services.retriever.lease import LeaseKeeper, StoreLeaseBackend
from services.retriever.ports import GetOutcome, ObjectMeta, ObjectNotFound, PreconditionFailed, PutOutcome


class DictStore:
    """Test double: an ObjectStore over a dict per backend, counting calls."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, bytes]] = {"": {}}
        self.put_calls = 0
        self.delay_s = 0.0

    def _b(self, backend: str) -> dict[str, bytes]:
        return self.data.setdefault(backend, {})

    async def put_many(self, items: Sequence[tuple[str, bytes]], *, backend: str = "") -> list[PutOutcome]:
        self.put_calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        for k, v in items:
            self._b(backend)[k] = bytes(v)
        return [PutOutcome(k, True, total_ns=1000) for k, _ in items]

    async def get_many(self, keys: Sequence[str], *, backend: str = "") -> list[GetOutcome]:
        b = self._b(backend)
        return [
            GetOutcome(k, b[k], ttfb_ns=500, total_ns=900)
            if k in b
            else GetOutcome(k, ok=False, missing=True, error="no")
            for k in keys
        ]

    async def get(self, key: str, *, backend: str = "", max_bytes: int = 0) -> bytes:
        if key not in self._b(backend):
            raise ObjectNotFound(key)
        return self._b(backend)[key]

    async def read(self, key: str, *, backend: str = "") -> tuple[bytes, str]:
        data = await self.get(key, backend=backend)
        return data, hashlib.md5(data).hexdigest()

    async def put_if(
        self, key: str, data: bytes, *, if_match: str = "", if_none_match: bool = False, backend: str = ""
    ) -> str:
        b = self._b(backend)
        have = hashlib.md5(b[key]).hexdigest() if key in b else None
        if (if_none_match and have is not None) or (if_match and have != if_match):
            raise PreconditionFailed(key)
        b[key] = bytes(data)
        return hashlib.md5(data).hexdigest()

    async def list(self, prefix: str, *, backend: str = "") -> list[ObjectMeta]:
        b = self._b(backend)
        return [ObjectMeta(k, len(v), hashlib.md5(v).hexdigest()) for k, v in sorted(b.items()) if k.startswith(prefix)]

    async def delete(self, keys: Sequence[str] = (), *, prefix: str = "", backend: str = "") -> int:
        b = self._b(backend)
        gone = [k for k in list(b) if k in set(keys) or (prefix and k.startswith(prefix))]
        for k in gone:
            del b[k]
        return len(gone)


class HashingEncoder:
    """Test double: hashed bag of words, L2-normalised (similar words -> similar vectors)."""

    dim = 64

    def __init__(self) -> None:
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(n == 0, 1, n)

    async def dimension(self) -> int:
        return self.dim


DOCS = {
    "gpus": "GPUs run thousands of threads. Tensor cores multiply matrices for neural networks.",
    "s3": "Object storage keeps objects in buckets. Time to first byte matters for small objects.",
    "cooking": "Bread needs flour, water, salt and yeast. Knead the dough and bake it hot.",
}


async def make(tmp: Path, store: DictStore | None = None, **settings: object) -> tuple[Retriever, JobManager]:
    values: dict[str, object] = {"chunk_size_tokens": 32, "chunk_overlap_tokens": 4, "write_batch": 4, **settings}
    s = Settings(state_dir=tmp, **values)  # type: ignore[arg-type]
    store = store or DictStore()
    r = Retriever(store, HashingEncoder(), s, Catalog(store))
    await r.start()
    keeper = LeaseKeeper(StoreLeaseBackend(store), f"test-{tmp.name}", duration_s=5.0)
    jobs = JobManager(r, keeper, JobTiming(progress_write_s=0.05, follow_poll_s=0.02, adopt_poll_s=0.05))
    await jobs.start()
    while not keeper.held:
        await asyncio.sleep(0.005)
    return r, jobs


async def close(r: Retriever, jobs: JobManager) -> None:
    await jobs.stop()
    await r.close()


async def upload(store: DictStore, coll: str, docs: dict[str, str]) -> list[SourceSpec]:
    specs = []
    for d, text in docs.items():
        key = f"docs/{coll}/{d}/{d}.txt"
        await store.put_many([(key, text.encode())])
        specs.append(SourceSpec(key, metadata={"topic": d}))
    return specs


async def finish(jobs: JobManager, job_id: str) -> list:
    return [ev async for ev in jobs.follow(job_id)]


async def serve_retriever(state_dir: Path, store: DictStore, encoder: object, **settings: object) -> tuple[Any, int]:
    """A real retriever gRPC server on 127.0.0.1:0 over the in-memory doubles (no embedder or
    storage service behind it), started and holding the ingestion lease: (app, port)."""
    from kernel.config import load_env
    from services.retriever.config import RetrieverConfig
    from services.retriever.server import create_server

    cfg = load_env(
        RetrieverConfig,
        environ={},
        port=0,
        metrics_port=0,
        embedder_addr="unused:1",
        storage_addr="unused:1",
        state_dir=str(state_dir),
        **settings,
    )
    app, port = await create_server(cfg, store=store, encoder=encoder)
    await app.ready_task
    while not app.jobs.keeper.held:
        await asyncio.sleep(0.01)
    return app, port
