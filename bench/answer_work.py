"""Work per answer done once instead: `.venv/bin/python bench/answer_work.py` -> bench/results/answer_work.json.

Starts SeaweedFS, the storage and embedder services, the retriever and two llm_gateways in this
process (every port chosen by the OS or probed), ingests SciFact documents, and measures side by
side in one run (alternating, so load from elsewhere hits both sides):

- `answer_*`: one Answer at a time (extractive generator, groundedness check and answer cache
  off) on gateway `stored` (its Search asks for the sentence vectors stored at ingestion) and on
  gateway `embedded` (it does not: what chunks written before sentence vectors get, and what
  every answer did before). Per side: wall p50 ms, CPU ms of every stack process per answer
  (this process, which runs the retriever and the llm_gateways, and every process below it:
  SeaweedFS, storage, embedder), texts embedded per answer. Two
  phases: the embedder's cache off (every text runs the model, as on a first sight of a
  question) and on with every question asked once before (its sentences and question are cache
  hits: the steady state of repeated questions).
- `repeat_query_*`: the same question asked twice through Answer (cache on): model runs
  (embedder cache misses) on the first and on the repeat.
- `fetch_*`: the retriever's fetch stage (one BatchGet) p50 with and without the sentence
  vectors in it.
- `ingest_*`: ingestion chunks/s with DDNRAG_RETRIEVER_SENTENCE_VECTORS on and off on the same
  documents (embedder cache purged before each side, rounds alternating): the price of
  embedding the sentences once, at ingestion; and, independent of load, the tokens the embedder
  runs for the sentences over those it runs for the chunks (`ingest_sentence_over_chunk_tokens`,
  first 1,000 SciFact documents).

Flags: --docs N (30)  --questions N (8)  --rounds N (2)  --scifact DIR (../shared/data/scifact)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench._procstat import cpu_seconds, stack_processes  # noqa: E402
from bench._retriever.stack import Stack, log  # noqa: E402
from bench._scale.stack import wait_serving  # noqa: E402
from bench.retriever import SCIFACT, p50  # noqa: E402
from clients.embedder import EmbedderClient  # noqa: E402
from clients.llm import LlmClient  # noqa: E402
from clients.retriever import RetrieverClient  # noqa: E402
from ddnrag.llm.v1 import llm_service_pb2 as lpb  # noqa: E402
from kernel.config import load_env  # noqa: E402
from services.llm_gateway.adapters import EmbedderEncoder  # noqa: E402
from services.llm_gateway.config import LlmGatewayConfig  # noqa: E402
from services.retriever.config import RetrieverConfig  # noqa: E402
from services.retriever.evaluate import load_beir  # noqa: E402

OUT = ROOT / "bench" / "results" / "answer_work.json"


class CountingEncoder:
    """The llm_gateway's embedder adapter, counting the texts it sends."""

    def __init__(self, inner: EmbedderEncoder) -> None:
        self.inner = inner
        self.texts = 0

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        return await self.inner.encode(texts)

    async def close(self) -> None:
        await self.inner.close()


def cpu_map() -> dict[int, float]:
    """CPU seconds of this process (the retriever and llm_gateways) and of every process below it
    (SeaweedFS, storage, embedder, parser workers), by pid."""
    return {p.pid: cpu_seconds(p.pid) for p in stack_processes(os.getpid())}


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds used since `before` (a process that ended meanwhile is left out, one that
    started counts whole)."""
    return sum(v - before.get(pid, 0.0) for pid, v in cpu_map().items())


def corpus_and_questions(scifact: Path, n_docs: int, n_questions: int) -> tuple[list[tuple[str, str]], list[str]]:
    """SciFact *train* claims (the first `n_questions`) and the abstracts they cite, filled up to
    `n_docs` documents with the corpus's first ones."""
    corpus, queries, qrels = load_beir(scifact, "train")
    questions = list(queries)[:n_questions]
    wanted = dict.fromkeys(d for q in questions for d in sorted(qrels[q]) if d in corpus)
    for d in corpus:
        if len(wanted) >= n_docs:
            break
        wanted.setdefault(d)
    return [(d, corpus[d]) for d in wanted], [queries[q] for q in questions]


def token_cost(scifact: Path, n_docs: int) -> dict[str, Any]:
    """Tokens the embedder runs at ingestion per chunk: the chunks themselves and their distinct
    whole sentences (load-independent: the second pass's share of the embedding work)."""
    from embedding.packaged import packaged_model_dir
    from embedding.runtime import Tokenization, read_max_seq_length
    from kernel.sentences import whole_sentences
    from services.retriever.chunking import Chunker

    corpus, _, _ = load_beir(scifact, "train")
    model = packaged_model_dir()
    tok = Tokenization(model, read_max_seq_length(model))
    cfg = load_env(RetrieverConfig, environ={}, embedder_addr="-", storage_addr="-")
    chunker = Chunker(cfg.chunk_size_tokens, cfg.chunk_overlap_tokens)
    chunks = [c.text for d, t in list(corpus.items())[:n_docs] for c in chunker.chunks("c", d, t)]
    sents = list(dict.fromkeys(s for c in chunks for s in whole_sentences(c)))
    ct, st = (sum(len(e.ids) for e in tok.encode(x)) for x in (chunks, sents))
    return {
        "ingest_sentence_over_chunk_tokens": round(st / ct, 3),
        "ingest_token_docs": n_docs,
        "ingest_token_chunks": len(chunks),
        "ingest_token_sentences": len(sents),
    }


async def start_retriever(stack: Stack, work: Path, sentence_vectors: bool) -> tuple[Any, RetrieverClient]:
    from services.retriever.server import create_server as create_retriever

    cfg = load_env(
        RetrieverConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(work / f"retriever-{sentence_vectors}"),
        embedder_addr=stack.embedder_addr,
        storage_addr=stack.storage_addr,
        sentence_vectors=sentence_vectors,
        embed_timeout_s=600.0,  # a shared, loaded machine: a slow embedder is not a failed run
    )
    app, port = await create_retriever(cfg)
    await wait_serving(port, "ddnrag.retriever.v1.RetrieverService", 600)
    return app, RetrieverClient(f"127.0.0.1:{port}", timeout_s=300)


async def ingest(client: RetrieverClient, coll: str, docs: list[tuple[str, str]]) -> tuple[float, int]:
    if coll in [c.name for c in await client.list_collections()]:
        await client.delete_collection(coll)
    t0 = time.perf_counter()
    last = None
    async for ev in client.ingest(coll, [f"docs/bench-aw/{d}/{d}.txt" for d, _ in docs]):
        last = ev
    took = time.perf_counter() - t0
    assert last is not None and last.job.chunks_done > 0, last
    return last.job.chunks_done / took, last.job.chunks_done


async def bench_ingest(stack: Stack, work: Path, docs: list[tuple[str, str]], rounds: int) -> dict[str, Any]:
    rates: dict[bool, list[float]] = {True: [], False: []}
    chunks = 0
    for r in range(rounds):
        for sv in (False, True) if r % 2 == 0 else (True, False):
            app, client = await start_retriever(stack, work, sv)
            try:
                await ingest(client, "aw-warmup", docs[:1])  # the lease is taken before the clock starts
                await stack.embedder.purge_cache()
                rate, chunks = await ingest(client, f"aw-ingest-{sv}".lower(), docs)
                rates[sv].append(rate)
                log(f"ingest round {r + 1} sentence_vectors={sv}: {rate:.1f} chunks/s")
            finally:
                await client.close()
                await app.stop(0)
    return {
        "ingest_sv_over_plain": round(p50(rates[True]) / p50(rates[False]), 3),
        "ingest_chunks_per_s_with_sentence_vectors": round(p50(rates[True]), 1),
        "ingest_chunks_per_s_without": round(p50(rates[False]), 1),
        "ingest_rounds": {"with": [round(x, 1) for x in rates[True]], "without": [round(x, 1) for x in rates[False]]},
        "ingest_chunks": chunks,
    }


async def start_llm(work: Path, name: str, retriever: str, embedder: str, sentence_vectors: bool) -> Any:
    from services.llm_gateway.adapters import RetrieverSearcher
    from services.llm_gateway.server import create_server as create_llm

    cfg = load_env(
        LlmGatewayConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(work / f"llm-{name}"),
        retriever_addr=retriever,
        embedder_addr=embedder,
        verify="off",
        cache_max_bytes=0,
    )
    enc = CountingEncoder(EmbedderEncoder(EmbedderClient(embedder)))
    searcher = RetrieverSearcher(RetrieverClient(retriever), sentence_vectors=sentence_vectors)
    app, port = await create_llm(cfg, searcher=searcher, encoder=enc)
    return app, LlmClient(f"127.0.0.1:{port}", timeout_s=120), enc


async def answer(llm: LlmClient, q: str, coll: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    evs = [e async for e in llm.answer(q, collection=coll, params=lpb.GenerationParams(no_cache=True))]
    assert evs[-1].WhichOneof("event") == "done", evs[-1]
    return evs[-1].done.text, time.perf_counter() - t0


async def bench_answers(
    stack: Stack, work: Path, coll: str, questions: list[str], embedder_addr: str, phase: str
) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    rapp, rclient = await start_retriever(stack, work, True)
    raddr = f"127.0.0.1:{rapp.port}"
    try:
        for name, sv in (("stored", True), ("embedded", False)):
            sides[name] = await start_llm(work, f"{phase}-{name}", raddr, embedder_addr, sv)
        emb = EmbedderClient(embedder_addr)
        wall: dict[str, list[float]] = {"stored": [], "embedded": []}
        cpu: dict[str, list[float]] = {"stored": [], "embedded": []}
        same = 0
        if phase == "cache_on":  # each question once on both sides first: the timed answers are repeats
            for q in questions:
                for name in ("stored", "embedded"):
                    await answer(sides[name][1], q, coll)
            for _, _, enc in sides.values():
                enc.texts = 0
        for i, q in enumerate(questions):
            texts: dict[str, str] = {}
            for name in ("stored", "embedded") if i % 2 == 0 else ("embedded", "stored"):
                if phase == "cache_off":
                    await emb.purge_cache()  # every text of this answer runs the model
                c0 = cpu_map()
                texts[name], w = await answer(sides[name][1], q, coll)
                cpu[name].append(cpu_since(c0))
                wall[name].append(w)
            same += texts["stored"] == texts["embedded"]
        out = {
            f"answer_{phase}_{n}": {
                "wall_p50_ms": round(p50(wall[n]) * 1000, 1),
                "cpu_ms_per_answer": round(float(np.mean(cpu[n])) * 1000, 1),
                "texts_embedded_per_answer": round(sides[n][2].texts / len(questions), 2),
            }
            for n in ("stored", "embedded")
        }
        out[f"answer_{phase}_cpu_stored_over_embedded"] = round(
            float(np.mean(cpu["stored"]) / np.mean(cpu["embedded"])), 3
        )
        out[f"answer_{phase}_same_text_share"] = round(same / len(questions), 3)
        if phase == "cache_on":
            out.update(await repeat_query(sides["stored"][1], emb, coll, questions[0] + " (repeat check)"))
            out.update(await fetch_stage(rclient, coll, questions))
        await emb.close()
    finally:
        for app, client, _ in sides.values():
            await client.close()
            await app.stop(0)
        await rclient.close()
        await rapp.stop(0)
    return out


async def repeat_query(llm: LlmClient, emb: EmbedderClient, coll: str, q: str) -> dict[str, Any]:
    """Model runs (embedder cache misses) of a new question, then of the same question again."""
    misses = []
    for _ in range(2):
        before = (await emb.cache_stats()).misses
        await answer(llm, q, coll)
        misses.append((await emb.cache_stats()).misses - before)
    return {"repeat_query_model_runs_first": misses[0], "repeat_query_model_runs_repeat": misses[1]}


async def fetch_stage(client: RetrieverClient, coll: str, questions: list[str]) -> dict[str, Any]:
    ms: dict[bool, list[float]] = {True: [], False: []}
    for i, q in enumerate(questions):
        for sv in (True, False) if i % 2 == 0 else (False, True):
            res = await client.search(coll, q, top_k=5, sentence_vectors=sv)
            st = next(s for s in res.timings.stages if s.name == "fetch")
            ms[sv].append(st.duration_ns / 1e6)
    return {
        "fetch_p50_ms_with_sentence_vectors": round(p50(ms[True]), 2),
        "fetch_p50_ms_without": round(p50(ms[False]), 2),
        "fetch_rpcs_per_search": 1,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ddnrag-bench-answer-work-"))
    stack = Stack()
    await stack.start(work)  # its embedder runs without a cache
    result: dict[str, Any] = {}
    eapp2 = None
    try:
        docs, questions = corpus_and_questions(args.scifact, args.docs, args.questions)
        log(f"{len(docs)} documents, {len(questions)} questions")
        await stack.storage.batch_put([(f"docs/bench-aw/{d}/{d}.txt", t.encode()) for d, t in docs])
        await stack.embedder.embed(["warm-up text for the model."])
        result.update(await asyncio.to_thread(token_cost, args.scifact, 1000))
        result.update(await bench_ingest(stack, work, docs, args.rounds))
        coll = "aw-ingest-true"  # ingested with sentence vectors by the last round
        result.update(await bench_answers(stack, work, coll, questions, stack.embedder_addr, "cache_off"))
        from services.embedder.config import EmbedderConfig
        from services.embedder.server import create_server as create_embedder

        ecfg = load_env(EmbedderConfig, environ={}, port=0, metrics_port=0, state_dir=str(work / "embedder-cached"))
        eapp2, eport2 = await create_embedder(ecfg)
        await wait_serving(eport2, "ddnrag.embedder.v1.EmbedderService", 300)
        result.update(await bench_answers(stack, work, coll, questions, f"127.0.0.1:{eport2}", "cache_on"))
    finally:
        if eapp2 is not None:
            await eapp2.stop(0)
        await stack.stop()
    result["embedder"] = f"{stack.info.backend} {stack.info.dtype} on {stack.info.device}"
    result["questions"] = len(questions)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=30)
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scifact", type=Path, default=SCIFACT, help="the SciFact BEIR directory")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    doc = {
        "benchmark": "answer_work",
        "command": "python bench/answer_work.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "wall_s": round(time.perf_counter() - t0, 1),
        **result,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
