"""`rag eval BEIR_DIR --split test --answers`: answer-level quality on a BEIR dataset.

For every query of the split, the top-k documents of the retriever's ranking (the same ranking
`rag eval` scores) are given as passages to the llm_gateway's `Generate` (over gRPC, so the
generator the service runs is the one measured), and the documents the answer cites are compared
with the qrels:
- citation precision: of all documents cited (each answer's distinct citations, summed over the
  queries), the share that are relevant;
- support recall: the share of queries whose answer cites at least one relevant document.
A passage is the document's text (title, then abstract); SciFact abstracts mostly fit one chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .evaluate import Qrels, Run

# (question, [(document_id, text), ...]) -> the cited document ids, in order of citation.
Generate = Callable[[str, Sequence[tuple[str, str]]], Awaitable[list[str]]]


@dataclass(frozen=True)
class AnswerScores:
    citation_precision: float
    support_recall: float
    queries: int
    answered: int  # answers that cite something
    cited: int
    cited_relevant: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "citation_precision": round(self.citation_precision, 4),
            "support_recall": round(self.support_recall, 4),
            "queries": self.queries,
            "answered": self.answered,
            "cited": self.cited,
            "cited_relevant": self.cited_relevant,
        }


def answer_scores(cited: Mapping[str, Sequence[str]], qrels: Qrels) -> AnswerScores:
    """Scores the cited document ids of each query against `qrels` (relevance > 0)."""
    total = hits = answered = supported = 0
    for qid, rels in qrels.items():
        docs = list(dict.fromkeys(cited.get(qid, ())))
        good = sum(1 for d in docs if rels.get(d, 0) > 0)
        total += len(docs)
        hits += good
        answered += bool(docs)
        supported += good > 0
    n = len(qrels)
    return AnswerScores(hits / total if total else 0.0, supported / n if n else 0.0, n, answered, total, hits)


async def cite_all(
    queries: Mapping[str, str],
    run: Run,
    corpus: Mapping[str, str],
    generate: Generate,
    *,
    top_k: int = 5,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[str]]:
    """The cited document ids per query, answering over each query's top-k documents."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, list[str]] = {}

    async def one(qid: str, q: str) -> None:
        ranked = sorted(run.get(qid, {}).items(), key=lambda x: -x[1])[:top_k]
        async with sem:
            out[qid] = await generate(q, [(d, corpus[d]) for d, _ in ranked])
        if progress is not None:
            progress(1)

    await asyncio.gather(*(one(qid, q) for qid, q in queries.items()))
    return out


def llm_generate(address: str, timeout_s: float = 900.0) -> tuple[Generate, Callable[[], Awaitable[None]]]:
    """A `Generate` over the llm_gateway at `address` (answer cache skipped), and its closer."""
    from clients.llm import GenerationParams, LlmClient, Passage

    client = LlmClient(address, timeout_s=timeout_s)

    async def generate(question: str, passages: Sequence[tuple[str, str]]) -> list[str]:
        ps = [Passage(text=t, document_id=d, document_name=d, chunk_id=d) for d, t in passages]
        done = None
        async for ev in client.generate(question, ps, params=GenerationParams(no_cache=True)):
            kind = ev.WhichOneof("event")
            if kind == "done":
                done = ev.done
            elif kind == "error":
                raise RuntimeError(f"the llm_gateway failed on {question!r}: {ev.error.message}")
        return [c.document_id for c in done.citations] if done is not None else []

    return generate, client.close


async def evaluate_answers(
    queries: Mapping[str, str],
    run: Run,
    corpus: Mapping[str, str],
    qrels: Qrels,
    address: str,
    *,
    top_k: int = 5,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    generate, close = llm_generate(address)
    try:
        cited = await cite_all(queries, run, corpus, generate, top_k=top_k, concurrency=concurrency, progress=progress)
    finally:
        await close()
    scores = answer_scores(cited, qrels)
    return {**scores.as_dict(), "top_k": top_k, "seconds": round(time.perf_counter() - t0, 1)}
