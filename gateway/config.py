"""The gateway's configuration: one frozen dataclass read from `DDNRAG_GATEWAY_*` variables."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.config import env_field

P = "DDNRAG_GATEWAY_"


@dataclass(frozen=True)
class GatewayConfig:
    """Every field names its variable, default and meaning (see `env_vars(GatewayConfig)`)."""

    host: str = env_field(P + "HOST", "127.0.0.1", "Address the HTTP server binds (0.0.0.0 in a pod).")
    port: int = env_field(P + "PORT", 8080, "HTTP port; 0 picks a free one (tests).")
    storage_addr: str = env_field(P + "STORAGE_ADDR", "127.0.0.1:50052", "gRPC address of the storage service.")
    retriever_addr: str = env_field(P + "RETRIEVER_ADDR", "127.0.0.1:50053", "gRPC address of the retriever service.")
    llm_gateway_addr: str = env_field(
        P + "LLM_GATEWAY_ADDR", "127.0.0.1:50054", "gRPC address of the llm_gateway service."
    )
    embedder_addr: str = env_field(P + "EMBEDDER_ADDR", "127.0.0.1:50051", "gRPC address of the embedder service.")
    shutdown_grace_s: float = env_field(
        P + "SHUTDOWN_GRACE_S", 10.0, "Seconds open requests get to finish on SIGTERM before they are cut."
    )
    log_level: str = env_field(P + "LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING or ERROR.")
    request_timeout_s: float = env_field(
        P + "REQUEST_TIMEOUT_S", 30.0, "Deadline set on unary gRPC calls made for one HTTP request."
    )
    answer_timeout_s: float = env_field(
        P + "ANSWER_TIMEOUT_S", 300.0, "Deadline of one streamed answer (retrieval and generation)."
    )
    max_concurrent_answers: int = env_field(
        P + "MAX_CONCURRENT_ANSWERS",
        512,
        "Ceiling of each of the gateway's adaptive admission pools (answer streams admitted at once; the limit "
        "follows measured time to first token, gateway/admission.py); 0: no admission.",
    )
    answer_queue_timeout_s: float = env_field(
        P + "ANSWER_QUEUE_TIMEOUT_S",
        0.0,
        "Longest wait for an answer stream when its admission pool is full (0: none); then 429 with Retry-After.",
    )
    ping_interval_s: float = env_field(P + "PING_INTERVAL_S", 15.0, "Seconds between `: ping` SSE comments.")
    keepalive_timeout_s: float = env_field(
        P + "KEEPALIVE_TIMEOUT_S",
        15.0,
        "Seconds an idle connection, or one still sending its request head (a slowloris), stays open.",
    )
    body_timeout_s: float = env_field(
        P + "BODY_TIMEOUT_S", 30.0, "Longest pause in a request body; a body that stalls longer gets 408."
    )
    max_upload_bytes: int = env_field(
        P + "MAX_UPLOAD_BYTES", 100 * 1024 * 1024, "Largest accepted file in an upload, in bytes (413 above)."
    )
    max_request_bytes: int = env_field(
        P + "MAX_REQUEST_BYTES", 1024 * 1024, "Largest accepted JSON request body, in bytes (413 above)."
    )
    max_upload_files: int = env_field(P + "MAX_UPLOAD_FILES", 50, "Most files accepted in one upload request.")
    api_keys: tuple[str, ...] = env_field(
        P + "API_KEYS",
        (),
        "Comma-separated Bearer API keys for /api and /v1, each '<key> [role=reader|writer|admin]'.",
    )
    auth: str = env_field(
        P + "AUTH",
        "",
        "keys or open; empty: keys when any are configured, else refused at start (`rag up` sets open on loopback).",
    )
    api_keys_default_role: str = env_field(
        P + "API_KEYS_DEFAULT_ROLE", "reader", "Role of a key given without role=: reader, writer or admin."
    )
    allowed_hosts: tuple[str, ...] = env_field(
        P + "ALLOWED_HOSTS",
        ("localhost", "127.0.0.1", "::1"),
        "Host header names accepted when no API keys are set (DNS-rebinding guard); the bind host is added.",
    )
    api_keys_file: str = env_field(
        P + "API_KEYS_FILE",
        "",
        "File of API keys, one per line: '<key or sha256:hex> [rps=F] [burst=N]' (a mounted Secret), added to API_KEYS.",
    )
    api_keys_reload_s: float = env_field(
        P + "API_KEYS_RELOAD_S", 2.0, "Seconds between checks of API_KEYS_FILE for rotated keys; 0 never reloads."
    )
    cors_origins: tuple[str, ...] = env_field(
        P + "CORS_ORIGINS", (), "Comma-separated origins allowed to call the API from a browser (CORS)."
    )
    rate_limit_rps: float = env_field(
        P + "RATE_LIMIT_RPS", 50.0, "Requests per second allowed per API key (or client address); 0 disables."
    )
    rate_limit_burst: int = env_field(P + "RATE_LIMIT_BURST", 200, "Requests a key may make at once above the rate.")
    health_rate_limit_rps: float = env_field(
        P + "HEALTH_RATE_LIMIT_RPS", 5.0, "Requests per second to /api/health per client address (burst 20)."
    )
    max_streams_per_key: int = env_field(
        P + "MAX_STREAMS_PER_KEY", 8, "SSE streams one API key (or client address) may hold open at once; 429 above."
    )
    default_collection: str = env_field(P + "DEFAULT_COLLECTION", "default", "Collection used when none is given.")
    trace_url: str = env_field(
        P + "TRACE_URL",
        "",
        "A trace viewer's address with {trace_id} in it (Jaeger: http://HOST:16686/trace/{trace_id}); "
        "the demo links each answer's trace there. Empty: the trace id is shown, not linked.",
    )
    health_timeout_s: float = env_field(P + "HEALTH_TIMEOUT_S", 2.0, "Deadline of each upstream health check.")
    metrics_peers: tuple[str, ...] = env_field(
        P + "METRICS_PEERS",
        (),
        "Comma-separated '<service>=<metrics URL>' the Metrics page scrapes (rag up sets them); empty: the gateway's own.",
    )
    metrics_scrape_interval_s: float = env_field(
        P + "METRICS_SCRAPE_INTERVAL_S", 10.0, "Seconds between the Metrics page's scrapes of its peers; 0 stops them."
    )
