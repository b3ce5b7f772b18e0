from ddnrag.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunAbTestRequest(_message.Message):
    __slots__ = ("backends", "questions", "collection", "top_k", "repeat", "skip_ttft", "label", "source", "seed")
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    SKIP_TTFT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    backends: _containers.RepeatedScalarFieldContainer[str]
    questions: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    top_k: int
    repeat: int
    skip_ttft: bool
    label: str
    source: str
    seed: int
    def __init__(self, backends: _Optional[_Iterable[str]] = ..., questions: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ..., top_k: _Optional[int] = ..., repeat: _Optional[int] = ..., skip_ttft: _Optional[bool] = ..., label: _Optional[str] = ..., source: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class WatchAbTestRequest(_message.Message):
    __slots__ = ("run_id", "after_seq")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_seq: int
    def __init__(self, run_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class RunAbTestResponse(_message.Message):
    __slots__ = ("run_id", "seq", "notice", "progress", "run")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seq: int
    notice: AbNotice
    progress: AbProgress
    run: AbRun
    def __init__(self, run_id: _Optional[str] = ..., seq: _Optional[int] = ..., notice: _Optional[_Union[AbNotice, _Mapping]] = ..., progress: _Optional[_Union[AbProgress, _Mapping]] = ..., run: _Optional[_Union[AbRun, _Mapping]] = ...) -> None: ...

class WatchAbTestResponse(_message.Message):
    __slots__ = ("run_id", "seq", "notice", "progress", "run")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    seq: int
    notice: AbNotice
    progress: AbProgress
    run: AbRun
    def __init__(self, run_id: _Optional[str] = ..., seq: _Optional[int] = ..., notice: _Optional[_Union[AbNotice, _Mapping]] = ..., progress: _Optional[_Union[AbProgress, _Mapping]] = ..., run: _Optional[_Union[AbRun, _Mapping]] = ...) -> None: ...

class AbNotice(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class AbProgress(_message.Message):
    __slots__ = ("done", "total", "phase", "errors", "last_fetch_ttfb_ns")
    class LastFetchTtfbNsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LAST_FETCH_TTFB_NS_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    phase: str
    errors: int
    last_fetch_ttfb_ns: _containers.ScalarMap[str, int]
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., phase: _Optional[str] = ..., errors: _Optional[int] = ..., last_fetch_ttfb_ns: _Optional[_Mapping[str, int]] = ...) -> None: ...

class AbRun(_message.Message):
    __slots__ = ("run_id", "status", "started_unix_ns", "finished_unix_ns", "backends", "json_key", "csv_key", "document_json")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    JSON_KEY_FIELD_NUMBER: _ClassVar[int]
    CSV_KEY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    started_unix_ns: int
    finished_unix_ns: int
    backends: _containers.RepeatedScalarFieldContainer[str]
    json_key: str
    csv_key: str
    document_json: str
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., started_unix_ns: _Optional[int] = ..., finished_unix_ns: _Optional[int] = ..., backends: _Optional[_Iterable[str]] = ..., json_key: _Optional[str] = ..., csv_key: _Optional[str] = ..., document_json: _Optional[str] = ...) -> None: ...

class ListAbTestsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListAbTestsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token", "timings")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[AbRun]
    next_page_token: str
    timings: _common_pb2.Timings
    def __init__(self, runs: _Optional[_Iterable[_Union[AbRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...

class GetAbTestRequest(_message.Message):
    __slots__ = ("run_id", "include_csv", "include_html")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CSV_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HTML_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    include_csv: bool
    include_html: bool
    def __init__(self, run_id: _Optional[str] = ..., include_csv: _Optional[bool] = ..., include_html: _Optional[bool] = ...) -> None: ...

class GetAbTestResponse(_message.Message):
    __slots__ = ("run", "csv", "html", "timings")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    run: AbRun
    csv: str
    html: str
    timings: _common_pb2.Timings
    def __init__(self, run: _Optional[_Union[AbRun, _Mapping]] = ..., csv: _Optional[str] = ..., html: _Optional[str] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ...) -> None: ...
