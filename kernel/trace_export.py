"""Exporting finished spans (kernel/tracing.py): a queue that one daemon thread empties in
batches, each encoded by otlp_wire.py and sent by the SDK's OTLP exporter for the configured
protocol, as the SDK's BatchSpanProcessor does, with the same `OTEL_BSP_*` variables and
defaults. Ending a span costs an append; the thread wakes every schedule delay, or at once
when a batch is full. The queue is flushed at interpreter exit (a SIGTERM'd service's last spans).
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .otlp_wire import Batch, FastOtlpGrpcExporter, FastOtlpHttpExporter
from .tracing import Span, replica_name

log = logging.getLogger(__name__)


def _int_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be above 0")
    return value


def exporter_from_env(environ: Mapping[str, str]) -> Any:
    """The SDK's OTLP span exporter for `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (default
    `http/protobuf`), sending otlp_wire's bytes; it reads its other OTEL_EXPORTER_OTLP_* itself."""
    protocol = (
        (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "")
        .strip()
        .lower()
    ) or "http/protobuf"
    if protocol == "grpc":
        return FastOtlpGrpcExporter()
    if protocol == "http/protobuf":
        return FastOtlpHttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use 'grpc' or 'http/protobuf'")


def resource_attributes(service: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """This process's resource: `OTEL_RESOURCE_ATTRIBUTES` and the SDK's defaults (as the SDK's
    `Resource.create` merges them), the service and replica names on top."""
    from opentelemetry.sdk.resources import Resource

    base = {
        "service.name": environ.get("OTEL_SERVICE_NAME") or service,
        "service.namespace": "ddnrag",
        "service.instance.id": replica_name(),
    }
    return dict(Resource.create(base).attributes)


class BatchExporter:
    """The queue and its thread. `on_end(span)` is what tracing calls for each finished span."""

    def __init__(self, exporter: Any, batch: Batch, environ: Mapping[str, str]) -> None:
        self.exporter, self.batch = exporter, batch
        self.delay_s = _int_env(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000
        self.max_queue = _int_env(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        self.max_batch = min(_int_env(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512), self.max_queue)
        self.queue: deque[Span] = deque()
        self.dropped = 0
        self._wake = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()  # one export at a time (the thread's, or a flush's)
        self._thread = threading.Thread(target=self._run, name="otlp-span-export", daemon=True)
        self._thread.start()

    def on_end(self, span: Span) -> None:
        queue = self.queue
        if len(queue) >= self.max_queue:
            self.dropped += 1  # as the SDK does: a full queue drops, it never blocks a request
            return
        queue.append(span)
        if len(queue) == self.max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.delay_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Exports everything queued now, a batch at a time."""
        with self._lock:
            queue = self.queue
            while queue:
                spans = [queue.popleft() for _ in range(min(self.max_batch, len(queue)))]
                try:
                    self.exporter.export(self.batch.with_spans(spans))
                except Exception:
                    log.exception("span export failed", extra={"spans": len(spans)})

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        self.flush()
        if self.dropped:
            log.warning("spans dropped: the export queue was full", extra={"dropped": self.dropped})
        self.exporter.shutdown()


def start_export(service: str, environ: Mapping[str, str]) -> Callable[[Span], None]:
    """Starts exporting this process's spans; returns the function that takes each finished one."""
    exporter = exporter_from_env(environ)
    batcher = BatchExporter(exporter, Batch(resource_attributes(service, environ), scope="ddnrag"), environ)
    atexit.register(batcher.shutdown)
    return batcher.on_end
