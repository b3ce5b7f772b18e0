"""The application's typed keys: everything a handler needs lives on the app, nothing at module level."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from .config import GatewayConfig

if TYPE_CHECKING:
    from clients.embedder import EmbedderClient
    from clients.llm import LlmClient
    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient

    from .access import ApiKeys, RateLimiter
    from .admission import AnswerAdmission
    from .metrics import GatewayMetrics
    from .sse import OpenStream


@dataclass
class Upstreams:
    """The typed clients, one channel per service, opened and closed in the app's cleanup_ctx."""

    storage: StorageClient
    retriever: RetrieverClient
    llm: LlmClient
    embedder: EmbedderClient

    def by_name(self) -> dict[str, StorageClient | RetrieverClient | LlmClient | EmbedderClient]:
        return {
            "storage": self.storage,
            "retriever": self.retriever,
            "llm_gateway": self.llm,
            "embedder": self.embedder,
        }


CONFIG = web.AppKey("config", GatewayConfig)
UPSTREAMS = web.AppKey("upstreams", Upstreams)
OPEN_STREAMS: web.AppKey[weakref.WeakSet[OpenStream]] = web.AppKey("open_streams", weakref.WeakSet)
METRICS: web.AppKey[GatewayMetrics] = web.AppKey("metrics")
RATE_LIMITER: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
HEALTH_LIMITER: web.AppKey[RateLimiter] = web.AppKey("health_limiter")
API_KEYS: web.AppKey[ApiKeys] = web.AppKey("api_keys")
# Admission control of answer streams (None when unlimited): gateway/admission.py.
ADMISSION: web.AppKey[AnswerAdmission | None] = web.AppKey("admission")
# Short background tasks (cleanup of staging objects), awaited before the channels close.
BACKGROUND: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("background", set)
