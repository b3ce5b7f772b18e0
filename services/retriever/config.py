"""The retriever's configuration, read from `DDNRAG_RETRIEVER_*` variables."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.config import env_field

P = "DDNRAG_RETRIEVER_"


@dataclass(frozen=True)
class RetrieverConfig:
    """Every setting of the retriever service; each field names its variable.

    The retrieval defaults (chunk size 256/32, weighted fusion with dense weight 0.6 over 300
    candidates per retriever, BM25 k1=0.9 b=0.4) were tuned on SciFact train only; the grid is in
    bench/results/scifact_train_tuning.json."""

    host: str = env_field(P + "HOST", "127.0.0.1", "address the gRPC server binds")
    port: int = env_field(P + "PORT", 50053, "gRPC port (0 picks a free one)")
    metrics_port: int = env_field(P + "METRICS_PORT", 9103, "Prometheus metrics port (0 disables)")
    shutdown_grace_s: float = env_field(P + "SHUTDOWN_GRACE_S", 10.0, "seconds in-flight RPCs get on SIGTERM")
    log_level: str = env_field(P + "LOG_LEVEL", "INFO", "log level")
    state_dir: str = env_field(
        P + "STATE_DIR", "./data/retriever", "directory of the local caches (retrieval cache, milvus-lite)"
    )
    embedder_addr: str = env_field(P + "EMBEDDER_ADDR", "", "embedder service address host:port", required=True)
    storage_addr: str = env_field(P + "STORAGE_ADDR", "", "storage service address host:port", required=True)
    chunk_size_tokens: int = env_field(P + "CHUNK_SIZE_TOKENS", 256, "default chunk size in model tokens")
    chunk_overlap_tokens: int = env_field(P + "CHUNK_OVERLAP_TOKENS", 32, "default overlap in model tokens")
    max_file_bytes: int = env_field(P + "MAX_FILE_BYTES", 64 * 1024 * 1024, "largest source file ingested")
    max_unpacked_bytes: int = env_field(
        P + "MAX_UNPACKED_BYTES", 256 * 1024 * 1024, "largest uncompressed size of a docx/pptx/xlsx (zip bomb guard)"
    )
    embed_batch: int = env_field(P + "EMBED_BATCH", 64, "chunks per embedding request")
    embed_concurrency: int = env_field(P + "EMBED_CONCURRENCY", 2, "embedding requests in flight per job")
    embed_timeout_s: float = env_field(
        P + "EMBED_TIMEOUT_S",
        120.0,
        "seconds an ingestion job waits for one embedding request (a slow embedder is not a dead one)",
    )
    sentence_vectors: bool = env_field(
        P + "SENTENCE_VECTORS",
        True,
        "embed each chunk's sentences at ingestion and store them beside it (the extractive generator's ranking)",
    )
    write_batch: int = env_field(P + "WRITE_BATCH", 256, "chunks per BatchPut and per committed batch")
    hnsw_threshold: int = env_field(P + "HNSW_THRESHOLD", 50_000, "vectors above which FAISS uses HNSW")
    fusion: str = env_field(P + "FUSION", "weighted", "default fusion: rrf or weighted")
    rrf_k: int = env_field(P + "RRF_K", 60, "default RRF constant")
    dense_weight: float = env_field(P + "DENSE_WEIGHT", 0.6, "default dense weight of weighted fusion")
    candidates: int = env_field(P + "CANDIDATES", 300, "candidates taken from each retriever before fusion")
    bm25_k1: float = env_field(P + "BM25_K1", 0.9, "BM25 term-frequency saturation k1")
    bm25_b: float = env_field(P + "BM25_B", 0.4, "BM25 length normalisation b")
    max_top_k: int = env_field(P + "MAX_TOP_K", 100, "largest top_k a search may ask for")
    cache_max_bytes: int = env_field(P + "CACHE_MAX_BYTES", 64 * 1024 * 1024, "retrieval cache size bound")
    persist_index: bool = env_field(P + "PERSIST_INDEX", True, "write index segments to object storage")
    index_backend: str = env_field(
        P + "INDEX_BACKEND",
        "faiss",
        "faiss (index in each replica) or milvus (stateless: dense and BM25 search in Milvus)",
    )
    milvus_uri: str = env_field(P + "MILVUS_URI", "", "Milvus URI (a milvus-lite file path or http://host:19530)")
    merge_factor: int = env_field(P + "MERGE_FACTOR", 8, "index segments of one size tier merged into one (0: never)")
    merge_floor_chunks: int = env_field(P + "MERGE_FLOOR_CHUNKS", 1000, "chunks of the smallest merge tier")
    gc_grace_s: float = env_field(
        P + "GC_GRACE_S", 300.0, "seconds index files stay after the last manifest naming them was replaced"
    )
    follow_interval_s: float = env_field(
        P + "FOLLOW_INTERVAL_S", 0.5, "seconds between reads of the index's CURRENT by each replica (0: off)"
    )
    max_staleness_s: float = env_field(
        P + "MAX_STALENESS_S", 30.0, "seconds without reaching the store after which a replica stops serving"
    )
    lease: str = env_field(
        P + "LEASE",
        "store",
        "ingestion lease: store (conditional PUTs on an object) or kubernetes (a coordination Lease)",
    )
    lease_name: str = env_field(P + "LEASE_NAME", "ddnrag-retriever-ingest", "name of the Kubernetes Lease object")
    lease_duration_s: float = env_field(
        P + "LEASE_DURATION_S", 10.0, "seconds a dead holder keeps the ingestion lease before another replica takes it"
    )
    replica_id: str = env_field(P + "REPLICA_ID", "", "this replica's name in the lease (default: hostname-pid)")
    kube_api: str = env_field(
        P + "KUBE_API", "", "Kubernetes API server URL (default: from KUBERNETES_SERVICE_HOST/PORT)"
    )
    kube_sa_dir: str = env_field(
        P + "KUBE_SA_DIR",
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "service-account mount: token, ca.crt and namespace for the Lease API",
    )
    heartbeat_s: float = env_field(
        P + "HEARTBEAT_S", 15.0, "a job progress stream repeats the current state after this many idle seconds"
    )
    rerank: str = env_field(
        P + "RERANK",
        "none",
        "rerank stage after fusion: none, tei (/rerank), nim (/v1/ranking), cohere (/v1/rerank), local",
    )
    rerank_url: str = env_field(P + "RERANK_URL", "", "reranker base URL for tei, nim and cohere (without /v1)")
    rerank_model: str = env_field(
        P + "RERANK_MODEL", "", "model name sent to nim/cohere; for local, the CrossEncoder directory"
    )
    rerank_api_key_env: str = env_field(P + "RERANK_API_KEY_ENV", "", "variable holding the reranker's API key")
    rerank_api_key_file: str = env_field(P + "RERANK_API_KEY_FILE", "", "file holding the reranker's API key")
    rerank_top_n: int = env_field(P + "RERANK_TOP_N", 20, "fused candidates the reranker re-scores (at least top_k)")
    rerank_fail_mode: str = env_field(
        P + "RERANK_FAIL_MODE", "fallback", "when the reranker fails: fallback (fusion order, shown) or error (503)"
    )
    rerank_timeout_s: float = env_field(P + "RERANK_TIMEOUT_S", 5.0, "deadline of one rerank call in seconds")
