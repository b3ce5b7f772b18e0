"""`rag up --monitoring` without starting anything: the flag, the Prometheus child and the
config it is given (every child's metrics endpoint, each replica a target), the gateway's peer
list for the Metrics page, and that the Prometheus port is checked only when it is used.
tests/e2e/test_monitoring.py runs it for real."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli.commands.stack import _config
from cli.main import build_parser
from cli.stack_config import load_config
from cli.supervisor import Supervisor


def test_the_flag_turns_monitoring_on(tmp_path: Path) -> None:
    args = build_parser().parse_args(["up", "--monitoring", "--data-dir", str(tmp_path)])
    assert _config(args).monitoring is True
    assert _config(build_parser().parse_args(["up", "--data-dir", str(tmp_path)])).monitoring is False


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is absent (make monitoring-deps)")
def test_prometheus_child_scrapes_every_service_and_replica(tmp_path: Path) -> None:
    cfg = load_config(data_dir=str(tmp_path), monitoring=True, replicas=2, prometheus_port=39090, scrape_interval_s=2.5)
    sup = Supervisor(cfg, out=lambda _: None)
    sup.define()
    prom = sup.children["prometheus"]
    assert prom.needs == ["gateway"] and list(sup.children)[-1] == "prometheus"  # started last, stopped first
    assert "--web.listen-address=127.0.0.1:39090" in prom.argv
    config = json.loads((tmp_path / "prometheus" / "prometheus.yml").read_text())  # JSON is YAML
    assert config["global"]["scrape_interval"] == "2500ms"
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in config["scrape_configs"]}
    step = cfg.replica_port_step
    assert jobs == {
        "embedder": [f"127.0.0.1:{cfg.embedder_metrics_port}"],
        "storage": [f"127.0.0.1:{cfg.storage_metrics_port}", f"127.0.0.1:{cfg.storage_metrics_port + step}"],
        "retriever": [f"127.0.0.1:{cfg.retriever_metrics_port}", f"127.0.0.1:{cfg.retriever_metrics_port + step}"],
        "llm_gateway": [f"127.0.0.1:{cfg.llm_gateway_metrics_port}"],
        "gateway": [f"127.0.0.1:{cfg.gateway_port}"],
    }
    # The gateway scrapes the same endpoints for its Metrics page.
    peers = sup.children["gateway"].env["DDNRAG_GATEWAY_METRICS_PEERS"].split(",")
    assert f"retriever=http://127.0.0.1:{cfg.retriever_metrics_port + step}/metrics" in peers
    assert len(peers) == 6


def test_prometheus_port_is_checked_only_with_monitoring(tmp_path: Path) -> None:
    def checked(cfg) -> set[str]:  # type: ignore[no-untyped-def]
        return {var for _, var in cfg.ports_with_variables()}

    assert "DDNRAG_PROMETHEUS_PORT" not in checked(load_config(data_dir=str(tmp_path)))
    assert "DDNRAG_PROMETHEUS_PORT" in checked(load_config(data_dir=str(tmp_path), monitoring=True))
    # Without --monitoring no Prometheus child is defined (and no binary is needed).
    sup = Supervisor(load_config(data_dir=str(tmp_path)), out=lambda _: None)
    sup.define()
    assert "prometheus" not in sup.children
