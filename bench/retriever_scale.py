"""Retriever scale-out benchmark: `.venv/bin/python bench/retriever_scale.py` -> bench/results/retriever_scale.json.

Starts SeaweedFS, the storage service and the embedder (in this process, ports from the OS or
probed) and runs retrievers as their own processes. Measured side by side in one run:

- `small_commit_large_over_empty`: wall time of an ingestion job (StartIngest of 10 short SciFact
  abstracts -> terminal event: fetch, parse, embed, write chunks, commit) into a collection of
  100k chunks over the same job into an empty collection (medians of 3 alternating rounds; the
  baseline, at 2.5 minutes a round, runs one). Goal <= 1.5.
- `bytes_written_small_commit_large_over_empty`: bytes of every object written to the bucket during
  that job (listed with boto3 by LastModified), same ratio. Goal <= 1.5.
- `replica_visibility_p50_ms`: a job commits through replica A; time until a search on replica B
  returns the new document (B polls every 0.5 s). Goal <= 2000.
- `query_p99_during_merge_over_idle`: hybrid Search p99 on replica A while it merges a tier of 8
  neighbouring segments over the p99 when idle, idle and merge windows interleaved (see
  bench/_scale/merge.py). The merge runs in the retriever's merge process. Goal <= 2.0.
- `baseline_*`: the same measurements on the code before segments (commit BASE below), run as its
  own retriever process from a `git worktree` of that commit, against the same storage service and
  embedder, in the same run. It has no replicas following CURRENT and no merges, so those two keys
  are null there (a second replica of that code sees nothing until it restarts).
- `--only merge` runs just the merge measurement and updates those keys of the JSON (a few minutes).
- `failover_job_lost_chunks` / `failover_duplicated_chunks`: `bench/scale_failover.py` (two
  retriever processes, SIGKILL of the lease holder mid-job) run as its own process while the
  baseline is measured (it counts chunks, so the load it adds changes no figure of its own), and
  awaited before the merge measurement starts.

Sized to finish in under 10 minutes on a loaded 2-core machine: one shared set of services, the
two 100k-chunk collections written at once, the failover beside the baseline, and two merges.
`phase_s` in the JSON gives each step's seconds and `load_avg_1m_before`/`_after` the machine's
load.

The 100k-chunk collections are written directly as each code path stores them (no 100k texts
through the model, which takes hours on this CPU): texts are three SciFact sentences each, vectors
synthetic clustered unit vectors of the model's dimension. Both servers run with
`DDNRAG_RETRIEVER_HNSW_THRESHOLD=1000000000` (exact dense search): the old path would otherwise
rebuild a 100k HNSW graph on every commit, minutes per measurement on this machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench._scale import merge as scale_merge  # noqa: E402
from bench._scale.stack import Bench, log  # noqa: E402
from clients.retriever import RetrieverClient  # noqa: E402
from clients.storage import StorageClient  # noqa: E402

OUT = ROOT / "bench" / "results" / "retriever_scale.json"
# ../shared/data/scifact beside the checkout (one level further up from a worktree under wt/).
SCIFACT = next(
    (p / "shared" / "data" / "scifact" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()),
    ROOT.parent / "shared" / "data" / "scifact",
)
BASE = "4f265ef"  # main before the segmented index: the full-rewrite commit path
N_LARGE = 100_000
WRITE_OLD = """
import asyncio, os, sys, numpy as np
sys.path.insert(0, os.getcwd())
sys.path.insert(1, os.environ["BENCH_DIR"])
from clients.storage import StorageClient
from services.retriever import segments
from services.retriever.adapters import StorageStore
from services.retriever.index import ChunkRecord
from retriever_scale import corpus_rows
async def main():
    rows, vecs = corpus_rows(int(os.environ["N"]), int(os.environ["DIM"]))
    recs = [ChunkRecord(*r) for r in rows]
    docs = {r[1]: segments.DocumentInfo(r[1], r[2], "", 0, "", 10) for r in rows[::10]}
    client = StorageClient(os.environ["STORAGE_ADDR"], timeout_s=300)
    print(await segments.write_snapshot(StorageStore(client), os.environ["COLL"], segments.Snapshot(recs, vecs, docs)))
    await client.close()
asyncio.run(main())
"""


def scifact(n: int | None = None) -> list[tuple[str, str]]:
    out = []
    with (SCIFACT / "corpus.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            out.append((str(d["_id"]), f"{d['title']}\n\n{d['text']}"))
            if n and len(out) >= n:
                break
    return out


def corpus_rows(n: int, dim: int, seed: int = 7) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    """`n` chunk rows (chunk_id, document_id, name, position, text) of three SciFact sentences each,
    ten per document, and clustered unit vectors: the same on every code path."""
    sentences = [s.strip() + "." for _, t in scifact(3000) for s in t.replace("\n\n", " ").split(". ") if len(s) > 40]
    rows = []
    for i in range(n):
        text = " ".join(sentences[(i * 3 + j) % len(sentences)] for j in range(3))
        doc = f"d{i // 10}"
        rows.append((f"c{i:07d}", doc, f"{doc}.txt", i % 10, text))
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(500, dim)).astype(np.float32)
    x = centers[rng.integers(0, 500, n)] + 0.6 / np.sqrt(dim) * rng.normal(size=(n, dim)).astype(np.float32)
    return rows, x / np.linalg.norm(x, axis=1, keepdims=True)


def small_docs(tag: str, n: int = 10, offset: int = 0) -> list[tuple[str, str]]:
    return [(f"{tag}{i}", text[:600]) for i, (_, text) in enumerate(scifact(offset + n)[offset:])]


async def commit_pair(b: Bench, client: RetrieverClient, suffix: str, rounds: int) -> dict[str, Any]:
    """The 10-document job into a new empty collection and into the 100k-chunk one, alternating,
    `rounds` times (medians; each round's documents are new)."""
    out: dict[str, list[float]] = {"t_empty": [], "t_large": [], "b_empty": [], "b_large": []}
    for i in range(rounds):
        t_e, b_e, _ = await b.ingest(client, f"empty{suffix}{i}", small_docs(f"e{i}_", offset=10 * i))
        t_l, b_l, _ = await b.ingest(client, f"large{suffix}", small_docs(f"l{i}_", offset=10 * i))
        log(f"commit{suffix or ' (segments)'}: empty {t_e:.2f}s {b_e} B, large {t_l:.2f}s {b_l} B")
        for k, v in (("t_empty", t_e), ("t_large", t_l), ("b_empty", b_e), ("b_large", b_l)):
            out[k].append(v)
    return {k: statistics.median(v) for k, v in out.items()} | {"rounds": out}


CPU_WHO = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
GIT_WORKTREE = ["git", "-C", str(ROOT), "worktree"]


async def write_old(b: Bench, tree: Path) -> None:
    """The baseline's 100k-chunk collection, written by the old code's own writer (a process)."""
    await asyncio.to_thread(
        subprocess.run, [*GIT_WORKTREE, "add", "--detach", str(tree), BASE], check=True, capture_output=True
    )
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_DIR": str(ROOT / "bench"), "N": str(N_LARGE)}
    env.update({"DIM": str(b.dim), "STORAGE_ADDR": b.storage_addr, "COLL": "large_old"})
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", WRITE_OLD], cwd=tree, env=env, check=True)
    log(f"old path: wrote the {N_LARGE}-chunk collection in {time.perf_counter() - t0:.0f}s")


async def old_path(b: Bench, tree: Path) -> dict[str, Any]:
    proc, client = await b.retriever(tree, "old")
    try:
        r = await commit_pair(b, client, "_old", 1)  # a minute a round: one
    finally:
        await client.close()
        await b.stop_proc(proc)
    for coll in ("large_old", "empty_old"):
        await b.storage.delete((), prefix=f"index/{coll}/")
    return r


class Phases:
    """Seconds of each step, for the JSON (`phase_s`)."""

    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.s: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.s[name] = round(now - self.last, 1)
        self.last = now
        log(f"phase {name}: {self.s[name]} s (total {now - self.t0:.0f} s)")


# Writes the 100k-chunk collection and the merge measurement's collections with the current code.
WRITE_NEW = """
import asyncio, os, sys
sys.path.insert(0, os.getcwd())
from bench.retriever_scale import write_new_here
asyncio.run(write_new_here(os.environ["STORAGE_ADDR"], int(os.environ["DIM"])))
"""


async def write_new(b: Bench) -> None:
    """In a process of its own: analysing 100k chunks here would hold the GIL the storage service
    (in this process) needs for the baseline's writes, which run at the same time."""
    env = {**os.environ, "DIM": str(b.dim), "STORAGE_ADDR": b.storage_addr}
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", WRITE_NEW], cwd=ROOT, env=env, check=True)


async def write_new_here(storage_addr: str, dim: int) -> None:
    from types import SimpleNamespace

    from services.retriever.adapters import StorageStore
    from services.retriever.index import ChunkRecord, DocumentInfo
    from services.retriever.live import write_collection

    client = StorageClient(storage_addr, timeout_s=300)
    try:
        t0 = time.perf_counter()
        rows, vecs = corpus_rows(N_LARGE, dim)
        recs = [ChunkRecord(*r) for r in rows]
        docs = {r[1]: DocumentInfo(r[1], r[2], "", 0, "", 10) for r in rows[::10]}
        await write_collection(StorageStore(client), "large", docs, recs, vecs)
        log(f"new path: wrote the {N_LARGE}-chunk collection in {time.perf_counter() - t0:.0f}s")
        await scale_merge.write_collections(SimpleNamespace(storage=client), recs, vecs, docs)
    finally:
        await client.close()


async def new_path(b: Bench, ph: Phases, failover: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
    # A starts first and takes the ingestion lease, so A runs every job and commits; B only follows.
    _, a = await b.retriever(ROOT, "replica_a")
    for _ in range(100):
        if b"ingestion lease acquired" in (b.work / "replica_a.log").read_bytes():
            break
        await asyncio.sleep(0.1)
    else:
        raise RuntimeError("replica A did not take the ingestion lease")
    _, bcl = await b.retriever(ROOT, "replica_b")
    try:
        r = await commit_pair(b, a, "", 3)
        # Replica visibility: commit through A, search through B until the document shows.
        vis = []
        for i in range(8):
            doc = small_docs(f"v{i}_", 1, offset=40 + i)
            await b.ingest(a, "visible", doc)
            t0 = time.perf_counter()
            while True:
                try:
                    resp = await bcl.search("visible", doc[0][1][:200], top_k=3, no_cache=True)
                    if any(c.document_id == doc[0][0] for c in resp.chunks):
                        break
                except Exception:  # noqa: BLE001 - B has not loaded the collection yet
                    pass
                await asyncio.sleep(0.02)
            vis.append((time.perf_counter() - t0) * 1000)
        log(f"replica visibility ms: {[round(v) for v in vis]}")
        r["visibility_ms"] = vis
        ph.done("new_commits_and_visibility")
        r["failover"] = await failover  # finished before the merge is measured: no load of its own there
        ph.done("failover_wait")
        r.update(await scale_merge.measure(b, a, SCIFACT, small_docs))
        ph.done("merge")
    finally:
        await a.close()
        await bcl.close()
    return r


async def run_failover(work: Path) -> dict[str, Any]:
    """bench/scale_failover.py as its own process (it writes bench/results/scale_failover.json too)."""
    t0 = time.time()
    out = await asyncio.to_thread(open, work / "failover.log", "wb")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / "scale_failover.py"), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    finally:
        out.close()
    try:
        rc = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out_json = ROOT / "bench" / "results" / "scale_failover.json"
    if not out_json.exists() or out_json.stat().st_mtime < t0:
        raise RuntimeError(f"scale_failover.py exited {rc}: {(work / 'failover.log').read_text()[-3000:]}")
    log(f"failover: exited {rc}")
    return json.loads(out_json.read_text())


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="retriever_scale_"))
    b = Bench(work)
    t_all = time.perf_counter()
    if sys.argv[1:3] == ["--only", "merge"]:
        try:
            await b.start()
            m = await scale_merge.only(b, ROOT, corpus_rows, SCIFACT, small_docs)
        finally:
            await b.stop()
            shutil.rmtree(work, ignore_errors=True)
        result = json.loads(OUT.read_text()) if OUT.exists() else {}
        result.update(
            scale_merge.keys(m) | {"merge_measured_in_a_separate_run_s": round(time.perf_counter() - t_all, 1)}
        )
        OUT.write_text(json.dumps(result, indent=2) + "\n")
        log(json.dumps(scale_merge.keys(m), indent=2))
        return
    load_before = round(os.getloadavg()[0], 2)
    ph = Phases()
    tree = work / "base"
    failover: asyncio.Task[dict[str, Any]] | None = None
    try:
        await b.start()
        ph.done("start")
        failover = asyncio.create_task(run_failover(work))
        await asyncio.gather(write_old(b, tree), write_new(b))
        ph.done("write_collections")
        old = await old_path(b, tree)
        ph.done("baseline")
        new = await new_path(b, ph, failover)
    finally:
        if failover is not None and not failover.done():
            failover.cancel()
            await asyncio.gather(failover, return_exceptions=True)
        await b.stop()
        await asyncio.to_thread(subprocess.run, [*GIT_WORKTREE, "remove", "--force", str(tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        "small_commit_large_over_empty": round(new["t_large"] / new["t_empty"], 3),
        "bytes_written_small_commit_large_over_empty": round(new["b_large"] / new["b_empty"], 3),
        "replica_visibility_p50_ms": round(statistics.median(new["visibility_ms"]), 1),
        "baseline_small_commit_large_over_empty": round(old["t_large"] / old["t_empty"], 3),
        "baseline_bytes_written_small_commit_large_over_empty": round(old["b_large"] / old["b_empty"], 3),
        "baseline_replica_visibility_p50_ms": None,
        "baseline_query_p99_during_merge_over_idle": None,
        "small_commit_s": {"empty": round(new["t_empty"], 3), "large": round(new["t_large"], 3)},
        "small_commit_rounds": new["rounds"],
        "small_commit_bytes": {"empty": new["b_empty"], "large": new["b_large"]},
        "baseline_small_commit_s": {"empty": round(old["t_empty"], 3), "large": round(old["t_large"], 3)},
        "baseline_small_commit_bytes": {"empty": old["b_empty"], "large": old["b_large"]},
        "replica_visibility_ms": [round(v, 1) for v in new["visibility_ms"]],
        **scale_merge.keys(new),
        "large_collection_chunks": N_LARGE,
        "baseline_commit": BASE,
        "notes": (
            "baseline_* ran the code at BASE as its own retriever process (git worktree) against the same storage"
            " and embedder; that code has no replica following and no merges (null). Exact dense search on both"
            " sides (HNSW threshold 1e9). 100k chunks written directly with synthetic vectors. The failover"
            " measurement (bench/scale_failover.py, its own process and services) ran beside the baseline."
        ),
        **{k: v for k, v in new["failover"].items() if k.startswith("failover_")},
        "phase_s": ph.s,
        "total_s": round(time.perf_counter() - t_all, 1),
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
        # CPU seconds of this process and the processes it waited for (writers, failover, retrievers;
        # not the retrievers' merge processes): on two idle cores the run needs at least half of it.
        "cpu_s": round(sum(getattr(resource.getrusage(w), f) for w in CPU_WHO for f in ("ru_utime", "ru_stime")), 1),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    log(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
