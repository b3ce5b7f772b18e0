"""protobuf <-> domain conversions for the storage service (used by the servicer only)."""

from __future__ import annotations

from ddnrag.storage.v1 import storage_service_pb2 as pb
from kernel.errors import invalid

from .bench_model import CSV_PCT, BenchRequest, Comparison, LevelStats, Pct, Progress, RunRecord
from .model import BackendSpec, Credentials, Kind, ObjectMeta, Shaping, Transfer

KIND_FROM_PB = {
    pb.BACKEND_KIND_DDN_INFINIA: Kind.DDN_INFINIA,
    pb.BACKEND_KIND_AWS_S3: Kind.AWS_S3,
    pb.BACKEND_KIND_S3_COMPATIBLE: Kind.S3_COMPATIBLE,
}
KIND_TO_PB = {v: k for k, v in KIND_FROM_PB.items()}
STYLE_FROM_PB = {
    pb.ADDRESSING_STYLE_UNSPECIFIED: "",
    pb.ADDRESSING_STYLE_PATH: "path",
    pb.ADDRESSING_STYLE_VIRTUAL: "virtual",
}
STYLE_TO_PB = {v: k for k, v in STYLE_FROM_PB.items()}


def transfer_pb(t: Transfer) -> pb.Transfer:
    return pb.Transfer(ttfb_ns=t.ttfb_ns, total_ns=t.total_ns, bytes=t.bytes, retries=t.retries)


def info_pb(m: ObjectMeta) -> pb.ObjectInfo:
    return pb.ObjectInfo(
        key=m.key,
        size_bytes=m.size_bytes,
        etag=m.etag,
        content_type=m.content_type,
        last_modified_unix_ns=m.last_modified_unix_ns,
        metadata=m.metadata,
    )


def backend_pb(spec: BackendSpec, has_credentials: bool) -> pb.Backend:
    """The backend for a response: secrets left empty, `has_credentials` set."""
    return pb.Backend(
        name=spec.name,
        kind=KIND_TO_PB[spec.kind],
        endpoint=spec.endpoint,
        region=spec.region,
        bucket=spec.bucket,
        addressing_style=STYLE_TO_PB[spec.addressing_style],
        insecure_skip_verify=spec.insecure_skip_verify,
        ca_bundle_path=spec.ca_bundle_path,
        credentials_env_prefix=spec.credentials_env_prefix,
        credentials_file=spec.credentials_file,
        has_credentials=has_credentials,
        shaping=pb.Shaping(
            rtt_ms=spec.shaping.rtt_ms, jitter_ms=spec.shaping.jitter_ms, bandwidth_mbps=spec.shaping.bandwidth_mbps
        ),
        emulated=spec.emulated,
        allowed_prefixes=list(spec.allowed_prefixes),
        is_default=spec.is_default,
        label=spec.label(),
    )


def backend_from_pb(b: pb.Backend) -> tuple[BackendSpec, Credentials | None]:
    """The spec and, when given inline, the credentials (kept apart from the spec)."""
    if b.kind not in KIND_FROM_PB:
        raise invalid(
            f"backend {b.name!r} needs a kind: ddn_infinia, aws_s3 or s3_compatible", reason="INVALID_BACKEND"
        )
    if bool(b.access_key_id) != bool(b.secret_access_key):
        raise invalid(
            f"backend {b.name!r}: give both access_key_id and secret_access_key, or neither",
            reason="INVALID_BACKEND",
        )
    inline = Credentials(b.access_key_id, b.secret_access_key) if b.access_key_id else None
    spec = BackendSpec(
        name=b.name,
        kind=KIND_FROM_PB[b.kind],
        endpoint=b.endpoint.rstrip("/"),
        region=b.region or "us-east-1",
        bucket=b.bucket,
        addressing_style=STYLE_FROM_PB.get(b.addressing_style, ""),
        insecure_skip_verify=b.insecure_skip_verify,
        ca_bundle_path=b.ca_bundle_path,
        credentials_env_prefix=b.credentials_env_prefix,
        credentials_file=b.credentials_file,
        inline_credentials=inline is not None,
        shaping=Shaping(b.shaping.rtt_ms, b.shaping.jitter_ms, b.shaping.bandwidth_mbps),
        allowed_prefixes=tuple(b.allowed_prefixes),
    )
    return spec, inline


# --- benchmarks ----------------------------------------------------------------------------

OP_FROM_PB = {
    pb.BENCHMARK_OPERATION_GET: "get",
    pb.BENCHMARK_OPERATION_PUT: "put",
    pb.BENCHMARK_OPERATION_MIXED: "mixed",
    pb.BENCHMARK_OPERATION_STAT: "stat",
    pb.BENCHMARK_OPERATION_LIST: "list",
    pb.BENCHMARK_OPERATION_DELETE: "delete",
}
OP_TO_PB = {v: k for k, v in OP_FROM_PB.items()}
PRESET_FROM_PB = {
    pb.BENCHMARK_PRESET_UNSPECIFIED: "",
    pb.BENCHMARK_PRESET_STANDARD: "standard",
    pb.BENCHMARK_PRESET_EXTENDED: "extended",
    pb.BENCHMARK_PRESET_STRESS: "stress",
}
PRESET_TO_PB = {v: k for k, v in PRESET_FROM_PB.items()}


def bench_request_from_pb(r: pb.RunBenchmarkRequest) -> BenchRequest:
    if r.operation not in OP_FROM_PB:
        raise invalid("set the benchmark operation: get, put, mixed, stat, list or delete", reason="INVALID_BENCHMARK")
    return BenchRequest(
        backends=list(r.backends),
        operation=OP_FROM_PB[r.operation],
        preset=PRESET_FROM_PB.get(r.preset, ""),
        levels=list(r.concurrency_levels),
        sizes=list(r.object_sizes_bytes) or [4096],
        duration_s=r.duration_s,
        ops_per_level=r.ops_per_level,
        warmup_s=r.warmup_s,
        read_ratio=r.read_ratio,
        label=r.label,
    )


def bench_request_pb(r: BenchRequest) -> pb.RunBenchmarkRequest:
    return pb.RunBenchmarkRequest(
        backends=r.backends,
        operation=OP_TO_PB.get(r.operation, pb.BENCHMARK_OPERATION_UNSPECIFIED),
        preset=PRESET_TO_PB.get(r.preset, pb.BENCHMARK_PRESET_UNSPECIFIED),
        concurrency_levels=r.resolved_levels(),
        object_sizes_bytes=r.sizes,
        duration_s=r.duration_s,
        ops_per_level=r.ops_per_level,
        warmup_s=r.warmup_s,
        read_ratio=r.read_ratio,
        label=r.label,
    )


def _pct(p: Pct) -> pb.Percentiles:
    return pb.Percentiles(p50_ns=p.p50_ns, p90_ns=p.p90_ns, p99_ns=p.p99_ns, max_ns=p.max_ns, mean_ns=p.mean_ns)


def level_pb(s: LevelStats) -> pb.LevelResult:
    return pb.LevelResult(
        backend=s.backend,
        emulated=s.emulated,
        object_size_bytes=s.object_size_bytes,
        concurrency=s.concurrency,
        ops=s.ops,
        errors=s.errors,
        errors_by_kind=s.errors_by_kind,
        duration_s=s.duration_s,
        ops_per_s=s.ops_per_s,
        mib_per_s=s.mib_per_s,
        latency=_pct(s.latency),
        ttfb=_pct(s.ttfb),
        cold_ttfb_p50_ns=s.cold_ttfb_p50_ns,
        warm_ttfb_p50_ns=s.warm_ttfb_p50_ns,
        operation=OP_TO_PB.get(s.operation, pb.BENCHMARK_OPERATION_UNSPECIFIED),
        label=s.label,
        bytes=s.bytes,
        cold_samples=s.cold_samples,
        warm_samples=s.warm_samples,
    )


def _pct_from_pb(p: pb.Percentiles) -> Pct:
    return Pct(**{k: getattr(p, k) for k in CSV_PCT})


# LevelResult fields that are LevelStats fields as they are.
_LEVEL_SAME = (
    *("backend", "label", "emulated", "object_size_bytes", "concurrency", "ops", "errors", "duration_s"),
    *("ops_per_s", "mib_per_s", "bytes", "cold_ttfb_p50_ns", "warm_ttfb_p50_ns", "cold_samples", "warm_samples"),
)


def level_from_pb(r: pb.LevelResult) -> LevelStats:
    """`level_pb`'s inverse."""
    return LevelStats(
        **{k: getattr(r, k) for k in _LEVEL_SAME},
        operation=OP_FROM_PB.get(r.operation, ""),
        errors_by_kind=dict(r.errors_by_kind),
        latency=_pct_from_pb(r.latency),
        ttfb=_pct_from_pb(r.ttfb),
    )


def run_from_pb(r: pb.BenchmarkRun) -> RunRecord:
    """A run given whole (to compare, never stored): `run_pb`'s inverse."""
    return RunRecord(
        run_id=r.run_id,
        started_unix_ns=r.started_unix_ns,
        finished_unix_ns=r.finished_unix_ns,
        request=bench_request_from_pb(r.request),
        results=[level_from_pb(x) for x in r.results],
        not_configured=list(r.not_configured),
        json_key=r.json_key,
        csv_key=r.csv_key,
    )


def progress_pb(p: Progress) -> pb.BenchmarkProgress:
    return pb.BenchmarkProgress(
        backend=p.backend,
        object_size_bytes=p.object_size_bytes,
        concurrency=p.concurrency,
        ops_done=p.ops_done,
        errors=p.errors,
        p50_ns=p.p50_ns,
        levels_done=p.levels_done,
        levels_total=p.levels_total,
    )


def run_pb(r: RunRecord) -> pb.BenchmarkRun:
    return pb.BenchmarkRun(
        run_id=r.run_id,
        started_unix_ns=r.started_unix_ns,
        finished_unix_ns=r.finished_unix_ns,
        request=bench_request_pb(r.request),
        results=[level_pb(x) for x in r.results],
        not_configured=r.not_configured,
        json_key=r.json_key,
        csv_key=r.csv_key,
    )


def comparison_pb(c: Comparison) -> pb.BenchmarkComparison:
    out = pb.BenchmarkComparison(
        backend=c.backend,
        operation=OP_TO_PB.get(c.operation, pb.BENCHMARK_OPERATION_UNSPECIFIED),
        object_size_bytes=c.object_size_bytes,
        concurrency=c.concurrency,
        ops_per_s_ratio=c.ops_per_s_ratio,
        latency_p50_ratio=c.latency_p50_ratio,
        ttfb_p50_ratio=c.ttfb_p50_ratio,
        latency_p99_ratio=c.latency_p99_ratio,
    )
    if c.a is not None:
        out.a.CopyFrom(level_pb(c.a))
    if c.b is not None:
        out.b.CopyFrom(level_pb(c.b))
    return out
