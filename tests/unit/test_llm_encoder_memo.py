"""The llm_gateway's embedder adapter keeps recent vectors by text (services/llm_gateway/adapters.py):
a repeated question or sentence costs no call, the rows come back in input order, and a vector
older than the TTL is asked for again."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.llm_gateway.adapters import EmbedderEncoder


class Client:
    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    async def embed_array(self, texts: Sequence[str], *, truncate: bool, timeout: float | None) -> np.ndarray:
        self.asked.append(list(texts))
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32).reshape(len(texts), 2)


async def test_repeated_texts_are_not_asked_again_and_rows_keep_their_order() -> None:
    client = Client()
    enc = EmbedderEncoder(client, memo=3)  # type: ignore[arg-type]
    first = await enc.encode(["q?", "a b", "q?"])
    assert client.asked == [["q?", "a b"]] and first[:, 0].tolist() == [2.0, 3.0, 2.0]
    again = await enc.encode(["a b", "new one", "q?"])
    assert client.asked[-1] == ["new one"] and again[:, 0].tolist() == [3.0, 7.0, 2.0]
    assert enc.kept_hits == 3
    await enc.encode(["x", "y"])  # bounded: the least recently used are dropped
    assert len(enc._kept) == 3
    await enc.encode(["q?"])
    assert client.asked[-1] == ["q?"]


async def test_a_vector_past_its_ttl_is_asked_for_again() -> None:
    client = Client()
    enc = EmbedderEncoder(client, memo_ttl_s=0.0)  # type: ignore[arg-type]
    await enc.encode(["q?"])
    enc._kept["q?"] = (enc._kept["q?"][0], enc._kept["q?"][1] - 1.0)  # kept a second ago
    await enc.encode(["q?"])
    assert client.asked == [["q?"], ["q?"]]
