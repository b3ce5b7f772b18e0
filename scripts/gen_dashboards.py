"""Writes the Grafana dashboards of k8s/components/monitoring/dashboards/ from the panel lists
below: `python scripts/gen_dashboards.py`. Edit here, regenerate, commit both;
tests/unit/test_monitoring_dashboards.py checks that the files match this script, that every
expression parses (promtool) and that it names only metrics the services export.

Every query works with either job naming: `rag up --monitoring` names jobs after the services
(`llm_gateway`), the Prometheus Operator after the Kubernetes Services (`llm-gateway`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "k8s" / "components" / "monitoring" / "dashboards"

# The gRPC statuses that count as the service's own errors (kept equal to gateway/metrics_window.py
# and the alert rules): the caller's mistakes and cancellations are not.
ERRORS = 'grpc_status=~"UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|UNIMPLEMENTED"'
W = "5m"


def q(quantile: float, family: str, by: str = "", where: str = "") -> str:
    """histogram_quantile over a 5-minute rate, grouped by `by` (besides le)."""
    sel = f"{{{where}}}" if where else ""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({family}_bucket{sel}[{W}])))"


def panel(title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries") -> dict[str, Any]:
    return {
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]], job_var: bool = False) -> dict:
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    templating: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    ]
    if job_var:
        templating.append(
            {
                "name": "job",
                "type": "query",
                "label": "Service",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": "label_values(grpc_server_call_duration_seconds_count, job)",
                "refresh": 2,
            }
        )
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["ddnrag"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": templating},
        "panels": panels,
    }


def overview() -> dict[str, Any]:
    return dashboard(
        "ddnrag-overview",
        "Build.DDN.RAG / Overview",
        "Answers end to end: traffic, errors, time to first token and retrieval latency.",
        [
            panel(
                "Requests per second by service",
                [
                    (f"sum by (job) (rate(grpc_server_call_duration_seconds_count[{W}]))", "{{job}}"),
                    (f"sum(rate(gateway_requests_total[{W}]))", "gateway (HTTP)"),
                ],
                "reqps",
            ),
            panel(
                "Error ratio by service",
                [
                    (
                        f"sum by (job) (rate(grpc_server_call_duration_seconds_count{{{ERRORS}}}[{W}])) / sum by (job) (rate(grpc_server_call_duration_seconds_count[{W}]))",
                        "{{job}}",
                    ),
                    (
                        f'sum(rate(gateway_requests_total{{code=~"5.."}}[{W}])) / sum(rate(gateway_requests_total[{W}]))',
                        "gateway 5xx",
                    ),
                ],
                "percentunit",
            ),
            panel(
                "Time to first token (answer, retrieval included)",
                [(q(0.5, "llm_gateway_rag_ttft_seconds"), "p50"), (q(0.99, "llm_gateway_rag_ttft_seconds"), "p99")],
                "s",
            ),
            panel(
                "Model time to first token and per output token",
                [
                    (q(0.99, "gen_ai_server_time_to_first_token_seconds", "backend"), "TTFT p99 {{backend}}"),
                    (q(0.5, "gen_ai_server_time_per_output_token_seconds", "backend"), "TPOT p50 {{backend}}"),
                ],
                "s",
            ),
            panel(
                "Retrieval (Search) latency",
                [
                    (q(0.5, "retriever_request_duration_seconds", where='method="Search"'), "p50"),
                    (q(0.99, "retriever_request_duration_seconds", where='method="Search"'), "p99"),
                ],
                "s",
            ),
            panel("Retrieval stages p99", [(q(0.99, "retriever_stage_duration_seconds", "stage"), "{{stage}}")], "s"),
            panel("Open answer streams", [("sum(gateway_open_streams)", "streams")]),
            panel(
                "Tokens per second by backend",
                [(f'sum by (backend) (rate(llm_gateway_tokens_total{{kind="completion"}}[{W}]))', "{{backend}}")],
            ),
        ],
    )


def storage() -> dict[str, Any]:
    return dashboard(
        "ddnrag-storage",
        "Build.DDN.RAG / Storage per backend",
        "Every object-store operation of the storage service, per backend and operation.",
        [
            panel(
                "GET time to first byte p50",
                [(q(0.5, "storage_backend_ttfb_seconds", "backend", 'operation="get"'), "{{backend}}")],
                "s",
            ),
            panel(
                "GET time to first byte p99",
                [(q(0.99, "storage_backend_ttfb_seconds", "backend", 'operation="get"'), "{{backend}}")],
                "s",
            ),
            panel(
                "Operation duration p99",
                [
                    (
                        q(0.99, "storage_backend_request_duration_seconds", "backend, operation"),
                        "{{backend}} {{operation}}",
                    )
                ],
                "s",
            ),
            panel(
                "Operations per second",
                [
                    (
                        f"sum by (backend, operation) (rate(storage_backend_request_duration_seconds_count[{W}]))",
                        "{{backend}} {{operation}}",
                    )
                ],
                "ops",
            ),
            panel(
                "Errors per second by kind",
                [(f"sum by (backend, kind) (rate(storage_backend_errors_total[{W}]))", "{{backend}} {{kind}}")],
                "ops",
            ),
            panel(
                "Storage calls seen by their callers p99",
                [
                    (
                        q(
                            0.99,
                            "grpc_client_attempt_duration_seconds",
                            "job, grpc_method",
                            'grpc_method=~"ddnrag.storage.v1.*"',
                        ),
                        "{{job}} {{grpc_method}}",
                    )
                ],
                "s",
            ),
        ],
    )


def ingestion() -> dict[str, Any]:
    return dashboard(
        "ddnrag-ingestion",
        "Build.DDN.RAG / Ingestion",
        "Ingestion jobs, the embedder's batching, prefix watches and index health.",
        [
            panel(
                "Documents per second by outcome",
                [
                    (
                        f"sum by (collection, outcome) (rate(retriever_ingest_documents_total[{W}]))",
                        "{{collection}} {{outcome}}",
                    )
                ],
            ),
            panel(
                "Chunks per second",
                [(f"sum by (collection) (rate(retriever_ingest_chunks_total[{W}]))", "{{collection}}")],
            ),
            panel(
                "Ingestion errors (last hour)",
                [
                    (
                        "sum by (collection, kind) (increase(retriever_ingest_errors_total[1h]))",
                        "{{collection}} {{kind}}",
                    )
                ],
            ),
            panel(
                "Jobs running, seconds since the last progress",
                [
                    ("sum(retriever_ingest_jobs_running)", "running"),
                    ("time() - max(retriever_ingest_last_progress_timestamp_seconds > 0)", "since progress"),
                ],
            ),
            panel("Embedder texts per second", [(f"sum(rate(embedder_texts_total[{W}]))", "texts/s")]),
            panel(
                "Embedder batch size and queue time",
                [
                    (q(0.5, "embedder_batch_size"), "batch p50"),
                    (q(0.99, "embedder_queue_time_seconds"), "queue p99 (s)"),
                ],
            ),
            panel(
                "Seconds since each prefix watch's last good poll",
                [
                    (
                        "time() - max by (watch_id, collection) (retriever_watch_last_success_timestamp_seconds)",
                        "{{collection}} {{watch_id}}",
                    )
                ],
                "s",
            ),
            panel(
                "Indexes refused as corrupt (last hour)",
                [("sum by (collection) (increase(retriever_index_refused_total[1h]))", "{{collection}}")],
            ),
        ],
    )


def services() -> dict[str, Any]:
    sel = 'job="$job"'
    return dashboard(
        "ddnrag-service",
        "Build.DDN.RAG / Per service",
        "One service's gRPC server and client calls (pick it above).",
        [
            panel(
                "Calls per second by method",
                [
                    (
                        f"sum by (grpc_method) (rate(grpc_server_call_duration_seconds_count{{{sel}}}[{W}]))",
                        "{{grpc_method}}",
                    )
                ],
                "reqps",
            ),
            panel(
                "Calls per second by status",
                [
                    (
                        f"sum by (grpc_status) (rate(grpc_server_call_duration_seconds_count{{{sel}}}[{W}]))",
                        "{{grpc_status}}",
                    )
                ],
                "reqps",
            ),
            panel(
                "Server call duration p50 by method",
                [(q(0.5, "grpc_server_call_duration_seconds", "grpc_method", sel), "{{grpc_method}}")],
                "s",
            ),
            panel(
                "Server call duration p99 by method",
                [(q(0.99, "grpc_server_call_duration_seconds", "grpc_method", sel), "{{grpc_method}}")],
                "s",
            ),
            panel(
                "Outgoing calls p99 by method (client attempts)",
                [(q(0.99, "grpc_client_attempt_duration_seconds", "grpc_method", sel), "{{grpc_method}}")],
                "s",
            ),
            panel(
                "Outgoing calls failing per second by status",
                [
                    (
                        f'sum by (grpc_method, grpc_status) (rate(grpc_client_attempt_duration_seconds_count{{{sel},grpc_status!="OK"}}[{W}]))',
                        "{{grpc_method}} {{grpc_status}}",
                    )
                ],
                "reqps",
            ),
        ],
        job_var=True,
    )


DASHBOARDS = {
    "overview.json": overview,
    "storage.json": storage,
    "ingestion.json": ingestion,
    "services.json": services,
}


def render() -> dict[str, str]:
    return {name: json.dumps(make(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
