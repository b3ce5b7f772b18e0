"""Plain-Python types of the LLM gateway: passages, parameters, stream events.

No gRPC or protobuf here; `servicer.py` converts these to and from `ddnrag.llm.v1` messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kernel.errors import ServiceError, invalid
from kernel.sentences import SentenceVectors
from kernel.timing import Stage

# Limits from the proto comments.
MAX_QUESTION_CHARS = 4096
DEFAULT_MAX_TOKENS = 512
MAX_MAX_TOKENS = 8192
MAX_PASSAGES = 100
MAX_TOP_K = 20
# History given with a request (AnswerRequest.history).
MAX_HISTORY_MESSAGES = 200
MAX_HISTORY_MESSAGE_CHARS = 16384
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Passage:
    """One context passage, as the caller or the retriever gives it."""

    text: str
    chunk_id: str = ""
    document_id: str = ""
    document_name: str = ""
    collection: str = ""
    object_key: str = ""
    score: float = 0.0
    # The chunk's sentence vectors stored at ingestion (kernel/sentences.py), when the retriever
    # returned them; the extractive generator ranks with them instead of embedding per answer.
    sentence_vectors: SentenceVectors | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GenParams:
    """Sampling parameters. `max_tokens` 0 means DEFAULT_MAX_TOKENS; empty backend/model mean
    the failover order and each backend's default model."""

    backend: str = ""
    model: str = ""
    max_tokens: int = 0
    temperature: float = 0.0
    no_cache: bool = False

    @property
    def effective_max_tokens(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS


@dataclass(frozen=True)
class Citation:
    """Citation number -> the passage (chunk and document) it points to."""

    number: int
    passage: Passage


@dataclass(frozen=True)
class Usage:
    """Token counts; `source` is "backend" (the server's usage) or "tokenizer"."""

    prompt_tokens: int
    completion_tokens: int
    source: str


@dataclass(frozen=True)
class StartEvent:
    backend: str
    model: str
    cache_hit: bool = False


@dataclass(frozen=True)
class TokenEvent:
    """Generated text: `count` backend tokens from `index` on (more than one when they arrived
    together faster than the stream was read)."""

    text: str
    index: int
    count: int = 1


@dataclass(frozen=True)
class CitationEvent:
    citation: Citation


@dataclass(frozen=True)
class DoneEvent:
    usage: Usage
    ttft_ns: int
    generation_ns: int
    tokens_per_s: float
    inter_token_p50_ns: int
    inter_token_p99_ns: int
    finish_reason: str
    citations: tuple[Citation, ...]
    text: str
    stages: tuple[Stage, ...]
    total_ns: int
    # Set by Answer only: request -> first token, retrieval included.
    rag_ttft_ns: int = 0
    # Set by Answer with a conversation: its id and the index of the turn stored.
    conversation_id: str = ""
    turn_index: int = 0
    # The guard report (checks.py: every verdict and the fail mode); None when no checks ran.
    guards: object | None = None


@dataclass(frozen=True)
class ErrorEvent:
    """The last event of a stream that failed after it started."""

    error: ServiceError


@dataclass(frozen=True)
class ChunkStatus:
    """Whether the retriever could serve a chunk's text (gRPC code 0 is OK)."""

    code: int = 0
    message: str = ""


@dataclass(frozen=True)
class RerankInfo:
    """The retriever's rerank stage: backend, status ("ok", "fallback", "skipped"), message."""

    backend: str
    status: str
    message: str = ""
    scored: int = 0


@dataclass(frozen=True)
class RetrievedChunk:
    """One search hit as the retriever returned it."""

    passage: Passage
    bm25_rank: int = 0
    dense_rank: int = 0
    position: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    status: ChunkStatus = ChunkStatus()
    rerank_score: float | None = None

    @property
    def ok(self) -> bool:
        return self.status.code == 0 and bool(self.passage.text.strip())


@dataclass(frozen=True)
class SearchResult:
    """What the retriever found, with its own per-stage timings."""

    chunks: tuple[RetrievedChunk, ...]
    index_version: str = ""
    cache_hit: bool = False
    stages: tuple[Stage, ...] = ()
    total_ns: int = 0
    rerank: RerankInfo | None = None


@dataclass(frozen=True)
class RetrievalEvent:
    """The first event of Answer: what was searched (the standalone question), how it was made
    ("none", "rules", "llm", "rules_fallback"), the history used and trimmed, what was found."""

    result: SearchResult
    search_query: str = ""
    rewrite: str = "none"
    history_turns: int = 0
    history_turns_trimmed: int = 0
    conversation_id: str = ""


GenerateEvent = StartEvent | TokenEvent | CitationEvent | DoneEvent | ErrorEvent
AnswerEvent = RetrievalEvent | GenerateEvent


@dataclass(frozen=True)
class ModelInfo:
    id: str
    backend: str
    kind: str
    priority: int
    healthy: bool = True
    in_flight: int = 0
    max_concurrency: int = 0


def check_question(question: str, params: GenParams) -> None:
    """INVALID_ARGUMENT for an empty or too long question, or sampling parameters out of range."""
    if not question.strip():
        raise invalid("the question is empty; send 1 to 4096 characters", reason="EMPTY_QUESTION")
    if len(question) > MAX_QUESTION_CHARS:
        raise invalid(
            f"the question has {len(question)} characters; the limit is {MAX_QUESTION_CHARS}",
            reason="QUESTION_TOO_LONG",
        )
    if not 0.0 <= params.temperature <= 2.0:
        raise invalid(f"temperature must be within 0..2, got {params.temperature}", reason="BAD_TEMPERATURE")
    if not 0 <= params.max_tokens <= MAX_MAX_TOKENS:
        raise invalid(
            f"max_tokens must be within 0..{MAX_MAX_TOKENS} (0 means 512), got {params.max_tokens}",
            reason="BAD_MAX_TOKENS",
        )
