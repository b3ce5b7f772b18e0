"""An A/B run's request, samples and summary in plain Python, and their JSON and CSV forms (the
two objects saved in the store: `bench/ab/<run_id>.json` and `bench/ab/<run_id>.csv`).

One sample is one (question, pass, backend): the chunk ids the retriever returned for that
question, fetched from that backend. Pass 0 is the cold pass (the first fetch of those objects
in this run), later passes are warm. A sample that failed keeps its error kind and stays in the
run: it is counted in `errors_by_kind` and left out of latency distributions and pairs."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from kernel.csvsafe import safe_row
from kernel.errors import invalid
from kernel.ids import valid_name

from .stats import BOOTSTRAP_SEED, Dist, Paired, paired, verdict

MAX_QUESTIONS = 5000
MAX_QUESTION_CHARS = 4096
MAX_REPEAT = 10
STAGES = ("fetch_ttfb", "fetch_total", "ttft")
RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")


@dataclass
class AbRequest:
    """What to run. `backends` is the pair (A, B); `questions` the question texts, in order."""

    backends: list[str]
    questions: list[str]
    collection: str = "default"
    top_k: int = 5
    # Passes over the questions: pass 0 is cold, the others warm.
    repeat: int = 2
    # Also time the generator's first token on each side's chunks (TTFT).
    ttft: bool = True
    label: str = ""
    # Where the questions came from, for people ("scifact test split", "questions.txt").
    source: str = ""
    seed: int = BOOTSTRAP_SEED

    def validate(self) -> None:
        if len(self.backends) != 2 or self.backends[0] == self.backends[1]:
            raise invalid(
                f"an A/B run compares two different backends, got {self.backends}; give --backends A,B",
                reason="INVALID_AB_BACKENDS",
            )
        for b in self.backends:
            if not valid_name(b):
                raise invalid(f"{b[:70]!r} is not a backend name", reason="INVALID_AB_BACKENDS")
        if not self.questions:
            raise invalid("there are no questions: give at least one question", reason="NO_QUESTIONS")
        if len(self.questions) > MAX_QUESTIONS:
            raise invalid(
                f"{len(self.questions)} questions given; at most {MAX_QUESTIONS} per run", reason="TOO_MANY_QUESTIONS"
            )
        for i, q in enumerate(self.questions, start=1):
            if not q.strip() or len(q) > MAX_QUESTION_CHARS:
                raise invalid(
                    f"question {i} is empty or longer than {MAX_QUESTION_CHARS} characters", reason="BAD_QUESTION"
                )
        if not 1 <= self.top_k <= 100:
            raise invalid(f"top_k must be within 1..100, got {self.top_k}", reason="INVALID_TOP_K")
        if not 1 <= self.repeat <= MAX_REPEAT:
            raise invalid(f"repeat must be within 1..{MAX_REPEAT}, got {self.repeat}", reason="INVALID_REPEAT")
        if not valid_name(self.collection or ""):
            raise invalid(f"{self.collection[:70]!r} is not a collection name", reason="INVALID_COLLECTION")
        if len(self.label) > 200 or len(self.source) > 500:
            raise invalid("label is limited to 200 characters and source to 500", reason="INVALID_LABEL")


@dataclass
class Sample:
    question: int
    pass_no: int
    phase: str  # "cold" or "warm"
    backend: str
    # 0 when this backend went first for this question and pass, 1 when second (A,B,B,A...).
    slot: int
    chunks: int = 0
    bytes: int = 0
    # The median TTFB of the question's chunks, as the storage service measured each (the same
    # figure as the retriever's `fetch` stage).
    fetch_ttfb_ns: int = 0
    # The BatchGet of the question's chunks from this backend, wall time here.
    fetch_total_ns: int = 0
    # The retriever's Search (shared by both sides of a question and pass), and its own fetch stage.
    retrieval_ns: int = 0
    retrieval_fetch_ns: int = 0
    # The generator's first token over this side's chunks, from the call.
    gen_ttft_ns: int = 0
    # RAG TTFT on this backend: retrieval without its fetch + this fetch + the generator's TTFT.
    ttft_ns: int = 0
    # "" when it worked, else the error kind (for example NOT_FOUND, UNAVAILABLE, DEADLINE_EXCEEDED).
    error: str = ""
    error_message: str = ""


@dataclass
class BackendInfo:
    name: str
    label: str = ""
    emulated: bool = False
    kind: str = ""
    endpoint: str = ""
    bucket: str = ""
    shaping: dict[str, float] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The name, with "(emulated)" for an emulated backend: it is never shown bare."""
        return f"{self.name} (emulated)" if self.emulated else self.name


def _stage_values(samples: list[Sample], backend: str, stage: str) -> list[int]:
    return [getattr(s, f"{stage}_ns") for s in samples if s.backend == backend and not s.error]


def summarize(req: AbRequest, samples: list[Sample], backends: dict[str, BackendInfo]) -> dict[str, Any]:
    """Per phase (cold, warm): per backend distributions and errors, retrieval, and for each stage
    the paired difference B - A with its bootstrap interval, win rate and verdict."""
    a, b = req.backends
    out: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        ss = [s for s in samples if s.phase == phase]
        if not ss:
            continue
        per: dict[str, Any] = {}
        for name in (a, b):
            mine = [s for s in ss if s.backend == name]
            errs = Counter(s.error for s in mine if s.error)
            info = backends.get(name, BackendInfo(name))
            per[name] = {
                "label": info.label,
                "emulated": info.emulated,
                "samples": len(mine),
                "errors": sum(errs.values()),
                "errors_by_kind": dict(sorted(errs.items())),
                **{st: asdict(Dist.of(_stage_values(mine, name, st))) for st in (*STAGES, "gen_ttft")},
            }
        # Pairs: the same question and pass, both sides without error.
        by_key: dict[tuple[int, int], dict[str, Sample]] = {}
        for s in ss:
            by_key.setdefault((s.question, s.pass_no), {})[s.backend] = s
        pairs = [
            (d[a], d[b]) for _, d in sorted(by_key.items()) if a in d and b in d and not d[a].error and not d[b].error
        ]
        stages: dict[str, Any] = {}
        for st in STAGES:
            if st == "ttft" and not req.ttft:
                continue
            p: Paired = paired(
                [getattr(x, f"{st}_ns") for x, _ in pairs], [getattr(y, f"{st}_ns") for _, y in pairs], seed=req.seed
            )
            stages[st] = {
                **asdict(p),
                "verdict": verdict(
                    backends[a].display if a in backends else a,
                    backends[b].display if b in backends else b,
                    p,
                    st.replace("_", " "),
                ),
            }
        retr = sorted({(s.question, s.pass_no): s.retrieval_ns for s in ss if not s.error}.items())
        out[phase] = {
            "backends": per,
            "retrieval": asdict(Dist.of([v for _, v in retr])),
            "pairs": len(pairs),
            "paired": stages,
        }
    return out


def run_document(
    *,
    run_id: str,
    started_unix_ns: int,
    finished_unix_ns: int,
    status: str,
    req: AbRequest,
    backends: dict[str, BackendInfo],
    machine: dict[str, Any],
    notes: list[str],
    samples: list[Sample],
) -> dict[str, Any]:
    """The saved run: every setting, the machine and backend descriptions, the summary, every sample."""
    return {
        "kind": "ab",
        "run_id": run_id,
        "started_unix_ns": started_unix_ns,
        "finished_unix_ns": finished_unix_ns,
        "status": status,
        "request": asdict(req),
        "backends": [asdict(backends[n]) if n in backends else asdict(BackendInfo(n)) for n in req.backends],
        "machine": machine,
        "notes": notes,
        "summary": summarize(req, samples, backends),
        "samples": [asdict(s) for s in samples],
        "json_key": f"bench/ab/{run_id}.json",
        "csv_key": f"bench/ab/{run_id}.csv",
    }


CSV_FIELDS = [f for f in Sample.__dataclass_fields__]


def samples_csv(doc: dict[str, Any]) -> str:
    """One row per sample, with the run id and each backend's label ("emulated: ..." stays)."""
    labels = {b["name"]: (b.get("label") or "") for b in doc.get("backends", [])}
    emulated = {b["name"]: bool(b.get("emulated")) for b in doc.get("backends", [])}
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["run_id", *CSV_FIELDS, "backend_label", "emulated"])
    for s in doc.get("samples", []):
        w.writerow(
            safe_row(
                [
                    doc["run_id"],
                    *(s.get(f, "") for f in CSV_FIELDS),
                    labels.get(s["backend"], ""),
                    emulated.get(s["backend"], False),
                ]
            )
        )
    return out.getvalue()


def brief(doc: dict[str, Any]) -> dict[str, Any]:
    """The run without its samples and questions (for listings and dashboards)."""
    d = {k: v for k, v in doc.items() if k != "samples"}
    req = dict(d.get("request", {}))
    req["questions_count"] = len(req.pop("questions", []) or [])
    d["request"] = req
    return d
