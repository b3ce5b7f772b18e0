"""`rag config backends ...` and `rag bench ...` against a real storage service (127.0.0.1:0) over
the session's real SeaweedFS. The server runs on its own event loop in a thread, because each CLI
command runs its own `asyncio.run`, as it does in a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import main
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server
from tests.conftest import S3Server


class ThreadedServer:
    """A grpc.aio server on its own loop in a daemon thread."""

    def __init__(self, cfg: StorageConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.app, self.port = asyncio.run_coroutine_threadsafe(create_server(cfg), self.loop).result(30)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(0), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def storage(seaweed: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    cfg = load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(tmp_path_factory.mktemp("storage-state")),
        default_endpoint=seaweed.endpoint,
        default_bucket=seaweed.bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        endpoint_allowlist=("127.0.0.1:9",),  # the unreachable backend of the failing-test case
    )
    server = ThreadedServer(cfg)
    try:
        yield server
    finally:
        server.stop()


def rag(capsys: pytest.CaptureFixture[str], storage: ThreadedServer, data: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--storage-addr", storage.addr, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


def test_backends_list_shows_the_default(storage: ThreadedServer, capsys, tmp_path: Path) -> None:
    code, out, _ = rag(capsys, storage, tmp_path, "config", "backends", "list", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["default_backend"] == "local"
    local = next(b for b in doc["backends"] if b["name"] == "local")
    assert local["has_credentials"] is True and "secret_access_key" not in local
    code, out, _ = rag(capsys, storage, tmp_path, "config", "backends", "list")
    assert code == 0 and "local" in out and "default" in out


def test_backend_add_test_remove_never_shows_the_secret(
    storage: ThreadedServer, seaweed: S3Server, capsys, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DDNRAG_CLI_ACCESS_KEY_ID", seaweed.access_key_id)
    monkeypatch.setenv("DDNRAG_CLI_SECRET_ACCESS_KEY", seaweed.secret_access_key)
    code, out, err = rag(
        capsys,
        storage,
        tmp_path,
        "config",
        "backends",
        "add",
        "mirror",
        "--kind",
        "s3-compatible",
        "--endpoint",
        seaweed.endpoint,
        "--bucket",
        seaweed.bucket,
        "--region",
        "us-east-1",
        "--test",
    )
    assert code == 0, err
    assert "backend mirror saved" in out and "credentials set" in out
    assert "mirror: ok" in out and "write yes" in out and "read yes" in out
    assert seaweed.secret_access_key not in out + err

    code, out, _ = rag(capsys, storage, tmp_path, "config", "backends", "test", "mirror", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True and doc["can_write"] and doc["can_read"] and doc["head_bucket_ns"] > 0

    code, out, _ = rag(capsys, storage, tmp_path, "config", "backends", "list", "--json")
    assert seaweed.secret_access_key not in out and seaweed.access_key_id not in out
    assert any(b["name"] == "mirror" and b["has_credentials"] for b in json.loads(out)["backends"])

    code, out, _ = rag(capsys, storage, tmp_path, "config", "backends", "remove", "mirror")
    assert code == 0 and "backend mirror removed" in out
    code, _, err = rag(capsys, storage, tmp_path, "config", "backends", "test", "mirror")
    assert code == 1 and "mirror" in err and "not configured" in err and "Traceback" not in err


def test_backend_that_cannot_be_reached_fails_its_test(storage: ThreadedServer, capsys, tmp_path: Path) -> None:
    code, out, err = rag(
        capsys,
        storage,
        tmp_path,
        "config",
        "backends",
        "add",
        "nowhere",
        "--kind",
        "s3-compatible",
        "--endpoint",
        "http://127.0.0.1:9",
        "--bucket",
        "none",
        "--no-credentials",
    )
    assert code == 0, err
    code, out, err = rag(capsys, storage, tmp_path, "config", "backends", "test", "nowhere")
    assert code == 1
    assert "nowhere: failed" in out
    rag(capsys, storage, tmp_path, "config", "backends", "remove", "nowhere")


def test_bench_storage_saves_json_csv_svg_and_compares(storage: ThreadedServer, capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "bench"
    argv = ["bench", "storage", "--op", "put", "--levels", "1,2", "--sizes", "4KiB", "--ops", "12", "--warmup", "0"]
    code, out, err = rag(capsys, storage, tmp_path, *argv, "--out", str(out_dir), "--json")
    assert code == 0, err
    first = json.loads(out)
    run = first["run"]
    assert [r["concurrency"] for r in run["results"]] == [1, 2]
    assert all(r["backend"] == "local" and r["ops"] >= 12 and r["ops_per_s"] > 0 for r in run["results"])
    # Enums read as the HTTP API writes them (one walker, clients/protodict.py): "put", not
    # BENCHMARK_OPERATION_PUT.
    assert {r["operation"] for r in run["results"]} == {"put"} and run["request"]["operation"] == "put"
    for kind in ("json", "csv", "svg"):
        assert Path(first["files"][kind]).is_file()
    assert "<polyline" in Path(first["files"]["svg"]).read_text()
    # The saved CSV is the one the storage service stored at the run's csv_key (its columns).
    saved = Path(first["files"]["csv"]).read_text().splitlines()
    assert run["csv_key"] and saved[0].startswith("run_id,backend,label,") and len(saved) == 3

    code, out, err = rag(capsys, storage, tmp_path, *argv, "--out", str(out_dir), "--label", "second")
    assert code == 0, err
    assert "run " in out and "ops/s" in out and "saved " in out
    second_id = next(p.stem for p in out_dir.glob("*.json") if p.stem != run["run_id"])

    code, out, err = rag(capsys, storage, tmp_path, "bench", "cmp", run["run_id"], second_id, "--out", str(out_dir))
    assert code == 0, err
    assert f"{run['run_id']} → {second_id}" in out and "local" in out
    code, out, _ = rag(
        capsys, storage, tmp_path, "bench", "cmp", first["files"]["json"], second_id, "--out", str(out_dir), "--json"
    )
    cmp = json.loads(out)
    assert [c["concurrency"] for c in cmp["cells"]] == [1, 2] and not cmp["only_in_a"]
    # The service's comparison of a run file with a stored run: its ratios, shown as given.
    assert all(c["operation"] == "put" and c["ops_per_s_ratio"] > 0 for c in cmp["cells"])
    assert cmp["run_a"] == run["run_id"] and cmp["run_b"] == second_id

    code, out, _ = rag(capsys, storage, tmp_path, "bench", "list", "--json")
    ids = [r["run_id"] for r in json.loads(out)["runs"]]
    assert run["run_id"] in ids and second_id in ids

    # a run id neither saved here nor known to the service
    code, _, err = rag(capsys, storage, tmp_path, "bench", "cmp", run["run_id"], "nope", "--out", str(out_dir))
    assert code == 1 and "nope" in err and "Traceback" not in err


def test_backend_add_prompts_for_the_secret_on_a_terminal_without_echoing_it(
    storage: ThreadedServer, seaweed: S3Server, tmp_path: Path
) -> None:
    """A real pseudo-terminal: the key id is typed at a prompt, the secret at getpass's (echo off),
    and the secret never appears on the terminal."""
    argv = [
        str(Path(sys.executable).parent / "rag"),
        *("config", "backends", "add", "typed", "--kind", "s3-compatible", "--endpoint", seaweed.endpoint),
        *("--bucket", seaweed.bucket, "--region", "us-east-1", "--test"),
        *("--storage-addr", storage.addr, "--data-dir", str(tmp_path)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDNRAG_CLI_")}
    fd, tty = pty.openpty()
    proc = subprocess.Popen(argv, stdin=tty, stdout=tty, stderr=tty, env=env, start_new_session=True)
    os.close(tty)
    seen = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
        assert marker in seen, seen.decode(errors="replace")

    try:
        read_until(b"access key id: ")
        os.write(fd, seaweed.access_key_id.encode() + b"\n")
        read_until(b"(not shown): ")
        os.write(fd, seaweed.secret_access_key.encode() + b"\n")
        read_until(b"reachable and writable")
        read_until(b"\n")
    finally:
        code = proc.wait(30)
        os.close(fd)
    text = re.sub(r"\x1b\[[0-9;]*m", "", seen.decode(errors="replace"))
    assert code == 0, text
    assert seaweed.secret_access_key not in text
    assert "typed: ok" in text and "credentials set" in text
    assert main(["config", "backends", "remove", "typed", "--storage-addr", storage.addr]) == 0


async def test_rag_client_uploads_a_file_in_pieces_and_it_reads_back(storage: ThreadedServer, tmp_path: Path) -> None:
    from clients import RagClient
    from kernel.ids import document_id

    data = os.urandom(2 * 1024 * 1024 + 12345)  # three 1 MiB pieces
    path = tmp_path / "blob.txt"
    path.write_bytes(data)
    async with RagClient(storage=storage.addr) as rag:
        doc = await rag.upload_file("pieces", path)
        assert doc.document_id == document_id("pieces", "blob.txt")
        assert doc.object_key == f"docs/pieces/{doc.document_id}/blob.txt" and doc.size_bytes == len(data)
        back, info, transfer = await rag.storage.get(doc.object_key)
        assert back == data and info.content_type == "text/plain" and transfer.ttfb_ns > 0
        await rag.storage.delete([doc.object_key])
