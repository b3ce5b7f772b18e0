"""Every client-side `rag` subcommand against a service that is down: one line naming the service
and its address, no traceback, exit code 3, and with --json an `{"error": ...}` document."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from cli.main import main


@pytest.fixture(scope="module")
def closed_addr() -> Iterator[str]:
    """An address where nothing listens: bound (so nobody else takes it) but never listening, so
    every connection is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


CASES = [
    (["ask", "What is TTFB?"], "llm_gateway"),
    (["search", "object storage"], "retriever"),
    (["jobs", "list"], "retriever"),
    (["jobs", "status", "0123"], "retriever"),
    (["jobs", "cancel", "0123"], "retriever"),
    (["config", "backends", "list"], "storage"),
    (["config", "backends", "test", "local"], "storage"),
    (["config", "backends", "remove", "old"], "storage"),
    (["bench", "storage", "--levels", "1", "--ops", "5"], "storage"),
    (["bench", "list"], "storage"),
    (["cache", "purge", "embedder"], "embedder"),
]


def _flag(service: str) -> str:
    return "--" + service.replace("_", "-") + "-addr"


@pytest.mark.parametrize(("argv", "service"), CASES, ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]))
def test_down_service_is_named_with_its_address(
    argv: list[str], service: str, closed_addr: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    code = main([*argv, _flag(service), closed_addr, "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 3
    assert f"the {service} service at {closed_addr} is not reachable" in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1, err
    assert out.strip() == ""


def test_down_service_with_json_prints_an_error_document(closed_addr: str, capsys, tmp_path) -> None:
    code = main(["search", "gpus", "--json", "--retriever-addr", closed_addr, "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 3
    doc = json.loads(out)
    assert doc["error"]["service"] == "retriever"
    assert doc["error"]["address"] == closed_addr
    assert doc["error"]["code"] == "UNAVAILABLE"
    assert "not reachable" in err


def test_ingest_with_storage_down_stops_at_the_first_upload(closed_addr: str, capsys, tmp_path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nSomething to ingest.\n")
    code = main(["ingest", str(doc), "--storage-addr", closed_addr, "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 3
    assert f"the storage service at {closed_addr} is not reachable" in err
    assert "Traceback" not in err + out


def test_cache_stats_reports_each_service_and_fails(closed_addr: str, capsys, tmp_path) -> None:
    flags = [_flag(s) for s in ("embedder", "retriever", "llm_gateway")]
    argv = ["cache", "stats", "--json", "--data-dir", str(tmp_path)]
    for f in flags:
        argv += [f, closed_addr]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 3
    caches = json.loads(out)["caches"]
    assert [c["service"] for c in caches] == ["embedder", "retriever", "llm_gateway"]
    assert all(c["error"] and c["address"] == closed_addr for c in caches)
    lines = err.strip().splitlines()
    assert len(lines) == 3
    for line, svc in zip(lines, ("embedder", "retriever", "llm_gateway"), strict=True):
        assert (
            line
            == f"error: the {svc} service at {closed_addr} is not reachable (is the stack running? try `rag status`)"
        )


def test_usage_errors_exit_2_without_calling_anything(capsys, tmp_path) -> None:
    assert main(["ingest", "--data-dir", str(tmp_path)]) == 2
    assert "give files or directories" in capsys.readouterr().err
    assert main(["ask", "   "]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["ask", "q", "--compare", "one", "--data-dir", str(tmp_path)]) == 2
    assert "at least two backends" in capsys.readouterr().err
    assert main(["cache", "stats", "bogus", "--data-dir", str(tmp_path)]) == 2
    assert "unknown cache" in capsys.readouterr().err


def test_backend_add_without_credentials_off_a_terminal_says_how(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DDNRAG_CLI_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("DDNRAG_CLI_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code = main(["config", "backends", "add", "s3", "--kind", "aws-s3", "--bucket", "b", "--data-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "DDNRAG_CLI_ACCESS_KEY_ID" in err and "--credentials-env-prefix" in err
