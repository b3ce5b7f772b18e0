"""The Grafana dashboards and alert rules of k8s/components/monitoring: every panel query and
rule parses (`promtool check rules`, from Debian's prometheus package) and names only metrics the
services export, read from the metric registries the services build. The e2e test
(tests/e2e/test_monitoring.py) checks the same names against a live stack's /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "components" / "monitoring"
DASHBOARDS = sorted((MONITORING / "dashboards").glob("*.json"))
RULES = MONITORING / "prometheus-rules.yaml"

# What Prometheus itself provides to every query.
BUILTIN = {"up"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "inf", "nan",
    # aggregation operators, which may stand before their `by (...)` rather than a parenthesis
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}  # fmt: skip
_VARIABLES = {"$job": "embedder", "${datasource}": "prometheus"}


def panel_exprs() -> list[tuple[str, str]]:
    """(where, expression) of every panel target of every dashboard, variables filled in."""
    out = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for var, value in _VARIABLES.items():
                    expr = expr.replace(var, value)
                out.append((f"{path.name}: {panel['title']}", expr))
    return out


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["spec"]["groups"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (inside {} or a grouping's parentheses) or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def referenced_metrics() -> set[str]:
    """Every metric a dashboard panel or an alert rule names (Prometheus's own `up` excluded)."""
    names: set[str] = set()
    for _, expr in panel_exprs():
        names |= metric_names(expr)
    for group in rule_groups():
        for rule in group["rules"]:
            names |= metric_names(rule["expr"])
    return names - BUILTIN


def exported_names(text: str) -> set[str]:
    """Sample names a Prometheus text exposition offers, from its TYPE lines (present even for a
    labelled metric with no series yet): a histogram's _bucket, _count and _sum included."""
    out = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = m.groups()
        out.add(name)
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "counter" and not name.endswith("_total"):
            out.add(f"{name}_total")
    return out


def registry_exports() -> set[str]:
    """What the services' registries export, built as each server builds them."""
    from gateway.metrics import GatewayMetrics
    from kernel.metrics import Metrics
    from services.embedder.metrics import EmbedderMetrics
    from services.llm_gateway.metrics import LlmMetrics
    from services.retriever.metrics import RetrieverMetrics
    from services.storage.metrics import StoreMetrics

    own = {
        "embedder": EmbedderMetrics,
        "storage": StoreMetrics,
        "retriever": RetrieverMetrics,
        "llm_gateway": LlmMetrics,
    }
    names: set[str] = set()
    for service, build in own.items():
        metrics = Metrics(service)
        build(metrics.registry)
        names |= exported_names(generate_latest(metrics.registry).decode())
    return names | exported_names(generate_latest(GatewayMetrics().registry).decode())


def test_dashboards_are_grafana_json_with_queries() -> None:
    assert {p.name for p in DASHBOARDS} == {"overview.json", "storage.json", "ingestion.json", "services.json"}
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["uid"].startswith("ddnrag-") and board["title"] and board["panels"], path.name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in board["panels"]:
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboards_match_their_generator() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_dashboards
    finally:
        sys.path.pop(0)
    for name, text in gen_dashboards.render().items():
        assert (MONITORING / "dashboards" / name).read_text() == text, (
            f"regenerate: python scripts/gen_dashboards.py ({name})"
        )


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, backend) (rate(storage_backend_ttfb_seconds_bucket{operation="get"}[5m])))'
        " / on (job) group_left up and time() - x_total offset 5m > bool 1e3"
    )
    assert metric_names(expr) == {"storage_backend_ttfb_seconds_bucket", "up", "x_total"}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is absent (make monitoring-deps)")
def test_every_query_and_rule_parses_with_promtool(tmp_path: Path) -> None:
    # The alert rules as they are, and every panel query as a recording rule: promtool parses
    # each expression with Prometheus's own parser.
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    records = [{"record": f"ddnrag:panel:{i}", "expr": expr} for i, (_, expr) in enumerate(panel_exprs())]
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    for name in ("alerts.yaml", "panels.yaml"):
        proc = subprocess.run(
            ["promtool", "check", "rules", str(tmp_path / name)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{name}:\n{proc.stdout}\n{proc.stderr}"
    # And a broken expression fails, so passing means something.
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(x[5m])"}]}]})
    )
    bad = subprocess.run(["promtool", "check", "rules", str(tmp_path / "bad.yaml")], capture_output=True, timeout=60)
    assert bad.returncode != 0


def test_dashboards_and_rules_name_only_exported_metrics() -> None:
    exported = registry_exports()
    assert {"grpc_server_call_duration_seconds_bucket", "grpc_client_attempt_duration_seconds_count"} <= exported
    missing = sorted(referenced_metrics() - exported)
    assert not missing, f"dashboards or rules use metrics no service exports: {missing}"
    # Each alert the issue asks for is there.
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"]}
    assert {
        "DdnragHighErrorRatio",
        "DdnragTtftP99High",
        "DdnragStorageBackendErrors",
        "DdnragIngestionJobStuck",
        "DdnragIndexRefusedCorrupt",
    } <= alerts
