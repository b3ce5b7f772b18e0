"""The LLM gateway's configuration, read from `DDNRAG_LLM_GATEWAY_*` variables."""

from __future__ import annotations

from dataclasses import dataclass

from kernel.config import env_field

from .extractive import SELECTION


@dataclass(frozen=True)
class LlmGatewayConfig:
    """Every field names its variable; `load_env(LlmGatewayConfig)` reads them."""

    host: str = env_field("DDNRAG_LLM_GATEWAY_HOST", "127.0.0.1", "address the gRPC server binds")
    port: int = env_field("DDNRAG_LLM_GATEWAY_PORT", 50054, "gRPC port (0 picks a free one)")
    metrics_port: int = env_field("DDNRAG_LLM_GATEWAY_METRICS_PORT", 9104, "Prometheus port (0 disables)")
    shutdown_grace_s: float = env_field(
        "DDNRAG_LLM_GATEWAY_SHUTDOWN_GRACE_S", 10.0, "seconds in-flight streams get on SIGTERM"
    )
    log_level: str = env_field("DDNRAG_LLM_GATEWAY_LOG_LEVEL", "INFO", "log level")
    state_dir: str = env_field(
        "DDNRAG_LLM_GATEWAY_STATE_DIR", "./data/llm_gateway", "directory for the answer cache (SQLite)"
    )
    retriever_addr: str = env_field(
        "DDNRAG_LLM_GATEWAY_RETRIEVER_ADDR", "127.0.0.1:50053", "retriever gRPC address (host:port), for Answer"
    )
    storage_addr: str = env_field(
        "DDNRAG_LLM_GATEWAY_STORAGE_ADDR",
        "127.0.0.1:50052",
        "storage gRPC address (host:port) where conversations are kept; empty disables conversations",
    )
    embedder_addr: str = env_field(
        "DDNRAG_LLM_GATEWAY_EMBEDDER_ADDR",
        "127.0.0.1:50051",
        'embedder gRPC address for the extractive generator; "local" runs the packaged model in-process',
    )
    backends: str = env_field(
        "DDNRAG_LLM_GATEWAY_BACKENDS",
        "",
        "JSON list of backends in failover order (see backend_factory.py); empty: the extractive generator only",
    )
    backends_file: str = env_field(
        "DDNRAG_LLM_GATEWAY_BACKENDS_FILE", "", "path of a JSON file with the backends list (instead of BACKENDS)"
    )
    extractive_fallback: bool = env_field(
        "DDNRAG_LLM_GATEWAY_EXTRACTIVE_FALLBACK",
        True,
        "append the extractive generator as the last backend when the list does not name it",
    )
    context_budget_tokens: int = env_field(
        "DDNRAG_LLM_GATEWAY_CONTEXT_BUDGET_TOKENS", 3072, "token budget of the prompt (system, passages, question)"
    )
    cache_max_bytes: int = env_field(
        "DDNRAG_LLM_GATEWAY_CACHE_MAX_BYTES", 64 * 1024 * 1024, "answer cache size bound in bytes (0 disables)"
    )
    max_concurrent_answers: int = env_field(
        "DDNRAG_LLM_GATEWAY_MAX_CONCURRENT_ANSWERS",
        64,
        "ceiling of the adaptive admission limit: answers that run retrieval and generation at once "
        "(the limit itself follows measured latency, admission.py; cache hits need none); 0 turns admission off",
    )
    admission_max_wait_s: float = env_field(
        "DDNRAG_LLM_GATEWAY_ADMISSION_MAX_WAIT_S",
        1.0,
        "longest wait for an answer permit; past it, or with the queue full, RESOURCE_EXHAUSTED with retry_after_s",
    )
    retrieval_timeout_s: float = env_field(
        "DDNRAG_LLM_GATEWAY_RETRIEVAL_TIMEOUT_S", 30.0, "deadline of the retriever Search call in Answer"
    )
    history_budget_tokens: int = env_field(
        "DDNRAG_LLM_GATEWAY_HISTORY_BUDGET_TOKENS",
        1024,
        "token budget of a conversation's history in Answer; older turns are trimmed first",
    )
    rewrite_timeout_s: float = env_field(
        "DDNRAG_LLM_GATEWAY_REWRITE_TIMEOUT_S",
        15.0,
        "deadline of the LLM rewrite of a follow-up into a standalone question (then the rules are used)",
    )
    extractive_min_score: float = env_field(
        "DDNRAG_LLM_GATEWAY_EXTRACTIVE_MIN_SCORE",
        SELECTION.min_score,
        "extractive generator: below this sentence score the passages are said not to answer",
    )
    verify: str = env_field(
        "DDNRAG_LLM_GATEWAY_VERIFY",
        "embedder",
        "groundedness check of every answer: embedder (default), judge (a model over the OpenAI protocol) or off",
    )
    verify_judge_url: str = env_field(
        "DDNRAG_LLM_GATEWAY_VERIFY_JUDGE_URL", "", "judge model base URL (OpenAI protocol, e.g. http://vllm:8000/v1)"
    )
    verify_judge_model: str = env_field("DDNRAG_LLM_GATEWAY_VERIFY_JUDGE_MODEL", "", "judge model name")
    verify_judge_api_key_env: str = env_field(
        "DDNRAG_LLM_GATEWAY_VERIFY_JUDGE_API_KEY_ENV", "", "variable holding the judge's API key"
    )
    verify_threshold: float = env_field(
        "DDNRAG_LLM_GATEWAY_VERIFY_THRESHOLD",
        0.5,
        "answer score (share of supported sentences) below which repair runs",
    )
    verify_repair: bool = env_field(
        "DDNRAG_LLM_GATEWAY_VERIFY_REPAIR",
        False,
        "run one repair pass below the threshold (re-retrieve + regenerate, or drop); costs a second answer",
    )
    verify_timeout_s: float = env_field(
        "DDNRAG_LLM_GATEWAY_VERIFY_TIMEOUT_S",
        10.0,
        "deadline of the check of one answer; past it the answer is sent unverified",
    )
    guards: str = env_field(
        "DDNRAG_LLM_GATEWAY_GUARDS",
        "",
        "JSON list of remote guards: nemo, content_safety, moderation (guards/config.py)",
    )
    guard_fail_mode: str = env_field(
        "DDNRAG_LLM_GATEWAY_GUARD_FAIL_MODE",
        "closed",
        "a guard that is down: closed (refuse) or open (let through); shown",
    )
    guard_timeout_s: float = env_field("DDNRAG_LLM_GATEWAY_GUARD_TIMEOUT_S", 5.0, "deadline of one guard check")
    guard_deny_list: str = env_field(
        "DDNRAG_LLM_GATEWAY_GUARD_DENY_LIST", "", "comma-separated terms refused in questions and answers (whole words)"
    )
    guard_max_answer_chars: int = env_field(
        "DDNRAG_LLM_GATEWAY_GUARD_MAX_ANSWER_CHARS", 0, "longest answer let through in characters (0: no limit)"
    )
    redact_pii: bool = env_field(
        "DDNRAG_LLM_GATEWAY_REDACT_PII", False, "mask e-mail addresses and phone numbers in answers as they stream"
    )
