"""Sentence vectors embedded at ingestion and stored beside the chunk (kernel/sentences.py):
the stored record, its protobuf form, and the extractive generator ranking with them (the real
MiniLM, in-process) without embedding the passages' sentences per answer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from embedding.local import LocalEncoder
from kernel import sentences
from kernel.pb import sentence_vectors_from_pb, sentence_vectors_pb
from services.llm_gateway.backend import BackendRequest
from services.llm_gateway.domain import Passage
from services.llm_gateway.extractive import ExtractiveBackend
from services.llm_gateway.prompt import build_prompt
from services.llm_gateway.tokens import default_counter
from services.llm_gateway.verify.grounding import EmbeddingScorer, Verifier
from services.retriever.core import SearchParams
from services.retriever.ports import GetOutcome
from services.retriever.sentence_vectors import sentence_records
from tests.support.retriever_doubles import DOCS, DictStore, close, finish, make, upload

PASSAGES = [
    "# GPUs\n\nA graphics processing unit runs thousands of threads in parallel. Tensor cores multiply "
    "matrices in mixed precision, which is why GPUs train and serve neural networks quickly.",
    "Object storage keeps data as objects in buckets, addressed by key. Time to first byte decides "
    "how fast a small object comes back. Dr. Smith measured it e.g. on SeaweedFS.",
    "cut from the middle of a sentence. Retrieval first finds passages relevant to a question.",
]
QUESTION = "Which hardware multiplies matrices with tensor cores?"


class Counting:
    """An encoder that records every batch of texts it is asked to embed."""

    def __init__(self, inner: LocalEncoder) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        self.calls.append(list(texts))
        return await self.inner.encode(list(texts))

    async def dimension(self) -> int:
        return 384


@pytest.fixture(scope="module")
def local() -> LocalEncoder:
    return LocalEncoder()


def test_record_round_trip_and_refusals() -> None:
    sents = ["First one here.", "Second one."]
    vecs = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    data = sentences.encode("mini", sents, vecs)
    sv = sentences.decode(data)
    assert sv is not None and sv.model == "mini" and sv.keys == tuple(sentences.sentence_key(s) for s in sents)
    assert np.allclose(sv.vectors, vecs, atol=1e-2) and sv.vectors.dtype == np.float16
    back = sentence_vectors_from_pb(sentence_vectors_pb(sv))  # type: ignore[arg-type]
    assert back is not None and back.keys == sv.keys and np.array_equal(back.vectors, sv.vectors)
    empty = sentences.decode(sentences.encode("mini", [], np.zeros((0, 8))))
    assert empty is not None and empty.keys == () and empty.vectors.shape == (0, 8)
    # Anything else is not a record: the reader falls back to embedding at answer time.
    assert sentences.decode(b"A plain chunk text.") is None
    assert sentences.decode(data[:-1]) is None
    assert sentences.decode(data[:5] + b"\x02" + data[6:]) is None  # another format version
    with pytest.raises(ValueError):
        sentences.encode("mini", sents, vecs[:1])


async def test_ingest_records_hold_each_chunks_whole_sentences(local: LocalEncoder) -> None:
    enc = Counting(local)
    recs = await sentence_records(enc, PASSAGES, batch=4, timeout=None, model="all-MiniLM-L6-v2")
    assert len(recs) == len(PASSAGES)
    whole = [sentences.whole_sentences(p) for p in PASSAGES]
    assert whole[2] == ["Retrieval first finds passages relevant to a question."]  # no fragment, no heading
    assert all(len(c) <= 4 for c in enc.calls) and sum(len(c) for c in enc.calls) == sum(map(len, whole))
    for rec, ss in zip(recs, whole, strict=True):
        sv = sentences.decode(rec)
        assert sv is not None and sv.model == "all-MiniLM-L6-v2"
        assert sv.keys == tuple(sentences.sentence_key(s) for s in ss)
        exact = await local.encode(ss)
        assert np.min(np.sum(exact * sv.vectors.astype(np.float32), axis=1)) > 0.999


async def test_generator_ranks_with_stored_vectors_and_embeds_only_the_question(local: LocalEncoder) -> None:
    counter = default_counter()
    recs = await sentence_records(local, PASSAGES, batch=64, timeout=None, model="")
    stored = [
        Passage(t, chunk_id=str(i), sentence_vectors=sentences.decode(r))
        for i, (t, r) in enumerate(zip(PASSAGES, recs, strict=True))
    ]
    plain = [Passage(t, chunk_id=str(i)) for i, t in enumerate(PASSAGES)]

    async def answer(passages: list[Passage]) -> tuple[str, Counting, ExtractiveBackend]:
        enc = Counting(local)
        backend = ExtractiveBackend(enc, counter)
        prompt = build_prompt(QUESTION, passages, counter, 3072)
        deltas = [d async for d in backend.stream(BackendRequest(prompt, "extractive-v1", 512, 0.0))]
        return "".join(d.text for d in deltas), enc, backend

    text, enc, backend = await answer(stored)
    assert "Tensor cores multiply matrices" in text and "[1]" in text
    assert enc.calls == [[QUESTION]]  # no sentence of any passage was embedded for this answer
    assert backend.sentences_embedded == 1 and backend.sentences_stored >= 5
    # Chunks written before sentence vectors existed: the same answer, every sentence embedded.
    old_text, old_enc, old_backend = await answer(plain)
    assert old_text == text and len(old_enc.calls) == 1 and len(old_enc.calls[0]) > 1
    assert old_backend.sentences_stored == 0
    # A passage whose stored sentences do not match (another splitter): only those are embedded.
    mixed = [stored[0], plain[1], stored[2]]
    mixed_text, mixed_enc, _ = await answer(mixed)
    assert mixed_text == text
    assert mixed_enc.calls[0][0] == QUESTION and set(mixed_enc.calls[0][1:]) <= set(
        sentences.split_sentences(PASSAGES[1])
    )


async def test_groundedness_check_scores_an_extractive_answer_from_stored_vectors(local: LocalEncoder) -> None:
    recs = await sentence_records(local, PASSAGES, batch=64, timeout=None, model="")
    stored = {
        i + 1: Passage(t, sentence_vectors=sentences.decode(r))
        for i, (t, r) in enumerate(zip(PASSAGES, recs, strict=True))
    }
    plain = {n: Passage(p.text) for n, p in stored.items()}
    answer = (
        "Tensor cores multiply matrices in mixed precision, which is why GPUs train and serve neural networks "
        "quickly [1]. Time to first byte decides how fast a small object comes back [2]."
    )
    enc = Counting(local)
    with_stored = await Verifier(EmbeddingScorer(enc)).verify(answer, stored)
    assert enc.calls == []  # the claims and their evidence are all stored passage sentences
    embedded = await Verifier(EmbeddingScorer(enc)).verify(answer, plain)
    assert len(enc.calls) == 1
    assert [s.supported for s in with_stored.sentences] == [s.supported for s in embedded.sentences] == [True, True]
    assert all(abs(a.score - b.score) < 0.01 for a, b in zip(with_stored.sentences, embedded.sentences, strict=True))


class CountingStore(DictStore):
    def __init__(self) -> None:
        super().__init__()
        self.get_many_calls: list[list[str]] = []

    async def get_many(self, keys: Sequence[str], *, backend: str = "") -> list[GetOutcome]:
        self.get_many_calls.append(list(keys))
        return await super().get_many(keys, backend=backend)


async def test_retriever_stores_reads_in_one_batchget_and_deletes_sentence_vectors(tmp_path: Path) -> None:
    store = CountingStore()
    # Ingested without sentence vectors (as before they existed): no records.
    r, jobs = await make(tmp_path / "a", store, sentence_vectors=False)
    try:
        job = await jobs.start_ingest("kb", await upload(store, "kb", DOCS))
        first = (await finish(jobs, job.job_id))[-1][1]
        assert first.state == "succeeded" and not any(k.startswith("sentences/") for k in store.data[""])
        old = await r.search("kb", "bread dough yeast", SearchParams(top_k=2, sentence_vectors=True, no_cache=True))
        assert old.hits[0].document_id == "cooking" and old.hits[0].error is None
        assert old.hits[0].sentence_vectors is None  # served all the same; the generator embeds
    finally:
        await close(r, jobs)
    r, jobs = await make(tmp_path / "b", store)
    try:
        # Re-ingesting the same files processes them again (their index entries say "no sentence
        # vectors"), so each chunk gets its record beside it.
        job = await jobs.start_ingest("kb", await upload(store, "kb", DOCS))
        last = (await finish(jobs, job.job_id))[-1][1]
        assert last.state == "succeeded" and last.chunks_done == first.chunks_done
        chunk_ids = {k.rsplit("/", 1)[1] for k in store.data[""] if k.startswith("chunks/kb/")}
        assert {k.rsplit("/", 1)[1] for k in store.data[""] if k.startswith("sentences/kb/")} == chunk_ids
        store.get_many_calls.clear()
        res = await r.search("kb", "bread dough yeast", SearchParams(top_k=2, sentence_vectors=True, no_cache=True))
        # Texts and sentence vectors come in one BatchGet: k chunk keys, then k record keys.
        assert len(store.get_many_calls) == 1 and len(store.get_many_calls[0]) == 4
        hit = res.hits[0]
        assert hit.document_id == "cooking" and hit.sentence_vectors is not None
        assert hit.sentence_vectors.keys == tuple(
            sentences.sentence_key(s) for s in sentences.whole_sentences(hit.text)
        )
        fetch = next(s for s in res.timer.stages if s.name == "fetch")
        assert fetch.count == 2 and fetch.ttfb_ns == 500
        plain = await r.search("kb", "bread dough yeast", SearchParams(top_k=2, no_cache=True))
        assert len(store.get_many_calls[-1]) == 2 and plain.hits[0].sentence_vectors is None
        # Records read once are kept (by chunk id): a repeated hit reads its text only.
        again = await r.search("kb", "bread dough yeast", SearchParams(top_k=2, sentence_vectors=True, no_cache=True))
        assert len(store.get_many_calls[-1]) == 2 and again.hits[0].sentence_vectors is hit.sentence_vectors
        # A deleted document's records go with its chunk objects.
        await r.delete_document("kb", "cooking")
        left = {k.rsplit("/", 1)[1] for k in store.data[""] if k.startswith("sentences/kb/")}
        assert left == {k.rsplit("/", 1)[1] for k in store.data[""] if k.startswith("chunks/kb/")}
        assert left and len(left) < len(chunk_ids)
    finally:
        await close(r, jobs)
