"""`rag up --monitoring`: a Prometheus beside the local stack, on loopback, scraping every child.

The supervisor writes `<data>/prometheus/prometheus.yml` with one job per service (each replica a
target, labelled `replica`), starts Debian's `prometheus` as one more child (after the gateway)
and keeps its TSDB under `<data>/prometheus/data`. The same config shape is what the e2e test
(`tests/e2e/test_monitoring.py`) queries with PromQL.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "install Debian's prometheus package (`make monitoring-deps`, or apt-get install prometheus)"


@dataclass(frozen=True)
class ScrapeJob:
    """One Prometheus job: a service, its targets (host:port) and the path of its metrics."""

    name: str
    targets: Sequence[str]
    path: str = "/metrics"


def prometheus_binary() -> str:
    """The `prometheus` executable, or a clear error naming the package to install."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else "")
    if not found:
        raise FileNotFoundError(f"`rag up --monitoring` needs Prometheus: {INSTALL_HINT}")
    return found


def render_config(jobs: Sequence[ScrapeJob], scrape_interval_s: float) -> str:
    """prometheus.yml scraping every job's targets every `scrape_interval_s`."""
    interval = f"{int(scrape_interval_s * 1000)}ms"
    cfg = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {
                "job_name": job.name,
                "metrics_path": job.path,
                "static_configs": [
                    {"targets": [target], "labels": {"replica": str(i)}} for i, target in enumerate(job.targets)
                ],
            }
            for job in jobs
        ],
    }
    return json.dumps(cfg, indent=2)  # JSON is YAML: no YAML writer needed


def prometheus_command(binary: str, home: Path, host: str, port: int, retention: str = "2d") -> list[str]:
    """The command line of a loopback Prometheus keeping its data under `home`."""
    return [
        binary,
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={host}:{port}",
    ]


def write_config(home: Path, jobs: Sequence[ScrapeJob], scrape_interval_s: float) -> Path:
    (home / "data").mkdir(parents=True, exist_ok=True)
    path = home / "prometheus.yml"
    path.write_text(render_config(jobs, scrape_interval_s))
    return path
