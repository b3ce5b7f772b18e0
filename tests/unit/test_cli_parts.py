"""The `rag` command's plain parts: sizes, protobuf -> dict, the SVG chart, run comparison, CSV,
file planning for ingest, the session log and address resolution. No network."""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli.commands import bench, chart, session
from cli.commands.common import UsageError, parse_size, resolve_addr, to_dict
from cli.commands.ingest import plan_files
from cli.main import build_parser
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from ddnrag.storage.v1 import storage_service_pb2 as spb
from services.storage.bench_model import compare_runs
from services.storage.convert import comparison_pb, run_from_pb

SVG = "{http://www.w3.org/2000/svg}"


def level(backend: str, conc: int, ops_s: float, p50_ms: float, *, size: int = 1 << 20, **extra: object) -> dict:
    return {
        "backend": backend,
        "emulated": False,
        "operation": "get",
        "object_size_bytes": size,
        "concurrency": conc,
        "ops": int(ops_s * 3),
        "errors": 0,
        "duration_s": 3.0,
        "ops_per_s": ops_s,
        "mib_per_s": ops_s * size / 2**20,
        "latency": {"p50_ns": int(p50_ms * 1e6), "p90_ns": 0, "p99_ns": int(p50_ms * 2e6), "max_ns": 0, "mean_ns": 0},
        "ttfb": {"p50_ns": int(p50_ms * 5e5), "p90_ns": 0, "p99_ns": 0, "max_ns": 0, "mean_ns": 0},
        **extra,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4KiB", 4096), ("1MiB", 1 << 20), ("512", 512), ("64k", 64000), ("1.5 MiB", 1572864), ("2GiB", 2 << 30)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "4XB", "four"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(UsageError, match="not a size"):
        parse_size(text)


def test_to_dict_keeps_ints_enums_maps_and_unset_messages() -> None:
    job = rpb.Job(job_id="j1", state=rpb.JOB_STATE_PARTIAL, chunks_done=2**40, document_ids=["a", "b"])
    job.file_errors.add(name="x.pdf", reason="not a valid PDF")
    d = to_dict(job)
    assert d["chunks_done"] == 2**40 and isinstance(d["chunks_done"], int)
    assert d["state"] == "partial"  # the enum's name as the HTTP API gives it (one walker, clients/protodict.py)
    assert d["document_ids"] == ["a", "b"]
    assert d["file_errors"][0]["reason"] == "not a valid PDF"
    doc = to_dict(rpb.Document(metadata={"team": "infra"}))
    assert doc["metadata"] == {"team": "infra"}
    assert to_dict(spb.PutResponse())["transfer"] is None
    json.dumps(d)  # JSON-ready


def test_svg_chart_has_a_line_per_series_in_each_panel() -> None:
    run = {
        "run_id": "r1",
        "request": {"label": "night <run>"},
        "results": [
            level("local", 1, 50, 2.0),
            level("local", 4, 150, 3.0),
            level("local", 16, 300, 6.0),
            level("infinia", 1, 80, 1.0, emulated=True),
            level("infinia", 4, 250, 1.5, emulated=True),
            level("infinia", 16, 600, 2.5, emulated=True),
        ],
        "not_configured": ["aws"],
    }
    svg = chart.render_svg(run)
    root = ET.fromstring(svg)  # well-formed, the label's "<" escaped
    lines = root.findall(f".//{SVG}polyline")
    assert len(lines) == 4  # 2 series x 2 panels
    assert all(len(pl.get("points", "").split()) == 3 for pl in lines)
    text = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "throughput (MiB/s)" in text and "p50 latency (ms)" in text
    assert "infinia (emulated) · get · 1 MiB" in text and "local · get · 1 MiB" in text
    assert "night <run>" in text and "aws" in text
    for tick in ("1", "4", "16"):
        assert tick in text.split()
    # a higher value sits higher on the chart (smaller y)
    ys = {c.get("cy") for c in root.iter(f"{SVG}circle")}
    assert len(ys) > 3


def test_svg_chart_of_an_empty_run_says_so() -> None:
    root = ET.fromstring(chart.render_svg({"run_id": "r0", "results": []}))
    assert "no results" in " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert not root.findall(f".//{SVG}polyline")


@pytest.mark.parametrize("top", [0.3, 7, 99, 1234, 55555])
def test_nice_ticks_cover_the_top_value(top: float) -> None:
    ticks = chart.nice_ticks(top)
    assert ticks[0] == 0 and ticks[-1] >= top and len(ticks) <= 7
    assert ticks == sorted(ticks)


def _run(run_id: str, *levels: dict) -> dict:
    return {"run_id": run_id, "request": {"backends": ["local"], "operation": "get"}, "results": list(levels)}


async def test_cmp_shows_the_storage_services_comparison(tmp_path: Path) -> None:
    """`rag bench cmp` computes nothing: the cells, the sides and the ratios are what the storage
    service's one comparison (`compare_runs`, served by CompareBenchmarkRuns) returns."""
    a = _run("a", level("local", 1, 100, 2.0), level("local", 4, 200, 4.0))
    b = _run("b", level("local", 1, 150, 1.0), level("local", 8, 300, 5.0))
    for run in (a, b):
        (tmp_path / f"{run['run_id']}.json").write_text(json.dumps(run))
    ra, rb = await bench._run_ref("a", tmp_path), await bench._run_ref("b", tmp_path)
    assert isinstance(ra, spb.BenchmarkRun) and isinstance(rb, spb.BenchmarkRun)
    assert await bench._run_ref("20260101T000000Z-0123abcd", tmp_path) == "20260101T000000Z-0123abcd"
    rows = compare_runs(run_from_pb(ra), run_from_pb(rb))
    resp = spb.CompareBenchmarkRunsResponse(a=ra, b=rb, rows=[comparison_pb(r) for r in rows])
    cmp = bench.comparison_view(resp)
    assert [c["concurrency"] for c in cmp["cells"]] == [1]
    cell = cmp["cells"][0]
    assert cell["operation"] == "get" and cell["ops_per_s"] == [100, 150]
    assert cell["ops_per_s_ratio"] == pytest.approx(1.5)
    assert cell["latency_p50_ratio"] == pytest.approx(0.5) and cell["latency_p99_ratio"] == pytest.approx(0.5)
    assert [c["concurrency"] for c in cmp["only_in_a"]] == [4]
    assert [c["concurrency"] for c in cmp["only_in_b"]] == [8]
    assert bench._pct(1.5, True) == "[green]+50.0%[/green]" and bench._pct(0.0, True) == "-"


@pytest.mark.parametrize("operation", ["get", "BENCHMARK_OPERATION_GET"])
async def test_a_run_file_saved_by_an_older_version_still_compares(tmp_path: Path, operation: str) -> None:
    """Run files saved before the wire change say `object_size`; before the one walker, the
    enum's full name. Both read back as the same run."""
    old = level("local", 1, 100, 2.0, size=4096, operation=operation)
    old["object_size"] = old.pop("object_size_bytes")
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"run": _run("a", old)}))
    run = await bench._run_ref(str(path), tmp_path)
    assert isinstance(run, spb.BenchmarkRun)
    lv = run.results[0]
    assert (lv.operation, lv.object_size_bytes) == (spb.BENCHMARK_OPERATION_GET, 4096)
    path.write_text(json.dumps({"run": {"run_id": "x", "results": [{"operation": "teleport"}]}}))
    with pytest.raises(UsageError, match="not a benchmark run"):
        await bench._run_ref(str(path), tmp_path)


def test_save_run_writes_json_csv_and_svg(tmp_path: Path) -> None:
    run = {"run_id": "r9", "results": [level("local", 1, 100, 2.0)]}
    stored = b"run_id,backend\nr9,local\n"  # the CSV the storage service keeps at the run's csv_key
    paths = bench.save_run(run, tmp_path / "bench", stored)
    assert json.loads(Path(paths["json"]).read_text())["run_id"] == "r9"
    assert Path(paths["csv"]).read_bytes() == stored
    ET.fromstring(Path(paths["svg"]).read_text())


def test_bench_request_from_flags() -> None:
    args = build_parser().parse_args(
        ["bench", "storage", "--backends", "local,infinia", "--levels", "1,8", "--sizes", "4KiB,1MiB", "--op", "put"]
    )
    req = bench.build_request(args)
    assert list(req.backends) == ["local", "infinia"]
    assert list(req.concurrency_levels) == [1, 8] and req.preset == spb.BENCHMARK_PRESET_UNSPECIFIED
    assert list(req.object_sizes_bytes) == [4096, 1 << 20] and req.operation == spb.BENCHMARK_OPERATION_PUT
    req = bench.build_request(build_parser().parse_args(["bench", "storage", "--preset", "extended", "--ops", "40"]))
    assert req.preset == spb.BENCHMARK_PRESET_EXTENDED and not req.concurrency_levels
    assert req.ops_per_level == 40 and req.duration_s == 0
    with pytest.raises(UsageError):
        bench.build_request(build_parser().parse_args(["bench", "storage", "--levels", "1,x"]))


def test_plan_files_walks_directories_and_refuses_what_cannot_be_ingested(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("B")
    (tmp_path / "docs" / "sub" / "a.md").write_text("# other A")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / ".hidden.md").write_text("secret")
    (tmp_path / "tool.exe").write_bytes(b"MZ")
    plan = plan_files([str(tmp_path / "docs"), str(tmp_path / "tool.exe"), str(tmp_path / "missing.md")])
    assert sorted(name for _, name in plan.files) == ["a.md", "b.txt"]
    assert plan.total_bytes == 4
    reasons = {Path(e["path"]).name: e["reason"] for e in plan.errors}
    assert "same file name" in reasons["a.md"]
    assert "unsupported file type" in reasons["tool.exe"]
    assert reasons["missing.md"] == "no such file or directory"
    assert [Path(p).name for p in plan.skipped] == ["image.png"]


def test_session_log_round_trip_and_torn_line(tmp_path: Path) -> None:
    path = session.session_path(tmp_path, "demo")
    session.append(path, {"question": "q1", "answer": "a1"})
    session.append(path, {"question": "q2", "answer": "a2 [1]"})
    with path.open("a") as f:
        f.write('{"question": "q3", "ans')  # a crash mid-write
    assert [r["question"] for r in session.read(path)] == ["q1", "q2"]
    assert session.list_sessions(tmp_path) == [("demo", 2)]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_session_names_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(session.SESSION_ENV, raising=False)
    assert session.session_name(None) == "default"
    monkeypatch.setenv(session.SESSION_ENV, "lab-1")
    assert session.session_name(None) == "lab-1"
    assert session.session_name("x.y") == "x.y"
    with pytest.raises(ValueError, match="session name"):
        session.session_name("../etc")


def test_addresses_flag_then_env_then_local_stack_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDNRAG_CLI_RETRIEVER_ADDR", raising=False)
    monkeypatch.setenv("DDNRAG_RETRIEVER_PORT", "41234")
    args = argparse.Namespace(retriever_addr=None, data_dir=None)
    assert resolve_addr("retriever", args) == "127.0.0.1:41234"
    monkeypatch.delenv("DDNRAG_RETRIEVER_PORT")
    assert resolve_addr("retriever", args) == "127.0.0.1:50053"
    monkeypatch.setenv("DDNRAG_CLI_RETRIEVER_ADDR", "retriever.svc:50053")
    assert resolve_addr("retriever", args) == "retriever.svc:50053"
    args.retriever_addr = "10.0.0.5:6000"
    assert resolve_addr("retriever", args) == "10.0.0.5:6000"


ISSUE_TABLE = [
    ["up"],
    ["status"],
    ["down"],
    ["ingest", "x.md"],
    ["ask", "q"],
    ["search", "q"],
    ["bench", "storage"],
    ["bench", "cmp", "a", "b"],
    ["jobs", "list"],
    ["jobs", "status", "j"],
    ["jobs", "cancel", "j"],
    ["cache", "stats"],
    ["cache", "purge"],
    ["export"],
    ["config", "backends", "list"],
    ["config", "backends", "add", "n", "--kind", "aws-s3", "--bucket", "b"],
    ["config", "backends", "test"],
    ["config", "backends", "remove", "n"],
]


@pytest.mark.parametrize("argv", ISSUE_TABLE, ids=lambda a: " ".join(a[:2]))
def test_every_subcommand_of_the_issue_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)
    if argv[0] != "up":
        assert hasattr(args, "json"), f"rag {argv[0]} has no --json"


def test_eval_is_listed() -> None:
    assert "eval" in build_parser().format_help()


def test_a_zombie_supervisor_counts_as_stopped() -> None:
    """`rag down` waits for the supervisor to go; one that exited but was not yet reaped by the
    process that started it (a script, a test) has gone."""
    import os
    import subprocess
    import time

    from cli.commands.stack import _alive

    proc = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        assert not _alive(proc.pid)
    finally:
        proc.wait()
    assert not _alive(proc.pid)
    assert _alive(os.getpid())
