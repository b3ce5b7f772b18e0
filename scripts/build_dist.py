"""Builds the two wheels into dist/ (`make dist`), offline:

- `ddnrag`: the whole product (pyproject.toml at the root).
- `ddnrag-client`: the generated stubs (`ddnrag/`), `clients/` and the kernel modules `clients/`
  imports (found by following the imports, so a new kernel dependency travels with it). It needs
  only gRPC and protobuf packages, plus prometheus-client (client attempt counters); numpy only
  for `EmbedderClient.embed_array` (the `numpy` extra). No torch, faiss, OpenVINO or boto3. The
  trace context on every RPC is the kernel's own (kernel/tracing.py); the OTLP export modules it
  reaches lazily come along but are imported only by a process that exports spans.

    .venv/bin/python scripts/build_dist.py [--out dist] [--only client|product]

`--deps-from-venv DIR` also writes wheels of the client's dependencies, repacked from the
distributions installed in this venv, so a fresh venv can install the client with
`pip install --no-index --find-links DIR ddnrag-client` and no registry (the client-wheel test
does this).
"""

from __future__ import annotations

import argparse
import ast
import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The client's runtime dependencies, at the product's own pins (pyproject.toml).
CLIENT_DEPS = (
    "grpcio",
    "grpcio-status",
    "protobuf",
    "googleapis-common-protos",
    "prometheus-client",
)
CLIENT_EXTRAS = {"numpy": ("numpy",)}


def pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for req in project["dependencies"]:
        name, _, version = req.partition("==")
        out[_norm(name)] = version
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def kernel_modules_for_clients() -> list[str]:
    """The kernel modules reachable from clients/ (every import, lazy ones too)."""
    todo = [p for p in (ROOT / "clients").glob("*.py")]
    seen: set[Path] = set()
    kernel: set[str] = {"__init__"}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        in_kernel = path.parent.name == "kernel"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level and in_kernel:
                    names = [f"kernel.{node.module}"] if node.module else [f"kernel.{a.name}" for a in node.names]
                elif node.module:
                    names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                if parts[0] == "kernel" and len(parts) > 1 and (ROOT / "kernel" / f"{parts[1]}.py").exists():
                    kernel.add(parts[1])
                    todo.append(ROOT / "kernel" / f"{parts[1]}.py")
    return sorted(kernel)


def client_pyproject(version: str) -> str:
    p = pins()
    deps = ",\n".join(f'  "{d}=={p[_norm(d)]}"' for d in CLIENT_DEPS)
    extras = "\n".join(
        f"{k} = [{', '.join(f'{chr(34)}{d}=={p[_norm(d)]}{chr(34)}' for d in v)}]" for k, v in CLIENT_EXTRAS.items()
    )
    return f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ddnrag-client"
version = "{version}"
description = "Build.DDN.RAG gRPC clients and generated stubs, for internal services (no model, no store)"
requires-python = ">=3.11"
dependencies = [
{deps},
]

[project.optional-dependencies]
{extras}

[tool.setuptools.packages.find]
include = ["ddnrag*", "clients*", "kernel*"]
'''


def build_client(out: Path) -> Path:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        shutil.copytree(ROOT / "ddnrag", src / "ddnrag", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "clients", src / "clients", ignore=shutil.ignore_patterns("__pycache__"))
        (src / "kernel").mkdir()
        for mod in kernel_modules_for_clients():
            shutil.copy2(ROOT / "kernel" / f"{mod}.py", src / "kernel" / f"{mod}.py")
        (src / "pyproject.toml").write_text(client_pyproject(version))
        return _pip_wheel(src, out, "ddnrag_client")


def build_product(out: Path) -> Path:
    return _pip_wheel(ROOT, out, "ddnrag")


def _pip_wheel(src: Path, out: Path, stem: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-w",
        str(out),
    ]
    with tempfile.TemporaryDirectory() as build_tmp:
        # A copy keeps the build's scratch (build/, *.egg-info) out of the source tree.
        work = Path(build_tmp) / "src"
        ignore = shutil.ignore_patterns(
            ".git", ".venv", "data", "dist", "build", "__pycache__", "*.egg-info", "node_modules"
        )
        shutil.copytree(src, work, ignore=ignore, symlinks=True)
        subprocess.run([*cmd, str(work)], check=True)
    return max(out.glob(f"{stem}-*.whl"), key=lambda p: p.stat().st_mtime)


def repack_installed(names: list[str], out: Path) -> list[Path]:
    """Wheels of installed distributions (and their dependencies), rebuilt from their files, so a
    venv with no registry can install them. Only what `pip install` of these wheels needs."""
    out.mkdir(parents=True, exist_ok=True)
    done: set[str] = set()
    wheels: list[Path] = []
    todo = list(names)
    while todo:
        name = _norm(todo.pop())
        if name in done:
            continue
        done.add(name)
        dist = metadata.distribution(name)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            dep = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
            if dep and not _marker_false(req):
                todo.append(dep.group(0))
        wheels.append(_repack(dist, out))
    return wheels


def _marker_false(req: str) -> bool:
    marker = req.partition(";")[2].strip()
    if not marker:
        return False
    m = re.fullmatch(r'python_version\s*<\s*"([0-9.]+)"', marker)
    if m:
        return sys.version_info[:2] >= tuple(int(x) for x in m.group(1).split("."))
    return False


def _repack(dist: metadata.Distribution, out: Path) -> Path:
    files = [f for f in dist.files or [] if not str(f).startswith("..") and "__pycache__" not in str(f)]
    info = next(f for f in files if str(f).endswith(".dist-info/METADATA")).parent
    tag = "py3-none-any"
    wheel_meta = dist.read_text("WHEEL") or ""
    for line in wheel_meta.splitlines():
        if line.startswith("Tag:"):
            tag = line.split(":", 1)[1].strip()
            break
    name = re.sub(r"[-.]+", "_", dist.metadata["Name"])
    path = out / f"{name}-{dist.version}-{tag}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            arc = str(f)
            if arc.endswith(("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")) and arc.startswith(str(info)):
                continue
            data = Path(f.locate()).read_bytes()
            zf.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([arc, f"sha256={digest}", len(data)])
        writer.writerow([f"{info}/RECORD", "", ""])
        zf.writestr(f"{info}/RECORD", record.getvalue())
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument("--only", choices=("client", "product"))
    ap.add_argument("--deps-from-venv", type=Path, help="also write the client's dependencies as wheels here")
    args = ap.parse_args()
    if args.only != "product":
        print(build_client(args.out))
    if args.only != "client":
        print(build_product(args.out))
    if args.deps_from_venv:
        for w in repack_installed(list(CLIENT_DEPS), args.deps_from_venv):
            print(w)


if __name__ == "__main__":
    main()
