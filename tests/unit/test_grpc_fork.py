"""gRPC's fork support is off in every process the stack starts (cli/__init__.py says why: a
child forked while gRPC is live aborted before exec), and in the images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cli_turns_grpc_fork_support_off_before_grpc_starts() -> None:
    code = "import os, cli; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "false"


def test_the_images_turn_it_off_too() -> None:
    assert "GRPC_ENABLE_FORK_SUPPORT=false" in (ROOT / "docker" / "Dockerfile").read_text()
