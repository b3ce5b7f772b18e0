"""The ingestion step that embeds each chunk's sentences once and makes the record stored beside
the chunk (`sentences/<collection>/<chunk_id>`, format in kernel/sentences.py), so the extractive
generator ranks them without an embedding call per answer.

The sentences of a batch are embedded in requests of `batch` texts, each distinct sentence once
(the overlap between neighbouring chunks repeats some). This is a second pass over about the
same tokens as the chunks themselves: its cost is measured in the README (Performance).
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


def distinct(per_chunk: Sequence[Sequence[str]]) -> list[str]:
    """The sentences a batch sends the embedder: each distinct one once, in first-seen order."""
    return list(dict.fromkeys(s for ss in per_chunk for s in ss))


def batch_sentences(texts: Sequence[str]) -> list[str]:
    """What `sentence_records` embeds for a batch of chunk texts (bench/retriever.py)."""
    return distinct([sentences.whole_sentences(t) for t in texts])


async def sentence_records(
    encoder: Encoder, texts: Sequence[str], *, batch: int, timeout: float | None, model: str
) -> list[bytes]:
    """One stored record per chunk text, in order (a chunk without whole sentences gets an
    empty record, so a reader knows there is nothing to embed)."""
    per_chunk = await asyncio.to_thread(lambda: [sentences.whole_sentences(t) for t in texts])
    uniq = distinct(per_chunk)
    parts = [await encoder.encode(uniq[i : i + batch], timeout=timeout) for i in range(0, len(uniq), batch)]
    dim = parts[0].shape[1] if parts else await encoder.dimension()
    vecs = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def records() -> list[bytes]:
        row = {s: i for i, s in enumerate(uniq)}
        return [sentences.encode(model, ss, vecs[[row[s] for s in ss]].reshape(len(ss), dim)) for ss in per_chunk]

    return await asyncio.to_thread(records)
