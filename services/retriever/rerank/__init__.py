"""Reranking: an optional stage after fusion that re-scores the top N candidates.

`stage.RerankStage` runs one `Reranker` (an HTTP cross-encoder speaking TEI, NVIDIA NIM or the
Cohere/Jina protocol, or a local sentence-transformers CrossEncoder) with a deadline and the
configured fail mode; `config.build_reranker` makes one from the service's settings.
"""

from .base import Reranker, RerankError
from .stage import RerankOutcome, RerankStage

__all__ = ["RerankError", "RerankOutcome", "RerankStage", "Reranker"]
