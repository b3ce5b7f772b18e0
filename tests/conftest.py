"""Fixtures shared by every test: a real SeaweedFS S3 server, the sample corpus path."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from cli.seaweed import SeaweedPorts, SeaweedProcess, port_in_use

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Hypothesis: no wall-clock checks (a per-example deadline, the "too slow" health check). They are
# timing asserts, and fail on a loaded machine (seen at load 30); no example database on disk.
settings.register_profile("ddnrag", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ddnrag")


def free_seaweed_ports() -> SeaweedPorts:
    """A block of ports (and their +10000 gRPC twins) free right now, for a `weed mini` child.

    weed cannot bind port 0 and report it, so this is the one place we probe; the start retries
    on a clash."""
    rng = random.Random()
    for _ in range(200):
        s3 = rng.randrange(20000, 29000, 10)
        ports = SeaweedPorts.from_base(s3, s3 + 1)
        if not any(port_in_use(p) for p in ports.all().values()):
            return ports
    raise RuntimeError("no free port block for SeaweedFS")


@dataclass
class S3Server:
    """A running SeaweedFS: endpoint, bucket and credentials for tests."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    process: SeaweedProcess

    def boto3_client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )


def start_seaweed(data_dir: Path, bucket: str = "ddnrag") -> SeaweedProcess:
    last: Exception | None = None
    for _ in range(3):
        proc = SeaweedProcess(data_dir, free_seaweed_ports(), bucket=bucket)
        try:
            proc.start(timeout_s=60)
            return proc
        except Exception as err:  # noqa: BLE001 - a port clash: try another block
            last = err
    raise RuntimeError(f"SeaweedFS did not start: {last}")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real SeaweedFS S3 server for the whole session (bucket "ddnrag")."""
    proc = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    try:
        yield S3Server(proc.endpoint, proc.bucket, proc.creds.access_key_id, proc.creds.secret_access_key, proc)
    finally:
        proc.stop()


@pytest.fixture
def s3_bucket(seaweed: S3Server, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty bucket on the session's SeaweedFS, deleted afterwards."""
    client = seaweed.boto3_client()
    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{random.randrange(10**6)}"
    client.create_bucket(Bucket=name)
    try:
        yield name
    finally:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)


@pytest.fixture(scope="session")
def sample_corpus_dir() -> Path:
    return ROOT / "sample_corpus"


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    return ROOT.parent / "shared" / "data" / "scifact"


# The slow suite (`make test-slow`, run by `.ci/run` after `make test`): robustness runs that each
# start their own stack or last long: faults injected into a running stack, fuzzing, abuse and
# secret scans, Prometheus scraping, the storage stress preset. `make test` (the README's second
# command) runs the rest and stays under ~10 minutes on the 2-core machine. Whole modules are
# listed here, in one place; single tests carry `@pytest.mark.slow` in their file.
SLOW_PATHS = (
    "tests/faults/",
    "tests/fuzz/",
    "tests/images/",
    "tests/e2e/test_monitoring.py",
    "tests/security/test_malicious_uploads.py",
    "tests/security/test_secrets_scan.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.path)).relative_to(ROOT).as_posix()
        if rel.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)
