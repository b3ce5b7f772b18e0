"""JSON logs to stdout, one object per line, one shape in every process:

    {"time": "2026-11-29T17:30:00.123Z", "level": "info", "service": "retriever",
     "replica": "retriever-1", "trace_id": "4bf9...", "span_id": "00f0...",
     "message": "...", "logger": "services.retriever.core", "fields": {...}}

`trace_id` and `span_id` are those of the span current when the line was written (kernel/tracing.py),
so every line written while serving a request carries the request's trace id ("" outside any
trace). `fields` holds the record's `extra=` values; an exception's traceback is `fields.exc`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .tracing import current_ids, replica_name

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str, replica: str | None = None) -> None:
        super().__init__()
        self.service = service
        self.replica = replica if replica is not None else replica_name()

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        fields: dict[str, object] = {}
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                fields[k] = v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "replica": self.replica,
            "trace_id": trace_id,
            "span_id": span_id,
            "message": record.getMessage(),
            "logger": record.name,
            "fields": fields,
        }
        return json.dumps(out, ensure_ascii=False)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
