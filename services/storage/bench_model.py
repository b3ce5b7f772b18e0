"""Benchmark types in plain Python, and their JSON/CSV forms (what is saved in the store)."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from kernel.csvsafe import safe_cell, safe_row
from kernel.errors import invalid
from kernel.percentiles import percentile

KIB = 1024
MIB = 1024 * 1024
OPERATIONS = ("get", "put", "mixed", "stat", "list", "delete")
PRESETS: dict[str, tuple[int, ...]] = {
    "standard": (1, 5, 10, 20, 50),
    "extended": (1, 10, 50, 100, 200),
    "stress": (1, 10, 50, 100, 250, 500),
}
MAX_RUN_SECONDS = 2 * 3600


@dataclass
class BenchRequest:
    backends: list[str]
    operation: str = "get"
    preset: str = ""  # "", "standard", "extended", "stress"
    levels: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=lambda: [4 * KIB])
    duration_s: float = 0.0
    ops_per_level: int = 0
    warmup_s: float = 0.0
    read_ratio: float = 0.0
    label: str = ""

    def resolved_levels(self) -> list[int]:
        return list(PRESETS[self.preset]) if self.preset else list(self.levels)

    def validate(self, max_concurrency: int) -> None:
        if not self.backends:
            raise invalid("name at least one backend to benchmark", reason="INVALID_BENCHMARK")
        if len(set(self.backends)) != len(self.backends) or len(self.backends) > 8:
            raise invalid("benchmark backends must be distinct, at most 8", reason="INVALID_BENCHMARK")
        if self.operation not in OPERATIONS:
            raise invalid(f"benchmark operation must be one of {list(OPERATIONS)}", reason="INVALID_BENCHMARK")
        if self.preset and self.preset not in PRESETS:
            raise invalid(f"unknown preset {self.preset!r}", reason="INVALID_BENCHMARK")
        levels = self.resolved_levels()
        if not levels:
            raise invalid("give a preset or custom concurrency levels", reason="INVALID_BENCHMARK")
        if any(c < 1 or c > max_concurrency for c in levels):
            raise invalid(f"concurrency levels must be within 1..{max_concurrency}", reason="INVALID_BENCHMARK")
        if not self.sizes or any(s < KIB or s > 64 * MIB for s in self.sizes):
            raise invalid("object sizes must be within 1 KiB .. 64 MiB", reason="INVALID_BENCHMARK")
        if self.duration_s < 0 or self.warmup_s < 0 or self.duration_s > 3600 or self.warmup_s > 600:
            raise invalid("duration_s must be 0..3600 and warmup_s 0..600", reason="INVALID_BENCHMARK")
        if self.duration_s == 0 and not (0 < self.ops_per_level <= 1_000_000):
            raise invalid("give duration_s > 0 or ops_per_level within 1..1000000", reason="INVALID_BENCHMARK")
        if not 0 <= self.read_ratio <= 1:
            raise invalid("read_ratio must be within 0..1", reason="INVALID_BENCHMARK")
        cells = len(levels) * len(self.sizes) * len(self.backends)
        if self.duration_s and cells * (self.duration_s + self.warmup_s) > MAX_RUN_SECONDS:
            raise invalid(
                f"this run would take {cells * (self.duration_s + self.warmup_s):.0f} s; keep it under "
                f"{MAX_RUN_SECONDS} s",
                reason="INVALID_BENCHMARK",
            )


@dataclass
class Pct:
    p50_ns: int = 0
    p90_ns: int = 0
    p99_ns: int = 0
    max_ns: int = 0
    mean_ns: int = 0

    @classmethod
    def of(cls, values: list[int]) -> Pct:
        if not values:
            return cls()
        v = sorted(values)
        return cls(
            p50_ns=percentile(v, 50),
            p90_ns=percentile(v, 90),
            p99_ns=percentile(v, 99),
            max_ns=v[-1],
            mean_ns=sum(v) // len(v),
        )


@dataclass
class LevelStats:
    backend: str
    label: str
    emulated: bool
    operation: str
    object_size_bytes: int
    concurrency: int
    ops: int = 0
    errors: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    ops_per_s: float = 0.0
    mib_per_s: float = 0.0
    bytes: int = 0
    latency: Pct = field(default_factory=Pct)
    ttfb: Pct = field(default_factory=Pct)
    cold_ttfb_p50_ns: int = 0
    warm_ttfb_p50_ns: int = 0
    cold_samples: int = 0
    warm_samples: int = 0


@dataclass
class Progress:
    backend: str
    object_size_bytes: int
    concurrency: int
    ops_done: int
    errors: int
    p50_ns: int
    levels_done: int
    levels_total: int


@dataclass
class RunRecord:
    run_id: str
    started_unix_ns: int
    finished_unix_ns: int
    request: BenchRequest
    results: list[LevelStats] = field(default_factory=list)
    not_configured: list[str] = field(default_factory=list)
    json_key: str = ""
    csv_key: str = ""


def run_to_json(run: RunRecord) -> dict[str, Any]:
    return asdict(run)


def run_from_json(d: dict[str, Any]) -> RunRecord:
    req = BenchRequest(**{k: v for k, v in d["request"].items() if k in BenchRequest.__dataclass_fields__})
    results = []
    for r in d.get("results", []):
        r = dict(r)
        if "object_size" in r:  # saved before the size gained its unit in the name
            r["object_size_bytes"] = r.pop("object_size")
        r["latency"] = Pct(**r.get("latency", {}))
        r["ttfb"] = Pct(**r.get("ttfb", {}))
        results.append(LevelStats(**{k: v for k, v in r.items() if k in LevelStats.__dataclass_fields__}))
    return RunRecord(
        run_id=d["run_id"],
        started_unix_ns=int(d["started_unix_ns"]),
        finished_unix_ns=int(d["finished_unix_ns"]),
        request=req,
        results=results,
        not_configured=list(d.get("not_configured", [])),
        json_key=d.get("json_key", ""),
        csv_key=d.get("csv_key", ""),
    )


CSV_PCT = ("p50_ns", "p90_ns", "p99_ns", "max_ns", "mean_ns")


def run_to_csv(run: RunRecord) -> str:
    """One row per (backend, size, concurrency) cell; errors_by_kind as `kind=n;kind=n`."""
    scalar = [f.name for f in fields(LevelStats) if f.name not in ("latency", "ttfb", "errors_by_kind")]
    header = ["run_id", *scalar, "errors_by_kind"]
    header += [f"latency_{p}" for p in CSV_PCT] + [f"ttfb_{p}" for p in CSV_PCT]
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    for r in run.results:
        row: list[Any] = [run.run_id, *(getattr(r, n) for n in scalar)]
        row.append(";".join(f"{safe_cell(k)}={v}" for k, v in sorted(r.errors_by_kind.items())))
        row += [getattr(r.latency, p) for p in CSV_PCT] + [getattr(r.ttfb, p) for p in CSV_PCT]
        w.writerow(safe_row(row))
    return out.getvalue()


@dataclass
class Comparison:
    backend: str
    operation: str
    object_size_bytes: int
    concurrency: int
    a: LevelStats | None
    b: LevelStats | None
    ops_per_s_ratio: float = 0.0
    latency_p50_ratio: float = 0.0
    ttfb_p50_ratio: float = 0.0
    latency_p99_ratio: float = 0.0


def _ratio(b: float, a: float) -> float:
    return b / a if a and b else 0.0


def compare_runs(a: RunRecord, b: RunRecord) -> list[Comparison]:
    """Every cell of either run, lined up; ratios are b / a. The one comparison of benchmark runs:
    `CompareBenchmarkRuns` returns it, and the CLI and the gateway only show it."""

    def cell(r: LevelStats) -> tuple[str, str, int, int]:
        return (r.backend, r.operation, r.object_size_bytes, r.concurrency)

    ia, ib = {cell(r): r for r in a.results}, {cell(r): r for r in b.results}
    rows = []
    for c in sorted(set(ia) | set(ib)):
        ra, rb = ia.get(c), ib.get(c)
        row = Comparison(*c, a=ra, b=rb)
        if ra and rb:
            row.ops_per_s_ratio = _ratio(rb.ops_per_s, ra.ops_per_s)
            row.latency_p50_ratio = _ratio(rb.latency.p50_ns, ra.latency.p50_ns)
            row.ttfb_p50_ratio = _ratio(rb.ttfb.p50_ns, ra.ttfb.p50_ns)
            row.latency_p99_ratio = _ratio(rb.latency.p99_ns, ra.latency.p99_ns)
        rows.append(row)
    return rows
