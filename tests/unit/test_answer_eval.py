"""`rag eval --answers` scoring: citation precision and support recall, without network."""

from __future__ import annotations

from collections.abc import Sequence

from services.retriever.evaluate_answers import answer_scores, cite_all

QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d4": 1}}


def test_precision_counts_distinct_cited_documents_and_recall_counts_supported_queries() -> None:
    cited = {"q1": ["d1", "d9", "d1"], "q2": ["d7"], "q3": []}
    s = answer_scores(cited, QRELS)
    assert (s.cited, s.cited_relevant, s.answered, s.queries) == (3, 1, 2, 3)
    assert s.citation_precision == 1 / 3 and s.support_recall == 1 / 3
    assert answer_scores({}, QRELS).citation_precision == 0.0  # nothing cited: no precision to speak of


async def test_cite_all_gives_each_query_its_top_k_documents() -> None:
    seen: dict[str, list[str]] = {}

    async def generate(question: str, passages: Sequence[tuple[str, str]]) -> list[str]:
        seen[question] = [d for d, _ in passages]
        return [passages[0][0]]

    run = {"q1": {"d1": 0.9, "d2": 0.5, "d3": 0.7}, "q2": {"d2": 0.1}}
    corpus = {d: f"text of {d}" for d in ("d1", "d2", "d3")}
    cited = await cite_all({"q1": "first?", "q2": "second?"}, run, corpus, generate, top_k=2)
    assert seen == {"first?": ["d1", "d3"], "second?": ["d2"]}
    assert cited == {"q1": ["d1"], "q2": ["d2"]}
