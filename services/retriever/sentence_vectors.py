"""The ingestion step that embeds each chunk's sentences once and makes the record stored beside
the chunk (`sentences/<collection>/<chunk_id>`, format in kernel/sentences.py), so the extractive
generator ranks them without an embedding call per answer.

An ingestion job embeds a batch's distinct sentences in the same requests as its chunks
(embed_plan.py). They are about as many tokens again as the chunks themselves: their cost is
measured in the README (Performance).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from kernel import sentences
from kernel.sentences import SentenceVectors

from .ports import Encoder


class RecordCache:
    """The last `max_entries` sentence-vector records a search read, by chunk id (records are
    immutable: a chunk id names its text, so a changed text is another chunk), so a chunk that
    keeps being retrieved costs one object read per search, not two. About 4 KB an entry."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, SentenceVectors] = OrderedDict()

    def get(self, chunk_id: str) -> SentenceVectors | None:
        sv = self.entries.get(chunk_id)
        if sv is not None:
            self.entries.move_to_end(chunk_id)
        return sv

    def put(self, chunk_id: str, sv: SentenceVectors) -> None:
        self.entries[chunk_id] = sv
        self.entries.move_to_end(chunk_id)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


async def model_of(encoder: Encoder) -> str:
    """The embedder's model id, recorded with the vectors ("" when the encoder cannot say)."""
    get = getattr(encoder, "model_id", None)
    return str(await get()) if get is not None else ""


def records_of(per_chunk: Sequence[Sequence[str]], row: dict[str, int], vectors: np.ndarray, model: str) -> list[bytes]:
    """One stored record per chunk, in order, from each chunk's sentences and the `row` of each
    sentence's vector in `vectors` (a chunk without whole sentences gets an empty record, so a
    reader knows there is nothing to embed). Blocking: run it in a thread."""
    dim = vectors.shape[1]
    return [sentences.encode(model, ss, vectors[[row[s] for s in ss]].reshape(len(ss), dim)) for ss in per_chunk]


async def sentence_records(
    encoder: Encoder, texts: Sequence[str], *, batch: int, timeout: float | None, model: str
) -> list[bytes]:
    """One stored record per chunk text, in order, embedding each distinct sentence once in
    requests of `batch` texts (an ingestion job sends them with its chunks: embed_plan.py)."""
    per_chunk = await asyncio.to_thread(lambda: [sentences.whole_sentences(t) for t in texts])
    uniq = list(dict.fromkeys(s for ss in per_chunk for s in ss))
    parts = [await encoder.encode(uniq[i : i + batch], timeout=timeout) for i in range(0, len(uniq), batch)]
    dim = parts[0].shape[1] if parts else await encoder.dimension()
    vecs = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    row = {s: i for i, s in enumerate(uniq)}
    return await asyncio.to_thread(records_of, per_chunk, row, vecs, model)
