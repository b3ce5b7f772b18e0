"""Lexical search: the analyzer, a segment's postings, and BM25 with collection-wide statistics.

Each segment keeps its own postings (term -> rows and term frequencies) and chunk lengths, built
once when the segment is written and stored beside it, so loading a segment never re-analyses its
text. BM25 is scored at query time from the statistics of *every* live chunk of the collection
(document frequency per term, average length, chunk count), so a collection split over many
segments ranks exactly as one merged index would. The formula is bm25s' "lucene" variant, the one
the retriever used before segments:
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))
    score(d) = sum over query tokens t of idf(t) * tf / (tf + k1 * (1 - b + b * len(d) / avglen))
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .chunking import _CJK

_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with we our from has have had been were which can its also than".split()
)
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+", re.UNICODE)


class Analyzer:
    """BM25 tokens: lower-cased words, English stopwords removed, Snowball-stemmed; CJK text as
    character unigrams and bigrams (no spaces to split on)."""

    def __init__(self) -> None:
        import Stemmer

        self.stemmer = Stemmer.Stemmer("english")

    def tokens(self, text: str) -> list[str]:
        raw = _TOKEN.findall(text.lower())
        out: list[str] = []
        prev_cjk = ""
        for t in raw:
            if len(t) == 1 and _CJK.match(t):
                out.append(t)
                if prev_cjk:
                    out.append(prev_cjk + t)
                prev_cjk = t
                continue
            prev_cjk = ""
            if t not in _STOPWORDS:
                out.append(t)
        return [w if _CJK.match(w) else s for w, s in zip(out, self.stemmer.stemWords(out), strict=True)]

    def many(self, texts: Sequence[str]) -> list[list[str]]:
        """Tokens of each text; a text repeated in the batch (boilerplate) is analysed once."""
        seen: dict[str, list[str]] = {}
        return [seen[t] if t in seen else seen.setdefault(t, self.tokens(t)) for t in texts]


class Postings:
    """One segment's inverted index: for each term its rows (ascending) and term frequencies, and
    each row's length in tokens (an empty chunk counts 1, as bm25s counts it)."""

    def __init__(self, terms: Sequence[str], ptr: np.ndarray, rows: np.ndarray, tf: np.ndarray, lengths: np.ndarray):
        self.terms = list(terms)
        self.vocab = {t: i for i, t in enumerate(self.terms)}
        self.ptr = np.asarray(ptr, np.int64)
        self.rows = np.asarray(rows, np.int32)
        self.tf = np.asarray(tf, np.float32)
        self.lengths = np.asarray(lengths, np.float32)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        # Pickled as one string and four arrays (the merge process sends postings back): a list of
        # tens of thousands of terms plus their dict would cost the receiver far more to rebuild.
        return (_restore, ("\n".join(self.terms), len(self.terms), self.ptr, self.rows, self.tf, self.lengths))

    @classmethod
    def build(cls, token_lists: Sequence[list[str]]) -> Postings:
        vocab: dict[str, int] = {}
        t_ids: list[int] = []
        r_ids: list[int] = []
        tfs: list[int] = []
        for row, toks in enumerate(token_lists):
            for term, n in Counter(toks).items():
                t_ids.append(vocab.setdefault(term, len(vocab)))
                r_ids.append(row)
                tfs.append(n)
        lengths = np.asarray([max(len(t), 1) for t in token_lists], np.float32)
        return cls._from_triples(list(vocab), np.asarray(t_ids, np.int64), np.asarray(r_ids), np.asarray(tfs), lengths)

    @classmethod
    def _from_triples(
        cls, terms: list[str], t_ids: np.ndarray, rows: np.ndarray, tf: np.ndarray, lengths: np.ndarray
    ) -> Postings:
        order = np.lexsort((rows, t_ids))
        counts = np.bincount(t_ids, minlength=len(terms)) if len(terms) else np.zeros(0, np.int64)
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(terms, ptr, rows[order], tf[order], lengths)

    @classmethod
    def merge(cls, parts: Sequence[tuple[Postings, np.ndarray]]) -> Postings:
        """One postings over several, each keeping only the rows its `live` mask marks, renumbered
        in order (part after part): what a merged segment's own analysis would give."""
        vocab: dict[str, int] = {}
        t_all, r_all, f_all, lens = [], [], [], []
        offset = 0
        for post, live in parts:
            new_row = np.cumsum(live) - 1
            remap = np.asarray([vocab.setdefault(t, len(vocab)) for t in post.terms], np.int64)
            t_of = np.repeat(np.arange(len(post.terms)), np.diff(post.ptr))
            keep = live[post.rows]
            t_all.append(remap[t_of[keep]])
            r_all.append(new_row[post.rows[keep]] + offset)
            f_all.append(post.tf[keep])
            lens.append(post.lengths[live])
            offset += int(live.sum())
        cat = np.concatenate
        return cls._from_triples(
            list(vocab),
            cat(t_all) if t_all else np.zeros(0, np.int64),
            cat(r_all) if r_all else np.zeros(0, np.int32),
            cat(f_all) if f_all else np.zeros(0, np.float32),
            cat(lens) if lens else np.zeros(0, np.float32),
        )

    def split(self, bounds: Sequence[int]) -> list[Postings]:
        """The postings of rows [bounds[i], bounds[i+1]), each renumbered from 0 (the shards)."""
        t_of = np.repeat(np.arange(len(self.terms), dtype=np.int64), np.diff(self.ptr))
        order = np.argsort(self.rows, kind="stable")
        by_row = self.rows[order]
        out = []
        for a, b in itertools.pairwise(bounds):
            lo, hi = np.searchsorted(by_row, [a, b])
            idx = order[lo:hi]
            used, t_local = np.unique(t_of[idx], return_inverse=True)
            out.append(
                Postings._from_triples(
                    [self.terms[i] for i in used],
                    t_local.astype(np.int64),
                    self.rows[idx] - a,
                    self.tf[idx],
                    self.lengths[a:b],
                )
            )
        return out

    def get(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        i = self.vocab.get(term)
        if i is None:
            return _NO_ROWS, _NO_TF
        a, b = self.ptr[i], self.ptr[i + 1]
        return self.rows[a:b], self.tf[a:b]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            terms=np.frombuffer("\n".join(self.terms).encode(), np.uint8),
            ptr=self.ptr,
            rows=self.rows,
            tf=self.tf.astype(np.uint16 if self.tf.size == 0 or self.tf.max() < 65535 else np.float32),
            lengths=self.lengths,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Postings:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        text = z["terms"].tobytes().decode()
        terms = text.split("\n") if len(z["ptr"]) > 1 else []
        return cls(terms, z["ptr"], z["rows"], z["tf"].astype(np.float32), z["lengths"])


def _restore(terms: str, n: int, ptr: np.ndarray, rows: np.ndarray, tf: np.ndarray, lengths: np.ndarray) -> Postings:
    return Postings(terms.split("\n") if n else [], ptr, rows, tf, lengths)


_NO_ROWS = np.zeros(0, np.int32)
_NO_TF = np.zeros(0, np.float32)


def bm25_scores(
    query_tokens: Sequence[str],
    parts: Sequence[tuple[Postings, np.ndarray]],
    k1: float,
    b: float,
) -> list[np.ndarray]:
    """Each part's BM25 scores (float32, one per row; 0 for rows its `live` mask drops), with the
    statistics of all live rows of all parts together.

    Every row's score is computed with the same operations in the same order whichever part holds
    it, so splitting a corpus over segments changes no score by even one bit."""
    n = sum(int(live.sum()) for _, live in parts)
    out = [np.zeros(len(live), np.float32) for _, live in parts]
    if not n:
        return out
    total_len = sum(float(post.lengths[live].astype(np.float64).sum()) for post, live in parts)
    avg = total_len / n
    for term in query_tokens:
        hits = [post.get(term) for post, _ in parts]
        df = sum(int(live[rows].sum()) for (rows, _), (_, live) in zip(hits, parts, strict=True))
        if not df:
            continue
        idf = np.float32(math.log(1 + (n - df + 0.5) / (df + 0.5)))
        for (rows, tf), (post, _live), scores in zip(hits, parts, out, strict=True):
            if len(rows):
                norm = np.float32(k1) * (np.float32(1 - b) + np.float32(b) * post.lengths[rows] / np.float32(avg))
                scores[rows] += idf * (tf / (tf + norm))
    for (_, live), scores in zip(parts, out, strict=True):
        scores[~live] = 0.0
    return out
