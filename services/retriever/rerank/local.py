"""A sentence-transformers `CrossEncoder` loaded from a local directory (no download), run on one
worker thread so the event loop never waits on torch."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .base import RerankError


class LocalCrossEncoder:
    """`model_dir` holds a CrossEncoder (config.json, weights, tokenizer). Loaded on first use."""

    def __init__(self, model_dir: str, *, device: str = "cpu", batch_size: int = 32, max_length: int = 512) -> None:
        if not os.path.isdir(model_dir):
            raise ValueError(f"rerank model directory {model_dir!r} does not exist")
        self.model_dir = model_dir
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = f"local:{os.path.basename(model_dir.rstrip('/'))}"
        self._model: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank")

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.model_dir, device=self.device, max_length=self.max_length)
        return self._model

    def _predict(self, query: str, texts: list[str]) -> list[float]:
        model = self._load()
        raw = model.predict([(query, t) for t in texts], batch_size=self.batch_size, show_progress_bar=False)
        scores = [float(x) for x in (raw.tolist() if hasattr(raw, "tolist") else raw)]
        if len(scores) != len(texts) or not all(math.isfinite(s) for s in scores):
            raise RerankError(f"reranker {self.name} gave {len(scores)} scores for {len(texts)} texts, or a NaN")
        return scores

    async def warm(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    async def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._predict, query, list(texts))
        except RerankError:
            raise
        except Exception as err:  # noqa: BLE001 - a model that cannot run is a reranker failure
            raise RerankError(f"reranker {self.name} failed: {type(err).__name__}: {err}") from None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
