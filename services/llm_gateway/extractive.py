"""The grounded extractive generator: the default backend, no LLM needed.

It splits the context passages into sentences, keeping only whole sentences (no headings, no
list markers, no fragments cut from a chunk's edge or shorter than `min_words`), ranks them
against the question with the embedder (cosine similarity of L2-normalised embeddings, plus a
small bonus for shared content words), and composes an answer of 2 to 3 of the best ones
(`min_sentences`..`max_sentences`: those within `margin` of the best; to reach two, a further
sentence of an already cited passage that clears `min_score - margin`; none that repeats a chosen
one), each followed by the number of its passage as [n]. The selection's defaults live in one
place, `Selection` below (tuned on SciFact train). When no sentence is close enough to the question it says plainly that the
passages do not answer it. Given the same passages and embeddings it always gives the same answer.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kernel.errors import ErrorKind, ServiceError
from kernel.sentences import is_sentence, split_sentences

from .backend import BackendError, BackendLimits, BackendRequest, Delta
from .domain import Usage
from .stored_vectors import StoredSentenceEncoder
from .tokens import TokenCounter, pieces


class Encoder(Protocol):
    """Embeds texts: (n, dim) float32, rows L2-normalised."""

    async def encode(self, texts: Sequence[str]) -> np.ndarray: ...


NO_PASSAGES = "No passages were found for this question, so it cannot be answered from the collection."
NOT_ANSWERED = "The passages found do not answer this question."

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a an the and or but if of to in on at by for with from into over as is are was were be been being
    it its this that these those there here what which who whom whose when where why how do does did
    can could should would will shall may might must have has had i you he she we they me my your our
    their his her not no yes than then so such about up down out off only own same too very just also
    any all each some most more other""".split()
)


# Passages whose sentences are kept split (`ExtractiveBackend._sentences`), least recently used out.
PARSED_PASSAGES = 4096


@dataclass(frozen=True)
class Sentence:
    passage: int  # 1-based passage number
    position: int
    text: str


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


@dataclass(frozen=True)
class Selection:
    """The extractive generator's selection settings and their defaults: the one place that owns
    them (`ExtractiveBackend`'s keyword defaults and the backend factory's options read them).

    `margin`, `max_sentences` and `rank_penalty` were tuned on SciFact *train* only
    (`scripts/tune_answers.py`, best F1 of citation precision and support recall,
    `bench/results/answers_train_tuning.json`: F1 0.603 against 0.474 for the earlier 0.15 / 4 / 0.0);
    the test split is reported once with them (`bench/results/answers_test.json`)."""

    min_score: float = 0.35  # below this best sentence score the passages are said not to answer
    margin: float = 0.05  # sentences within this of the best one are kept
    min_sentences: int = 2  # reached with a further sentence of an already cited passage
    max_sentences: int = 3
    min_words: int = 6  # shorter sentences are fragments
    overlap_weight: float = 0.15  # bonus per share of the question's content words a sentence has
    rank_penalty: float = 0.05  # score taken off per retrieval rank below the first passage
    redundancy: float = 0.9  # cosine above which a sentence repeats a chosen one


SELECTION = Selection()


class ExtractiveBackend:
    """The extractive generator as a backend (kind "extractive", model "extractive-v1")."""

    kind = "extractive"
    default_model = "extractive-v1"

    def __init__(
        self,
        encoder: Encoder,
        counter: TokenCounter,
        *,
        name: str = "extractive",
        min_score: float = SELECTION.min_score,
        margin: float = SELECTION.margin,
        min_sentences: int = SELECTION.min_sentences,
        max_sentences: int = SELECTION.max_sentences,
        min_words: int = SELECTION.min_words,
        overlap_weight: float = SELECTION.overlap_weight,
        rank_penalty: float = SELECTION.rank_penalty,
        redundancy: float = SELECTION.redundancy,
        limits: BackendLimits | None = None,
    ) -> None:
        self.name = name
        self.encoder = encoder
        self.counter = counter
        self.min_score = min_score
        self.margin = margin
        self.min_sentences = min_sentences
        self.max_sentences = max_sentences
        self.min_words = min_words
        self.overlap_weight = overlap_weight
        self.rank_penalty = rank_penalty
        self.redundancy = redundancy
        # Texts ranked with a stored sentence vector / embedded at answer time (question included).
        self.sentences_stored = 0
        self.sentences_embedded = 0
        self._parsed: OrderedDict[str, tuple[tuple[int, str, str, frozenset[str]], ...]] = OrderedDict()
        self.limits = limits or BackendLimits(first_token_timeout_s=30.0, retries=0, max_concurrency=64)

    def models(self) -> list[str]:
        return [self.default_model]

    async def close(self) -> None:
        return None

    def _sentences(self, text: str) -> tuple[tuple[int, str, str, frozenset[str]], ...]:
        """A passage's rankable sentences, each with its position, duplicate key and content
        words: the same for every answer that cites the passage, so kept per text (LRU)."""
        got = self._parsed.get(text)
        if got is None:
            got = tuple(
                (pos, s, " ".join(s.lower().split()), frozenset(content_words(s)))
                for pos, s in enumerate(split_sentences(text))
                if is_sentence(s, self.min_words)
            )
            self._parsed[text] = got
            if len(self._parsed) > PARSED_PASSAGES:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(text)
        return got

    async def compose(self, question: str, passages: Sequence[str], encoder: Encoder | None = None) -> str:
        """The answer text, citations included (passage numbers as given; the gateway renumbers
        them in order of appearance). `encoder` (default: the backend's) embeds the question and
        the sentences; `stream` passes one that serves the passages' stored sentence vectors."""
        if not passages:
            return NO_PASSAGES
        sentences: list[Sentence] = []
        words: list[frozenset[str]] = []
        seen: set[str] = set()
        for n, text in enumerate(passages, start=1):
            for pos, s, key, ws in self._sentences(text):
                if key in seen:
                    continue
                seen.add(key)
                sentences.append(Sentence(n, pos, s))
                words.append(ws)
        if not sentences:
            return NOT_ANSWERED
        vecs = await (encoder or self.encoder).encode([question, *(s.text for s in sentences)])
        q, m = vecs[0], vecs[1:]
        cos = m @ q
        qwords = content_words(question)
        scores: list[float] = []
        for s, ws, c in zip(sentences, words, cos.tolist(), strict=True):
            overlap = len(qwords & ws) / len(qwords) if qwords else 0.0
            scores.append(float(c) + self.overlap_weight * overlap - self.rank_penalty * (s.passage - 1))
        # Best first; ties broken by passage number then position, so the answer is deterministic.
        order = sorted(range(len(sentences)), key=lambda i: (-round(scores[i], 6), sentences[i].passage, i))
        best = scores[order[0]]
        if best < self.min_score:
            return NOT_ANSWERED
        floor = max(self.min_score, best - self.margin)
        picked: list[int] = []
        for i in order:
            if len(picked) >= self.max_sentences:
                break
            if scores[i] < floor:
                # Below the margin only to reach `min_sentences`, and only from a passage already
                # cited: a second sentence of the same source adds context, not a new claim.
                if len(picked) >= self.min_sentences or scores[i] < self.min_score - self.margin:
                    break
                if all(sentences[j].passage != sentences[i].passage for j in picked):
                    continue
            if any(float(m[i] @ m[j]) > self.redundancy for j in picked):
                continue  # says again what a chosen sentence says
            picked.append(i)
        chosen = [sentences[i] for i in picked]
        # Passages in the order of their best sentence; inside a passage, the text's own order,
        # so a sentence that leans on the one before it ("That makes them ...") reads right.
        rank: dict[int, int] = {}
        for s in chosen:
            rank.setdefault(s.passage, len(rank))
        chosen.sort(key=lambda s: (rank[s.passage], s.position))
        return " ".join(cite(s.text, s.passage) for s in chosen)

    async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        prompt = request.prompt
        try:
            stored = StoredSentenceEncoder(self.encoder, prompt.passages)
            text = await self.compose(prompt.question, [p.text for p in prompt.passages], stored)
            self.sentences_stored += stored.stored
            self.sentences_embedded += stored.embedded
        except ServiceError as err:
            raise BackendError(
                ErrorKind.UNAVAILABLE if err.kind != ErrorKind.DEADLINE_EXCEEDED else err.kind,
                f"the extractive generator could not embed the passages: {err.message}",
                reason="EMBEDDER_FAILED",
                backend=self.name,
                retryable=err.kind in (ErrorKind.UNAVAILABLE, ErrorKind.DEADLINE_EXCEEDED),
            ) from None
        budget = request.max_tokens
        used = 0
        finish = "stop"
        kept: list[str] = []
        parts = pieces(text)
        # Words recur from answer to answer: their counts are remembered (one tokenizer call for new ones).
        for piece, n in zip(parts, self.counter.count_many_cached(parts), strict=True):
            if used + n > budget:
                finish = "length"
                break
            used += n
            kept.append(piece)
            yield Delta(text=piece)
        # What it read: the question and the passages it ranked (no system prompt), and what it
        # wrote, both counted with the MiniLM tokenizer it embeds with.
        read = self.counter.count(prompt.question) + sum(
            self.counter.count_many_cached([p.text for p in prompt.passages])
        )
        # What it wrote is the sum of its pieces' counts (WordPiece makes no token across whitespace).
        yield Delta(finish_reason=finish, usage=Usage(read, used, "tokenizer"))


def cite(sentence: str, number: int) -> str:
    """ "A sentence." -> "A sentence [n].": the citation goes before the final punctuation."""
    s = sentence.rstrip()
    if s and s[-1] in ".!?":
        return f"{s[:-1]} [{number}]{s[-1]}"
    return f"{s} [{number}]."
