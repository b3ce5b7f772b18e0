"""Generates the Python gRPC stubs under ddnrag/ from protos/ (one command: `make protos`).

`tests/unit/test_protos_fresh.py` regenerates into a temporary directory and fails when the
committed stubs differ, so stale stubs cannot land.
"""

from __future__ import annotations

import sys
from pathlib import Path

import google.rpc
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> list[Path]:
    files = sorted(PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.rpc.__path__[0]).parent.parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Make every generated directory a package.
    for d in [out / "ddnrag", *(p for p in (out / "ddnrag").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return sorted(p for p in (out / "ddnrag").rglob("*") if p.is_file())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for p in generate(target):
        print(p.relative_to(target))
