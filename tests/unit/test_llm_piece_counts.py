"""The extractive generator counts what it wrote as the sum of its pieces' remembered counts: that
sum must be the tokenizer's count of the whole text (WordPiece makes no token across whitespace)."""

from __future__ import annotations

from services.llm_gateway.tokens import default_counter, pieces


def test_the_pieces_counts_sum_to_the_whole_texts_count() -> None:
    counter = default_counter()
    texts = [
        "Chunks are stored as small objects [1]. Each top-k fetch is k parallel GETs [2]!",
        "Time-to-first-byte (TTFB) matters: unaffable-ness, naïve café, 12.5%, e.g. x/y [3].",
        "  Leading space,\ttabs\nand newlines [1].  ",
    ]
    for text in texts:
        parts = pieces(text)
        assert "".join(parts) == text
        for _ in range(2):  # counted, then remembered
            assert sum(counter.count_many_cached(parts)) == counter.count(text)
