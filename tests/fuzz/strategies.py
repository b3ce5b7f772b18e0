"""Hypothesis strategies for hostile input: strings, numbers, file names, and any protobuf
message built field by field from its descriptor."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

HOSTILE_STRINGS = [
    "",
    " ",
    "../",
    "../../etc/passwd",
    "..",
    ".",
    "/abs/path",
    "a/../../b",
    "docs/default/../../index/default/CURRENT",
    "x\x00y",
    "\x00",
    "a" * 2000,
    "é" * 600,
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "%2e%2e%2f",
    "\\..\\..\\windows",
    "CON",
    "💥" * 100,
    "\n\r\t",
    "SELECT * FROM jobs; --",
    "${jndi:ldap://127.0.0.1/a}",
    "<script>alert(1)</script>",
    "-1",
    "NaN",
    "9" * 40,
]
BOUNDARY_INTS = [0, -1, 1, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 10**9, 65536]
BOUNDARY_FLOATS = [0.0, -0.0, -1.0, 1e308, -1e308, float("inf"), float("-inf"), float("nan"), 1e-300]


def hostile_text(max_size: int = 300) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.text(max_size=max_size),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=max_size),
    )


def file_names() -> st.SearchStrategy[str]:
    exts = st.sampled_from(
        [".txt", ".md", ".pdf", ".docx", ".xlsx", ".pptx", ".html", ".csv", "", ".exe", ".txt\x00.pdf"]
    )
    stems = st.one_of(
        st.sampled_from(["../x", "../../etc/passwd", "a\x00b", "x" * 2000, "/abs", "..", ".", "a/b/c", "\\..\\z"]),
        st.text(min_size=0, max_size=60),
    )
    return st.builds(lambda s, e: s + e, stems, exts)


def _scalar(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        # protobuf refuses lone surrogates client-side; keep strings encodable
        return st.one_of(
            st.sampled_from([s for s in HOSTILE_STRINGS if s != "\ud800"]), st.text(max_size=200).filter(_encodable)
        )
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=512), st.sampled_from([b"", b"\xff\xfe\x00", b"\x00" * 4096]))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        floats = st.floats(allow_nan=True, allow_infinity=True, width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
        return st.one_of(st.sampled_from(BOUNDARY_FLOATS), floats)
    if t == FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(values), st.integers(-5, 1000))
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return st.one_of(
            st.sampled_from([v for v in BOUNDARY_INTS if -(2**31) <= v < 2**31]), st.integers(-(2**31), 2**31 - 1)
        )
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    return st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**63), 2**63 - 1))


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def message(desc: Descriptor, cls_of: Any, depth: int = 0) -> st.SearchStrategy[Message]:
    """A message of type `desc` with a random subset of its fields set to hostile values."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                k = _scalar(f.message_type.fields_by_name["key"])
                v = _scalar(f.message_type.fields_by_name["value"])
                fields[f.name] = st.dictionaries(k, v, max_size=4)
                continue
            if depth >= 2:
                continue
            inner = message(f.message_type, cls_of, depth + 1)
            fields[f.name] = st.lists(inner, max_size=3) if _repeated(f) else inner
        else:
            fields[f.name] = st.lists(_scalar(f), max_size=6) if _repeated(f) else _scalar(f)
    cls = cls_of(desc)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for name, strat in fields.items():
            if not draw(st.booleans()):
                continue
            value = draw(strat)
            f = desc.fields_by_name[name]
            if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
                getattr(msg, name).update(value)
            elif f.type == FieldDescriptor.TYPE_MESSAGE:
                if _repeated(f):
                    getattr(msg, name).extend(value)
                else:
                    getattr(msg, name).CopyFrom(value)
            elif _repeated(f):
                getattr(msg, name).extend(value)
            else:
                setattr(msg, name, value)
        return msg

    return build()


def _repeated(f: FieldDescriptor) -> bool:
    return bool(f.is_repeated)
