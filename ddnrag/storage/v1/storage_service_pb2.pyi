from ddnrag.common.v1 import common_pb2 as _common_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackendKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_KIND_UNSPECIFIED: _ClassVar[BackendKind]
    BACKEND_KIND_DDN_INFINIA: _ClassVar[BackendKind]
    BACKEND_KIND_AWS_S3: _ClassVar[BackendKind]
    BACKEND_KIND_S3_COMPATIBLE: _ClassVar[BackendKind]

class AddressingStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADDRESSING_STYLE_UNSPECIFIED: _ClassVar[AddressingStyle]
    ADDRESSING_STYLE_PATH: _ClassVar[AddressingStyle]
    ADDRESSING_STYLE_VIRTUAL: _ClassVar[AddressingStyle]

class BenchmarkOperation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BENCHMARK_OPERATION_UNSPECIFIED: _ClassVar[BenchmarkOperation]
    BENCHMARK_OPERATION_GET: _ClassVar[BenchmarkOperation]
    BENCHMARK_OPERATION_PUT: _ClassVar[BenchmarkOperation]
    BENCHMARK_OPERATION_MIXED: _ClassVar[BenchmarkOperation]
    BENCHMARK_OPERATION_STAT: _ClassVar[BenchmarkOperation]
    BENCHMARK_OPERATION_LIST: _ClassVar[BenchmarkOperation]
    BENCHMARK_OPERATION_DELETE: _ClassVar[BenchmarkOperation]

class BenchmarkPreset(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BENCHMARK_PRESET_UNSPECIFIED: _ClassVar[BenchmarkPreset]
    BENCHMARK_PRESET_STANDARD: _ClassVar[BenchmarkPreset]
    BENCHMARK_PRESET_EXTENDED: _ClassVar[BenchmarkPreset]
    BENCHMARK_PRESET_STRESS: _ClassVar[BenchmarkPreset]
BACKEND_KIND_UNSPECIFIED: BackendKind
BACKEND_KIND_DDN_INFINIA: BackendKind
BACKEND_KIND_AWS_S3: BackendKind
BACKEND_KIND_S3_COMPATIBLE: BackendKind
ADDRESSING_STYLE_UNSPECIFIED: AddressingStyle
ADDRESSING_STYLE_PATH: AddressingStyle
ADDRESSING_STYLE_VIRTUAL: AddressingStyle
BENCHMARK_OPERATION_UNSPECIFIED: BenchmarkOperation
BENCHMARK_OPERATION_GET: BenchmarkOperation
BENCHMARK_OPERATION_PUT: BenchmarkOperation
BENCHMARK_OPERATION_MIXED: BenchmarkOperation
BENCHMARK_OPERATION_STAT: BenchmarkOperation
BENCHMARK_OPERATION_LIST: BenchmarkOperation
BENCHMARK_OPERATION_DELETE: BenchmarkOperation
BENCHMARK_PRESET_UNSPECIFIED: BenchmarkPreset
BENCHMARK_PRESET_STANDARD: BenchmarkPreset
BENCHMARK_PRESET_EXTENDED: BenchmarkPreset
BENCHMARK_PRESET_STRESS: BenchmarkPreset

class Shaping(_message.Message):
    __slots__ = ("rtt_ms", "jitter_ms", "bandwidth_mbps")
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    rtt_ms: float
    jitter_ms: float
    bandwidth_mbps: float
    def __init__(self, rtt_ms: _Optional[float] = ..., jitter_ms: _Optional[float] = ..., bandwidth_mbps: _Optional[float] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("name", "kind", "endpoint", "region", "bucket", "addressing_style", "insecure_skip_verify", "ca_bundle_path", "access_key_id", "secret_access_key", "credentials_env_prefix", "credentials_file", "has_credentials", "shaping", "emulated", "allowed_prefixes", "is_default", "label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    ADDRESSING_STYLE_FIELD_NUMBER: _ClassVar[int]
    INSECURE_SKIP_VERIFY_FIELD_NUMBER: _ClassVar[int]
    CA_BUNDLE_PATH_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_ENV_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FILE_FIELD_NUMBER: _ClassVar[int]
    HAS_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    SHAPING_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: BackendKind
    endpoint: str
    region: str
    bucket: str
    addressing_style: AddressingStyle
    insecure_skip_verify: bool
    ca_bundle_path: str
    access_key_id: str
    secret_access_key: str
    credentials_env_prefix: str
    credentials_file: str
    has_credentials: bool
    shaping: Shaping
    emulated: bool
    allowed_prefixes: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    label: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[BackendKind, str]] = ..., endpoint: _Optional[str] = ..., region: _Optional[str] = ..., bucket: _Optional[str] = ..., addressing_style: _Optional[_Union[AddressingStyle, str]] = ..., insecure_skip_verify: _Optional[bool] = ..., ca_bundle_path: _Optional[str] = ..., access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., credentials_env_prefix: _Optional[str] = ..., credentials_file: _Optional[str] = ..., has_credentials: _Optional[bool] = ..., shaping: _Optional[_Union[Shaping, _Mapping]] = ..., emulated: _Optional[bool] = ..., allowed_prefixes: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., label: _Optional[str] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("ttfb_ns", "total_ns", "bytes", "retries")
    TTFB_NS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    ttfb_ns: int
    total_ns: int
    bytes: int
    retries: int
    def __init__(self, ttfb_ns: _Optional[int] = ..., total_ns: _Optional[int] = ..., bytes: _Optional[int] = ..., retries: _Optional[int] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("backends", "default_backend", "timings")
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    default_backend: str
    timings: _common_pb2.Timings
    def __init__(self, backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ..., default_backend: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class PutBackendRequest(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    def __init__(self, backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class PutBackendResponse(_message.Message):
    __slots__ = ("backend", "timings")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    timings: _common_pb2.Timings
    def __init__(self, backend: _Optional[_Union[Backend, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class RemoveBackendRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveBackendResponse(_message.Message):
    __slots__ = ("timings",)
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    timings: _common_pb2.Timings
    def __init__(self, timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class TestConnectionRequest(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: str
    def __init__(self, backend: _Optional[str] = ...) -> None: ...

class TestConnectionResponse(_message.Message):
    __slots__ = ("ok", "head_bucket_ns", "can_write", "can_read", "message", "timings")
    OK_FIELD_NUMBER: _ClassVar[int]
    HEAD_BUCKET_NS_FIELD_NUMBER: _ClassVar[int]
    CAN_WRITE_FIELD_NUMBER: _ClassVar[int]
    CAN_READ_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    head_bucket_ns: int
    can_write: bool
    can_read: bool
    message: str
    timings: _common_pb2.Timings
    def __init__(self, ok: _Optional[bool] = ..., head_bucket_ns: _Optional[int] = ..., can_write: _Optional[bool] = ..., can_read: _Optional[bool] = ..., message: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class PutHeader(_message.Message):
    __slots__ = ("backend", "key", "content_type", "metadata", "size_bytes", "if_match", "if_none_match")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IF_MATCH_FIELD_NUMBER: _ClassVar[int]
    IF_NONE_MATCH_FIELD_NUMBER: _ClassVar[int]
    backend: str
    key: str
    content_type: str
    metadata: _containers.ScalarMap[str, str]
    size_bytes: int
    if_match: str
    if_none_match: bool
    def __init__(self, backend: _Optional[str] = ..., key: _Optional[str] = ..., content_type: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., size_bytes: _Optional[int] = ..., if_match: _Optional[str] = ..., if_none_match: _Optional[bool] = ...) -> None: ...

class PutEnd(_message.Message):
    __slots__ = ("size_bytes",)
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    def __init__(self, size_bytes: _Optional[int] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("header", "data", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: PutHeader
    data: bytes
    end: PutEnd
    def __init__(self, header: _Optional[_Union[PutHeader, _Mapping]] = ..., data: _Optional[bytes] = ..., end: _Optional[_Union[PutEnd, _Mapping]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("key", "size_bytes", "etag", "multipart", "transfer", "timings")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    MULTIPART_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    key: str
    size_bytes: int
    etag: str
    multipart: bool
    transfer: Transfer
    timings: _common_pb2.Timings
    def __init__(self, key: _Optional[str] = ..., size_bytes: _Optional[int] = ..., etag: _Optional[str] = ..., multipart: _Optional[bool] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("backend", "key", "range_start", "range_end")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANGE_START_FIELD_NUMBER: _ClassVar[int]
    RANGE_END_FIELD_NUMBER: _ClassVar[int]
    backend: str
    key: str
    range_start: int
    range_end: int
    def __init__(self, backend: _Optional[str] = ..., key: _Optional[str] = ..., range_start: _Optional[int] = ..., range_end: _Optional[int] = ...) -> None: ...

class ObjectInfo(_message.Message):
    __slots__ = ("key", "size_bytes", "etag", "content_type", "last_modified_unix_ns", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    key: str
    size_bytes: int
    etag: str
    content_type: str
    last_modified_unix_ns: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, key: _Optional[str] = ..., size_bytes: _Optional[int] = ..., etag: _Optional[str] = ..., content_type: _Optional[str] = ..., last_modified_unix_ns: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("info", "data", "transfer", "whole")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    WHOLE_FIELD_NUMBER: _ClassVar[int]
    info: ObjectInfo
    data: bytes
    transfer: Transfer
    whole: WholeObject
    def __init__(self, info: _Optional[_Union[ObjectInfo, _Mapping]] = ..., data: _Optional[bytes] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., whole: _Optional[_Union[WholeObject, _Mapping]] = ...) -> None: ...

class WholeObject(_message.Message):
    __slots__ = ("info", "data", "transfer")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    info: ObjectInfo
    data: bytes
    transfer: Transfer
    def __init__(self, info: _Optional[_Union[ObjectInfo, _Mapping]] = ..., data: _Optional[bytes] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...

class PutItem(_message.Message):
    __slots__ = ("key", "data", "content_type", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    key: str
    data: bytes
    content_type: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, key: _Optional[str] = ..., data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BatchPutRequest(_message.Message):
    __slots__ = ("backend", "items")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    items: _containers.RepeatedCompositeFieldContainer[PutItem]
    def __init__(self, backend: _Optional[str] = ..., items: _Optional[_Iterable[_Union[PutItem, _Mapping]]] = ...) -> None: ...

class PutResult(_message.Message):
    __slots__ = ("key", "status", "transfer", "etag")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    key: str
    status: _status_pb2.Status
    transfer: Transfer
    etag: str
    def __init__(self, key: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class BatchPutResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PutResult]
    timings: _common_pb2.Timings
    def __init__(self, results: _Optional[_Iterable[_Union[PutResult, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class BatchGetRequest(_message.Message):
    __slots__ = ("backend", "keys")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, backend: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetResult(_message.Message):
    __slots__ = ("key", "status", "data", "info", "transfer")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    key: str
    status: _status_pb2.Status
    data: bytes
    info: ObjectInfo
    transfer: Transfer
    def __init__(self, key: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., data: _Optional[bytes] = ..., info: _Optional[_Union[ObjectInfo, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ...) -> None: ...

class BatchGetResponse(_message.Message):
    __slots__ = ("results", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetResult]
    timings: _common_pb2.Timings
    def __init__(self, results: _Optional[_Iterable[_Union[GetResult, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class HeadRequest(_message.Message):
    __slots__ = ("backend", "key")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    backend: str
    key: str
    def __init__(self, backend: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class HeadResponse(_message.Message):
    __slots__ = ("info", "transfer", "timings")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    info: ObjectInfo
    transfer: Transfer
    timings: _common_pb2.Timings
    def __init__(self, info: _Optional[_Union[ObjectInfo, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("backend", "prefix", "page")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    backend: str
    prefix: str
    page: _common_pb2.PageRequest
    def __init__(self, backend: _Optional[str] = ..., prefix: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("objects", "next_page_token", "transfer", "timings")
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    objects: _containers.RepeatedCompositeFieldContainer[ObjectInfo]
    next_page_token: str
    transfer: Transfer
    timings: _common_pb2.Timings
    def __init__(self, objects: _Optional[_Iterable[_Union[ObjectInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("backend", "keys", "prefix")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    backend: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    prefix: str
    def __init__(self, backend: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., prefix: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "transfer", "timings")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    transfer: Transfer
    timings: _common_pb2.Timings
    def __init__(self, deleted: _Optional[int] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class CopyRequest(_message.Message):
    __slots__ = ("backend", "source_key", "destination_key")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_KEY_FIELD_NUMBER: _ClassVar[int]
    backend: str
    source_key: str
    destination_key: str
    def __init__(self, backend: _Optional[str] = ..., source_key: _Optional[str] = ..., destination_key: _Optional[str] = ...) -> None: ...

class CopyResponse(_message.Message):
    __slots__ = ("info", "transfer", "timings")
    INFO_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    info: ObjectInfo
    transfer: Transfer
    timings: _common_pb2.Timings
    def __init__(self, info: _Optional[_Union[ObjectInfo, _Mapping]] = ..., transfer: _Optional[_Union[Transfer, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class RunBenchmarkRequest(_message.Message):
    __slots__ = ("backends", "operation", "preset", "concurrency_levels", "object_sizes_bytes", "duration_s", "ops_per_level", "warmup_s", "read_ratio", "label")
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LEVELS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_SIZES_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    OPS_PER_LEVEL_FIELD_NUMBER: _ClassVar[int]
    WARMUP_S_FIELD_NUMBER: _ClassVar[int]
    READ_RATIO_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedScalarFieldContainer[str]
    operation: BenchmarkOperation
    preset: BenchmarkPreset
    concurrency_levels: _containers.RepeatedScalarFieldContainer[int]
    object_sizes_bytes: _containers.RepeatedScalarFieldContainer[int]
    duration_s: float
    ops_per_level: int
    warmup_s: float
    read_ratio: float
    label: str
    def __init__(self, backends: _Optional[_Iterable[str]] = ..., operation: _Optional[_Union[BenchmarkOperation, str]] = ..., preset: _Optional[_Union[BenchmarkPreset, str]] = ..., concurrency_levels: _Optional[_Iterable[int]] = ..., object_sizes_bytes: _Optional[_Iterable[int]] = ..., duration_s: _Optional[float] = ..., ops_per_level: _Optional[int] = ..., warmup_s: _Optional[float] = ..., read_ratio: _Optional[float] = ..., label: _Optional[str] = ...) -> None: ...

class Percentiles(_message.Message):
    __slots__ = ("p50_ns", "p90_ns", "p99_ns", "max_ns", "mean_ns")
    P50_NS_FIELD_NUMBER: _ClassVar[int]
    P90_NS_FIELD_NUMBER: _ClassVar[int]
    P99_NS_FIELD_NUMBER: _ClassVar[int]
    MAX_NS_FIELD_NUMBER: _ClassVar[int]
    MEAN_NS_FIELD_NUMBER: _ClassVar[int]
    p50_ns: int
    p90_ns: int
    p99_ns: int
    max_ns: int
    mean_ns: int
    def __init__(self, p50_ns: _Optional[int] = ..., p90_ns: _Optional[int] = ..., p99_ns: _Optional[int] = ..., max_ns: _Optional[int] = ..., mean_ns: _Optional[int] = ...) -> None: ...

class LevelResult(_message.Message):
    __slots__ = ("backend", "emulated", "object_size_bytes", "concurrency", "ops", "errors", "errors_by_kind", "duration_s", "ops_per_s", "mib_per_s", "latency", "ttfb", "cold_ttfb_p50_ns", "warm_ttfb_p50_ns", "operation", "label", "bytes", "cold_samples", "warm_samples")
    class ErrorsByKindEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    EMULATED_FIELD_NUMBER: _ClassVar[int]
    OBJECT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_BY_KIND_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    OPS_PER_S_FIELD_NUMBER: _ClassVar[int]
    MIB_PER_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TTFB_FIELD_NUMBER: _ClassVar[int]
    COLD_TTFB_P50_NS_FIELD_NUMBER: _ClassVar[int]
    WARM_TTFB_P50_NS_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    COLD_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WARM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    backend: str
    emulated: bool
    object_size_bytes: int
    concurrency: int
    ops: int
    errors: int
    errors_by_kind: _containers.ScalarMap[str, int]
    duration_s: float
    ops_per_s: float
    mib_per_s: float
    latency: Percentiles
    ttfb: Percentiles
    cold_ttfb_p50_ns: int
    warm_ttfb_p50_ns: int
    operation: BenchmarkOperation
    label: str
    bytes: int
    cold_samples: int
    warm_samples: int
    def __init__(self, backend: _Optional[str] = ..., emulated: _Optional[bool] = ..., object_size_bytes: _Optional[int] = ..., concurrency: _Optional[int] = ..., ops: _Optional[int] = ..., errors: _Optional[int] = ..., errors_by_kind: _Optional[_Mapping[str, int]] = ..., duration_s: _Optional[float] = ..., ops_per_s: _Optional[float] = ..., mib_per_s: _Optional[float] = ..., latency: _Optional[_Union[Percentiles, _Mapping]] = ..., ttfb: _Optional[_Union[Percentiles, _Mapping]] = ..., cold_ttfb_p50_ns: _Optional[int] = ..., warm_ttfb_p50_ns: _Optional[int] = ..., operation: _Optional[_Union[BenchmarkOperation, str]] = ..., label: _Optional[str] = ..., bytes: _Optional[int] = ..., cold_samples: _Optional[int] = ..., warm_samples: _Optional[int] = ...) -> None: ...

class BenchmarkProgress(_message.Message):
    __slots__ = ("backend", "object_size_bytes", "concurrency", "ops_done", "errors", "p50_ns", "levels_done", "levels_total")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    OBJECT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    OPS_DONE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    P50_NS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_DONE_FIELD_NUMBER: _ClassVar[int]
    LEVELS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    backend: str
    object_size_bytes: int
    concurrency: int
    ops_done: int
    errors: int
    p50_ns: int
    levels_done: int
    levels_total: int
    def __init__(self, backend: _Optional[str] = ..., object_size_bytes: _Optional[int] = ..., concurrency: _Optional[int] = ..., ops_done: _Optional[int] = ..., errors: _Optional[int] = ..., p50_ns: _Optional[int] = ..., levels_done: _Optional[int] = ..., levels_total: _Optional[int] = ...) -> None: ...

class BenchmarkRun(_message.Message):
    __slots__ = ("run_id", "started_unix_ns", "finished_unix_ns", "request", "results", "not_configured", "json_key", "csv_key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NOT_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    JSON_KEY_FIELD_NUMBER: _ClassVar[int]
    CSV_KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    started_unix_ns: int
    finished_unix_ns: int
    request: RunBenchmarkRequest
    results: _containers.RepeatedCompositeFieldContainer[LevelResult]
    not_configured: _containers.RepeatedScalarFieldContainer[str]
    json_key: str
    csv_key: str
    def __init__(self, run_id: _Optional[str] = ..., started_unix_ns: _Optional[int] = ..., finished_unix_ns: _Optional[int] = ..., request: _Optional[_Union[RunBenchmarkRequest, _Mapping]] = ..., results: _Optional[_Iterable[_Union[LevelResult, _Mapping]]] = ..., not_configured: _Optional[_Iterable[str]] = ..., json_key: _Optional[str] = ..., csv_key: _Optional[str] = ...) -> None: ...

class RunBenchmarkResponse(_message.Message):
    __slots__ = ("progress", "level", "run")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    progress: BenchmarkProgress
    level: LevelResult
    run: BenchmarkRun
    def __init__(self, progress: _Optional[_Union[BenchmarkProgress, _Mapping]] = ..., level: _Optional[_Union[LevelResult, _Mapping]] = ..., run: _Optional[_Union[BenchmarkRun, _Mapping]] = ...) -> None: ...

class ListBenchmarkRunsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListBenchmarkRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token", "timings")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[BenchmarkRun]
    next_page_token: str
    timings: _common_pb2.Timings
    def __init__(self, runs: _Optional[_Iterable[_Union[BenchmarkRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class GetBenchmarkRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetBenchmarkRunResponse(_message.Message):
    __slots__ = ("run", "timings")
    RUN_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    run: BenchmarkRun
    timings: _common_pb2.Timings
    def __init__(self, run: _Optional[_Union[BenchmarkRun, _Mapping]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class CompareBenchmarkRunsRequest(_message.Message):
    __slots__ = ("run_id_a", "run_id_b", "run_a", "run_b")
    RUN_ID_A_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_B_FIELD_NUMBER: _ClassVar[int]
    RUN_A_FIELD_NUMBER: _ClassVar[int]
    RUN_B_FIELD_NUMBER: _ClassVar[int]
    run_id_a: str
    run_id_b: str
    run_a: BenchmarkRun
    run_b: BenchmarkRun
    def __init__(self, run_id_a: _Optional[str] = ..., run_id_b: _Optional[str] = ..., run_a: _Optional[_Union[BenchmarkRun, _Mapping]] = ..., run_b: _Optional[_Union[BenchmarkRun, _Mapping]] = ...) -> None: ...

class BenchmarkComparison(_message.Message):
    __slots__ = ("backend", "operation", "object_size_bytes", "concurrency", "a", "b", "ops_per_s_ratio", "latency_p50_ratio", "ttfb_p50_ratio", "latency_p99_ratio")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    OPS_PER_S_RATIO_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_RATIO_FIELD_NUMBER: _ClassVar[int]
    TTFB_P50_RATIO_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    backend: str
    operation: BenchmarkOperation
    object_size_bytes: int
    concurrency: int
    a: LevelResult
    b: LevelResult
    ops_per_s_ratio: float
    latency_p50_ratio: float
    ttfb_p50_ratio: float
    latency_p99_ratio: float
    def __init__(self, backend: _Optional[str] = ..., operation: _Optional[_Union[BenchmarkOperation, str]] = ..., object_size_bytes: _Optional[int] = ..., concurrency: _Optional[int] = ..., a: _Optional[_Union[LevelResult, _Mapping]] = ..., b: _Optional[_Union[LevelResult, _Mapping]] = ..., ops_per_s_ratio: _Optional[float] = ..., latency_p50_ratio: _Optional[float] = ..., ttfb_p50_ratio: _Optional[float] = ..., latency_p99_ratio: _Optional[float] = ...) -> None: ...

class CompareBenchmarkRunsResponse(_message.Message):
    __slots__ = ("a", "b", "rows", "timings")
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    a: BenchmarkRun
    b: BenchmarkRun
    rows: _containers.RepeatedCompositeFieldContainer[BenchmarkComparison]
    timings: _common_pb2.Timings
    def __init__(self, a: _Optional[_Union[BenchmarkRun, _Mapping]] = ..., b: _Optional[_Union[BenchmarkRun, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[BenchmarkComparison, _Mapping]]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...
