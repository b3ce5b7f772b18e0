"""The LLM gateway server: `python -m services.llm_gateway.server`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ddnrag.llm.v1 import ab_service_pb2 as ab_pb
from ddnrag.llm.v1 import ab_service_pb2_grpc as ab_pb_grpc
from ddnrag.llm.v1 import llm_service_pb2 as pb
from ddnrag.llm.v1 import llm_service_pb2_grpc as pb_grpc
from kernel.config import ConfigError, load_env
from kernel.logs import setup_logging
from kernel.server import GrpcApp, Metrics, build_server, run_forever, start_metrics
from kernel.tracing import setup_tracing

from .ab.engine import AbEngine
from .ab.servicer import AbTestServicer
from .admission import Admission, GradientLimit, Pool
from .backend_factory import build_backends, parse_specs
from .cache import AnswerCache
from .checks import build_checks
from .config import LlmGatewayConfig
from .conversations import ConversationStore
from .core import LlmGateway, Searcher
from .extractive import Encoder
from .metrics import LlmMetrics
from .ready import IndexVersions, ReadyAnswers
from .servicer import LlmServicer
from .tokens import default_counter

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LlmService"].full_name
AB_SERVICE_NAME = ab_pb.DESCRIPTOR.services_by_name["AbTestService"].full_name


def _backends_json(cfg: LlmGatewayConfig) -> tuple[str, str]:
    if cfg.backends_file:
        try:
            return Path(cfg.backends_file).read_text(encoding="utf-8"), "DDNRAG_LLM_GATEWAY_BACKENDS_FILE"
        except OSError as err:
            raise ConfigError(
                f"DDNRAG_LLM_GATEWAY_BACKENDS_FILE={cfg.backends_file}: cannot read it: {err.strerror}"
            ) from None
    return cfg.backends, "DDNRAG_LLM_GATEWAY_BACKENDS"


def _default_encoder(cfg: LlmGatewayConfig) -> Encoder:
    from .adapters import EmbedderEncoder

    if cfg.embedder_addr == "local":
        from embedding.local import LocalEncoder

        return LocalEncoder()
    from clients.embedder import EmbedderClient

    return EmbedderEncoder(EmbedderClient(cfg.embedder_addr))


def _default_searcher(cfg: LlmGatewayConfig, sentence_vectors: bool) -> Searcher:
    from clients.retriever import RetrieverClient

    from .adapters import RetrieverSearcher

    return RetrieverSearcher(RetrieverClient(cfg.retriever_addr), sentence_vectors=sentence_vectors)


def _default_conversations(cfg: LlmGatewayConfig) -> ConversationStore | None:
    if not cfg.storage_addr:
        return None
    from clients.storage import StorageClient

    from .adapters import StorageObjects

    return ConversationStore(StorageObjects(StorageClient(cfg.storage_addr)))


async def build_core(
    cfg: LlmGatewayConfig, *, searcher: Searcher | None = None, encoder: Encoder | None = None
) -> LlmGateway:
    raw, source = _backends_json(cfg)
    specs = parse_specs(raw, source=source)
    counter = await asyncio.to_thread(default_counter)
    encoder = encoder or _default_encoder(cfg)
    backends = build_backends(
        specs,
        encoder=encoder,
        counter=counter,
        extractive_fallback=cfg.extractive_fallback,
        extractive_min_score=cfg.extractive_min_score,
    )
    # The extractive generator ranks sentences with the vectors stored at ingestion.
    searcher = searcher or _default_searcher(cfg, any(b.kind == "extractive" for b in backends))
    warm = getattr(encoder, "warm", None)
    if warm is not None and (cfg.verify == "embedder" or any(b.kind == "extractive" for b in backends)):
        await warm()  # the in-process model loads before health says SERVING
    cache = None
    if cfg.cache_max_bytes > 0:
        cache = AnswerCache(Path(cfg.state_dir) / "answer_cache.sqlite", cfg.cache_max_bytes)
        await cache.open()
    core = LlmGateway(
        backends,
        counter,
        searcher=searcher,
        cache=cache,
        context_budget_tokens=cfg.context_budget_tokens,
        retrieval_timeout_s=cfg.retrieval_timeout_s,
        conversations=_default_conversations(cfg),
        history_budget_tokens=cfg.history_budget_tokens,
        rewrite_timeout_s=cfg.rewrite_timeout_s,
        admission=build_admission(cfg),
        # Ready answers need the answer cache: they replay what it served.
        ready=ReadyAnswers(IndexVersions(getattr(searcher, "index_versions", None))) if cache is not None else None,
    )
    objects = core.conversations.objects if core.conversations is not None else None
    core.closers.extend(c for c in (encoder, searcher, objects) if hasattr(c, "close"))
    core.checks = build_checks(cfg, encoder)
    core.closers.append(core.checks)
    return core


def build_admission(cfg: LlmGatewayConfig) -> Admission | None:
    if cfg.max_concurrent_answers <= 0:
        return None
    ceiling = cfg.max_concurrent_answers
    full = GradientLimit(limit=min(8, ceiling), min_limit=min(2, ceiling), ceiling=ceiling)
    # Cache hits cost a fraction of an answer: their own pool, four times the ceiling.
    light = GradientLimit(limit=min(32, 4 * ceiling), min_limit=min(4, 4 * ceiling), ceiling=4 * ceiling)
    return Admission(
        Pool(full, max_wait_s=cfg.admission_max_wait_s),
        Pool(light, max_wait_s=cfg.admission_max_wait_s, what="cache hits"),
    )


def build_ab(cfg: LlmGatewayConfig, core: LlmGateway) -> AbTestServicer:
    """The A/B service over its own retriever and storage clients; without both peers configured
    its RPCs answer FAILED_PRECONDITION (AB_NOT_CONFIGURED)."""
    if not (cfg.storage_addr and cfg.retriever_addr):
        return AbTestServicer(None, None)
    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient

    from .ab.adapters import PeerPorts
    from .ab.runs import AbRuns

    retriever, storage = RetrieverClient(cfg.retriever_addr), StorageClient(cfg.storage_addr)
    runs = AbRuns(storage)
    engine = AbEngine(PeerPorts(retriever, storage, core, runs))
    core.closers[:0] = [engine, retriever, storage]  # the engine stops before its clients close
    return AbTestServicer(engine, runs)


async def create_server(
    cfg: LlmGatewayConfig, *, searcher: Searcher | None = None, encoder: Encoder | None = None
) -> tuple[GrpcApp, int]:
    """Builds the core and serves it on `cfg.host:cfg.port` (0 picks a port, returned).
    `searcher` / `encoder` replace the retriever and embedder clients (tests)."""
    core = await build_core(cfg, searcher=searcher, encoder=encoder)
    metrics = Metrics("llm_gateway")
    llm_metrics = LlmMetrics(metrics.registry)
    core.router.on_backend_failure = llm_metrics.backend_failed
    try:
        app = await build_server(
            "llm_gateway",
            [
                (pb_grpc.add_LlmServiceServicer_to_server, LlmServicer(core, llm_metrics, core.checks), SERVICE_NAME),
                (ab_pb_grpc.add_AbTestServiceServicer_to_server, build_ab(cfg, core), AB_SERVICE_NAME),
            ],
            cfg.host,
            cfg.port,
            metrics=metrics,
        )
    except BaseException:
        await core.close()
        raise
    app.on_stop.append(core.close)
    log.info(
        "llm gateway ready",
        extra={"backends": ",".join(f"{b.name}:{b.kind}" for b in core.backends), "port": app.port},
    )
    return app, app.port


async def _main() -> None:
    cfg = load_env(LlmGatewayConfig)
    setup_logging("llm_gateway", cfg.log_level)
    setup_tracing("llm_gateway")  # OTEL_* variables (kernel/tracing.py)
    app, _ = await create_server(cfg)
    start_metrics(app.metrics, cfg.host, cfg.metrics_port)
    await run_forever(app, cfg.shutdown_grace_s)


def main() -> None:
    try:
        asyncio.run(_main())
    except ConfigError as err:
        logging.getLogger(__name__).error("bad configuration: %s", err)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
