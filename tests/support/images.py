"""Runs the service images built by `make images` as processes on this machine, with buildah.

`buildah run --isolation chroot` starts an image's own CMD, as the image's own user, on the host
network (no container runtime starts here: its setrlimit is refused). Each container gets the
variables of its k8s ConfigMap (k8s/base/config/<svc>.env) with only what a pod would get from its
Service names, Secrets and volumes replaced by what this machine has: loopback addresses, free
ports, host directories mounted where the pod mounts its volumes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "build" / "images" / "images.json"
CONFIG_DIR = ROOT / "k8s" / "base" / "config"

# service (as in the env files and DDNRAG_ variables) -> Dockerfile target
TARGETS = {
    "storage": "storage",
    "embedder": "embedder-cpu",
    "retriever": "retriever",
    "llm_gateway": "llm-gateway",
    "gateway": "gateway",
}


def built_images() -> dict[str, dict[str, object]]:
    """What `make images` recorded: target -> ref, digest, size, user."""
    if not RECORD.exists():
        raise FileNotFoundError(f"{RECORD.relative_to(ROOT)} is missing: run `make images` first")
    return json.loads(RECORD.read_text())["images"]


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def image_config(ref: str) -> dict[str, object]:
    info = json.loads(
        subprocess.run(
            ["buildah", "inspect", "--type", "image", ref], check=True, capture_output=True, text=True
        ).stdout
    )
    return info["OCIv1"]["config"]


class MountedImage:
    """An image's root file system, read through a working container mounted on the host."""

    def __init__(self, ref: str):
        self.ref = ref
        self.ctr = ""
        self.root = Path("/")

    def __enter__(self) -> MountedImage:
        self.ctr = _out(["buildah", "from", "--pull-never", self.ref])
        self.root = Path(_out(["buildah", "mount", self.ctr]))
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["buildah", "umount", self.ctr], capture_output=True)
        subprocess.run(["buildah", "rm", self.ctr], capture_output=True)


def _out(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Container:
    """One service image running under `buildah run`; `stop()` sends SIGTERM as a kubelet does."""

    name: str
    ref: str
    env: dict[str, str]
    mounts: dict[Path, str]
    log_path: Path
    ctr: str = ""
    proc: subprocess.Popen[bytes] | None = None
    cmd: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.ctr = _out(["buildah", "from", "--pull-never", "--name", f"ddnrag-it-{self.name}-{os.getpid()}", self.ref])
        self.cmd = list(image_config(self.ref)["Cmd"])
        args = ["buildah", "run", "--isolation", "chroot"]
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        for host, target in self.mounts.items():
            args += ["--mount", f"type=bind,src={host},dst={target},rw"]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*args, self.ctr, "--", *self.cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def service_pids(self) -> list[int]:
        """Pids of the image's CMD (`python -m ...`) started by this container's buildah run."""
        if self.proc is None:
            return []
        module = self.cmd[-1]
        pids = []
        for status in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = status.read_bytes().split(b"\0")
            except OSError:
                continue
            # argv[0] is the image's python (buildah-chroot-exec, its parent, names the command too).
            if argv[0].endswith(b"python") and module.encode() in argv and _sid(status.parent.name) == self.proc.pid:
                pids.append(int(status.parent.name))
        return pids

    def uids(self) -> set[int]:
        out = set()
        for pid in self.service_pids():
            m = re.search(r"^Uid:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
            if m:
                out.add(int(m[1]))
        return out

    def stop(self, timeout_s: float = 30.0) -> int | None:
        code = None
        if self.proc is not None:
            for pid in self.service_pids():
                _signal(pid, signal.SIGTERM)
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.ctr:
            subprocess.run(["buildah", "rm", self.ctr], capture_output=True)
        return code


def _sid(pid: str) -> int:
    try:
        return os.getsid(int(pid))
    except ProcessLookupError:
        return -1


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def wait_until(check, what: str, timeout_s: float, containers: list[Container]) -> None:
    """Poll `check()` until true; fail early, with the logs, when a container has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for c in containers:
            if not c.running():
                raise AssertionError(f"{c.name} exited ({c.proc.returncode if c.proc else '?'}):\n{c.output()[-4000:]}")
        if check():
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {c.name}\n{c.output()[-2000:]}" for c in containers)
    raise AssertionError(f"{what} not within {timeout_s:.0f}s\n{logs}")
