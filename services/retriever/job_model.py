"""The ingestion job's domain types: what a caller asks for, what a job records, what callers see.

Shared by the job manager (`jobs.py`), the pipeline stages (`pipeline.py`), the shared job state
(`job_state.py`) and the servicer. No I/O here.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ACTIVE_STATES = ("queued", "running")
TERMINAL_STATES = ("succeeded", "partial", "failed", "cancelled")

_DOC_KEY = re.compile(r"^docs/[^/]+/([^/]+)/[^/]+$")


@dataclass(frozen=True)
class SourceSpec:
    """One object to ingest, as the caller named it."""

    object_key: str
    name: str = ""
    document_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class FileRow:
    """One file of a job and its result."""

    object_key: str
    name: str
    document_id: str
    metadata: dict[str, str]
    status: str = "pending"  # pending | done | failed | unchanged
    reason: str = ""
    size_bytes: int = 0
    sha256: str = ""
    chunks: int = 0
    # Time this file spent in each stage, ns. Embed and write serve several files at once: a file
    # gets the share of the call's time that its chunks are of the call's chunks.
    fetch_ns: int = 0
    parse_ns: int = 0
    chunk_ns: int = 0
    embed_ns: int = 0
    write_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileRow:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class ChunkRow:
    """A committed chunk with its vector, waiting for the job's index commit."""

    chunk_id: str
    document_id: str
    position: int
    text: str
    vector: np.ndarray


@dataclass
class JobRecord:
    """A job as stored in `jobs/<job_id>/job.json`: the request, its progress and its commits.

    `batches` names the committed batch objects in order; a batch not named here is not
    committed. `fence` is the lease generation of the replica that wrote this version, and
    `seq` the last progress sequence it published."""

    job_id: str
    collection: str
    state: str
    stage: str
    request: dict[str, Any]
    created_ns: int
    updated_ns: int
    error: str = ""
    index_version: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    batches: list[str] = field(default_factory=list)
    fence: int = 0
    holder: str = ""
    seq: int = 0
    fingerprint: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        d = json.loads(data)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass
class BackendStats:
    backend: str
    objects_written: int = 0
    busy_ns: int = 0
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.objects_written / (self.busy_ns / 1e9) if self.busy_ns else 0.0

    @property
    def p50_ns(self) -> int:
        return int(statistics.median(self.latencies_ns)) if self.latencies_ns else 0

    @property
    def avg_ns(self) -> int:
        return int(sum(self.latencies_ns) / len(self.latencies_ns)) if self.latencies_ns else 0


@dataclass
class FileErrorView:
    name: str
    object_key: str
    reason: str


@dataclass
class JobView:
    """A job as callers see it (the servicer turns it into a `Job` message)."""

    job_id: str
    collection: str
    state: str
    stage: str
    documents_done: int = 0
    documents_total: int = 0
    chunks_done: int = 0
    chunks_total: int = 0
    embeddings_per_s: float = 0.0
    backends: list[BackendStats] = field(default_factory=list)
    eta_s: float = -1.0
    file_errors: list[FileErrorView] = field(default_factory=list)
    error: str = ""
    created_unix_ns: int = 0
    updated_unix_ns: int = 0
    index_version: str = ""
    document_ids: list[str] = field(default_factory=list)
    # Time per stage, ns: fetch, parse, chunk (summed over files, which run 4 at a time), embed and
    # write (wall time while a call was in flight), index (the commit); run (the job's wall time)
    # and embed_idle (no embedding request in flight between the first and the last).
    stage_ns: dict[str, int] = field(default_factory=dict)
    bytes_total: int = 0
    # The embedder's device when the job ran, e.g. "cuda:0 (NVIDIA H200)".
    embedder_device: str = ""

    @property
    def terminal(self) -> bool:
        return self.state not in ACTIVE_STATES


def backend_stats(request: dict[str, Any]) -> list[BackendStats]:
    return [BackendStats(b or "default") for b in request["target_backends"]]


def file_errors(files: Sequence[FileRow]) -> list[FileErrorView]:
    return [FileErrorView(f.name, f.object_key, f.reason) for f in files if f.status == "failed"]


def default_document_id(key: str) -> str:
    m = _DOC_KEY.match(key)
    return m.group(1) if m else hashlib.sha256(key.encode()).hexdigest()[:16]


def file_rows(sources: Sequence[SourceSpec], taken: set[str] | None = None) -> list[FileRow]:
    """The job's files: one per distinct object key, document ids made unique."""
    rows: list[FileRow] = []
    ids: set[str] = set()
    seen: set[str] = set(taken or ())
    for s in sources:
        if s.object_key in seen:
            continue
        seen.add(s.object_key)
        name = s.name or s.object_key.rsplit("/", 1)[-1]
        doc_id = s.document_id or default_document_id(s.object_key)
        if doc_id in ids:
            doc_id = f"{doc_id}-{hashlib.sha256(s.object_key.encode()).hexdigest()[:8]}"
        ids.add(doc_id)
        rows.append(FileRow(s.object_key, name, doc_id, dict(s.metadata)))
    return rows


def fingerprint(collection: str, files: Sequence[FileRow], request: dict[str, Any]) -> str:
    """What makes two ingestion requests the same job: collection, files and options."""
    body = {
        "collection": collection,
        "files": sorted([f.object_key, f.name, f.document_id, sorted(f.metadata.items())] for f in files),
        "request": {k: request[k] for k in sorted(request) if k != "listed"},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def stats_of(v: JobView) -> dict[str, Any]:
    """The progress of a view, as stored in the job record."""
    return {
        "documents_done": v.documents_done,
        "documents_total": v.documents_total,
        "chunks_done": v.chunks_done,
        "chunks_total": v.chunks_total,
        "embeddings_per_s": v.embeddings_per_s,
        "eta_s": v.eta_s,
        "backends": [
            {
                "backend": b.backend,
                "objects_written": b.objects_written,
                "ops_per_s": b.ops_per_s,
                "p50_ns": b.p50_ns,
                "avg_ns": b.avg_ns,
            }
            for b in v.backends
        ],
        "file_errors": [[e.name, e.object_key, e.reason] for e in v.file_errors],
        "document_ids": v.document_ids,
        "stage_ns": v.stage_ns,
        "bytes_total": v.bytes_total,
        "embedder_device": v.embedder_device,
    }


def view_of(rec: JobRecord) -> JobView:
    """A stored job record as callers see it."""
    st = rec.stats
    backends = []
    for b in st.get("backends", []):
        bs = BackendStats(b["backend"], b["objects_written"])
        bs.latencies_ns = [b["p50_ns"]] if b["p50_ns"] else []
        bs.busy_ns = int(b["objects_written"] / b["ops_per_s"] * 1e9) if b["ops_per_s"] else 0
        backends.append(bs)
    return JobView(
        rec.job_id,
        rec.collection,
        rec.state,
        rec.stage,
        documents_done=st.get("documents_done", 0),
        documents_total=st.get("documents_total", 0),
        chunks_done=st.get("chunks_done", 0),
        chunks_total=st.get("chunks_total", 0),
        embeddings_per_s=st.get("embeddings_per_s", 0.0),
        backends=backends,
        eta_s=0.0 if not rec.active else st.get("eta_s", -1.0),
        file_errors=[FileErrorView(*e) for e in st.get("file_errors", [])],
        error=rec.error,
        created_unix_ns=rec.created_ns,
        updated_unix_ns=rec.updated_ns,
        index_version=rec.index_version,
        document_ids=list(st.get("document_ids", [])),
        stage_ns=dict(st.get("stage_ns", {})),
        bytes_total=st.get("bytes_total", 0),
        embedder_device=st.get("embedder_device", ""),
    )
