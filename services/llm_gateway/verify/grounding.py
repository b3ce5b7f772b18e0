"""The groundedness check: every answer sentence scored against the passages it cites.

A sentence's citations ([n]) name its evidence; a sentence with none is scored against every
passage the answer cites. The score is the probability that the evidence supports the sentence:
by default from the embedder plus the lexical features of `features.py` (`EmbeddingScorer`), or
from a judge model over the OpenAI protocol (`judge.JudgeScorer`). A sentence is supported at
or above `sentence_threshold`; the answer's score is the share of supported sentences.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..domain import Passage
from ..extractive import NO_PASSAGES, NOT_ANSWERED, Encoder, split_sentences
from ..prompt import cited_numbers
from ..stored_vectors import StoredSentenceEncoder
from .features import Evidence, candidate_sentences, features
from .model import SENTENCE_THRESHOLD, probability
from .result import SentenceCheck, Verification

__all__ = ["Claim", "EmbeddingScorer", "Scorer", "SentenceCheck", "Verification", "Verifier", "claims_of"]

_CITES = re.compile(r"\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\]")
# Sentences that state that nothing was found are not claims.
_NOT_CLAIMS = {NO_PASSAGES, NOT_ANSWERED}


@dataclass(frozen=True)
class Claim:
    """One answer sentence to check: its text without citation marks, and its evidence."""

    index: int
    text: str
    citations: tuple[int, ...]
    evidence: tuple[str, ...]


class Scorer(Protocol):
    """Scores claims against their evidence texts: one probability in 0..1 per claim."""

    method: str

    async def score(self, claims: Sequence[Claim]) -> list[float]: ...

    async def close(self) -> None: ...


def claims_of(answer: str, passages: Mapping[int, Passage]) -> list[Claim]:
    """The answer's sentences with their evidence (see the module doc)."""
    sentences = split_sentences(answer)
    cited_anywhere = tuple(n for n in cited_numbers(answer, max(passages, default=0)) if n in passages)
    out: list[Claim] = []
    for i, s in enumerate(sentences):
        text = " ".join(_CITES.sub("", s).split())
        if not text or text in _NOT_CLAIMS or len(text) < 8:
            continue
        cites = tuple(n for n in cited_numbers(s, max(passages, default=0)) if n in passages)
        use = cites or cited_anywhere
        out.append(Claim(i, text, cites, tuple(passages[n].text for n in use)))
    return out


class EmbeddingScorer:
    """The default: the embedder (sentence vectors) and the lexical features, combined by the
    logistic model fitted on SciFact train claims."""

    method = "embedder"

    def __init__(self, encoder: Encoder, weights: np.ndarray | None = None) -> None:
        self.encoder = encoder
        self.weights = None if weights is None else weights

    async def score(self, claims: Sequence[Claim]) -> list[float]:
        if not claims:
            return []
        # One embedding call for every claim and every distinct evidence sentence.
        evidence_texts = sorted({t for c in claims for t in c.evidence})
        split = {t: split_sentences(t) or [t] for t in evidence_texts}
        chosen = [candidate_sentences(c.text, [s for t in c.evidence for s in split[t]]) for c in claims]
        unique = sorted({s for ss in chosen for s in ss})
        vecs = await self.encoder.encode([c.text for c in claims] + unique)
        row = {s: i for i, s in enumerate(unique)}
        base = len(claims)
        out = []
        for i, (c, sents) in enumerate(zip(claims, chosen, strict=True)):
            if not c.evidence:
                out.append(0.0)
                continue
            ev = Evidence.build("\n\n".join(c.evidence), sents, vecs[[base + row[s] for s in sents]])
            out.append(probability(features(c.text, vecs[i], ev), self.weights))
        return out

    def over(self, passages: Iterable[Passage]) -> EmbeddingScorer:
        """This scorer with the passages' stored sentence vectors served without an embedding
        call (an extractive answer's claims are passage sentences too)."""
        return EmbeddingScorer(StoredSentenceEncoder(self.encoder, list(passages)), self.weights)

    async def close(self) -> None:
        return None


class Verifier:
    def __init__(self, scorer: Scorer, *, sentence_threshold: float = SENTENCE_THRESHOLD) -> None:
        self.scorer = scorer
        self.sentence_threshold = sentence_threshold

    @property
    def method(self) -> str:
        return self.scorer.method

    async def verify(self, answer: str, passages: Mapping[int, Passage]) -> Verification:
        t0 = time.perf_counter_ns()
        claims = claims_of(answer, passages)
        scorer = self.scorer.over(passages.values()) if isinstance(self.scorer, EmbeddingScorer) else self.scorer
        scores = await scorer.score(claims)
        checks = tuple(
            SentenceCheck(c.index, c.text, c.citations, round(float(s), 4), s >= self.sentence_threshold)
            for c, s in zip(claims, scores, strict=True)
        )
        share = sum(c.supported for c in checks) / len(checks) if checks else 1.0
        return Verification(checks, share, self.scorer.method, time.perf_counter_ns() - t0)

    async def close(self) -> None:
        await self.scorer.close()
