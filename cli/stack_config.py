"""The local stack's configuration: its data directory, host, every port (each with its
variable), replicas and monitoring, and the files that say a stack is running. Read by the
supervisor (`supervisor.py`) and by every `rag` command that finds the stack's addresses."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from kernel.config import env_field, load_env

from .monitoring import ScrapeJob
from .seaweed import SeaweedPorts, port_in_use

ROOT = Path(__file__).resolve().parent.parent
# The services `rag up --replicas N` runs N of; the others stay one process each.
SCALED = ("storage", "retriever")
SERVICES = ("storage", "embedder", "retriever", "llm_gateway", "gateway")


def replica_name(svc: str, i: int) -> str:
    """The child name of replica `i` of `svc`: `storage`, then `storage-1`, ..."""
    return svc if i == 0 else f"{svc}-{i}"


@dataclass(frozen=True)
class StackConfig:
    """Where the local stack lives and which loopback ports it uses. Every port has a variable."""

    data_dir: str = env_field("DDNRAG_DATA_DIR", "data", "Directory holding every piece of local state")
    host: str = env_field("DDNRAG_STACK_HOST", "127.0.0.1", "Address every local service binds")
    bucket: str = env_field("DDNRAG_STORAGE_DEFAULT_BUCKET", "ddnrag", "Bucket of the embedded store")
    s3_port: int = env_field("DDNRAG_S3_PORT", 8333, "SeaweedFS S3 port")
    seaweed_master_port: int = env_field("DDNRAG_SEAWEED_MASTER_PORT", 9333, "SeaweedFS master port (+10000 gRPC)")
    seaweed_volume_port: int = env_field("DDNRAG_SEAWEED_VOLUME_PORT", 9340, "SeaweedFS volume port (+10000 gRPC)")
    seaweed_filer_port: int = env_field("DDNRAG_SEAWEED_FILER_PORT", 8888, "SeaweedFS filer port (+10000 gRPC)")
    seaweed_admin_port: int = env_field("DDNRAG_SEAWEED_ADMIN_PORT", 23646, "SeaweedFS admin port (+10000 gRPC)")
    embedder_port: int = env_field("DDNRAG_EMBEDDER_PORT", 50051, "Embedder gRPC port")
    storage_port: int = env_field("DDNRAG_STORAGE_PORT", 50052, "Storage gRPC port")
    retriever_port: int = env_field("DDNRAG_RETRIEVER_PORT", 50053, "Retriever gRPC port")
    llm_gateway_port: int = env_field("DDNRAG_LLM_GATEWAY_PORT", 50054, "LLM gateway gRPC port")
    gateway_port: int = env_field("DDNRAG_GATEWAY_PORT", 8080, "Gateway HTTP port")
    embedder_metrics_port: int = env_field("DDNRAG_EMBEDDER_METRICS_PORT", 9101, "Embedder Prometheus port")
    storage_metrics_port: int = env_field("DDNRAG_STORAGE_METRICS_PORT", 9102, "Storage Prometheus port")
    retriever_metrics_port: int = env_field("DDNRAG_RETRIEVER_METRICS_PORT", 9103, "Retriever Prometheus port")
    llm_gateway_metrics_port: int = env_field("DDNRAG_LLM_GATEWAY_METRICS_PORT", 9104, "LLM gateway Prometheus port")
    monitoring: bool = env_field(
        "DDNRAG_STACK_MONITORING", False, "Also run Prometheus scraping every service (`rag up --monitoring`)"
    )
    prometheus_port: int = env_field("DDNRAG_PROMETHEUS_PORT", 9090, "Prometheus HTTP port with --monitoring")
    scrape_interval_s: float = env_field(
        "DDNRAG_STACK_SCRAPE_INTERVAL_S", 5.0, "Prometheus scrape interval with --monitoring, in seconds"
    )
    sample_corpus: str = env_field(
        "DDNRAG_STACK_SAMPLE_CORPUS", str(ROOT / "sample_corpus"), "Directory ingested once at first start ('' to skip)"
    )
    start_timeout_s: float = env_field(
        "DDNRAG_STACK_START_TIMEOUT_S", 300.0, "How long each child may take to become healthy"
    )
    replicas: int = env_field(
        "DDNRAG_REPLICAS",
        1,
        "Storage and retriever processes to run (`rag up --replicas N`); peers reach them with client-side round robin",
    )
    replica_port_step: int = env_field(
        "DDNRAG_STACK_REPLICA_PORT_STEP",
        1000,
        "Replica i > 0 of storage and the retriever listens on each of its ports + i x this step",
    )

    @property
    def data(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def seaweed_ports(self) -> SeaweedPorts:
        return SeaweedPorts(
            s3=self.s3_port,
            master=self.seaweed_master_port,
            volume=self.seaweed_volume_port,
            filer=self.seaweed_filer_port,
            admin=self.seaweed_admin_port,
        )

    def addr(self, port: int) -> str:
        return f"{self.host}:{port}"

    def replica_ports(self, port: int) -> list[int]:
        """The port of each replica of a scaled service whose first replica uses `port`."""
        return [port + i * self.replica_port_step for i in range(max(self.replicas, 1))]

    def addrs(self, port: int) -> str:
        """Every replica's address, comma-separated: what a peer's `*_ADDR` variable takes."""
        return ",".join(self.addr(p) for p in self.replica_ports(port))

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    def scrape_jobs(self) -> list[ScrapeJob]:
        """Every child's metrics endpoint: one job per service, one target per replica."""
        jobs = []
        for svc in ("embedder", "storage", "retriever", "llm_gateway"):
            port = getattr(self, f"{svc}_metrics_port")
            ports = self.replica_ports(port) if svc in SCALED else [port]
            jobs.append(ScrapeJob(svc, [self.addr(p) for p in ports]))
        jobs.append(ScrapeJob("gateway", [self.addr(self.gateway_port)]))
        return jobs

    def ports_with_variables(self) -> list[tuple[int, str]]:
        """Every port the stack binds, with the variable that changes it."""
        out: list[tuple[int, str]] = []
        for f in self.__dataclass_fields__.values():
            if f.name.endswith("_port"):
                if f.name == "prometheus_port" and not self.monitoring:
                    continue
                port = getattr(self, f.name)
                var = f.metadata["env"]
                out.append((port, var))
                if f.name.startswith("seaweed_") or f.name == "s3_port":
                    out.append((port + 10000, f"{var} (its gRPC twin, port + 10000)"))
                if f.name.split("_")[0] in SCALED:
                    for i, p in enumerate(self.replica_ports(port)[1:], 1):
                        out.append((p, f"{var} (replica {i}: + {i} x DDNRAG_STACK_REPLICA_PORT_STEP)"))
        return out


class PortInUseError(RuntimeError):
    pass


def check_ports(cfg: StackConfig) -> None:
    busy = [(p, var) for p, var in cfg.ports_with_variables() if p and port_in_use(p, cfg.host)]
    if busy:
        lines = "\n".join(f"  port {p} is already in use; set {var} to another port" for p, var in busy)
        raise PortInUseError(f"cannot start the stack:\n{lines}\n(is another `rag up` running? try `rag status`)")


def pidfile(cfg: StackConfig) -> Path:
    return cfg.data / "run" / "stack.json"


def write_pidfile(cfg: StackConfig) -> None:
    path = pidfile(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"pid": os.getpid(), "gateway_url": cfg.gateway_url, "replicas": cfg.replicas, "started": time.time()}
        )
    )


def load_config(**overrides: object) -> StackConfig:
    return load_env(StackConfig, **overrides)
