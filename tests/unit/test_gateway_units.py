"""Plain unit tests of the gateway's pure parts: upload checks, ids, proto->JSON, rate limiter,
config, error shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.base import ServiceCallError
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from ddnrag.storage.v1 import storage_service_pb2 as spb
from gateway.access import RateLimiter
from gateway.config import GatewayConfig
from gateway.convert import enum_name, enum_value, to_dict
from gateway.errors import ApiError, error_payload
from gateway.routes.backends import backend_json
from gateway.uploads import CheckedStream, check_collection, clean_filename, document_id, file_kind, object_key
from kernel.config import ConfigError, env_vars, load_env


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def drain(stream: CheckedStream) -> bytes:
    return b"".join([c async for c in stream])


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.PDF", "pdf"), ("x.docx", "docx"), ("t.htm", "html"), ("r.markdown", "md"), ("n.txt", "txt"), ("d.csv", "csv")],
)
def test_file_kind_accepts(name: str, kind: str) -> None:
    assert file_kind(name) == kind


@pytest.mark.parametrize("name", ["a.exe", "noext", "archive.tar.gz", "image.png"])
def test_file_kind_refuses_with_the_accepted_list(name: str) -> None:
    with pytest.raises(ApiError) as err:
        file_kind(name)
    assert err.value.status == 415
    assert "pdf, docx, pptx, xlsx, csv, html, md, txt" in err.value.message


def test_clean_filename_strips_paths_and_controls() -> None:
    assert clean_filename("C:\\Users\\me\\notes.md") == "notes.md"
    assert clean_filename("../../etc/passwd.txt") == "passwd.txt"
    assert clean_filename("a\x00b\x07.txt") == "ab.txt"
    for bad in ("", "..", "/", None):
        with pytest.raises(ApiError):
            clean_filename(bad)


def test_document_id_stable_and_distinct() -> None:
    assert document_id("kb", "a.md") == document_id("kb", "a.md")
    assert document_id("kb", "a.md") != document_id("other", "a.md")
    assert document_id("kb", "a.md") != document_id("kb", "b.md")
    assert object_key("kb", "abc", "a.md") == "docs/kb/abc/a.md"


@given(st.text(min_size=1, max_size=80))
def test_check_collection_only_accepts_the_documented_pattern(name: str) -> None:
    import re

    ok = re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name) is not None
    if ok:
        assert check_collection(name) == name
    else:
        with pytest.raises(ApiError):
            check_collection(name)


async def test_checked_stream_passes_valid_utf8_split_across_chunks() -> None:
    data = "caf\u00e9 \u4e16\u754c".encode()
    parts = [data[:4], data[4:9], data[9:]]  # splits inside multi-byte characters
    s = CheckedStream("a.txt", "txt", chunks(*parts), 1000)
    assert await drain(s) == data
    assert s.size == len(data)


@pytest.mark.parametrize(
    ("kind", "parts", "status", "reason"),
    [
        ("txt", [b""], 422, "EMPTY_FILE"),
        ("txt", [b"ok", b"\x00"], 422, "BINARY_CONTENT"),
        ("txt", [b"caf\xe9"], 422, "BINARY_CONTENT"),
        ("pdf", [b"hello"], 422, "BAD_CONTENT"),
        ("xlsx", [b"hello"], 422, "BAD_CONTENT"),
        ("txt", [b"a" * 600, b"b" * 600], 413, "TOO_LARGE"),
    ],
)
async def test_checked_stream_refusals(kind: str, parts: list[bytes], status: int, reason: str) -> None:
    s = CheckedStream("f." + kind, kind, chunks(*parts), 1000)
    with pytest.raises(ApiError) as err:
        await drain(s)
    assert (err.value.status, err.value.reason) == (status, reason)
    assert s.error is err.value


async def test_checked_stream_accepts_real_magic() -> None:
    assert await drain(CheckedStream("a.pdf", "pdf", chunks(b"%PDF-1.7\n", b"rest"), 100)) == b"%PDF-1.7\nrest"
    assert await drain(CheckedStream("a.docx", "docx", chunks(b"PK\x03\x04zip"), 100)) == b"PK\x03\x04zip"


def test_to_dict_every_field_numbers_and_enum_names() -> None:
    job = rpb.Job(job_id="j", state=rpb.JOB_STATE_PARTIAL, chunks_total=2**40)
    d = to_dict(job)
    assert d["state"] == "partial"
    assert d["chunks_total"] == 2**40 and isinstance(d["chunks_total"], int)
    assert d["backends"] == [] and d["error"] == ""
    assert enum_name(rpb.JobState.DESCRIPTOR, 99) == "99"
    assert enum_value(spb.BackendKind.DESCRIPTOR, "ddn_infinia") == spb.BACKEND_KIND_DDN_INFINIA
    with pytest.raises(ValueError, match="ddn_infinia"):
        enum_value(spb.BackendKind.DESCRIPTOR, "tape")


def test_backend_json_never_contains_secrets() -> None:
    b = spb.Backend(name="x", bucket="b", access_key_id="AKIDSECRET", secret_access_key="s3cr3t", has_credentials=True)
    d = backend_json(b)
    assert "AKIDSECRET" not in repr(d) and "s3cr3t" not in repr(d)
    assert d["has_credentials"] is True


def test_rate_limiter_refills() -> None:
    rl = RateLimiter(rps=2, burst=2)
    assert rl.take("k", now=0.0) == 0
    assert rl.take("k", now=0.0) == 0
    assert rl.take("k", now=0.0) == pytest.approx(0.5)
    assert rl.take("k", now=0.5) == 0  # one token back after 0.5 s
    assert rl.take("other", now=0.5) == 0
    assert RateLimiter(rps=0, burst=1).take("k") == 0  # disabled


def test_rate_limiter_is_bounded() -> None:
    rl = RateLimiter(rps=1, burst=1, max_keys=3)
    for i in range(10):
        rl.take(f"k{i}", now=0.0)
    assert len(rl._buckets) == 3


def test_config_from_env_and_errors() -> None:
    cfg = load_env(GatewayConfig, {"DDNRAG_GATEWAY_PORT": "9000", "DDNRAG_GATEWAY_API_KEYS": "a, b"})
    assert cfg.port == 9000 and cfg.api_keys == ("a", "b")
    assert load_env(GatewayConfig, {}).port == 8080
    with pytest.raises(ConfigError, match="DDNRAG_GATEWAY_PORT"):
        load_env(GatewayConfig, {"DDNRAG_GATEWAY_PORT": "http"})
    names = env_vars(GatewayConfig)
    assert {
        "DDNRAG_GATEWAY_STORAGE_ADDR",
        "DDNRAG_GATEWAY_RETRIEVER_ADDR",
        "DDNRAG_GATEWAY_LLM_GATEWAY_ADDR",
        "DDNRAG_GATEWAY_EMBEDDER_ADDR",
    } <= set(names)


def test_error_payloads() -> None:
    e = ServiceCallError("llm_gateway", "127.0.0.1:1", grpc.StatusCode.UNAVAILABLE, "connection refused")
    p = error_payload(e)
    assert p["status"] == 503 and p["service"] == "llm_gateway"
    assert "llm_gateway" in p["message"] and "unavailable" in p["message"]
    assert error_payload(RuntimeError("secret=abc"))["message"] == "internal error in the gateway; see its log"
