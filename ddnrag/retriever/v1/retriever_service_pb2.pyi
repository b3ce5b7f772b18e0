from ddnrag.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_PARTIAL: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_HYBRID: _ClassVar[SearchMode]
    SEARCH_MODE_DENSE: _ClassVar[SearchMode]
    SEARCH_MODE_BM25: _ClassVar[SearchMode]

class FusionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FUSION_METHOD_UNSPECIFIED: _ClassVar[FusionMethod]
    FUSION_METHOD_RRF: _ClassVar[FusionMethod]
    FUSION_METHOD_WEIGHTED: _ClassVar[FusionMethod]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_PARTIAL: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_HYBRID: SearchMode
SEARCH_MODE_DENSE: SearchMode
SEARCH_MODE_BM25: SearchMode
FUSION_METHOD_UNSPECIFIED: FusionMethod
FUSION_METHOD_RRF: FusionMethod
FUSION_METHOD_WEIGHTED: FusionMethod

class Collection(_message.Message):
    __slots__ = ("name", "documents", "chunks", "version", "updated_unix_ns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    name: str
    documents: int
    chunks: int
    version: str
    updated_unix_ns: int
    def __init__(self, name: _Optional[str] = ..., documents: _Optional[int] = ..., chunks: _Optional[int] = ..., version: _Optional[str] = ..., updated_unix_ns: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection", "timings")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    timings: _common_pb2.Timings
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections", "timings")
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    timings: _common_pb2.Timings
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ("timings", "documents", "chunks", "objects_deleted", "jobs_cancelled", "jobs_removed")
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    JOBS_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    JOBS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    timings: _common_pb2.Timings
    documents: int
    chunks: int
    objects_deleted: int
    jobs_cancelled: int
    jobs_removed: int
    def __init__(self, timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., documents: _Optional[int] = ..., chunks: _Optional[int] = ..., objects_deleted: _Optional[int] = ..., jobs_cancelled: _Optional[int] = ..., jobs_removed: _Optional[int] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("document_id", "name", "object_key", "size_bytes", "chunks", "sha256", "metadata", "ingested_unix_ns")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    INGESTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    name: str
    object_key: str
    size_bytes: int
    chunks: int
    sha256: str
    metadata: _containers.ScalarMap[str, str]
    ingested_unix_ns: int
    def __init__(self, document_id: _Optional[str] = ..., name: _Optional[str] = ..., object_key: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunks: _Optional[int] = ..., sha256: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ingested_unix_ns: _Optional[int] = ...) -> None: ...

class ListDocumentsRequest(_message.Message):
    __slots__ = ("collection", "page")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    page: _common_pb2.PageRequest
    def __init__(self, collection: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListDocumentsResponse(_message.Message):
    __slots__ = ("documents", "next_page_token", "total", "timings")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    next_page_token: str
    total: int
    timings: _common_pb2.Timings
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total: _Optional[int] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class DeleteDocumentRequest(_message.Message):
    __slots__ = ("collection", "document_id")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    collection: str
    document_id: str
    def __init__(self, collection: _Optional[str] = ..., document_id: _Optional[str] = ...) -> None: ...

class DeleteDocumentResponse(_message.Message):
    __slots__ = ("timings",)
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    timings: _common_pb2.Timings
    def __init__(self, timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class SourceObject(_message.Message):
    __slots__ = ("object_key", "name", "document_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    object_key: str
    name: str
    document_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, object_key: _Optional[str] = ..., name: _Optional[str] = ..., document_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ChunkingOptions(_message.Message):
    __slots__ = ("chunk_size_tokens", "chunk_overlap_tokens")
    CHUNK_SIZE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    chunk_size_tokens: int
    chunk_overlap_tokens: int
    def __init__(self, chunk_size_tokens: _Optional[int] = ..., chunk_overlap_tokens: _Optional[int] = ...) -> None: ...

class StartIngestRequest(_message.Message):
    __slots__ = ("collection", "sources", "source_prefix", "source_backend", "target_backends", "chunking")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PREFIX_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TARGET_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    CHUNKING_FIELD_NUMBER: _ClassVar[int]
    collection: str
    sources: _containers.RepeatedCompositeFieldContainer[SourceObject]
    source_prefix: str
    source_backend: str
    target_backends: _containers.RepeatedScalarFieldContainer[str]
    chunking: ChunkingOptions
    def __init__(self, collection: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[SourceObject, _Mapping]]] = ..., source_prefix: _Optional[str] = ..., source_backend: _Optional[str] = ..., target_backends: _Optional[_Iterable[str]] = ..., chunking: _Optional[_Union[ChunkingOptions, _Mapping]] = ...) -> None: ...

class StartIngestResponse(_message.Message):
    __slots__ = ("job", "timings")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    timings: _common_pb2.Timings
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class FileError(_message.Message):
    __slots__ = ("name", "object_key", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    object_key: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., object_key: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class BackendWriteStats(_message.Message):
    __slots__ = ("backend", "objects_written", "write_ops_per_s", "write_p50_ns", "write_avg_ns")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    WRITE_OPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    WRITE_P50_NS_FIELD_NUMBER: _ClassVar[int]
    WRITE_AVG_NS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    objects_written: int
    write_ops_per_s: float
    write_p50_ns: int
    write_avg_ns: int
    def __init__(self, backend: _Optional[str] = ..., objects_written: _Optional[int] = ..., write_ops_per_s: _Optional[float] = ..., write_p50_ns: _Optional[int] = ..., write_avg_ns: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "collection", "state", "stage", "documents_done", "documents_total", "chunks_done", "chunks_total", "embeddings_per_s", "backends", "eta_s", "file_errors", "error", "created_unix_ns", "updated_unix_ns", "index_version", "document_ids", "bytes_total", "fetch_ns", "parse_ns", "chunk_ns", "embed_ns", "write_ns", "index_ns", "embedder_device", "files", "run_ns", "embed_idle_ns")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_DONE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DONE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_PER_S_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    ETA_S_FIELD_NUMBER: _ClassVar[int]
    FILE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FETCH_NS_FIELD_NUMBER: _ClassVar[int]
    PARSE_NS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_NS_FIELD_NUMBER: _ClassVar[int]
    EMBED_NS_FIELD_NUMBER: _ClassVar[int]
    WRITE_NS_FIELD_NUMBER: _ClassVar[int]
    INDEX_NS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDER_DEVICE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    RUN_NS_FIELD_NUMBER: _ClassVar[int]
    EMBED_IDLE_NS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    collection: str
    state: JobState
    stage: str
    documents_done: int
    documents_total: int
    chunks_done: int
    chunks_total: int
    embeddings_per_s: float
    backends: _containers.RepeatedCompositeFieldContainer[BackendWriteStats]
    eta_s: float
    file_errors: _containers.RepeatedCompositeFieldContainer[FileError]
    error: str
    created_unix_ns: int
    updated_unix_ns: int
    index_version: str
    document_ids: _containers.RepeatedScalarFieldContainer[str]
    bytes_total: int
    fetch_ns: int
    parse_ns: int
    chunk_ns: int
    embed_ns: int
    write_ns: int
    index_ns: int
    embedder_device: str
    files: _containers.RepeatedCompositeFieldContainer[JobFile]
    run_ns: int
    embed_idle_ns: int
    def __init__(self, job_id: _Optional[str] = ..., collection: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., stage: _Optional[str] = ..., documents_done: _Optional[int] = ..., documents_total: _Optional[int] = ..., chunks_done: _Optional[int] = ..., chunks_total: _Optional[int] = ..., embeddings_per_s: _Optional[float] = ..., backends: _Optional[_Iterable[_Union[BackendWriteStats, _Mapping]]] = ..., eta_s: _Optional[float] = ..., file_errors: _Optional[_Iterable[_Union[FileError, _Mapping]]] = ..., error: _Optional[str] = ..., created_unix_ns: _Optional[int] = ..., updated_unix_ns: _Optional[int] = ..., index_version: _Optional[str] = ..., document_ids: _Optional[_Iterable[str]] = ..., bytes_total: _Optional[int] = ..., fetch_ns: _Optional[int] = ..., parse_ns: _Optional[int] = ..., chunk_ns: _Optional[int] = ..., embed_ns: _Optional[int] = ..., write_ns: _Optional[int] = ..., index_ns: _Optional[int] = ..., embedder_device: _Optional[str] = ..., files: _Optional[_Iterable[_Union[JobFile, _Mapping]]] = ..., run_ns: _Optional[int] = ..., embed_idle_ns: _Optional[int] = ...) -> None: ...

class JobFile(_message.Message):
    __slots__ = ("name", "object_key", "document_id", "status", "reason", "size_bytes", "chunks", "fetch_ns", "parse_ns", "chunk_ns", "embed_ns", "write_ns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FETCH_NS_FIELD_NUMBER: _ClassVar[int]
    PARSE_NS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_NS_FIELD_NUMBER: _ClassVar[int]
    EMBED_NS_FIELD_NUMBER: _ClassVar[int]
    WRITE_NS_FIELD_NUMBER: _ClassVar[int]
    name: str
    object_key: str
    document_id: str
    status: str
    reason: str
    size_bytes: int
    chunks: int
    fetch_ns: int
    parse_ns: int
    chunk_ns: int
    embed_ns: int
    write_ns: int
    def __init__(self, name: _Optional[str] = ..., object_key: _Optional[str] = ..., document_id: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunks: _Optional[int] = ..., fetch_ns: _Optional[int] = ..., parse_ns: _Optional[int] = ..., chunk_ns: _Optional[int] = ..., embed_ns: _Optional[int] = ..., write_ns: _Optional[int] = ...) -> None: ...

class IngestProgress(_message.Message):
    __slots__ = ("sequence", "job", "terminal", "timings")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    job: Job
    terminal: bool
    timings: _common_pb2.Timings
    def __init__(self, sequence: _Optional[int] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., terminal: _Optional[bool] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "include_files")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FILES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    include_files: bool
    def __init__(self, job_id: _Optional[str] = ..., include_files: _Optional[bool] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job", "timings")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    timings: _common_pb2.Timings
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page", "collection")
    PAGE_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    collection: str
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., collection: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token", "timings")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    timings: _common_pb2.Timings
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job", "timings")
    JOB_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    timings: _common_pb2.Timings
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "query", "top_k", "backend", "mode", "fusion", "rrf_k", "dense_weight", "filters", "no_cache", "no_rerank", "no_fetch", "sentence_vectors")
    class FiltersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FUSION_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    DENSE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    NO_RERANK_FIELD_NUMBER: _ClassVar[int]
    NO_FETCH_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    query: str
    top_k: int
    backend: str
    mode: SearchMode
    fusion: FusionMethod
    rrf_k: int
    dense_weight: float
    filters: _containers.ScalarMap[str, str]
    no_cache: bool
    no_rerank: bool
    no_fetch: bool
    sentence_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., query: _Optional[str] = ..., top_k: _Optional[int] = ..., backend: _Optional[str] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., fusion: _Optional[_Union[FusionMethod, str]] = ..., rrf_k: _Optional[int] = ..., dense_weight: _Optional[float] = ..., filters: _Optional[_Mapping[str, str]] = ..., no_cache: _Optional[bool] = ..., no_rerank: _Optional[bool] = ..., no_fetch: _Optional[bool] = ..., sentence_vectors: _Optional[bool] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("chunks", "index_version", "cache_hit", "timings", "rerank")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredChunk]
    index_version: str
    cache_hit: bool
    timings: _common_pb2.Timings
    rerank: _common_pb2.Rerank
    def __init__(self, chunks: _Optional[_Iterable[_Union[_common_pb2.ScoredChunk, _Mapping]]] = ..., index_version: _Optional[str] = ..., cache_hit: _Optional[bool] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., rerank: _Optional[_Union[_common_pb2.Rerank, _Mapping]] = ...) -> None: ...

class Watch(_message.Message):
    __slots__ = ("watch_id", "collection", "backend", "prefix", "interval_s", "active", "files")
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    collection: str
    backend: str
    prefix: str
    interval_s: float
    active: bool
    files: _containers.RepeatedCompositeFieldContainer[WatchedFile]
    def __init__(self, watch_id: _Optional[str] = ..., collection: _Optional[str] = ..., backend: _Optional[str] = ..., prefix: _Optional[str] = ..., interval_s: _Optional[float] = ..., active: _Optional[bool] = ..., files: _Optional[_Iterable[_Union[WatchedFile, _Mapping]]] = ...) -> None: ...

class WatchedFile(_message.Message):
    __slots__ = ("object_key", "etag", "status", "job_id", "error", "updated_unix_ns")
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    object_key: str
    etag: str
    status: str
    job_id: str
    error: str
    updated_unix_ns: int
    def __init__(self, object_key: _Optional[str] = ..., etag: _Optional[str] = ..., status: _Optional[str] = ..., job_id: _Optional[str] = ..., error: _Optional[str] = ..., updated_unix_ns: _Optional[int] = ...) -> None: ...

class StartWatchRequest(_message.Message):
    __slots__ = ("collection", "backend", "prefix", "interval_s")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    collection: str
    backend: str
    prefix: str
    interval_s: float
    def __init__(self, collection: _Optional[str] = ..., backend: _Optional[str] = ..., prefix: _Optional[str] = ..., interval_s: _Optional[float] = ...) -> None: ...

class StartWatchResponse(_message.Message):
    __slots__ = ("watch",)
    WATCH_FIELD_NUMBER: _ClassVar[int]
    watch: Watch
    def __init__(self, watch: _Optional[_Union[Watch, _Mapping]] = ...) -> None: ...

class StopWatchRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: str
    def __init__(self, watch_id: _Optional[str] = ...) -> None: ...

class StopWatchResponse(_message.Message):
    __slots__ = ("watch",)
    WATCH_FIELD_NUMBER: _ClassVar[int]
    watch: Watch
    def __init__(self, watch: _Optional[_Union[Watch, _Mapping]] = ...) -> None: ...

class ListWatchesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWatchesResponse(_message.Message):
    __slots__ = ("watches",)
    WATCHES_FIELD_NUMBER: _ClassVar[int]
    watches: _containers.RepeatedCompositeFieldContainer[Watch]
    def __init__(self, watches: _Optional[_Iterable[_Union[Watch, _Mapping]]] = ...) -> None: ...

class CacheStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CacheStatsResponse(_message.Message):
    __slots__ = ("entries", "size_bytes", "max_size_bytes", "hits", "misses")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    entries: int
    size_bytes: int
    max_size_bytes: int
    hits: int
    misses: int
    def __init__(self, entries: _Optional[int] = ..., size_bytes: _Optional[int] = ..., max_size_bytes: _Optional[int] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ...) -> None: ...

class PurgeCacheRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PurgeCacheResponse(_message.Message):
    __slots__ = ("removed",)
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    removed: int
    def __init__(self, removed: _Optional[int] = ...) -> None: ...
