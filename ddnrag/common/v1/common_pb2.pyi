from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Timings(_message.Message):
    __slots__ = ("total_ns", "stages", "stages_sum_ns")
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    STAGES_SUM_NS_FIELD_NUMBER: _ClassVar[int]
    total_ns: int
    stages: _containers.RepeatedCompositeFieldContainer[StageTiming]
    stages_sum_ns: int
    def __init__(self, total_ns: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., stages_sum_ns: _Optional[int] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("name", "duration_ns", "backend", "ttfb_ns", "bytes", "count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TTFB_NS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    duration_ns: int
    backend: str
    ttfb_ns: int
    bytes: int
    count: int
    def __init__(self, name: _Optional[str] = ..., duration_ns: _Optional[int] = ..., backend: _Optional[str] = ..., ttfb_ns: _Optional[int] = ..., bytes: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("number", "collection", "document_id", "document_name", "chunk_id", "object_key", "score", "text")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    number: int
    collection: str
    document_id: str
    document_name: str
    chunk_id: str
    object_key: str
    score: float
    text: str
    def __init__(self, number: _Optional[int] = ..., collection: _Optional[str] = ..., document_id: _Optional[str] = ..., document_name: _Optional[str] = ..., chunk_id: _Optional[str] = ..., object_key: _Optional[str] = ..., score: _Optional[float] = ..., text: _Optional[str] = ...) -> None: ...

class PageRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ScoredChunk(_message.Message):
    __slots__ = ("chunk_id", "document_id", "document_name", "collection", "object_key", "text", "score", "bm25_rank", "dense_rank", "position", "metadata", "status", "rerank_score", "sentence_vectors")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BM25_RANK_FIELD_NUMBER: _ClassVar[int]
    DENSE_RANK_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RERANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    chunk_id: str
    document_id: str
    document_name: str
    collection: str
    object_key: str
    text: str
    score: float
    bm25_rank: int
    dense_rank: int
    position: int
    metadata: _containers.ScalarMap[str, str]
    status: _status_pb2.Status
    rerank_score: float
    sentence_vectors: SentenceVectors
    def __init__(self, chunk_id: _Optional[str] = ..., document_id: _Optional[str] = ..., document_name: _Optional[str] = ..., collection: _Optional[str] = ..., object_key: _Optional[str] = ..., text: _Optional[str] = ..., score: _Optional[float] = ..., bm25_rank: _Optional[int] = ..., dense_rank: _Optional[int] = ..., position: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., rerank_score: _Optional[float] = ..., sentence_vectors: _Optional[_Union[SentenceVectors, _Mapping]] = ...) -> None: ...

class SentenceVectors(_message.Message):
    __slots__ = ("model", "dimension", "sentence_keys", "vectors_f16")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_KEYS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_F16_FIELD_NUMBER: _ClassVar[int]
    model: str
    dimension: int
    sentence_keys: bytes
    vectors_f16: bytes
    def __init__(self, model: _Optional[str] = ..., dimension: _Optional[int] = ..., sentence_keys: _Optional[bytes] = ..., vectors_f16: _Optional[bytes] = ...) -> None: ...

class Rerank(_message.Message):
    __slots__ = ("backend", "status", "message", "scored")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    backend: str
    status: str
    message: str
    scored: int
    def __init__(self, backend: _Optional[str] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., scored: _Optional[int] = ...) -> None: ...
