"""What an ingestion batch sends the embedder (services/retriever/embed_plan.py): chunk texts and
their batch's distinct sentences in one stream, and the vectors taken apart again."""

from __future__ import annotations

import numpy as np
import pytest

from kernel import sentences
from services.retriever.embed_plan import BatchPlan, planned_texts

A = "Alpha is the first letter. Beta comes next in line."
B = "Beta comes next in line. Gamma is the third one here."
C = "Delta closes this small test corpus. Alpha is the first letter."


def test_a_batch_sends_each_files_chunks_then_its_new_sentences_once() -> None:
    plan = BatchPlan(sentence_vectors=True)
    first = plan.add([A, B], [sentences.whole_sentences(A), sentences.whole_sentences(B)])
    second = plan.add([C], [sentences.whole_sentences(C)])
    # File 1: its two chunks, then its three distinct sentences (B repeats A's second one).
    assert first == [A, B, "Alpha is the first letter.", "Beta comes next in line.", "Gamma is the third one here."]
    # File 2: its chunk and only the sentence the batch has not sent yet.
    assert second == [C, "Delta closes this small test corpus."]
    assert plan.size == 7 and plan.chunks == 3 and plan.texts_per_file == [5, 2]
    vectors = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    assert plan.chunk_vectors(vectors).tolist() == vectors[[0, 1, 5]].tolist()
    recs = [sentences.decode(r) for r in plan.records(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), "m")]
    assert all(r is not None for r in recs)
    # Chunk C's record: its own two sentences, with the rows each was sent at (6 and 2).
    c = recs[2]
    assert c is not None and c.keys == tuple(sentences.sentence_key(s) for s in sentences.whole_sentences(C))
    want = vectors[[6, 2]] / np.linalg.norm(vectors[[6, 2]], axis=1, keepdims=True)
    assert np.allclose(c.vectors.astype(np.float32), want, atol=1e-3)


def test_without_sentence_vectors_a_batch_is_its_chunks() -> None:
    plan = BatchPlan(sentence_vectors=False)
    assert plan.add([A, B]) == [A, B] and plan.size == plan.chunks == 2
    with pytest.raises(ValueError, match="sentences"):
        BatchPlan(sentence_vectors=True).add([A], [])


def test_planned_texts_cut_batches_as_a_job_does() -> None:
    # write_batch 2: files [A, B] close batch 1; C opens batch 2, which sends "Alpha ..." again.
    got = planned_texts([[A, B], [C]], write_batch=2, sentence_vectors=True)
    assert got.count("Alpha is the first letter.") == 2 and got.count("Beta comes next in line.") == 1
    one_batch = planned_texts([[A, B], [C]], write_batch=100, sentence_vectors=True)
    assert one_batch.count("Alpha is the first letter.") == 1
    assert planned_texts([[A, B], [C]], write_batch=2, sentence_vectors=False) == [A, B, C]


def test_a_sentence_that_is_a_whole_chunk_reuses_its_vector() -> None:
    plan = BatchPlan(sentence_vectors=True)
    short = "Alpha is the first letter."
    sent = plan.add([short, A], [sentences.whole_sentences(short), sentences.whole_sentences(A)])
    assert sent == [short, A, "Beta comes next in line."]
    vectors = np.eye(3, dtype=np.float32)
    recs = [sentences.decode(r) for r in plan.records(vectors, "m")]
    assert recs[0] is not None and np.allclose(recs[0].vectors.astype(np.float32), vectors[[0]])
    assert recs[1] is not None and np.allclose(recs[1].vectors.astype(np.float32), vectors[[0, 2]])
