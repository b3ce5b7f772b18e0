"""`LocalEncoder`: the embedding model in this process, with an optional disk cache.

Used where going through the embedder service would only add a hop: the LLM gateway when its
embedder address is "local" (and its tests), the retriever's evaluation (`rag eval`) and
bench/verify.py. It runs the model the embedder service runs (same weights, same tokenizer, mean
pooling, L2-normalised), through one of two runtimes:

- `torch` (the default): sentence-transformers itself.
- `openvino`: an fp32 IR exported with `export.export_openvino` into `export_dir` (about 5x faster
  than torch on this CPU; cosine to the torch vectors >= 0.9999). `auto` tries it and falls back
  to torch.

The model loads on first use (or `warm()`), once per process for each model, runtime and device;
all work runs on the encoder's own worker thread, never on the event loop. With `cache_path` set,
vectors are kept in SQLite keyed by the text's SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .packaged import PACKAGED_MODEL_NAME, packaged_model_dir

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddnrag" / "embeddings.sqlite"
RUNTIMES = ("torch", "openvino", "auto")


@dataclass(frozen=True)
class _Runner:
    name: str  # "torch" or "openvino"
    dim: int
    run: Callable[[list[str], int], np.ndarray]  # (texts, batch size) -> normalised rows


_RUNNERS: dict[tuple[str, str, str, str], _Runner] = {}
_RUNNERS_LOCK = threading.Lock()


def _load_runner(model_dir: Path, runtime: str, device: str, export_dir: Path) -> _Runner:
    """Loads the model once per process for each (model, runtime, device). Blocking."""
    key = (str(model_dir), runtime, device, str(export_dir))
    with _RUNNERS_LOCK:
        if key not in _RUNNERS:
            _RUNNERS[key] = _build_runner(model_dir, runtime, device, export_dir)
        return _RUNNERS[key]


def _build_runner(model_dir: Path, runtime: str, device: str, export_dir: Path) -> _Runner:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if runtime in ("auto", "openvino"):
        try:
            return _openvino_runner(model_dir, export_dir)
        except Exception:
            if runtime == "openvino":
                raise
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

    def run_torch(texts: list[str], batch_size: int) -> np.ndarray:
        out = model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, dtype=np.float32)

    return _Runner("torch", int(model.get_embedding_dimension() or 384), run_torch)


def _openvino_runner(model_dir: Path, export_dir: Path) -> _Runner:
    from .export import export_openvino
    from .runtime import OpenVinoBackend, Tokenization

    xml = export_dir / "model.xml"
    if not xml.exists():
        export_openvino(model_dir, xml)
    dim = 384
    ov = OpenVinoBackend(xml, os.cpu_count() or 1, name="openvino", dtype="float32", dimension=dim)
    tok = Tokenization(model_dir, 256)

    def run_ov(texts: list[str], batch_size: int) -> np.ndarray:
        encs = tok.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
        out = np.zeros((len(texts), dim), np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = tok.pad([encs[i].ids for i in idx])
            out[idx] = ov.run(ids, mask)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    return _Runner("openvino", dim, run_ov)


class LocalEncoder:
    """The model in this process; `encode_sync` blocks, `encode` runs it on the worker thread."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        backend: str = "torch",
        device: str = "cpu",
        cache_path: Path | None = None,
        batch_size: int = 64,
        export_dir: Path | None = None,
    ) -> None:
        if backend not in RUNTIMES:
            raise ValueError(f"unknown runtime {backend!r}: use one of {', '.join(RUNTIMES)}")
        self.model_dir = Path(model_dir) if model_dir is not None else packaged_model_dir()
        self.requested = backend
        self.device = device
        self.batch_size = batch_size
        self.export_dir = export_dir or (cache_path or DEFAULT_CACHE).parent / "openvino"
        self._name = PACKAGED_MODEL_NAME if model_dir is None else self.model_dir.name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-encoder")
        self._lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(cache_path), check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
            self.db.commit()

    def _runner(self) -> _Runner:
        return _load_runner(self.model_dir, self.requested, self.device, self.export_dir)

    @property
    def backend(self) -> str:
        """The runtime in use ("torch" or "openvino"); loads the model if it has not yet."""
        return self._runner().name

    @property
    def dim(self) -> int:
        return self._runner().dim

    def _key(self, text: str) -> bytes:
        return hashlib.sha256(self._name.encode() + b"\0norm\0" + text.encode()).digest()

    def encode_sync(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None, use_cache: bool = True
    ) -> np.ndarray:
        runner = self._runner()
        out = np.zeros((len(texts), runner.dim), np.float32)
        todo: list[int] = list(range(len(texts)))
        if self.db is not None and use_cache:
            todo = []
            with self._lock:
                for i, t in enumerate(texts):
                    row = self.db.execute("SELECT vec FROM emb WHERE key=?", (self._key(t),)).fetchone()
                    if row is None:
                        todo.append(i)
                    else:
                        out[i] = np.frombuffer(row[0], np.float32)
            if progress and len(texts) > len(todo):
                progress(len(texts) - len(todo))
        step = self.batch_size * 4
        for s in range(0, len(todo), step):
            idx = todo[s : s + step]
            vecs = runner.run([texts[i] for i in idx], self.batch_size)
            out[idx] = vecs
            if self.db is not None and use_cache:
                with self._lock:
                    self.db.executemany(
                        "INSERT OR REPLACE INTO emb VALUES (?,?)",
                        [(self._key(texts[i]), v.tobytes()) for i, v in zip(idx, vecs, strict=True)],
                    )
                    self.db.commit()
            if progress:
                progress(len(idx))
        return out

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        """`timeout` is accepted for the retriever's `Encoder` port and unused: no peer to wait on."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.encode_sync, list(texts))

    async def warm(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._runner)

    async def dimension(self) -> int:
        return (await asyncio.get_running_loop().run_in_executor(self._pool, self._runner)).dim

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
