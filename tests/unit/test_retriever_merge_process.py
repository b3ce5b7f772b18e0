"""Merges in the merge process: it reads its source segments from the store and writes the merged
one itself, at the lowest CPU priority; the serving process rebuilds the merged rows from what it
holds. The result ranks exactly as before the merge, and a fresh replica loads what it wrote."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np

from services.retriever.catalog import Catalog
from services.retriever.core import Retriever, Settings
from services.retriever.index import CollectionIndex
from services.retriever.lexical import Analyzer
from services.retriever.ports import GetOutcome, ObjectMeta, ObjectNotFound, PreconditionFailed, PutOutcome
from tests.support.retriever_doubles import HashingEncoder
from tests.unit.test_retriever_segments import QUERIES, batch, corpus, rankings


class DirStore:
    """Test double: an ObjectStore over files in one directory, so that two processes share it.
    Every write is logged with the writer's pid and niceness."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / quote(key, safe="")

    async def put_many(self, items: Sequence[tuple[str, bytes]], *, backend: str = "") -> list[PutOutcome]:
        for k, v in items:
            tmp = self._path(k).with_suffix(".tmp")
            tmp.write_bytes(v)
            tmp.replace(self._path(k))
        with (self.root.parent / "writers.log").open("a") as f:
            f.writelines(f"{os.getpid()} {os.nice(0)} {k}\n" for k, _ in items)
        return [PutOutcome(k, True) for k, _ in items]

    async def get_many(self, keys: Sequence[str], *, backend: str = "") -> list[GetOutcome]:
        out = []
        for k in keys:
            p = self._path(k)
            out.append(GetOutcome(k, p.read_bytes()) if p.exists() else GetOutcome(k, ok=False, missing=True))
        return out

    async def get(self, key: str, *, backend: str = "", max_bytes: int = 0) -> bytes:
        if not self._path(key).exists():
            raise ObjectNotFound(key)
        return self._path(key).read_bytes()

    async def read(self, key: str, *, backend: str = "") -> tuple[bytes, str]:
        data = await self.get(key)
        return data, hashlib.md5(data).hexdigest()

    async def put_if(
        self, key: str, data: bytes, *, if_match: str = "", if_none_match: bool = False, backend: str = ""
    ) -> str:
        p = self._path(key)
        have = hashlib.md5(p.read_bytes()).hexdigest() if p.exists() else None
        if (if_none_match and have is not None) or (if_match and have != if_match):
            raise PreconditionFailed(key)
        await self.put_many([(key, data)])
        return hashlib.md5(data).hexdigest()

    async def list(self, prefix: str, *, backend: str = "") -> list[ObjectMeta]:
        keys = sorted(unquote(p.name) for p in self.root.iterdir() if not p.name.endswith(".tmp"))
        return [
            ObjectMeta(k, 0, hashlib.md5(self._path(k).read_bytes()).hexdigest()) for k in keys if k.startswith(prefix)
        ]

    async def delete(self, keys: Sequence[str] = (), *, prefix: str = "", backend: str = "") -> int:
        gone = [o.key for o in await self.list("") if o.key in set(keys) or (prefix and o.key.startswith(prefix))]
        for k in gone:
            self._path(k).unlink()
        return len(gone)


@dataclass(frozen=True)
class DirStoreFactory:
    root: Path

    def __call__(self) -> DirStore:
        return DirStore(self.root)


async def test_a_merge_in_the_merge_process_ranks_as_before(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = DirStore(root)
    settings = Settings(state_dir=tmp_path / "a", follow_interval_s=0, merge_factor=3, gc_grace_s=3600)
    r = Retriever(store, HashingEncoder(), settings, Catalog(store), merge_store=DirStoreFactory(root))  # type: ignore[arg-type]
    await r.start()
    assert r.opts.merge_executor is not None
    docs = corpus(9, seed=11)
    names = list(docs)
    qvecs = await HashingEncoder().encode(QUERIES)
    live = None
    for i, d in enumerate(names):
        await r.commit("kb", *await batch({d: docs[d]}))
        live = r.collections["kb"].live
        if i == 1:  # a document deleted from a segment the first merge takes
            await r.commit("kb", {}, [], np.zeros((0, 0), np.float32), remove={names[0]})
        await live.wait_merges()
    assert live is not None
    assert len(live.manifest.segments) < len(names)  # merged
    view = live.view
    single = CollectionIndex(
        view.records,
        view.vectors_at(np.arange(view.n_rows)[np.concatenate(view.live)]),
        analyzer=Analyzer(),
        bm25_params=view.bm25_params,
    )
    assert names[0] not in live.documents and len(view) == len(single)
    assert rankings(view, qvecs) == rankings(single, qvecs)

    # The merged segments were written by another process, at nice 19, not by this one.
    writers = [line.split(" ", 2) for line in (tmp_path / "writers.log").read_text().splitlines()]
    merged = {e.path for e in live.manifest.segments}
    by_merge = [(pid, nice) for pid, nice, key in writers if "/segments/" in key and int(pid) != os.getpid()]
    assert by_merge and {nice for _, nice in by_merge} == {"19"}
    assert any(f"index/kb/{p}" in key for p in merged for pid, _, key in writers if int(pid) != os.getpid())

    # A fresh replica loads and verifies what the merge process wrote and ranks the same.
    r2 = Retriever(store, HashingEncoder(), Settings(state_dir=tmp_path / "b", follow_interval_s=0), Catalog(store))  # type: ignore[arg-type]
    await r2.start()
    assert r2.collections["kb"].live.version == live.version
    assert rankings(r2.collections["kb"].index, qvecs) == rankings(view, qvecs)
    await asyncio.gather(r.close(), r2.close())


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # an exited orphan may stay a zombie until init reaps it


def test_the_merge_process_ends_when_the_serving_process_is_killed() -> None:
    """A SIGKILLed retriever leaves no merge process behind (it used to wait for work forever,
    holding the retriever's stdout open)."""
    code = (
        "import os, time\n"
        "from services.retriever.merge import merge_executor\n"
        "print(merge_executor().submit(os.getpid).result(), flush=True)\n"
        "time.sleep(600)\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    assert _running(child)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60  # a bound for a loaded machine, not a timing assertion
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(child)
    proc.stdout.close()
