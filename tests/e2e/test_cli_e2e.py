"""The `rag` command as a new user runs it, against one real stack (`rag up` on free ports):
ingest, ask (streamed, --json, --compare), search, jobs, cache, export, config backends, eval.

Every command is the installed `rag` executable in a subprocess, with the stack's port variables
in its environment and no address flags, as a user's shell would have after `rag up`."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.stack import RunningStack, start_stack

# The module's first test also waits for the stack to start, which takes minutes on a busy machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RAG = str(Path(sys.executable).parent / "rag")
ROOT = Path(__file__).resolve().parents[2]
ZEPHYR = """# Project Zephyr cooling loop

Project Zephyr is the liquid cooling loop of the Oslo data hall. The Zephyr loop keeps every
GPU rack below 30 degrees Celsius using a glycol mixture pumped at 120 litres per minute.
"""
AURORA = """Project Aurora is the backup power system of the Oslo data hall: two 2 MW diesel generators
and an uninterruptible power supply that bridges 15 minutes.
"""
EMULATED = "farstore-emulated"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = start_stack(tmp_path_factory.mktemp("cli-stack") / "data")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub").mkdir()
    (root / "zephyr.md").write_text(ZEPHYR)
    (root / "sub" / "aurora.txt").write_text(AURORA)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (root / "photo.png").write_bytes(b"\x89PNG\r\n")
    return root


def rag(
    stack: RunningStack, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    proc = subprocess.run(
        [RAG, *argv],
        env={**stack.env, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def ingested(stack: RunningStack, corpus: Path) -> dict:
    """The corpus ingested into collection "clitest" (the broken PDF fails, the PNG is skipped)."""
    code, out, err = rag(stack, "ingest", str(corpus), "--collection", "clitest", "--json")
    assert code == 1, err  # one file failed, so the command says so
    return json.loads(out)


def test_ingest_reports_progress_and_per_file_errors(stack: RunningStack, corpus: Path, ingested: dict) -> None:
    assert ingested["state"] == "partial" and ingested["ok"] is False
    assert sorted(d["name"] for d in ingested["uploaded"]) == ["aurora.txt", "broken.pdf", "zephyr.md"]
    assert [e["name"] for e in ingested["errors"]] == ["broken.pdf"]
    assert "PDF" in ingested["errors"][0]["reason"]
    assert [Path(p).name for p in ingested["skipped"]] == ["photo.png"]
    assert ingested["job"]["documents_done"] == 3 and ingested["job"]["chunks_done"] >= 2

    code, out, _ = rag(stack, "ingest", str(corpus / "zephyr.md"), str(corpus / "gone.md"), "--collection", "clitest")
    assert code == 1
    assert "succeeded" in out and "docs" in out and "chunks/s" in out and "writes per backend" in out
    assert "gone.md" in out and "no such file or directory" in out and "1 file(s) not ingested" in out

    code, out, _ = rag(stack, "ingest", str(corpus / "zephyr.md"), "--collection", "clitest")
    assert code == 0 and "succeeded: job" in out and "not ingested" not in out

    # objects already in the bucket: the documents uploaded above, by prefix
    code, out, err = rag(
        stack, "ingest", "--bucket", "ddnrag", "--prefix", "docs/clitest/", "--collection", "fromprefix", "--json"
    )
    doc = json.loads(out)
    assert code == 1 and doc["uploaded"] == [], err  # nothing uploaded; the broken PDF fails again
    assert doc["job"]["documents_total"] == 3 and doc["job"]["chunks_done"] >= 2
    assert [e["name"] for e in doc["errors"]] == ["broken.pdf"]
    code, _, err = rag(stack, "ingest", "--bucket", "no-such-bucket", "--prefix", "docs/")
    assert code == 2 and "no configured backend uses bucket 'no-such-bucket'" in err


def test_ask_streams_a_cited_answer_with_timings(stack: RunningStack, ingested: dict) -> None:
    question = "What temperature does the Zephyr loop keep GPU racks below?"
    code, out, err = rag(stack, "ask", question, "--collection", "clitest", "--session", "e2e")
    assert code == 0, err
    answer = out.split("Citations")[0]
    assert "30" in answer
    assert "zephyr.md" in out.split("Citations")[1]
    for row in ("Timing breakdown", "retrieval: fetch", "TTFB", "time to first token (RAG)", "wall clock"):
        assert row in out, out

    code, out, err = rag(stack, "ask", question, "--collection", "clitest", "--session", "e2e", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert "30" in doc["answer"] and doc["finish_reason"] == "stop"
    assert any(c["document_name"] == "zephyr.md" for c in doc["citations"])
    fetch = next(s for s in doc["timings"]["retrieval"]["stages"] if s["name"] == "fetch")
    assert fetch["ttfb_ns"] > 0 and fetch["count"] >= 1
    assert doc["timings"]["wall_ns"] >= doc["timings"]["rag_ttft_ns"] > 0


def test_ask_about_a_missing_collection_fails_cleanly(stack: RunningStack) -> None:
    code, _, err = rag(stack, "ask", "anything?", "--collection", "no-such-collection", "--no-record")
    assert code != 0
    assert "no-such-collection" in err


def test_search_ranks_chunks_with_scores(stack: RunningStack, ingested: dict) -> None:
    code, out, err = rag(stack, "search", "glycol cooling loop", "--collection", "clitest", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["chunks"][0]["document_name"] == "zephyr.md"
    scores = [c["score"] for c in doc["chunks"]]
    assert scores == sorted(scores, reverse=True)
    code, out, _ = rag(stack, "search", "diesel generators", "--collection", "clitest")
    assert code == 0 and "aurora.txt" in out and "score" in out and "fetch" in out


def test_config_backends_and_ask_compare(stack: RunningStack, corpus: Path, ingested: dict) -> None:
    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    env = {
        "DDNRAG_CLI_ACCESS_KEY_ID": creds["access_key_id"],
        "DDNRAG_CLI_SECRET_ACCESS_KEY": creds["secret_access_key"],
    }
    endpoint = f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}"
    code, out, err = rag(
        stack,
        *("config", "backends", "add", EMULATED, "--kind", "ddn-infinia", "--endpoint", endpoint),
        *("--bucket", "ddnrag", "--region", "us-east-1", "--rtt-ms", "25", "--test"),
        env=env,
    )
    assert code == 0, err
    assert f"{EMULATED}: ok" in out and creds["secret_access_key"] not in out + err
    code, out, _ = rag(stack, "config", "backends", "list")
    assert code == 0 and EMULATED in out and "emulated" in out and "default" in out

    code, out, err = rag(
        stack, "ingest", str(corpus / "sub" / "aurora.txt"), "--collection", "clitest", "--backend", f"local,{EMULATED}"
    )
    assert code == 0, err
    assert EMULATED in out.split("writes per backend")[1]

    q = "How long does the Aurora UPS bridge?"
    code, out, err = rag(stack, "ask", q, "--collection", "clitest", "--compare", f"local,{EMULATED}", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert [r["storage_backend"] for r in results] == ["local", EMULATED]
    ttfb = [next(s for s in r["timings"]["retrieval"]["stages"] if s["name"] == "fetch")["ttfb_ns"] for r in results]
    assert ttfb[1] >= 25e6 > ttfb[0], ttfb  # the emulated backend's 25 ms round trip shows
    assert all("15" in r["answer"] for r in results)
    code, out, _ = rag(stack, "ask", q, "--collection", "clitest", "--compare", f"local,{EMULATED}", "--no-record")
    assert code == 0 and "Storage backends compared" in out and "fetch TTFB" in out

    code, out, _ = rag(stack, "config", "backends", "remove", EMULATED)
    assert code == 0 and "removed" in out


def test_jobs_list_status_and_cancel(stack: RunningStack, ingested: dict, tmp_path: Path) -> None:
    job_id = ingested["job"]["job_id"]
    code, out, _ = rag(stack, "jobs", "list", "--json")
    assert code == 0 and job_id in [j["job_id"] for j in json.loads(out)["jobs"]]
    code, out, _ = rag(stack, "jobs", "status", job_id)
    assert code == 1 and "partial" in out and "broken.pdf" in out  # a partial job is a failure for scripts

    rng = random.Random(7)
    words = "object storage latency bucket rack cooling vector index chunk answer token stream".split()
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(80)) for _ in range(4000)))
    code, out, err = rag(stack, "ingest", str(big), "--collection", "cancelme", "--detach", "--json")
    assert code == 0, err
    big_job = json.loads(out)["job"]["job_id"]
    code, out, err = rag(stack, "jobs", "cancel", big_job, "--json")
    assert code == 0, err
    assert json.loads(out)["job"]["state"] == "cancelled"
    code, out, _ = rag(stack, "jobs", "status", big_job, "--watch", "--json")
    assert json.loads(out)["job"]["state"] == "cancelled"

    code, _, err = rag(stack, "jobs", "status", "no-such-job")
    assert code == 1 and "no-such-job" in err


def test_cache_stats_and_purge(stack: RunningStack, ingested: dict) -> None:
    rag(stack, "ask", "What is Project Zephyr?", "--collection", "clitest", "--no-record")
    code, out, _ = rag(stack, "cache", "stats", "--json")
    assert code == 0
    caches = {c["service"]: c for c in json.loads(out)["caches"]}
    assert set(caches) == {"embedder", "retriever", "llm_gateway"}
    assert caches["embedder"]["entries"] > 0 and caches["llm_gateway"]["entries"] > 0
    code, out, _ = rag(stack, "cache", "purge", "llm")
    assert code == 0 and "llm_gateway: removed" in out
    code, out, _ = rag(stack, "cache", "stats", "llm", "--json")
    assert json.loads(out)["caches"][0]["entries"] == 0
    code, out, _ = rag(stack, "cache", "stats")
    assert code == 0 and "hit rate" in out and "embeddings" in out


def test_export_writes_the_sessions_questions_answers_citations_and_timings(
    stack: RunningStack, ingested: dict, tmp_path: Path
) -> None:
    rag(stack, "ask", "Who runs the Aurora generators?", "--collection", "clitest", "--session", "exp")
    code, out, _ = rag(stack, "export", "--session", "exp")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1
    rec = lines[0]
    assert rec["question"] == "Who runs the Aurora generators?" and rec["answer"] and rec["session"] == "exp"
    assert rec["citations"] and rec["timings"]["retrieval"]["stages"]
    target = tmp_path / "out.jsonl"
    code, _, err = rag(stack, "export", "--session", "exp", "-o", str(target))
    assert code == 0 and "wrote 1 answers" in err and target.read_text() == out
    code, out, _ = rag(stack, "export", "--list", "--json")
    assert {"session": "exp", "records": 1} in json.loads(out)["sessions"]


def test_eval_is_wired_and_exits_cleanly(stack: RunningStack) -> None:
    code, out, _ = rag(stack, "--help")
    assert code == 0
    for name in ("ingest", "ask", "search", "bench", "jobs", "cache", "eval", "export", "config"):
        assert f"    {name} " in out
    code, out, _ = rag(stack, "eval", "--help")
    assert code == 0 and "beir_dir" in out
    code, _, err = rag(stack, "eval", str(stack.data_dir / "no-beir-here"))
    assert code == 2 and "BEIR" in err


def test_addresses_come_from_the_stack_without_flags(stack: RunningStack) -> None:
    env = {k: v for k, v in stack.env.items() if not k.startswith("DDNRAG_CLI_")}
    proc = subprocess.run([RAG, "config", "backends", "test"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "HeadBucket" in proc.stdout
    assert os.environ.get("DDNRAG_STORAGE_PORT") != str(stack.ports["DDNRAG_STORAGE_PORT"])


# The README's internal-client example, run by the client-wheel test in a venv holding only
# ddnrag-client and its dependencies.
CLIENT_EXAMPLE = """
import asyncio, json, sys
from clients import RagClient

async def main(addr: str, question: str) -> None:
    text, cited = [], []
    async with RagClient(llm_gateway=addr) as rag:
        async for ev in rag.answer(question, collection="clitest"):
            if ev.HasField("token"):
                text.append(ev.token.text)
            elif ev.HasField("citation"):
                cited.append(ev.citation.document_name)
    print(json.dumps({"answer": "".join(text), "cited": cited}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_the_client_wheel_alone_answers_from_the_stack(stack: RunningStack, ingested: dict, tmp_path: Path) -> None:
    """`ddnrag-client` installs into a fresh venv with no registry and no product dependencies
    (no torch, numpy, faiss, boto3, aiohttp), and answers a question from the running stack."""
    wheels, deps, venv = tmp_path / "dist", tmp_path / "deps", tmp_path / "venv"
    build = [sys.executable, str(ROOT / "scripts/build_dist.py"), "--only", "client", "--out", str(wheels)]
    subprocess.run([*build, "--deps-from-venv", str(deps)], check=True, timeout=300, cwd=tmp_path)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    (wheel,) = wheels.glob("ddnrag_client-*.whl")
    install = [sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-index", "--find-links", str(deps)]
    subprocess.run([*install, str(wheel)], check=True, timeout=300, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    missing = "import importlib.util as u; print([m for m in ('torch','numpy','faiss','boto3','aiohttp','services') if u.find_spec(m)])"
    out = subprocess.run([py, "-c", missing], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    (tmp_path / "example.py").write_text(CLIENT_EXAMPLE)
    question = "What temperature does the Zephyr loop keep GPU racks below?"
    addr = stack.addr("DDNRAG_LLM_GATEWAY_PORT")
    out = subprocess.run(
        [py, "example.py", addr, question], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert "30" in doc["answer"] and "zephyr.md" in doc["cited"], doc


def test_down_stops_the_stack_last(stack: RunningStack) -> None:
    """Runs last in this module: `rag down` stops the shared stack's supervisor."""
    code, out, _ = rag(stack, "down", "--json", timeout=120)
    assert code == 0
    doc = json.loads(out)
    assert doc["stopped"] is True and doc["pid"] == stack.proc.pid
    assert stack.proc.wait(30) == 0
    code, out, _ = rag(stack, "status", "--json")
    assert code == 1 and not any(s["serving"] for s in json.loads(out)["services"].values())
    code, out, _ = rag(stack, "down", "--json")
    assert code == 0 and json.loads(out) == {"running": False, "stopped": False, "pid": None}
