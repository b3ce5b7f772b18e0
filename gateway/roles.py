"""Who may do what: the role every `/api` and `/v1` route needs, in one table.

Roles are ordered: `reader` < `writer` < `admin`; a key may call every route its role or a lower
one needs.

- `reader`: ask and search (`/api/rag/*`, `/v1/*`), and read what exists (documents, jobs,
  collections, benchmark runs, caches, watches, backends without secrets, metrics).
- `writer`: change the corpus: upload and delete documents, start and cancel ingestion jobs.
- `admin`: change the platform: storage backends, continuous-ingestion watches, storage
  benchmarks (they write to a backend), cache purges.

A route missing from the table needs `admin` (fail closed); `tests/security/test_role_matrix.py`
checks that every route of the app is in it, so a new route gets a deliberate role.
"""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    READER = 1
    WRITER = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}; use reader, writer or admin") from None


R, W, A = Role.READER, Role.WRITER, Role.ADMIN

# (method, route pattern) -> the least role that may call it. Routes that need no key at all
# (probes, the demo page, Prometheus) are in `OPEN_ROUTES` instead.
ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("GET", "/api/whoami"): R,
    # ask and search
    ("GET", "/api/rag/stream"): R,
    ("POST", "/api/rag/query"): R,
    ("POST", "/v1/chat/completions"): R,
    ("POST", "/v1/embeddings"): R,
    ("GET", "/v1/models"): R,
    ("GET", "/api/models"): R,
    ("GET", "/api/embedder"): R,
    # conversations are part of asking (not per key: a reader sees and continues them all)
    ("GET", "/api/conversations"): R,
    ("POST", "/api/conversations"): R,
    ("GET", "/api/conversations/{conversation_id}"): R,
    ("PATCH", "/api/conversations/{conversation_id}"): R,
    ("DELETE", "/api/conversations/{conversation_id}"): W,
    # reading what exists
    ("GET", "/api/documents"): R,
    ("GET", "/api/documents/count"): R,
    ("GET", "/api/documents/formats"): R,
    ("GET", "/api/collections"): R,
    ("GET", "/api/collections/{name}"): R,
    ("GET", "/api/ingestion/stream"): R,
    ("GET", "/api/ingestion/jobs/{job_id}/stream"): R,
    ("GET", "/api/ingestion/jobs"): R,
    ("GET", "/api/ingestion/jobs/{job_id}"): R,
    ("GET", "/api/ingestion/stream/all"): R,
    ("GET", "/api/benchmarks"): R,
    ("GET", "/api/benchmarks/compare"): R,
    ("GET", "/api/benchmarks/{run_id}"): R,
    ("GET", "/api/benchmarks/{run_id}/export"): R,
    ("GET", "/api/ab/runs"): R,
    ("GET", "/api/ab/runs/{run_id}"): R,
    ("GET", "/api/ab/runs/{run_id}/stream"): R,
    ("GET", "/api/ab/runs/{run_id}/report"): R,
    ("GET", "/api/ab/runs/{run_id}/export"): R,
    ("GET", "/api/cache"): R,
    ("GET", "/api/metrics/summary"): R,
    ("GET", "/api/metrics/window"): R,
    ("GET", "/api/watches"): R,
    ("GET", "/api/config/backends"): R,
    # the corpus
    ("POST", "/api/documents"): W,
    ("DELETE", "/api/documents/{document_id}"): W,
    ("POST", "/api/ingestion/jobs"): W,
    ("POST", "/api/ingestion/jobs/{job_id}/cancel"): W,
    ("DELETE", "/api/collections/{name}"): W,  # clears the collection: documents, chunks, index, jobs
    # the platform
    ("POST", "/api/config/backends"): A,
    ("DELETE", "/api/config/backends/{name}"): A,
    ("POST", "/api/config/backends/{name}/test"): A,
    ("POST", "/api/watches"): A,
    ("POST", "/api/watches/{watch_id}/stop"): A,
    ("GET", "/api/benchmarks/stream"): A,  # a GET that runs a benchmark (EventSource can only GET)
    ("POST", "/api/cache/purge"): A,
    # the bucket browser shows every object, other services' state included (routes/objects.py)
    ("GET", "/api/objects"): A,
    ("GET", "/api/objects/summary"): A,
    ("GET", "/api/objects/download"): A,
    ("DELETE", "/api/objects"): A,
    ("POST", "/api/ab/runs"): A,  # an A/B run may write missing chunks to a backend, as benchmarks do
}

OPEN_ROUTES = frozenset(
    {
        ("GET", "/api/health"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/static/"),
        # the API's description (not a secret) and its page
        ("GET", "/api/openapi.json"),
        ("GET", "/api/docs"),
    }
)

# What each role may do, in words (whoami, the demo's badge).
ABILITIES: dict[str, Role] = {"ask": R, "read": R, "upload": W, "ingest": W, "delete_documents": W, "admin": A}


def required_role(method: str, pattern: str) -> Role:
    """The least role for a route; HEAD follows GET; a route not in the table needs admin."""
    return ROUTE_ROLES.get(("GET" if method == "HEAD" else method, pattern), Role.ADMIN)


def abilities(role: Role) -> dict[str, bool]:
    return {what: role >= need for what, need in ABILITIES.items()}
