"""Starts the real local stack (`rag up`) as a process on free loopback ports, for e2e tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from cli.seaweed import port_in_use

ROOT = Path(__file__).resolve().parents[1]

PORT_VARS = [
    "DDNRAG_S3_PORT",
    "DDNRAG_SEAWEED_MASTER_PORT",
    "DDNRAG_SEAWEED_VOLUME_PORT",
    "DDNRAG_SEAWEED_FILER_PORT",
    "DDNRAG_SEAWEED_ADMIN_PORT",
    "DDNRAG_EMBEDDER_PORT",
    "DDNRAG_STORAGE_PORT",
    "DDNRAG_RETRIEVER_PORT",
    "DDNRAG_LLM_GATEWAY_PORT",
    "DDNRAG_GATEWAY_PORT",
    "DDNRAG_EMBEDDER_METRICS_PORT",
    "DDNRAG_STORAGE_METRICS_PORT",
    "DDNRAG_RETRIEVER_METRICS_PORT",
    "DDNRAG_LLM_GATEWAY_METRICS_PORT",
    "DDNRAG_PROMETHEUS_PORT",
]
SEAWEED_VARS = PORT_VARS[:5]
# Ports that `rag up --replicas N` also binds for replica i > 0, at + i x REPLICA_PORT_STEP.
SCALED_VARS = [v for v in PORT_VARS if v.startswith(("DDNRAG_STORAGE_", "DDNRAG_RETRIEVER_"))]
REPLICA_PORT_STEP = 1000


def replica_ports(ports: dict[str, int], replicas: int) -> dict[str, int]:
    """`VAR#i` -> the port replica i binds for VAR (none with one replica)."""
    return {f"{v}#{i}": ports[v] + i * REPLICA_PORT_STEP for v in SCALED_VARS for i in range(1, replicas)}


def free_stack_ports(replicas: int = 1) -> dict[str, int]:
    """A free port per variable (SeaweedFS ports also need port + 10000 free, scaled services
    one more per replica)."""
    rng = random.Random()
    for _ in range(200):
        # Below Linux's ephemeral range (32768-60999), SeaweedFS's +10000 gRPC ports included:
        # an outgoing connection anywhere on the machine may take an ephemeral port between our
        # check and our bind, which failed a stack start here (retriever metrics port in use).
        base = rng.randrange(10000, 22000, 20)
        ports = {var: base + i for i, var in enumerate(PORT_VARS)}
        needed = list(ports.values()) + [ports[v] + 10000 for v in SEAWEED_VARS]
        needed += list(replica_ports(ports, replicas).values())
        if not any(port_in_use(p) for p in needed):
            return ports
    raise RuntimeError("no free port block for the stack")


@dataclass
class RunningStack:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    ports: dict[str, int]
    log_path: Path
    replicas: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['DDNRAG_GATEWAY_PORT']}"

    def addr(self, var: str) -> str:
        return f"127.0.0.1:{self.ports[var]}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **{k: str(v) for k, v in self.ports.items()}, "DDNRAG_DATA_DIR": str(self.data_dir)}

    def all_ports(self) -> dict[str, int]:
        """Every port the stack binds, replicas' included."""
        return {**self.ports, **replica_ports(self.ports, self.replicas)}

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def start_stack(
    data_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 420,
    replicas: int = 1,
    root: Path | None = None,
) -> RunningStack:
    """`rag up` of this checkout, or with `root` of another checkout of the project (an older
    commit in a git worktree, for a side-by-side benchmark): its code, this environment."""
    ports = free_stack_ports(replicas)
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "DDNRAG_DATA_DIR": str(data_dir), **(extra_env or {})}
    env.update(DDNRAG_REPLICAS=str(replicas), DDNRAG_STACK_REPLICA_PORT_STEP=str(REPLICA_PORT_STEP))
    env.pop("PYTHONPATH", None)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "rag-up.out"
    rag = Path(sys.executable).parent / "rag"
    # `python -m cli.main` in `root` imports that checkout's modules (cwd comes first on the path).
    argv = [str(rag), "up"] if root is None else [sys.executable, "-m", "cli.main", "up"]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=root or ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack = RunningStack(proc, data_dir, ports, log_path, replicas)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`rag up` exited with {proc.returncode}:\n{stack.output()[-4000:]}")
        if "Build.DDN.RAG is up" in stack.output():
            return stack
        time.sleep(0.5)
    stack.stop()
    raise TimeoutError(f"`rag up` did not come up in {timeout_s}s:\n{stack.output()[-4000:]}")


def wait_http_ok(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)
