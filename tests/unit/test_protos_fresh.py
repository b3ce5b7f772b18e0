"""The committed stubs under ddnrag/ must match what protos/ generates (`make protos`)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_protos(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        gen = importlib.import_module("gen_protos")
    finally:
        sys.path.pop(0)
    generated = gen.generate(tmp_path)
    stale = []
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = ROOT / rel
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(rel))
    committed_files = {
        p.relative_to(ROOT) for p in (ROOT / "ddnrag").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    extra = committed_files - {p.relative_to(tmp_path) for p in generated}
    assert not stale, f"stubs are stale against protos/ (run `make protos`): {stale}"
    assert not extra, f"stubs with no proto left in ddnrag/: {sorted(map(str, extra))}"


def test_every_package_is_versioned() -> None:
    for proto in (ROOT / "protos").rglob("*.proto"):
        text = proto.read_text()
        pkg = next(line.split()[1].rstrip(";") for line in text.splitlines() if line.startswith("package "))
        assert pkg.split(".")[-1] == "v1", f"{proto}: package {pkg} has no version"
        assert proto.parent.relative_to(ROOT / "protos").as_posix().replace("/", ".") == pkg, f"{proto}: dir != package"
