"""A rerank stage from settings (the retriever's `DDNRAG_RETRIEVER_RERANK*` variables)."""

from __future__ import annotations

from kernel.config import ConfigError
from kernel.httpjson import read_api_key

from .http import PROTOCOLS, HttpReranker
from .local import LocalCrossEncoder
from .stage import FAIL_MODES, RerankStage

KINDS = ("none", *PROTOCOLS, "local")


def build_stage(
    kind: str,
    *,
    url: str = "",
    model: str = "",
    api_key_env: str = "",
    api_key_file: str = "",
    top_n: int = 20,
    fail_mode: str = "fallback",
    timeout_s: float = 5.0,
    max_batch: int = 32,
) -> RerankStage | None:
    """None for kind "none" (or empty); otherwise the stage. Bad settings fail at start, naming
    the variable to fix."""
    kind = (kind or "none").strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"DDNRAG_RETRIEVER_RERANK must be one of {KINDS}, got {kind!r}")
    if kind == "none":
        return None
    if fail_mode not in FAIL_MODES:
        raise ConfigError(f"DDNRAG_RETRIEVER_RERANK_FAIL_MODE must be one of {FAIL_MODES}, got {fail_mode!r}")
    if top_n < 1:
        raise ConfigError(f"DDNRAG_RETRIEVER_RERANK_TOP_N must be >= 1, got {top_n}")
    if kind == "local":
        if not model:
            raise ConfigError("DDNRAG_RETRIEVER_RERANK_MODEL must name the CrossEncoder directory for kind 'local'")
        try:
            reranker = LocalCrossEncoder(model)
        except ValueError as err:
            raise ConfigError(f"DDNRAG_RETRIEVER_RERANK_MODEL: {err}") from None
    else:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"DDNRAG_RETRIEVER_RERANK_URL must be an http(s) URL for kind {kind!r}, got {url!r}")
        key = read_api_key(api_key_env, api_key_file, what="DDNRAG_RETRIEVER_RERANK")
        reranker = HttpReranker(kind, url, model=model, api_key=key, timeout_s=timeout_s, max_batch=max_batch)
    return RerankStage(reranker, top_n=top_n, fail_mode=fail_mode, timeout_s=timeout_s)
