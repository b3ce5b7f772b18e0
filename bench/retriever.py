"""Retriever benchmark: `.venv/bin/python bench/retriever.py` -> bench/results/retriever.json.

Starts what it needs in a fresh temporary directory, reusing nothing from earlier runs: SeaweedFS
and the storage, embedder and retriever services, each its own process as `rag up` runs them
(ports on loopback, probed); this process is only their client. It measures, side by side in one
run:

- `ingest_over_embed`: end-to-end ingestion chunks/s (Ingest RPC: fetch, parse, chunk, embed,
  write every chunk to storage, commit, build and persist the index) over the raw embedder's
  chunks/s on the same texts: exactly what a job sends, in its order (`embed_plan.planned_texts`:
  the chunks and, with sentence vectors on, each batch's distinct whole sentences, which ride in
  the same requests), in Embed RPCs of the job's batch size and concurrency. No embedding cache.
  Three rounds, each side back to back in alternating order; the figure is the median of the
  rounds' ratios. Each round also records the job's share of wall time per stage and the
  embedder's idle time inside the job. Goal >= 0.85.
- `query_over_parts`: Search p50 on a 100k-chunk collection over the p50 of the sum of the raw
  parts called directly: query Embed RPC + BM25 scoring + dense search (on the same index, built
  in this process from the segments it wrote) + a BatchGet of the top-k chunk objects through the
  storage service; query by query, in alternating order. Goal <= 1.1. The 100k chunk texts are
  SciFact sentences; their vectors are synthetic clustered unit vectors (embedding 100k chunks
  takes hours on this CPU; a vector's values do not change search cost). The collection is four
  commits of 25k chunks (one segment each, below the HNSW threshold, so no start builds a graph),
  and the store holds the chunk objects the measured searches fetch (100k small PUTs take minutes
  here; see `write_hit_objects`).
- `hnsw_recall_at_10` / `hnsw_p50_ms`: the retriever's own `DenseIndex` in HNSW mode (M=32,
  efConstruction=80, efSearch=256) on 50k synthetic clustered vectors (2000 clusters whose noise
  overlaps them: not separable, unlike an easy blob benchmark), built in this run, recall@10
  against exact inner-product search, and single-query p50. Goal recall >= 0.95. (300k took
  1,028 s to build at load 27-42 and 1M 226 s on a quiet machine: `--hnsw-n` for those sizes.)

The default sizes fit the 10-minute rule on this shared 2-core machine (the JSON's `sizing` says
how each part was sized); the machine's load average (before and after, and per ingestion round)
and the CPU's vector ISA flags are recorded beside the figures.

Flags: --only ingest,query,hnsw  --chunks N (100000)  --ingest-docs N (16)  --hnsw-n N (50000)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench._retriever.hnsw import Hnsw, bench_hnsw, centers_of, p50, sample  # noqa: E402
from bench._retriever.stack import Stack, log  # noqa: E402
from clients.retriever import RetrieverClient  # noqa: E402
from embedding.packaged import packaged_model_dir  # noqa: E402
from kernel.timing import Timer  # noqa: E402
from services.retriever.adapters import EmbedderEncoder, StorageStore  # noqa: E402
from services.retriever.chunking import Chunker, chunk_id  # noqa: E402
from services.retriever.core import chunk_key  # noqa: E402
from services.retriever.dense import single_threaded_blas  # noqa: E402
from services.retriever.embed_plan import planned_texts  # noqa: E402
from services.retriever.fusion import topk  # noqa: E402
from services.retriever.index import ChunkRecord  # noqa: E402
from services.retriever.lexical import Analyzer  # noqa: E402
from services.retriever.live import IndexOptions, LiveIndex  # noqa: E402
from services.retriever.merge import MergePolicy  # noqa: E402
from services.retriever.pipeline import embedded_texts  # noqa: E402
from services.retriever.search import Defaults, SearchParams, rank, validate  # noqa: E402
from services.retriever.segments import DocumentInfo  # noqa: E402

OUT = ROOT / "bench" / "results" / "retriever.json"
SCIFACT = Path(os.environ.get("DDNRAG_SCIFACT_DIR", "/work/shared/data/scifact"))


def cpu_info(field: str) -> str:
    """A field of /proc/cpuinfo's first processor ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def isa_flags() -> list[str]:
    """The CPU's vector ISA flags that decide inference speed (AVX2/AVX-512/VNNI/bf16/AMX)."""
    flags = cpu_info("flags").split()
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or "vnni" in f or "bf16" in f)


def model_dim() -> int:
    """The width of the packaged model's vectors (what the bench's embedder serves)."""
    return int(json.loads((packaged_model_dir() / "config.json").read_text())["hidden_size"])


def scifact_docs(limit: int | None = None) -> list[tuple[str, str]]:
    out = []
    with (SCIFACT / "corpus.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            out.append((str(d["_id"]), f"{d['title']}\n\n{d['text']}"))
            if limit and len(out) >= limit:
                break
    return out


def scifact_queries(n: int) -> list[str]:
    with (SCIFACT / "queries_test.jsonl").open() as f:
        return [json.loads(line)["text"] for line in f][:n]


# The query collection is written as commits of this many chunks, one segment each, as ingestion
# jobs would leave it: below the retriever's HNSW threshold (50k), so every load keeps exact dense
# search instead of building a 100k x 384 HNSW graph (minutes on this CPU, on every start); fewer
# than the merge factor (8) of them, so the service merges nothing while it is measured.
SEGMENT_CHUNKS = 25_000


class Corpus:
    """The query collection as this process built it: the index the raw parts run on (the same
    segments the retriever loads from the store) and each chunk object's key and text."""

    def __init__(self, live: LiveIndex, texts: dict[str, str]) -> None:
        self.live, self.texts = live, texts


async def write_corpus(stack: Stack, collection: str, n: int, dim: int) -> Corpus:
    """A 100k-chunk collection written as the retriever would (segments + manifest + CURRENT), so
    the retriever loads and verifies it at start-up. The chunk objects are written later, only
    those the measured searches fetch (`write_hit_objects`)."""
    store = StorageStore(stack.storage)
    sentences = [s.strip() + "." for _, t in scifact_docs() for s in t.replace("\n\n", " ").split(". ") if len(s) > 40]
    recs = []
    for i in range(n):
        text = " ".join(sentences[(i * 3 + j) % len(sentences)] for j in range(3))
        doc = f"d{i // 10}"
        recs.append(ChunkRecord(chunk_id(collection, doc, i % 10, text), doc, f"{doc}.txt", i % 10, text))
    vecs = sample(centers_of(500, dim, seed=7), n, seed=8)
    cfg = stack.rcfg
    opts = IndexOptions(
        hnsw_threshold=cfg.hnsw_threshold, bm25_params=(cfg.bm25_k1, cfg.bm25_b), merge=MergePolicy(factor=0)
    )
    live = LiveIndex(collection, store, Analyzer(), opts)
    t0 = time.perf_counter()
    for a in range(0, n, SEGMENT_CHUNKS):  # whole documents (10 chunks each) per commit
        part = recs[a : a + SEGMENT_CHUNKS]
        docs = {r.document_id: DocumentInfo(r.document_id, r.document_name, "", 0, "", 10) for r in part[::10]}
        await live.commit(docs, part, vecs[a : a + SEGMENT_CHUNKS])
    log(f"query: wrote index version {live.version} of {n} chunks in {time.perf_counter() - t0:.0f}s")
    return Corpus(live, {chunk_key(collection, r.chunk_id): r.text for r in recs})


async def write_hit_objects(stack: Stack, collection: str, corpus: Corpus, queries: list[str], top_k: int) -> int:
    """Writes the chunk objects the searches for `queries` fetch: their top-k, ranked by the
    retriever's own ranking code (`search.rank`) on the same index. SeaweedFS takes 100k small
    PUTs at 200-1000/s on this machine (minutes), and a GET's cost does not depend on how many
    other keys the bucket holds, so the 100k-chunk index is complete and the store holds the
    objects read. Every measured search checks that each of its hits' objects was there."""
    index, encoder, cfg = corpus.live.view, EmbedderEncoder(stack.embedder), stack.rcfg
    defaults = Defaults(cfg.fusion, cfg.rrf_k, cfg.dense_weight, cfg.candidates, cfg.max_top_k)  # as the service's
    params = validate(queries[0], SearchParams(top_k=top_k, no_cache=True, no_fetch=True), defaults)
    keys: set[str] = set()
    for q in queries:
        hits, _ = await rank(index, encoder, q, params, max(stack.rcfg.candidates, top_k), Timer())
        keys.update(chunk_key(collection, index.record(h.row).chunk_id) for h in hits)
    items = [(k, corpus.texts[k].encode()) for k in sorted(keys)]
    bad = [o for o in await StorageStore(stack.storage).put_many(items) if not o.ok]
    if bad:
        raise OSError(bad[0].error)
    return len(keys)


async def bench_query(
    stack: Stack, client: RetrieverClient, collection: str, corpus: Corpus, queries: list[str], top_k: int = 5
):
    index = corpus.live.view
    kinds = "+".join(sorted({s.dense.kind for s in index.segments}))
    log(f"query: {len(index)} chunks in {len(index.segments)} segments, dense {kinds}, load {stack.load_s:.0f}s")
    written = await write_hit_objects(stack, collection, corpus, queries, top_k)
    log(f"query: wrote the {written} chunk objects the {len(queries)} queries fetch")
    missing = 0
    for q in queries[:5]:  # warm-up
        await client.search(collection, q, top_k=top_k, no_cache=True)
        await stack.embedder.embed([q])
    e2e, parts, stages = [], [], {"embed": [], "bm25": [], "dense": [], "fetch": []}
    server: dict[str, list[float]] = {"total": []}
    cand = stack.rcfg.candidates
    blas = single_threaded_blas()  # the raw dense part with the BLAS threads the retriever serves with

    async def search(q: str) -> list[str]:
        t = time.perf_counter()
        resp = await client.search(collection, q, top_k=top_k, no_cache=True)
        e2e.append(time.perf_counter() - t)
        server["total"].append(resp.timings.total_ns / 1e9)
        for st in resp.timings.stages:
            server.setdefault(st.name, []).append(st.duration_ns / 1e9)
        nonlocal missing
        missing += sum(c.status.code != 0 or not c.text for c in resp.chunks)
        return [c.object_key for c in resp.chunks]

    async def raw_parts(q: str, keys: list[str]) -> None:
        t = time.perf_counter()
        await stack.embedder.embed([q])
        t_embed = time.perf_counter() - t
        qv = (await stack.embedder.embed_array([q]))[0]
        t = time.perf_counter()
        topk(index.bm25_all(q), cand)
        t_bm25 = time.perf_counter() - t
        t = time.perf_counter()
        index.dense_search(qv, cand, None)
        t_dense = time.perf_counter() - t
        t = time.perf_counter()
        await stack.storage.batch_get(keys)
        t_fetch = time.perf_counter() - t
        parts.append(t_embed + t_bm25 + t_dense + t_fetch)
        for k, v in zip(stages, (t_embed, t_bm25, t_dense, t_fetch), strict=True):
            stages[k].append(v)

    # Side by side, query by query, in alternating order (the search first, then the raw parts
    # first), so neither side always runs with the other's data warm in the CPU caches. The raw
    # fetch reads the top-k objects of the latest search (any k chunk objects cost the same).
    keys = await search(queries[0])
    if missing:
        raise RuntimeError(f"{missing} hits of the first search had no chunk object: the probe missed them")
    e2e.clear()
    server = {"total": []}
    for i, q in enumerate(queries):
        if i % 2 == 0:
            keys = await search(q)
            await raw_parts(q, keys)
        else:
            await raw_parts(q, keys)
            keys = await search(q)
    if blas is not None:
        blas.restore_original_limits()
    if missing:
        raise RuntimeError(f"{missing} hits of the measured searches had no chunk object: the probe missed them")
    return {
        "query_over_parts": round(p50(e2e) / p50(parts), 3),
        "query_p50_ms": round(p50(e2e) * 1000, 2),
        "query_parts_p50_ms": round(p50(parts) * 1000, 2),
        "query_part_p50_ms": {k: round(p50(v) * 1000, 3) for k, v in stages.items()},
        "query_server_stage_p50_ms": {k: round(p50(v) * 1000, 3) for k, v in server.items()},
        "query_chunks": len(index),
        "query_segments": len(index.segments),
        "query_chunk_objects_written": written,
        "query_dense_index": kinds,
        "query_top_k": top_k,
        "query_count": len(queries),
        "index_load_s": round(stack.load_s, 1),
    }


STAGES = ("fetch", "parse", "chunk", "embed", "write", "index")


async def bench_ingest(
    stack: Stack, client: RetrieverClient, docs: list[tuple[str, str]], rounds: int = 3
) -> dict[str, object]:
    coll = "benchingest"
    cfg = stack.rcfg
    chunker = Chunker(cfg.chunk_size_tokens, cfg.chunk_overlap_tokens)
    per_doc = [embedded_texts(chunker.chunks(coll, d, text)) for d, text in docs]
    n_chunks = sum(len(c) for c in per_doc)
    # Exactly what the job sends, in its order: the chunks and, with sentence vectors on, each
    # batch's distinct whole sentences, in the same requests (services/retriever/embed_plan.py).
    texts = planned_texts(per_doc, write_batch=cfg.write_batch, sentence_vectors=cfg.sentence_vectors)
    log(f"ingest: {len(docs)} documents, {n_chunks} chunks, {len(texts)} texts to embed")
    await stack.embedder.embed(texts[:64])  # warm-up, so neither side pays the first call
    sem = asyncio.Semaphore(cfg.embed_concurrency)

    async def embed(part: list[str]) -> None:
        async with sem:
            await stack.embedder.embed(part)

    async def raw() -> float:
        b = cfg.embed_batch
        t0 = time.perf_counter()
        await asyncio.gather(*(embed(texts[i : i + b]) for i in range(0, len(texts), b)))
        return n_chunks / (time.perf_counter() - t0)  # chunks/s, the same unit as the job's

    async def end_to_end() -> tuple[float, Any]:
        if coll in [c.name for c in await client.list_collections()]:
            await client.delete_collection(coll)  # the same full ingestion every round
        # (Clearing a collection deletes its raw documents too: upload them again, untimed.)
        await stack.storage.batch_put([(f"docs/{coll}/{d}/{d}.txt", t.encode()) for d, t in docs])
        last = None
        t0 = time.perf_counter()
        async for ev in client.ingest(coll, [f"docs/{coll}/{d}/{d}.txt" for d, _ in docs]):
            last = ev
        rate = n_chunks / (time.perf_counter() - t0)
        assert last is not None and last.job.chunks_done == n_chunks, last
        return rate, last.job

    # The machine is shared: each round measures both sides back to back, in alternating order
    # (raw first, then end to end first, ...), so load that comes and goes hits both; the figure
    # is the median of the rounds' ratios.
    rounds_out: list[dict[str, Any]] = []
    for r in range(rounds):
        if r % 2 == 0:
            raw_rate = await raw()
            e2e_rate, job = await end_to_end()
        else:
            e2e_rate, job = await end_to_end()
            raw_rate = await raw()
        run_s = job.run_ns / 1e9
        rounds_out.append(
            {
                "ratio": round(e2e_rate / raw_rate, 3),
                "end_to_end": round(e2e_rate, 1),
                "raw": round(raw_rate, 1),
                "job_run_s": round(run_s, 2),
                "embed_idle_s": round(job.embed_idle_ns / 1e9, 3),
                "stage_share": {k: round(getattr(job, f"{k}_ns") / max(1, job.run_ns), 3) for k in STAGES},
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "write_ops_per_s": round(job.backends[0].write_ops_per_s, 1),
                "write_p50_ms": round(job.backends[0].write_p50_ns / 1e6, 2),
            }
        )
        log(f"ingest round {r + 1}: {rounds_out[-1]}")
    mid = sorted(rounds_out, key=lambda x: x["ratio"])[len(rounds_out) // 2]
    return {
        "ingest_over_embed": mid["ratio"],
        "ingest_chunks_per_s": mid["end_to_end"],
        "embed_chunks_per_s": mid["raw"],
        "ingest_stage_share": mid["stage_share"],
        "ingest_embed_idle_share": round(mid["embed_idle_s"] / max(1e-9, mid["job_run_s"]), 3),
        "ingest_rounds": rounds_out,
        "ingest_chunks": n_chunks,
        "ingest_embedded_texts": len(texts),
        "ingest_sentence_vectors": cfg.sentence_vectors,
        "ingest_documents": len(docs),
        "ingest_write_ops_per_s": mid["write_ops_per_s"],
        "ingest_write_p50_ms": mid["write_p50_ms"],
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    only = set(args.only.split(","))
    result: dict[str, object] = {}
    # The HNSW graph builds (FAISS, in a thread) while the stack starts and the query collection
    # is written; nothing is measured until it is built, and its searches run alone.
    graph = asyncio.ensure_future(asyncio.to_thread(Hnsw, args.hnsw_n, args.hnsw_dim)) if "hnsw" in only else None

    async def hnsw_measure() -> None:
        if graph is not None:
            result.update(bench_hnsw(await graph))
            log(f"hnsw: {result}")

    if not only & {"ingest", "query"}:
        await hnsw_measure()
    else:
        work = Path(tempfile.mkdtemp(prefix="ddnrag-bench-retriever-"))
        stack = Stack()
        try:
            # The query collection is written while the embedder exports and loads its model: its
            # vectors are synthetic, of the packaged model's width (checked once the embedder is up).
            await stack.start(work, wait_embedder=False)
            ready = asyncio.ensure_future(stack.embedder_ready())
            try:
                if "query" in only:
                    corpus = await write_corpus(stack, "bench100k", args.chunks, model_dim())
            finally:
                await ready
            if "query" in only and stack.info.dimension != model_dim():
                raise RuntimeError(f"the embedder serves {stack.info.dimension}-dim vectors, not {model_dim()}")
            client = await stack.start_retriever()
            await hnsw_measure()
            if "ingest" in only:
                result.update(await bench_ingest(stack, client, scifact_docs(args.ingest_docs), args.rounds))
            if "query" in only:
                result.update(await bench_query(stack, client, "bench100k", corpus, scifact_queries(args.queries)))
            result["embedder_backend"] = f"{stack.info.backend}/{stack.info.dtype}/{stack.info.device}"
            await client.close()
        finally:
            await stack.stop()
            shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="ingest,query,hnsw")
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--ingest-docs", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="alternating raw/end-to-end ingestion rounds")
    ap.add_argument("--hnsw-n", type=int, default=50_000)
    ap.add_argument("--hnsw-dim", type=int, default=64)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    # SIGTERM ends the run as Ctrl-C does, so the child processes are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = asyncio.run(main_async(args))
    result.update(
        {
            "goals": {"query_over_parts": "<= 1.1", "ingest_over_embed": ">= 0.85", "hnsw_recall_at_10": ">= 0.95"},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "cpu_model": cpu_info("model name"),
            "cpu_isa_flags": isa_flags(),
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
            "sizing": {
                "ingest": f"{args.ingest_docs} SciFact documents per job, {args.rounds} rounds of both sides: "
                "sized so the run fits 10 minutes on a loaded 2-core machine (a larger job amortises "
                "the job's fixed costs, start and index commit, over more embedding)",
                "query": f"{args.chunks} chunks in commits of {SEGMENT_CHUNKS} (one segment each, exact dense "
                "search), written while the embedder starts; vectors synthetic; only the chunk objects "
                "the measured searches fetch are written (query_chunk_objects_written)",
                "hnsw": f"{args.hnsw_n} vectors, built in a thread while the stack starts (so hnsw_build_s "
                "shares the CPU with it); 300k took 1,028 s to build at load 27-42, 1M 226 s quiet",
            },
            "command": " ".join(["bench/retriever.py", *sys.argv[1:]]),
            "seconds": round(time.perf_counter() - t0, 1),
            "unix_time": int(time.time()),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # A partial run (--only) updates its keys in the file; a full run replaces the file, so no
    # figure from an earlier run stays beside this run's.
    full = set(args.only.split(",")) >= {"ingest", "query", "hnsw"}
    previous = json.loads(args.out.read_text()) if args.out.exists() and not full else {}
    args.out.write_text(json.dumps({**previous, **result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
