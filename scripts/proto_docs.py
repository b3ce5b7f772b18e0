"""Measures how much of protos/ is documented: every service, RPC, message, field, oneof, enum and
enum value should have a leading comment (what it is, units, ranges, defaults).

`python scripts/proto_docs.py [PROTO_ROOT]` prints the count per file and kind and exits 1 below
100%. `tests/unit/test_proto_docs.py` keeps it at 100%; `buf lint` (COMMENTS rules) checks the
same from `make lint`. This one needs only grpcio-tools, so it runs wherever the tests run.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import google.rpc
import grpc_tools
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"

# Field numbers of the descriptor messages, as SourceCodeInfo paths use them.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


@dataclass(frozen=True)
class Element:
    """One documentable element of a proto file."""

    file: str
    kind: str  # service, rpc, message, field, oneof, enum, enum_value
    name: str  # fully qualified
    documented: bool


def descriptor_set(root: Path = PROTOS) -> descriptor_pb2.FileDescriptorSet:
    """Compiles every .proto under `root` with comments kept (protoc's source info)."""
    files = sorted(root.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    googleapis = Path(google.rpc.__path__[0]).parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{googleapis}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *[str(f) for f in files],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def elements(fds: descriptor_pb2.FileDescriptorSet) -> list[Element]:
    """Every element of every file in `fds`, with whether it has a non-empty leading comment."""
    return [e for f in fds.file for e in _file_elements(f)]


def _file_elements(f: descriptor_pb2.FileDescriptorProto) -> list[Element]:
    docs = {tuple(loc.path): bool(loc.leading_comments.strip()) for loc in f.source_code_info.location if loc.path}
    out: list[Element] = []

    def add(kind: str, name: str, path: tuple[int, ...]) -> None:
        out.append(Element(f.name, kind, name, docs.get(path, False)))

    def enum(e: descriptor_pb2.EnumDescriptorProto, scope: str, path: tuple[int, ...]) -> None:
        add("enum", f"{scope}.{e.name}", path)
        for i, v in enumerate(e.value):
            add("enum_value", f"{scope}.{e.name}.{v.name}", (*path, _ENUM_VALUE, i))

    def message(m: descriptor_pb2.DescriptorProto, scope: str, path: tuple[int, ...]) -> None:
        if m.options.map_entry:  # `map<k, v>` fields: the entry type is synthetic
            return
        name = f"{scope}.{m.name}"
        add("message", name, path)
        for i, fld in enumerate(m.field):
            add("field", f"{name}.{fld.name}", (*path, _MSG_FIELD, i))
        synthetic = {fld.oneof_index for fld in m.field if fld.proto3_optional}
        for i, o in enumerate(m.oneof_decl):
            if i not in synthetic:  # proto3 `optional` makes a hidden oneof per field
                add("oneof", f"{name}.{o.name}", (*path, _MSG_ONEOF, i))
        for i, n in enumerate(m.nested_type):
            message(n, name, (*path, _MSG_NESTED, i))
        for i, e in enumerate(m.enum_type):
            enum(e, name, (*path, _MSG_ENUM, i))

    for i, m in enumerate(f.message_type):
        message(m, f.package, (_FILE_MESSAGE, i))
    for i, e in enumerate(f.enum_type):
        enum(e, f.package, (_FILE_ENUM, i))
    for i, s in enumerate(f.service):
        add("service", f"{f.package}.{s.name}", (_FILE_SERVICE, i))
        for j, rpc in enumerate(s.method):
            add("rpc", f"{f.package}.{s.name}.{rpc.name}", (_FILE_SERVICE, i, _SERVICE_METHOD, j))
    return out


def ours(fds: descriptor_pb2.FileDescriptorSet) -> list[Element]:
    """The elements of our own files (ddnrag/...), not of google/ imports."""
    return [e for e in elements(fds) if e.file.startswith("ddnrag/")]


def report(items: list[Element]) -> str:
    total, documented = Counter[tuple[str, str]](), Counter[tuple[str, str]]()
    for e in items:
        total[(e.file, e.kind)] += 1
        documented[(e.file, e.kind)] += e.documented
    lines = [f"{'file':<44} {'kind':<11} documented"]
    for key in sorted(total):
        lines.append(f"{key[0]:<44} {key[1]:<11} {documented[key]:>4} / {total[key]:<4}")
    n, d = len(items), sum(e.documented for e in items)
    lines.append(f"all elements: {d} / {n} documented ({100.0 * d / max(n, 1):.1f}%)")
    return "\n".join(lines)


if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PROTOS
    found = ours(descriptor_set(root))
    print(report(found))
    missing = [e for e in found if not e.documented]
    for e in missing:
        print(f"undocumented {e.kind}: {e.name} ({e.file})")
    sys.exit(1 if missing else 0)
