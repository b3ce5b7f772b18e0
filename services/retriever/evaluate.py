"""`rag eval BEIR_DIR --split test [--run-file RUN.json] [--json]`: retrieval quality on any
BEIR-format directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).

It indexes the corpus with the retriever's own chunker, analyzer, BM25 and FAISS index and fusion
(the classes the service runs), embeds with the same packaged model the embedder serves (in
process, cached on disk by content), runs every query of the split and reports nDCG@10 and
Recall@100. A document longer than one chunk is scored by its best chunk. Tune on the train split;
report the test split.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .chunking import Chunker
from .fusion import fuse
from .index import Analyzer, ChunkRecord, CollectionIndex

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


@dataclass(frozen=True)
class EvalParams:
    """What the evaluation runs with; the defaults are the service's tuned defaults."""

    chunk_size: int = 256
    chunk_overlap: int = 32
    mode: str = "hybrid"
    fusion: str = "weighted"
    rrf_k: int = 60
    dense_weight: float = 0.5
    candidates: int = 100
    depth: int = 100
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


def load_beir(beir_dir: Path, split: str) -> tuple[dict[str, str], dict[str, str], Qrels]:
    """(corpus: id -> "title\\n\\ntext", queries of the split: id -> text, qrels)."""
    qrels_path = beir_dir / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise FileNotFoundError(f"{qrels_path} does not exist: is {beir_dir} a BEIR directory with a {split!r} split?")
    qrels: Qrels = {}
    for i, line in enumerate(qrels_path.read_text().splitlines()):
        parts = line.split("\t")
        if i == 0 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header
        if len(parts) >= 3:
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = int(parts[2])
    corpus: dict[str, str] = {}
    with (beir_dir / "corpus.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            title = (d.get("title") or "").strip()
            corpus[str(d["_id"])] = f"{title}\n\n{d.get('text', '')}".strip() if title else d.get("text", "")
    queries: dict[str, str] = {}
    with (beir_dir / "queries.jsonl").open() as f:
        for line in f:
            d = json.loads(line)
            if str(d["_id"]) in qrels:
                queries[str(d["_id"])] = d["text"]
    return corpus, queries, qrels


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k over the queries of `qrels` (trec_eval's linear gain)."""
    total = 0.0
    for qid, rels in qrels.items():
        ranked = sorted(run.get(qid, {}).items(), key=lambda x: -x[1])[:k]
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, (d, _) in enumerate(ranked))
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qrels) if qrels else 0.0


def recall_at_k(run: Run, qrels: Qrels, k: int = 100) -> float:
    total = 0.0
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r > 0}
        top = {d for d, _ in sorted(run.get(qid, {}).items(), key=lambda x: -x[1])[:k]}
        total += len(relevant & top) / len(relevant) if relevant else 0.0
    return total / len(qrels) if qrels else 0.0


def build_records(corpus: Mapping[str, str], chunker: Chunker) -> list[ChunkRecord]:
    records = []
    for doc_id, text in corpus.items():
        for c in chunker.chunks("eval", doc_id, text):
            records.append(ChunkRecord(c.chunk_id, doc_id, doc_id, c.position, c.text))
    return records


def rank(
    index: CollectionIndex,
    queries: Mapping[str, str],
    qvecs: np.ndarray | None,
    p: EvalParams,
    memo: dict[Any, Any] | None = None,
) -> Run:
    """Runs every query; a document's score is its best chunk's. `memo` keeps each query's
    retriever candidates, so fusion settings can be compared without re-running retrieval."""
    run: Run = {}
    n_cand = max(p.candidates, p.depth)
    for i, (qid, q) in enumerate(queries.items()):
        qv = None if qvecs is None else qvecs[i]
        key = (id(index), qid, n_cand, p.mode)
        if memo is None or key not in memo:
            cands = index.retrieve(q, qv, n_cand=n_cand, mode=p.mode)
            if memo is not None:
                memo[key] = cands
        else:
            cands = memo[key]
        hits = (
            []
            if cands is None
            else fuse(
                *cands,
                index.vectors_at,
                qv,
                mode=p.mode,
                fusion=p.fusion,
                rrf_k=p.rrf_k,
                dense_weight=p.dense_weight,
            )
        )
        docs: dict[str, float] = {}
        for h in hits:
            d = index.record(h.row).document_id
            if d not in docs:
                docs[d] = h.score
            if len(docs) >= p.depth:
                break
        run[qid] = docs
    return run


async def segmented(
    records: list[ChunkRecord], vecs: np.ndarray, commits: int, analyzer: Analyzer, bm25: tuple[float, float]
) -> CollectionIndex:
    """The index after `commits` commits through `LiveIndex` (in memory, no merges)."""
    from .index import DocumentInfo
    from .live import IndexOptions, LiveIndex
    from .merge import MergePolicy
    from .ports import ObjectStore

    opts = IndexOptions(hnsw_threshold=10**9, bm25_params=bm25, persist=False, merge=MergePolicy(factor=0))
    live = LiveIndex("eval", cast(ObjectStore, None), analyzer, opts)
    docs = list(dict.fromkeys(r.document_id for r in records))
    per = -(-len(docs) // commits)
    for i in range(0, len(docs), per):
        batch = set(docs[i : i + per])
        rows = [j for j, r in enumerate(records) if r.document_id in batch]
        infos = {d: DocumentInfo(d, d, "", 0, "", 0) for d in docs[i : i + per]}
        await live.commit(infos, [records[j] for j in rows], vecs[rows])
    return live.view


class Evaluation:
    """Holds one corpus, chunked and embedded, so several parameter sets can be scored cheaply."""

    def __init__(self, beir_dir: Path, split: str, encoder: Any | None = None, commits: int = 1) -> None:
        """`commits` > 1 builds the index as the service would after that many ingestion jobs:
        one segment per commit, documents split in order (the ranking must not change)."""
        from embedding.local import DEFAULT_CACHE, LocalEncoder

        self.corpus, self.queries, self.qrels = load_beir(beir_dir, split)
        self.encoder = encoder or LocalEncoder(backend="auto", cache_path=DEFAULT_CACHE, batch_size=32)
        self.analyzer = Analyzer()
        self._indexes: dict[tuple[int, int, tuple[float, float]], CollectionIndex] = {}
        self._embedded: dict[tuple[int, int], tuple[list[ChunkRecord], np.ndarray]] = {}
        self._qvecs: np.ndarray | None = None
        self._memo: dict[Any, Any] = {}
        self.commits = commits

    def index(
        self,
        size: int,
        overlap: int,
        progress: Callable[[str, int, int], None] | None = None,
        bm25: tuple[float, float] = (1.2, 0.75),
    ) -> CollectionIndex:
        key = (size, overlap, bm25)
        if key not in self._indexes:
            if (size, overlap) not in self._embedded:
                records = build_records(self.corpus, Chunker(size, overlap))
                cb = (lambda n: progress("embed corpus", n, len(records))) if progress else None
                self._embedded[(size, overlap)] = (
                    records,
                    self.encoder.encode_sync([r.text for r in records], progress=cb),
                )
            records, vecs = self._embedded[(size, overlap)]
            if self.commits > 1:
                self._indexes[key] = asyncio.run(segmented(records, vecs, self.commits, self.analyzer, bm25))
            else:
                self._indexes[key] = CollectionIndex(
                    records, vecs, analyzer=self.analyzer, hnsw_threshold=10**9, bm25_params=bm25
                )
        return self._indexes[key]

    def qvecs(self, progress: Callable[[str, int, int], None] | None = None) -> np.ndarray:
        if self._qvecs is None:
            texts = list(self.queries.values())
            cb = (lambda n: progress("embed queries", n, len(texts))) if progress else None
            self._qvecs = self.encoder.encode_sync(texts, progress=cb)
        return self._qvecs

    def score(
        self, p: EvalParams, progress: Callable[[str, int, int], None] | None = None
    ) -> tuple[dict[str, Any], Run]:
        t0 = time.perf_counter()
        index = self.index(p.chunk_size, p.chunk_overlap, progress, (p.bm25_k1, p.bm25_b))
        qv = self.qvecs(progress) if p.mode != "bm25" else None
        run = rank(index, self.queries, qv, p, self._memo)
        return {
            "ndcg@10": round(ndcg_at_k(run, self.qrels, 10), 4),
            "recall@100": round(recall_at_k(run, self.qrels, 100), 4),
            "queries": len(self.qrels),
            "documents": len(self.corpus),
            "chunks": len(index),
            "params": asdict(p),
            "seconds": round(time.perf_counter() - t0, 1),
        }, run


def default_params() -> EvalParams:
    """The service's defaults (RetrieverConfig), so `rag eval` scores what the service serves."""
    from .config import RetrieverConfig

    c = RetrieverConfig(embedder_addr="-", storage_addr="-")
    return EvalParams(
        c.chunk_size_tokens,
        c.chunk_overlap_tokens,
        "hybrid",
        c.fusion,
        c.rrf_k,
        c.dense_weight,
        c.candidates,
        bm25_k1=c.bm25_k1,
        bm25_b=c.bm25_b,
    )


def main(argv: list[str], local_llm_gateway: Callable[[], Any] | None = None) -> int:
    """`rag eval BEIR_DIR --split test [--run-file RUN.json] [--json] [--answers]`.

    `local_llm_gateway` (given by the CLI) is an async context manager factory yielding the
    address of an llm_gateway it started, used by `--answers` without `--llm-gateway-addr`."""
    ap = argparse.ArgumentParser(prog="rag eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("beir_dir", type=Path, help="a BEIR-format directory (corpus.jsonl, queries.jsonl, qrels/)")
    ap.add_argument("--split", default="test", help="qrels split to score (default: test)")
    ap.add_argument("--run-file", type=Path, help="also write the ranking {query_id: {doc_id: score}} (top 100)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--mode", choices=("hybrid", "dense", "bm25"), default="hybrid")
    ap.add_argument("--fusion", choices=("rrf", "weighted"), help="default: the service's")
    ap.add_argument(
        "--answers",
        action="store_true",
        help="also score answers: citation precision and support recall (see evaluate_answers.py)",
    )
    ap.add_argument(
        "--llm-gateway-addr",
        metavar="HOST:PORT",
        help="the llm_gateway that answers (default: one started in-process with the built-in generator)",
    )
    ap.add_argument("--answer-top-k", type=int, default=5, help="documents given to each answer (default 5)")
    ap.add_argument(
        "--answer-queries",
        type=int,
        default=0,
        metavar="N",
        help="score answers on the first N queries of the split only (default: all)",
    )
    ap.add_argument(
        "--answer-concurrency",
        type=int,
        default=2,
        metavar="N",
        help="answers generated at once (default 2: the built-in generator embeds on the CPU)",
    )
    ap.add_argument(
        "--commits",
        type=int,
        default=1,
        help="index the corpus as this many commits (segments), as N ingestion jobs would",
    )
    args = ap.parse_args(argv)
    if args.answers and not args.llm_gateway_addr and local_llm_gateway is None:
        ap.error("--answers needs --llm-gateway-addr here")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    p = default_params()
    p = EvalParams(**{**asdict(p), "mode": args.mode, **({"fusion": args.fusion} if args.fusion else {})})
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, n: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.advance(tasks[stage], n)

            bar.add_task("load corpus", total=None)
            ev = Evaluation(args.beir_dir, args.split, commits=max(1, args.commits))
            result, run = ev.score(p, progress)
            if args.answers:
                result["answers"] = asyncio.run(_answers(ev, run, args, local_llm_gateway, progress))
    except FileNotFoundError as e:
        err.print(f"[red]rag eval: {e}[/red]")
        return 2
    result = {"dataset": args.beir_dir.name, "split": args.split, "commits": max(1, args.commits), **result}
    if args.run_file:
        args.run_file.write_text(json.dumps(run))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['dataset']} {args.split}: nDCG@10 {result['ndcg@10']:.4f}  Recall@100 {result['recall@100']:.4f}"
            f"  ({result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks,"
            f" {p.mode}/{p.fusion})"
        )
        if args.answers:
            a = result["answers"]
            print(
                f"answers: citation precision {a['citation_precision']:.4f}  support recall {a['support_recall']:.4f}"
                f"  ({a['cited']} citations, {a['answered']} of {a['queries']} answers cite something,"
                f" top {a['top_k']} documents)"
            )
    return 0


async def _answers(
    ev: Evaluation, run: Run, args: argparse.Namespace, local: Callable[[], Any] | None, progress: Any
) -> dict[str, Any]:
    from .evaluate_answers import evaluate_answers

    queries = dict(list(ev.queries.items())[: args.answer_queries or None])
    qrels = {q: ev.qrels[q] for q in queries}

    def step(n: int) -> None:
        progress("answers", n, len(queries))

    async with contextlib.AsyncExitStack() as stack:
        if args.llm_gateway_addr:
            address = args.llm_gateway_addr
        else:
            assert local is not None
            address = await stack.enter_async_context(local())
        return await evaluate_answers(
            queries,
            run,
            ev.corpus,
            qrels,
            address,
            top_k=args.answer_top_k,
            concurrency=max(1, args.answer_concurrency),
            progress=step,
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
