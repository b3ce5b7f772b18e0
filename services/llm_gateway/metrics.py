"""The LLM gateway's own Prometheus metrics, beside the shared `llm_gateway_requests_total`,
`llm_gateway_request_duration_seconds` and `grpc_server_call_duration_seconds`: TTFT, tokens,
stream outcomes and backend failures.

`gen_ai_server_time_to_first_token_seconds` and `gen_ai_server_time_per_output_token_seconds` are
the Prometheus forms of OpenTelemetry's GenAI conventions (`gen_ai.server.time_to_first_token`,
`gen_ai.server.time_per_output_token`), labelled with `gen_ai_request_model` and this gateway's
`backend` name. Answers served from the answer cache are not generations and are not observed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from .domain import DoneEvent, ErrorEvent, StartEvent

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
# Per output token: from 1 ms (a fast GPU) to 2.5 s (a slow CPU model).
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


class LlmMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "llm_gateway_ttft_seconds",
            "Request -> first token from the backend",
            ["backend"],
            registry=registry,
            buckets=_TTFT_BUCKETS,
        )
        self.rag_ttft = Histogram(
            "llm_gateway_rag_ttft_seconds",
            "Answer: request -> first token, retrieval included",
            ["backend"],
            registry=registry,
            buckets=_TTFT_BUCKETS,
        )
        self.gen_ai_ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to generate the first token: request to the backend -> first token (gen_ai.server.time_to_first_token)",
            ["gen_ai_request_model", "backend"],
            registry=registry,
            buckets=_TTFT_BUCKETS,
        )
        self.gen_ai_tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first: first -> last token over completion tokens - 1 "
            "(gen_ai.server.time_per_output_token)",
            ["gen_ai_request_model", "backend"],
            registry=registry,
            buckets=_TPOT_BUCKETS,
        )
        self.tokens = Counter(
            "llm_gateway_tokens",
            "Tokens by backend and kind (prompt, completion)",
            ["backend", "kind"],
            registry=registry,
        )
        self.streams = Counter(
            "llm_gateway_streams",
            "Finished streams by backend and outcome (done, cache_hit, error)",
            ["backend", "outcome"],
            registry=registry,
        )
        self.backend_failures = Counter(
            "llm_gateway_backend_failures",
            "Backend attempts that failed before the first token, by reason",
            ["backend", "reason"],
            registry=registry,
        )

    def backend_failed(self, backend: str, reason: str) -> None:
        self.backend_failures.labels(backend, reason).inc()


class StreamObserver:
    """Follows one stream's events and records them when it ends."""

    def __init__(self, metrics: LlmMetrics | None) -> None:
        self.metrics = metrics
        self.backend = ""
        self.model = ""
        self.cache_hit = False

    def see(self, ev: object) -> None:
        m = self.metrics
        if m is None:
            return
        if isinstance(ev, StartEvent):
            self.backend, self.model, self.cache_hit = ev.backend, ev.model, ev.cache_hit
        elif isinstance(ev, DoneEvent):
            b = self.backend
            m.streams.labels(b, "cache_hit" if self.cache_hit else "done").inc()
            if not self.cache_hit:
                m.ttft.labels(b).observe(ev.ttft_ns / 1e9)
                m.gen_ai_ttft.labels(self.model, b).observe(ev.ttft_ns / 1e9)
                completion = ev.usage.completion_tokens
                if completion > 1:  # 0 when every token arrived in one read
                    m.gen_ai_tpot.labels(self.model, b).observe(ev.generation_ns / 1e9 / (completion - 1))
                if ev.rag_ttft_ns:
                    m.rag_ttft.labels(b).observe(ev.rag_ttft_ns / 1e9)
                m.tokens.labels(b, "prompt").inc(ev.usage.prompt_tokens)
                m.tokens.labels(b, "completion").inc(ev.usage.completion_tokens)
        elif isinstance(ev, ErrorEvent):
            m.streams.labels(self.backend or ev.error.metadata.get("backend", ""), "error").inc()
