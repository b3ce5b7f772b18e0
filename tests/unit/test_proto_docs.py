"""The protos stay fully documented, lint clean and wire compatible with their recorded baseline.

`scripts/proto_docs.py` counts the documented elements (services, RPCs, messages, fields, oneofs,
enums, enum values); `buf lint` (STANDARD + COMMENTS) and `buf breaking` (against
protos/buf-baseline.txtpb) are what `make lint` runs, checked here too so the suite alone catches
an undocumented field or an unrecorded wire change.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import google.rpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = Path(sys.executable).parent / "buf"


def proto_docs() -> ModuleType:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module("proto_docs")
    finally:
        sys.path.pop(0)


def test_every_proto_element_is_documented() -> None:
    pd = proto_docs()
    found = pd.ours(pd.descriptor_set())
    kinds = {e.kind for e in found}
    assert kinds == {"service", "rpc", "message", "field", "oneof", "enum", "enum_value"}
    assert len(found) > 700  # every file was read, not an empty set that is trivially 100%
    missing = [f"{e.kind} {e.name} ({e.file})" for e in found if not e.documented]
    assert not missing, "give these a leading comment (what, units, range, default):\n" + "\n".join(missing)


def test_the_measure_sees_what_is_missing(tmp_path: Path) -> None:
    """A field, an enum value, a oneof and a message without a comment are each counted; a
    trailing comment does not count, and neither do map entries or proto3 `optional` oneofs."""
    pkg = tmp_path / "ddnrag" / "probe" / "v1"
    pkg.mkdir(parents=True)
    (pkg / "probe.proto").write_text(
        """syntax = "proto3";
package ddnrag.probe.v1;
// Documented.
message Good {
  // Documented.
  optional int32 a = 1;
  // Documented.
  map<string, string> m = 2;
}
message Bare {
  int32 b = 1; // trailing only
  // Documented.
  oneof choice {
    // Documented.
    int32 c = 2;
  }
  oneof other {
    // Documented.
    int32 d = 3;
  }
}
// Documented.
enum Kind {
  // Documented.
  KIND_UNSPECIFIED = 0;
  KIND_ONE = 1;
}
"""
    )
    pd = proto_docs()
    found = pd.ours(pd.descriptor_set(tmp_path))
    missing = sorted(e.name for e in found if not e.documented)
    assert missing == [
        "ddnrag.probe.v1.Bare",
        "ddnrag.probe.v1.Bare.b",
        "ddnrag.probe.v1.Bare.other",
        "ddnrag.probe.v1.Kind.KIND_ONE",
    ]
    assert len(found) == 12


def test_only_ingest_shares_its_messages_with_other_rpcs() -> None:
    """buf.yaml lets the retriever file off three naming rules for Ingest and WatchJob alone;
    every other RPC has its own <Rpc>Request and <Rpc>Response."""
    allowed = {("RetrieverService", "Ingest"), ("RetrieverService", "WatchJob")}
    odd = []
    for f in proto_docs().descriptor_set().file:
        if not f.name.startswith("ddnrag/"):
            continue
        for s in f.service:
            for m in s.method:
                named = m.input_type.endswith(f".{m.name}Request") and m.output_type.endswith(f".{m.name}Response")
                if not named and (s.name, m.name) not in allowed:
                    odd.append(f"{s.name}.{m.name}({m.input_type}) -> {m.output_type}")
    assert not odd, odd


def test_the_vendored_status_proto_is_the_pinned_one() -> None:
    """buf resolves google/rpc/status.proto from third_party/; gen_protos.py compiles against
    googleapis-common-protos. They must be the same file."""
    pinned = Path(google.rpc.__path__[0]) / "status.proto"
    assert (ROOT / "third_party/googleapis/google/rpc/status.proto").read_bytes() == pinned.read_bytes()


def buf(*args: str, stdin: bytes | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    if not BUF.exists():
        pytest.fail(f"{BUF} is missing: buf-bin is a pinned dev dependency (pip install -e '.[dev]')")
    return subprocess.run([str(BUF), *args], cwd=cwd, input=stdin, capture_output=True, timeout=120, check=False)


def test_buf_lint_passes() -> None:
    r = buf("lint")
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_no_wire_change_beyond_the_recorded_baseline() -> None:
    """A breaking change is a decision: record it with `make protos-baseline` in the same commit
    and list it in protos/README.md."""
    image = buf("build", "-o", "-#format=binpb")
    assert image.returncode == 0, image.stderr.decode()
    r = buf("breaking", "-#format=binpb", "--against", "protos/buf-baseline.txtpb", stdin=image.stdout)
    assert r.returncode == 0, (r.stdout + r.stderr).decode()


def test_an_unrecorded_rename_fails_the_breaking_check(tmp_path: Path) -> None:
    """The control for the check above: rename one field in a copy of the tree and buf breaking
    names it."""
    for part in ("protos", "third_party"):
        shutil.copytree(ROOT / part, tmp_path / part)
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos/ddnrag/storage/v1/storage_service.proto"
    text = proto.read_text()
    assert "int64 object_size_bytes = 3;" in text
    proto.write_text(text.replace("int64 object_size_bytes = 3;", "int64 object_size = 3;", 1))
    image = buf("build", "-o", "-#format=binpb", cwd=tmp_path)
    assert image.returncode == 0, image.stderr.decode()
    r = buf("breaking", "-#format=binpb", "--against", "protos/buf-baseline.txtpb", stdin=image.stdout, cwd=tmp_path)
    assert r.returncode != 0 and b"object_size" in r.stdout, (r.stdout + r.stderr).decode()
