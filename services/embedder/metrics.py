"""The embedder's own Prometheus metrics, beside the shared `embedder_requests_total`,
`embedder_request_duration_seconds` and `grpc_server_call_duration_seconds`: time queued before
inference, model batch sizes and texts embedded (texts/s is their rate).

Queue time comes from each response's `queue` stage (core.py measures it for the caller);
batches are reported by the batcher as they finish. Texts answered from the embedding cache never
reach the model and are not counted in `embedder_texts_total`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from kernel.metrics import LATENCY_BUCKETS, Metrics, stage_seconds

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class EmbedderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue = Histogram(
            "embedder_queue_time_seconds",
            "Time a request's texts waited in the batcher before their first batch ran",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = Histogram(
            "embedder_batch_size",
            "Texts per model batch",
            registry=registry,
            buckets=BATCH_BUCKETS,
        )
        self.inference = Histogram(
            "embedder_batch_duration_seconds",
            "Model inference time of one batch",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.texts = Counter("embedder_texts", "Texts run through the model (rate = texts/s)", registry=registry)

    def attach(self, metrics: Metrics) -> None:
        metrics.on_response("Embed", self._response)
        metrics.on_response("EmbedStream", self._response)

    def _response(self, _method: str, resp: Any) -> None:
        for st, seconds in stage_seconds(resp):
            if st.name == "queue":
                self.queue.observe(seconds)

    def batch(self, texts: int, inference_ns: int) -> None:
        """One batch run by the model (the batcher's `on_batch`)."""
        self.batch_size.observe(texts)
        self.inference.observe(inference_ns / 1e9)
        self.texts.inc(texts)
