"""The embedder's real work, in plain Python: validate, look up the cache, tokenise, batch, run
the model, normalise, fill the cache.

Input rules (also in the proto and the README):
- an empty list is INVALID_ARGUMENT; more than `max_batch_texts` texts is INVALID_ARGUMENT naming
  the limit;
- an empty string is valid: it gets the embedding of the model's `[CLS] [SEP]` (2 tokens);
- a text longer than the model's maximum is cut and flagged when `truncate` is on, and makes the
  whole request INVALID_ARGUMENT (naming the text's index and token count) when it is off;
- a full batching queue is RESOURCE_EXHAUSTED; nothing of the refused request is queued;
- before the model is loaded every call is UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedding.runtime import device_name
from kernel import tracing
from kernel.errors import invalid, unavailable
from kernel.timing import Stage, Timer

from .batcher import Batcher
from .cache import CacheStats, EmbeddingCache, cache_key
from .config import EmbedderConfig
from .loader import LoadedModel, load_model

log = logging.getLogger(__name__)

WARMUP_TEXTS = [
    "Object storage keeps data as objects in a flat namespace.",
    "GPUs accelerate dense linear algebra for neural networks.",
    "",
]


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    dimension: int
    max_sequence_length: int
    device: str
    dtype: str
    backend: str
    max_batch_texts: int
    max_batch_tokens: int
    # The GPU's or CPU's name, for people ("NVIDIA H200").
    device_name: str = ""


@dataclass
class EmbedResult:
    """Vectors in input order plus how they were made."""

    vectors: np.ndarray
    tokens: list[int]
    truncated: list[bool]
    cache_hit: list[bool]
    queue_time_ns: int = 0
    tokenization_time_ns: int = 0
    inference_time_ns: int = 0
    compute_tokens: int = 0
    timer: Timer = field(default_factory=Timer)

    @property
    def cache_hits(self) -> int:
        return sum(self.cache_hit)


def default_batch_tokens(device: str) -> int:
    """The model batch's token budget: 4096 on the CPU (about 16 abstracts of 256 tokens; measured
    on this 2-core CPU with OpenVINO bf16, 16-text batches ran 1.5x the texts/s of single texts,
    and 64-text batches were slower again as their attention maps outgrow the caches), 32768 on
    CUDA, where larger batches keep the GPU busy."""
    return 32768 if device.startswith("cuda") else 4096


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.clip(norms, 1e-12, None)).astype(np.float32, copy=False)


class Embedder:
    """Owns the model, the batcher and the cache. `start()` loads in a thread; until it is done
    every call is UNAVAILABLE."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        if cfg.max_batch_texts <= 0:
            raise ValueError("DDNRAG_EMBEDDER_MAX_BATCH_TEXTS must be positive")
        if cfg.max_queue_texts < cfg.max_batch_texts:
            raise ValueError("DDNRAG_EMBEDDER_MAX_QUEUE_TEXTS must be at least DDNRAG_EMBEDDER_MAX_BATCH_TEXTS")
        self.cfg = cfg
        self.model: LoadedModel | None = None
        self.batcher: Batcher | None = None
        # Handed to the batcher: (texts, inference ns) per batch; the server sets it (metrics.py).
        self.on_batch: Callable[[int, int], None] | None = None
        self.cache: EmbeddingCache | None = None
        self._cache_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-cache")
        self._tok_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-tok")
        self._info: ModelInfo | None = None

    @property
    def ready(self) -> bool:
        return self._info is not None

    async def start(self) -> ModelInfo:
        """Loads and warms the model in a thread, opens the cache, starts the batcher."""
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(None, load_model, self.cfg)
        budget = self.cfg.max_batch_tokens or default_batch_tokens(model.backend.device)
        budget = max(budget, model.max_seq_length)
        name = await loop.run_in_executor(None, device_name, model.backend.device)
        if self.cfg.warmup:
            await loop.run_in_executor(None, self._warm, model)
        if self.cfg.cache_max_bytes > 0:
            path = Path(self.cfg.state_dir) / "embedding_cache.sqlite3"
            self.cache = await loop.run_in_executor(
                self._cache_executor, EmbeddingCache, path, self.cfg.cache_max_bytes, model.backend.dimension
            )
        self.batcher = Batcher(
            model.run_batch,
            model.backend.dimension,
            max_batch_tokens=budget,
            max_wait_s=self.cfg.max_wait_ms / 1000.0,
            max_queue_texts=self.cfg.max_queue_texts,
            dynamic=self.cfg.dynamic_batching,
        )
        self.batcher.on_batch = self.on_batch
        self.batcher.start()
        self.model = model
        self._info = ModelInfo(
            model_id=model.model_id,
            dimension=model.backend.dimension,
            max_sequence_length=model.max_seq_length,
            device=model.backend.device,
            dtype=model.backend.dtype,
            backend=model.backend.name,
            max_batch_texts=self.cfg.max_batch_texts,
            max_batch_tokens=budget,
            device_name=name,
        )
        return self._info

    @staticmethod
    def _warm(model: LoadedModel) -> None:
        encs = model.tokenization.encode(WARMUP_TEXTS)
        model.run_batch([e.ids for e in encs])
        model.run_batch([encs[0].ids])

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()
        loop = asyncio.get_running_loop()
        if self.cache is not None:
            await loop.run_in_executor(self._cache_executor, self.cache.close)
        for ex in (self._cache_executor, self._tok_executor):
            await loop.run_in_executor(None, ex.shutdown, True)

    def info(self) -> ModelInfo:
        if self._info is None:
            raise unavailable("the embedder is still loading its model; retry shortly", reason="MODEL_LOADING")
        return self._info

    async def embed(
        self, texts: list[str], *, truncate: bool = True, normalize: bool = True, wait_for_room: bool = False
    ) -> EmbedResult:
        """Embeds `texts` (see the module's input rules). `wait_for_room` (streams) waits for
        room in a full queue instead of failing with RESOURCE_EXHAUSTED."""
        info = self.info()
        model, batcher = self.model, self.batcher
        assert model is not None and batcher is not None
        if not texts:
            raise invalid("texts is empty: send at least one text", reason="EMPTY_INPUT")
        if len(texts) > info.max_batch_texts:
            raise invalid(
                f"{len(texts)} texts in one request; the limit is {info.max_batch_texts} "
                "(split the work, or use EmbedStream)",
                reason="TOO_MANY_TEXTS",
                count=len(texts),
                limit=info.max_batch_texts,
            )
        loop = asyncio.get_running_loop()
        timer = Timer(spans=False)  # one span per Embed call, with the figures below
        n = len(texts)
        vectors = np.zeros((n, info.dimension), dtype=np.float32)
        tokens = [0] * n
        truncated = [False] * n
        hit = [False] * n

        keys: list[bytes] = []
        if self.cache is not None:
            with timer.stage("cache_lookup", count=n):
                keys = [cache_key(model.model_key, normalize, t) for t in texts]
                cached = await loop.run_in_executor(self._cache_executor, self.cache.get_many, keys)
            for i, c in enumerate(cached):
                if c is not None:
                    vectors[i], tokens[i], truncated[i], hit[i] = c.vector, c.tokens, c.truncated, True

        # Identical texts in one request are computed once.
        todo: dict[str, list[int]] = {}
        for i, t in enumerate(texts):
            if not hit[i]:
                todo.setdefault(t, []).append(i)
        result = EmbedResult(vectors, tokens, truncated, hit, timer=timer)
        batch_size = 0
        if todo:
            uniq = list(todo)
            with timer.stage("tokenize", count=len(uniq)) as st:
                encs = await loop.run_in_executor(self._tok_executor, model.tokenization.encode, uniq)
            result.tokenization_time_ns = st.duration_ns
            for text, enc in zip(uniq, encs, strict=True):
                for i in todo[text]:
                    tokens[i], truncated[i] = len(enc.ids), enc.truncated
        if not truncate:
            self._refuse_truncated(texts, tokens, truncated, model.max_seq_length)
        if todo:
            stats = await batcher.submit([e.ids for e in encs], wait_for_room=wait_for_room)
            out = l2_normalize(stats.vectors) if normalize else stats.vectors
            for row, text in enumerate(uniq):
                for i in todo[text]:
                    vectors[i] = out[row]
            result.queue_time_ns = stats.queue_time_ns
            result.inference_time_ns = stats.inference_time_ns
            result.compute_tokens = stats.compute_tokens
            batch_size = stats.batch_size
            # Inference ran last, so the queue ended when inference began.
            timer.add(Stage("queue", stats.queue_time_ns), end_ns=time.perf_counter_ns() - stats.inference_time_ns)
            timer.add(
                Stage(
                    "inference",
                    stats.inference_time_ns,
                    count=stats.batches,
                    attrs={"ddnrag.embed.batch_size": batch_size, "ddnrag.embed.compute_tokens": stats.compute_tokens},
                )
            )
            if self.cache is not None:
                rows = [
                    (keys[todo[text][0]], out[row], len(encs[row].ids), encs[row].truncated)
                    for row, text in enumerate(uniq)
                ]
                with timer.stage("cache_store", count=len(rows)):
                    await loop.run_in_executor(self._cache_executor, self.cache.put_many, rows)
        tracing.set_attributes(
            **{
                "ddnrag.embed.texts": n,
                "ddnrag.embed.tokens": sum(tokens),
                "ddnrag.embed.cache_hits": sum(hit),
                "ddnrag.embed.batch_size": batch_size,
                "ddnrag.embed.queue_time_ns": result.queue_time_ns,
                "ddnrag.embed.inference_time_ns": result.inference_time_ns,
            }
        )
        return result

    @staticmethod
    def _refuse_truncated(texts: list[str], tokens: list[int], truncated: list[bool], max_len: int) -> None:
        over = [i for i, cut in enumerate(truncated) if cut]
        if over:
            i = over[0]
            raise invalid(
                f"text {i} is longer than the model's maximum of {max_len} tokens"
                f" ({len(over)} text(s) too long); shorten it or send truncate=true to cut it",
                reason="TEXT_TOO_LONG",
                index=i,
                max_tokens=max_len,
                too_long=len(over),
            )

    async def cache_stats(self) -> CacheStats:
        if self.cache is None:
            return CacheStats(0, 0, 0, 0, 0, 0)
        return await asyncio.get_running_loop().run_in_executor(self._cache_executor, self.cache.stats)

    async def purge_cache(self) -> int:
        if self.cache is None:
            return 0
        return await asyncio.get_running_loop().run_in_executor(self._cache_executor, self.cache.purge)
