"""Retriever benchmark: `.venv/bin/python bench/retriever.py` -> bench/results/retriever.json.

Starts what it needs (SeaweedFS, the storage and embedder services, the retriever; every port on
loopback, chosen by the OS or probed) and measures, side by side in one run:

- `ingest_over_embed`: end-to-end ingestion chunks/s (Ingest RPC: fetch, parse, chunk, embed,
  write every chunk to storage, commit, build and persist the index) over the raw embedder's
  chunks/s on the same chunk texts (Embed RPCs with the same batch size and concurrency).
  The embedder's cache is purged before each side. Goal >= 0.85.
- `query_over_parts`: Search p50 on a 100k-chunk collection over the p50 of the sum of the raw
  parts called directly: query Embed RPC + BM25 scoring + dense search (in process, on the same
  index objects) + a BatchGet of the top-k chunk objects through the storage service. Goal <= 1.3.
  The 100k chunk texts are SciFact sentences; their vectors are synthetic clustered unit vectors
  (embedding 100k chunks takes hours on this CPU; a vector's values do not change search cost).
- `hnsw_recall_at_10` / `hnsw_p50_ms`: the retriever's own `DenseIndex` in HNSW mode (M=32,
  efConstruction=80, efSearch=256) on 1M synthetic clustered vectors (2000 clusters whose
  noise overlaps them: not separable, unlike an easy blob benchmark), recall@10 against exact
  inner-product search, and single-query p50. Goal recall >= 0.95.

Flags: --only ingest,query,hnsw  --chunks N (100000)  --hnsw-n N (1000000)  --hnsw-dim D (64)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from cli.seaweed import SeaweedPorts, SeaweedProcess, port_in_use  # noqa: E402
from clients.embedder import EmbedderClient  # noqa: E402
from clients.retriever import RetrieverClient  # noqa: E402
from clients.storage import StorageClient  # noqa: E402
from kernel.config import load_env  # noqa: E402
from services.retriever import segments  # noqa: E402
from services.retriever.adapters import StorageStore  # noqa: E402
from services.retriever.chunking import Chunker, chunk_id  # noqa: E402
from services.retriever.config import RetrieverConfig  # noqa: E402
from services.retriever.fusion import topk  # noqa: E402
from services.retriever.index import ChunkRecord, DenseIndex, DocumentInfo  # noqa: E402
from services.retriever.live import write_collection  # noqa: E402

OUT = ROOT / "bench" / "results" / "retriever.json"
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ddnrag" / "bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def p50(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def centers_of(k: int, dim: int, seed: int) -> np.ndarray:
    c = np.random.default_rng(seed).normal(size=(k, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def sample(centers: np.ndarray, n: int, seed: int, noise: float = 0.6) -> np.ndarray:
    """`n` unit vectors scattered around random `centers` (clustered, like real embeddings)."""
    rng = np.random.default_rng(seed)
    k, dim = centers.shape
    out = np.empty((n, dim), np.float32)
    step = 100_000
    for i in range(0, n, step):
        m = min(step, n - i)
        x = centers[rng.integers(0, k, m)] + noise / np.sqrt(dim) * rng.normal(size=(m, dim)).astype(np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bench_hnsw(n: int, dim: int, queries: int = 200) -> dict[str, object]:
    import faiss

    log(f"hnsw: {n} clustered vectors, dim {dim}")
    centers = centers_of(2000, dim, seed=1)
    data = sample(centers, n, seed=2, noise=1.25)
    qs = sample(centers, queries, seed=3, noise=1.25)
    # The 1M-vector graph takes minutes to build on a shared 2-core machine: it is kept on disk
    # (keyed by every parameter) and reused by later runs; `hnsw_build_s` is the measured build.
    cached = CACHE / f"hnsw-{n}-{dim}-2000c-n1.25-M32-efc80.faiss"
    meta = cached.with_suffix(".json")
    if cached.exists() and meta.exists():
        index = DenseIndex(data[:0], hnsw_threshold=0)
        index.vectors, index.kind, index.index = data, "hnsw", faiss.read_index(str(cached))
        build_s = json.loads(meta.read_text())["build_s"]
        log(f"hnsw: reusing the graph built earlier in {build_s:.0f}s")
    else:
        t0 = time.perf_counter()
        index = DenseIndex(data, hnsw_threshold=0)
        build_s = time.perf_counter() - t0
        log(f"hnsw: built in {build_s:.0f}s")
        cached.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index.index, str(cached))
        meta.write_text(json.dumps({"build_s": build_s}))
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, truth = exact.search(qs, 10)
    lat, rec = [], []
    for i, q in enumerate(qs):
        t = time.perf_counter()
        _, ids = index.search(q, 10)
        lat.append(time.perf_counter() - t)
        rec.append(len(set(ids.tolist()) & set(truth[i].tolist())) / 10)
    return {
        "hnsw_recall_at_10": round(float(np.mean(rec)), 4),
        "hnsw_p50_ms": round(p50(lat) * 1000, 3),
        "hnsw_vectors": n,
        "hnsw_dim": dim,
        "hnsw_params": {"M": 32, "efConstruction": 80, "efSearch": index.ef_search, "cluster_noise": 1.25},
        "hnsw_build_s": round(build_s, 1),
        "hnsw_queries": queries,
    }


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


class Stack:
    """SeaweedFS + storage + embedder in this process's event loop (retriever started later)."""

    async def start(self, workdir: Path) -> None:
        from services.embedder.config import EmbedderConfig
        from services.embedder.server import create_server as create_embedder
        from services.storage.config import StorageConfig
        from services.storage.server import create_server as create_storage

        for _ in range(50):
            base = random.randrange(20000, 29000, 10)
            ports = SeaweedPorts.from_base(base, base + 1)
            if not any(port_in_use(p) for p in ports.all().values()):
                break
        # SeaweedFS keeps its data across runs (the 100k chunk objects take minutes to write).
        self.seaweed = SeaweedProcess(CACHE / "seaweed", ports)
        await asyncio.to_thread(self.seaweed.start, 60)
        scfg = load_env(
            StorageConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(workdir / "storage"),
            default_endpoint=self.seaweed.endpoint,
            default_bucket=self.seaweed.bucket,
            default_access_key_id=self.seaweed.creds.access_key_id,
            default_secret_access_key=self.seaweed.creds.secret_access_key,
        )
        self.sapp, sport = await create_storage(scfg)
        # No embedding cache: both sides of each ratio must run the model for every text.
        ecfg = load_env(
            EmbedderConfig, environ={}, port=0, metrics_port=0, state_dir=str(CACHE / "embedder"), cache_max_bytes=0
        )
        self.eapp, eport = await create_embedder(ecfg)
        self.storage_addr, self.embedder_addr = f"127.0.0.1:{sport}", f"127.0.0.1:{eport}"
        self.storage = StorageClient(self.storage_addr, timeout_s=120)
        self.embedder = EmbedderClient(self.embedder_addr, timeout_s=120)
        await wait_serving(eport, "ddnrag.embedder.v1.EmbedderService", 300)
        self.info = await self.embedder.info()
        log(f"embedder ready: {self.info.backend} {self.info.dtype} on {self.info.device}")
        self.workdir = workdir
        self.rapp = None

    async def start_retriever(self) -> RetrieverClient:
        from services.retriever.server import create_server as create_retriever

        cfg = load_env(
            RetrieverConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(self.workdir / "retriever"),
            embedder_addr=self.embedder_addr,
            storage_addr=self.storage_addr,
        )
        self.rcfg = cfg
        t0 = time.perf_counter()
        self.rapp, rport = await create_retriever(cfg)
        await wait_serving(rport, "ddnrag.retriever.v1.RetrieverService", 600)
        self.load_s = time.perf_counter() - t0
        return RetrieverClient(f"127.0.0.1:{rport}", timeout_s=300)

    async def stop(self) -> None:
        if self.rapp is not None:
            await self.rapp.stop(0)
        await self.storage.close()
        await self.embedder.close()
        await self.sapp.stop(0)
        await self.eapp.stop(0)
        await asyncio.to_thread(self.seaweed.stop)


async def wait_serving(port: int, service: str, timeout_s: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            if r.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{service} did not become SERVING in {timeout_s}s")


async def write_corpus(stack: Stack, collection: str, n: int, dim: int) -> None:
    """A 100k-chunk snapshot written as the retriever would (segments + CURRENT), plus every chunk
    as its own object, so the retriever loads and verifies it at start-up."""
    store = StorageStore(stack.storage)
    current = await segments.read_current(store, collection)
    if current:
        manifest = await segments.read_manifest(store, collection, current)
        if manifest.chunks == n and manifest.dimension == dim:
            log(f"query: reusing the {n}-chunk collection written by an earlier run (version {manifest.version})")
            return
    sentences = [s.strip() + "." for _, t in scifact_docs() for s in t.replace("\n\n", " ").split(". ") if len(s) > 40]
    recs = []
    for i in range(n):
        text = " ".join(sentences[(i * 3 + j) % len(sentences)] for j in range(3))
        doc = f"d{i // 10}"
        recs.append(ChunkRecord(chunk_id(collection, doc, i % 10, text), doc, f"{doc}.txt", i % 10, text))
    vecs = sample(centers_of(500, dim, seed=7), n, seed=8)
    docs = {r.document_id: DocumentInfo(r.document_id, r.document_name, "", 0, "", 10) for r in recs[::10]}
    t0 = time.perf_counter()
    items = [(f"chunks/{collection}/{r.chunk_id}", r.text.encode()) for r in recs]
    sem = asyncio.Semaphore(4)

    async def put(part: list[tuple[str, bytes]]) -> None:
        async with sem:
            bad = [o for o in await store.put_many(part) if not o.ok]
            if bad:
                raise OSError(bad[0].error)

    await asyncio.gather(*(put(items[i : i + 1000]) for i in range(0, len(items), 1000)))
    log(f"query: wrote {n} chunk objects in {time.perf_counter() - t0:.0f}s")
    version = await write_collection(store, collection, docs, recs, vecs)
    log(f"query: wrote index version {version} ({time.perf_counter() - t0:.0f}s in all)")


async def bench_query(stack: Stack, client: RetrieverClient, collection: str, queries: list[str], top_k: int = 5):
    core = stack.rapp.retriever  # type: ignore[union-attr]
    index = core.collections[collection].index
    kinds = "+".join(sorted({s.dense.kind for s in index.segments}))
    log(f"query: {len(index)} chunks loaded, dense index {kinds}, load {stack.load_s:.0f}s")
    for q in queries[:5]:  # warm-up
        await client.search(collection, q, top_k=top_k, no_cache=True)
        await stack.embedder.embed([q])
    e2e, parts, stages = [], [], {"embed": [], "bm25": [], "dense": [], "fetch": []}
    server: dict[str, list[float]] = {"total": []}
    cand = stack.rcfg.candidates
    for q in queries:
        t = time.perf_counter()
        resp = await client.search(collection, q, top_k=top_k, no_cache=True)
        e2e.append(time.perf_counter() - t)
        server["total"].append(resp.timings.total_ns / 1e9)
        for st in resp.timings.stages:
            server.setdefault(st.name, []).append(st.duration_ns / 1e9)
        # The raw parts, called directly.
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
        await stack.storage.batch_get([c.object_key for c in resp.chunks])
        t_fetch = time.perf_counter() - t
        parts.append(t_embed + t_bm25 + t_dense + t_fetch)
        for k, v in zip(stages, (t_embed, t_bm25, t_dense, t_fetch), strict=True):
            stages[k].append(v)
    return {
        "query_over_parts": round(p50(e2e) / p50(parts), 3),
        "query_p50_ms": round(p50(e2e) * 1000, 2),
        "query_parts_p50_ms": round(p50(parts) * 1000, 2),
        "query_part_p50_ms": {k: round(p50(v) * 1000, 3) for k, v in stages.items()},
        "query_server_stage_p50_ms": {k: round(p50(v) * 1000, 3) for k, v in server.items()},
        "query_chunks": len(index),
        "query_dense_index": kinds,
        "query_top_k": top_k,
        "query_count": len(queries),
        "index_load_s": round(stack.load_s, 1),
    }


async def bench_ingest(
    stack: Stack, client: RetrieverClient, docs: list[tuple[str, str]], rounds: int = 3
) -> dict[str, object]:
    coll = "benchingest"
    cfg = stack.rcfg
    if coll in [c.name for c in await client.list_collections()]:
        await client.delete_collection(coll)  # a full ingestion every run
    await stack.storage.batch_put([(f"docs/{coll}/{d}/{d}.txt", t.encode()) for d, t in docs])
    chunker = Chunker(cfg.chunk_size_tokens, cfg.chunk_overlap_tokens)
    texts = [c.text for d, t in docs for c in chunker.chunks(coll, d, t)]
    log(f"ingest: {len(docs)} documents, {len(texts)} chunks")
    await stack.embedder.embed(texts[:64])  # warm-up, so neither side pays the first call
    sem = asyncio.Semaphore(cfg.embed_concurrency)

    async def embed(part: list[str]) -> None:
        async with sem:
            await stack.embedder.embed(part)

    b = cfg.embed_batch
    raw_rates, e2e_rates, last = [], [], None
    # The machine is shared: alternate the two sides `rounds` times and compare medians.
    for r in range(rounds):
        t0 = time.perf_counter()
        await asyncio.gather(*(embed(texts[i : i + b]) for i in range(0, len(texts), b)))
        raw_rates.append(len(texts) / (time.perf_counter() - t0))
        if r:
            await client.delete_collection(coll)  # the same full ingestion again
        t0 = time.perf_counter()
        async for ev in client.ingest(coll, [f"docs/{coll}/{d}/{d}.txt" for d, _ in docs]):
            last = ev
        e2e_rates.append(len(texts) / (time.perf_counter() - t0))
        assert last is not None and last.job.chunks_done == len(texts), last
        log(f"ingest round {r + 1}: raw embedder {raw_rates[-1]:.1f} chunks/s, end to end {e2e_rates[-1]:.1f}")
    assert last is not None
    return {
        "ingest_over_embed": round(p50(e2e_rates) / p50(raw_rates), 3),
        "ingest_chunks_per_s": round(p50(e2e_rates), 1),
        "embed_chunks_per_s": round(p50(raw_rates), 1),
        "ingest_rounds": {"end_to_end": [round(x, 1) for x in e2e_rates], "raw": [round(x, 1) for x in raw_rates]},
        "ingest_chunks": len(texts),
        "ingest_documents": len(docs),
        "ingest_write_ops_per_s": round(last.job.backends[0].write_ops_per_s, 1),
        "ingest_write_p50_ms": round(last.job.backends[0].write_p50_ns / 1e6, 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    only = set(args.only.split(","))
    result: dict[str, object] = {}
    if "hnsw" in only:
        result.update(await asyncio.to_thread(bench_hnsw, args.hnsw_n, args.hnsw_dim))
        log(f"hnsw: {result}")
    if only & {"ingest", "query"}:
        work = Path(tempfile.mkdtemp(prefix="ddnrag-bench-retriever-"))
        stack = Stack()
        try:
            await stack.start(work)
            if "query" in only:
                await write_corpus(stack, "bench100k", args.chunks, int(stack.info.dimension))
            client = await stack.start_retriever()
            if "ingest" in only:
                result.update(await bench_ingest(stack, client, scifact_docs(args.ingest_docs), args.rounds))
            if "query" in only:
                result.update(await bench_query(stack, client, "bench100k", scifact_queries(args.queries)))
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
    ap.add_argument("--ingest-docs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3, help="alternating raw/end-to-end ingestion rounds")
    ap.add_argument("--hnsw-n", type=int, default=1_000_000)
    ap.add_argument("--hnsw-dim", type=int, default=64)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    result.update(
        {
            "goals": {"query_over_parts": "<= 1.3", "ingest_over_embed": ">= 0.85", "hnsw_recall_at_10": ">= 0.95"},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
            "seconds": round(time.perf_counter() - t0, 1),
            "unix_time": int(time.time()),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps({**previous, **result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
