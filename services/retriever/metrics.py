"""The retriever's own Prometheus metrics, beside the shared `retriever_requests_total`,
`retriever_request_duration_seconds` and `grpc_server_call_duration_seconds`: search stage
durations, ingestion outcomes, prefix-watch freshness and indexes refused as corrupt.

One object per server, on the server's registry (`server.py`); the core, the job runner, the
follower and the prefix watches reach it as `Retriever.metrics`. A core built without a server
(tests, tools) gets one on a registry of its own, so no caller checks for None.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kernel.metrics import LATENCY_BUCKETS, Metrics, stage_seconds

# Search stages as `Timings` names them (search.py, rerank/stage.py); others are not exported.
SEARCH_STAGES = ("embed", "bm25", "dense", "fusion", "rerank", "fetch")


class RetrieverMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry or CollectorRegistry()
        self.stage = Histogram(
            "retriever_stage_duration_seconds",
            "Time spent in one stage of a Search (embed, bm25, dense, fusion, rerank, fetch)",
            ["stage"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.documents = Counter(
            "retriever_ingest_documents",
            "Documents finished by ingestion jobs, by outcome (done, unchanged, failed)",
            ["collection", "outcome"],
            registry=registry,
        )
        self.chunks = Counter(
            "retriever_ingest_chunks", "Chunks published by ingestion jobs", ["collection"], registry=registry
        )
        self.errors = Counter(
            "retriever_ingest_errors",
            "Ingestion errors: kind=file for a file that failed, kind=job for a job that failed as a whole",
            ["collection", "kind"],
            registry=registry,
        )
        self.jobs = Counter(
            "retriever_ingest_jobs", "Ingestion jobs ended here, by final state", ["state"], registry=registry
        )
        self.jobs_running = Gauge(
            "retriever_ingest_jobs_running", "Ingestion jobs this replica is running now", registry=registry
        )
        self.last_progress = Gauge(
            "retriever_ingest_last_progress_timestamp_seconds",
            "Unix time of the last progress event of any job this replica ran (0 before the first)",
            registry=registry,
        )
        self.watch_success = Gauge(
            "retriever_watch_last_success_timestamp_seconds",
            "Unix time a prefix watch last finished a poll (ingesting or finding nothing new) without error",
            ["watch_id", "collection"],
            registry=registry,
        )
        self.index_refused = Counter(
            "retriever_index_refused",
            "Index versions refused at load or follow because a segment or manifest was missing or corrupt",
            ["collection"],
            registry=registry,
        )

    def attach(self, metrics: Metrics) -> None:
        """Turns each Search response's stage timings into `retriever_stage_duration_seconds`."""
        metrics.on_response("Search", self._search)

    def _search(self, _method: str, resp: Any) -> None:
        for st, seconds in stage_seconds(resp):
            if st.name in SEARCH_STAGES:
                self.stage.labels(st.name).observe(seconds)

    def job_ended(self, collection: str, state: str, statuses: list[str], chunks: int) -> None:
        """One job's outcome: each file's final status, and the chunks it published."""
        self.jobs.labels(state).inc()
        for status in statuses:
            outcome = status if status in ("done", "unchanged", "failed") else "other"
            self.documents.labels(collection, outcome).inc()
            if status == "failed":
                self.errors.labels(collection, "file").inc()
        if chunks:
            self.chunks.labels(collection).inc(chunks)

    def job_failed(self, collection: str) -> None:
        self.jobs.labels("failed").inc()
        self.errors.labels(collection, "job").inc()

    def progressed(self) -> None:
        self.last_progress.set(time.time())

    def watch_polled(self, watch_id: str, collection: str) -> None:
        self.watch_success.labels(watch_id, collection).set(time.time())

    def refused(self, collection: str) -> None:
        self.index_refused.labels(collection).inc()
