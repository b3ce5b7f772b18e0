"""Groundedness features of one claim (an answer sentence) against the passages it cites.

Cosine alone cannot tell a passage that supports a claim from one on the same topic that does
not. What the claim asserts and the passage lacks tells more: its content words, bigrams,
numbers and entity-like tokens (acronyms, gene and drug names, words with digits), and a
negation on one side only. The features are combined by a logistic model fitted on SciFact
train claims (bench/verify.py prints the fit; `WEIGHTS` below is that fit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_NUM = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w])")
_ENTITY = re.compile(
    r"\b(?:[A-Za-z]*[A-Z][a-z]*[A-Z0-9][A-Za-z0-9-]*|[A-Za-z]+-?\d[A-Za-z0-9-]*|\d+[A-Za-z][A-Za-z0-9-]*)\b"
)
_NEG = re.compile(
    r"\b(?:not|no|never|none|nor|cannot|without|lack(?:s|ed|ing)?|fail(?:s|ed)?|absent|absence|neither|unable"
    r"|n't|doesn't|don't|didn't|isn't|aren't|wasn't|weren't)\b",
    re.IGNORECASE,
)
_STOP = frozenset(
    """a an the and or but if of to in on at by for with from into over as is are was were be been being it its this
    that these those there here what which who whom whose when where why how do does did can could should would will
    shall may might must have has had i you he she we they me my your our their his her not no yes than then so such
    about up down out off only own same too very just also any all each some most more other""".split()
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ness", "ment", "ies", "ied", "ed", "es", "s", "ly", "al", "ive")

NAMES = (
    "cos_max",
    "cos_top2",
    "cos_centroid",
    "coverage",
    "coverage_long",
    "best_sentence_coverage",
    "bigram_coverage",
    "missing_numbers",
    "missing_entities",
    "negation_mismatch",
    "longest_missing",
)


def stem(w: str) -> str:
    for suf in _SUFFIXES:
        if len(w) > len(suf) + 3 and w.endswith(suf):
            return w[: -len(suf)]
    return w


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


# Evidence sentences embedded per claim: the ones sharing most terms with it (embedding is the
# verifier's cost; a sentence sharing no term with the claim rarely is its best match).
MAX_EVIDENCE_SENTENCES = 6


def candidate_sentences(claim: str, sentences: Sequence[str], k: int = MAX_EVIDENCE_SENTENCES) -> list[str]:
    """The `k` sentences sharing most terms with `claim` (ties: earlier first), in text order."""
    if len(sentences) <= k:
        return list(sentences)
    cs = set(terms(claim))
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(cs & set(terms(sentences[i]))), i))
    return [sentences[i] for i in sorted(ranked[:k])]


@dataclass(frozen=True)
class Evidence:
    """The passages a claim cites, split into sentences, with their embeddings (rows
    L2-normalised) and their terms."""

    text: str
    sentences: tuple[str, ...]
    vectors: np.ndarray
    terms: frozenset[str]
    bigrams: frozenset[tuple[str, str]]
    sentence_terms: tuple[frozenset[str], ...]

    @classmethod
    def build(cls, text: str, sentences: Sequence[str], vectors: np.ndarray) -> Evidence:
        toks = terms(text)
        return cls(
            text,
            tuple(sentences),
            vectors,
            frozenset(toks),
            frozenset(pairwise(toks)),
            tuple(frozenset(terms(s)) for s in sentences),
        )


def features(claim: str, claim_vec: np.ndarray, ev: Evidence) -> np.ndarray:
    """The NAMES features of `claim` (embedded as `claim_vec`) against `ev`."""
    ct = terms(claim)
    cs = set(ct)
    n = max(1, len(cs))
    sims = ev.vectors @ claim_vec if len(ev.vectors) else np.zeros(1, np.float32)
    top = np.sort(sims)[::-1]
    centroid = ev.vectors.mean(axis=0) if len(ev.vectors) else np.zeros_like(claim_vec)
    norm = float(np.linalg.norm(centroid)) or 1.0
    covered = cs & ev.terms
    long_terms = {w for w in cs if len(w) >= 7}
    bi = set(pairwise(ct))
    lower = ev.text.lower()
    numbers = set(_NUM.findall(claim))
    entities = {e.lower() for e in _ENTITY.findall(claim)}
    best = int(np.argmax(sims)) if len(ev.sentences) else -1
    neg_claim = bool(_NEG.search(claim))
    neg_best = bool(_NEG.search(ev.sentences[best])) if best >= 0 else False
    missing = cs - ev.terms
    return np.array(
        [
            float(top[0]),
            float(top[: min(2, len(top))].mean()),
            float(centroid @ claim_vec) / norm,
            len(covered) / n,
            len(long_terms & ev.terms) / max(1, len(long_terms)) if long_terms else 1.0,
            max((len(cs & st) / n for st in ev.sentence_terms), default=0.0),
            len(bi & ev.bigrams) / max(1, len(bi)) if bi else 1.0,
            float(sum(1 for x in numbers if x not in lower)),
            float(sum(1 for e in entities if e not in lower)),
            float(neg_claim != neg_best),
            math.log1p(max((len(w) for w in missing), default=0)),
        ],
        dtype=np.float64,
    )
