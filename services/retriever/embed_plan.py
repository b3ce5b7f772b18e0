"""What an ingestion job sends the embedder, batch by batch, and how a batch's vectors come apart
again into its chunks' vectors and their sentence-vector records.

A committed batch (files up to `write_batch` chunks) embeds its chunks' texts and, with sentence
vectors on, each of its chunks' distinct whole sentences once (neighbouring chunks overlap, so
some repeat; a sentence that is a whole chunk's text takes that chunk's vector). Both go into the same stream of embedding requests, file by file as the files are
chunked: a file's chunk texts, then its sentences that the batch has not sent yet. So the sentence
pass keeps the embedder fed like the chunks do (`embed_concurrency` requests in flight, each of
exactly `embed_batch` texts), instead of a second, one-request-at-a-time pass per batch. The
embedder sorts each window of requests by length, so mixing long chunks and short sentences in one
request costs no extra padding.

`planned_texts` replays the same cut without a job: bench/retriever.py embeds exactly these texts
on its raw side, so its ratio compares like with like.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kernel import sentences

from .sentence_vectors import records_of


@dataclass
class Vectors:
    """An embedding request's vectors, in the order of its texts, and each text's share of its time (ns)."""

    vectors: np.ndarray
    ns: np.ndarray

    @staticmethod
    def join(parts: list[Vectors]) -> Vectors:
        if len(parts) == 1:
            return parts[0]
        return Vectors(np.concatenate([p.vectors for p in parts]), np.concatenate([p.ns for p in parts]))

    def split(self, n: int) -> tuple[Vectors, Vectors]:
        return Vectors(self.vectors[:n], self.ns[:n]), Vectors(self.vectors[n:], self.ns[n:])


class BatchPlan:
    """The texts one committed batch sends the embedder, in order, and where each vector goes."""

    def __init__(self, sentence_vectors: bool) -> None:
        self.sentence_vectors = sentence_vectors
        self.size = 0  # texts sent so far
        self.chunks = 0
        self.chunk_rows: list[int] = []  # row of each chunk's own vector, in chunk order
        self.sentence_row: dict[str, int] = {}  # row of each distinct text's vector
        self.per_chunk: list[list[str]] = []  # each chunk's whole sentences
        self.texts_per_file: list[int] = []  # texts each file added, in file order

    def add(self, chunk_texts: Sequence[str], chunk_sentences: Sequence[Sequence[str]] = ()) -> list[str]:
        """Adds a file's chunks (and, with sentence vectors on, each chunk's whole sentences, as
        `kernel.sentences.whole_sentences` gives them) and returns the texts to send for them."""
        out = list(chunk_texts)
        for t in out:
            self.chunk_rows.append(self.size)
            self.sentence_row.setdefault(t, self.size)  # a sentence that is a whole chunk reuses its vector
            self.size += 1
        self.chunks += len(out)
        if self.sentence_vectors:
            if len(chunk_sentences) != len(chunk_texts):
                raise ValueError("each chunk needs its list of sentences when sentence vectors are on")
            for ss in chunk_sentences:
                self.per_chunk.append(list(ss))
                for s in ss:
                    if s not in self.sentence_row:
                        self.sentence_row[s] = self.size
                        self.size += 1
                        out.append(s)
        self.texts_per_file.append(len(out))
        return out

    def chunk_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """The chunks' own vectors, in chunk order, out of the batch's `size` vectors."""
        return vectors[self.chunk_rows]

    def records(self, vectors: np.ndarray, model: str) -> list[bytes]:
        """Each chunk's stored sentence-vector record, in chunk order (blocking: run in a thread)."""
        return records_of(self.per_chunk, self.sentence_row, vectors, model)


def planned_texts(files: Iterable[Sequence[str]], *, write_batch: int, sentence_vectors: bool) -> list[str]:
    """Every text a job embeds for files of these chunk texts, in the order it sends them: the
    same batches (closed once they reach `write_batch` chunks) and the same sentences."""
    out: list[str] = []
    plan = BatchPlan(sentence_vectors)
    for texts in files:
        per_chunk = [sentences.whole_sentences(t) for t in texts] if sentence_vectors else ()
        out += plan.add(texts, per_chunk)
        if plan.chunks >= write_batch:
            plan = BatchPlan(sentence_vectors)
    return out
