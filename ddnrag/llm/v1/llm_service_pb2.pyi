from ddnrag.common.v1 import common_pb2 as _common_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Passage(_message.Message):
    __slots__ = ("text", "chunk_id", "document_id", "document_name", "collection", "object_key", "score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    chunk_id: str
    document_id: str
    document_name: str
    collection: str
    object_key: str
    score: float
    def __init__(self, text: _Optional[str] = ..., chunk_id: _Optional[str] = ..., document_id: _Optional[str] = ..., document_name: _Optional[str] = ..., collection: _Optional[str] = ..., object_key: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class GenerationParams(_message.Message):
    __slots__ = ("backend", "model", "max_tokens", "temperature", "no_cache")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    max_tokens: int
    temperature: float
    no_cache: bool
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., no_cache: _Optional[bool] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("question", "passages", "params")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    question: str
    passages: _containers.RepeatedCompositeFieldContainer[Passage]
    params: GenerationParams
    def __init__(self, question: _Optional[str] = ..., passages: _Optional[_Iterable[_Union[Passage, _Mapping]]] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ...) -> None: ...

class Start(_message.Message):
    __slots__ = ("backend", "model", "cache_hit")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    cache_hit: bool
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., cache_hit: _Optional[bool] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("text", "index", "count")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    text: str
    index: int
    count: int
    def __init__(self, text: _Optional[str] = ..., index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "source")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    source: str
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("usage", "ttft_ns", "rag_ttft_ns", "generation_ns", "tokens_per_s", "inter_token_p50_ns", "inter_token_p99_ns", "finish_reason", "citations", "text", "timings", "conversation_id", "turn_index", "guards")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TTFT_NS_FIELD_NUMBER: _ClassVar[int]
    RAG_TTFT_NS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_NS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    INTER_TOKEN_P50_NS_FIELD_NUMBER: _ClassVar[int]
    INTER_TOKEN_P99_NS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    usage: Usage
    ttft_ns: int
    rag_ttft_ns: int
    generation_ns: int
    tokens_per_s: float
    inter_token_p50_ns: int
    inter_token_p99_ns: int
    finish_reason: str
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    text: str
    timings: _common_pb2.Timings
    conversation_id: str
    turn_index: int
    guards: Guards
    def __init__(self, usage: _Optional[_Union[Usage, _Mapping]] = ..., ttft_ns: _Optional[int] = ..., rag_ttft_ns: _Optional[int] = ..., generation_ns: _Optional[int] = ..., tokens_per_s: _Optional[float] = ..., inter_token_p50_ns: _Optional[int] = ..., inter_token_p99_ns: _Optional[int] = ..., finish_reason: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., text: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., conversation_id: _Optional[str] = ..., turn_index: _Optional[int] = ..., guards: _Optional[_Union[Guards, _Mapping]] = ...) -> None: ...

class Retrieval(_message.Message):
    __slots__ = ("chunks", "index_version", "cache_hit", "timings", "search_query", "rewrite", "history_turns", "history_turns_trimmed", "conversation_id", "rerank")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_QUERY_FIELD_NUMBER: _ClassVar[int]
    REWRITE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TURNS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_TURNS_TRIMMED_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredChunk]
    index_version: str
    cache_hit: bool
    timings: _common_pb2.Timings
    search_query: str
    rewrite: str
    history_turns: int
    history_turns_trimmed: int
    conversation_id: str
    rerank: _common_pb2.Rerank
    def __init__(self, chunks: _Optional[_Iterable[_Union[_common_pb2.ScoredChunk, _Mapping]]] = ..., index_version: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., search_query: _Optional[str] = ..., rewrite: _Optional[str] = ..., history_turns: _Optional[int] = ..., history_turns_trimmed: _Optional[int] = ..., conversation_id: _Optional[str] = ..., rerank: _Optional[_Union[_common_pb2.Rerank, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("start", "token", "citation", "done", "error", "verify", "refused")
    START_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CITATION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    start: Start
    token: Token
    citation: _common_pb2.Citation
    done: Done
    error: _status_pb2.Status
    verify: Verify
    refused: Refused
    def __init__(self, start: _Optional[_Union[Start, _Mapping]] = ..., token: _Optional[_Union[Token, _Mapping]] = ..., citation: _Optional[_Union[_common_pb2.Citation, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., verify: _Optional[_Union[Verify, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("question", "collection", "storage_backend", "top_k", "params", "filters", "conversation_id", "history")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    question: str
    collection: str
    storage_backend: str
    top_k: int
    params: GenerationParams
    filters: _containers.ScalarMap[str, str]
    conversation_id: str
    history: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    def __init__(self, question: _Optional[str] = ..., collection: _Optional[str] = ..., storage_backend: _Optional[str] = ..., top_k: _Optional[int] = ..., params: _Optional[_Union[GenerationParams, _Mapping]] = ..., filters: _Optional[_Mapping[str, str]] = ..., conversation_id: _Optional[str] = ..., history: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("retrieval", "start", "token", "citation", "done", "error", "verify", "refused")
    RETRIEVAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CITATION_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    retrieval: Retrieval
    start: Start
    token: Token
    citation: _common_pb2.Citation
    done: Done
    error: _status_pb2.Status
    verify: Verify
    refused: Refused
    def __init__(self, retrieval: _Optional[_Union[Retrieval, _Mapping]] = ..., start: _Optional[_Union[Start, _Mapping]] = ..., token: _Optional[_Union[Token, _Mapping]] = ..., citation: _Optional[_Union[_common_pb2.Citation, _Mapping]] = ..., done: _Optional[_Union[Done, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., verify: _Optional[_Union[Verify, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ...) -> None: ...

class SentenceCheck(_message.Message):
    __slots__ = ("index", "text", "citations", "score", "supported")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    citations: _containers.RepeatedScalarFieldContainer[int]
    score: float
    supported: bool
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., citations: _Optional[_Iterable[int]] = ..., score: _Optional[float] = ..., supported: _Optional[bool] = ...) -> None: ...

class Verification(_message.Message):
    __slots__ = ("sentences", "answer_score", "method", "duration_ns")
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    ANSWER_SCORE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    sentences: _containers.RepeatedCompositeFieldContainer[SentenceCheck]
    answer_score: float
    method: str
    duration_ns: int
    def __init__(self, sentences: _Optional[_Iterable[_Union[SentenceCheck, _Mapping]]] = ..., answer_score: _Optional[float] = ..., method: _Optional[str] = ..., duration_ns: _Optional[int] = ...) -> None: ...

class Repair(_message.Message):
    __slots__ = ("kind", "text", "verification", "added_passages", "message", "duration_ns")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    ADDED_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    text: str
    verification: Verification
    added_passages: int
    message: str
    duration_ns: int
    def __init__(self, kind: _Optional[str] = ..., text: _Optional[str] = ..., verification: _Optional[_Union[Verification, _Mapping]] = ..., added_passages: _Optional[int] = ..., message: _Optional[str] = ..., duration_ns: _Optional[int] = ...) -> None: ...

class Verify(_message.Message):
    __slots__ = ("check", "threshold", "repair")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    check: Verification
    threshold: float
    repair: Repair
    def __init__(self, check: _Optional[_Union[Verification, _Mapping]] = ..., threshold: _Optional[float] = ..., repair: _Optional[_Union[Repair, _Mapping]] = ...) -> None: ...

class GuardVerdict(_message.Message):
    __slots__ = ("guard", "stage", "status", "reason", "message", "categories", "duration_ns")
    GUARD_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    guard: str
    stage: str
    status: str
    reason: str
    message: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    duration_ns: int
    def __init__(self, guard: _Optional[str] = ..., stage: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., duration_ns: _Optional[int] = ...) -> None: ...

class Guards(_message.Message):
    __slots__ = ("fail_mode", "verdicts", "failed_open")
    FAIL_MODE_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_OPEN_FIELD_NUMBER: _ClassVar[int]
    fail_mode: str
    verdicts: _containers.RepeatedCompositeFieldContainer[GuardVerdict]
    failed_open: bool
    def __init__(self, fail_mode: _Optional[str] = ..., verdicts: _Optional[_Iterable[_Union[GuardVerdict, _Mapping]]] = ..., failed_open: _Optional[bool] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("stage", "guard", "reason", "message", "guards")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    GUARD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GUARDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    guard: str
    reason: str
    message: str
    guards: Guards
    def __init__(self, stage: _Optional[str] = ..., guard: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., guards: _Optional[_Union[Guards, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "backend", "kind", "priority", "healthy", "in_flight", "max_concurrency")
    ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    backend: str
    kind: str
    priority: int
    healthy: bool
    in_flight: int
    max_concurrency: int
    def __init__(self, id: _Optional[str] = ..., backend: _Optional[str] = ..., kind: _Optional[str] = ..., priority: _Optional[int] = ..., healthy: _Optional[bool] = ..., in_flight: _Optional[int] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "timings")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    timings: _common_pb2.Timings
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class CacheStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStatsResponse(_message.Message):
    __slots__ = ("entries", "size_bytes", "max_size_bytes", "hits", "misses", "evictions", "timings")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    entries: int
    size_bytes: int
    max_size_bytes: int
    hits: int
    misses: int
    evictions: int
    timings: _common_pb2.Timings
    def __init__(self, entries: _Optional[int] = ..., size_bytes: _Optional[int] = ..., max_size_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., evictions: _Optional[int] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class PurgeCacheRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeCacheResponse(_message.Message):
    __slots__ = ("removed", "timings")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    removed: int
    timings: _common_pb2.Timings
    def __init__(self, removed: _Optional[int] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class Turn(_message.Message):
    __slots__ = ("question", "search_query", "answer", "citations", "backend", "model", "finish_reason", "created_unix_ns", "verify_score", "verify")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    SEARCH_QUERY_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_SCORE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    question: str
    search_query: str
    answer: str
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    backend: str
    model: str
    finish_reason: str
    created_unix_ns: int
    verify_score: float
    verify: Verify
    def __init__(self, question: _Optional[str] = ..., search_query: _Optional[str] = ..., answer: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., backend: _Optional[str] = ..., model: _Optional[str] = ..., finish_reason: _Optional[str] = ..., created_unix_ns: _Optional[int] = ..., verify_score: _Optional[float] = ..., verify: _Optional[_Union[Verify, _Mapping]] = ...) -> None: ...

class Conversation(_message.Message):
    __slots__ = ("id", "title", "collection", "created_unix_ns", "updated_unix_ns", "turn_count", "turns")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    TURN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    collection: str
    created_unix_ns: int
    updated_unix_ns: int
    turn_count: int
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., collection: _Optional[str] = ..., created_unix_ns: _Optional[int] = ..., updated_unix_ns: _Optional[int] = ..., turn_count: _Optional[int] = ..., turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ...) -> None: ...

class CreateConversationRequest(_message.Message):
    __slots__ = ("title", "collection")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    title: str
    collection: str
    def __init__(self, title: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class CreateConversationResponse(_message.Message):
    __slots__ = ("conversation", "timings")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    timings: _common_pb2.Timings
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class ListConversationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConversationsResponse(_message.Message):
    __slots__ = ("conversations", "timings", "next_page_token")
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[Conversation]
    timings: _common_pb2.Timings
    next_page_token: str
    def __init__(self, conversations: _Optional[_Iterable[_Union[Conversation, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetConversationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetConversationResponse(_message.Message):
    __slots__ = ("conversation", "timings")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    timings: _common_pb2.Timings
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class UpdateConversationRequest(_message.Message):
    __slots__ = ("id", "title")
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class UpdateConversationResponse(_message.Message):
    __slots__ = ("conversation", "timings")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    conversation: Conversation
    timings: _common_pb2.Timings
    def __init__(self, conversation: _Optional[_Union[Conversation, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class DeleteConversationRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteConversationResponse(_message.Message):
    __slots__ = ("timings",)
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    timings: _common_pb2.Timings
    def __init__(self, timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...
