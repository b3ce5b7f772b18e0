"""The retriever's gRPC server: `python -m services.retriever.server`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import uuid
from pathlib import Path

from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from ddnrag.retriever.v1 import retriever_service_pb2_grpc as pb_grpc
from kernel.config import ConfigError, load_env
from kernel.logs import setup_logging
from kernel.server import GrpcApp, Metrics, build_server, run_forever, start_metrics
from kernel.tracing import setup_tracing

from .catalog import Catalog
from .config import RetrieverConfig
from .core import Retriever, Settings
from .dense import single_threaded_blas
from .follower import Follower
from .jobs import JobManager, JobTiming
from .lease import LeaseBackend, LeaseKeeper, StoreLeaseBackend
from .metrics import RetrieverMetrics
from .ports import Encoder, ObjectStore
from .prefix_watch import PrefixWatchManager
from .rerank.config import build_stage
from .servicer import RetrieverServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RetrieverService"].full_name


def settings_from(cfg: RetrieverConfig) -> Settings:
    return Settings(
        state_dir=Path(cfg.state_dir),
        chunk_size_tokens=cfg.chunk_size_tokens,
        chunk_overlap_tokens=cfg.chunk_overlap_tokens,
        max_file_bytes=cfg.max_file_bytes,
        max_unpacked_bytes=cfg.max_unpacked_bytes,
        embed_batch=cfg.embed_batch,
        embed_concurrency=cfg.embed_concurrency,
        embed_timeout_s=cfg.embed_timeout_s,
        sentence_vectors=cfg.sentence_vectors,
        write_batch=cfg.write_batch,
        hnsw_threshold=cfg.hnsw_threshold,
        fusion=cfg.fusion,
        rrf_k=cfg.rrf_k,
        dense_weight=cfg.dense_weight,
        candidates=cfg.candidates,
        bm25_k1=cfg.bm25_k1,
        bm25_b=cfg.bm25_b,
        max_top_k=cfg.max_top_k,
        cache_max_bytes=cfg.cache_max_bytes,
        persist_index=cfg.persist_index,
        index_backend=cfg.index_backend,
        milvus_uri=cfg.milvus_uri,
        merge_factor=cfg.merge_factor,
        merge_floor_chunks=cfg.merge_floor_chunks,
        gc_grace_s=cfg.gc_grace_s,
        follow_interval_s=cfg.follow_interval_s,
        max_staleness_s=cfg.max_staleness_s,
    )


async def create_server(
    cfg: RetrieverConfig, *, store: ObjectStore | None = None, encoder: Encoder | None = None
) -> tuple[GrpcApp, int]:
    """Builds the service over the storage and embedder services (or the given ports), loads and
    verifies every collection's index, resumes unfinished jobs, then reports SERVING (readiness:
    only once the index is loaded). A follower then keeps the index on the store's CURRENT."""
    rerank = build_stage(
        cfg.rerank,
        url=cfg.rerank_url,
        model=cfg.rerank_model,
        api_key_env=cfg.rerank_api_key_env,
        api_key_file=cfg.rerank_api_key_file,
        top_n=cfg.rerank_top_n,
        fail_mode=cfg.rerank_fail_mode,
        timeout_s=cfg.rerank_timeout_s,
    )
    closers = []
    merge_store = None  # merges run in the merge process only over the storage service
    if store is None or encoder is None:
        from clients.embedder import EmbedderClient
        from clients.storage import StorageClient

        from .adapters import EmbedderEncoder, StorageStore, StorageStoreFactory

        if store is None:
            sc = StorageClient(cfg.storage_addr)
            closers.append(sc.close)
            store = StorageStore(sc)
            merge_store = StorageStoreFactory(cfg.storage_addr)
        if encoder is None:
            ec = EmbedderClient(cfg.embedder_addr)
            closers.append(ec.close)
            encoder = EmbedderEncoder(ec)
    settings = settings_from(cfg)
    catalog = Catalog(store)
    core = Retriever(store, encoder, settings, catalog, merge_store=merge_store)
    core.rerank = rerank
    if rerank is not None:
        closers.append(rerank.close)
        log.info(
            "rerank stage on", extra={"backend": rerank.name, "top_n": rerank.top_n, "fail_mode": rerank.fail_mode}
        )
    lease_backend: LeaseBackend
    if cfg.lease == "kubernetes":
        from .lease_k8s import KubeLeaseBackend

        lease_backend = KubeLeaseBackend(cfg.lease_name, api=cfg.kube_api, sa_dir=cfg.kube_sa_dir)
        closers.append(lease_backend.close)
    elif cfg.lease == "store":
        lease_backend = StoreLeaseBackend(store)
    else:
        raise ConfigError(f"DDNRAG_RETRIEVER_LEASE must be store or kubernetes, got {cfg.lease!r}")
    keeper = LeaseKeeper(lease_backend, replica_id(cfg), cfg.lease_duration_s)
    jobs = JobManager(core, keeper, JobTiming(heartbeat_s=cfg.heartbeat_s))
    watches = PrefixWatchManager(jobs, catalog)
    servicer = RetrieverServicer(core, jobs, watches)
    follower = Follower(core)
    metrics = Metrics("retriever")
    core.metrics = RetrieverMetrics(metrics.registry)
    core.metrics.attach(metrics)
    core.metrics.jobs_running.set_function(lambda: len(jobs.live))
    app = await build_server(
        "retriever",
        [(pb_grpc.add_RetrieverServiceServicer_to_server, servicer, SERVICE_NAME)],
        cfg.host,
        cfg.port,
        serving=False,
        metrics=metrics,
    )

    async def stop() -> None:
        await follower.stop()
        await watches.stop()
        await jobs.stop()
        await core.close()
        for close in closers:
            await close()

    app.on_stop.append(stop)
    app.retriever = core  # type: ignore[attr-defined]
    app.jobs = jobs  # type: ignore[attr-defined]
    app.prefix_watches = watches  # type: ignore[attr-defined]
    app.follower = follower  # type: ignore[attr-defined]

    async def ready() -> None:
        # The peers may still be starting: retry until the index loads, then serve.
        delay = 0.5
        while True:
            try:
                await core.start()
                break
            except Exception as err:  # noqa: BLE001 - keep trying while the peers come up
                log.warning("start-up is waiting for its peers", extra={"error": str(err)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        await jobs.start()
        await app.set_serving(True)
        # Health follows the index from now on: NOT_SERVING while the store is out of reach.
        follower.on_health = app.set_serving
        follower.start()
        log.info("ready", extra={"collections": len(core.collections)})

    app.ready_task = asyncio.create_task(ready())  # type: ignore[attr-defined]
    return app, app.port


def replica_id(cfg: RetrieverConfig) -> str:
    """This replica's name in the ingestion lease: the configured one, or hostname-pid (the pod
    name in a cluster), with a random suffix so a restarted process is a new holder."""
    base = cfg.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{uuid.uuid4().hex[:6]}"


async def serve(cfg: RetrieverConfig) -> None:
    app, _ = await create_server(cfg)
    start_metrics(app.metrics, cfg.host, cfg.metrics_port)
    await run_forever(app, cfg.shutdown_grace_s)


def main() -> None:
    try:
        cfg = load_env(RetrieverConfig)
    except ConfigError as err:
        print(f"retriever: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging("retriever", cfg.log_level)
    setup_tracing("retriever")  # OTEL_* variables (kernel/tracing.py)
    single_threaded_blas()  # the exact dense search's matrix-vector product (dense.py)
    try:
        asyncio.run(serve(cfg))
    except ConfigError as err:
        print(f"retriever: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
